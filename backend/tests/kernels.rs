//! Hand-written kernel-IR programs for code paths lowering does not produce yet
//! (gathers, negative strides, locals read in vector loops, degenerate loops), and
//! the errors compile returns for programs it must refuse.

use kiln_backend::{compile, Arg, BackendError};
use kiln_ir::kernel::{
    BufferId, Expr, Index, Kernel, LocalId, LoopKind, Output, Program, Scalar, Stmt, Storage,
    VType, VarId,
};
use kiln_ir::{BinaryOp, DType, TensorType};

fn program_with(input_len: usize, output_len: usize, kernel: Kernel) -> Program {
    let mut program = Program::new("hand");
    let input = program.add_buffer(TensorType::f32([input_len]), Storage::Input("x".into()));
    let output = program.add_buffer(TensorType::f32([output_len]), Storage::Temp);
    assert_eq!((input, output), (BufferId(0), BufferId(1)));
    program.kernels.push(kernel);
    program.outputs.push(Output {
        name: "y".into(),
        buffer: output,
        ty: TensorType::f32([output_len]),
    });
    program
}

fn one_loop(extent: usize, kind: LoopKind, store: Index, value: Expr) -> Kernel {
    Kernel {
        name: "hand".into(),
        op: None,
        locals: Vec::new(),
        body: vec![Stmt::Loop {
            var: VarId(0),
            start: 0,
            end: extent,
            step: 1,
            kind,
            body: vec![Stmt::Store {
                buffer: BufferId(1),
                index: store,
                value,
            }],
        }],
    }
}

fn run(program: &Program, x: &[f32]) -> Vec<f32> {
    let mut exe = compile(program).unwrap_or_else(|err| panic!("{err}\n{program}"));
    exe.run(&[("x", Arg::F32(x))]).unwrap();
    exe.output_f32("y").unwrap().to_vec()
}

#[test]
fn vector_loops_gather_strided_and_reversed_loads() {
    let x: Vec<f32> = (0..21).map(|v| v as f32).collect();
    let i = VarId(0);
    // y[i] = x[3i] + x[20 - i], 7 = 4 + 3 lanes.
    let value = Expr::binary(
        BinaryOp::Add,
        Expr::load(BufferId(0), Index::new([(i, 3)], 0)),
        Expr::load(BufferId(0), Index::new([(i, -1)], 20)),
    );
    let program = program_with(
        21,
        7,
        one_loop(7, LoopKind::Vector(4), Index::new([(i, 1)], 0), value),
    );
    let expected: Vec<f32> = (0..7).map(|i| (3 * i + 20 - i) as f32).collect();
    assert_eq!(run(&program, &x), expected);
}

#[test]
fn vector_loops_splat_locals_and_count_lanes() {
    let i = VarId(0);
    let r0 = LocalId(0);
    // r0 = x[0] * 2; y[i] = r0 + float(i)
    let kernel = Kernel {
        name: "hand".into(),
        op: None,
        locals: vec![VType::scalar(DType::F32)],
        body: vec![
            Stmt::Assign {
                local: r0,
                value: Expr::binary(
                    BinaryOp::Mul,
                    Expr::load(BufferId(0), Index::constant(0)),
                    Expr::Const(Scalar::F32(2.0)),
                ),
            },
            Stmt::Loop {
                var: i,
                start: 0,
                end: 10,
                step: 1,
                kind: LoopKind::Vector(4),
                body: vec![Stmt::Store {
                    buffer: BufferId(1),
                    index: Index::new([(i, 1)], 0),
                    value: Expr::binary(
                        BinaryOp::Add,
                        Expr::Local(r0),
                        Expr::cast(DType::F32, Expr::LoopIndex(i)),
                    ),
                }],
            },
        ],
    };
    let program = program_with(1, 10, kernel);
    let expected: Vec<f32> = (0..10).map(|i| 3.0 + i as f32).collect();
    assert_eq!(run(&program, &[1.5]), expected);
}

#[test]
fn empty_and_single_iteration_loops() {
    let i = VarId(0);
    let copy = |extent| {
        one_loop(
            extent,
            LoopKind::Vector(4),
            Index::new([(i, 1)], 0),
            Expr::load(BufferId(0), Index::new([(i, 1)], 1)),
        )
    };
    assert_eq!(run(&program_with(2, 1, copy(1)), &[5.0, 6.0]), vec![6.0]);
    // A loop of extent 0 runs nothing, so even an index past the end is fine.
    assert_eq!(run(&program_with(0, 0, copy(0)), &[]), Vec::<f32>::new());
}

#[test]
fn out_of_bounds_programs_are_refused_before_codegen() {
    let i = VarId(0);
    let program = program_with(
        4,
        4,
        one_loop(
            4,
            LoopKind::Serial,
            Index::new([(i, 1)], 0),
            Expr::load(BufferId(0), Index::new([(i, 1)], 1)),
        ),
    );
    let err = compile(&program).expect_err("out of bounds load");
    assert!(matches!(err, BackendError::Invalid(_)), "{err}");
    assert!(
        err.to_string()
            .contains("reaches elements 1..=4 of a buffer of 4"),
        "{err}"
    );
}

#[test]
fn unsupported_vector_shapes_are_errors_not_crashes() {
    let i = VarId(0);
    let scatter = one_loop(
        3,
        LoopKind::Vector(4),
        Index::new([(i, 2)], 0),
        Expr::Const(Scalar::F32(1.0)),
    );
    let err = compile(&program_with(1, 6, scatter)).expect_err("strided store");
    assert!(
        matches!(err, BackendError::Unsupported { .. }) && err.to_string().contains("unit stride"),
        "{err}"
    );
    let wide = one_loop(
        8,
        LoopKind::Vector(8),
        Index::new([(i, 1)], 0),
        Expr::Const(Scalar::F32(1.0)),
    );
    let err = compile(&program_with(1, 8, wide)).expect_err("8 lanes");
    assert!(err.to_string().contains("vector width 8"), "{err}");
}

#[test]
fn a_program_without_kernels_shows_its_input() {
    let mut program = Program::new("identity");
    let input = program.add_buffer(TensorType::f32([3]), Storage::Input("x".into()));
    program.outputs.push(Output {
        name: "y".into(),
        buffer: input,
        ty: TensorType::f32([3]),
    });
    assert_eq!(run(&program, &[1.0, 2.0, 3.0]), vec![1.0, 2.0, 3.0]);
}
