//! A team of the pool's threads held, spinning, for the length of one split forward.
//!
//! A single photo's forward splits each of its ~110 steps (gathers, products, Winograd blocks,
//! pooling) between the threads ([`split`](super::split)). Handed to rayon one by one, each step
//! wakes the other workers, which fall asleep again while the calling thread works alone between
//! steps: on a virtual machine whose wake-ups are slow, a `rayon::join` after a pause cost about
//! 100 µs (`RAYON_NUM_THREADS=2`, 2026-12-07), and one photo took 51 ms on two threads against 68
//! on one. onnxruntime's and OpenMP's pools spin between steps; so does this team. [`with_team`]
//! holds the pool's other workers in a loop that waits, spinning, for the next step, and
//! [`for_each`] hands each step to them with two atomic counters. Nothing depends on a helper
//! showing up: the calling thread claims tasks as the helpers do, and runs them all itself
//! where the pool's workers are busy elsewhere (another forward beside this one).

use std::any::Any;
use std::cell::{Cell, UnsafeCell};
use std::ptr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::*};
use std::time::{Duration, Instant};

use rayon::prelude::*;

/// How long a helper spins without a new step before it starts yielding its core between
/// checks (a forward's steps follow each other within microseconds; a pause this long is the
/// calling thread doing something else).
const SPIN: Duration = Duration::from_millis(2);

/// The shared state of one team: the step being run, and whether the team is done.
struct Team {
    /// The step now open to the helpers, or null between steps.
    step: AtomicPtr<Step>,
    /// Bumped each time a step opens, so a helper notices a new one without reading `step`.
    generation: AtomicUsize,
    /// Helpers between reading `step` and being done with it: a step outlives them.
    inside: AtomicUsize,
    /// Set when the forward is over; the helpers leave.
    stop: AtomicBool,
    /// The first panic of a task a helper ran, raised again on the calling thread.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    /// The calling thread, which leads.
    leader: std::thread::ThreadId,
}

/// One step: `tasks` tasks, claimed one at a time, run by `call(data, i)`.
struct Step {
    tasks: usize,
    next: AtomicUsize,
    done: AtomicUsize,
    call: unsafe fn(*const (), usize),
    data: *const (),
}

impl Step {
    /// Claims and runs tasks until none is left; counts each one done even if it panics.
    fn work(&self) -> Result<(), Box<dyn Any + Send>> {
        let mut outcome = Ok(());
        loop {
            let i = self.next.fetch_add(1, Relaxed);
            if i >= self.tasks {
                return outcome;
            }
            // SAFETY: `data` and `call` were made together by `Team::run` from a closure that
            // lives until every task is done, and task `i` is claimed by this thread alone.
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
                (self.call)(self.data, i)
            }));
            if let (Err(payload), Ok(())) = (ran, &outcome) {
                outcome = Err(payload);
            }
            self.done.fetch_add(1, Release);
        }
    }
}

thread_local! {
    /// The team this thread leads, while it runs a forward under [`with_team`] and is not
    /// itself inside one of the team's tasks.
    static LEADING: Cell<*const Team> = const { Cell::new(ptr::null()) };
}

