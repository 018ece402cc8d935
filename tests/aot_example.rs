//! examples/aot as a user runs it: `make` compiles the digits MLP with
//! `kiln compile --train --embed-weights`, builds main.c against the object with the
//! system C compiler, and runs it: the C program trains the network with
//! `mlp_train` (its loss falls) and measures `mlp_infer` on held-out digits.

use std::process::Command;

#[test]
fn the_c_example_trains_the_digits_mlp_without_kiln_at_run_time() {
    let out = std::env::temp_dir().join(format!("kiln-aot-example-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let output = Command::new("make")
        .arg("-C")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/aot"))
        .arg(format!("KILN={}", env!("CARGO_BIN_EXE_kiln")))
        .arg(format!("OUT={}", out.display()))
        .output()
        .expect("make runs (the example needs make, cc and gzip)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let losses: Vec<f64> = stdout
        .lines()
        .filter_map(|line| line.split_once("mean loss ")?.1.parse().ok())
        .collect();
    assert_eq!(losses.len(), 20, "{stdout}");
    assert!(losses[19] < 0.1 * losses[0], "{losses:?}");
    let accuracy: f64 = stdout
        .lines()
        .find_map(|line| {
            line.strip_prefix("test accuracy ")?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no accuracy line in\n{stdout}"));
    assert!(accuracy > 0.85, "{stdout}");
    let _ = std::fs::remove_dir_all(&out);
}
