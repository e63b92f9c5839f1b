//! Encoding of a record's headers: an ordered list of (UTF-8 name, bytes value).
//!
//! | bytes | type | field                   |
//! |-------|------|-------------------------|
//! | 0..2  | u16  | header count            |
//! | then, per header:                        |
//! | 2     | u16  | name length             |
//! |       | utf8 | name                    |
//! |       | u32  | value length            |
//! |       | raw  | value                   |
//!
//! No headers are stored as zero bytes, not as a count of 0.

use crate::{Error, Result};

/// Encodes `headers`; an empty list encodes to nothing.
///
/// # Errors
/// [`Error::InvalidConfig`] when there are more than 65,535 headers, a name is longer than
/// 65,535 bytes or a value longer than 4 GiB.
pub fn encode<'a>(headers: impl Iterator<Item = (&'a str, &'a [u8])>) -> Result<Vec<u8>> {
    let mut encoder = Encoder::default();
    for (name, value) in headers {
        encoder.push(name, value)?;
    }
    encoder.finish()
}

/// Encodes headers one at a time, for callers whose names and values live only while
/// each is pushed (a Python dict's items).
#[derive(Default)]
pub struct Encoder {
    out: Vec<u8>,
    count: usize,
}

impl Encoder {
    /// Appends one header.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when the name is longer than 65,535 bytes or the value
    /// longer than 4 GiB.
    pub fn push(&mut self, name: &str, value: &[u8]) -> Result<()> {
        let name_len = u16::try_from(name.len())
            .map_err(|_| Error::InvalidConfig(format!("header name {name:?} is too long")))?;
        let value_len = u32::try_from(value.len())
            .map_err(|_| Error::InvalidConfig(format!("header {name:?} value is too long")))?;
        if self.out.is_empty() {
            self.out.reserve(64);
            self.out.extend_from_slice(&[0, 0]); // the count, written by finish
        }
        self.out.extend_from_slice(&name_len.to_le_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(&value_len.to_le_bytes());
        self.out.extend_from_slice(value);
        self.count += 1;
        Ok(())
    }

    /// The encoded headers (nothing for none).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when more than 65,535 headers were pushed.
    pub fn finish(mut self) -> Result<Vec<u8>> {
        let count = u16::try_from(self.count)
            .map_err(|_| Error::InvalidConfig("a record may carry at most 65535 headers".into()))?;
        if count > 0 {
            self.out[..2].copy_from_slice(&count.to_le_bytes());
        }
        Ok(self.out)
    }
}

/// Decodes headers written by [`encode`]. Returns `None` when the bytes are malformed; a
/// batch whose CRC matched can only hold malformed headers if it was written by a buggy or
/// hostile writer, and the caller reports that as corruption.
pub fn decode(mut bytes: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let count = u16::from_le_bytes(take(&mut bytes, 2)?.try_into().ok()?);
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let name_len = u16::from_le_bytes(take(&mut bytes, 2)?.try_into().ok()?) as usize;
        let name = std::str::from_utf8(take(&mut bytes, name_len)?).ok()?.to_owned();
        let value_len = u32::from_le_bytes(take(&mut bytes, 4)?.try_into().ok()?) as usize;
        out.push((name, take(&mut bytes, value_len)?.to_vec()));
    }
    bytes.is_empty().then_some(out)
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if bytes.len() < n {
        return None;
    }
    let (head, tail) = bytes.split_at(n);
    *bytes = tail;
    Some(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let hs = [("a", &b"1"[..]), ("trace-id", &b"\x00\xff"[..])];
        let enc = encode(hs.iter().copied()).unwrap();
        let dec = decode(&enc).unwrap();
        assert_eq!(dec, vec![("a".into(), b"1".to_vec()), ("trace-id".into(), vec![0, 255])]);
        assert!(encode(std::iter::empty()).unwrap().is_empty());
        assert_eq!(decode(&[]).unwrap(), vec![]);
    }

    #[test]
    fn malformed_is_none() {
        let enc = encode([("name", &b"value"[..])].into_iter()).unwrap();
        for cut in 1..enc.len() {
            assert!(decode(&enc[..cut]).is_none(), "cut at {cut}");
        }
        let mut extra = enc.clone();
        extra.push(0);
        assert!(decode(&extra).is_none());
    }
}
