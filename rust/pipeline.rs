//! Parallel pipelines, written once for counting and encoding (named patterns and custom
//! regexes alike):
//!
//! - `ordered`: workers take turns reading the next item (a chunk of a file), transform it, and
//!   whoever finishes the item whose turn has come hands it and those done after it on, in
//!   input order (writes ids, stitches splittings); the calling thread reports progress.
//! - `unordered`: the calling thread produces items, each worker folds them into its own state
//!   (a map of counts), and the states come back at the end to be merged.
//! - `ordered_groups`: a slice cut into groups claimed by workers and by the calling thread,
//!   whose results the calling thread hands on in input order (a batch of texts).
//!
//! Whatever stops the work, every thread ends before the call returns: an error of a worker
//! is returned as the first one in input order, a panicking thread becomes `Panicked` naming
//! its stage, and the calling thread's poll (Ctrl-C) becomes `Interrupted` within one item
//! (workers see `Stop` and give up the item they hold).

use std::collections::BTreeMap;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rustc_hash::FxHashMap;

use crate::input::{Interrupted, Panicked};

/// The most threads one call starts: more than the machine has only adds overhead, and the
/// bound keeps a huge `num_threads` from exhausting memory.
pub const MAX_THREADS: usize = 256;

/// How long a thread that waits for others waits before it polls.
pub const WAIT_POLL: Duration = Duration::from_millis(20);

/// `num_threads` as used: at least 1, at most `MAX_THREADS`.
pub fn thread_count(num_threads: usize) -> usize {
    num_threads.clamp(1, MAX_THREADS)
}

/// Starts a scoped thread, or says why the system would not.
fn spawn<'scope, 'env, T: Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    f: impl FnOnce() -> T + Send + 'scope,
) -> io::Result<std::thread::ScopedJoinHandle<'scope, T>> {
    std::thread::Builder::new().spawn_scoped(scope, f)
}

/// What the threads of a pipeline do, for the message of a panic: the work (`"encode_file"`)
/// and the name of each stage.
#[derive(Clone, Copy, Debug)]
pub struct Stages {
    pub work: &'static str,
    pub producer: &'static str,
    pub worker: &'static str,
    pub consumer: &'static str,
}

impl Stages {
    fn panicked(&self, stage: &'static str) -> Panicked {
        Panicked {
            work: self.work,
            stage,
        }
    }
}

/// Set once the work is to stop; workers check it now and then (a `Budget`'s poll) and give
/// up the item they hold.
#[derive(Default)]
pub struct Stop(AtomicBool);

impl Stop {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Relaxed)
    }
}

/// Where a pipeline's items come from; runs on the calling thread.
pub trait Source {
    type Item: Send;
    type Error;
    /// The next item; None at the end.
    fn next(&mut self) -> Result<Option<Self::Item>, Self::Error>;
    /// Runs every `WAIT_POLL` while the calling thread waits for the other threads; an error
    /// stops the work.
    fn idle(&mut self) -> Result<(), Interrupted>;
}

/// Texts in runs of about `bytes` bytes (at least one text each), as a pipeline's source.
pub struct Batches<'a, T, E> {
    texts: &'a [T],
    bytes: usize,
    error: std::marker::PhantomData<fn() -> E>,
}

impl<'a, T: AsRef<str>, E> Batches<'a, T, E> {
    /// About `parts` runs for each of `threads` threads (at least 64 KiB each).
    pub fn new(texts: &'a [T], threads: usize, parts: usize) -> Self {
        let total: usize = texts.iter().map(|t| t.as_ref().len()).sum();
        Batches {
            texts,
            bytes: (total / thread_count(threads).saturating_mul(parts).max(1)).max(1 << 16),
            error: std::marker::PhantomData,
        }
    }
}

impl<'a, T: AsRef<str> + Sync, E> Source for Batches<'a, T, E> {
    type Item = &'a [T];
    type Error = E;

    fn next(&mut self) -> Result<Option<&'a [T]>, E> {
        if self.texts.is_empty() {
            return Ok(None);
        }
        let mut acc = 0;
        let n = self
            .texts
            .iter()
            .position(|t| {
                acc += t.as_ref().len();
                acc >= self.bytes
            })
            .map_or(self.texts.len(), |i| i + 1);
        let (run, rest) = self.texts.split_at(n);
        self.texts = rest;
        Ok(Some(run))
    }

    fn idle(&mut self) -> Result<(), Interrupted> {
        Ok(())
    }
}

