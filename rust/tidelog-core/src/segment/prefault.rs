//! A background thread that pre-faults the pages appends are about to write (see
//! `FileMap::prepare_write`). On the 2-core dev machine this moves the kernel's page
//! allocation and zeroing (a quarter of a single-message append) off the appending thread.
//!
//! It also drops the segment a roll sealed ([`release`]): when that is the last reference,
//! unmapping its active-segment mappings takes the kernel a while (0.4 ms for a full 4 MiB
//! segment of `__consumer_offsets` on the dev VM, under the append lock, on the thread of
//! whichever append or commit rolled).
//!
//! And it unmaps the pages far behind a writer or reader from the process
//! ([`release_pages`]): dropping the page-table entries of a 4 MiB window of dirty pages, and
//! the TLB shoot-down that follows, took 0.4-0.5 ms on the dev VM, on the appending thread
//! before its batch was published (the message waited for it) or on a consumer's before its
//! read returned.
//!
//! Requests are best effort: if the queue is full, or the thread cannot be started (or this
//! process is a `fork` of the one that started it, where the thread does not exist), the
//! writer's own page faults do the populating, and the caller drops the segment or unmaps
//! the pages itself.
//!
//! A thread that is itself a background writer (the producer's) populates inline instead:
//! nobody waits on it, and handing the work to one more busy thread only takes a core from
//! the Python threads (on the 2-core dev machine it cost the 4-thread `send` benchmark ~4%).
//!
//! The thread runs under `SCHED_BATCH` (Linux): the same share of the CPU as any thread, but
//! its wake-up never preempts a running one. Under the default policy, when no other core
//! was free it preempted the appender that woke it, inside `append` and before the batch
//! was published, and the message waited for the whole populate: messages 0.4-1.1 ms late
//! in a `perf`-traced run of the cross-process latency benchmark (issue 19). Now it runs
//! once that core is free or at the next tick; a populate that starts late leaves the
//! appender a few page faults of its own, as a full queue does.
//!
//! Invariants (cited by the `SAFETY` comments below):
//! 1. `sched_setscheduler` is given a pointer to a `sched_param` that lives across the call
//!    and touches nothing else of this process: it changes only the calling thread's
//!    policy (pid 0).

#![allow(unsafe_code)]

use std::cell::Cell;

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};

use super::{FileMap, Segment};
use crate::shm::fork::Born;

/// Work for the thread.
enum Request {
    /// Populate `from..to` of a mapping for writing.
    Populate(Arc<FileMap>, usize, usize),
    /// Drop a reference to a segment a roll sealed.
    Release(Arc<Segment>),
    /// Unmap `from..to` of a mapping from this process (see `FileMap::release_behind`).
    ReleasePages(Arc<FileMap>, usize, usize),
}

impl Request {
    fn run(self) {
        match self {
            Request::Populate(map, from, to) => map.populate_for_write(from, to),
            Request::Release(segment) => drop(segment),
            Request::ReleasePages(map, from, to) => map.release_pages(from, to),
        }
    }
}

thread_local! {
    static INLINE: Cell<bool> = const { Cell::new(false) };
}

/// Makes the calling thread populate its own pages (see the module notes).
pub fn populate_inline_on_this_thread() {
    INLINE.with(|i| i.set(true));
}

/// The queue to the thread, and the process that started it.
struct Queue {
    tx: Mutex<SyncSender<Request>>,
    born: Born,
}

static QUEUE: OnceLock<Option<Queue>> = OnceLock::new();

/// Hands `request` to the thread, or runs it here (see the module notes).
fn submit(request: Request) {
    if INLINE.with(Cell::get) {
        return request.run();
    }
    let queue = QUEUE.get_or_init(|| {
        let (tx, rx) = sync_channel::<Request>(64);
        std::thread::Builder::new()
            .name("tidelog-prefault".into())
            .spawn(move || {
                never_preempt_wakers();
                rx.into_iter().for_each(Request::run);
            })
            .ok()
            .map(|_| Queue { tx: Mutex::new(tx), born: Born::now() })
    });
    // In a fork of the process that started the thread, nobody serves the queue: the
    // request counts as not queued.
    let Some(queue) = queue.as_ref().filter(|q| !q.born.is_inherited()) else {
        return not_queued(request);
    };
    let Ok(tx) = queue.tx.lock() else {
        // Poisoned (a panic while sending).
        return not_queued(request);
    };
    match tx.try_send(request) {
        Ok(()) => {}
        Err(TrySendError::Full(request)) => not_queued(request),
        Err(TrySendError::Disconnected(request)) => request.run(),
    }
}

