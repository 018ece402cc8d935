//! Ahead-of-time compilation of a model: its forward pass (`<library>_infer`) and,
//! when asked, its train step (`<library>_train`) as entry points of one relocatable
//! object for the host, and the C header that documents them. The object needs
//! nothing but libc and runs on the caller's thread (see `kiln_backend::cpu::aot`).
//!
//! ```text
//! kiln compile model.kiln --train -o model.o --header model.h
//! cc main.c model.o -o main
//! ```
//!
//! Parameters are passed by the caller in the argument block (a train step updates
//! them in place), or embedded in the object (`AotOptions::embed`: read-only data for
//! inference alone, writable when the object trains). Does no file I/O.

use crate::compile::{initial_state, schedule_graph, Error};
use kiln_backend::cpu::aot::{ArgKind, EntryLayout, ObjectCompiler, ABI_VERSION};
use kiln_backend::OptLevel;
use kiln_frontend::Model;
use kiln_ir::{DType, TensorType};
use kiln_passes::optimizer::Optimizer;
use kiln_passes::pipeline::{self, PipelineOptions};
use std::collections::BTreeSet;
use std::fmt::Write;

/// What to put in the object.
#[derive(Clone, Debug)]
pub struct AotOptions {
    /// The prefix of every exported symbol and of the header's names (a C
    /// identifier): `<library>_infer`, `<library>_train`, `<library>_abi_version`.
    pub library: String,
    /// Also a train step: the loss output to differentiate and the optimizer.
    pub train: Option<(String, Optimizer)>,
    /// Embed the model's parameter values (and the optimizer's initial state) in the
    /// object instead of taking them from the caller.
    pub embed: bool,
    /// Where the model came from, for the header's first comment.
    pub source: String,
    /// The model of the forward pass when it is not the trained one: the model file
    /// built for evaluation (`ElaborateOptions::evaluation`: dropout off, batch norm
    /// by its running statistics, no updates of its own). Its parameters must be the
    /// trained model's; their values are taken from the trained model.
    pub inference: Option<Model>,
    /// Schedule for this target (its `threads` are ignored: one) instead of the
    /// host's, e.g. `Target::baseline()` for a schedule (microkernel, workspace sizes)
    /// that does not depend on the machine. Code generation is for the host's CPU.
    pub target: Option<kiln_ir::Target>,
}

/// The object and its header.
#[derive(Clone, Debug)]
pub struct AotOutput {
    pub object: Vec<u8>,
    pub header: String,
    /// The entry points, train step first when there is one.
    pub entries: Vec<EntryLayout>,
}

/// Compiles `model` into an object with its header.
pub fn compile_object(model: &Model, options: &AotOptions) -> Result<AotOutput, Error> {
    let mut object = ObjectCompiler::new(&options.library, OptLevel::Speed)?;
    // One thread: an object runs on its caller's thread.
    let single = PipelineOptions {
        threads: Some(1),
        target: options.target.clone().map(|target| target.with_threads(1)),
        ..PipelineOptions::default()
    };
    if options.embed {
        for (name, values) in model.params() {
            object.embed(name, f32_bytes(values));
        }
    }
    let mut entries = Vec::new();
    let mut state_init = Vec::new();
    if let Some((loss, optimizer)) = &options.train {
        let train = PipelineOptions {
            loss: Some(loss.clone()),
            optimizer: Some(*optimizer),
            ..single.clone()
        };
        let state = optimizer.state(model.graph());
        for param in &state {
            let values = initial_state(param, model)?;
            if options.embed {
                object.embed(&param.name, f32_bytes(&values));
            }
            state_init.push((param.name.clone(), describe_init(param)));
        }
        let scheduled = schedule_graph(model.graph(), pipeline::TRAIN_STEP, &train)?;
        // The train step first: it updates embedded parameters, which must then be
        // writable data for the forward pass too.
        entries.push(object.add_entry("train", &scheduled.program)?);
    }
    let forward = options.inference.as_ref().unwrap_or(model);
    let mismatch = forward.params().keys().ne(model.params().keys())
        || forward
            .params()
            .iter()
            .any(|(name, values)| model.param(name).map(<[f32]>::len) != Some(values.len()));
    if mismatch {
        return Err(Error::InferenceParams);
    }
    let scheduled = schedule_graph(forward.graph(), pipeline::INFERENCE, &single)?;
    entries.push(object.add_entry("infer", &scheduled.program)?);
    let header = header(options, object.target(), &entries, &state_init);
    Ok(AotOutput {
        object: object.finish()?,
        header,
        entries,
    })
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn describe_init(state: &kiln_passes::optimizer::StateParam) -> String {
    use kiln_passes::optimizer::StateInit;
    match &state.init {
        StateInit::Zeros => "zeros".to_string(),
        StateInit::Fill(value) => format!("every element {value}"),
        StateInit::ValueOf(param) => format!("the initial value of {param}"),
    }
}

/// The C type of one element.
fn c_type(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "float",
        DType::I32 => "int32_t",
        DType::Bool => "uint32_t",
    }
}

/// C's keywords (C99 and C++), which a field may not be named.
const KEYWORDS: &[&str] = &[
    "auto",
    "bool",
    "break",
    "case",
    "char",
    "class",
    "const",
    "continue",
    "default",
    "delete",
    "do",
    "double",
    "else",
    "enum",
    "extern",
    "float",
    "for",
    "goto",
    "if",
    "inline",
    "int",
    "long",
    "namespace",
    "new",
    "operator",
    "private",
    "protected",
    "public",
    "register",
    "restrict",
    "return",
    "short",
    "signed",
    "sizeof",
    "static",
    "struct",
    "switch",
    "template",
    "this",
    "typedef",
    "union",
    "unsigned",
    "virtual",
    "void",
    "volatile",
    "while",
];