/// What every pipeline error can be besides the work's own failures.
pub trait PipelineError: From<Interrupted> + From<Panicked> + From<io::Error> + Send {}
impl<E: From<Interrupted> + From<Panicked> + From<io::Error> + Send> PipelineError for E {}

/// Tickets bound the items in memory at once (queued, being worked on, or waiting for their
/// turn in the consumer): the producer takes one per item, and one comes back per item done.
struct Tickets {
    tx: mpsc::SyncSender<()>,
    rx: mpsc::Receiver<()>,
}

impl Tickets {
    fn new(n: usize) -> Self {
        let (tx, rx) = mpsc::sync_channel(n);
        for _ in 0..n {
            let _ = tx.try_send(());
        }
        Tickets { tx, rx }
    }
}

/// Waits for a ticket, calling `idle` every `WAIT_POLL`; false when no ticket can come (every
/// thread that returns them has ended).
fn take_ticket<S: Source>(rx: &mpsc::Receiver<()>, source: &mut S) -> Result<bool, Interrupted> {
    loop {
        match rx.recv_timeout(WAIT_POLL) {
            Ok(()) => return Ok(true),
            Err(RecvTimeoutError::Timeout) => source.idle()?,
            Err(RecvTimeoutError::Disconnected) => return Ok(false),
        }
    }
}

/// Next message from a receiver shared by the workers; None when the sender is gone. (The
/// lock is held only while waiting for the next item.)
fn recv_shared<T>(rx: &Mutex<mpsc::Receiver<T>>) -> Option<T> {
    lock(rx).recv().ok()
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `f`, turning a panic into `Panicked` at `stage`.
fn guarded<T, E: From<Panicked>>(
    stages: &Stages,
    stage: &'static str,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| Err(stages.panicked(stage).into()))
}

/// Where `ordered`'s items come from: read by whichever worker is free, one worker at a time,
/// so that a chunk is read on the core that encodes it and no thread does nothing but read.
pub trait Pull: Send {
    type Item: Send;
    type Error;
    /// The next item; None at the end. `poll(bytes read so far)` runs after every block read
    /// (the progress the calling thread reports); its error stops the reading (the work was
    /// stopped).
    fn next(
        &mut self,
        poll: &mut dyn FnMut(u64) -> Result<(), Interrupted>,
    ) -> Result<Option<Self::Item>, Self::Error>;
}

/// `ordered`'s reading side: the source and the number of the next item.
struct Feed<'s, Src> {
    source: &'s mut Src,
    seq: usize,
    ended: bool,
}

/// `ordered`'s consuming side: results waiting for their turn, and the first failure.
struct Turn<O, E, C> {
    next: usize,
    pending: BTreeMap<usize, Result<O, E>>,
    consume: C,
    failed: Option<E>,
}

/// Room for items in memory (read and not yet consumed), which workers wait for.
struct Room {
    left: Mutex<usize>,
    changed: Condvar,
}

impl Room {
    /// Takes room for one item; false once the work has stopped.
    fn take(&self, stop: &Stop) -> bool {
        let mut left = lock(&self.left);
        while *left == 0 && !stop.is_set() {
            left = self
                .changed
                .wait_timeout(left, WAIT_POLL)
                .map_or_else(|e| e.into_inner().0, |r| r.0);
        }
        if stop.is_set() {
            return false;
        }
        *left -= 1;
        true
    }

    fn give(&self) {
        *lock(&self.left) += 1;
        self.changed.notify_one();
    }

    fn wake_all(&self) {
        let _held = lock(&self.left);
        self.changed.notify_all();
    }
}

