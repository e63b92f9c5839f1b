//! Control batches: the transaction markers written to every partition a transaction
//! touched when it ends. A control batch holds one record whose value is two bytes,
//! version (0) and kind (0 abort, 1 commit); its header carries the producer id and epoch
//! of the transaction it ends. Readers never hand control records out as messages.

use super::batch::BatchView;

/// Attribute bit: the batch belongs to a transaction.
pub const ATTR_TRANSACTIONAL: u8 = 1;
/// Attribute bit: the batch is a control batch (a transaction marker).
pub const ATTR_CONTROL: u8 = 2;

/// How a transaction ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker {
    /// Its batches are discarded by readers.
    Abort,
    /// Its batches become visible.
    Commit,
}

impl Marker {
    /// The control record's value.
    pub fn value(self) -> [u8; 2] {
        [0, u8::from(self == Marker::Commit)]
    }

    /// The marker a control batch holds, or `None` for a data batch or an unknown kind
    /// (which readers treat as an abort: nothing uncertain becomes visible).
    pub fn of(batch: &BatchView<'_>) -> Option<Marker> {
        if batch.header.attributes & ATTR_CONTROL == 0 {
            return None;
        }
        let first_is_commit =
            |b: &BatchView<'_>| b.records().next().is_some_and(|r| r.value == Marker::Commit.value());
        // Writers never compress markers, but one that is compressed is read all the same.
        let commit = match batch.codec() {
            super::Compression::None => first_is_commit(batch),
            _ => batch
                .decompress()
                .is_ok_and(|image| BatchView::parse(&image, false).is_ok_and(|b| first_is_commit(&b))),
        };
        Some(if commit { Marker::Commit } else { Marker::Abort })
    }
}