impl Team {
    /// A helper's life: waits for each step, works on it, and leaves when the team stops.
    fn help(&self) {
        // The leader itself, waiting in rayon for work of its own (Winograd's transforms, made
        // on a forward's first pass), may pop its team's helper job from its own deque: it must
        // not spin there for the stop only it can give.
        if std::thread::current().id() == self.leader {
            return;
        }
        let mut seen = self.generation.load(Acquire);
        let mut idle = Instant::now();
        let mut spins = 0u32;
        while !self.stop.load(Acquire) {
            let generation = self.generation.load(Acquire);
            if generation == seen {
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(64) && idle.elapsed() > SPIN {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
            seen = generation;
            self.inside.fetch_add(1, SeqCst);
            let step = self.step.load(SeqCst);
            if !step.is_null() {
                // SAFETY: the leader clears `step` before it waits for `inside` to fall to
                // zero, and counted in `inside` first, this helper read `step` before that
                // clearing: the step is alive until the helper leaves below.
                if let Err(payload) = unsafe { &*step }.work() {
                    let mut first = self.panic.lock().unwrap_or_else(|e| e.into_inner());
                    first.get_or_insert(payload);
                }
            }
            self.inside.fetch_sub(1, Release);
            idle = Instant::now();
        }
    }

    /// Runs `f(0)` .. `f(tasks - 1)` on this thread and the helpers, returning when all are done.
    fn run<F: Fn(usize) + Sync>(&self, tasks: usize, f: &F) {
        /// # Safety
        ///
        /// `data` points to an `F` that is alive.
        unsafe fn call<F: Fn(usize)>(data: *const (), i: usize) {
            // SAFETY: as the function's contract says.
            unsafe { (*data.cast::<F>())(i) }
        }
        let step = Step {
            tasks,
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            call: call::<F>,
            data: ptr::from_ref(f).cast(),
        };
        self.step.store(ptr::from_ref(&step).cast_mut(), SeqCst);
        self.generation.fetch_add(1, SeqCst);
        // The leader's own tasks run outside the team: a step inside a task runs on rayon.
        let leading = LEADING.replace(ptr::null());
        let mine = step.work();
        LEADING.set(leading);
        while step.done.load(Acquire) < tasks {
            std::hint::spin_loop();
        }
        // No helper may still hold the step when it goes out of scope.
        self.step.store(ptr::null_mut(), SeqCst);
        while self.inside.load(SeqCst) != 0 {
            std::hint::spin_loop();
        }
        if let Err(payload) = mine {
            std::panic::resume_unwind(payload);
        }
        let helpers = self.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(payload) = helpers {
            std::panic::resume_unwind(payload);
        }
    }
}

/// The cores this process may run on (its affinity and cgroup quota), read once.
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The threads a forward shares its work between: the pool's, but no more than the cores this
/// process may use. With 3 or 8 threads on 2 cores, one photo took 37-47 ms against 32 on 2, and
/// 32x32 images in batches of 32 took 31-33 ms against 21: shares and tasks cut for more
/// threads than run at once leave the last of them to run after the others.
pub(crate) fn threads() -> usize {
    rayon::current_num_threads().min(cores())
}

/// Runs `work` on this thread with the pool's other workers held as a team, spinning between the
/// steps that [`for_each`] hands them, until `work` returns. The team is no larger than the
/// cores this process may use: a pool of 4 threads on 2 cores spun 3 helpers against the
/// leader, and one photo took 73 ms where rayon took 38 ([`threads`]: the steps' tasks are cut
/// for as many threads, and the numbers do not change with their count). With one thread or one
/// core, `work` alone, its steps on rayon.
pub(crate) fn with_team<R>(work: impl FnOnce() -> R) -> R {
    let threads = threads();
    if threads < 2 || !LEADING.get().is_null() {
        return work();
    }
    let team = Team {
        step: AtomicPtr::new(ptr::null_mut()),
        generation: AtomicUsize::new(0),
        inside: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        panic: Mutex::new(None),
        leader: std::thread::current().id(),
    };
    /// Stops the team and leaves this thread's lead, also when `work` panics: the scope then
    /// waits for helpers that leave at once.
    struct Lead<'a>(&'a Team);
    impl Drop for Lead<'_> {
        fn drop(&mut self) {
            LEADING.set(ptr::null());
            self.0.stop.store(true, Release);
        }
    }
    rayon::in_place_scope(|scope| {
        for _ in 1..threads {
            scope.spawn(|_| team.help());
        }
        let _lead = Lead(&team);
        LEADING.set(&team);
        work()
    })
}

/// Runs `work` on this thread, a worker of rayon's pool, with the pool's other workers kept
/// awake until it returns: see [`keep_pool_awake`](super::tuning::keep_pool_awake).
pub(crate) fn with_pool_awake<R>(work: impl FnOnce() -> R) -> R {
    let threads = threads();
    if threads < 2 || rayon::current_thread_index().is_none() {
        return work();
    }
    let stop = AtomicBool::new(false);
    let leader = std::thread::current().id();
    /// Ends the helpers' loops, also when `work` panics.
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Release);
        }
    }
    rayon::in_place_scope(|scope| {
        for _ in 1..threads {
            scope.spawn(|_| awake(&stop, leader));
        }
        let _stop = Stop(&stop);
        work()
    })
}

