//! The PTX kernels run, without a GPU: random graphs, their train steps and example
//! models go through the GPU path (`kiln::gpu::compile_ptx`: the pipeline, lowering,
//! the GPU schedule, the PTX emitter), the module's entries are launched in order
//! by the PTX simulator (`support/ptx_sim.rs`: bounds-checked, race-checked), and
//! every output and update must equal the reference interpreter's `Precision::F32`
//! result bit for bit (any NaN equals any NaN), as the CPU's code does. Scratch
//! buffers start as a NaN pattern, so a kernel reading what no kernel wrote shows.

#[path = "support/compare.rs"]
mod compare_support;
#[path = "support/conv_cases.rs"]
mod conv_cases;
#[path = "support/example_models.rs"]
mod example_models;
#[path = "support/ptx_sim.rs"]
mod ptx_sim;
#[path = "support/sweep.rs"]
mod sweep;

use compare_support::{compare, or_panic};

use kiln::gpu::{compile_ptx, ptx_inference, GpuProgram};
use kiln::ir::kernel::Storage;
use kiln::ir::random::{random_awkward_feeds, random_feeds};
use kiln::ir::{evaluate, DType, Feeds, GpuTarget, Graph, Precision, Rng, Tensor};
use kiln::passes::pipeline::{self, PipelineOptions, Step};
use std::collections::BTreeMap;

/// What a scratch word holds before any kernel writes it: a NaN no op makes.
const UNWRITTEN: u32 = 0x7fc0_dead;

fn words(tensor: &Tensor) -> Vec<u32> {
    tensor
        .data()
        .iter()
        .map(|&x| match tensor.dtype() {
            DType::F32 => (x as f32).to_bits(),
            DType::I32 => x as i32 as u32,
            DType::Bool => u32::from(x != 0.0),
        })
        .collect()
}

fn tensor(ty: &kiln::ir::TensorType, words: &[u32]) -> Tensor {
    let data = words
        .iter()
        .map(|&w| match ty.dtype {
            DType::F32 => f64::from(f32::from_bits(w)),
            DType::I32 => f64::from(w as i32),
            DType::Bool => f64::from(u8::from(w != 0)),
        })
        .collect();
    Tensor::new(ty.clone(), data).unwrap()
}

/// Runs the program's PTX on `feeds` (inputs and parameters by name): its outputs
/// and its parameters' values after the updates.
fn run_ptx(gpu: &GpuProgram, feeds: &Feeds) -> (Feeds, Feeds) {
    let module = ptx_sim::parse(&gpu.module.text);
    let program = &gpu.program;
    let buffers = program
        .buffers
        .iter()
        .map(|buffer| match &buffer.storage {
            Storage::Input(name) | Storage::Param(name) => {
                let value = feeds
                    .get(name)
                    .unwrap_or_else(|| panic!("no feed for {name}"));
                words(value)
            }
            Storage::Temp => vec![UNWRITTEN; buffer.len()],
        })
        .collect();
    let mut memory = ptx_sim::Memory::new(buffers);
    for entry in &gpu.module.entries {
        let code = &module.entries[&entry.name];
        assert_eq!(
            code.params(),
            entry.buffers.len(),
            "{}: parameters",
            entry.name
        );
        let params: Vec<u64> = entry
            .buffers
            .iter()
            .map(|b| ptx_sim::buffer_address(b.0))
            .collect();
        ptx_sim::launch(code, entry.grid, entry.block, &params, &mut memory);
    }
    let outputs = program
        .outputs
        .iter()
        .map(|output| {
            let data = &memory.buffers[output.buffer.0][..output.ty.num_elements()];
            (output.name.clone(), tensor(&output.ty, data))
        })
        .collect();
    // Updates read every value first, then write (one may be another's parameter).
    let updates: BTreeMap<String, Tensor> = program
        .updates
        .iter()
        .map(|update| {
            let param = program
                .param_buffer(&update.param)
                .expect("an updated parameter");
            let ty = &program.buffer(param).ty;
            let data = &memory.buffers[update.value.0][..ty.num_elements()];
            (update.param.clone(), tensor(ty, data))
        })
        .collect();
    (outputs, updates)
}

/// The graph through the GPU path and the simulator, against the interpreter.
fn check(
    graph: &Graph,
    feeds: &Feeds,
    steps: &[Step],
    options: &PipelineOptions,
) -> Result<(), String> {
    let expected =
        evaluate(graph, feeds, Precision::F32).map_err(|err| format!("interpreter: {err}"))?;
    for target in [GpuTarget::sm80(), GpuTarget::sm90()] {
        let gpu =
            compile_ptx(graph, steps, options, &target).map_err(|err| format!("compile: {err}"))?;
        let (outputs, updates) = run_ptx(&gpu, feeds);
        compare(&target.arch(), &expected, &outputs, &updates)?;
    }
    Ok(())
}

