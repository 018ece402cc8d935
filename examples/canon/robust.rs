//! Robustness and compression: adversarial examples and adversarial training, and
//! knowledge distillation.

use crate::{Family, RunResult};

pub(crate) fn adversarial(_family: &Family) -> RunResult {
    Err("not yet".into())
}

pub(crate) fn distillation(_family: &Family) -> RunResult {
    Err("not yet".into())
}
