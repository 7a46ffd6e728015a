//! Content addresses (`docs/format.md` §6.3): the 32-byte hash of a
//! ciphertext that names its blob at the relay and is signed in the record
//! metadata.
//!
//! Record metadata versions 1 to 3 address a ciphertext by its SHA-256;
//! versions 4 and 5 by its BLAKE3 (unkeyed, 32 bytes), which costs about a
//! quarter of the cipher where SHA-256 costs about as much as the cipher
//! (decision 52). Both are collision resistant with 256-bit outputs, and no
//! input is known whose SHA-256 equals another input's BLAKE3, so one
//! 32-byte namespace holds both: a store that accepts bytes under an
//! address when either hash matches never holds two different blobs under
//! one address.

use sha2::{Digest, Sha256};

/// The hash a content address is computed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressKind {
    /// SHA-256 (FIPS 180-4): record metadata versions 1 to 3.
    Sha256,
    /// BLAKE3, unkeyed, 32-byte output: record metadata versions 4 and 5.
    Blake3,
}

impl AddressKind {
    /// The kind new records are written with.
    pub const CURRENT: AddressKind = AddressKind::Blake3;

    /// The address of `bytes`.
    pub fn digest(self, bytes: &[u8]) -> [u8; 32] {
        match self {
            AddressKind::Sha256 => Sha256::digest(bytes).into(),
            AddressKind::Blake3 => blake3::hash(bytes).into(),
        }
    }

    /// A streaming hasher of this kind.
    pub fn hasher(self) -> AddressHasher {
        match self {
            AddressKind::Sha256 => AddressHasher::Sha256(Sha256::new()),
            AddressKind::Blake3 => AddressHasher::Blake3(Box::new(blake3::Hasher::new())),
        }
    }

    /// The hash's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            AddressKind::Sha256 => "SHA-256",
            AddressKind::Blake3 => "BLAKE3",
        }
    }
}

/// A streaming content-address hasher of one [`AddressKind`].
#[derive(Clone)]
pub enum AddressHasher {
    /// SHA-256.
    Sha256(Sha256),
    /// BLAKE3 (boxed: its state is about 1.9 KiB).
    Blake3(Box<blake3::Hasher>),
}

impl AddressHasher {
    /// Adds `data`.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            AddressHasher::Sha256(h) => h.update(data),
            AddressHasher::Blake3(h) => {
                h.update(data);
            }
        }
    }

    /// The address of everything added.
    pub fn finalize(self) -> [u8; 32] {
        match self {
            AddressHasher::Sha256(h) => h.finalize().into(),
            AddressHasher::Blake3(h) => h.finalize().into(),
        }
    }
}

impl std::fmt::Debug for AddressHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AddressHasher::Sha256(_) => "AddressHasher(SHA-256)",
            AddressHasher::Blake3(_) => "AddressHasher(BLAKE3)",
        })
    }
}

/// Hashes a stream under both kinds at once, for a store that does not
/// know which kind names the bytes it receives (the relay: a blob arrives
/// before the log entry whose metadata says).
#[derive(Clone, Debug)]
pub struct EitherHasher {
    sha256: AddressHasher,
    blake3: AddressHasher,
}

impl Default for EitherHasher {
    fn default() -> Self {
        Self {
            sha256: AddressKind::Sha256.hasher(),
            blake3: AddressKind::Blake3.hasher(),
        }
    }
}

impl EitherHasher {
    /// Adds `data` to both hashes.
    pub fn update(&mut self, data: &[u8]) {
        self.sha256.update(data);
        self.blake3.update(data);
    }

    /// The kind under which everything added hashes to `address`, if any
    /// (compared in constant time).
    pub fn matches(self, address: &[u8; 32]) -> Option<AddressKind> {
        let sha = crate::primitives::ct_eq(&self.sha256.finalize(), address);
        let b3 = crate::primitives::ct_eq(&self.blake3.finalize(), address);
        if sha {
            Some(AddressKind::Sha256)
        } else if b3 {
            Some(AddressKind::Blake3)
        } else {
            None
        }
    }
}

/// The kind under which `bytes` hash to `address`, if any: BLAKE3 first
/// (the kind clients write), SHA-256 only when BLAKE3 does not match.
pub fn address_matches(address: &[u8; 32], bytes: &[u8]) -> Option<AddressKind> {
    [AddressKind::Blake3, AddressKind::Sha256]
        .into_iter()
        .find(|kind| kind.digest(bytes) == *address)
}

/// BLAKE3's chunk length: the tree's leaves.
const B3_CHUNK: u64 = blake3::CHUNK_LEN as u64;
/// Version byte of [`ResumableBlake3::to_bytes`].
const RESUMABLE_VERSION: u8 = 1;
/// Deepest subtree stack a 2^64-byte input can need.
const MAX_STACK: usize = 54;

