//! A thread pool that lives as long as an executable, with a C entry point
//! ([`kiln_parallel_for`]) that generated code calls to split a loop across it.
//!
//! Design, and why:
//!
//! - **Threads are spawned once, at construction.** A pool of `threads` workers
//!   spawns `threads - 1` OS threads; the thread that calls [`ThreadPool::run`] is the
//!   last worker. A train step launches about twenty parallel kernels of 0.1–1 ms
//!   each, so spawning per run (tens of microseconds per thread) would cost more than
//!   the parallelism gains; a run only publishes a job and wakes workers.
//! - **The caller participates.** It claims tasks like any worker, so a pool of `n`
//!   threads keeps `n` cores busy and a run never waits on a wake-up before any work
//!   starts.
//! - **Tasks are claimed dynamically** from one atomic counter, so uneven tasks
//!   balance: a thread that finishes early takes the next one.
//! - **Spin, then park.** An idle worker polls for a new job for about
//!   [`SPIN_TIME`] (`std::hint::spin_loop`, with a `yield_now` every few
//!   microseconds so a spinner never keeps the thread it waits for off a busy
//!   machine's cores) before it sleeps on a condition variable, and the caller waits
//!   for the last task the same way. Back-to-back kernels therefore find their
//!   workers awake (a wake-up costs a cache miss, well under a microsecond; a parked
//!   worker takes a futex wake, several microseconds), while an idle pool stops using
//!   CPU once the spin ends. Whoever publishes or finishes work only touches the
//!   mutex when someone sleeps.
//! - **Runs are serialised, nested runs are inline.** Concurrent `run` calls from
//!   unrelated threads take turns on a mutex. A `run` called from inside a task of
//!   *any* pool (a task that starts a parallel loop) runs all its tasks on the calling
//!   thread instead: that thread already keeps a worker busy, and waiting on the mutex
//!   from inside a run would deadlock.
//! - **Panics are carried to the caller.** Every task runs under `catch_unwind`; all
//!   tasks still run, and once the last one finished the caller resumes the first
//!   panic. The pool stays usable. (Generated code cannot unwind: its body is an
//!   `extern "C"` function, so a panic there aborts.)
//!
//! Soundness of the job hand-off: the job (the closure and the task count) lives on
//! the caller's stack. A worker reads it only after it claimed a task of that job,
//! and the caller returns only after every claimed task of its job reported done, so
//! no worker can read a job after its run returned. A worker that claims nothing
//! never reads the job at all.

use std::any::Any;
use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use thiserror::Error;

/// How long an idle worker (or a caller waiting for the last task) polls before it
/// parks: long enough to bridge the gap between two kernels of one step, short enough
/// that an idle pool stops using CPU quickly.
pub const SPIN_TIME: Duration = Duration::from_micros(100);

/// `spin_loop` hints between two reads of the clock while spinning.
const SPINS_PER_CLOCK_READ: u32 = 64;

/// The symbol of [`kiln_parallel_for`].
pub const PARALLEL_FOR: &str = "kiln_parallel_for";

/// The loop body generated code passes to [`kiln_parallel_for`]: runs iterations
/// `begin..end` with the captured state `ctx`.
pub type ParallelBody = extern "C" fn(ctx: *const u8, begin: i64, end: i64);

/// Why a pool could not be made.
#[derive(Debug, Error)]
pub enum PoolError {
    /// A pool was asked for zero threads (the caller's mistake: one thread means
    /// "run everything on the calling thread").
    #[error("a thread pool needs at least one thread, got 0")]
    NoThreads,
    /// The operating system refused to start a worker thread (the environment's
    /// limit, not a kiln bug).
    #[error("could not start worker thread {index} of a pool of {threads}: {source}")]
    Spawn {
        index: usize,
        threads: usize,
        #[source]
        source: std::io::Error,
    },
}

/// The number of threads this machine can run in parallel (1 when unknown).
pub fn available_threads() -> usize {
    thread::available_parallelism().map_or(1, |threads| threads.get())
}

/// A fixed set of worker threads that run [`ThreadPool::run`]'s tasks together with
/// the calling thread. Dropping it stops and joins the workers.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    threads: usize,
}

