//! What shedding knows of one priority's buffered messages, in one atomic word.
//!
//! Shedding never takes a message out of the ring (that would break send order): it turns a
//! *live* message of a priority (to be written) into a *debt* (to be dropped), and the
//! writer, popping messages in send order, drops one message of that priority per debt.
//! Both halves share one word, `live << 32 | debt`, so a shedder turning a live message
//! into a debt and the writer popping one of the same priority never both claim the same
//! message: every change is one compare-and-swap on the whole word. The loom model at the
//! end checks that every message is written or dropped exactly once, that the counts never
//! go negative, and that a drop is always paid by a message that was buffered.

use crate::ring::sync::{AtomicU64, Ordering};

/// One message in the `live` half.
const LIVE: u64 = 1 << 32;
/// The `debt` half.
const DEBT_MASK: u64 = LIVE - 1;

/// One priority level's buffered messages: live ones and debts.
#[derive(Debug)]
pub(crate) struct ShedCounts(AtomicU64);

impl ShedCounts {
    pub(crate) fn new() -> Self {
        ShedCounts(AtomicU64::new(0))
    }

    /// A sender is about to push a message of this priority (counted before it is in the
    /// ring, so the writer never pops it uncounted).
    pub(crate) fn add_live(&self) {
        self.0.fetch_add(LIVE, Ordering::AcqRel);
    }

    /// Turns one live message into a debt; false if none is live.
    pub(crate) fn shed_one(&self) -> bool {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| (c >= LIVE).then(|| c - LIVE + 1))
            .is_ok()
    }

    /// Takes back a message that never made it into the ring: true if it was live, false
    /// if shedding had already dropped it (its debt is taken back instead).
    pub(crate) fn unbuffer(&self) -> bool {
        let before = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                Some(if c >= LIVE { c - LIVE } else { c.saturating_sub(1) })
            })
            .unwrap_or_else(|c| c);
        before >= LIVE
    }

    /// The writer popped a message of this priority: true if it pays a debt (drop it),
    /// false if it is live (write it).
    pub(crate) fn pop_is_debt(&self) -> bool {
        let before = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                debug_assert!(c != 0, "popped a message that was never counted");
                Some(if c & DEBT_MASK != 0 { c - 1 } else { c.wrapping_sub(LIVE) })
            })
            .unwrap_or_else(|c| c);
        before & DEBT_MASK != 0
    }

    /// (live, debt), for tests.
    #[cfg(test)]
    fn get(&self) -> (u64, u64) {
        let c = self.0.load(Ordering::Acquire);
        (c >> 32, c & DEBT_MASK)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn debts_are_paid_by_the_next_pops() {
        let c = ShedCounts::new();
        assert!(!c.shed_one());
        c.add_live();
        c.add_live();
        c.add_live();
        assert!(c.shed_one());
        assert_eq!(c.get(), (2, 1));
        assert!(c.pop_is_debt());
        assert!(!c.pop_is_debt());
        assert_eq!(c.get(), (1, 0));
        assert!(c.shed_one());
        assert!(!c.shed_one());
        assert!(!c.unbuffer()); // the message was shed already: its debt goes
        assert_eq!(c.get(), (0, 0));
        c.add_live();
        assert!(c.unbuffer());
        assert_eq!(c.get(), (0, 0));
    }
}

/// loom model: a sender pushing two messages of one priority, a shedder shedding one, and
/// the writer popping: each message is written or dropped exactly once, a drop happens only
/// if a message was live, and the counts end at zero. Run with
/// `RUSTFLAGS="--cfg loom" cargo test -p tidelog-core --lib --release shed`.
#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use loom::sync::atomic::AtomicUsize;
    use loom::sync::{Arc, Mutex};
    use std::collections::VecDeque;

    #[test]
    fn every_message_is_written_or_dropped_once() {
        loom::model(|| {
            let counts = Arc::new(ShedCounts::new());
            // The ring, in send order (its own concurrency is modelled in tests/loom_ring.rs).
            let ring = Arc::new(Mutex::new(VecDeque::new()));
            let shed = Arc::new(AtomicUsize::new(0));
            let sender = {
                let (counts, ring) = (counts.clone(), ring.clone());
                loom::thread::spawn(move || {
                    for m in 0..2u8 {
                        counts.add_live();
                        ring.lock().unwrap().push_back(m);
                    }
                })
            };
            let shedder = {
                let (counts, shed) = (counts.clone(), shed.clone());
                loom::thread::spawn(move || {
                    if counts.shed_one() {
                        shed.fetch_add(1, Ordering::Relaxed);
                    }
                })
            };
            let (mut written, mut dropped) = (Vec::new(), 0usize);
            let pop = |written: &mut Vec<u8>, dropped: &mut usize| {
                let item = ring.lock().unwrap().pop_front();
                if let Some(m) = item {
                    if counts.pop_is_debt() {
                        *dropped += 1;
                    } else {
                        written.push(m);
                    }
                }
            };
            pop(&mut written, &mut dropped);
            sender.join().unwrap();
            shedder.join().unwrap();
            while !ring.lock().unwrap().is_empty() {
                pop(&mut written, &mut dropped);
            }
            assert_eq!(dropped, shed.load(Ordering::Relaxed));
            assert_eq!(written.len() + dropped, 2);
            assert!(written.windows(2).all(|w| w[0] < w[1]), "kept messages stay in order");
            assert_eq!(counts.get(), (0, 0));
        });
    }
}
