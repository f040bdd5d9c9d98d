//! The FlashCopy control bitmap: one bit per track, set once the track's point-in-time data is
//! on the target (copied by copy-on-write or background copy, or written by the host).
//!
//! Memory is allocated lazily, in chunks of [`CHUNK_BITS`] bits, on the first bit set in a chunk:
//! establishing a relationship allocates only the chunk table, so it costs the same for 1 GiB
//! and 64 TiB. Bits are atomics so readers can test them under a shared track lock while the
//! track's writer (which holds it exclusively) sets them. Chunks that changed since the last
//! persist are remembered so the catalog writes only those.

use parking_lot::Mutex;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Bits per chunk: 4 KiB of bits, 2 GiB of data at the default 64 KiB track.
pub const CHUNK_BITS: u64 = 32768;
const CHUNK_WORDS: usize = (CHUNK_BITS / 64) as usize;
/// Bytes of one serialized chunk: format version, CRC32 of the words, then the words (LE).
pub const CHUNK_RECORD_BYTES: usize = 1 + 4 + CHUNK_WORDS * 8;
const CHUNK_FORMAT_VERSION: u8 = 1;

/// A lazily allocated bitmap of `len` bits.
#[derive(Debug)]
pub struct Bitmap {
    len: u64,
    chunks: Box<[OnceLock<Box<[AtomicU64]>>]>,
    set_count: AtomicU64,
    dirty_chunks: Mutex<BTreeSet<u64>>,
}