/// A BLAKE3 hash that can be saved between the pieces of a long upload and
/// continued by another process: the relay's multipart uploads to object
/// storage keep it in the database with the upload's other state.
///
/// It keeps BLAKE3's own tree state (§2.1 of the BLAKE3 paper): the
/// chaining values of the complete subtrees seen so far, each a power of
/// two of 1 KiB chunks at an offset aligned to its size, and the last chunk
/// (1 to 1,024 bytes), held back because only the end of the input says
/// whether it is the root. The chaining values come from the `blake3`
/// crate's `hazmat` functions, which exist for exactly this; the result is
/// checked against `blake3::hash` over many splits in the tests.
#[derive(Clone, PartialEq, Eq)]
pub struct ResumableBlake3 {
    /// Bytes the stack covers (a multiple of [`B3_CHUNK`]).
    covered: u64,
    /// Complete subtrees, largest first: (chaining value, bytes).
    stack: Vec<([u8; 32], u64)>,
    /// The bytes after `covered`: empty only while nothing was added.
    tail: Vec<u8>,
}

impl Default for ResumableBlake3 {
    fn default() -> Self {
        Self {
            covered: 0,
            stack: Vec::new(),
            tail: Vec::with_capacity(blake3::CHUNK_LEN),
        }
    }
}

impl std::fmt::Debug for ResumableBlake3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResumableBlake3")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

fn subtree_cv(offset: u64, bytes: &[u8]) -> [u8; 32] {
    use blake3::hazmat::HasherExt;
    let mut h = blake3::Hasher::new();
    h.set_input_offset(offset);
    h.update(bytes);
    h.finalize_non_root()
}

impl ResumableBlake3 {
    /// Bytes added so far.
    pub fn len(&self) -> u64 {
        self.covered + self.tail.len() as u64
    }

    /// Whether nothing was added yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pushes the complete subtree of `size` bytes that starts at
    /// `covered`, merging it with its left neighbours of the same size
    /// (they are followed by more input, so their parents are not the
    /// root).
    fn push(&mut self, mut cv: [u8; 32], mut size: u64) {
        use blake3::hazmat::{merge_subtrees_non_root, Mode};
        let mut offset = self.covered;
        self.covered += size;
        while let Some(&(left, left_size)) = self.stack.last() {
            if left_size != size || (offset - size) % (2 * size) != 0 {
                break;
            }
            self.stack.pop();
            cv = merge_subtrees_non_root(&left, &cv, Mode::Hash);
            offset -= size;
            size *= 2;
        }
        self.stack.push((cv, size));
    }

