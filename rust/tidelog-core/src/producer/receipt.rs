//! `Receipt`: where the writer reports what became of one message sent with
//! [`super::Producer::send_tracked`] (its offset, or that it was dropped or failed).
//!
//! The message carries an `Arc` of its receipt through the buffer; the sender keeps
//! another. Invariant: the writer settles a receipt (one store, `Release`) before it counts
//! the message as accounted for, so a sender that saw [`super::Producer::flushed`] return
//! true for a target covering the message reads a settled receipt, except for a message
//! shed after it was buffered: shedding accounts for it at once and the writer settles its
//! receipt (as dropped) only when it pops it.

use std::sync::atomic::{AtomicU64, Ordering};

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
        match self.0.load(Ordering::Acquire) {
            PENDING => Outcome::Pending,
            DROPPED => Outcome::Dropped,
            FAILED => Outcome::Failed,
            offset => Outcome::Written(offset),
        }
    }

    pub(super) fn written(&self, offset: u64) {
        // Offsets stay far below the three reserved values (they are < 2^63).
        self.0.store(offset.min(FAILED - 1), Ordering::Release);
    }

    pub(super) fn dropped(&self) {
        self.0.store(DROPPED, Ordering::Release);
    }

    pub(super) fn failed(&self) {
        self.0.store(FAILED, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receipt_reports_what_was_set() {
        let r = Receipt::default();
        assert_eq!(r.outcome(), Outcome::Pending);
        r.written(0);
        assert_eq!(r.outcome(), Outcome::Written(0));
        r.written(41);
        assert_eq!(r.outcome(), Outcome::Written(41));
        r.dropped();
        assert_eq!(r.outcome(), Outcome::Dropped);
        r.failed();
        assert_eq!(r.outcome(), Outcome::Failed);
    }
}