#[test]
fn random_graphs_and_train_steps_on_the_simulated_gpu_match_the_interpreter() {
    let mut checked = 0;
    for seed in 0..200u64 {
        let (graph, feeds) = sweep::graph_and_feeds(seed);
        let failure = |err: String| format!("seed {seed}: {err}\n{graph}");
        // A panic (the simulator's bounds and race checks) names the seed too.
        let options = PipelineOptions::default();
        or_panic(|| check(&graph, &feeds, pipeline::INFERENCE, &options))
            .unwrap_or_else(|err| panic!("{}", failure(err)));
        checked += 1;
        if !seed.is_multiple_of(3) {
            continue;
        }
        let step = sweep::train_step(&graph).unwrap_or_else(|err| panic!("{}", failure(err)));
        if let Some((forward, options, step)) = step {
            let expected = evaluate(&step, &feeds, Precision::F32).unwrap();
            for target in [GpuTarget::sm80(), GpuTarget::sm90()] {
                let gpu = compile_ptx(&forward, pipeline::TRAIN_STEP, &options, &target)
                    .unwrap_or_else(|err| panic!("{}", failure(err.to_string())));
                let (outputs, updates) = run_ptx(&gpu, &feeds);
                compare("train step", &expected, &outputs, &updates)
                    .unwrap_or_else(|err| panic!("{}", failure(err)));
            }
            checked += 1;
        }
    }
    assert!(checked > 200, "{checked} graphs checked");
}

fn f32_feed(shape: &[usize], data: Vec<f32>) -> Tensor {
    Tensor::f32(shape.to_vec(), &data).unwrap()
}

#[test]
fn binary_ops_on_every_pair_of_awkward_values() {
    use kiln::ir::random::AWKWARD_F32;
    use kiln::ir::{BinaryOp, TensorType};
    let mut values: Vec<f32> = AWKWARD_F32.iter().map(|&v| v as f32).collect();
    values.extend([1.0, -1.0, 0.5, -2.5, 3.0]);
    let pairs = values.len() * values.len();
    let (a_data, b_data): (Vec<f32>, Vec<f32>) = values
        .iter()
        .flat_map(|&a| values.iter().map(move |&b| (a, b)))
        .unzip();
    let mut g = Graph::new("pairs");
    let a = g.input("a", TensorType::f32([pairs])).unwrap();
    let b = g.input("b", TensorType::f32([pairs])).unwrap();
    for op in BinaryOp::ALL {
        let y = g.binary(op, a, b).unwrap();
        g.set_output(&format!("{op:?}"), y).unwrap();
    }
    // Pairs as rows: the max of each row in the loop nest's order.
    let rows = g.input("rows", TensorType::f32([pairs, 2])).unwrap();
    let row_max = g.reduce_max(rows, &[1]).unwrap();
    g.set_output("row_max", row_max).unwrap();
    let rows_data: Vec<f32> = a_data
        .iter()
        .zip(&b_data)
        .flat_map(|(&a, &b)| [a, b])
        .collect();
    let feeds = Feeds::from([
        ("a".to_string(), f32_feed(&[pairs], a_data)),
        ("b".to_string(), f32_feed(&[pairs], b_data)),
        ("rows".to_string(), f32_feed(&[pairs, 2], rows_data)),
    ]);
    check(&g, &feeds, pipeline::INFERENCE, &PipelineOptions::default()).unwrap();
}

/// As [`check`], with every matmul and contraction launched with each tiling of
/// `Launch::MATMUL_PARTS` in turn (the schedule picks one by size; all must hold).
fn check_every_tiling(graph: &Graph, feeds: &Feeds) -> Result<(), String> {
    use kiln::ir::Launch;
    let expected =
        evaluate(graph, feeds, Precision::F32).map_err(|err| format!("interpreter: {err}"))?;
    let mut gpu =
        ptx_inference(graph, &GpuTarget::sm90()).map_err(|err| format!("compile: {err}"))?;
    for part in Launch::MATMUL_PARTS {
        for launch in &mut gpu.schedule.launches {
            if matches!(launch, Launch::Matmul { .. }) {
                *launch = Launch::matmul(part);
            }
        }
        gpu.module = kiln::backend::ptx::emit(&gpu.program, &gpu.schedule)
            .map_err(|err| format!("emit: {err}"))?;
        let (outputs, updates) = run_ptx(&gpu, feeds);
        compare(
            &format!("{part}x{part} per thread"),
            &expected,
            &outputs,
            &updates,
        )?;
    }
    Ok(())
}

