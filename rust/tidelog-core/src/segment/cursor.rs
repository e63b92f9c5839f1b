//! The one walk over a segment's batches: [`BatchCursor`] steps from batch to batch of a
//! data file's bytes, checking each batch's length against the end of the data, its
//! structure and CRC (or only its header, where the caller says so) and that its base
//! offset continues the previous batch. What happens at a batch it cannot vouch for is the
//! caller's explicit choice, an [`OnDamage`]:
//!
//! | policy     | used by                                  | at damage                                  |
//! |------------|------------------------------------------|--------------------------------------------|
//! | `Stop`     | recovery, producer state, time bounds    | ends; [`BatchCursor::end`] says where and why |
//! | `Error`    | readers, compaction                      | yields [`Error::Corrupt`] (file, position, expected offset), then ends |
//! | `Report`   | `tidelog dump` / `verify`                | yields damaged batches flagged and goes on while their length can be trusted |
//!
//! A zeroed header never passes as a batch: its length field (12 bytes) is smaller than a
//! header. Where the caller allows a zero tail (a sealed segment whose trim a power failure
//! lost, a pre-allocated active segment read offline) zeros where a batch should start end
//! the walk cleanly instead of as damage.

use std::borrow::Cow;
use std::path::Path;

use crate::format::{BatchHeader, BatchView, BATCH_HEADER_LEN};
use crate::{Error, Result};

/// What a walk does at a batch it cannot vouch for (bad length, structure, CRC, or a base
/// offset that does not continue the previous batch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnDamage {
    /// End the walk there: what was walked is the valid prefix ([`BatchCursor::position`],
    /// [`BatchCursor::expected`]) and [`BatchCursor::end`] says why it ended. Recovery cuts a
    /// torn tail there.
    Stop,
    /// Yield one [`Error::Corrupt`] naming the file, the position and the offset expected
    /// there, then end.
    Error,
    /// Yield a batch whose extent is readable even if its CRC or base offset is wrong
    /// ([`CursorBatch::crc_ok`], [`CursorBatch::expected`]) and go on after it; yield an
    /// [`Error::Corrupt`] and end where the next batch cannot be found (unreadable
    /// structure, a truncated batch, non-zero bytes after a zero tail).
    Report,
}

/// How much of each batch a walk checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Only the header: its length fits between a header and the end of the data. For walks
    /// that read headers alone (producer state, time bounds); the CRC is not computed.
    Header,
    /// The whole batch: structure and CRC ([`BatchView::parse`]).
    Crc,
}

/// Batches a walk passes over without yielding them, by header alone where it can: a
/// damaged batch the caller would not read anyway must not fail its read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// Yield every batch.
    Nothing,
    /// Pass batches that end at or before this offset: by their header when their base
    /// offset is the expected one, and a CRC-valid batch whose (unprotected) base offset
    /// alone is off by its CRC-protected record count.
    Before(u64),
    /// Pass batches, by their header, whose base offset is the expected one and whose
    /// records are all older than this timestamp.
    OlderThan(i64),
}

/// How a walk ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CursorEnd {
    /// At the end of the data.
    Clean,
    /// At zeros where a batch should start (allowed by [`BatchCursor::zero_tail`]).
    ZeroTail,
    /// At damage: the first batch the walk could not vouch for.
    Damaged {
        /// Where it starts.
        position: usize,
        /// What is wrong with it.
        reason: Cow<'static, str>,
    },
}

/// One batch a walk found.
#[derive(Clone, Copy, Debug)]
pub struct CursorBatch<'a> {
    /// Byte position in the data file.
    pub position: usize,
    /// The decoded header.
    pub header: BatchHeader,
    /// The offset the batch should start at: the header's base offset except in
    /// [`OnDamage::Report`] walks, which yield discontinuous batches too.
    pub expected: u64,
    /// The stored CRC matches the bytes (false only in [`OnDamage::Report`] walks; not
    /// computed, so true, in [`Check::Header`] walks).
    pub crc_ok: bool,
    bytes: &'a [u8],
    view: Option<BatchView<'a>>,
}

impl<'a> CursorBatch<'a> {
    /// The batch's bytes, header included.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The checked view of a [`Check::Crc`] or [`OnDamage::Report`] walk; in a
    /// [`Check::Header`] walk, the bytes parsed now without their CRC (`None` if their
    /// structure is bad).
    #[inline]
    pub fn view(&self) -> Option<BatchView<'a>> {
        self.view.or_else(|| BatchView::parse(self.bytes, false).ok())
    }
}