impl Bitmap {
    /// An all-clear bitmap; allocates only the chunk table.
    pub fn new(len: u64) -> Self {
        let chunks = len.div_ceil(CHUNK_BITS) as usize;
        Bitmap {
            len,
            chunks: (0..chunks).map(|_| OnceLock::new()).collect(),
            set_count: AtomicU64::new(0),
            dirty_chunks: Mutex::new(BTreeSet::new()),
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    fn chunk(&self, index: u64) -> Option<&[AtomicU64]> {
        self.chunks[index as usize].get().map(|c| &**c)
    }

    fn chunk_or_alloc(&self, index: u64) -> &[AtomicU64] {
        self.chunks[index as usize]
            .get_or_init(|| (0..CHUNK_WORDS).map(|_| AtomicU64::new(0)).collect())
    }

    pub fn get(&self, bit: u64) -> bool {
        debug_assert!(bit < self.len);
        let Some(chunk) = self.chunk(bit / CHUNK_BITS) else {
            return false;
        };
        let in_chunk = bit % CHUNK_BITS;
        chunk[(in_chunk / 64) as usize].load(Ordering::Acquire) & (1 << (in_chunk % 64)) != 0
    }

    /// Sets a bit; returns true if it was clear.
    pub fn set(&self, bit: u64) -> bool {
        debug_assert!(bit < self.len);
        let index = bit / CHUNK_BITS;
        let in_chunk = bit % CHUNK_BITS;
        let mask = 1u64 << (in_chunk % 64);
        let old =
            self.chunk_or_alloc(index)[(in_chunk / 64) as usize].fetch_or(mask, Ordering::AcqRel);
        let newly = old & mask == 0;
        if newly {
            self.set_count.fetch_add(1, Ordering::AcqRel);
            self.dirty_chunks.lock().insert(index);
        }
        newly
    }

    /// Clears a bit; returns true if it was set.
    pub fn clear(&self, bit: u64) -> bool {
        debug_assert!(bit < self.len);
        let index = bit / CHUNK_BITS;
        let Some(chunk) = self.chunk(index) else {
            return false;
        };
        let in_chunk = bit % CHUNK_BITS;
        let mask = 1u64 << (in_chunk % 64);
        let old = chunk[(in_chunk / 64) as usize].fetch_and(!mask, Ordering::AcqRel);
        let was = old & mask != 0;
        if was {
            self.set_count.fetch_sub(1, Ordering::AcqRel);
            self.dirty_chunks.lock().insert(index);
        }
        was
    }

    /// Bits set.
    pub fn count(&self) -> u64 {
        self.set_count.load(Ordering::Acquire)
    }

    /// Bits clear.
    pub fn clear_count(&self) -> u64 {
        self.len - self.count()
    }

    pub fn is_full(&self) -> bool {
        self.count() == self.len
    }

    /// The first clear bit at or after `from`, skipping whole unallocated or full words fast.
    pub fn next_clear(&self, from: u64) -> Option<u64> {
        let mut bit = from;
        while bit < self.len {
            let index = bit / CHUNK_BITS;
            let Some(chunk) = self.chunk(index) else {
                return Some(bit);
            };
            let mut in_chunk = bit % CHUNK_BITS;
            while in_chunk < CHUNK_BITS {
                let word = chunk[(in_chunk / 64) as usize].load(Ordering::Acquire);
                let shifted = !word >> (in_chunk % 64);
                if shifted != 0 {
                    let found = index * CHUNK_BITS + in_chunk + u64::from(shifted.trailing_zeros());
                    return (found < self.len).then_some(found);
                }
                in_chunk = (in_chunk / 64 + 1) * 64;
            }
            bit = (index + 1) * CHUNK_BITS;
        }
        None
    }

    /// Clears every bit that is set in `a` or `b`: a resync's new T0 re-copies those tracks.
    /// Costs one pass over the chunks allocated in `a` or `b`, not over the volume.
    pub fn clear_where(&self, a: &Bitmap, b: &Bitmap) {
        let mut removed = 0u64;
        let mut dirty = Vec::new();
        for index in 0..self.chunks.len() as u64 {
            let (ca, cb) = (a.chunk(index), b.chunk(index));
            if ca.is_none() && cb.is_none() {
                continue;
            }
            let Some(mine) = self.chunk(index) else {
                continue;
            };
            let mut changed = false;
            for w in 0..CHUNK_WORDS {
                let mask = ca.map_or(0, |c| c[w].load(Ordering::Acquire))
                    | cb.map_or(0, |c| c[w].load(Ordering::Acquire));
                if mask == 0 {
                    continue;
                }
                let old = mine[w].fetch_and(!mask, Ordering::AcqRel);
                let gone = u64::from((old & mask).count_ones());
                if gone > 0 {
                    removed += gone;
                    changed = true;
                }
            }
            if changed {
                dirty.push(index);
            }
        }
        self.set_count.fetch_sub(removed, Ordering::AcqRel);
        self.dirty_chunks.lock().extend(dirty);
    }

    /// Clears every bit (allocated chunks stay allocated and are marked dirty).
    pub fn clear_all(&self) {
        let mut dirty = Vec::new();
        for (index, chunk) in self.chunks.iter().enumerate() {
            if let Some(words) = chunk.get() {
                for w in words.iter() {
                    w.store(0, Ordering::Release);
                }
                dirty.push(index as u64);
            }
        }
        self.set_count.store(0, Ordering::Release);
        self.dirty_chunks.lock().extend(dirty);
    }

    /// Sets every bit (allocates every chunk).
    pub fn set_all(&self) {
        for index in 0..self.chunks.len() as u64 {
            let words = self.chunk_or_alloc(index);
            for (w, word) in words.iter().enumerate() {
                let first_bit = index * CHUNK_BITS + w as u64 * 64;
                let value = if first_bit >= self.len {
                    0
                } else if self.len - first_bit < 64 {
                    (1u64 << (self.len - first_bit)) - 1
                } else {
                    u64::MAX
                };
                word.store(value, Ordering::Release);
            }
            self.dirty_chunks.lock().insert(index);
        }
        self.set_count.store(self.len, Ordering::Release);
    }

    /// Sets every bit of `self` that is set in `a` or `b`.
    pub fn set_where(&self, a: &Bitmap, b: &Bitmap) {
        for index in 0..self.chunks.len() as u64 {
            let (ca, cb) = (a.chunk(index), b.chunk(index));
            if ca.is_none() && cb.is_none() {
                continue;
            }
            for w in 0..CHUNK_WORDS {
                let mask = ca.map_or(0, |c| c[w].load(Ordering::Acquire))
                    | cb.map_or(0, |c| c[w].load(Ordering::Acquire));
                if mask != 0 {
                    let old = self.chunk_or_alloc(index)[w].fetch_or(mask, Ordering::AcqRel);
                    self.set_count
                        .fetch_add(u64::from((mask & !old).count_ones()), Ordering::AcqRel);
                    self.dirty_chunks.lock().insert(index);
                }
            }
        }
    }

    /// The first set bit at or after `from`, skipping unallocated chunks and empty words.
    pub fn next_set(&self, from: u64) -> Option<u64> {
        let mut bit = from;
        while bit < self.len {
            let index = bit / CHUNK_BITS;
            let Some(chunk) = self.chunk(index) else {
                bit = (index + 1) * CHUNK_BITS;
                continue;
            };
            let mut in_chunk = bit % CHUNK_BITS;
            while in_chunk < CHUNK_BITS {
                let shifted =
                    chunk[(in_chunk / 64) as usize].load(Ordering::Acquire) >> (in_chunk % 64);
                if shifted != 0 {
                    let found = index * CHUNK_BITS + in_chunk + u64::from(shifted.trailing_zeros());
                    return (found < self.len).then_some(found);
                }
                in_chunk = (in_chunk / 64 + 1) * 64;
            }
            bit = (index + 1) * CHUNK_BITS;
        }
        None
    }

    /// Takes the set of chunks changed since the last call.
    pub fn take_dirty(&self) -> Vec<u64> {
        std::mem::take(&mut *self.dirty_chunks.lock())
            .into_iter()
            .collect()
    }

    /// Marks chunks dirty again (after a failed persist).
    pub fn mark_dirty(&self, chunks: &[u64]) {
        self.dirty_chunks.lock().extend(chunks.iter().copied());
    }

    /// Serializes one chunk for the catalog.
    pub fn encode_chunk(&self, index: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(CHUNK_RECORD_BYTES);
        out.push(CHUNK_FORMAT_VERSION);
        out.extend_from_slice(&[0; 4]);
        let mut hasher = crc32fast::Hasher::new();
        for w in 0..CHUNK_WORDS {
            let word = self
                .chunk(index)
                .map_or(0, |c| c[w].load(Ordering::Acquire));
            let bytes = word.to_le_bytes();
            hasher.update(&bytes);
            out.extend_from_slice(&bytes);
        }
        out[1..5].copy_from_slice(&hasher.finalize().to_le_bytes());
        out
    }

    /// Loads a chunk read from the catalog; false if it is corrupt.
    pub fn decode_chunk(&self, index: u64, bytes: &[u8]) -> bool {
        if index >= self.chunks.len() as u64
            || bytes.len() != CHUNK_RECORD_BYTES
            || bytes[0] != CHUNK_FORMAT_VERSION
        {
            return false;
        }
        let words = &bytes[5..];
        if crc32fast::hash(words).to_le_bytes() != bytes[1..5] {
            return false;
        }
        let chunk = self.chunk_or_alloc(index);
        let mut added = 0u64;
        for (w, raw) in words.chunks_exact(8).enumerate() {
            let mut word = [0u8; 8];
            word.copy_from_slice(raw);
            let mut value = u64::from_le_bytes(word);
            // Bits past the end of the bitmap are never set.
            let first_bit = index * CHUNK_BITS + w as u64 * 64;
            if first_bit >= self.len {
                value = 0;
            } else if self.len - first_bit < 64 {
                value &= (1u64 << (self.len - first_bit)) - 1;
            }
            let old = chunk[w].fetch_or(value, Ordering::AcqRel);
            added += u64::from((value & !old).count_ones());
        }
        self.set_count.fetch_add(added, Ordering::AcqRel);
        true
    }

    /// Bytes of memory the bitmap holds.
    pub fn memory_bytes(&self) -> usize {
        let table = std::mem::size_of_val(&*self.chunks);
        let allocated = self.chunks.iter().filter(|c| c.get().is_some()).count();
        std::mem::size_of::<Self>() + table + allocated * CHUNK_WORDS * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_count_and_scan() {
        let b = Bitmap::new(100_000);
        assert_eq!(b.next_clear(0), Some(0));
        assert!(b.set(5));
        assert!(!b.set(5));
        assert!(b.get(5));
        assert!(!b.get(6));
        assert_eq!(b.count(), 1);
        for i in 0..70_000 {
            b.set(i);
        }
        assert_eq!(b.next_clear(0), Some(70_000));
        assert_eq!(b.next_set(0), Some(0));
        assert_eq!(b.next_set(70_000), None);
        assert_eq!(b.next_clear(99_999), Some(99_999));
        b.set(99_999);
        assert_eq!(b.next_clear(99_999), None);
    }

    #[test]
    fn chunk_round_trip_and_corruption() {
        let b = Bitmap::new(40_000);
        b.set(1);
        b.set(33_000);
        let dirty = b.take_dirty();
        assert_eq!(dirty, vec![0, 1]);
        let c = Bitmap::new(40_000);
        for i in dirty {
            assert!(c.decode_chunk(i, &b.encode_chunk(i)));
        }
        assert!(c.get(1) && c.get(33_000) && !c.get(2));
        assert_eq!(c.count(), 2);
        let mut bad = b.encode_chunk(0);
        bad[100] ^= 1;
        assert!(!c.decode_chunk(0, &bad));
    }

    #[test]
    fn resync_masks() {
        let copied = Bitmap::new(70_000);
        let a = Bitmap::new(70_000);
        let b = Bitmap::new(70_000);
        copied.set_all();
        assert!(copied.is_full());
        a.set(3);
        b.set(69_999);
        copied.clear_where(&a, &b);
        assert_eq!(copied.clear_count(), 2);
        assert!(!copied.get(3) && !copied.get(69_999) && copied.get(4));
        a.clear_all();
        assert_eq!(a.count(), 0);
        assert!(!a.get(3));
        let u = Bitmap::new(70_000);
        u.set_where(&copied, &b);
        assert_eq!(u.count(), 70_000 - 1);
    }

    #[test]
    fn establish_is_cheap_for_64_tib() {
        let tracks = (64u64 << 40) / (64 << 10);
        let b = Bitmap::new(tracks);
        assert!(b.memory_bytes() < 1 << 20);
        assert_eq!(b.next_clear(12345), Some(12345));
    }
}