#[test]
fn matmuls_of_every_shape_and_layout_match_the_interpreter() {
    use kiln::ir::TensorType;
    let shapes = [
        (1, 1, 1, 1),
        (1, 3, 5, 7),
        (1, 65, 66, 17),
        (1, 70, 3, 33),
        (1, 2, 130, 40),
        (1, 129, 5, 18),
        (3, 9, 10, 16),
        (2, 64, 64, 32),
    ];
    let mut rng = Rng::new(7);
    for (batches, m, n, k) in shapes {
        for (trans_a, trans_b) in [(false, false), (true, false), (false, true), (true, true)] {
            let batch = |dims: [usize; 2]| -> Vec<usize> {
                if batches == 1 {
                    dims.to_vec()
                } else {
                    vec![batches, dims[0], dims[1]]
                }
            };
            let a_shape = batch(if trans_a { [k, m] } else { [m, k] });
            let b_shape = batch(if trans_b { [n, k] } else { [k, n] });
            let mut g = Graph::new("mm");
            let a = g.input("a", TensorType::f32(a_shape.clone())).unwrap();
            let b = g.input("b", TensorType::f32(b_shape.clone())).unwrap();
            let c = g.matmul_t(a, b, trans_a, trans_b).unwrap();
            g.set_output("c", c).unwrap();
            let feeds = random_feeds(&g, &mut rng);
            let what = format!("{batches}x{m}x{n}x{k} trans {trans_a} {trans_b}");
            check_every_tiling(&g, &feeds).unwrap_or_else(|err| panic!("{what}: {err}"));
            // Tiny products round to -0, which a step more on padding would make +0.
            let tiny = Feeds::from([
                (
                    "a".to_string(),
                    Tensor::full(&TensorType::f32(a_shape.clone()), -1e-30).unwrap(),
                ),
                (
                    "b".to_string(),
                    Tensor::full(&TensorType::f32(b_shape.clone()), 1e-30).unwrap(),
                ),
            ]);
            check_every_tiling(&g, &tiny)
                .unwrap_or_else(|err| panic!("{what}, tiny values: {err}"));
        }
    }
}

/// Convolutions and their gradients at random odd sizes (1-3 spatial axes, strides,
/// dilations, uneven padding, groups) run as implicit GEMMs (contractions through the
/// tiled kernel, no patch matrix; the input gradient summed over taps) and equal the
/// interpreter bit for bit, also on values whose products round to -0, where a step
/// more or less (padding skipped rather than summed as +0 terms, a tap that reads
/// nothing not adding its +0) changes the sign.
#[test]
fn convolutions_run_as_implicit_gemm_and_match_the_interpreter() {
    use kiln::ir::kernel::KernelOp;
    use kiln::ir::{Launch, TensorType};
    let mut rng = Rng::new(21);
    for round in 0..24 {
        let case = conv_cases::random_case(&mut rng);
        let g = conv_cases::graph_of(&case);
        let gpu = ptx_inference(&g, &GpuTarget::sm80()).unwrap();
        let contractions = gpu
            .program
            .kernels
            .iter()
            .zip(&gpu.schedule.launches)
            .filter(|(kernel, launch)| {
                matches!(kernel.op, Some(KernelOp::Contraction(_)))
                    && matches!(launch, Launch::Matmul { .. })
            })
            .count();
        assert_eq!(contractions, 3, "round {round}: conv and both gradients");
        let what = format!(
            "round {round}: {:?} x {:?} w {:?}",
            case.spec, case.x, case.w
        );
        let feeds = random_feeds(&g, &mut rng);
        check(&g, &feeds, pipeline::INFERENCE, &PipelineOptions::default())
            .unwrap_or_else(|err| panic!("{what}: {err}"));
        if round % 4 == 0 {
            check_every_tiling(&g, &feeds).unwrap_or_else(|err| panic!("{what}: {err}"));
        }
        let tiny = |name: &str, shape: &[usize], value: f64| {
            let ty = TensorType::f32(shape.to_vec());
            (name.to_string(), Tensor::full(&ty, value).unwrap())
        };
        let feeds = Feeds::from([
            tiny("x", &case.x, -1e-30),
            tiny("w", &case.w, 1e-30),
            tiny("dy", &case.y, -1e-30),
        ]);
        check(&g, &feeds, pipeline::INFERENCE, &PipelineOptions::default())
            .unwrap_or_else(|err| panic!("{what}, tiny values: {err}"));
    }
}