#[cfg(test)]
thread_local! {
    /// Batches whose CRC this thread's walks computed (for tests of what reads re-check).
    pub(crate) static CRC_CHECKS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// Batches this thread's walks passed by their header (for tests of where reads start).
    pub(crate) static HEADERS_PASSED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Walks the batches of a data file's bytes from a position (see the module documentation).
/// An iterator of `Result<CursorBatch>`; only [`OnDamage::Error`] and [`OnDamage::Report`]
/// walks ever yield an `Err`.
#[derive(Debug)]
pub struct BatchCursor<'a> {
    /// The data file's bytes from position 0 to the end of what may be walked.
    bytes: &'a [u8],
    /// The file, for errors.
    path: &'a Path,
    position: usize,
    expected: u64,
    check: Check,
    on_damage: OnDamage,
    pass: Pass,
    zero_tail: bool,
    /// A batch this thread checked before, by its position and header (see [`Self::trust`]).
    trusted: Option<(usize, BatchHeader)>,
    end: Option<CursorEnd>,
}

impl<'a> BatchCursor<'a> {
    /// A walk of `bytes` (a data file's bytes from position 0 to the end of the data) from
    /// `position`, where a batch with base offset `expected` must start.
    pub fn new(
        bytes: &'a [u8],
        path: &'a Path,
        position: usize,
        expected: u64,
        check: Check,
        on_damage: OnDamage,
    ) -> Self {
        BatchCursor {
            bytes,
            path,
            position,
            expected,
            check,
            on_damage,
            pass: Pass::Nothing,
            zero_tail: false,
            trusted: None,
            end: None,
        }
    }

    /// With `allowed`, zeros where a batch should start (the first header's worth, or all
    /// that is left if less) end the walk as [`CursorEnd::ZeroTail`], not as damage. A
    /// [`OnDamage::Report`] walk then reports non-zero bytes anywhere after them.
    #[must_use]
    pub fn zero_tail(mut self, allowed: bool) -> Self {
        self.zero_tail = allowed;
        self
    }

    /// Takes the batch at `position` whose header is `header`, byte for byte, as checked: a
    /// [`Check::Crc`] walk yields it without computing its CRC or walking its records again.
    /// For a reader continuing in a large batch it read part of, from the same mapping, a
    /// moment ago (its bytes cannot have changed since: published batches are immutable).
    #[must_use]
    pub fn trust(mut self, trusted: Option<(usize, BatchHeader)>) -> Self {
        self.trusted = trusted;
        self
    }

    /// Sets the batches to pass over from here on.
    #[inline]
    pub fn pass(&mut self, pass: Pass) {
        self.pass = pass;
    }

    /// Position of the next batch: after the walk, the end of the valid batches.
    #[inline]
    pub fn position(&self) -> usize {
        self.position
    }

    /// Base offset the next batch must have: after the walk, the offset after the valid
    /// batches.
    #[inline]
    pub fn expected(&self) -> u64 {
        self.expected
    }

    /// How the walk ended; `None` while it goes on.
    pub fn end(&self) -> Option<&CursorEnd> {
        self.end.as_ref()
    }

    /// The header at the cursor if its length lies between a header and the end of the data.
    #[inline]
    fn plausible_header(&self) -> Option<BatchHeader> {
        let rest = self.bytes.get(self.position..)?;
        BatchHeader::read(rest).filter(|h| h.total_len >= BATCH_HEADER_LEN && h.total_len <= rest.len())
    }

    /// True when the bytes at the cursor are zeros: a header's worth, or all that is left.
    fn at_zeros(&self) -> bool {
        self.bytes[self.position.min(self.bytes.len())..].iter().take(BATCH_HEADER_LEN).all(|&b| b == 0)
    }

    /// Whether `pass` lets the walk step over the batch `h` (header alone, base offset as
    /// expected).
    #[inline]
    fn passes(&self, h: &BatchHeader) -> bool {
        match self.pass {
            Pass::Nothing => false,
            Pass::Before(offset) => h.next_offset() <= offset,
            Pass::OlderThan(timestamp) => h.max_timestamp < timestamp,
        }
    }

    #[inline]
    fn step(&mut self, h: &BatchHeader, next: u64) {
        self.position += h.total_len;
        self.expected = next;
    }