impl ThreadPool {
    /// Makes a pool of `threads` workers in all, the calling thread included: it
    /// spawns `threads - 1` OS threads now and none later.
    pub fn new(threads: usize) -> Result<ThreadPool, PoolError> {
        if threads == 0 {
            return Err(PoolError::NoThreads);
        }
        let mut pool = ThreadPool {
            shared: Arc::new(Shared::new()),
            workers: Vec::with_capacity(threads - 1),
            threads,
        };
        for index in 1..threads {
            let shared = Arc::clone(&pool.shared);
            let spawned = thread::Builder::new()
                .name(format!("kiln-pool-{index}"))
                .spawn(move || shared.worker_main());
            match spawned {
                Ok(handle) => pool.workers.push(handle),
                // Dropping `pool` stops and joins the workers already started.
                Err(source) => {
                    return Err(PoolError::Spawn {
                        index,
                        threads,
                        source,
                    })
                }
            }
        }
        Ok(pool)
    }

    /// The number of threads that run tasks, the calling thread included.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(0)`, ..., `f(tasks - 1)`, each exactly once, spread over the workers
    /// and the calling thread, and returns when all have finished.
    ///
    /// Concurrent calls from several threads take turns. A call from inside a task
    /// (of this or any pool) runs its tasks on the calling thread, in order. If a task
    /// panics, the other tasks still run and the first panic is resumed on the caller
    /// afterwards; the pool remains usable.
    pub fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if tasks == 0 {
            return;
        }
        if self.workers.is_empty() || tasks == 1 || TaskMark::inside() {
            return run_inline(tasks, f);
        }
        let turn = lock(&self.shared.run_lock);
        let job = Job { f, tasks };
        self.shared.publish(&job);
        self.shared.work();
        self.shared.wait_until_done();
        // Every task of `job` finished, so no worker reads it any more; clearing the
        // pointer only keeps a dangling address out of the shared state.
        self.shared
            .job
            .store(std::ptr::null_mut(), Ordering::Relaxed);
        let panic = lock(&self.shared.panic).take();
        drop(turn);
        if let Some(payload) = panic {
            panic::resume_unwind(payload);
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        {
            // Notifying under the lock reaches a worker that saw no shutdown and is
            // about to wait: it holds the lock until it waits.
            let _sleep = lock(&self.shared.sleep_lock);
            self.shared.work_ready.notify_all();
        }
        for worker in self.workers.drain(..) {
            // A worker cannot panic (tasks run under `catch_unwind`), and there is
            // nothing to do about it while dropping if it did.
            let _ = worker.join();
        }
    }
}

/// One run's closure and task count, on the caller's stack.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    tasks: usize,
}

/// The state the caller and the workers share.
struct Shared {
    /// Tasks of the current job not yet claimed; 0 between runs. Workers spin on it.
    remaining: CacheAligned<AtomicUsize>,
    /// Claimed or unclaimed tasks of the current job that have not finished.
    unfinished: CacheAligned<AtomicUsize>,
    /// The current job, a `*const Job`; read only by a thread that claimed a task.
    job: AtomicPtr<()>,
    /// Serialises runs from different threads.
    run_lock: Mutex<()>,
    /// The first panic of the current run.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    /// Guards parking: workers waiting on `work_ready`, the caller on `done`.
    sleep_lock: Mutex<()>,
    work_ready: Condvar,
    done: Condvar,
    /// Workers parked (or about to park) on `work_ready`.
    sleepers: AtomicUsize,
    /// Whether the caller parked (or is about to park) on `done`.
    caller_waiting: AtomicBool,
    shutdown: AtomicBool,
}

/// Keeps the counters every thread writes on cache lines of their own.
#[repr(align(128))]
struct CacheAligned<T>(T);

