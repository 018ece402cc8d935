//! The kernel IR's reference interpreter: runs a checked [`Program`] statement by
//! statement, the way Cranelift's interpreter runs CLIF, so that kernel programs can
//! be tested without a code generator and code generators can be tested against it.
//!
//! Buffers are vectors of 32-bit words, as the CPU backend lays them out (f32 bits,
//! two's complement i32, bool as a 0/1 word). Every element operation is computed by
//! [`crate::scalar`], the one definition the graph interpreter's `Precision::F32`
//! mode and the JIT's code share, so the three agree bit for bit (any NaN equals any
//! NaN). Loops run `start, start + step, ...` below `end`; every loop kind runs its
//! iterations in order, since each [`crate::kernel::LoopKind`] only promises that other orders give the same
//! result. A value with `lanes > 1` is computed lane by lane.
//!
//! A matmul call is run by its definition, not its blocking: each C element of the
//! rows it covers is the f32 fma chain over k from +0 in increasing k. Its workspace
//! is neither read nor written (its contents are unspecified).
//!
//! Reading an element of a scratch buffer that no store (or call) has written yet is
//! an error ([`RunError::Uninitialized`]): generated code would read whatever the
//! buffer held, so such a program has no defined result.

use crate::alloc::{try_vec, OutOfMemory};
use crate::kernel::{
    BufferId, Expr, Index, Indirect, KernelError, Matmul, Program, Routine, Slice, Split, Stmt,
    Storage, VarId,
};
use crate::scalar;
use crate::tensor::Tensor;
use crate::types::{DType, TensorType};
use crate::{BinaryOp, UnaryOp};
use std::collections::BTreeMap;
use thiserror::Error;

/// Tensors by name: the inputs, the parameters, or the outputs of a run.
pub type Values = BTreeMap<String, Tensor>;

/// Why a program could not be run.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum RunError {
    /// The program breaks the kernel IR's rules: a kiln bug after lowering, or a
    /// mistake in a hand-written program.
    #[error("invalid kernel program: {0}")]
    Invalid(#[from] KernelError),
    /// An input or parameter of the program has no value (the caller's mistake).
    #[error("no value given for {kind} {name:?}")]
    Missing { kind: &'static str, name: String },
    /// A value names no input (or parameter) of the program (the caller's mistake).
    #[error("{name:?} is not {kind} of the program")]
    Unknown { kind: &'static str, name: String },
    /// A value has another type than its buffer (the caller's mistake).
    #[error("{name:?} expects {expected}, given {found}")]
    WrongType {
        name: String,
        expected: TensorType,
        found: TensorType,
    },
    /// A kernel reads a scratch element before anything wrote it: the program's
    /// result is undefined (a kiln bug after lowering).
    #[error(
        "kernel {kernel} ({name}) reads element {element} of {buffer} before anything wrote it"
    )]
    Uninitialized {
        kernel: usize,
        name: String,
        buffer: BufferId,
        element: usize,
    },
    /// A buffer's memory could not be had (the environment's limit, not a bug).
    #[error(transparent)]
    OutOfMemory(#[from] OutOfMemory),
}

/// Runs `program` once on `inputs` (a value for every input, by name) with the
/// parameters' values in `params` (one for every parameter). Returns every output,
/// read after the last kernel; then each update's value becomes its parameter's
/// value in `params`. The program is checked first.
pub fn run(program: &Program, inputs: &Values, params: &mut Values) -> Result<Values, RunError> {
    program.check()?;
    let mut machine = Machine::new(program, inputs, params)?;
    for (position, kernel) in program.kernels.iter().enumerate() {
        let mut frame = Frame {
            kernel: position,
            name: &kernel.name,
            vars: Vec::new(),
            locals: vec![None; kernel.locals.len()],
        };
        machine.stmts(&kernel.body, &mut frame)?;
    }
    let mut outputs = Values::new();
    for output in &program.outputs {
        let tensor = machine.tensor(output.buffer, &output.ty)?;
        outputs.insert(output.name.clone(), tensor);
    }
    // Every update reads its value before any parameter changes, so an update whose
    // value is another parameter's buffer sees that parameter's old value.
    let mut updated = Vec::with_capacity(program.updates.len());
    for update in &program.updates {
        let param = program
            .param_buffer(&update.param)
            .expect("the check found the updated parameter");
        let ty = program.buffer(param).ty.clone();
        updated.push((update.param.clone(), machine.tensor(update.value, &ty)?));
    }
    params.extend(updated);
    Ok(outputs)
}

/// At most [`crate::kernel::VType::LANES`]'s largest lane count.
const MAX_LANES: usize = 16;

/// A value of a kernel: `lanes` elements of `dtype`, each an f64 holding a value of
/// the dtype exactly (as [`crate::scalar`] takes them).
#[derive(Clone, Copy, Debug)]
struct Value {
    dtype: DType,
    lanes: usize,
    data: [f64; MAX_LANES],
}

impl Value {
    fn scalar(dtype: DType, value: f64) -> Value {
        Value::splat(dtype, 1, value)
    }

    fn splat(dtype: DType, lanes: usize, value: f64) -> Value {
        assert!(lanes <= MAX_LANES, "the check bounds lane counts");
        Value {
            dtype,
            lanes,
            data: [value; MAX_LANES],
        }
    }

    /// The value with `f` applied to every lane, as a value of `dtype`.
    fn map(self, dtype: DType, f: impl Fn(usize) -> f64) -> Value {
        let mut result = Value::splat(dtype, self.lanes, 0.0);
        for lane in 0..self.lanes {
            result.data[lane] = f(lane);
        }
        result
    }
}

/// The word that stores `value` (a value of `dtype`) in a buffer.
fn to_word(dtype: DType, value: f64) -> u32 {
    match dtype {
        DType::F32 => (value as f32).to_bits(),
        DType::I32 => value as i32 as u32,
        DType::Bool => u32::from(value != 0.0),
    }
}

/// The value of `dtype` a buffer word holds.
fn from_word(dtype: DType, word: u32) -> f64 {
    match dtype {
        DType::F32 => f64::from(f32::from_bits(word)),
        DType::I32 => f64::from(word as i32),
        DType::Bool => f64::from(u8::from(word != 0)),
    }
}

/// One kernel's state while it runs.
struct Frame<'a> {
    kernel: usize,
    name: &'a str,
    /// The enclosing loops' variables and their current values, outermost first.
    vars: Vec<(VarId, i64)>,
    /// The current value of every local (`None` until assigned).
    locals: Vec<Option<Value>>,
}