    /// Ends the walk at damage at the cursor, as the policy says.
    #[cold]
    fn damage(&mut self, reason: Cow<'static, str>) -> Option<Result<CursorBatch<'a>>> {
        let position = self.position;
        let error = Error::Corrupt {
            path: self.path.to_owned(),
            position: position as u64,
            offset: self.expected,
            reason: reason.to_string(),
        };
        self.end = Some(CursorEnd::Damaged { position, reason });
        match self.on_damage {
            OnDamage::Stop => None,
            OnDamage::Error | OnDamage::Report => Some(Err(error)),
        }
    }

    /// At bytes that are no batch: a zero tail ends the walk cleanly (a report walk still
    /// checks what follows it), anything else is damage.
    #[cold]
    fn not_a_batch(&mut self, reason: &'static str) -> Option<Result<CursorBatch<'a>>> {
        if self.zero_tail && self.at_zeros() {
            self.end = Some(CursorEnd::ZeroTail);
            let rest = &self.bytes[self.position..];
            if self.on_damage == OnDamage::Report && rest.len() >= BATCH_HEADER_LEN {
                if let Some(at) = rest.iter().position(|&b| b != 0) {
                    self.position += at;
                    return self.damage("non-zero bytes after the last batch (torn tail)".into());
                }
            }
            return None;
        }
        if self.on_damage == OnDamage::Report {
            if self.bytes.len() - self.position < BATCH_HEADER_LEN {
                return self.damage("truncated batch at the end of the file".into());
            }
            return self.damage(format!("unreadable batch: {reason}").into());
        }
        self.damage(reason.into())
    }

    /// The next batch of an [`OnDamage::Report`] walk.
    fn next_reported(&mut self) -> Option<Result<CursorBatch<'a>>> {
        let rest = &self.bytes[self.position..];
        if rest.len() < BATCH_HEADER_LEN {
            return self.not_a_batch("no complete batch header before the end of the data");
        }
        let view = match BatchView::parse(rest, false) {
            Ok(view) => view,
            Err(reason) => return self.not_a_batch(reason),
        };
        let h = view.header;
        let crc_ok = self.check == Check::Header || BatchView::parse(rest, true).is_ok();
        let found = CursorBatch {
            position: self.position,
            header: h,
            expected: self.expected,
            crc_ok,
            bytes: view.bytes(),
            view: Some(view),
        };
        // Its length is trusted (the structure adds up to it), whatever its CRC and offset.
        self.step(&h, h.next_offset());
        Some(Ok(found))
    }
}

impl<'a> Iterator for BatchCursor<'a> {
    type Item = Result<CursorBatch<'a>>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.end.is_some() {
            return None;
        }
        if self.on_damage == OnDamage::Report {
            if self.position >= self.bytes.len() {
                self.end = Some(CursorEnd::Clean);
                return None;
            }
            return self.next_reported();
        }
        loop {
            if self.position >= self.bytes.len() {
                self.end = Some(CursorEnd::Clean);
                return None;
            }
            // Decoded here only when something needs it: a plain CRC walk (a reader's, every
            // batch) decodes each header once, in `BatchView::parse`.
            let header = (self.pass != Pass::Nothing || self.check == Check::Header)
                .then(|| self.plausible_header())
                .flatten();
            if let Some(h) = header.filter(|h| h.base_offset == self.expected && self.passes(h)) {
                #[cfg(test)]
                HEADERS_PASSED.set(HEADERS_PASSED.get() + 1);
                self.step(&h, h.next_offset());
                continue;
            }
            let (view, h) = match self.check {
                Check::Header => match header {
                    Some(h) => (None, h),
                    None if self.bytes.len() - self.position < BATCH_HEADER_LEN => {
                        return self.not_a_batch("no complete batch header before the end of the data")
                    }
                    None => return self.not_a_batch("batch length outside the data"),
                },
                Check::Crc => {
                    let rest = &self.bytes[self.position..];
                    if rest.len() < BATCH_HEADER_LEN {
                        return self.not_a_batch("no complete batch header before the end of the data");
                    }
                    let trusted = self.trusted.filter(|(at, h)| {
                        *at == self.position
                            && h.total_len <= rest.len()
                            && BatchHeader::read(rest).as_ref() == Some(h)
                    });
                    if trusted.is_some() {
                        // Its header is the one checked (so are its length and layout).
                        let view = BatchView::parse_validated(rest);
                        (Some(view), view.header)
                    } else {
                        #[cfg(test)]
                        CRC_CHECKS.set(CRC_CHECKS.get() + 1);
                        match BatchView::parse(rest, true) {
                            Ok(view) => (Some(view), view.header),
                            Err(reason) => return self.not_a_batch(reason),
                        }
                    }
                }
            };
            if h.base_offset != self.expected {
                // Only the (unprotected) base offset is off: a batch the caller merely passes
                // can still be passed by its CRC-protected record count; one it would read
                // cannot.
                let next = self.expected + u64::from(h.last_offset_delta) + 1;
                if matches!(self.pass, Pass::Before(offset) if view.is_some() && next <= offset) {
                    self.step(&h, next);
                    continue;
                }
                let reason = format!(
                    "batch claims offset {} where offset {} should start",
                    h.base_offset, self.expected
                );
                return self.damage(reason.into());
            }
            let found = CursorBatch {
                position: self.position,
                header: h,
                expected: self.expected,
                crc_ok: true,
                bytes: &self.bytes[self.position..self.position + h.total_len],
                view,
            };
            self.step(&h, h.next_offset());
            return Some(Ok(found));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::compression::compress_batch;
    use crate::format::{encode_batch, encoded_len, BatchMeta, Compression, Record};
    use proptest::prelude::*;

    const BASE: u64 = 100;
    const PER_BATCH: u64 = 3;

    fn path() -> &'static Path {
        Path::new("/store/t/0/00000000000000000100.log")
    }

