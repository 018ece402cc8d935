//! The generative families: the linear autoencoder, the variational autoencoder, the
//! planar normalizing flow and the GAN. None has labels: each is fed its examples'
//! features as `x: f32[B, features]` (and a fresh `seed` where it samples) by
//! [`features_epoch`], and each measures what it learned against a reference
//! computed here in f64.

use crate::{
    copy_params, evaluator, load_data, load_model, train_spec, train_step, Family, Outcome,
    RunResult, SEED, SEED_INPUT,
};
use kiln::ir::Rng;
use kiln::{Arg, Executable};
use std::collections::BTreeMap;
use std::f64::consts::PI;

/// `ln(2π)`, the normal density's constant per dimension (times one half).
const LOG_TWO_PI: f64 = 1.837_877_066_409_345_5;

/// One pass over `features` (rows of `width`) in a fresh order drawn from `rng`, in
/// minibatches of `batch` fed to input `x` (the last partial batch dropped, as the
/// trainer does); a step that samples gets a fresh seed from `rng` in `seed_input`.
/// Returns the mean of output `loss`.
fn features_epoch(
    step: &mut Executable,
    features: &[f32],
    width: usize,
    batch: usize,
    rng: &mut Rng,
    seed_input: Option<&str>,
) -> Result<f64, Box<dyn std::error::Error>> {
    let examples = features.len() / width;
    if batch == 0 || examples < batch {
        return Err(format!("{examples} examples cannot fill a batch of {batch}").into());
    }
    let mut order: Vec<usize> = (0..examples).collect();
    rng.shuffle(&mut order);
    let mut rows = Vec::with_capacity(batch * width);
    let (mut total, mut batches) = (0.0, 0usize);
    for chunk in order.chunks_exact(batch) {
        rows.clear();
        for &index in chunk {
            rows.extend_from_slice(&features[index * width..(index + 1) * width]);
        }
        let mut args = vec![("x", Arg::F32(&rows))];
        let seed: [i32; 1];
        if let Some(name) = seed_input {
            seed = [rng.next_u64() as i32];
            args.push((name, Arg::I32(&seed)));
        }
        step.run(&args)?;
        total += f64::from(step.output_f32("loss")?[0]);
        batches += 1;
    }
    Ok(total / batches as f64)
}

/// The batch of the family's `train` statement.
fn train_batch(family: &Family) -> Result<usize, Box<dyn std::error::Error>> {
    Ok(train_spec(&load_model(family.name, None, false)?)?.batch)
}

/// The family's model file with `B = batch`, compiled to run forward only, with its
/// initial parameters.
fn forward_executable(
    family: &Family,
    batch: usize,
) -> Result<Executable, Box<dyn std::error::Error>> {
    evaluator(family.name, Some(batch), BTreeMap::new())
}

/// The eigenvalues of the symmetric `n`x`n` matrix `a` (row-major), largest first,
/// with their unit eigenvectors as rows, by cyclic Jacobi rotations.
fn symmetric_eigen(mut a: Vec<f64>, n: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let scale: f64 = a.iter().map(|x| x * x).sum::<f64>().max(f64::MIN_POSITIVE);
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum();
        if off <= 1e-30 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                // The rotation that zeroes a[p][q] (Golub & Van Loan, 8.5.2).
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[j * n + j].total_cmp(&a[i * n + i]));
    let values = order.iter().map(|&i| a[i * n + i]).collect();
    let vectors = order
        .iter()
        .map(|&i| (0..n).map(|k| v[k * n + i]).collect())
        .collect();
    (values, vectors)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// An orthonormal basis of the span of `rows` (modified Gram–Schmidt, twice for
/// accuracy); an error if they are (numerically) dependent.
fn orthonormalise(rows: &[Vec<f64>]) -> Result<Vec<Vec<f64>>, Box<dyn std::error::Error>> {
    let mut basis: Vec<Vec<f64>> = Vec::with_capacity(rows.len());
    for row in rows {
        let mut r = row.clone();
        let norm0 = dot(&r, &r).sqrt();
        for _pass in 0..2 {
            for q in &basis {
                let projection = dot(&r, q);
                r.iter_mut().zip(q).for_each(|(x, y)| *x -= projection * y);
            }
        }
        let norm = dot(&r, &r).sqrt();
        if norm.is_nan() || norm <= 1e-9 * norm0 {
            return Err("the decoder's rows are linearly dependent".into());
        }
        r.iter_mut().for_each(|x| *x /= norm);
        basis.push(r);
    }
    Ok(basis)
}