/// Turns every item of `source` into a result on `threads` worker threads (`init` makes each
/// worker's state, `work` turns an item into a result) and hands the results, in input order,
/// to `consume`. A free worker reads the next item itself, and the worker that finishes the
/// item whose turn it is consumes it and any finished ones after it; the calling thread only
/// calls `hook(progress)` every `WAIT_POLL` (and once at the end) and may stop the work with
/// it. At most about twice `threads` items are in memory at once. Returns the first error in
/// input order (the source's, a worker's or the consumer's), or `Interrupted` when `hook` asked
/// to stop, or `Panicked`.
pub fn ordered<Src, O, S, E>(
    stages: Stages,
    threads: usize,
    source: &mut Src,
    hook: &mut dyn FnMut(u64) -> Result<(), Interrupted>,
    init: impl Fn() -> S + Sync,
    work: impl Fn(&mut S, Src::Item, &Stop) -> Result<O, E> + Sync,
    consume: impl FnMut(O) -> Result<(), E> + Send,
) -> Result<(), E>
where
    Src: Pull<Error = E>,
    O: Send,
    E: PipelineError,
{
    let threads = thread_count(threads);
    let feed = Mutex::new(Feed {
        source,
        seq: 0,
        ended: false,
    });
    let turn = Mutex::new(Turn {
        next: 0,
        pending: BTreeMap::new(),
        consume,
        failed: None,
    });
    let room = Room {
        left: Mutex::new(threads * 2 + 2),
        changed: Condvar::new(),
    };
    let progress = std::sync::atomic::AtomicU64::new(0);
    let stop = Stop::default();
    // Set by a worker that panicked outside the guarded calls (it hands nothing in).
    let lost = AtomicBool::new(false);
    let (init, work, stages) = (&init, &work, &stages);
    let (feed, turn, room, progress, stop, lost) = (&feed, &turn, &room, &progress, &stop, &lost);

    // Hands in item `seq`'s result, and consumes every result whose turn has come.
    let hand_in = move |seq: usize, r: Result<O, E>| {
        let mut guard = lock(turn);
        let t = &mut *guard;
        if t.failed.is_some() {
            return;
        }
        t.pending.insert(seq, r);
        while let Some(r) = t.pending.remove(&t.next) {
            t.next += 1;
            let consume = &mut t.consume;
            let r = r.and_then(|o| guarded(stages, stages.consumer, || consume(o)));
            room.give();
            if let Err(e) = r {
                t.failed = Some(e);
                t.pending.clear();
                stop.set();
                room.wake_all();
                break;
            }
        }
    };
    // The next item and its number, read by the calling worker; None when there is none to
    // work on (the end, a failure, a stop).
    let take = move || -> Option<(usize, Src::Item)> {
        if !room.take(stop) {
            return None;
        }
        let mut f = lock(feed);
        if f.ended || stop.is_set() {
            drop(f);
            room.give();
            return None;
        }
        let seq = f.seq;
        let mut poll = |n: u64| {
            progress.store(n, Ordering::Relaxed);
            if stop.is_set() {
                Err(Interrupted)
            } else {
                Ok(())
            }
        };
        let source = &mut *f.source;
        let r = guarded(stages, stages.producer, || source.next(&mut poll));
        match r {
            Ok(Some(item)) => {
                f.seq += 1;
                Some((seq, item))
            }
            Ok(None) => {
                f.ended = true;
                drop(f);
                room.give();
                None
            }
            Err(e) => {
                // In input order, after the items read before it.
                f.ended = true;
                f.seq += 1;
                drop(f);
                hand_in(seq, Err(e));
                None
            }
        }
    };

    let interrupted = std::thread::scope(|scope| -> Result<Option<Interrupted>, E> {
        let (alive_tx, alive_rx) = mpsc::channel::<()>();
        let mut workers = 0;
        for _ in 0..threads {
            let alive = alive_tx.clone();
            let started = spawn(scope, move || {
                let _alive = alive; // dropped when this worker ends, however it ends
                let body = AssertUnwindSafe(|| {
                    let mut state = None;
                    while let Some((seq, item)) = take() {
                        let r = guarded(stages, stages.worker, || {
                            work(state.get_or_insert_with(init), item, stop)
                        });
                        let failed = r.is_err();
                        hand_in(seq, r);
                        if failed {
                            break; // this worker's state is suspect
                        }
                    }
                });
                if catch_unwind(body).is_err() {
                    lost.store(true, Ordering::Relaxed);
                    stop.set();
                    room.wake_all();
                }
            });
            match started {
                Ok(_) => workers += 1,
                // Fewer threads than asked for still do everything.
                Err(_) if workers > 0 => break,
                Err(e) => return Err(e.into()),
            }
        }
        drop(alive_tx);
        // The calling thread polls until every worker has ended (within an item once stopped).
        let mut interrupted = None;
        loop {
            match alive_rx.recv_timeout(WAIT_POLL) {
                Err(RecvTimeoutError::Disconnected) => break,
                Ok(()) | Err(RecvTimeoutError::Timeout) => {
                    if interrupted.is_none() {
                        if let Err(e) = hook(progress.load(Ordering::Relaxed)) {
                            interrupted = Some(e);
                            stop.set();
                            room.wake_all();
                        }
                    }
                }
            }
        }
        Ok(interrupted)
    })?;
    if let Some(e) = interrupted {
        return Err(e.into());
    }
    let mut t = lock(turn);
    if let Some(e) = t.failed.take() {
        return Err(e);
    }
    let (done, read) = (t.next, lock(feed).seq);
    drop(t);
    if lost.load(Ordering::Relaxed) || done < read {
        return Err(stages.panicked(stages.worker).into());
    }
    // The last progress (the whole input read), and a last chance to stop.
    hook(progress.load(Ordering::Relaxed))?;
    Ok(())
}

