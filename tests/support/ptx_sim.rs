//! A simulator of the PTX that kiln's emitter writes, so that its kernels can be run
//! without a GPU: the instructions `kiln_backend::ptx` uses (and only those; any
//! other is a test failure), global memory as one array of 32-bit words per
//! program buffer, per-block shared memory, and the threads of a block run one
//! after another between barriers (`bar.sync`), which is one legal schedule of a
//! data-race-free kernel. Every global access is checked against its buffer's
//! bounds and for races between the threads of a launch (a word one thread writes
//! that another reads or writes), so a wrong index or a schedule that splits
//! dependent loops fails loudly instead of giving quietly wrong numbers.
//!
//! Arithmetic follows the PTX ISA: `.rn` f32 operations are IEEE single precision
//! (Rust's f32 operations), `fma.rn` one rounding, `cvt.rzi.s32.f32` saturates with
//! NaN to 0, `cvt.rn.f32.s32` rounds to nearest, integer arithmetic wraps. For
//! `max.NaN`/`min.NaN` the ISA leaves which zero of `±0` wins open; this simulator
//! returns the second operand when the two compare equal, so code that depends on
//! the order of zeros fails here.

use std::collections::HashMap;

/// Where each global buffer lives: buffer `i` starts at `(i + 1) << 40`.
const BUFFER_SHIFT: u32 = 40;

/// The device address of buffer `index`'s first word.
pub fn buffer_address(index: usize) -> u64 {
    ((index as u64) + 1) << BUFFER_SHIFT
}

#[derive(Clone, Copy, Debug)]
enum Special {
    TidX,
    NtidX,
    CtaidX,
    CtaidY,
    CtaidZ,
    NctaidX,
}

#[derive(Clone, Debug)]
enum Operand {
    Reg(usize),
    Imm(u64),
    Special(Special),
    /// A shared array's address.
    Shared(u32),
    /// An entry parameter (by position).
    Param(usize),
}

/// A memory operand `[base+offset]`.
#[derive(Clone, Debug)]
struct Address {
    base: Operand,
    offset: i64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Cmp {
    Eq,
    Ne,
    Neu,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    S32,
    U32,
    F32,
}

#[derive(Clone, Debug)]
enum Op {
    Mov,
    MulLoS32,
    MadLoS32,
    AddS32,
    SubS32,
    RemU32,
    DivU32,
    RemS32,
    DivS32,
    MulWideS32,
    MulWideU32,
    AddS64,
    CvtS64S32,
    MulLoS64,
    LdParam,
    Cvta,
    LdGlobal,
    StGlobal,
    /// Four consecutive words from a 16-byte aligned address into the four
    /// registers of the vector operand, or from them.
    LdGlobalV4,
    StGlobalV4,
    LdShared,
    StShared,
    And,
    Or,
    Xor,
    Not,
    Selp,
    Setp(Cmp, Kind),
    FAdd,
    FSub,
    FMul,
    FDiv,
    Fma,
    Sqrt,
    MaxNaN,
    MinNaN,
    MaxS32,
    MinS32,
    AbsS32,
    NegS32,
    ShrS32,
    ShrU32,
    Shl,
    CvtF32S32,
    CvtS32F32,
    /// `shfl.sync.bfly.b32 d, a, distance, 31, -1`: lane `i` gets lane `i ^
    /// distance`'s `a`, all 32 lanes at once.
    Shfl,
    Bra(usize),
    Bar,
    Ret,
}

#[derive(Clone, Debug)]
struct Ins {
    guard: Option<(usize, bool)>,
    op: Op,
    dst: Option<usize>,
    args: Vec<Operand>,
    mem: Option<Address>,
    line: String,
}

/// One `.entry`: its code with registers numbered and labels resolved.
#[derive(Clone, Debug)]
pub struct Entry {
    params: usize,
    registers: usize,
    shared_words: usize,
    code: Vec<Ins>,
}

impl Entry {
    /// How many `.u64` parameters the entry takes.
    pub fn params(&self) -> usize {
        self.params
    }
}

/// Every entry of a module by name.
pub struct Module {
    pub entries: HashMap<String, Entry>,
}

/// Parses a module; panics on anything outside the subset kiln writes.
pub fn parse(text: &str) -> Module {
    let mut entries = HashMap::new();
    let mut lines = text.lines().map(str::trim).peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix(".visible .entry ") else {
            continue;
        };
        let name = rest.trim_end_matches('(').to_string();
        let mut params = Vec::new();
        for line in lines.by_ref() {
            if line == ")" {
                break;
            }
            let param = line.trim_end_matches(',');
            let param = param
                .strip_prefix(".param .u64 ")
                .unwrap_or_else(|| panic!("unexpected parameter line {line:?}"));
            params.push(param.to_string());
        }
        let mut body = Vec::new();
        for line in lines.by_ref() {
            if line == "}" {
                break;
            }
            body.push(line);
        }
        entries.insert(name, parse_entry(&params, &body));
    }
    Module { entries }
}

