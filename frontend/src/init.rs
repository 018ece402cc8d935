//! Parameter initialisers, seeded so a model built twice starts from the same weights.

use kiln_ir::alloc::{try_vec, try_with_capacity, OutOfMemory};
use kiln_ir::types::num_elements;
use kiln_ir::Rng;

/// How a parameter's initial values are drawn. `fan_in`/`fan_out` come from the
/// parameter's shape: for a `[in, out]` weight matrix they are `in` and `out`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Every element zero (biases).
    Zeros,
    /// Every element the given value.
    Constant(f32),
    /// Glorot/Xavier uniform: `U(-a, a)` with `a = sqrt(6 / (fan_in + fan_out))`.
    GlorotUniform,
    /// He/Kaiming normal for ReLU layers: `N(0, 2 / fan_in)`.
    HeNormal,
    /// He/Kaiming uniform: `U(-a, a)` with `a = sqrt(6 / fan_in)`.
    HeUniform,
    /// `N(0, std^2)`.
    Normal { std: f32 },
    /// `U(-bound, bound)`; PyTorch's default for `Linear` weights and biases is
    /// `bound = 1 / sqrt(fan_in)` (see [`Init::torch_linear`]).
    Uniform { bound: f32 },
}

/// `(fan_in, fan_out)` of a parameter shape: the last two axes of a matrix (with any
/// leading axes as receptive-field size), or the length of a vector.
pub fn fans(shape: &[usize]) -> (usize, usize) {
    match shape {
        [] => (1, 1),
        [n] => (*n, *n),
        [.., fan_in, fan_out] => {
            // Saturating: a shape from a user need not be within the size limit yet.
            let field = num_elements(&shape[..shape.len() - 2]);
            (fan_in.saturating_mul(field), fan_out.saturating_mul(field))
        }
    }
}

impl Init {
    /// Draws the values of a parameter of the given shape, in row-major order, or an
    /// error if their memory cannot be had (`what` names the parameter).
    pub fn sample(self, shape: &[usize], rng: &mut Rng) -> Result<Vec<f32>, OutOfMemory> {
        let count = num_elements(shape);
        let what = || format!("the initial values of a parameter of shape {shape:?}");
        let (fan_in, fan_out) = fans(shape);
        match self {
            Init::Zeros => try_vec(0.0, count, what),
            Init::Constant(value) => try_vec(value, count, what),
            Init::GlorotUniform => {
                let limit = (6.0 / fan_in.saturating_add(fan_out) as f64).sqrt();
                draw(count, rng, what, |rng| rng.uniform(-limit, limit) as f32)
            }
            Init::HeNormal => {
                let std = (2.0 / fan_in as f64).sqrt();
                draw(count, rng, what, |rng| (rng.normal() * std) as f32)
            }
            Init::HeUniform => {
                let limit = (6.0 / fan_in as f64).sqrt();
                draw(count, rng, what, |rng| rng.uniform(-limit, limit) as f32)
            }
            Init::Normal { std } => {
                let std = f64::from(std);
                draw(count, rng, what, |rng| (rng.normal() * std) as f32)
            }
            Init::Uniform { bound } => {
                let bound = f64::from(bound);
                draw(count, rng, what, |rng| rng.uniform(-bound, bound) as f32)
            }
        }
    }

    /// PyTorch's initialisation of a `Linear` layer's weight and bias with
    /// `in_features` inputs: `U(-1/sqrt(in), 1/sqrt(in))` (its Kaiming-uniform with
    /// `a = sqrt(5)`), or zeros for a layer with no inputs.
    pub fn torch_linear(in_features: usize) -> Init {
        if in_features == 0 {
            return Init::Zeros;
        }
        Init::Uniform {
            bound: (1.0 / (in_features as f64).sqrt()) as f32,
        }
    }
}

/// `count` values from `one`, in a vector allocated up front.
fn draw(
    count: usize,
    rng: &mut Rng,
    what: impl FnOnce() -> String,
    mut one: impl FnMut(&mut Rng) -> f32,
) -> Result<Vec<f32>, OutOfMemory> {
    let mut values = try_with_capacity(count, what)?;
    values.extend((0..count).map(|_| one(rng)));
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glorot_uniform_stays_within_its_limit() {
        let values = Init::GlorotUniform
            .sample(&[64, 128], &mut Rng::new(1))
            .unwrap();
        let limit = (6.0f32 / 192.0).sqrt();
        assert_eq!(values.len(), 64 * 128);
        assert!(values.iter().all(|v| v.abs() <= limit));
        let max = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(
            max > 0.9 * limit,
            "samples should fill the range, max {max}"
        );
    }

    #[test]
    fn he_normal_has_variance_two_over_fan_in() {
        let values = Init::HeNormal
            .sample(&[100, 200], &mut Rng::new(2))
            .unwrap();
        let var = values.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / values.len() as f64;
        assert!((var - 0.02).abs() < 0.002, "variance {var}");
    }

    #[test]
    fn same_seed_gives_same_weights() {
        let a = Init::HeUniform.sample(&[3, 5], &mut Rng::new(9)).unwrap();
        let b = Init::HeUniform.sample(&[3, 5], &mut Rng::new(9)).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            Init::Zeros.sample(&[4], &mut Rng::new(9)).unwrap(),
            vec![0.0; 4]
        );
    }

    #[test]
    fn memory_that_cannot_be_had_is_an_error() {
        // More bytes than any address space: refused by `try_reserve_exact` on every
        // machine (the builder refuses such shapes earlier, by the size limit).
        let shape = [usize::MAX / 8, 2];
        let err = Init::HeUniform
            .sample(&shape, &mut Rng::new(9))
            .unwrap_err();
        assert_eq!(err.bytes, (usize::MAX / 8 * 2) * 4);
        assert!(err.what.contains(&format!("{shape:?}")), "{err}");
        assert!(Init::Zeros.sample(&shape, &mut Rng::new(9)).is_err());
    }

    #[test]
    fn empty_parameters_draw_nothing() {
        let mut rng = Rng::new(3);
        assert_eq!(
            Init::HeNormal.sample(&[0, 4], &mut rng).unwrap(),
            Vec::<f32>::new()
        );
        assert_eq!(
            Init::GlorotUniform.sample(&[4, 0], &mut rng).unwrap(),
            Vec::<f32>::new()
        );
    }
}