    /// One batch of `PER_BATCH` keyed records at `base`.
    fn batch(base: u64) -> Vec<u8> {
        let values: Vec<Vec<u8>> =
            (0..PER_BATCH).map(|i| format!("value {base} {i}").repeat(4).into_bytes()).collect();
        let records: Vec<Record<'_>> = values
            .iter()
            .map(|v| Record {
                timestamp: 1_000 + base as i64,
                key: Some(b"k"),
                value: v,
                headers: &[],
                tombstone: false,
            })
            .collect();
        let mut out = vec![0u8; encoded_len(&records)];
        encode_batch(&mut out, BatchMeta::plain(base), &records);
        out
    }

    /// `n` batches in a row from `BASE`, and where each starts.
    fn chain(n: usize) -> (Vec<u8>, Vec<usize>) {
        let (mut bytes, mut starts) = (Vec::new(), Vec::new());
        for i in 0..n as u64 {
            starts.push(bytes.len());
            bytes.extend_from_slice(&batch(BASE + i * PER_BATCH));
        }
        (bytes, starts)
    }

    fn walk(
        bytes: &[u8],
        check: Check,
        on_damage: OnDamage,
        zero_tail: bool,
    ) -> (Vec<Result<CursorBatch<'_>>>, BatchCursor<'_>) {
        let mut cursor = BatchCursor::new(bytes, path(), 0, BASE, check, on_damage).zero_tail(zero_tail);
        let items = cursor.by_ref().collect();
        (items, cursor)
    }