    /// Adds `data`.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.tail.len() == blake3::CHUNK_LEN {
                // More input follows: the held chunk is not the last.
                let cv = subtree_cv(self.covered, &self.tail);
                self.tail.clear();
                self.push(cv, B3_CHUNK);
            }
            let left = data.len() as u64;
            if self.tail.is_empty() && left > B3_CHUNK {
                // The largest aligned subtree that leaves at least one byte
                // to hold back, hashed in one call (SIMD across its chunks).
                let mut size = B3_CHUNK;
                while size * 2 < left && self.covered % (size * 2) == 0 {
                    size *= 2;
                }
                let (now, rest) = data.split_at(usize::try_from(size).unwrap_or(data.len()));
                let cv = subtree_cv(self.covered, now);
                self.push(cv, size);
                data = rest;
                continue;
            }
            let take = (blake3::CHUNK_LEN - self.tail.len()).min(data.len());
            let (now, rest) = data.split_at(take);
            self.tail.extend_from_slice(now);
            data = rest;
        }
    }

    /// The BLAKE3 hash of everything added (the same as `blake3::hash`).
    pub fn finalize(&self) -> [u8; 32] {
        use blake3::hazmat::{merge_subtrees_non_root, merge_subtrees_root, Mode};
        let Some(((root_left, _), rest)) = self.stack.split_first() else {
            return blake3::hash(&self.tail).into();
        };
        let mut cv = subtree_cv(self.covered, &self.tail);
        for (left, _) in rest.iter().rev() {
            cv = merge_subtrees_non_root(left, &cv, Mode::Hash);
        }
        merge_subtrees_root(root_left, &cv, Mode::Hash).into()
    }

    /// The state as bytes: a version byte, the bytes covered (u64), the
    /// number of subtrees (u8), each subtree's chaining value and size
    /// (u64), then the held-back bytes. At most about 3.2 KiB (2 KiB for a
    /// 16 GiB blob). Not secret: the relay hashes ciphertext.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(10 + self.stack.len() * 40 + self.tail.len());
        out.push(RESUMABLE_VERSION);
        out.extend_from_slice(&self.covered.to_be_bytes());
        out.push(u8::try_from(self.stack.len()).unwrap_or(u8::MAX));
        for (cv, size) in &self.stack {
            out.extend_from_slice(cv);
            out.extend_from_slice(&size.to_be_bytes());
        }
        out.extend_from_slice(&self.tail);
        out
    }

    /// Parses [`ResumableBlake3::to_bytes`], refusing any shape of state
    /// the hasher could not have reached (truncated, sizes that do not add
    /// up, subtrees out of order). Chaining values cannot be checked: the
    /// store that keeps the state must be trusted with it (the relay's
    /// database, which could as well mark an upload complete), and clients
    /// check every ciphertext against its signed address anyway.
    pub fn from_bytes(bytes: &[u8]) -> crate::Result<Self> {
        let bad = |reason| crate::Error::Malformed {
            what: "saved BLAKE3 state",
            reason,
        };
        let (version, rest) = bytes.split_first().ok_or(bad("empty"))?;
        if *version != RESUMABLE_VERSION {
            return Err(crate::Error::UnsupportedVersion {
                what: "saved BLAKE3 state",
                version: *version,
            });
        }
        let (covered, rest) = rest.split_first_chunk::<8>().ok_or(bad("truncated"))?;
        let covered = u64::from_be_bytes(*covered);
        let (count, mut rest) = rest.split_first().ok_or(bad("truncated"))?;
        let count = usize::from(*count);
        if count > MAX_STACK {
            return Err(bad("too many subtrees"));
        }
        let mut stack = Vec::with_capacity(count);
        let mut sum: u64 = 0;
        for _ in 0..count {
            let (cv, after) = rest.split_first_chunk::<32>().ok_or(bad("truncated"))?;
            let (size, after) = after.split_first_chunk::<8>().ok_or(bad("truncated"))?;
            let size = u64::from_be_bytes(*size);
            let decreasing = stack.last().is_none_or(|(_, last)| size < *last);
            if !size.is_power_of_two() || size < B3_CHUNK || !decreasing || sum % size != 0 {
                return Err(bad("a subtree of an impossible size"));
            }
            sum = sum.checked_add(size).ok_or(bad("sizes overflow"))?;
            stack.push((*cv, size));
            rest = after;
        }
        let tail = rest;
        if sum != covered || tail.len() > blake3::CHUNK_LEN || (covered > 0 && tail.is_empty()) {
            return Err(bad("lengths do not agree"));
        }
        let mut kept = Vec::with_capacity(blake3::CHUNK_LEN);
        kept.extend_from_slice(tail);
        Ok(Self {
            covered,
            stack,
            tail: kept,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn input(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn resumable_blake3_is_blake3_at_every_split() {
        let lens = [
            0, 1, 1023, 1024, 1025, 2048, 2049, 3072, 4096, 5000, 8192, 65_536, 65_537, 200_000,
        ];
        for len in lens {
            let data = input(len);
            let want: [u8; 32] = blake3::hash(&data).into();
            // Whole, in pieces of many sizes, and saved and restored
            // between every piece.
            for piece in [1usize, 7, 1000, 1024, 1025, 4096, 65_536, 100_000] {
                let mut h = ResumableBlake3::default();
                let mut saved = ResumableBlake3::default();
                for part in data.chunks(piece) {
                    h.update(part);
                    saved = ResumableBlake3::from_bytes(&saved.to_bytes()).unwrap();
                    saved.update(part);
                }
                assert_eq!(h.finalize(), want, "len {len}, pieces of {piece}");
                assert_eq!(
                    saved.finalize(),
                    want,
                    "len {len}, restored, pieces of {piece}"
                );
                assert_eq!(h.len(), len as u64);
            }
        }
    }

    #[test]
    fn a_four_mib_upload_in_uneven_chunks_hashes_as_blake3() {
        let data = input(4 * 1024 * 1024 + 12_345);
        let want: [u8; 32] = blake3::hash(&data).into();
        let mut h = ResumableBlake3::default();
        let mut at = 0;
        for part in [1_000_000usize, 3_000_000, 206_649] {
            h = ResumableBlake3::from_bytes(&h.to_bytes()).unwrap();
            h.update(&data[at..at + part]);
            at += part;
        }
        assert_eq!(h.len(), data.len() as u64);
        assert_eq!(h.finalize(), want);
    }

    #[test]
    fn an_impossible_saved_state_is_refused() {
        let mut h = ResumableBlake3::default();
        h.update(&input(10_000));
        let good = h.to_bytes();
        assert!(ResumableBlake3::from_bytes(&good).is_ok());
        // Every cut through the header or the subtrees, the version, a
        // size changed, the tail dropped. (A shorter tail is a state the
        // hasher passes through, so it parses; its hash differs.)
        let covered = u64::from_be_bytes(good[1..9].try_into().unwrap()) as usize;
        let stack_end = good.len() - (10_000 - covered);
        for cut in 0..=stack_end {
            assert!(
                ResumableBlake3::from_bytes(&good[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut v = good.clone();
        v[0] = 2;
        assert!(ResumableBlake3::from_bytes(&v).is_err());
        let mut size = good.clone();
        size[10 + 32 + 7] ^= 1;
        assert!(ResumableBlake3::from_bytes(&size).is_err());
        let mut count = good.clone();
        count[9] = 60;
        assert!(ResumableBlake3::from_bytes(&count).is_err());
    }

    #[test]
    fn either_hasher_names_the_kind_that_matches() {
        let data = input(70_000);
        for kind in [AddressKind::Sha256, AddressKind::Blake3] {
            let address = kind.digest(&data);
            assert_eq!(address_matches(&address, &data), Some(kind));
            let mut h = kind.hasher();
            for part in data.chunks(999) {
                h.update(part);
            }
            assert_eq!(h.finalize(), address);
        }
        assert_eq!(address_matches(&[0; 32], &data), None);
    }
}