impl Frame<'_> {
    fn var(&self, var: VarId) -> i64 {
        self.vars
            .iter()
            .rev()
            .find(|(bound, _)| *bound == var)
            .map(|&(_, value)| value)
            .expect("the check keeps variables in their loops")
    }

    /// The element an index names at the current loop variables.
    fn element(&self, index: &Index) -> usize {
        let element = index
            .terms
            .iter()
            .fold(i128::from(index.offset), |sum, &(var, stride)| {
                sum + i128::from(stride) * i128::from(self.var(var))
            });
        usize::try_from(element).expect("the check keeps indices inside their buffers")
    }
}

/// The buffers of a running program.
struct Machine<'a> {
    program: &'a Program,
    words: Vec<Vec<u32>>,
    /// For scratch buffers, which elements have been written; `None` for buffers the
    /// caller fills.
    written: Vec<Option<Vec<bool>>>,
}

impl<'a> Machine<'a> {
    /// The buffers, with inputs and parameters copied in from the caller's values.
    fn new(
        program: &'a Program,
        inputs: &Values,
        params: &Values,
    ) -> Result<Machine<'a>, RunError> {
        for (kind, values, named) in [
            ("an input", inputs, program.inputs()),
            ("a parameter", params, program.params()),
        ] {
            if let Some(name) = values
                .keys()
                .find(|name| !named.iter().any(|(known, _)| known == name))
            {
                return Err(RunError::Unknown {
                    kind,
                    name: name.clone(),
                });
            }
        }
        let mut words = Vec::with_capacity(program.buffers.len());
        let mut written = Vec::with_capacity(program.buffers.len());
        for buffer in &program.buffers {
            let (kind, name, values) = match &buffer.storage {
                Storage::Input(name) => ("input", name, inputs),
                Storage::Param(name) => ("parameter", name, params),
                Storage::Temp => {
                    let what = || format!("interpreter buffer {}", buffer.ty);
                    words.push(try_vec(0u32, buffer.len(), what)?);
                    written.push(Some(try_vec(false, buffer.len(), what)?));
                    continue;
                }
            };
            let value = values.get(name).ok_or_else(|| RunError::Missing {
                kind,
                name: name.clone(),
            })?;
            if value.ty() != buffer.ty {
                return Err(RunError::WrongType {
                    name: name.clone(),
                    expected: buffer.ty.clone(),
                    found: value.ty(),
                });
            }
            let what = || format!("interpreter buffer {}", buffer.ty);
            let mut data = try_vec(0u32, buffer.len(), what)?;
            for (word, &element) in data.iter_mut().zip(value.data()) {
                *word = to_word(buffer.ty.dtype, element);
            }
            words.push(data);
            written.push(None);
        }
        Ok(Machine {
            program,
            words,
            written,
        })
    }

    /// A buffer's contents read as a tensor of type `ty` (of its length).
    fn tensor(&self, buffer: BufferId, ty: &TensorType) -> Result<Tensor, RunError> {
        let data = self.words[buffer.0]
            .iter()
            .map(|&word| from_word(ty.dtype, word))
            .collect();
        Tensor::new(ty.clone(), data).map_err(|err| match err {
            crate::TensorError::OutOfMemory(err) => RunError::OutOfMemory(err),
            crate::TensorError::Invalid { .. } => {
                panic!("words read by their dtype fit it, and the check matched lengths: {err}")
            }
        })
    }

    fn read(&self, frame: &Frame, buffer: BufferId, element: usize) -> Result<u32, RunError> {
        if let Some(written) = &self.written[buffer.0] {
            if !written[element] {
                return Err(RunError::Uninitialized {
                    kernel: frame.kernel,
                    name: frame.name.to_string(),
                    buffer,
                    element,
                });
            }
        }
        Ok(self.words[buffer.0][element])
    }

    fn write(&mut self, buffer: BufferId, element: usize, word: u32) {
        self.words[buffer.0][element] = word;
        if let Some(written) = &mut self.written[buffer.0] {
            written[element] = true;
        }
    }

    fn stmts(&mut self, stmts: &[Stmt], frame: &mut Frame) -> Result<(), RunError> {
        for stmt in stmts {
            self.stmt(stmt, frame)?;
        }
        Ok(())
    }

    fn stmt(&mut self, stmt: &Stmt, frame: &mut Frame) -> Result<(), RunError> {
        match stmt {
            Stmt::Loop {
                var,
                start,
                end,
                step,
                body,
                ..
            } => {
                // Every kind runs its iterations in order: the others only promise that
                // running them differently gives this result.
                for value in (*start..*end).step_by(*step) {
                    frame.vars.push((*var, value as i64));
                    let result = self.stmts(body, frame);
                    frame.vars.pop();
                    result?;
                }
                Ok(())
            }
            Stmt::Store {
                buffer,
                index,
                value,
            } => {
                let value = self.expr(value, frame)?;
                let element = frame.element(index);
                let dtype = self.program.buffer(*buffer).ty.dtype;
                for lane in 0..value.lanes {
                    self.write(*buffer, element + lane, to_word(dtype, value.data[lane]));
                }
                Ok(())
            }
            Stmt::Assign { local, value } => {
                let value = self.expr(value, frame)?;
                frame.locals[local.0 as usize] = Some(value);
                Ok(())
            }
            Stmt::Call { routine, args } => match routine {
                Routine::Matmul(matmul) => self.matmul(matmul, args, frame),
            },
            Stmt::ScatterAdd { target, value } => {
                let value = self.expr(value, frame)?;
                let Some(element) = self.pick(target, frame)? else {
                    return Ok(());
                };
                let dtype = self.program.buffer(target.buffer).ty.dtype;
                let old = from_word(dtype, self.read(frame, target.buffer, element)?);
                let sum = scalar::binary(BinaryOp::Add, dtype, old, value.data[0]);
                self.write(target.buffer, element, to_word(dtype, sum));
                Ok(())
            }
        }
    }

    /// The element an [`Indirect`] picks at the current loop variables, or `None`
    /// when its position is out of range.
    fn pick(&self, indirect: &Indirect, frame: &Frame) -> Result<Option<usize>, RunError> {
        let at = self.expr(&indirect.at, frame)?.data[0] as i64;
        if !indirect.in_range(at) {
            return Ok(None);
        }
        let element =
            frame.element(&indirect.index) as i128 + i128::from(indirect.stride) * i128::from(at);
        Ok(Some(usize::try_from(element).expect(
            "the check keeps every picked element inside its buffer",
        )))
    }

    /// C = op(A) * op(B) for the rows the call covers, each element the f32 fma chain
    /// over k in increasing order from +0, then the epilogue.
    fn matmul(&mut self, mm: &Matmul, args: &[Slice], frame: &Frame) -> Result<(), RunError> {
        let (a, b, c) = match args {
            [a, b, c, ..] => (a, b, c),
            _ => panic!("the check gives a matmul its arguments"),
        };
        // After the workspace: the bias, then the parameter, when the epilogue has them.
        let mut extra = args[4..].iter();
        let bias = if mm.epilogue.bias { extra.next() } else { None };
        let param = mm.epilogue.update.and_then(|_| extra.next());
        let (a_start, b_start, c_start) = (
            frame.element(&a.offset),
            frame.element(&b.offset),
            frame.element(&c.offset),
        );
        let block = |var: VarId, size: usize, extent: usize| {
            let task = usize::try_from(frame.var(var)).expect("loop variables are >= 0");
            let first = (task * size).min(extent);
            first..((task + 1) * size).min(extent)
        };
        let (rows, cols) = match mm.split {
            Split::All => (0..mm.m, 0..mm.n),
            Split::Rows { var, rows } => (block(var, rows, mm.m), 0..mm.n),
            Split::Cols { var, cols } => (0..mm.m, block(var, cols, mm.n)),
        };
        for i in rows {
            for j in cols.clone() {
                let mut acc = 0.0f32;
                for p in 0..mm.k {
                    let a_element = if mm.trans_a {
                        p * mm.m + i
                    } else {
                        i * mm.k + p
                    };
                    let b_element = if mm.trans_b {
                        j * mm.k + p
                    } else {
                        p * mm.n + j
                    };
                    let x = f32::from_bits(self.read(frame, a.buffer, a_start + a_element)?);
                    let y = f32::from_bits(self.read(frame, b.buffer, b_start + b_element)?);
                    acc = scalar::fma_f32(x, y, acc);
                }
                if let Some(bias) = bias {
                    let element = frame.element(&bias.offset) + j;
                    let add = f32::from_bits(self.read(frame, bias.buffer, element)?);
                    acc = scalar::binary(BinaryOp::Add, DType::F32, acc.into(), add.into()) as f32;
                }
                if mm.epilogue.relu {
                    acc = scalar::unary(UnaryOp::Relu, DType::F32, acc.into()) as f32;
                }
                if let (Some(scale), Some(param)) = (mm.epilogue.update_scale(), param) {
                    let element = frame.element(&param.offset) + i * mm.n + j;
                    let old = f32::from_bits(self.read(frame, param.buffer, element)?);
                    let step = scalar::binary(BinaryOp::Mul, DType::F32, scale.into(), acc.into());
                    acc = scalar::binary(BinaryOp::Sub, DType::F32, old.into(), step) as f32;
                }
                self.write(c.buffer, c_start + i * mm.n + j, acc.to_bits());
            }
        }
        Ok(())
    }

    fn expr(&self, expr: &Expr, frame: &Frame) -> Result<Value, RunError> {
        let eval = |expr: &Expr| self.expr(expr, frame);
        Ok(match expr {
            Expr::Load {
                buffer,
                index,
                lanes,
            } => {
                let dtype = self.program.buffer(*buffer).ty.dtype;
                let element = frame.element(index);
                let mut value = Value::splat(dtype, *lanes as usize, 0.0);
                for lane in 0..value.lanes {
                    value.data[lane] = from_word(dtype, self.read(frame, *buffer, element + lane)?);
                }
                value
            }
            Expr::Splat(lanes, x) => {
                let x = eval(x)?;
                Value::splat(x.dtype, *lanes as usize, x.data[0])
            }
            Expr::Const(value) => Value::scalar(value.dtype(), value.to_f64()),
            Expr::LoopIndex(var) => Value::scalar(DType::I32, frame.var(*var) as f64),
            Expr::Local(local) => frame.locals[local.0 as usize]
                .expect("the check finds every local assigned before it is read"),
            Expr::Unary(op, x) => {
                let x = eval(x)?;
                x.map(x.dtype, |lane| scalar::unary(*op, x.dtype, x.data[lane]))
            }
            Expr::Binary(op, a, b) => {
                let (a, b) = (eval(a)?, eval(b)?);
                a.map(a.dtype, |lane| {
                    scalar::binary(*op, a.dtype, a.data[lane], b.data[lane])
                })
            }
            Expr::Compare(op, a, b) => {
                let (a, b) = (eval(a)?, eval(b)?);
                a.map(DType::Bool, |lane| {
                    f64::from(u8::from(scalar::compare(
                        *op,
                        a.dtype,
                        a.data[lane],
                        b.data[lane],
                    )))
                })
            }
            Expr::Select(cond, on_true, on_false) => {
                let (cond, a, b) = (eval(cond)?, eval(on_true)?, eval(on_false)?);
                a.map(a.dtype, |lane| {
                    scalar::select(cond.data[lane], a.data[lane], b.data[lane])
                })
            }
            Expr::Cast(to, x) => {
                let x = eval(x)?;
                x.map(*to, |lane| scalar::cast(x.data[lane], *to))
            }
            Expr::Fma(a, b, c) => {
                let (a, b, c) = (eval(a)?, eval(b)?, eval(c)?);
                a.map(DType::F32, |lane| {
                    f64::from(scalar::fma_f32(
                        a.data[lane] as f32,
                        b.data[lane] as f32,
                        c.data[lane] as f32,
                    ))
                })
            }
            Expr::Random(dist, key0, key1, counter) => {
                let (key0, key1, counter) = (eval(key0)?, eval(key1)?, eval(counter)?);
                counter.map(DType::F32, |lane| {
                    f64::from(dist.sample(
                        key0.data[lane] as i32,
                        key1.data[lane] as i32,
                        counter.data[lane] as i32,
                    ))
                })
            }
            Expr::Gather(indirect) => {
                let dtype = self.program.buffer(indirect.buffer).ty.dtype;
                let value = match self.pick(indirect, frame)? {
                    Some(element) => from_word(dtype, self.read(frame, indirect.buffer, element)?),
                    None => 0.0,
                };
                Value::scalar(dtype, value)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel_text::parse;

    fn program(src: &str) -> Program {
        parse(src).unwrap_or_else(|err| panic!("{err}"))
    }

    #[test]
    fn runs_loops_and_applies_updates_after_reading_outputs() {
        let program = program(
            r#"program "p" {
  b0: f32[5] input "x"
  b1: f32[5] param "w"
  b2: f32[5] temp
  output "y" = b2: f32[5]
  output "w_before" = b1: f32[5]
  update "w" = b2

  kernel k0 add {
    for i0 in 0..4 step 2 unroll2 {
      b2[i0] = add(b0[i0], b1[i0])
      b2[i0 + 1] = add(b0[i0 + 1], b1[i0 + 1])
    }
    for i1 in 4..5 {
      b2[i1] = add(b0[i1], b1[i1])
    }
  }
}
"#,
        );
        let x = Tensor::f32([5], &[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        let w = Tensor::f32([5], &[0.5; 5]).unwrap();
        let inputs = Values::from([("x".to_string(), x)]);
        let mut params = Values::from([("w".to_string(), w.clone())]);
        let outputs = run(&program, &inputs, &mut params).unwrap();
        let sum = Tensor::f32([5], &[1.5, 2.5, 3.5, 4.5, 5.5]).unwrap();
        assert_eq!(outputs["y"], sum);
        assert_eq!(outputs["w_before"], w);
        assert_eq!(params["w"], sum);
    }

    #[test]
    fn reading_unwritten_scratch_is_an_error() {
        let program = program(
            r#"program "p" {
  b0: f32[2] temp
  b1: f32[1] temp
  output "y" = b1: f32[1]

  kernel k0 copy {
    b0[0] = 1.0
    b1[0] = b0[1]
  }
}
"#,
        );
        let err = run(&program, &Values::new(), &mut Values::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel 0 (copy) reads element 1 of b0 before anything wrote it"
        );
    }

    #[test]
    fn feeds_must_match_the_signature() {
        let program =
            program("program \"p\" {\n  b0: f32[2] input \"x\"\n  b1: i32[1] param \"w\"\n}\n");
        let x = Tensor::f32([2], &[1.0, 2.0]).unwrap();
        let inputs = Values::from([("x".to_string(), x.clone())]);
        let err = run(&program, &inputs, &mut Values::new()).unwrap_err();
        assert_eq!(err.to_string(), "no value given for parameter \"w\"");
        let mut params = Values::from([("w".to_string(), x.clone())]);
        let err = run(&program, &inputs, &mut params).unwrap_err();
        assert_eq!(err.to_string(), "\"w\" expects i32[1], given f32[2]");
        let inputs = Values::from([("z".to_string(), x)]);
        let err = run(&program, &inputs, &mut Values::new()).unwrap_err();
        assert_eq!(err.to_string(), "\"z\" is not an input of the program");
    }
}