/// Hands every item of `source` to a worker, which folds it into its own state (`init` makes
/// it, `work` adds an item); returns the states. An error of a worker stops the reading; the
/// items read before it are still worked on, and the first error in input order is returned
/// (so the first invalid byte of a file is the one reported). `idle` asking to stop gives
/// `Interrupted`; a panic, `Panicked`.
pub fn unordered<Src, S, E>(
    stages: Stages,
    threads: usize,
    source: &mut Src,
    init: impl Fn() -> S + Sync,
    work: impl Fn(&mut S, Src::Item, &Stop) -> Result<(), E> + Sync,
) -> Result<Vec<S>, E>
where
    Src: Source<Error = E>,
    S: Send,
    E: PipelineError,
{
    let threads = thread_count(threads);
    let tickets = Tickets::new(threads * 2);
    let (work_tx, work_rx) = mpsc::sync_channel::<(usize, Src::Item)>(threads * 2);
    let work_rx = Mutex::new(work_rx);
    let stop = Stop::default();
    // The first failed item (usize::MAX: none yet) and its error.
    let failed_at = AtomicUsize::new(usize::MAX);
    let failure: Mutex<Option<(usize, E)>> = Mutex::new(None);
    let fail = |seq: usize, e: E| {
        let mut f = lock(&failure);
        if f.as_ref().is_none_or(|(at, _)| seq < *at) {
            *f = Some((seq, e));
            failed_at.fetch_min(seq, Ordering::Relaxed);
        }
    };
    let (init, work, stages) = (&init, &work, &stages);
    let states = std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(threads);
        for _ in 0..threads {
            let (work_rx, stop, fail, failed_at) = (&work_rx, &stop, &fail, &failed_at);
            let ticket_tx = tickets.tx.clone();
            let started = spawn(scope, move || {
                let mut state = init();
                while let Some((seq, item)) = recv_shared(work_rx) {
                    // Items after a failed one, or after a stop, are not worked on.
                    if !stop.is_set() && seq < failed_at.load(Ordering::Relaxed) {
                        let r = guarded(stages, stages.worker, || work(&mut state, item, stop));
                        if let Err(e) = r {
                            fail(seq, e);
                        }
                    }
                    let _ = ticket_tx.send(());
                }
                state
            });
            match started {
                Ok(h) => handles.push(h),
                Err(_) if !handles.is_empty() => break,
                Err(e) => return Err(E::from(e)),
            }
        }
        drop(tickets.tx);
        let mut produce = || -> Result<(), E> {
            let mut seq = 0usize;
            while failed_at.load(Ordering::Relaxed) == usize::MAX {
                let Some(item) = guarded(stages, stages.producer, || source.next())? else {
                    break;
                };
                if !take_ticket(&tickets.rx, source)? || work_tx.send((seq, item)).is_err() {
                    break;
                }
                seq += 1;
            }
            Ok(())
        };
        let produced = produce();
        drop(work_tx);
        if produced.is_err() {
            stop.set();
        }
        // Waits for the workers, still polling (they end within an item once stopped); the
        // tickets stop when every worker has ended.
        loop {
            match tickets.rx.recv_timeout(WAIT_POLL) {
                Ok(()) => {}
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    if let Err(e) = source.idle() {
                        stop.set();
                        fail(0, e.into());
                    }
                }
            }
        }
        let states: Vec<Result<S, E>> = handles
            .into_iter()
            .map(|h| h.join().map_err(|_| stages.panicked(stages.worker).into()))
            .collect();
        produced?;
        states.into_iter().collect::<Result<Vec<S>, E>>()
    })?;
    let failed = lock(&failure).take();
    match failed {
        Some((_, e)) => Err(e),
        None => Ok(states),
    }
}

