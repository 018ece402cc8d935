//! kiln-passes: graph-to-graph passes (one per file) and the pipeline that runs them
//! in order, plus the lowering from graphs to the loop-nest kernel IR.

pub mod autodiff;
pub mod dce;
pub mod egraph;
pub mod expand;
pub mod jvp;
pub mod optimizer;
pub mod pipeline;
pub mod schedule;

pub mod lower;