/// The largest principal angle (radians) between the spans of `a` and `b`, each
/// `k` orthonormal rows: its cosine is the smallest singular value of `a bᵀ`, the
/// square root of the smallest eigenvalue of `(a bᵀ)ᵀ(a bᵀ)`.
fn largest_principal_angle(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    let k = a.len();
    let m: Vec<f64> = a
        .iter()
        .flat_map(|qa| b.iter().map(move |qb| dot(qa, qb)))
        .collect();
    let gram: Vec<f64> = (0..k * k)
        .map(|ij| (0..k).map(|r| m[r * k + ij / k] * m[r * k + ij % k]).sum())
        .collect();
    let (values, _) = symmetric_eigen(gram, k);
    let smallest = values.last().copied().unwrap_or(1.0).clamp(0.0, 1.0);
    smallest.sqrt().acos()
}

/// The sample covariance (`n`x`n`, row-major) and mean of `rows` of `n` values.
fn covariance(rows: &[f32], n: usize) -> (Vec<f64>, Vec<f64>) {
    let count = rows.len() / n;
    let mut mean = vec![0.0; n];
    for row in rows.chunks_exact(n) {
        mean.iter_mut()
            .zip(row)
            .for_each(|(m, &x)| *m += f64::from(x) / count as f64);
    }
    let mut cov = vec![0.0; n * n];
    for row in rows.chunks_exact(n) {
        let centred: Vec<f64> = row
            .iter()
            .zip(&mean)
            .map(|(&x, m)| f64::from(x) - m)
            .collect();
        for i in 0..n {
            for j in 0..n {
                cov[i * n + j] += centred[i] * centred[j] / (count - 1) as f64;
            }
        }
    }
    (cov, mean)
}

/// The linear autoencoder: the largest principal angle between the span of its
/// decoder's rows and the top-K principal subspace of the training digits.
pub(crate) fn autoencoder(family: &Family) -> RunResult {
    let (train, _) = load_data(family.data)?;
    let width = train.features_per_example();
    let mut step = train_step(family)?;
    let batch = train_batch(family)?;
    let mut rng = Rng::new(SEED);
    for _ in 0..family.epochs {
        features_epoch(&mut step, train.features(), width, batch, &mut rng, None)?;
    }
    let decoder: Vec<Vec<f64>> = step
        .param("decoder.weight")?
        .chunks_exact(width)
        .map(|row| row.iter().map(|&x| f64::from(x)).collect())
        .collect();
    let k = decoder.len();
    if k == 0 || k >= width {
        return Err(format!("a code of {k} units: expected 1 to {}", width - 1).into());
    }
    let (cov, _) = covariance(train.features(), width);
    let (values, vectors) = symmetric_eigen(cov, width);
    println!(
        "autoencoder: K = {k}; covariance eigenvalues {:.4} … λ{k} = {:.4}, λ{} = {:.4}",
        values[0],
        values[k - 1],
        k + 1,
        values[k]
    );
    let angle = largest_principal_angle(&orthonormalise(&decoder)?, &vectors[..k]);
    Ok(Outcome::at_most(
        "largest principal angle",
        angle,
        4,
        family.target,
    ))
}

/// The variational autoencoder: the relative fall of the test negative ELBO (noise
/// seed 0) from the initial parameters to the trained ones.
pub(crate) fn vae(family: &Family) -> RunResult {
    let (train, test) = load_data(family.data)?;
    let width = train.features_per_example();
    let mut eval = forward_executable(family, test.len())?;
    let test_loss = |eval: &mut Executable| -> Result<f64, Box<dyn std::error::Error>> {
        eval.run(&[
            ("x", Arg::F32(test.features())),
            (SEED_INPUT, Arg::I32(&[0])),
        ])?;
        Ok(f64::from(eval.output_f32("loss")?[0]))
    };
    let before = test_loss(&mut eval)?;
    let mut step = train_step(family)?;
    let batch = train_batch(family)?;
    let mut rng = Rng::new(SEED);
    for _ in 0..family.epochs {
        features_epoch(
            &mut step,
            train.features(),
            width,
            batch,
            &mut rng,
            Some(SEED_INPUT),
        )?;
    }
    copy_params(&step, &mut eval)?;
    let after = test_loss(&mut eval)?;
    println!("vae: test negative ELBO {before:.3} at initialisation, {after:.3} trained (nats per example)");
    let improvement = (before - after) / before;
    Ok(Outcome::at_least(
        "relative improvement of the test ELBO",
        improvement,
        4,
        family.target,
    ))
}