/// Why `ordered_groups`'s `work` gave up a group.
pub enum Halt<E> {
    /// The poll it was given asked to stop.
    Stopped,
    /// The work itself failed (this stops everything, and is returned).
    Failed(E),
}

/// A run of consecutive items of `ordered_groups` (the first being item `start`) and what
/// `work` made of them.
pub struct Done<G> {
    start: usize,
    len: usize,
    value: G,
}

/// Cuts `items` into groups of a few, which the workers and the calling thread claim from a
/// shared counter (so long and short items balance), turns each into a result with `work`
/// (`init` makes each thread's state), and hands the results to `sink` on the calling thread,
/// in input order, as soon as each and all before it are done: the caller converts early
/// results (into Python lists, say) while later items are still worked on.
///
/// The calling thread is one of the `threads` (with one, the only one). Its own work and its
/// waits for other threads' results run inside `wait` (the Python binding releases the GIL
/// there); `sink` runs outside it. `poll` runs on the calling thread while it works (`work`
/// calls the poll it is given, and returns `Halt::Stopped` when it says stop) and every
/// `WAIT_POLL` it waits. An error from `poll`, `work` or `sink` stops the workers and is
/// returned (the first to happen); a panic in `work` becomes `Panicked`.
#[allow(clippy::too_many_arguments)]
pub fn ordered_groups<T, G, S, E, W>(
    stages: Stages,
    items: &[T],
    threads: usize,
    init: impl Fn() -> S + Sync,
    work: impl Fn(&mut S, &[T], &mut dyn FnMut() -> bool) -> Result<G, Halt<E>> + Sync,
    mut wait: W,
    poll: &(dyn Fn() -> Result<(), E> + Sync),
    mut sink: impl FnMut(G) -> Result<(), E>,
) -> Result<(), E>
where
    T: Sync,
    G: Send,
    S: Send,
    E: Send + From<Panicked>,
    W: FnMut(&(dyn Fn() -> Option<Done<G>> + Sync)) -> Option<Done<G>>,
{
    let threads = thread_count(threads).min(items.len().max(1));
    let group = (items.len() / (threads * 16)).clamp(1, 256);
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let panicked = AtomicBool::new(false);
    let ready: Mutex<FxHashMap<usize, Done<G>>> = Mutex::default();
    let arrived = Condvar::new();
    let running = AtomicUsize::new(0);
    // The first error of `poll` or `work`, if any (it stops everything).
    let failed: Mutex<Option<E>> = Mutex::new(None);
    let fail = |e: E| {
        lock(&failed).get_or_insert(e);
        stop.store(true, Ordering::Relaxed);
    };
    let stopped_by_poll = || match poll() {
        Ok(()) => false,
        Err(e) => {
            fail(e);
            true
        }
    };
    // Claims the next group and works on it; None when every group has been claimed, the work
    // stops, or `work` panicked.
    let work_next = |state: &mut S, poll: &mut dyn FnMut() -> bool| -> Option<Done<G>> {
        let start = next.fetch_add(group, Ordering::Relaxed);
        if start >= items.len() || stop.load(Ordering::Relaxed) {
            return None;
        }
        let part = items.get(start..(start + group).min(items.len()))?;
        match catch_unwind(AssertUnwindSafe(|| work(state, part, poll))) {
            Ok(Ok(value)) => Some(Done {
                start,
                len: part.len(),
                value,
            }),
            Ok(Err(Halt::Stopped)) => {
                stop.store(true, Ordering::Relaxed);
                None
            }
            Ok(Err(Halt::Failed(e))) => {
                fail(e);
                None
            }
            Err(_) => {
                panicked.store(true, Ordering::Relaxed);
                stop.store(true, Ordering::Relaxed);
                None
            }
        }
    };
    // Counts a worker out however it ends, so nothing can leave the caller waiting.
    // (It takes the lock the waiter holds while it checks, so the wake-up cannot be missed.)
    struct Exit<'a, M>(&'a AtomicUsize, &'a Mutex<M>, &'a Condvar);
    impl<M> Drop for Exit<'_, M> {
        fn drop(&mut self) {
            let _held = lock(self.1);
            self.0.fetch_sub(1, Ordering::SeqCst);
            self.2.notify_all();
        }
    }
    std::thread::scope(|scope| {
        for _ in 1..threads {
            running.fetch_add(1, Ordering::SeqCst);
            let started = spawn(scope, || {
                let _exit = Exit(&running, &ready, &arrived);
                let mut state = init();
                let mut stopped = || stop.load(Ordering::Relaxed);
                while let Some(done) = work_next(&mut state, &mut stopped) {
                    lock(&ready).insert(done.start, done);
                    arrived.notify_all();
                }
            });
            if started.is_err() {
                // Fewer threads: the calling thread works on what no worker takes.
                running.fetch_sub(1, Ordering::SeqCst);
                break;
            }
        }
        // Waits for the group at `start` from the workers. None: the work stops, or every
        // worker has ended without producing it.
        let take = |start: usize| {
            let mut map = lock(&ready);
            loop {
                if let Some(done) = map.remove(&start) {
                    return Some(done);
                }
                if running.load(Ordering::SeqCst) == 0 || stop.load(Ordering::Relaxed) {
                    return None;
                }
                let (m, waited) = arrived
                    .wait_timeout(map, WAIT_POLL)
                    .unwrap_or_else(PoisonError::into_inner);
                map = m;
                if waited.timed_out() {
                    drop(map);
                    if stopped_by_poll() {
                        return None;
                    }
                    map = lock(&ready);
                }
            }
        };
        let own_state = Mutex::new(None);
        let work_own = || {
            let mut stopped = &stopped_by_poll;
            work_next(lock(&own_state).get_or_insert_with(&init), &mut stopped)
        };
        let mut start = 0;
        while start < items.len() {
            let ready_now = lock(&ready).remove(&start);
            let done = match ready_now {
                Some(done) => done,
                None => match wait(&work_own) {
                    Some(done) if done.start == start => done,
                    Some(done) => {
                        lock(&ready).insert(done.start, done);
                        continue;
                    }
                    None => match wait(&|| take(start)) {
                        Some(done) => done,
                        None => break,
                    },
                },
            };
            start += done.len;
            if let Err(e) = sink(done.value) {
                stop.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
        if let Some(e) = lock(&failed).take() {
            return Err(e);
        }
        if start < items.len() || panicked.load(Ordering::Relaxed) {
            // Stopped without a poll's error: only a panic does that.
            return Err(stages.panicked(stages.worker).into());
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[derive(Debug, PartialEq)]
    enum TestError {
        Fail(usize),
        Interrupted,
        Panicked(Panicked),
        Io,
    }

    impl From<Interrupted> for TestError {
        fn from(_: Interrupted) -> Self {
            TestError::Interrupted
        }
    }
    impl From<Panicked> for TestError {
        fn from(p: Panicked) -> Self {
            TestError::Panicked(p)
        }
    }
    impl From<io::Error> for TestError {
        fn from(_: io::Error) -> Self {
            TestError::Io
        }
    }

    const STAGES: Stages = Stages {
        work: "test",
        producer: "producing",
        worker: "working",
        consumer: "consuming",
    };

    /// The numbers 0..n; `idle` interrupts once `interrupt_after` items were produced.
    struct Numbers {
        next: usize,
        n: usize,
        interrupt_after: usize,
        panic_at: usize,
    }

    impl Numbers {
        fn new(n: usize) -> Self {
            Numbers {
                next: 0,
                n,
                interrupt_after: usize::MAX,
                panic_at: usize::MAX,
            }
        }
    }

    impl Source for Numbers {
        type Item = usize;
        type Error = TestError;
        fn next(&mut self) -> Result<Option<usize>, TestError> {
            assert!(self.next != self.panic_at, "producer panics");
            if self.next == self.n {
                return Ok(None);
            }
            self.next += 1;
            Ok(Some(self.next - 1))
        }
        fn idle(&mut self) -> Result<(), Interrupted> {
            if self.next >= self.interrupt_after {
                Err(Interrupted)
            } else {
                Ok(())
            }
        }
    }

    impl Pull for Numbers {
        type Item = usize;
        type Error = TestError;
        fn next(
            &mut self,
            poll: &mut dyn FnMut(u64) -> Result<(), Interrupted>,
        ) -> Result<Option<usize>, TestError> {
            let item = Source::next(self)?;
            poll(self.next as u64)?;
            Ok(item)
        }
    }

    /// Some work that takes longer for some items, so they finish out of order; returns 0.
    fn busy(i: usize) -> usize {
        let x = (0..(i * 7919) % 5000).fold(i, |a, b| a.wrapping_mul(31).wrapping_add(b));
        usize::from(std::hint::black_box(x) == usize::MAX)
    }

    fn run_ordered(
        source: &mut Numbers,
        threads: usize,
        work: impl Fn(usize, &Stop) -> Result<usize, TestError> + Sync,
        consume_panics_at: usize,
    ) -> (Result<(), TestError>, Vec<usize>) {
        let mut seen = Vec::new();
        let interrupt_after = source.interrupt_after as u64;
        let mut hook = |n: u64| {
            if n >= interrupt_after {
                Err(Interrupted)
            } else {
                Ok(())
            }
        };
        let r = ordered(
            STAGES,
            threads,
            source,
            &mut hook,
            || (),
            |_, i, stop| work(i, stop),
            |i| {
                assert!(i != consume_panics_at, "consumer panics");
                seen.push(i);
                Ok(())
            },
        );
        (r, seen)
    }

    #[test]
    fn ordered_keeps_input_order() {
        for threads in [1, 2, 3, 8] {
            let (r, seen) = run_ordered(
                &mut Numbers::new(2000),
                threads,
                |i, _| Ok(i + busy(i)),
                usize::MAX,
            );
            assert_eq!(r, Ok(()));
            assert_eq!(seen, (0..2000).collect::<Vec<_>>(), "threads={threads}");
        }
    }

    #[test]
    fn ordered_returns_the_first_error_in_input_order_and_stops() {
        let mut source = Numbers::new(100_000);
        let (r, seen) = run_ordered(
            &mut source,
            4,
            |i, _| {
                if i == 300 {
                    std::thread::sleep(Duration::from_millis(50));
                    return Err(TestError::Fail(i));
                }
                if i == 305 {
                    return Err(TestError::Fail(i));
                }
                Ok(busy(i) + i)
            },
            usize::MAX,
        );
        assert_eq!(r, Err(TestError::Fail(300)));
        assert_eq!(seen, (0..300).collect::<Vec<_>>());
        // At most the items in flight were read after the failed one.
        assert!(source.next <= 300 + 4 * 2 + 3, "{}", source.next);
    }

    #[test]
    fn ordered_panics_become_errors_naming_the_stage() {
        let stage = |stage| Err(TestError::Panicked(STAGES.panicked(stage)));
        let work = |i: usize, _: &Stop| {
            assert!(i != 77, "worker panics");
            Ok(i)
        };
        let r = run_ordered(&mut Numbers::new(1000), 3, work, usize::MAX).0;
        assert_eq!(r, stage("working"));
        let r = run_ordered(&mut Numbers::new(1000), 3, |i, _| Ok(i), 500).0;
        assert_eq!(r, stage("consuming"));
        let mut source = Numbers::new(1000);
        source.panic_at = 10;
        let r = run_ordered(&mut source, 3, |i, _| Ok(i), usize::MAX).0;
        assert_eq!(r, stage("producing"));
    }

    /// Work on an item that only ends when told to stop (or after 20 s: a failed test).
    fn until_stopped(stop: &Stop) -> bool {
        let t = Instant::now();
        while !stop.is_set() {
            if t.elapsed() > Duration::from_secs(20) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    #[test]
    fn an_interrupt_stops_the_item_in_hand() {
        let t = Instant::now();
        let mut source = Numbers::new(1000);
        source.interrupt_after = 1;
        let work = |i: usize, stop: &Stop| {
            if until_stopped(stop) {
                Err(TestError::Interrupted)
            } else {
                Ok(i)
            }
        };
        let (r, seen) = run_ordered(&mut source, 2, work, usize::MAX);
        assert_eq!((r, seen), (Err(TestError::Interrupted), vec![]));
        assert!(source.next <= 1 + 2 * 2 + 2);
        let mut source = Numbers::new(1000);
        source.interrupt_after = 1;
        let r = unordered(
            STAGES,
            2,
            &mut source,
            || (),
            |_, _, stop| {
                assert!(until_stopped(stop));
                Ok(())
            },
        );
        assert_eq!(r.err(), Some(TestError::Interrupted));
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }

    #[test]
    fn unordered_folds_everything_and_returns_the_first_error() {
        for threads in [1, 2, 5] {
            let sums = unordered(
                STAGES,
                threads,
                &mut Numbers::new(10_000),
                || 0,
                |s, i, _| {
                    *s += i + busy(i);
                    Ok(())
                },
            );
            assert_eq!(sums.unwrap().iter().sum::<usize>(), 10_000 * 9_999 / 2);
        }
        let mut source = Numbers::new(100_000);
        let r = unordered(
            STAGES,
            3,
            &mut source,
            || (),
            |_, i, _| {
                if i == 500 {
                    std::thread::sleep(Duration::from_millis(50));
                    return Err(TestError::Fail(i));
                }
                if i == 502 {
                    return Err(TestError::Fail(i));
                }
                Ok(())
            },
        );
        assert_eq!(r.err(), Some(TestError::Fail(500)));
        assert!(source.next <= 500 + 3 * 2 + 2, "{}", source.next);
        let r = unordered(
            STAGES,
            3,
            &mut Numbers::new(1000),
            || (),
            |_, i, _| {
                assert!(i != 900, "worker panics");
                Ok(())
            },
        );
        assert_eq!(
            r.err(),
            Some(TestError::Panicked(STAGES.panicked("working")))
        );
    }

    fn run_groups(
        items: &[usize],
        threads: usize,
        work: impl Fn(&[usize], &mut dyn FnMut() -> bool) -> Result<Vec<usize>, Halt<TestError>> + Sync,
        poll: &(dyn Fn() -> Result<(), TestError> + Sync),
    ) -> (Result<(), TestError>, Vec<usize>) {
        let mut seen = Vec::new();
        let r = ordered_groups(
            STAGES,
            items,
            threads,
            || (),
            |_, part, poll| work(part, poll),
            |take| take(),
            poll,
            |v: Vec<usize>| {
                seen.extend(v);
                Ok(())
            },
        );
        (r, seen)
    }

    #[test]
    fn groups_keep_order_and_stop_on_errors_and_panics() {
        let items: Vec<usize> = (0..20_000).collect();
        let double = |part: &[usize], _: &mut dyn FnMut() -> bool| {
            Ok(part.iter().map(|&i| 2 * i + busy(i)).collect())
        };
        for threads in [1, 2, 4] {
            let (r, seen) = run_groups(&items, threads, double, &|| Ok(()));
            assert_eq!(r, Ok(()));
            assert_eq!(seen, items.iter().map(|i| 2 * i).collect::<Vec<_>>());
        }
        let fail = |part: &[usize], _: &mut dyn FnMut() -> bool| match part.contains(&7000) {
            true => Err(Halt::Failed(TestError::Fail(7000))),
            false => Ok(part.to_vec()),
        };
        let (r, seen) = run_groups(&items, 3, fail, &|| Ok(()));
        assert_eq!(r, Err(TestError::Fail(7000)));
        assert!(seen.len() <= 7000 && seen.iter().enumerate().all(|(k, &i)| k == i));
        let panics = |part: &[usize], _: &mut dyn FnMut() -> bool| {
            assert!(!part.contains(&9999), "worker panics");
            Ok(part.to_vec())
        };
        let r = run_groups(&items, 3, panics, &|| Ok(())).0;
        assert_eq!(r, Err(TestError::Panicked(STAGES.panicked("working"))));
        // A poll's error stops the work the calling thread does.
        let polled = |part: &[usize], poll: &mut dyn FnMut() -> bool| match poll() {
            true => Err(Halt::Stopped),
            false => Ok(part.to_vec()),
        };
        let r = run_groups(&items, 1, polled, &|| Err(TestError::Interrupted)).0;
        assert_eq!(r, Err(TestError::Interrupted));
    }
}