impl<T> std::ops::Deref for CacheAligned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// What an idle worker was woken for.
enum Wake {
    Work,
    Shutdown,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            remaining: CacheAligned(AtomicUsize::new(0)),
            unfinished: CacheAligned(AtomicUsize::new(0)),
            job: AtomicPtr::new(std::ptr::null_mut()),
            run_lock: Mutex::new(()),
            panic: Mutex::new(None),
            sleep_lock: Mutex::new(()),
            work_ready: Condvar::new(),
            done: Condvar::new(),
            sleepers: AtomicUsize::new(0),
            caller_waiting: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
        }
    }

    fn worker_main(&self) {
        while let Wake::Work = self.wait_for_work() {
            self.work();
        }
    }

    /// Makes `job` the current job and wakes parked workers. The caller holds
    /// `run_lock` and keeps `job` alive until `wait_until_done` returned.
    fn publish(&self, job: &Job<'_>) {
        self.job
            .store(job as *const Job<'_> as *mut (), Ordering::Relaxed);
        self.unfinished.store(job.tasks, Ordering::Relaxed);
        // The release half makes the job and `unfinished` visible to whoever claims a
        // task; SeqCst orders it before the read of `sleepers`, against a worker's
        // increment of `sleepers` before its last look at `remaining`.
        self.remaining.store(job.tasks, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let _sleep = lock(&self.sleep_lock);
            self.work_ready.notify_all();
        }
    }

    /// Claims and runs tasks of the current job until none is left.
    fn work(&self) {
        while let Some((job, index)) = self.claim() {
            let result = {
                let _mark = TaskMark::enter();
                panic::catch_unwind(AssertUnwindSafe(|| (job.f)(index)))
            };
            if let Err(payload) = result {
                lock(&self.panic).get_or_insert(payload);
            }
            // SeqCst orders the decrement before the read of `caller_waiting`, against
            // the caller's store of it before its last look at `unfinished`.
            if self.unfinished.fetch_sub(1, Ordering::SeqCst) == 1
                && self.caller_waiting.load(Ordering::SeqCst)
            {
                let _sleep = lock(&self.sleep_lock);
                self.done.notify_all();
            }
        }
    }

    /// Takes one task of the current job: the job and the task's index, or `None`
    /// when every task is claimed.
    fn claim(&self) -> Option<(&Job<'_>, usize)> {
        let mut remaining = self.remaining.load(Ordering::Relaxed);
        loop {
            if remaining == 0 {
                return None;
            }
            match self.remaining.compare_exchange_weak(
                remaining,
                remaining - 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(current) => remaining = current,
            }
        }
        // SAFETY: the claim succeeded while tasks of the current job were unclaimed,
        // so that job is in progress: its caller published it (the acquiring claim
        // synchronises with the publishing store) and cannot return, or publish
        // another job, before the task just claimed reports done.
        let job = unsafe { &*(self.job.load(Ordering::Relaxed) as *const Job<'_>) };
        Some((job, job.tasks - remaining))
    }

    /// Spins, then parks, until there is work or the pool shuts down.
    fn wait_for_work(&self) -> Wake {
        let wake = || {
            if self.shutdown.load(Ordering::SeqCst) {
                Some(Wake::Shutdown)
            } else if self.remaining.load(Ordering::SeqCst) > 0 {
                Some(Wake::Work)
            } else {
                None
            }
        };
        if let Some(wake) = spin(wake) {
            return wake;
        }
        let mut sleep = lock(&self.sleep_lock);
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        let wake = loop {
            if let Some(wake) = wake() {
                break wake;
            }
            sleep = self
                .work_ready
                .wait(sleep)
                .unwrap_or_else(PoisonError::into_inner);
        };
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        wake
    }

    /// Spins, then parks, until every task of the current job finished.
    fn wait_until_done(&self) {
        let finished = || (self.unfinished.load(Ordering::Acquire) == 0).then_some(());
        if spin(finished).is_some() {
            return;
        }
        let mut sleep = lock(&self.sleep_lock);
        self.caller_waiting.store(true, Ordering::SeqCst);
        while self.unfinished.load(Ordering::SeqCst) != 0 {
            sleep = self
                .done
                .wait(sleep)
                .unwrap_or_else(PoisonError::into_inner);
        }
        self.caller_waiting.store(false, Ordering::SeqCst);
    }
}

/// Polls `ready` for about [`SPIN_TIME`]; its answer, or `None` if it never had one.
fn spin<T>(ready: impl Fn() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        for _ in 0..SPINS_PER_CLOCK_READ {
            if let Some(value) = ready() {
                return Some(value);
            }
            std::hint::spin_loop();
        }
        if start.elapsed() >= SPIN_TIME {
            return ready();
        }
        // On a machine with more runnable threads than cores, a spinning thread
        // would keep the thread it waits for (a caller just woken, a worker
        // finishing a task) off the core; yielding lets it run. Without contention
        // the yield returns at once.
        thread::yield_now();
    }
}

/// Runs every task on the calling thread, with the same panic behaviour as a
/// parallel run: all tasks run, then the first panic is resumed.
fn run_inline(tasks: usize, f: &(dyn Fn(usize) + Sync)) {
    let mut first_panic = None;
    for index in 0..tasks {
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| f(index))) {
            first_panic.get_or_insert(payload);
        }
    }
    if let Some(payload) = first_panic {
        panic::resume_unwind(payload);
    }
}