    fn positions(items: &[Result<CursorBatch<'_>>]) -> Vec<usize> {
        items.iter().filter_map(|i| i.as_ref().ok()).map(|b| b.position).collect()
    }

    fn corrupt(item: &Result<CursorBatch<'_>>) -> (u64, u64, String) {
        match item {
            Err(Error::Corrupt { path: p, position, offset, reason }) => {
                assert_eq!(p, path(), "the error names the file");
                (*position, *offset, reason.clone())
            }
            other => panic!("expected a corruption error, got {other:?}"),
        }
    }

    fn damaged_at(cursor: &BatchCursor<'_>) -> (usize, String) {
        match cursor.end() {
            Some(CursorEnd::Damaged { position, reason }) => (*position, reason.to_string()),
            other => panic!("expected damage, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_chain_is_walked_whole_by_every_policy() {
        let (bytes, starts) = chain(5);
        for on_damage in [OnDamage::Stop, OnDamage::Error, OnDamage::Report] {
            for check in [Check::Header, Check::Crc] {
                let (items, cursor) = walk(&bytes, check, on_damage, false);
                assert_eq!(positions(&items), starts, "{on_damage:?} {check:?}");
                assert!(items
                    .iter()
                    .all(|i| i.as_ref().is_ok_and(|b| b.crc_ok && b.header.base_offset == b.expected)));
                assert_eq!(cursor.end(), Some(&CursorEnd::Clean));
                assert_eq!((cursor.position(), cursor.expected()), (bytes.len(), BASE + 5 * PER_BATCH));
                let views = items.iter().filter_map(|i| i.as_ref().ok()?.view()).count();
                assert_eq!(views, 5, "every batch has a view");
            }
        }
    }

    #[test]
    fn a_torn_tail_ends_the_valid_prefix() {
        let (mut bytes, starts) = chain(4);
        let torn = bytes.len();
        bytes.extend_from_slice(&batch(BASE + 4 * PER_BATCH)[..100]);
        let (items, cursor) = walk(&bytes, Check::Crc, OnDamage::Stop, false);
        assert_eq!(positions(&items), starts);
        assert!(items.iter().all(Result::is_ok), "Stop never yields an error");
        assert_eq!((cursor.position(), cursor.expected()), (torn, BASE + 4 * PER_BATCH));
        assert_eq!(damaged_at(&cursor), (torn, "batch extends past the end of the data".into()));

        let (items, _) = walk(&bytes, Check::Crc, OnDamage::Error, false);
        assert_eq!(items.len(), 5);
        assert_eq!(
            corrupt(&items[4]),
            (torn as u64, BASE + 12, "batch extends past the end of the data".into())
        );

        let (items, _) = walk(&bytes, Check::Crc, OnDamage::Report, true);
        assert_eq!(positions(&items), starts);
        assert_eq!(corrupt(&items[4]).2, "unreadable batch: batch extends past the end of the data");
        // Fewer bytes than a header left: a truncated batch, named as such.
        bytes.truncate(torn + 20);
        let (items, cursor) = walk(&bytes, Check::Crc, OnDamage::Report, true);
        assert_eq!(corrupt(&items[4]).2, "truncated batch at the end of the file");
        let (_, cursor_stop) = walk(&bytes, Check::Header, OnDamage::Stop, false);
        assert_eq!(damaged_at(&cursor_stop).0, torn);
        assert_eq!(damaged_at(&cursor).0, torn);
    }

    #[test]
    fn a_bad_crc_in_the_middle_stops_errors_or_is_reported() {
        let (mut bytes, starts) = chain(5);
        bytes[starts[2] + 70] ^= 0x10;
        let (items, cursor) = walk(&bytes, Check::Crc, OnDamage::Stop, false);
        assert_eq!(positions(&items), starts[..2]);
        assert_eq!(damaged_at(&cursor), (starts[2], "CRC32C mismatch".into()));
        assert_eq!(cursor.expected(), BASE + 2 * PER_BATCH);

        let (items, cursor) = walk(&bytes, Check::Crc, OnDamage::Error, false);
        assert_eq!(items.len(), 3);
        assert_eq!(corrupt(&items[2]), (starts[2] as u64, BASE + 6, "CRC32C mismatch".into()));
        assert!(cursor.end().is_some());

        // Verify goes on past it (its length is sound) and flags it.
        let (items, cursor) = walk(&bytes, Check::Crc, OnDamage::Report, true);
        assert_eq!(positions(&items), starts);
        let flags: Vec<bool> = items.iter().map(|i| i.as_ref().unwrap().crc_ok).collect();
        assert_eq!(flags, [true, true, false, true, true]);
        assert_eq!(cursor.end(), Some(&CursorEnd::Clean));

        // A header walk does not compute CRCs.
        let (items, _) = walk(&bytes, Check::Header, OnDamage::Stop, false);
        assert_eq!(positions(&items), starts);
    }

    #[test]
    fn a_zeroed_header_never_passes_as_a_batch() {
        let (mut bytes, starts) = chain(2);
        let zeros = bytes.len();
        bytes.extend_from_slice(&[0u8; 64]);
        bytes.extend_from_slice(&batch(BASE + 2 * PER_BATCH));
        for check in [Check::Header, Check::Crc] {
            let (items, cursor) = walk(&bytes, check, OnDamage::Stop, false);
            assert_eq!(positions(&items), starts, "{check:?}");
            assert_eq!(damaged_at(&cursor).0, zeros);
            let (items, _) = walk(&bytes, check, OnDamage::Error, false);
            assert_eq!(corrupt(&items[2]).0, zeros as u64);
            // Where a zero tail is allowed, the zeros end the walk, cleanly...
            let (items, cursor) = walk(&bytes, check, OnDamage::Error, true);
            assert_eq!(positions(&items), starts);
            assert_eq!(items.len(), 2);
            assert_eq!(cursor.end(), Some(&CursorEnd::ZeroTail));
        }
        // ... and verify reports the data after them.
        let (items, _) = walk(&bytes, Check::Crc, OnDamage::Report, true);
        assert_eq!(positions(&items), starts);
        assert_eq!(
            corrupt(&items[2]),
            ((zeros + 64) as u64, BASE + 6, "non-zero bytes after the last batch (torn tail)".into())
        );
        // A pre-allocated tail of zeros after the batches is no damage at all.
        let (mut bytes, starts) = chain(2);
        bytes.resize(bytes.len() + 4096, 0);
        let (items, cursor) = walk(&bytes, Check::Crc, OnDamage::Report, true);
        assert_eq!(positions(&items), starts);
        assert_eq!(items.len(), 2);
        assert_eq!(cursor.end(), Some(&CursorEnd::ZeroTail));
        // Nothing but zeros: no batch, whatever the policy.
        let zeros = vec![0u8; 256];
        for on_damage in [OnDamage::Stop, OnDamage::Error, OnDamage::Report] {
            for check in [Check::Header, Check::Crc] {
                let (items, _) = walk(&zeros, check, on_damage, false);
                assert!(positions(&items).is_empty());
            }
        }
    }

    #[test]
    fn a_length_past_the_end_of_the_data_is_damage() {
        let (mut bytes, starts) = chain(3);
        let last = starts[2];
        bytes[last + 8..last + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        let (items, cursor) = walk(&bytes, Check::Header, OnDamage::Stop, false);
        assert_eq!(positions(&items), starts[..2]);
        assert_eq!(damaged_at(&cursor), (last, "batch length outside the data".into()));
        let (items, _) = walk(&bytes, Check::Crc, OnDamage::Error, false);
        assert_eq!(
            corrupt(&items[2]),
            (last as u64, BASE + 6, "batch extends past the end of the data".into())
        );
        let (items, _) = walk(&bytes, Check::Crc, OnDamage::Report, true);
        assert_eq!(corrupt(&items[2]).2, "unreadable batch: batch extends past the end of the data");
        // A cursor over fewer bytes than the file holds stops at its end, not the file's.
        let (bytes, starts) = chain(3);
        let (items, cursor) = walk(&bytes[..starts[2] + 10], Check::Crc, OnDamage::Stop, false);
        assert_eq!(positions(&items), starts[..2]);
        assert_eq!(damaged_at(&cursor).0, starts[2]);
    }

    #[test]
    fn a_broken_offset_chain_is_damage_unless_only_passed() {
        let (mut bytes, starts) = chain(4);
        // The base offset is outside the CRC: the chain is what vouches for it.
        bytes[starts[1]..starts[1] + 8].copy_from_slice(&(BASE + 50).to_le_bytes());
        let (items, _) = walk(&bytes, Check::Crc, OnDamage::Error, false);
        assert_eq!(
            corrupt(&items[1]),
            (
                starts[1] as u64,
                BASE + 3,
                format!("batch claims offset {} where offset {} should start", BASE + 50, BASE + 3)
            )
        );
        let (items, cursor) = walk(&bytes, Check::Header, OnDamage::Stop, false);
        assert_eq!(positions(&items), starts[..1]);
        assert_eq!(damaged_at(&cursor).0, starts[1]);
        // Verify yields it with the offset it should have had, and goes on.
        let (items, _) = walk(&bytes, Check::Crc, OnDamage::Report, true);
        let b = items[1].as_ref().unwrap();
        assert_eq!((b.header.base_offset, b.expected), (BASE + 50, BASE + 3));
        assert_eq!(positions(&items), starts);
        // A reader looking for a later offset passes it by its CRC-protected record count.
        let mut cursor = BatchCursor::new(&bytes, path(), 0, BASE, Check::Crc, OnDamage::Error);
        cursor.pass(Pass::Before(BASE + 6));
        let items: Vec<_> = cursor.by_ref().collect();
        assert_eq!(positions(&items), starts[2..]);
    }

    #[test]
    fn passed_batches_are_not_checked_beyond_their_header() {
        let (mut bytes, starts) = chain(4);
        bytes[starts[0] + 70] ^= 1;
        let mut cursor = BatchCursor::new(&bytes, path(), 0, BASE, Check::Crc, OnDamage::Error);
        cursor.pass(Pass::Before(BASE + 3));
        let items: Vec<_> = cursor.by_ref().collect();
        assert_eq!(positions(&items), starts[1..]);
        // The damaged batch is reported as soon as it would be read.
        let mut cursor = BatchCursor::new(&bytes, path(), 0, BASE, Check::Crc, OnDamage::Error);
        cursor.pass(Pass::Before(BASE + 2));
        assert_eq!(corrupt(&cursor.next().unwrap()).0, 0);
        // By time: batches whose records are all older are passed.
        let mut cursor = BatchCursor::new(&bytes, path(), 0, BASE, Check::Crc, OnDamage::Error);
        cursor.pass(Pass::OlderThan(1_000 + BASE as i64 + 6));
        let items: Vec<_> = cursor.by_ref().collect();
        assert_eq!(positions(&items), starts[2..]);
    }

    #[test]
    fn a_compressed_batch_is_walked_and_its_crc_covers_the_compressed_bytes() {
        for codec in [Compression::Lz4, Compression::Zstd] {
            let plain = batch(BASE + PER_BATCH);
            let mut packed = Vec::new();
            let header =
                compress_batch(&plain[..BATCH_HEADER_LEN], &plain[BATCH_HEADER_LEN..], codec, &mut packed);
            let mut bytes = batch(BASE);
            let at = bytes.len();
            bytes.extend_from_slice(&packed[..header.total_len]);
            bytes.extend_from_slice(&batch(BASE + 2 * PER_BATCH));
            let (items, cursor) = walk(&bytes, Check::Crc, OnDamage::Error, false);
            assert_eq!(items.len(), 3);
            assert_eq!(cursor.end(), Some(&CursorEnd::Clean));
            let view = items[1].as_ref().unwrap().view().unwrap();
            assert_eq!(view.codec(), codec);
            let image = view.decompress().unwrap();
            assert_eq!(image[BATCH_HEADER_LEN..], plain[BATCH_HEADER_LEN..]);
            // A flipped bit in the compressed body fails the CRC before anything decompresses.
            bytes[at + BATCH_HEADER_LEN + 6] ^= 4;
            let (items, _) = walk(&bytes, Check::Crc, OnDamage::Error, false);
            assert_eq!(corrupt(&items[1]), (at as u64, BASE + 3, "CRC32C mismatch".into()));
            let (items, _) = walk(&bytes, Check::Crc, OnDamage::Report, true);
            assert!(!items[1].as_ref().unwrap().crc_ok);
            assert_eq!(positions(&items).len(), 3);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever the damage, no walk panics; batches come out in order from a valid
        /// prefix; `Stop` never yields an error and `Error` yields at most one, last; a CRC
        /// walk yields only batches whose CRC holds.
        #[test]
        fn any_damage_is_handled_never_a_panic(
            n in 1usize..6,
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            cut in any::<prop::sample::Index>(),
            zero_tail in any::<bool>(),
        ) {
            let (mut bytes, _) = chain(n);
            for (at, xor) in flips {
                let i = at.index(bytes.len());
                bytes[i] ^= xor;
            }
            let len = cut.index(bytes.len() + 1);
            let bytes = &bytes[..len];
            for on_damage in [OnDamage::Stop, OnDamage::Error, OnDamage::Report] {
                for check in [Check::Header, Check::Crc] {
                    let (items, cursor) = walk(bytes, check, on_damage, zero_tail);
                    let errors = items.iter().filter(|i| i.is_err()).count();
                    match on_damage {
                        OnDamage::Stop => prop_assert_eq!(errors, 0),
                        _ => {
                            prop_assert!(errors <= 1);
                            prop_assert!(items.iter().take(items.len().saturating_sub(1)).all(Result::is_ok));
                        }
                    }
                    let mut next = 0;
                    for b in items.iter().filter_map(|i| i.as_ref().ok()) {
                        prop_assert!(b.position >= next);
                        prop_assert!(b.position + b.header.total_len <= bytes.len());
                        prop_assert_eq!(b.bytes().len(), b.header.total_len);
                        if check == Check::Crc && on_damage != OnDamage::Report {
                            prop_assert!(BatchView::parse(b.bytes(), true).is_ok());
                            prop_assert_eq!(b.header.base_offset, b.expected);
                        }
                        next = b.position + b.header.total_len;
                    }
                    prop_assert!(cursor.end().is_some());
                    prop_assert!(cursor.position() <= bytes.len().max(next));
                }
            }
        }
    }
}