fn parse_entry(params: &[String], body: &[&str]) -> Entry {
    let mut registers: HashMap<String, usize> = HashMap::new();
    let mut shared: HashMap<String, u32> = HashMap::new();
    let mut shared_bytes = 0u32;
    let mut labels: HashMap<String, usize> = HashMap::new();
    let mut raw: Vec<&str> = Vec::new();
    for line in body {
        if line.is_empty() || line.starts_with("//") || *line == "{" || line.starts_with(".reg") {
            continue;
        }
        if line.starts_with(".maxntid") {
            continue;
        }
        if let Some(decl) = line.strip_prefix(".shared .align ") {
            let decl = decl
                .split_once(" .b8 ")
                .expect("a shared byte array")
                .1
                .trim_end_matches(';');
            let (name, size) = decl.split_once('[').expect("a shared array");
            let size: u32 = size.trim_end_matches(']').parse().expect("its size");
            shared.insert(name.to_string(), shared_bytes);
            shared_bytes += size;
            continue;
        }
        if let Some(label) = line.strip_suffix(':') {
            labels.insert(label.to_string(), raw.len());
            continue;
        }
        raw.push(line);
    }
    let mut register = |name: &str| -> usize {
        let next = registers.len();
        *registers.entry(name.to_string()).or_insert(next)
    };
    let mut code = Vec::with_capacity(raw.len());
    for line in raw {
        let statement = line.trim_end_matches(';');
        let (guard, statement) = match statement.strip_prefix('@') {
            Some(rest) => {
                let (predicate, rest) = rest.split_once(' ').expect("a guarded instruction");
                let (negate, predicate) = match predicate.strip_prefix('!') {
                    Some(p) => (true, p),
                    None => (false, predicate),
                };
                (Some((register(predicate), negate)), rest)
            }
            None => (None, statement),
        };
        let (mnemonic, operands) = statement.split_once(' ').unwrap_or((statement, ""));
        // A vector operand `{%f1, %f2, %f3, %f4}` is one operand of four registers.
        let (operands, vector): (String, Vec<&str>) = match (operands.find('{'), operands.find('}'))
        {
            (Some(open), Some(close)) => (
                format!("{}VECTOR{}", &operands[..open], &operands[close + 1..]),
                operands[open + 1..close].split(", ").collect(),
            ),
            _ => (operands.to_string(), Vec::new()),
        };
        // A branch's operand is its label, resolved by `decode`.
        let operands: Vec<&str> = if operands.is_empty() || mnemonic.starts_with("bra") {
            Vec::new()
        } else {
            operands.split(", ").collect()
        };
        let mut mem = None;
        let mut values = Vec::new();
        let operand = |text: &str, register: &mut dyn FnMut(&str) -> usize| -> Operand {
            if text.starts_with('%') {
                return match text {
                    "%tid.x" => Operand::Special(Special::TidX),
                    "%ntid.x" => Operand::Special(Special::NtidX),
                    "%ctaid.x" => Operand::Special(Special::CtaidX),
                    "%ctaid.y" => Operand::Special(Special::CtaidY),
                    "%ctaid.z" => Operand::Special(Special::CtaidZ),
                    "%nctaid.x" => Operand::Special(Special::NctaidX),
                    _ => Operand::Reg(register(text)),
                };
            }
            if let Some(hex) = text.strip_prefix("0f") {
                return Operand::Imm(u64::from(u32::from_str_radix(hex, 16).expect("f32 hex")));
            }
            if let Some(hex) = text.strip_prefix("0x") {
                return Operand::Imm(u64::from_str_radix(hex, 16).expect("hex"));
            }
            if let Some(&offset) = shared.get(text) {
                return Operand::Shared(offset);
            }
            if let Some(position) = params.iter().position(|p| p == text) {
                return Operand::Param(position);
            }
            let value: i64 = text
                .parse()
                .unwrap_or_else(|_| panic!("operand {text:?} in {line:?}"));
            Operand::Imm(value as u64)
        };
        for text in &operands {
            if *text == "VECTOR" {
                for reg in &vector {
                    values.push(operand(reg, &mut register));
                }
                continue;
            }
            if let Some(inner) = text.strip_prefix('[') {
                let inner = inner.trim_end_matches(']');
                let (base, offset) = match inner.split_once('+') {
                    Some((base, offset)) => (base, offset.parse().expect("an offset")),
                    None => (inner, 0),
                };
                mem = Some(Address {
                    base: operand(base, &mut register),
                    offset,
                });
            } else {
                values.push(operand(text, &mut register));
            }
        }
        let op = decode(mnemonic, &values, &labels, line);
        // The destination is the first operand, except for stores and branches.
        let (dst, args) = match op {
            Op::StGlobal
            | Op::StShared
            | Op::Bra(_)
            | Op::Bar
            | Op::Ret
            | Op::LdGlobalV4
            | Op::StGlobalV4 => (None, values),
            _ => match values.split_first() {
                Some((Operand::Reg(dst), rest)) => (Some(*dst), rest.to_vec()),
                _ => panic!("no destination register in {line:?}"),
            },
        };
        code.push(Ins {
            guard,
            op,
            dst,
            args,
            mem,
            line: line.to_string(),
        });
    }
    Entry {
        params: params.len(),
        registers: registers.len(),
        shared_words: (shared_bytes as usize).div_ceil(4),
        code,
    }
}

