//! The canonical binary encoding shared by every format we define
//! (`docs/format.md` §1).
//!
//! Integers are big-endian and fixed-width; variable-length byte strings
//! carry a `u32` length prefix; text carries a `u16` length prefix and must be
//! valid UTF-8. There is exactly one encoding of every value, so the bytes we
//! sign, hash or use as AEAD associated data are a function of the value.
//! [`Reader`] never slices before it has checked the length, and
//! [`Reader::finish`] rejects trailing bytes.

use crate::error::Error;

/// Serializer for the canonical encoding.
#[derive(Default)]
pub(crate) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Starts a buffer with a domain-separation context string (not
    /// length-prefixed: contexts are fixed constants ending in a NUL byte).
    pub(crate) fn with_context(context: &[u8]) -> Self {
        let mut w = Self::new();
        w.buf.extend_from_slice(context);
        w
    }

    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn fixed(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }

    /// A `u32` length prefix and the bytes.
    pub(crate) fn bytes(&mut self, v: &[u8]) -> &mut Self {
        // Every caller bounds its inputs far below 4 GiB; saturating keeps
        // this panic-free and a reader would reject the mismatch.
        let len = u32::try_from(v.len()).unwrap_or(u32::MAX);
        self.u32(len);
        self.buf.extend_from_slice(v);
        self
    }

    /// A `u16` length prefix and the UTF-8 bytes.
    pub(crate) fn text(&mut self, v: &str) -> &mut Self {
        let len = u16::try_from(v.len()).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(v.as_bytes());
        self
    }

    /// An optional value: `0x00`, or `0x01` followed by the value.
    pub(crate) fn option<T>(&mut self, v: Option<T>, f: impl FnOnce(&mut Self, T)) -> &mut Self {
        match v {
            None => {
                self.u8(0);
            }
            Some(v) => {
                self.u8(1);
                f(self, v);
            }
        }
        self
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    pub(crate) fn into_vec(self) -> Vec<u8> {
        self.buf
    }
}

/// Strict parser for the canonical encoding. Every read checks the
/// remaining length first and reports which object was malformed.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// `what` names the object being parsed, for error messages.
    pub(crate) fn new(input: &'a [u8], what: &'static str) -> Self {
        Self { rest: input, what }
    }

    pub(crate) fn malformed(&self, reason: &'static str) -> Error {
        Error::Malformed {
            what: self.what,
            reason,
        }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.rest.len() < n {
            return Err(self.malformed("truncated"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, Error> {
        Ok(u8::from_be_bytes(self.array()?))
    }

    pub(crate) fn u16(&mut self) -> Result<u16, Error> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, Error> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A `u32`-length-prefixed byte string of at most `max` bytes.
    pub(crate) fn bytes(&mut self, max: usize) -> Result<&'a [u8], Error> {
        let len = usize::try_from(self.u32()?).map_err(|_| self.malformed("length overflow"))?;
        if len > max {
            return Err(self.malformed("field too long"));
        }
        self.take(len)
    }

    /// A `u16`-length-prefixed UTF-8 string of at most `max` bytes.
    pub(crate) fn text(&mut self, max: usize) -> Result<&'a str, Error> {
        let len = usize::from(self.u16()?);
        if len > max {
            return Err(self.malformed("text too long"));
        }
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map_err(|_| self.malformed("text is not UTF-8"))
    }

    /// An optional value; any presence byte other than 0 or 1 is rejected.
    pub(crate) fn option<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, Error>,
    ) -> Result<Option<T>, Error> {
        match self.u8()? {
            0 => Ok(None),
            1 => f(self).map(Some),
            _ => Err(self.malformed("invalid option tag")),
        }
    }

    /// The version byte every format starts with; only `expected` is accepted.
    pub(crate) fn version(&mut self, expected: u8) -> Result<(), Error> {
        let v = self.u8()?;
        if v == expected {
            Ok(())
        } else {
            Err(Error::UnsupportedVersion {
                what: self.what,
                version: v,
            })
        }
    }

    /// The number of unread bytes.
    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Ends parsing: trailing bytes make the whole object malformed.
    pub(crate) fn finish(self) -> Result<(), Error> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(self.malformed("trailing bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_strictness() {
        let mut w = Writer::new();
        w.u8(1)
            .u32(7)
            .u64(9)
            .text("héllo")
            .bytes(b"abc")
            .option(Some(5u32), |w, v| {
                w.u32(v);
            });
        let bytes = w.into_vec();
        let mut r = Reader::new(&bytes, "test");
        assert_eq!(r.u8().unwrap(), 1);
        assert_eq!(r.u32().unwrap(), 7);
        assert_eq!(r.u64().unwrap(), 9);
        assert_eq!(r.text(100).unwrap(), "héllo");
        assert_eq!(r.bytes(100).unwrap(), b"abc");
        assert_eq!(r.option(|r| r.u32()).unwrap(), Some(5));
        r.finish().unwrap();

        let mut with_trailing = bytes.clone();
        with_trailing.push(0);
        let mut r = Reader::new(&with_trailing, "test");
        r.take(bytes.len()).unwrap();
        assert!(matches!(
            r.finish(),
            Err(Error::Malformed {
                reason: "trailing bytes",
                ..
            })
        ));

        let mut r = Reader::new(&[0, 0, 0, 9, 1], "test");
        assert!(matches!(
            r.bytes(100),
            Err(Error::Malformed {
                reason: "truncated",
                ..
            })
        ));
        let mut r = Reader::new(&[0, 0, 0, 200], "test");
        assert!(matches!(
            r.bytes(100),
            Err(Error::Malformed {
                reason: "field too long",
                ..
            })
        ));
        let mut r = Reader::new(&[2], "test");
        assert!(r.option(|r| r.u8()).is_err());
        let mut r = Reader::new(&[0, 2, 0xff, 0xfe], "test");
        assert!(r.text(10).is_err());
        let mut r = Reader::new(&[9], "test");
        assert!(matches!(
            r.version(1),
            Err(Error::UnsupportedVersion { version: 9, .. })
        ));
    }
}
