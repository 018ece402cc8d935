//! The runtime rejects every malformed argument with an error naming what was wrong
//! and what was expected, before any generated code runs.

mod common;

use common::compile_graph;
use kiln_backend::{Arg, Executable, RuntimeError};
use kiln_ir::{Feeds, Graph, Tensor, TensorType};

/// `y = x * 2 + w` over f32[2,3], with an i32 label input and output, and `w += 1`.
fn executable() -> Executable {
    let mut g = Graph::new("errors");
    let x = g.input("x", TensorType::f32([2, 3])).unwrap();
    let labels = g.input("labels", TensorType::i32([4])).unwrap();
    let w = g.parameter("w", TensorType::f32([2, 3])).unwrap();
    let two = g.constant_like(2.0, x).unwrap();
    let doubled = g.mul(x, two).unwrap();
    let y = g.add_(doubled, w).unwrap();
    let one = g.constant_like(1.0, w).unwrap();
    let next = g.add_(w, one).unwrap();
    g.set_update(w, next).unwrap();
    g.set_output("y", y).unwrap();
    let shifted = g.neg(labels).unwrap();
    g.set_output("neg_labels", shifted).unwrap();
    compile_graph(&g)
}

const X: [f32; 6] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
const LABELS: [i32; 4] = [0, 1, 2, 3];

fn first_run() -> Executable {
    let mut exe = executable();
    exe.set_param("w", &[0.5; 6]).unwrap();
    exe.run(&[("x", Arg::F32(&X)), ("labels", Arg::I32(&LABELS))])
        .unwrap();
    exe
}

/// The state after `first_run`: a failed call must leave it untouched.
fn assert_unchanged(exe: &Executable) {
    assert_eq!(
        exe.output_f32("y").unwrap(),
        &[2.5, 4.5, 6.5, 8.5, 10.5, 12.5]
    );
    assert_eq!(exe.param("w").unwrap(), &[1.5; 6]);
}

#[test]
fn a_valid_run_computes_and_updates() {
    let exe = first_run();
    assert_unchanged(&exe);
    let labels = exe.output("neg_labels").unwrap();
    assert_eq!(labels.to_i32(), vec![0, -1, -2, -3]);
    assert_eq!(labels.ty(), TensorType::i32([4]));
}

#[test]
fn missing_input_is_named_with_its_type() {
    let mut exe = first_run();
    let err = exe.run(&[("x", Arg::F32(&X))]).unwrap_err();
    assert_eq!(
        err,
        RuntimeError::MissingInput {
            name: "labels".into(),
            ty: TensorType::i32([4])
        }
    );
    assert_eq!(
        err.to_string(),
        "input \"labels\" of type i32[4] is not given"
    );
    assert_unchanged(&exe);
}

#[test]
fn unknown_and_duplicate_inputs_are_rejected() {
    let mut exe = first_run();
    let err = exe
        .run(&[
            ("x", Arg::F32(&X)),
            ("labels", Arg::I32(&LABELS)),
            ("extra", Arg::F32(&X)),
        ])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown input \"extra\" (the inputs are: x, labels)"
    );
    let err = exe
        .run(&[
            ("x", Arg::F32(&X)),
            ("x", Arg::F32(&X)),
            ("labels", Arg::I32(&LABELS)),
        ])
        .unwrap_err();
    assert_eq!(err.to_string(), "input \"x\" is given twice");
    assert_unchanged(&exe);
}

#[test]
fn wrong_length_and_dtype_are_rejected_before_running() {
    let mut exe = first_run();
    let err = exe
        .run(&[("x", Arg::F32(&X[..5])), ("labels", Arg::I32(&LABELS))])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "input \"x\" expects f32[2,3] (6 elements), given 5 elements"
    );
    // A too-long buffer is as wrong as a short one.
    let long = [0.0f32; 7];
    assert!(matches!(
        exe.run(&[("x", Arg::F32(&long)), ("labels", Arg::I32(&LABELS))]),
        Err(RuntimeError::WrongLength { found: 7, .. })
    ));
    let err = exe
        .run(&[("x", Arg::I32(&[1; 6])), ("labels", Arg::I32(&LABELS))])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "input \"x\" expects f32[2,3], given i32 data"
    );
    let err = exe
        .run(&[("x", Arg::F32(&X)), ("labels", Arg::Bool(&[true; 4]))])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "input \"labels\" expects i32[4], given bool data"
    );
    assert_unchanged(&exe);
}

#[test]
fn parameter_and_output_names_and_types_are_checked() {
    let mut exe = first_run();
    let err = exe.set_param("v", &[0.0; 6]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown parameter \"v\" (the parameters are: w)"
    );
    assert!(matches!(
        exe.param("v"),
        Err(RuntimeError::UnknownParam { .. })
    ));
    let err = exe.set_param("w", &[0.0; 2]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "parameter \"w\" expects f32[2,3] (6 elements), given 2 elements"
    );
    let err = exe.set_param_arg("w", Arg::I32(&[0; 6])).unwrap_err();
    assert!(matches!(err, RuntimeError::WrongDtype { .. }), "{err}");
    let err = exe.output_f32("z").unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown output \"z\" (the outputs are: y, neg_labels)"
    );
    let err = exe.output_f32("neg_labels").unwrap_err();
    assert_eq!(err.to_string(), "output \"neg_labels\" is i32[4], not f32");
    assert_unchanged(&exe);
}

#[test]
fn feeds_are_all_checked_before_anything_changes() {
    let mut exe = first_run();
    let feed = |entries: Vec<(&str, Tensor)>| -> Feeds {
        entries
            .into_iter()
            .map(|(name, tensor)| (name.to_string(), tensor))
            .collect()
    };
    let x = Tensor::f32([2, 3], &X).unwrap();
    let labels = Tensor::i32([4], &LABELS).unwrap();
    let w = Tensor::f32([2, 3], &[9.0; 6]).unwrap();
    let err = exe
        .run_feeds(&feed(vec![
            ("x", x.clone()),
            ("labels", labels.clone()),
            ("w", w.clone()),
            ("nope", x.clone()),
        ]))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "feed \"nope\" is neither an input nor a parameter"
    );
    // Same element count, other shape: a feed carries its full type.
    let err = exe
        .run_feeds(&feed(vec![
            ("x", Tensor::f32([3, 2], &X).unwrap()),
            ("labels", labels.clone()),
            ("w", w.clone()),
        ]))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "input \"x\" expects f32[2,3], given f32[3,2]"
    );
    // A missing input fails before the fed parameter is written.
    let err = exe
        .run_feeds(&feed(vec![("x", x.clone()), ("w", w.clone())]))
        .unwrap_err();
    assert!(matches!(err, RuntimeError::MissingInput { .. }), "{err}");
    assert_unchanged(&exe);

    let (outputs, updates) = exe
        .run_feeds(&feed(vec![("x", x), ("labels", labels), ("w", w)]))
        .unwrap();
    assert_eq!(
        outputs["y"].to_f32(),
        vec![11.0, 13.0, 15.0, 17.0, 19.0, 21.0]
    );
    assert_eq!(updates["w"].to_f32(), vec![10.0; 6]);
}