/// A kept-awake worker's loop ([`with_pool_awake`]): runs the pool's pending jobs as they come,
/// spinning between them, yielding its core after [`SPIN`] without any.
fn awake(stop: &AtomicBool, leader: std::thread::ThreadId) {
    // The leader, waiting for work of its own, may pop this job itself: it must not loop here.
    if std::thread::current().id() == leader {
        return;
    }
    let mut idle = Instant::now();
    let mut spins = 0u32;
    while !stop.load(Acquire) {
        if let Some(rayon::Yield::Executed) = rayon::yield_now() {
            idle = Instant::now();
            continue;
        }
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(64) && idle.elapsed() > SPIN {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// `f(item)` for each of `items`, on the pool's threads: by the team this thread leads, if any
/// ([`with_team`]), else by rayon.
pub(crate) fn for_each<T: Send>(items: Vec<T>, f: impl Fn(T) + Send + Sync) {
    let team = LEADING.get();
    if team.is_null() || items.len() < 2 {
        items.into_par_iter().for_each(f);
        return;
    }
    /// Each item, taken by the one task that claimed its index.
    struct Slots<T>(Vec<UnsafeCell<Option<T>>>);
    // SAFETY: each slot is taken by one task only (its index is claimed once), and `T: Send`.
    unsafe impl<T: Send> Sync for Slots<T> {}
    let slots = Slots(
        items
            .into_iter()
            .map(|t| UnsafeCell::new(Some(t)))
            .collect(),
    );
    let tasks = slots.0.len();
    let slots = &slots;
    // SAFETY: `team` is the team this thread leads, alive until `with_team` returns, which is
    // after this call.
    unsafe { &*team }.run(tasks, &|i: usize| {
        // SAFETY: index `i` is claimed by this task alone (see `Slots`).
        let item = unsafe { (*slots.0[i].get()).take() };
        if let Some(item) = item {
            f(item);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_team_runs_every_task_once_on_several_threads() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        pool.install(|| {
            with_team(|| {
                for tasks in [0usize, 1, 2, 3, 17, 1000] {
                    let counts: Vec<AtomicUsize> =
                        (0..tasks).map(|_| AtomicUsize::new(0)).collect();
                    let threads = Mutex::new(std::collections::HashSet::new());
                    for_each((0..tasks).collect(), |i| {
                        counts[i].fetch_add(1, Relaxed);
                        threads.lock().unwrap().insert(std::thread::current().id());
                        // Long enough that the helpers, spinning, claim some.
                        std::thread::sleep(Duration::from_micros(200));
                    });
                    assert!(counts.iter().all(|c| c.load(Relaxed) == 1), "{tasks} tasks");
                    if tasks == 1000 && cores() > 1 {
                        assert!(
                            threads.lock().unwrap().len() > 1,
                            "{tasks} tasks on one thread"
                        );
                    }
                }
                // A step inside a task runs on rayon, and the team goes on after it.
                let sum = AtomicUsize::new(0);
                for_each(vec![10usize, 20], |n| {
                    for_each((0..n).collect(), |i| {
                        sum.fetch_add(i, Relaxed);
                    })
                });
                assert_eq!(sum.load(Relaxed), 45 + 190);
            })
        });
    }

    #[test]
    fn a_panicking_task_is_raised_on_the_leader_and_the_team_still_ends() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let caught = pool.install(|| {
            std::panic::catch_unwind(|| {
                with_team(|| {
                    for_each((0..64).collect(), |i: usize| {
                        std::thread::sleep(Duration::from_micros(50));
                        assert!(i != 40, "task 40 fails");
                    })
                })
            })
        });
        assert!(caught.is_err());
        // The pool is free again: the helper left.
        assert_eq!(pool.install(|| with_team(|| 7)), 7);
    }

    #[test]
    fn work_under_an_awake_pool_runs_whole_and_the_pool_is_free_after() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        pool.install(|| {
            let threads = Mutex::new(std::collections::HashSet::new());
            let sum: usize = with_pool_awake(|| {
                (0..64usize)
                    .into_par_iter()
                    .map(|i| {
                        threads.lock().unwrap().insert(std::thread::current().id());
                        std::thread::sleep(Duration::from_micros(200));
                        i
                    })
                    .sum()
            });
            assert_eq!(sum, 63 * 64 / 2);
            if cores() > 1 {
                assert_eq!(
                    threads.lock().unwrap().len(),
                    2,
                    "the awake worker took none"
                );
            }
            // A panic inside still stops the helper, and the pool serves the next call.
            let caught = std::panic::catch_unwind(|| with_pool_awake(|| panic!("inside")));
            assert!(caught.is_err());
            assert_eq!(with_pool_awake(|| rayon::join(|| 3, || 4)), (3, 4));
        });
        // Outside the pool, the work runs as it is.
        assert_eq!(with_pool_awake(|| 5), 5);
    }

    #[test]
    fn without_a_team_for_each_runs_on_rayon() {
        let sum = AtomicUsize::new(0);
        for_each((0..100).collect(), |i: usize| {
            sum.fetch_add(i, Relaxed);
        });
        assert_eq!(sum.load(Relaxed), 4950);
    }
}