/// The pool's locks guard no data a panic could leave half-written (and nothing
/// panics while holding them), so a poisoned lock is used as is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

thread_local! {
    /// Whether this thread is running a pool task (then `run` stays on this thread).
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
}

/// Marks the current thread as running a task until dropped (also on unwinding).
struct TaskMark {
    was_inside: bool,
}

impl TaskMark {
    fn enter() -> TaskMark {
        TaskMark {
            was_inside: IN_TASK.replace(true),
        }
    }

    fn inside() -> bool {
        IN_TASK.get()
    }
}

impl Drop for TaskMark {
    fn drop(&mut self) {
        IN_TASK.set(self.was_inside);
    }
}

/// `ctx` shared by the tasks of one [`kiln_parallel_for`].
struct Context(*const u8);

// SAFETY: `kiln_parallel_for`'s contract makes `body` safe to call on `ctx` from
// several threads at once; the pool only passes the pointer on.
unsafe impl Sync for Context {}

impl Context {
    /// A method, so closures capture the whole `Context` and not its raw field.
    fn get(&self) -> *const u8 {
        self.0
    }
}

/// Runs `body(ctx, begin, end)` over `0..iterations` split into chunks of at most
/// `grain` iterations (a grain below 1 counts as 1), of nearly equal length, no more
/// chunks than needed, spread over `pool`. With one chunk, a pool of one thread, a
/// null `pool`, or when called from inside a pool task, `body` runs once over the
/// whole range on the calling thread. Nothing runs when `iterations <= 0`. Returns
/// when every chunk has finished.
///
/// # Safety
///
/// - `pool` is null or points to a live [`ThreadPool`] for the whole call.
/// - `body` is safe to call concurrently from several threads on disjoint ranges
///   with this `ctx`.
/// - Whatever `ctx` points to outlives the call (it is not used after the return).
pub unsafe extern "C" fn kiln_parallel_for(
    pool: *const ThreadPool,
    body: ParallelBody,
    ctx: *const u8,
    iterations: i64,
    grain: i64,
) {
    if iterations <= 0 {
        return;
    }
    let grain = grain.max(1);
    let chunks = (iterations - 1) / grain + 1;
    // SAFETY: the caller guarantees `pool` is null or live for the call.
    let pool = unsafe { pool.as_ref() };
    let pool = match pool {
        Some(pool) if chunks > 1 && pool.threads() > 1 && !TaskMark::inside() => pool,
        _ => return body(ctx, 0, iterations),
    };
    // More than `usize::MAX` chunks only on a 32-bit host; fewer, longer chunks are
    // still a correct split.
    let chunks = usize::try_from(chunks).unwrap_or(usize::MAX);
    let context = Context(ctx);
    let total = i128::from(iterations);
    let count = chunks as i128;
    // Chunk `c` is `c * total / count .. (c + 1) * total / count`: consecutive, covering
    // `0..total`, each floor or ceil of `total / count` long, so at most `grain`.
    let bound = |chunk: usize| (chunk as i128 * total / count) as i64;
    pool.run(chunks, &|chunk| {
        body(context.get(), bound(chunk), bound(chunk + 1));
    });
}