/// Puts the calling thread under `SCHED_BATCH` (see the module notes). Best effort: where
/// the policy is refused or does not exist, the thread keeps the default one.
fn never_preempt_wakers() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` lives across the call; pid 0 is this thread alone (invariant 1).
        let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    }
}

/// A request the thread will not see: populating is optional (the writer's own faults do
/// it), releasing is not.
fn not_queued(request: Request) {
    if !matches!(request, Request::Populate(..)) {
        request.run();
    }
}

/// Asks the prefault thread to populate `from..to` of `map` for writing.
pub(super) fn request(map: Arc<FileMap>, from: usize, to: usize) {
    submit(Request::Populate(map, from, to));
}

/// Unmaps `from..to` of `map` from this process on the prefault thread (see
/// `FileMap::release_behind`).
pub(super) fn release_pages(map: Arc<FileMap>, from: usize, to: usize) {
    submit(Request::ReleasePages(map, from, to));
}

/// Drops `segment` (sealed by a roll) on the prefault thread, so that unmapping it, when this
/// is its last reference, does not hold up the append that rolled.
pub(crate) fn release(segment: Arc<Segment>) {
    submit(Request::Release(segment));
}

#[cfg(test)]
mod tests {
    use std::sync::Weak;

    use super::*;

    fn segment(dir: &std::path::Path) -> (Arc<Segment>, Weak<Segment>) {
        let segment = Arc::new(Segment::open_active(dir, 0, 1 << 16, 16, 0, 0).unwrap());
        let weak = Arc::downgrade(&segment);
        (segment, weak)
    }

    /// Hands the thread a segment to drop and waits until it has (which starts the thread
    /// in this process if it was not running).
    fn release_one(dir: &std::path::Path) {
        let (seg, weak) = segment(dir);
        release(seg);
        assert!(released(&weak));
    }

    /// Waits until the thread has dropped the segment (the test harness bounds the wait).
    fn released(weak: &Weak<Segment>) -> bool {
        while weak.strong_count() > 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        true
    }

    /// The scheduling policy of each thread of this process named `name` (field 41 of its
    /// `/proc` `stat`, counted after the command name, which may hold spaces).
    #[cfg(target_os = "linux")]
    fn policies_of(name: &str) -> Vec<i32> {
        let mut out = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim_end() != name {
                continue;
            }
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap();
            let after_name = &stat[stat.rfind(')').unwrap() + 1..];
            out.push(after_name.split_whitespace().nth(41 - 3).unwrap().parse().unwrap());
        }
        out
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_thread_runs_under_sched_batch() {
        let dir = tempfile::tempdir().unwrap();
        release_one(dir.path());
        // Thread names are cut to 15 bytes.
        let policies = policies_of("tidelog-prefaul");
        assert!(!policies.is_empty(), "no prefault thread");
        assert!(policies.iter().all(|&p| p == libc::SCHED_BATCH), "policies {policies:?}");
    }

    #[test]
    fn a_released_segment_is_dropped_by_the_thread_and_a_kept_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        release_one(dir.path());
        // Another holder (a reader) keeps it: the release only drops one reference.
        let (seg, weak) = segment(dir.path());
        let reader = seg.clone();
        release(seg);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(weak.strong_count(), 1);
        drop(reader);
        assert_eq!(weak.strong_count(), 0);
    }

    #[test]
    fn an_inline_thread_or_a_forked_child_drops_the_segment_at_once() {
        let dir = tempfile::tempdir().unwrap();
        // Start the thread in this process first, so the child inherits a queue nobody serves.
        release_one(dir.path());
        let status = crate::shm::fork::in_child(|| {
            let (seg, weak) = segment(dir.path());
            release(seg);
            weak.strong_count() == 0
        });
        assert_eq!(status, 0, "the forked child left the segment to a thread it does not have");
        std::thread::spawn(move || {
            populate_inline_on_this_thread();
            let (seg, weak) = segment(dir.path());
            release(seg);
            assert_eq!(weak.strong_count(), 0);
        })
        .join()
        .unwrap();
    }
}
