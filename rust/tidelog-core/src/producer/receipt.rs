//! Where the writer reports what became of a message sent with
//! [`super::Producer::send_tracked`] (its offset, or that it was dropped or failed).
//!
//! Every tracked message's outcome goes to its producer's [`Ledger`]: a small ring of slots
//! indexed by the message's send sequence, written by the writer alone (two stores per
//! message into lines only it writes: no allocation, no reference count and no cache line
//! shared with the sender per message, which is what a `Receipt` of its own per message
//! cost, measured on issue 15). A slot is rewritten [`LEDGER_SLOTS`] tracked messages later,
//! so an outcome read from the ledger is only good for a while: a sender that wants it for
//! longer asks for a [`Receipt`] with [`Ledger::keep`] before that many more tracked
//! messages were sent (the async producer does so at its very next send, for a result
//! something still holds), or at the send itself (`keep`).
//!
//! Invariants: the writer settles a message (its slot, then every receipt kept for it)
//! before it counts the message as accounted for, so a sender that saw
//! [`super::Producer::flushed`] return true for a target covering the message reads its
//! outcome, except for a message shed after it was buffered: shedding accounts for it at
//! once and the writer settles it (as dropped) only when it pops it. A receipt kept for a
//! message is settled with the value of its slot exactly as the slot is, whichever of the
//! writer and [`Ledger::keep`] sees the other's write first (see [`Ledger::keep`]).

use std::collections::HashMap;
use std::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::shm::fork::Born;

/// Not settled yet.
const PENDING: u64 = u64::MAX;
/// Dropped by shedding.
const DROPPED: u64 = u64::MAX - 1;
/// The write failed (the error went to the producer's next `send`, `flush` or `close`).
const FAILED: u64 = u64::MAX - 2;

/// What became of a tracked message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Still buffered or being written (or shed after it was buffered, not yet popped).
    Pending,
    /// Appended at this offset of the partition it was sent to.
    Written(u64),
    /// Dropped by `on_full="shed"`.
    Dropped,
    /// Its write failed.
    Failed,
}

/// One message's outcome, set once by the writer.
#[derive(Debug)]
pub struct Receipt(AtomicU64);

impl Default for Receipt {
    fn default() -> Self {
        Receipt(AtomicU64::new(PENDING))
    }
}

impl Receipt {
    /// What became of the message so far.
    pub fn outcome(&self) -> Outcome {
        decode(self.0.load(Ordering::Acquire))
    }

    fn set(&self, value: u64) {
        self.0.store(value, Ordering::Release);
    }
}

/// The value a settled message leaves: its offset, or [`DROPPED`] or [`FAILED`].
#[derive(Clone, Copy, Debug)]
pub(super) struct Settled(u64);

impl Settled {
    pub(super) fn written(offset: u64) -> Self {
        // Offsets stay far below the three reserved values (they are < 2^63).
        Settled(offset.min(FAILED - 1))
    }

    pub(super) const DROPPED: Settled = Settled(DROPPED);
    pub(super) const FAILED: Settled = Settled(FAILED);
}

/// Slots of a [`Ledger`]: how many tracked messages later an outcome read from it may be
/// overwritten. The async producer needs 2 (see the module docs); more leaves room.
pub const LEDGER_SLOTS: usize = 1024;

/// One slot: the sequence (plus one) of the message it holds the outcome of (0: none yet),
/// and that outcome.
#[derive(Default)]
struct Slot {
    tag: AtomicU64,
    value: AtomicU64,
}

/// A producer's tracked outcomes, by send sequence (see the module docs).
pub struct Ledger {
    /// A forked child's copy of `kept` may be locked forever (by the parent's writer at the
    /// fork): an inherited ledger never locks it.
    born: Born,
    slots: Box<[Slot]>,
    /// Receipts kept for messages not settled when they were kept, by sequence.
    kept: Mutex<HashMap<u64, Arc<Receipt>>>,
    /// `kept.len()`, read by the writer without the lock.
    kept_count: AtomicUsize,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("kept", &self.kept_count.load(Ordering::Relaxed)).finish()
    }
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            born: Born::now(),
            slots: (0..LEDGER_SLOTS).map(|_| Slot::default()).collect(),
            kept: Mutex::new(HashMap::new()),
            kept_count: AtomicUsize::new(0),
        }
    }
}