/// Field names for `names`: every character that a C identifier cannot hold becomes
/// `_`, a leading digit or a keyword gets a `_` prefix, and a name that would
/// repeat an earlier one gets `_2`, `_3`, ...
fn field_names<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut taken = BTreeSet::new();
    names
        .map(|name| {
            let mut field: String = name
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            if field.is_empty()
                || field.starts_with(|c: char| c.is_ascii_digit())
                || KEYWORDS.contains(&field.as_str())
            {
                field.insert(0, '_');
            }
            let mut unique = field.clone();
            let mut count = 2;
            while !taken.insert(unique.clone()) {
                unique = format!("{field}_{count}");
                count += 1;
            }
            unique
        })
        .collect()
}

fn shape_text(ty: &TensorType) -> String {
    let dims: Vec<String> = ty.shape.iter().map(usize::to_string).collect();
    format!("{}[{}]", ty.dtype, dims.join(", "))
}

/// The header of the entries.
fn header(
    options: &AotOptions,
    target: &str,
    entries: &[EntryLayout],
    state_init: &[(String, String)],
) -> String {
    let library = &options.library;
    let upper = library.to_ascii_uppercase();
    let mut h = String::new();
    let _ = writeln!(
        h,
        "/* {library}.h: the C interface of {library}.o, generated by kiln {} from\n * {}; do not edit.",
        env!("CARGO_PKG_VERSION"),
        options.source
    );
    let _ = writeln!(
        h,
        " *\n * Compiled for {target} (it runs on CPUs with these features).\n *\n * Each entry point takes a block of pointers (a struct below, one pointer per\n \
         * argument in its order) and a workspace of <ENTRY>_WORKSPACE_BYTES bytes aligned to\n \
         * 64 (aligned_alloc(64, ...)), which it uses as scratch and may be reused between\n \
         * calls. Arrays are dense, row-major, of the element counts given (<FIELD>_LEN).\n \
         * Entry points return 0, or 1 when the workspace is NULL or misaligned (then\n \
         * nothing is read or written). They run on the calling thread, need only libc,\n \
         * and may run concurrently only with different workspaces and outputs (and, for\n \
         * a train step, parameters).\n */"
    );
    let _ = writeln!(
        h,
        "#ifndef KILN_{upper}_H\n#define KILN_{upper}_H\n\n#include <stdint.h>\n\n#ifdef __cplusplus\nextern \"C\" {{\n#endif\n"
    );
    let _ = writeln!(
        h,
        "/* The interface version of this header; {library}_abi_version() returns the\n * object's: check that they agree before calling anything else. */\n#define {upper}_ABI_VERSION {ABI_VERSION}u\nuint64_t {library}_abi_version(void);\n"
    );
    for entry in entries {
        let short = entry
            .symbol
            .strip_prefix(&format!("{library}_"))
            .unwrap_or(&entry.symbol);
        let entry_upper = entry.symbol.to_ascii_uppercase();
        let what = if short == "train" {
            "one training step (forward, gradients, the optimizer's update in place)"
        } else {
            "the forward pass"
        };
        let _ = writeln!(h, "/* ---- {}: {what}. ---- */\n", entry.symbol);
        if !entry.embedded.is_empty() {
            let _ = writeln!(
                h,
                "/* The object holds the {} parameter values itself{}. */",
                entry.embedded.len(),
                if short == "train" {
                    " and updates them"
                } else {
                    ""
                }
            );
        }
        let _ = writeln!(
            h,
            "#define {entry_upper}_WORKSPACE_BYTES {}u\nuint64_t {}_workspace_bytes(void);\n",
            entry.workspace_bytes, entry.symbol
        );
        let fields = field_names(entry.args.iter().map(|arg| arg.name.as_str()));
        for (arg, field) in entry.args.iter().zip(&fields) {
            let _ = writeln!(
                h,
                "#define {entry_upper}_{}_LEN {}u",
                field.to_ascii_uppercase(),
                arg.ty.num_elements()
            );
        }
        let _ = writeln!(h, "\ntypedef struct {}_args {{", entry.symbol);
        if entry.args.is_empty() {
            // C has no empty structs; the entry reads nothing from its block.
            let _ = writeln!(h, "    void *unused;");
        }
        for (arg, field) in entry.args.iter().zip(&fields) {
            let constness = if arg.written { "" } else { "const " };
            let role = match arg.kind {
                ArgKind::Input => "input",
                ArgKind::Output => "output",
                ArgKind::Param => "parameter",
            };
            let note = match state_init.iter().find(|(name, _)| *name == arg.name) {
                Some((_, init)) => format!(", optimizer state starting as {init}"),
                None if arg.kind == ArgKind::Param && arg.written => ", updated".to_string(),
                None => String::new(),
            };
            let _ = writeln!(
                h,
                "    {constness}{} *{field}; /* {role} \"{}\": {}{note} */",
                c_type(arg.ty.dtype),
                arg.name,
                shape_text(&arg.ty)
            );
        }
        let _ = writeln!(
            h,
            "}} {0}_args;\n\nint32_t {0}(const {0}_args *args, void *workspace);\n",
            entry.symbol
        );
    }
    let _ = writeln!(
        h,
        "#ifdef __cplusplus\n}}\n#endif\n\n#endif /* KILN_{upper}_H */"
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_are_c_identifiers_and_distinct() {
        let names = [
            "fc1.weight",
            "fc1_weight",
            "int",
            "3d",
            "optimizer.step",
            "",
        ];
        assert_eq!(
            field_names(names.into_iter()),
            [
                "fc1_weight",
                "fc1_weight_2",
                "_int",
                "_3d",
                "optimizer_step",
                "_"
            ]
        );
    }
}