/// `count` points of two moons (scikit-learn's `make_moons`: the upper half circle
/// of radius 1 about the origin and the lower one about (1, 0.5)), each with
/// Gaussian noise of standard deviation `noise`, the moon drawn at random.
fn two_moons(count: usize, noise: f64, rng: &mut Rng) -> Vec<f64> {
    let mut points = Vec::with_capacity(2 * count);
    for _ in 0..count {
        let t = rng.uniform(0.0, PI);
        let (x, y) = if rng.below(2) == 0 {
            (t.cos(), t.sin())
        } else {
            (1.0 - t.cos(), 0.5 - t.sin())
        };
        points.push(x + noise * rng.normal());
        points.push(y + noise * rng.normal());
    }
    points
}

/// The mean test log-likelihood of the Gaussian with the training points' mean and
/// covariance (`n = 2`).
fn gaussian_log_likelihood(train: &[f32], test: &[f32]) -> f64 {
    let (cov, mean) = covariance(train, 2);
    let det = cov[0] * cov[3] - cov[1] * cov[2];
    let inverse = [cov[3] / det, -cov[1] / det, -cov[2] / det, cov[0] / det];
    let total: f64 = test
        .chunks_exact(2)
        .map(|p| {
            let d = [f64::from(p[0]) - mean[0], f64::from(p[1]) - mean[1]];
            let quad = d[0] * (inverse[0] * d[0] + inverse[1] * d[1])
                + d[1] * (inverse[2] * d[0] + inverse[3] * d[1]);
            -0.5 * quad - 0.5 * det.ln() - LOG_TWO_PI
        })
        .sum();
    total / (test.len() / 2) as f64
}

/// The planar flow: its mean test log-likelihood on standardised two moons, less the
/// standard normal's on the same points.
pub(crate) fn planar_flow(family: &Family) -> RunResult {
    const POINTS: usize = 1000;
    let mut rng = Rng::new(SEED);
    let raw_train = two_moons(POINTS, 0.1, &mut rng);
    let raw_test = two_moons(POINTS, 0.1, &mut rng);
    // Standardised with the training set's statistics, per coordinate.
    let stats: Vec<(f64, f64)> = (0..2)
        .map(|axis| {
            let values: Vec<f64> = raw_train.iter().skip(axis).step_by(2).copied().collect();
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            let var =
                values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (values.len() - 1) as f64;
            (mean, var.sqrt())
        })
        .collect();
    let standardise = |points: &[f64]| -> Vec<f32> {
        points
            .iter()
            .enumerate()
            .map(|(i, &v)| ((v - stats[i % 2].0) / stats[i % 2].1) as f32)
            .collect()
    };
    let (train, test) = (standardise(&raw_train), standardise(&raw_test));

    let mut step = train_step(family)?;
    let batch = train_batch(family)?;
    for _ in 0..family.epochs {
        features_epoch(&mut step, &train, 2, batch, &mut rng, None)?;
    }
    let mut eval = forward_executable(family, POINTS)?;
    copy_params(&step, &mut eval)?;
    eval.run(&[("x", Arg::F32(&test))])?;
    let flow = eval
        .output_f32("log_likelihood")?
        .iter()
        .map(|&v| f64::from(v))
        .sum::<f64>()
        / POINTS as f64;
    let base = test
        .chunks_exact(2)
        .map(|p| -0.5 * (f64::from(p[0]).powi(2) + f64::from(p[1]).powi(2)) - LOG_TWO_PI)
        .sum::<f64>()
        / POINTS as f64;
    let gaussian = gaussian_log_likelihood(&train, &test);
    println!(
        "planar_flow: test log-likelihood per example: flow {flow:.4}, standard normal {base:.4}, \
         best full-covariance Gaussian {gaussian:.4} (nats)"
    );
    let gain = flow - base;
    Ok(Outcome::at_least(
        "test log-likelihood over the standard normal's (nats)",
        gain,
        4,
        family.target,
    ))
}