impl Ledger {
    fn slot(&self, seq: u64) -> &Slot {
        &self.slots[(seq % LEDGER_SLOTS as u64) as usize]
    }

    /// The settled value of message `seq`, if its slot holds it.
    fn settled(&self, seq: u64) -> Option<u64> {
        let slot = self.slot(seq);
        if slot.tag.load(Ordering::Acquire) != seq + 1 {
            return None;
        }
        let value = slot.value.load(Ordering::Relaxed);
        // A seqlock read (see `settle`): the tag again, after the value, so a slot the writer
        // reused meanwhile is never read as this message's outcome.
        fence(Ordering::Acquire);
        (slot.tag.load(Ordering::Relaxed) == seq + 1).then_some(value)
    }

    /// What became of message `seq` (a sequence from [`super::Tracked::seq`]), read less
    /// than [`LEDGER_SLOTS`] tracked messages after it was sent (or kept before that).
    pub fn outcome(&self, seq: u64) -> Outcome {
        self.settled(seq).map_or(Outcome::Pending, decode)
    }

    /// A receipt for message `seq`, good for as long as it is held: call it before
    /// [`LEDGER_SLOTS`] more tracked messages were sent.
    ///
    /// The writer stores the slot, then (after a `SeqCst` fence) looks for kept receipts;
    /// this registers the receipt, then (after one) reads the slot: one of the two sees the
    /// other, so the receipt is settled at least once, always with the slot's value.
    /// In a forked child (the producer is inherited: nothing is written there) the receipt
    /// stays pending.
    pub fn keep(&self, seq: u64) -> Arc<Receipt> {
        let receipt = Arc::new(Receipt::default());
        if self.born.is_inherited_fast() {
            return receipt;
        }
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.insert(seq, receipt.clone());
        self.kept_count.store(kept.len(), Ordering::SeqCst);
        drop(kept);
        fence(Ordering::SeqCst);
        if let Some(value) = self.settled(seq) {
            receipt.set(value);
            self.release(&[seq]);
        }
        receipt
    }

    /// Registers a receipt for `seq` before the message is in the buffer (nothing can have
    /// settled it yet).
    pub(super) fn keep_unsent(&self, seq: u64) -> Arc<Receipt> {
        let receipt = Arc::new(Receipt::default());
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.insert(seq, receipt.clone());
        self.kept_count.store(kept.len(), Ordering::SeqCst);
        receipt
    }

    /// Forgets the receipts kept for `seqs` (a message shed at the send, never buffered).
    pub(super) fn release(&self, seqs: &[u64]) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        for seq in seqs {
            kept.remove(seq);
        }
        self.kept_count.store(kept.len(), Ordering::SeqCst);
    }

    /// The writer's store for message `seq`; [`Self::publish`] must follow before the
    /// message is accounted for.
    pub(super) fn settle(&self, seq: u64, value: Settled) {
        let slot = self.slot(seq);
        // A seqlock write: no tag while the value changes. Readers read a slot less than
        // LEDGER_SLOTS messages after its message (the module's contract), so this guards a
        // contract broken, not a race of the async producer.
        slot.tag.store(0, Ordering::Relaxed);
        fence(Ordering::Release);
        slot.value.store(value.0, Ordering::Relaxed);
        slot.tag.store(seq + 1, Ordering::Release);
    }

    /// After [`Self::settle`] of `seqs`: settles the receipts kept for them.
    pub(super) fn publish(&self, seqs: impl Iterator<Item = u64>) {
        fence(Ordering::SeqCst);
        if self.kept_count.load(Ordering::SeqCst) == 0 {
            return;
        }
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        for seq in seqs {
            if let Some(receipt) = kept.remove(&seq) {
                if let Some(value) = self.settled(seq) {
                    receipt.set(value);
                }
            }
        }
        self.kept_count.store(kept.len(), Ordering::SeqCst);
    }
}