fn decode(mnemonic: &str, operands: &[Operand], labels: &HashMap<String, usize>, line: &str) -> Op {
    if let Some(rest) = mnemonic.strip_prefix("setp.") {
        let (cmp, kind) = rest.split_once('.').expect("setp.cmp.type");
        let cmp = match cmp {
            "eq" => Cmp::Eq,
            "ne" => Cmp::Ne,
            "neu" => Cmp::Neu,
            "lt" => Cmp::Lt,
            "le" => Cmp::Le,
            "gt" => Cmp::Gt,
            "ge" => Cmp::Ge,
            _ => panic!("comparison {cmp} in {line:?}"),
        };
        let kind = match kind {
            "s32" => Kind::S32,
            "u32" => Kind::U32,
            "f32" => Kind::F32,
            _ => panic!("comparison type {kind} in {line:?}"),
        };
        return Op::Setp(cmp, kind);
    }
    match mnemonic {
        "bra" | "bra.uni" => {
            let _ = operands;
            let target = line
                .trim_end_matches(';')
                .rsplit(' ')
                .next()
                .expect("a label");
            Op::Bra(
                *labels
                    .get(target)
                    .unwrap_or_else(|| panic!("label {target}")),
            )
        }
        "mov.u32" | "mov.b32" | "mov.pred" => Op::Mov,
        "mul.lo.s32" => Op::MulLoS32,
        "mad.lo.s32" => Op::MadLoS32,
        "add.s32" => Op::AddS32,
        "sub.s32" => Op::SubS32,
        "rem.u32" => Op::RemU32,
        "div.u32" => Op::DivU32,
        "rem.s32" => Op::RemS32,
        "div.s32" => Op::DivS32,
        "mul.wide.s32" => Op::MulWideS32,
        "mul.wide.u32" => Op::MulWideU32,
        "add.s64" => Op::AddS64,
        "cvt.s64.s32" => Op::CvtS64S32,
        "mul.lo.s64" => Op::MulLoS64,
        "ld.param.u64" => Op::LdParam,
        "cvta.to.global.u64" => Op::Cvta,
        "ld.global.b32" | "ld.global.nc.b32" | "ld.global.f32" | "ld.global.nc.f32" => Op::LdGlobal,
        "st.global.b32" | "st.global.f32" => Op::StGlobal,
        "ld.global.nc.v4.b32" => Op::LdGlobalV4,
        "st.global.v4.b32" => Op::StGlobalV4,
        "ld.shared.f32" | "ld.shared.b32" => Op::LdShared,
        "st.shared.f32" | "st.shared.b32" => Op::StShared,
        "shfl.sync.bfly.b32" => Op::Shfl,
        "and.b32" | "and.pred" => Op::And,
        "or.b32" | "or.pred" => Op::Or,
        "xor.b32" | "xor.pred" => Op::Xor,
        "not.pred" => Op::Not,
        "selp.f32" | "selp.b32" => Op::Selp,
        "add.rn.f32" => Op::FAdd,
        "sub.rn.f32" => Op::FSub,
        "mul.rn.f32" => Op::FMul,
        "div.rn.f32" => Op::FDiv,
        "fma.rn.f32" => Op::Fma,
        "sqrt.rn.f32" => Op::Sqrt,
        "max.NaN.f32" => Op::MaxNaN,
        "min.NaN.f32" => Op::MinNaN,
        "max.s32" => Op::MaxS32,
        "min.s32" => Op::MinS32,
        "abs.s32" => Op::AbsS32,
        "neg.s32" => Op::NegS32,
        "shr.s32" => Op::ShrS32,
        "shr.u32" => Op::ShrU32,
        "shl.b32" => Op::Shl,
        "cvt.rn.f32.s32" => Op::CvtF32S32,
        "cvt.rzi.s32.f32" => Op::CvtS32F32,
        "bar.sync" => Op::Bar,
        "ret" => Op::Ret,
        _ => panic!("instruction {mnemonic:?} is outside the simulated subset: {line:?}"),
    }
}