/// The pool's symbols and addresses, for a JIT's symbol table.
pub fn symbols() -> [(&'static str, *const u8); 1] {
    [(PARALLEL_FOR, kiln_parallel_for as *const u8)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, AtomicU64};

    const THREAD_COUNTS: [usize; 3] = [1, 2, 3];
    const TASK_COUNTS: [usize; 6] = [0, 1, 2, 3, 7, 1000];

    fn pool(threads: usize) -> ThreadPool {
        ThreadPool::new(threads).expect("the test machine can start a few threads")
    }

    fn counters(n: usize) -> Vec<AtomicUsize> {
        (0..n).map(|_| AtomicUsize::new(0)).collect()
    }

    fn panic_message(payload: &(dyn Any + Send)) -> String {
        payload
            .downcast_ref::<&str>()
            .map(|message| message.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default()
    }

    #[test]
    fn pool_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ThreadPool>();
    }

    #[test]
    fn zero_threads_is_an_error() {
        assert!(matches!(ThreadPool::new(0), Err(PoolError::NoThreads)));
        assert!(available_threads() >= 1);
        assert_eq!(pool(3).threads(), 3);
    }

    #[test]
    fn every_index_runs_exactly_once() {
        for threads in THREAD_COUNTS {
            let pool = pool(threads);
            for tasks in TASK_COUNTS {
                let runs = counters(tasks);
                let sum = AtomicU64::new(0);
                pool.run(tasks, &|index| {
                    runs[index].fetch_add(1, Ordering::Relaxed);
                    sum.fetch_add((index as u64) * (index as u64), Ordering::Relaxed);
                });
                for (index, count) in runs.iter().enumerate() {
                    assert_eq!(
                        count.load(Ordering::Relaxed),
                        1,
                        "index {index} of {tasks} on {threads} threads"
                    );
                }
                let serial: u64 = (0..tasks as u64).map(|index| index * index).sum();
                assert_eq!(sum.load(Ordering::Relaxed), serial);
            }
        }
    }

    #[test]
    fn uneven_tasks_are_shared_between_threads() {
        // Task 0 waits until another task started, so it cannot be that the thread
        // which took task 0 also runs every other task.
        let pool = pool(2);
        let started = AtomicUsize::new(0);
        let runners = Mutex::new(std::collections::HashSet::new());
        pool.run(4, &|index| {
            started.fetch_add(1, Ordering::SeqCst);
            if index == 0 {
                while started.load(Ordering::SeqCst) < 2 {
                    thread::yield_now();
                }
            }
            lock(&runners).insert(thread::current().id());
        });
        assert_eq!(lock(&runners).len(), 2);
    }

    /// What a parallel-for body saw, behind the `ctx` pointer.
    struct Coverage {
        runs: Vec<AtomicUsize>,
        calls: AtomicUsize,
        longest: AtomicI64,
        bad_range: AtomicBool,
    }

    extern "C" fn record(ctx: *const u8, begin: i64, end: i64) {
        // SAFETY: the tests pass a `&Coverage` that outlives the parallel for.
        let coverage = unsafe { &*(ctx as *const Coverage) };
        coverage.calls.fetch_add(1, Ordering::Relaxed);
        coverage.longest.fetch_max(end - begin, Ordering::Relaxed);
        if begin < 0 || end > coverage.runs.len() as i64 || begin >= end {
            coverage.bad_range.store(true, Ordering::Relaxed);
            return;
        }
        for iteration in begin..end {
            coverage.runs[iteration as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Runs `kiln_parallel_for` over `0..iterations` and returns what the body saw.
    fn parallel_for(pool: *const ThreadPool, iterations: i64, grain: i64) -> Coverage {
        let coverage = Coverage {
            runs: counters(iterations.max(0) as usize),
            calls: AtomicUsize::new(0),
            longest: AtomicI64::new(0),
            bad_range: AtomicBool::new(false),
        };
        let ctx = &coverage as *const Coverage as *const u8;
        // SAFETY: `pool` is null or a live pool, `record` only does atomic updates,
        // and `coverage` outlives the call.
        unsafe { kiln_parallel_for(pool, record, ctx, iterations, grain) };
        coverage
    }

    #[test]
    fn parallel_for_covers_every_iteration_once() {
        for threads in THREAD_COUNTS {
            let pool = pool(threads);
            for iterations in [-5, 0, 1, 2, 10, 999] {
                for grain in [-3, 0, 1, 3, 7, 100, 1000, i64::MAX] {
                    let coverage = parallel_for(&pool, iterations, grain);
                    let case = format!("{iterations} iterations, grain {grain}, {threads} threads");
                    assert!(!coverage.bad_range.load(Ordering::Relaxed), "{case}");
                    assert!(
                        coverage
                            .runs
                            .iter()
                            .all(|count| count.load(Ordering::Relaxed) == 1),
                        "{case}"
                    );
                    let grain = grain.max(1);
                    let chunks = if iterations <= 0 {
                        0
                    } else if threads == 1 {
                        1
                    } else {
                        (iterations - 1) / grain + 1
                    };
                    assert_eq!(
                        coverage.calls.load(Ordering::Relaxed) as i64,
                        chunks,
                        "{case}"
                    );
                    if threads > 1 {
                        assert!(coverage.longest.load(Ordering::Relaxed) <= grain, "{case}");
                    }
                }
            }
        }
    }

    #[test]
    fn parallel_for_without_a_pool_runs_inline() {
        let coverage = parallel_for(std::ptr::null(), 100, 7);
        assert_eq!(coverage.calls.load(Ordering::Relaxed), 1);
        assert!(coverage
            .runs
            .iter()
            .all(|count| count.load(Ordering::Relaxed) == 1));
    }

    #[test]
    fn parallel_for_symbol_is_the_function() {
        let [(name, address)] = symbols();
        assert_eq!(name, PARALLEL_FOR);
        assert_eq!(address, kiln_parallel_for as *const u8);
    }

    #[test]
    fn many_consecutive_runs_neither_leak_nor_deadlock() {
        let pool = pool(3);
        let total = AtomicUsize::new(0);
        for run in 0..10_000 {
            pool.run(1 + run % 5, &|index| {
                total.fetch_add(index + 1, Ordering::Relaxed);
            });
        }
        let expected: usize = (0..10_000usize)
            .map(|run| {
                let tasks = 1 + run % 5;
                tasks * (tasks + 1) / 2
            })
            .sum();
        assert_eq!(total.load(Ordering::Relaxed), expected);
        // The workers hold the only other references to the shared state.
        assert_eq!(Arc::strong_count(&pool.shared), 3);
    }

    #[test]
    fn runs_after_the_workers_parked_still_complete() {
        let pool = pool(3);
        for _ in 0..3 {
            thread::sleep(SPIN_TIME * 20);
            let runs = counters(50);
            pool.run(50, &|index| {
                runs[index].fetch_add(1, Ordering::Relaxed);
            });
            assert!(runs.iter().all(|count| count.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn drop_joins_the_workers() {
        for threads in THREAD_COUNTS {
            let pool = pool(threads);
            pool.run(10, &|_| {});
            let shared = Arc::clone(&pool.shared);
            assert_eq!(Arc::strong_count(&shared), threads + 1);
            drop(pool);
            // A worker's reference is dropped when its thread exits.
            assert_eq!(Arc::strong_count(&shared), 1);
        }
    }

    #[test]
    fn panic_on_a_worker_reaches_the_caller_and_the_pool_keeps_working() {
        let pool = pool(2);
        let caller = thread::current().id();
        let started = AtomicUsize::new(0);
        let runs = counters(2);
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            pool.run(2, &|index| {
                started.fetch_add(1, Ordering::SeqCst);
                // Whichever thread takes a task first waits for the other task to
                // start, so the worker runs one of them.
                while started.load(Ordering::SeqCst) < 2 {
                    thread::yield_now();
                }
                runs[index].fetch_add(1, Ordering::Relaxed);
                if thread::current().id() != caller {
                    panic!("task {index} failed on a worker");
                }
            });
        }));
        let payload = result.expect_err("the worker's panic reaches the caller");
        assert!(panic_message(payload.as_ref()).ends_with("failed on a worker"));
        assert!(runs.iter().all(|count| count.load(Ordering::Relaxed) == 1));

        let sum = AtomicUsize::new(0);
        pool.run(100, &|index| {
            sum.fetch_add(index, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 4950);
    }

    #[test]
    fn panicking_tasks_do_not_stop_the_others() {
        for threads in THREAD_COUNTS {
            let pool = pool(threads);
            let runs = counters(100);
            let result = panic::catch_unwind(AssertUnwindSafe(|| {
                pool.run(100, &|index| {
                    runs[index].fetch_add(1, Ordering::Relaxed);
                    if index % 10 == 3 {
                        panic!("task {index} failed");
                    }
                });
            }));
            let payload = result.expect_err("a panic reaches the caller");
            assert!(panic_message(payload.as_ref()).ends_with("failed"));
            assert!(runs.iter().all(|count| count.load(Ordering::Relaxed) == 1));
            let again = AtomicUsize::new(0);
            pool.run(10, &|_| {
                again.fetch_add(1, Ordering::Relaxed);
            });
            assert_eq!(again.load(Ordering::Relaxed), 10);
        }
    }

    #[test]
    fn nested_runs_run_inline() {
        let pool = pool(3);
        let runs = counters(8 * 8);
        pool.run(8, &|outer| {
            let thread = thread::current().id();
            pool.run(8, &|inner| {
                assert_eq!(thread::current().id(), thread);
                runs[outer * 8 + inner].fetch_add(1, Ordering::Relaxed);
            });
        });
        assert!(runs.iter().all(|count| count.load(Ordering::Relaxed) == 1));
        assert!(!TaskMark::inside());
    }

    #[test]
    fn concurrent_runs_from_several_threads_take_turns() {
        let pool = pool(3);
        let total = AtomicUsize::new(0);
        thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..500 {
                        pool.run(7, &|index| {
                            total.fetch_add(index, Ordering::Relaxed);
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 4 * 500 * 21);
    }
}