fn decode(value: u64) -> Outcome {
    match value {
        PENDING => Outcome::Pending,
        DROPPED => Outcome::Dropped,
        FAILED => Outcome::Failed,
        offset => Outcome::Written(offset),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receipt_reports_what_was_set() {
        let r = Receipt::default();
        assert_eq!(r.outcome(), Outcome::Pending);
        for (value, outcome) in [
            (Settled::written(0), Outcome::Written(0)),
            (Settled::written(41), Outcome::Written(41)),
            (Settled::DROPPED, Outcome::Dropped),
            (Settled::FAILED, Outcome::Failed),
        ] {
            r.set(value.0);
            assert_eq!(r.outcome(), outcome);
        }
    }

    #[test]
    fn the_ledger_reports_a_slot_until_it_is_reused() {
        let ledger = Ledger::default();
        assert_eq!(ledger.outcome(5), Outcome::Pending);
        ledger.settle(5, Settled::written(7));
        ledger.publish([5].into_iter());
        assert_eq!(ledger.outcome(5), Outcome::Written(7));
        ledger.settle(6, Settled::DROPPED);
        assert_eq!(ledger.outcome(6), Outcome::Dropped);
        // The same slot, LEDGER_SLOTS messages later: the old outcome is gone.
        let later = 5 + LEDGER_SLOTS as u64;
        ledger.settle(later, Settled::FAILED);
        assert_eq!(ledger.outcome(later), Outcome::Failed);
        assert_eq!(ledger.outcome(5), Outcome::Pending);
    }

    #[test]
    fn a_kept_receipt_outlives_its_slot_whenever_it_was_kept() {
        let ledger = Ledger::default();
        // Kept before the writer settles it: the writer settles the receipt.
        let early = ledger.keep(3);
        assert_eq!(early.outcome(), Outcome::Pending);
        ledger.settle(3, Settled::written(30));
        ledger.publish([3].into_iter());
        // Kept after: the keep reads the slot.
        ledger.settle(4, Settled::written(40));
        ledger.publish([4].into_iter());
        let late = ledger.keep(4);
        let unsent = ledger.keep_unsent(9);
        ledger.release(&[9]);
        for seq in 3..3 + 2 * LEDGER_SLOTS as u64 {
            if seq > 4 {
                ledger.settle(seq, Settled::written(seq * 10));
            }
        }
        assert_eq!(early.outcome(), Outcome::Written(30));
        assert_eq!(late.outcome(), Outcome::Written(40));
        assert_eq!(unsent.outcome(), Outcome::Pending);
        assert_eq!(ledger.kept_count.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_reused_slot_is_never_read_as_the_older_message() {
        // Readers keep to the contract (less than LEDGER_SLOTS messages late), but a slot
        // rewritten under a late reader must read as pending, never as the other's offset.
        // One slot, its messages in order (a slot's tags only grow: no ABA).
        let ledger = Arc::new(Ledger::default());
        let seq = |k: u64| 7 + k * LEDGER_SLOTS as u64;
        let done = Arc::new(AtomicU64::new(0));
        let writer = {
            let (ledger, done) = (ledger.clone(), done.clone());
            std::thread::spawn(move || {
                for k in 0..200_000u64 {
                    ledger.settle(seq(k), Settled::written(seq(k) * 1000));
                    done.store(k + 1, Ordering::Release);
                }
            })
        };
        while !writer.is_finished() {
            let k = done.load(Ordering::Acquire);
            for s in [k.saturating_sub(1), k, k + 1].map(seq) {
                let outcome = ledger.outcome(s);
                assert!(
                    outcome == Outcome::Pending || outcome == Outcome::Written(s * 1000),
                    "{s}: {outcome:?}"
                );
            }
        }
        writer.join().unwrap();
    }

    #[test]
    fn an_inherited_ledger_keeps_without_its_lock() {
        let ledger = Ledger::default();
        ledger.settle(1, Settled::written(10));
        // Held at the fork, as by the parent's writer publishing: never released in the child.
        let held = ledger.kept.lock().unwrap();
        let status = crate::shm::fork::in_child(|| ledger.keep(1).outcome() == Outcome::Pending);
        drop(held);
        assert_eq!(status, 0);
        assert_eq!(ledger.keep(1).outcome(), Outcome::Written(10));
    }
}