/// Global memory: one vector of words per program buffer, and the race detector's
/// record of the current launch.
pub struct Memory {
    pub buffers: Vec<Vec<u32>>,
    writer: HashMap<u64, usize>,
    reader: HashMap<u64, usize>,
}

/// A reader that is several threads.
const MANY: usize = usize::MAX;

impl Memory {
    pub fn new(buffers: Vec<Vec<u32>>) -> Memory {
        Memory {
            buffers,
            writer: HashMap::new(),
            reader: HashMap::new(),
        }
    }

    fn locate(&self, address: u64, line: &str) -> (usize, usize) {
        let buffer = (address >> BUFFER_SHIFT) as usize;
        let offset = address & ((1 << BUFFER_SHIFT) - 1);
        assert!(
            buffer >= 1 && buffer <= self.buffers.len() && offset.is_multiple_of(4),
            "{line}: address {address:#x} is in no buffer"
        );
        let word = (offset / 4) as usize;
        let len = self.buffers[buffer - 1].len();
        assert!(
            word < len,
            "{line}: word {word} of buffer b{} (of {len} words)",
            buffer - 1
        );
        (buffer - 1, word)
    }

    fn load(&mut self, address: u64, thread: usize, line: &str) -> u32 {
        let (buffer, word) = self.locate(address, line);
        if let Some(&writer) = self.writer.get(&address) {
            assert!(
                writer == thread,
                "{line}: thread {thread} reads b{buffer}[{word}], written by thread {writer} in the same launch"
            );
        }
        let reader = self.reader.entry(address).or_insert(thread);
        if *reader != thread {
            *reader = MANY;
        }
        self.buffers[buffer][word]
    }