/// The GAN's mixture: `MODES` centres on a circle of radius 2, each with standard
/// deviation `MODE_STD`.
const MODES: usize = 8;
const MODE_STD: f64 = 0.05;

fn mode_centre(mode: usize) -> (f64, f64) {
    let angle = 2.0 * PI * mode as f64 / MODES as f64;
    (2.0 * angle.cos(), 2.0 * angle.sin())
}

/// `count` points of the mixture, the mode of each drawn uniformly.
fn mixture(count: usize, rng: &mut Rng) -> Vec<f32> {
    let mut points = Vec::with_capacity(2 * count);
    for _ in 0..count {
        let (x, y) = mode_centre(rng.below(MODES));
        points.push((x + MODE_STD * rng.normal()) as f32);
        points.push((y + MODE_STD * rng.normal()) as f32);
    }
    points
}

fn normals(count: usize, rng: &mut Rng) -> Vec<f32> {
    (0..count).map(|_| rng.normal() as f32).collect()
}

/// Copies the parameters of `from` whose names start with `prefix` into `to`.
fn copy_prefixed(
    from: &Executable,
    to: &mut Executable,
    prefix: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    for (name, _) in from.params() {
        if name.starts_with(prefix) && !from.is_optimizer_state(&name) {
            to.set_param(&name, from.param(&name)?)?;
        }
    }
    Ok(())
}

/// The GAN's train step of output `loss` with every parameter under `frozen` frozen.
fn gan_step(
    family: &Family,
    loss: &str,
    frozen: &str,
) -> Result<Executable, Box<dyn std::error::Error>> {
    let mut file = load_model(family.name, None, false)?;
    let names: Vec<String> = file.model.params().keys().cloned().collect();
    for name in names.iter().filter(|name| name.starts_with(frozen)) {
        file.model.freeze(name)?;
    }
    let optimizer = kiln::model_file::optimizer(train_spec(&file)?)?;
    Ok(kiln::compile_train_step(&file.model, loss, optimizer)?)
}

/// The GAN: the modes of the mixture that 2000 generated points cover.
pub(crate) fn gan(family: &Family) -> RunResult {
    const SAMPLES: usize = 2000;
    let mut d_step = gan_step(family, "d_loss", "generator.")?;
    let mut g_step = gan_step(family, "g_loss", "discriminator.")?;
    let (batch, noise) = match &g_step
        .inputs()
        .iter()
        .find(|(name, _)| name == "z")
        .ok_or("the GAN has no input `z`")?
        .1
        .shape[..]
    {
        &[batch, noise] => (batch, noise),
        _ => return Err("the GAN's `z` is not [B, Z]".into()),
    };
    let mut rng = Rng::new(SEED);
    for _ in 0..family.epochs {
        let (x, z) = (mixture(batch, &mut rng), normals(batch * noise, &mut rng));
        d_step.run(&[("x", Arg::F32(&x)), ("z", Arg::F32(&z))])?;
        copy_prefixed(&d_step, &mut g_step, "discriminator.")?;
        // The generator's step reads no real points; `x` is fed all the same.
        let z = normals(batch * noise, &mut rng);
        g_step.run(&[("x", Arg::F32(&x)), ("z", Arg::F32(&z))])?;
        copy_prefixed(&g_step, &mut d_step, "generator.")?;
    }
    let mut sampler = forward_executable(family, SAMPLES)?;
    copy_params(&g_step, &mut sampler)?;
    let z = normals(SAMPLES * noise, &mut rng);
    sampler.run(&[
        ("x", Arg::F32(&vec![0.0; 2 * SAMPLES])),
        ("z", Arg::F32(&z)),
    ])?;
    let mut near = [0usize; MODES];
    for point in sampler.output_f32("fake")?.chunks_exact(2) {
        for (mode, count) in near.iter_mut().enumerate() {
            let (cx, cy) = mode_centre(mode);
            let distance = (f64::from(point[0]) - cx).hypot(f64::from(point[1]) - cy);
            if distance <= 3.0 * MODE_STD {
                *count += 1;
            }
        }
    }
    let covered = near.iter().filter(|&&count| count * 100 >= SAMPLES).count();
    let good: usize = near.iter().sum();
    println!("gan: of {SAMPLES} generated points, {good} within 3σ of a centre; per mode {near:?}");
    Ok(Outcome::at_least(
        "modes covered",
        covered as f64,
        0,
        family.target,
    ))
}
