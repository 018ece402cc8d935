//! How kiln's benchmarks time a call, shared through `#[path]` by
//! `benches/train_step.rs` and `examples/workloads.rs` so that both report the same
//! kind of median.

use std::time::{Duration, Instant};

/// Timed repetitions per figure.
pub const REPS: usize = 9;

pub fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// Median time of one call of `f` over `REPS` timed repetitions of at least 0.1 s
/// each, after warm-up.
pub fn measure(mut f: impl FnMut()) -> Duration {
    for _ in 0..3 {
        f();
    }
    let start = Instant::now();
    f();
    let one = start.elapsed().max(Duration::from_micros(1));
    let calls = (0.1 / one.as_secs_f64()).ceil().max(1.0) as u32;
    let times = (0..REPS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..calls {
                f();
            }
            start.elapsed() / calls
        })
        .collect();
    median(times)
}