    fn store(&mut self, address: u64, value: u32, thread: usize, line: &str) {
        let (buffer, word) = self.locate(address, line);
        let writer = *self.writer.entry(address).or_insert(thread);
        assert!(
            writer == thread,
            "{line}: threads {writer} and {thread} both write b{buffer}[{word}] in one launch"
        );
        if let Some(&reader) = self.reader.get(&address) {
            assert!(
                reader == thread,
                "{line}: thread {thread} writes b{buffer}[{word}], which another thread reads in the same launch"
            );
        }
        self.buffers[buffer][word] = value;
    }
}

struct Thread {
    regs: Vec<u64>,
    pc: usize,
    done: bool,
    waiting: bool,
    /// Stopped at a shuffle, which runs when every lane of the warp is there.
    shuffling: bool,
    tid: u32,
}

/// Runs `entry` on a grid of `grid` blocks of `block` threads, its parameters the
/// addresses `params`.
pub fn launch(entry: &Entry, grid: [u32; 3], block: u32, params: &[u64], memory: &mut Memory) {
    assert_eq!(params.len(), entry.params, "parameters");
    memory.writer.clear();
    memory.reader.clear();
    for z in 0..grid[2] {
        for y in 0..grid[1] {
            for x in 0..grid[0] {
                let block_id = [x, y, z];
                let mut shared = vec![0u32; entry.shared_words];
                let mut threads: Vec<Thread> = (0..block)
                    .map(|tid| Thread {
                        regs: vec![0; entry.registers],
                        pc: 0,
                        done: false,
                        waiting: false,
                        shuffling: false,
                        tid,
                    })
                    .collect();
                loop {
                    for thread in threads
                        .iter_mut()
                        .filter(|t| !t.done && !t.waiting && !t.shuffling)
                    {
                        // A global thread number, for the race detector.
                        let global = ((z * grid[1] + y) * grid[0] + x) as usize * block as usize
                            + thread.tid as usize;
                        let ctx = Context {
                            block_id,
                            grid,
                            block,
                            params,
                            global,
                        };
                        run(entry, thread, &ctx, &mut shared, memory);
                    }
                    if threads.iter().all(|t| t.done) {
                        break;
                    }
                    if threads.iter().any(|t| t.shuffling) {
                        for warp in threads.chunks_mut(32) {
                            shuffle(entry, warp);
                        }
                        continue;
                    }
                    assert!(
                        threads.iter().all(|t| t.done || t.waiting),
                        "a thread stopped without a barrier or ret"
                    );
                    assert!(
                        threads.iter().all(|t| !t.done),
                        "some threads exited while others wait at a barrier"
                    );
                    for thread in &mut threads {
                        thread.waiting = false;
                    }
                }
            }
        }
    }
}

/// Runs the shuffle every lane of `warp` stopped at (a warp none of whose lanes
/// did is left alone).
fn shuffle(entry: &Entry, warp: &mut [Thread]) {
    if !warp.iter().any(|t| t.shuffling) {
        return;
    }
    assert!(
        warp.len() == 32 && warp.iter().all(|t| t.shuffling && t.pc == warp[0].pc),
        "a shuffle that not all 32 lanes of the warp reach together"
    );
    let ins = &entry.code[warp[0].pc];
    let (
        Some(dst),
        [Operand::Reg(source), Operand::Imm(distance), Operand::Imm(31), Operand::Imm(mask)],
    ) = (ins.dst, ins.args.as_slice())
    else {
        panic!("unexpected shuffle {}", ins.line);
    };
    assert_eq!(
        *mask as u32,
        u32::MAX,
        "{}: a shuffle of all lanes",
        ins.line
    );
    let values: Vec<u64> = warp.iter().map(|t| t.regs[*source]).collect();
    for (lane, thread) in warp.iter_mut().enumerate() {
        thread.regs[dst] = values[lane ^ (*distance as usize)];
        thread.pc += 1;
        thread.shuffling = false;
    }
}

