//! The karate club as the graph network's inputs, `examples/data/karate/*.npy`,
//! derived here from the CSV files beside them (Zachary's friendships and the faction
//! each member joined): `q = D̃^-1/2 (A + I) D̃^-1/2` with `D̃` the degrees of
//! `A + I`, `x` the identity (one-hot features), `labels` the factions, `mask` 1 on
//! members 0 (Mr. Hi) and 33 (the officer), the one labelled member of each. The test
//! fails if the committed files differ; `KILN_WRITE_DATA=1` writes them.

use kiln::ir::{Tensor, TensorType};
use std::path::{Path, PathBuf};

fn data(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/data")
        .join(file)
}

/// The rows of a two-column CSV file of whole numbers after its header.
fn pairs(file: &str) -> Vec<(usize, usize)> {
    let text = std::fs::read_to_string(data(file)).unwrap();
    text.lines()
        .skip(1)
        .map(|line| {
            let (a, b) = line.split_once(',').unwrap();
            (a.trim().parse().unwrap(), b.trim().parse().unwrap())
        })
        .collect()
}

fn inputs() -> Vec<(&'static str, Tensor)> {
    let clubs = pairs("karate_club_nodes.csv");
    let n = clubs.len();
    assert_eq!(n, 34);
    let mut labels = vec![0.0; n];
    for (node, club) in clubs {
        labels[node] = club as f64;
    }
    let mut adjacency = vec![0.0f64; n * n];
    for i in 0..n {
        adjacency[i * n + i] = 1.0;
    }
    let edges = pairs("karate_club_edges.csv");
    assert_eq!(edges.len(), 78);
    for (a, b) in edges {
        adjacency[a * n + b] = 1.0;
        adjacency[b * n + a] = 1.0;
    }
    let degree: Vec<f64> = (0..n)
        .map(|i| adjacency[i * n..(i + 1) * n].iter().sum())
        .collect();
    // Rounded to f32 here, as the model reads it.
    let q = (0..n * n)
        .map(|k| f64::from((adjacency[k] / (degree[k / n] * degree[k % n]).sqrt()) as f32))
        .collect();
    let x = (0..n * n)
        .map(|k| f64::from(u8::from(k / n == k % n)))
        .collect();
    let mask = (0..n)
        .map(|i| f64::from(u8::from(i == 0 || i == n - 1)))
        .collect();
    let square = TensorType::f32([n, n]);
    vec![
        ("q", Tensor::new(square.clone(), q).unwrap()),
        ("x", Tensor::new(square, x).unwrap()),
        ("labels", Tensor::new(TensorType::i32([n]), labels).unwrap()),
        ("mask", Tensor::new(TensorType::f32([n]), mask).unwrap()),
    ]
}

#[test]
fn the_karate_inputs_are_derived_from_the_csv_files() {
    let write = std::env::var("KILN_WRITE_DATA").is_ok_and(|v| v == "1");
    for (name, tensor) in inputs() {
        let path = data(&format!("karate/{name}.npy"));
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            kiln::npy::write(&path, &tensor).unwrap();
        }
        let committed = kiln::npy::read(&path).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(committed.ty(), tensor.ty(), "{name}");
        assert_eq!(committed.data(), tensor.data(), "{name}");
    }
}
