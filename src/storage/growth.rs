//! Extending an archived copy by what its log grew, instead of storing the whole
//! log again.
//!
//! A copy that may be extended carries a [`Growth`] record (kept in the index
//! beside it): the sha256 *states* after its last byte, of the log and of the
//! stored bytes, and the sha256 of the log's last [`OVERLAP`] bytes. The fetch
//! layer asks the source for `bytes=<size − OVERLAP>-`; the first `OVERLAP`
//! bytes of the answer must hash to the recorded tail (otherwise the log was
//! rewritten, not appended to, and is downloaded whole). The new copy is then
//! the old stored bytes plus the delta, and its size and sha256 of the whole
//! log are exact: the hash states continue over the delta, so they describe
//! every byte written to the archive, without reading the old bytes back.
//!
//! This module owns the record, the running tail and the hash state helpers;
//! the backends own how the old bytes get into the new object (`local.rs`:
//! copied inside the kernel; `s3`: streamed from the old object, see
//! [`super::Storage::extend`]).

use super::{ArchiveKey, Compression};
use serde::{Deserialize, Serialize};
use sha2::digest::common::hazmat::SerializableState;
use sha2::{Digest, Sha256};

/// Bytes of the archived log's end that the source's answer must repeat before
/// its new bytes are appended: enough that a rewritten log is practically never
/// taken for a grown one (64 KiB of training-log lines carry timestamps and
/// step numbers), small beside any growth worth fetching.
pub const OVERLAP: u64 = 64 * 1024;

/// What extending a copy needs, recorded with the copy. Opaque outside storage:
/// the index keeps it as text ([`Growth::encode`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Growth {
    /// sha256 state after the whole log (serialised by `sha2`, hex).
    log_state: String,
    /// The same for the stored object, when it is not the log itself.
    stored_state: Option<String>,
    /// sha256 of the log's last `min(size, OVERLAP)` bytes, hex.
    tail_sha256: String,
}

impl Growth {
    pub(super) fn new(log: &Sha256, stored: Option<&Sha256>, tail: &Tail) -> Growth {
        Growth {
            log_state: state_hex(log),
            stored_state: stored.map(state_hex),
            tail_sha256: hex::encode(Sha256::digest(tail.bytes())),
        }
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("plain struct serialises")
    }

    /// `None` for text that is not a record of this version.
    pub fn decode(text: &str) -> Option<Growth> {
        serde_json::from_str(text).ok()
    }

    pub(super) fn log_hasher(&self) -> Option<Sha256> {
        hasher_from_hex(&self.log_state)
    }

    pub(super) fn stored_hasher(&self) -> Option<Sha256> {
        hasher_from_hex(self.stored_state.as_deref()?)
    }
}

/// An archived copy that a delta may extend: what the index says of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    /// The key it is stored under (with the compression suffix).
    pub key: ArchiveKey,
    /// Size of the log.
    pub size: u64,
    /// Size and sha256 of the stored object.
    pub stored_size: u64,
    pub stored_sha256: String,
    pub compression: Compression,
    pub growth: Growth,
}

impl Base {
    /// Where the ranged request starts: `OVERLAP` bytes before the copy's end.
    pub fn overlap_start(&self) -> u64 {
        self.size.saturating_sub(OVERLAP)
    }

    /// How many bytes of the answer must repeat the copy's tail.
    pub fn overlap_len(&self) -> u64 {
        self.size - self.overlap_start()
    }

    /// Whether `bytes` (the answer's first [`Base::overlap_len`] bytes) are
    /// the copy's tail.
    pub fn tail_matches(&self, bytes: &[u8]) -> bool {
        bytes.len() as u64 == self.overlap_len()
            && hex::encode(Sha256::digest(bytes)) == self.growth.tail_sha256
    }
}

/// The last [`OVERLAP`] bytes written, in a ring: a copy per chunk, never a shift.
#[derive(Default)]
pub(super) struct Tail {
    ring: Vec<u8>,
    /// Where the next byte goes once the ring is full.
    next: usize,
}

impl Tail {
    pub fn update(&mut self, mut bytes: &[u8]) {
        let cap = OVERLAP as usize;
        if bytes.len() >= cap {
            bytes = &bytes[bytes.len() - cap..];
            self.ring.clear();
            self.ring.extend_from_slice(bytes);
            self.next = 0;
            return;
        }
        if self.ring.len() < cap {
            let room = cap - self.ring.len();
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.ring.extend_from_slice(now);
            bytes = rest;
        }
        while !bytes.is_empty() {
            let n = (cap - self.next).min(bytes.len());
            self.ring[self.next..self.next + n].copy_from_slice(&bytes[..n]);
            self.next = (self.next + n) % cap;
            bytes = &bytes[n..];
        }
    }

    /// The tail in order.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.ring.len());
        out.extend_from_slice(&self.ring[self.next..]);
        out.extend_from_slice(&self.ring[..self.next]);
        out
    }
}

fn state_hex(hasher: &Sha256) -> String {
    hex::encode(hasher.serialize().as_slice())
}

fn hasher_from_hex(text: &str) -> Option<Sha256> {
    let bytes = hex::decode(text).ok()?;
    let state = bytes.as_slice().try_into().ok()?;
    Sha256::deserialize(state).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GUARD: a hash continued from a recorded state equals the hash of the
    /// whole, at every block alignment.
    #[test]
    fn continued_hash_equals_whole_hash() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        for split in [0, 1, 63, 64, 65, 1000, 4999, 5000] {
            let mut h = Sha256::new();
            h.update(&data[..split]);
            let mut resumed = hasher_from_hex(&state_hex(&h)).unwrap();
            resumed.update(&data[split..]);
            assert_eq!(resumed.finalize(), Sha256::digest(&data), "split {split}");
        }
        assert!(hasher_from_hex("00ff").is_none());
        assert!(hasher_from_hex("not hex").is_none());
    }

    /// GUARD: the ring keeps exactly the last OVERLAP bytes, in order.
    #[test]
    fn tail_keeps_the_last_bytes() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        for chunk in [1usize, 1000, 16 * 1024, 65_535, 65_536, 100_000] {
            let mut tail = Tail::default();
            let mut written = 0;
            for c in data.chunks(chunk) {
                tail.update(c);
                written += c.len();
                let want = &data[written.saturating_sub(OVERLAP as usize)..written];
                assert!(tail.bytes() == want, "chunk {chunk} at {written}");
            }
        }
    }

    #[test]
    fn growth_record_round_trips_and_checks_the_tail() {
        let mut log = Sha256::new();
        log.update(b"hello");
        let mut tail = Tail::default();
        tail.update(b"hello");
        let growth = Growth::new(&log, None, &tail);
        assert_eq!(Growth::decode(&growth.encode()), Some(growth.clone()));
        assert_eq!(Growth::decode("{}"), None);
        let base = Base {
            key: ArchiveKey::from_stored("j/t.log").unwrap(),
            size: 5,
            stored_size: 5,
            stored_sha256: String::new(),
            compression: Compression::None,
            growth,
        };
        assert_eq!((base.overlap_start(), base.overlap_len()), (0, 5));
        assert!(base.tail_matches(b"hello"));
        assert!(!base.tail_matches(b"hellO"));
        assert!(!base.tail_matches(b"hell"));
    }
}