/// Every example model's train step (its forward pass when it has none), one step on
/// the simulated GPU against the CPU's compiled step from the same parameters and
/// optimizer state: equal bit for bit, as both equal the interpreter.
#[test]
fn example_models_take_the_cpus_step_on_the_simulated_gpu() {
    use kiln::frontend::lang::ElaborateOptions;
    use kiln::gpu::ptx_train_step;
    use kiln::model_file;
    for path in example_models::example_models() {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        // The W4 workload's convolutions have fixed sizes a simulator takes minutes
        // over; lenet's and lenet_w3's convolutions run the same kinds of kernels.
        if name == "conv_w4" {
            continue;
        }
        let started = std::time::Instant::now();
        // Every size the file declares at most 4, so the simulator's work stays
        // small (its defaults are batch sizes of 32 and more).
        let defaults = model_file::load(&path, &ElaborateOptions::default()).unwrap();
        let options = ElaborateOptions {
            dims: defaults
                .dims
                .iter()
                .map(|(dim, &size)| (dim.clone(), size.min(4)))
                .collect(),
            seed: 3,
            ..ElaborateOptions::default()
        };
        let file = model_file::load(&path, &options)
            .unwrap_or_else(|err| panic!("{name}: {}", err.render(false)));
        let (mut cpu, gpu) = match &file.train {
            Some(train) => {
                let optimizer = model_file::optimizer(train).unwrap();
                (
                    kiln::compile_train_step(&file.model, &train.loss, optimizer).unwrap(),
                    ptx_train_step(&file.model, &train.loss, optimizer, &GpuTarget::sm80())
                        .unwrap(),
                )
            }
            None => {
                let mut exe = kiln::compile(file.model.graph()).unwrap();
                kiln::compile::set_params(&mut exe, &file.model).unwrap();
                (
                    exe,
                    ptx_inference(file.model.graph(), &GpuTarget::sm80()).unwrap(),
                )
            }
        };
        // Inputs drawn for the graph; parameters and optimizer state as the CPU's
        // executable starts them.
        let mut feeds: Feeds = random_feeds(file.model.graph(), &mut Rng::new(11))
            .into_iter()
            .filter(|(input, _)| cpu.inputs().iter().any(|(n, _)| n == input))
            .collect();
        let start: Feeds = cpu
            .params()
            .into_iter()
            .map(|(param, _)| {
                let value = cpu.param_tensor(&param).unwrap();
                (param, value)
            })
            .collect();
        feeds.extend(start);
        let (outputs, updates) = cpu.run_feeds(&feeds).unwrap();
        let expected = kiln::ir::Evaluation {
            values: Default::default(),
            outputs,
            updates,
        };
        let (outputs, updates) = run_ptx(&gpu, &feeds);
        compare("the CPU's step", &expected, &outputs, &updates)
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        eprintln!("{name}: {:?}", started.elapsed());
    }
}

/// Reductions long enough for a block each (max over f32 with NaN and signed
/// zeros, i32 sums that wrap, bool any), whole tensors and rows and columns.
#[test]
fn reductions_shared_by_a_block_match_the_interpreter() {
    use kiln::ir::{ReduceOp, TensorType};
    let mut rng = Rng::new(3);
    // Rows, whole tensors, and reductions over leading axes (which lowering writes
    // as accumulations into the output, and the GPU schedule folds per element).
    for (shape, axes) in [
        (vec![1000], vec![0]),
        (vec![3, 333], vec![1]),
        (vec![4, 5, 70], vec![1, 2]),
        (vec![65], vec![0]),
        (vec![700, 3], vec![0]),
        (vec![4, 5, 70], vec![0, 2]),
    ] {
        let mut g = Graph::new("reductions");
        let x = g.input("x", TensorType::f32(shape.clone())).unwrap();
        let n = g.input("n", TensorType::i32(shape.clone())).unwrap();
        let max = g.reduce(ReduceOp::Max, x, &axes).unwrap();
        g.set_output("max", max).unwrap();
        let sum = g.reduce(ReduceOp::Sum, n, &axes).unwrap();
        g.set_output("sum", sum).unwrap();
        let zero = g.constant_like(0.0, x).unwrap();
        let positive = g.compare(kiln::ir::CmpOp::Gt, x, zero).unwrap();
        let any = g.reduce(ReduceOp::Max, positive, &axes).unwrap();
        g.set_output("any", any).unwrap();
        let mut feeds = random_awkward_feeds(&g, &mut rng);
        // Large i32 values, so the sums wrap.
        let big = Tensor::new(
            TensorType::i32(shape.clone()),
            (0..shape.iter().product::<usize>())
                .map(|i| f64::from((i as i32).wrapping_mul(1_234_567_891)))
                .collect(),
        )
        .unwrap();
        feeds.insert("n".to_string(), big);
        check(&g, &feeds, pipeline::INFERENCE, &PipelineOptions::default())
            .unwrap_or_else(|err| panic!("{shape:?} over {axes:?}: {err}"));
        // The schedule did share them.
        let gpu = ptx_inference(&g, &GpuTarget::sm80()).unwrap();
        let shared = gpu
            .schedule
            .launches
            .iter()
            .filter(|l| matches!(l, kiln::ir::Launch::Reduce { .. }))
            .count();
        assert!(
            shared >= 3,
            "{shape:?} over {axes:?}: {}\n{}",
            gpu.schedule,
            gpu.program
        );
    }
}