struct Context<'a> {
    block_id: [u32; 3],
    grid: [u32; 3],
    block: u32,
    params: &'a [u64],
    global: usize,
}

fn run(entry: &Entry, t: &mut Thread, ctx: &Context<'_>, shared: &mut [u32], memory: &mut Memory) {
    let mut steps = 0u64;
    loop {
        steps += 1;
        assert!(steps < 50_000_000, "a thread ran 50 million instructions");
        let ins = &entry.code[t.pc];
        t.pc += 1;
        if let Some((predicate, negate)) = ins.guard {
            if (t.regs[predicate] != 0) == negate {
                continue;
            }
        }
        let value = |operand: &Operand, regs: &[u64]| -> u64 {
            match operand {
                Operand::Reg(r) => regs[*r],
                Operand::Imm(v) => *v,
                Operand::Shared(offset) => u64::from(*offset),
                Operand::Param(position) => ctx.params[*position],
                Operand::Special(special) => u64::from(match special {
                    Special::TidX => t.tid,
                    Special::NtidX => ctx.block,
                    Special::CtaidX => ctx.block_id[0],
                    Special::CtaidY => ctx.block_id[1],
                    Special::CtaidZ => ctx.block_id[2],
                    Special::NctaidX => ctx.grid[0],
                }),
            }
        };
        let a = |i: usize| value(&ins.args[i], &t.regs);
        let a32 = |i: usize| a(i) as u32;
        let s = |i: usize| a(i) as u32 as i32;
        let f = |i: usize| f32::from_bits(a(i) as u32);
        let address = |regs: &[u64]| -> u64 {
            let mem = ins.mem.as_ref().expect("a memory operand");
            value(&mem.base, regs).wrapping_add(mem.offset as u64)
        };
        let word = |v: u32| u64::from(v);
        let float = |v: f32| u64::from(v.to_bits());
        let result: u64 = match &ins.op {
            Op::Mov => {
                let v = a(0);
                // A 32-bit move keeps 32 bits.
                v & 0xffff_ffff
            }
            Op::MulLoS32 => word(s(0).wrapping_mul(s(1)) as u32),
            Op::MadLoS32 => word(s(0).wrapping_mul(s(1)).wrapping_add(s(2)) as u32),
            Op::AddS32 => word(s(0).wrapping_add(s(1)) as u32),
            Op::SubS32 => word(s(0).wrapping_sub(s(1)) as u32),
            Op::RemU32 => word(a32(0) % a32(1)),
            Op::DivU32 => word(a32(0) / a32(1)),
            // Truncating, as PTX's (a zero divisor fails the test).
            Op::RemS32 => word(s(0).wrapping_rem(s(1)) as u32),
            Op::DivS32 => word(s(0).wrapping_div(s(1)) as u32),
            Op::MulWideS32 => (i64::from(s(0)) * i64::from(s(1))) as u64,
            Op::MulWideU32 => u64::from(a32(0)) * u64::from(a32(1)),
            Op::AddS64 => a(0).wrapping_add(a(1)),
            Op::CvtS64S32 => i64::from(s(0)) as u64,
            Op::MulLoS64 => a(0).wrapping_mul(a(1)),
            Op::LdParam => {
                let mem = ins.mem.as_ref().expect("a parameter");
                value(&mem.base, &t.regs)
            }
            Op::Cvta => a(0),
            Op::LdGlobal => word(memory.load(address(&t.regs), ctx.global, &ins.line)),
            Op::StGlobal => {
                let at = address(&t.regs);
                memory.store(at, a32(0), ctx.global, &ins.line);
                continue;
            }
            Op::LdGlobalV4 | Op::StGlobalV4 => {
                let at = address(&t.regs);
                assert!(
                    at.is_multiple_of(16),
                    "{}: a vector access at {at:#x}, not 16-byte aligned",
                    ins.line
                );
                let regs: Vec<usize> = ins
                    .args
                    .iter()
                    .map(|arg| match arg {
                        Operand::Reg(r) => *r,
                        _ => panic!("{}: a vector of registers", ins.line),
                    })
                    .collect();
                for (lane, &reg) in regs.iter().enumerate() {
                    let word_at = at + 4 * lane as u64;
                    if matches!(ins.op, Op::LdGlobalV4) {
                        t.regs[reg] = word(memory.load(word_at, ctx.global, &ins.line));
                    } else {
                        let value = t.regs[reg] as u32;
                        memory.store(word_at, value, ctx.global, &ins.line);
                    }
                }
                continue;
            }
            Op::LdShared | Op::StShared => {
                let at = address(&t.regs) as usize;
                assert!(
                    at.is_multiple_of(4) && at / 4 < shared.len(),
                    "{}: shared {at}",
                    ins.line
                );
                if matches!(ins.op, Op::StShared) {
                    shared[at / 4] = a32(0);
                    continue;
                }
                word(shared[at / 4])
            }
            Op::And => a(0) & a(1),
            Op::Or => a(0) | a(1),
            Op::Xor => a(0) ^ a(1),
            Op::Not => u64::from(a(0) == 0),
            Op::Selp => {
                if a(2) != 0 {
                    a(0)
                } else {
                    a(1)
                }
            }
            Op::Setp(cmp, kind) => {
                let ordering = match kind {
                    Kind::S32 => Some(s(0).cmp(&s(1))),
                    Kind::U32 => Some(a32(0).cmp(&a32(1))),
                    Kind::F32 => f(0).partial_cmp(&f(1)),
                };
                use std::cmp::Ordering::*;
                u64::from(match (cmp, ordering) {
                    (Cmp::Neu, None) => true,
                    (_, None) => false,
                    (Cmp::Eq, Some(o)) => o == Equal,
                    (Cmp::Ne | Cmp::Neu, Some(o)) => o != Equal,
                    (Cmp::Lt, Some(o)) => o == Less,
                    (Cmp::Le, Some(o)) => o != Greater,
                    (Cmp::Gt, Some(o)) => o == Greater,
                    (Cmp::Ge, Some(o)) => o != Less,
                })
            }
            Op::FAdd => float(f(0) + f(1)),
            Op::FSub => float(f(0) - f(1)),
            Op::FMul => float(f(0) * f(1)),
            Op::FDiv => float(f(0) / f(1)),
            Op::Fma => float(f(0).mul_add(f(1), f(2))),
            Op::Sqrt => float(f(0).sqrt()),
            Op::MaxNaN | Op::MinNaN => {
                let (x, y) = (f(0), f(1));
                if x.is_nan() || y.is_nan() {
                    float(f32::NAN)
                } else if x == y {
                    // Either zero may win: the second, to catch code that assumes.
                    float(y)
                } else if matches!(ins.op, Op::MaxNaN) == (x > y) {
                    float(x)
                } else {
                    float(y)
                }
            }
            Op::MaxS32 => word(s(0).max(s(1)) as u32),
            Op::MinS32 => word(s(0).min(s(1)) as u32),
            Op::AbsS32 => word(s(0).wrapping_abs() as u32),
            Op::NegS32 => word(s(0).wrapping_neg() as u32),
            Op::ShrS32 => word((s(0) >> (a32(1) & 31)) as u32),
            Op::ShrU32 => word(a32(0) >> (a32(1) & 31)),
            Op::Shl => word(a32(0) << (a32(1) & 31)),
            Op::CvtF32S32 => float(s(0) as f32),
            Op::CvtS32F32 => word(f(0) as i32 as u32),
            Op::Bra(target) => {
                t.pc = *target;
                continue;
            }
            Op::Bar => {
                t.waiting = true;
                return;
            }
            Op::Shfl => {
                t.pc -= 1;
                t.shuffling = true;
                return;
            }
            Op::Ret => {
                t.done = true;
                return;
            }
        };
        let dst = ins.dst.expect("a destination");
        t.regs[dst] = result;
    }
}
