//! The FlashCopy control bitmap: one bit per track, set once the track's point-in-time data is
//! on the target (copied by copy-on-write or background copy, or written by the host).
//!
//! Memory is allocated lazily, in chunks of [`CHUNK_BITS`] bits, on the first bit set in a chunk:
//! establishing a relationship allocates only the chunk table, so it costs the same for 1 GiB
//! and 64 TiB. Bits are atomics so readers can test them under a shared track lock while the
//! track's writer (which holds it exclusively) sets them. Chunks that changed since the last
//! persist are remembered so the catalog writes only those.
//!
//! Each chunk also keeps the number of its set bits, changed with the bits by every operation,
//! so a summary of the whole bitmap ([`Bitmap::downsample`], the console's heat map) reads one
//! counter per chunk and popcounts words only at bucket edges: its cost follows the number of
//! buckets and chunks, never the number of tracks.

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

/// Most buckets `Bitmap::downsample` fills; more are clamped to this, so a request can never
/// make the engine allocate without bound.
pub const MAX_BUCKETS: u64 = 65536;

/// One allocated chunk: its words and how many of their bits are set.
#[derive(Debug)]
struct Chunk {
    /// Set bits in `words`. Changed after the word it counts (never under a lock), so a reader
    /// racing a writer may see it one step behind; each bit's change is counted exactly once,
    /// so it is exact whenever no writer is mid-operation.
    set: AtomicU64,
    words: [AtomicU64; CHUNK_WORDS],
}

impl Chunk {
    fn new() -> Box<Chunk> {
        Box::new(Chunk {
            set: AtomicU64::new(0),
            words: std::array::from_fn(|_| AtomicU64::new(0)),
        })
    }

    /// Set bits among chunk bits `lo..hi`: whole-chunk counter when the range is the chunk,
    /// otherwise a popcount of the shorter of the range and its complement (at most half the
    /// chunk's words).
    fn count_range(&self, lo: u64, hi: u64) -> u64 {
        debug_assert!(lo <= hi && hi <= CHUNK_BITS);
        let all = self.set.load(Ordering::Acquire).min(CHUNK_BITS);
        if lo == 0 && hi == CHUNK_BITS {
            return all;
        }
        if hi - lo > CHUNK_BITS / 2 {
            let outside = self.popcount(0, lo) + self.popcount(hi, CHUNK_BITS);
            return all.saturating_sub(outside).min(hi - lo);
        }
        self.popcount(lo, hi)
    }

    /// Popcount of chunk bits `lo..hi`, masking the partial words at either end.
    fn popcount(&self, lo: u64, hi: u64) -> u64 {
        if lo >= hi {
            return 0;
        }
        let (first, last) = ((lo / 64) as usize, ((hi - 1) / 64) as usize);
        let tail = hi % 64;
        let mut n = 0u64;
        for w in first..=last {
            let mut word = self.words[w].load(Ordering::Acquire);
            if w == first {
                word &= u64::MAX << (lo % 64);
            }
            if w == last && tail > 0 {
                word &= (1u64 << tail) - 1;
            }
            n += u64::from(word.count_ones());
        }
        n
    }
}

/// A lazily allocated bitmap of `len` bits.
#[derive(Debug)]
pub struct Bitmap {
    len: u64,
    chunks: Box<[OnceLock<Box<Chunk>>]>,
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

    fn chunk_of(&self, index: u64) -> Option<&Chunk> {
        self.chunks[index as usize].get().map(|c| &**c)
    }

    fn chunk(&self, index: u64) -> Option<&[AtomicU64]> {
        self.chunk_of(index).map(|c| &c.words[..])
    }

    fn chunk_or_alloc_of(&self, index: u64) -> &Chunk {
        self.chunks[index as usize].get_or_init(Chunk::new)
    }

    fn chunk_or_alloc(&self, index: u64) -> &[AtomicU64] {
        &self.chunk_or_alloc_of(index).words
    }

    /// Adds `n` set bits to the counters of chunk `index` and of the whole bitmap.
    fn counted(&self, index: u64, n: u64) {
        if n > 0 {
            if let Some(c) = self.chunk_of(index) {
                c.set.fetch_add(n, Ordering::AcqRel);
            }
            self.set_count.fetch_add(n, Ordering::AcqRel);
        }
    }

    /// Takes `n` set bits from the counters of chunk `index` and of the whole bitmap.
    fn uncounted(&self, index: u64, n: u64) {
        if n > 0 {
            if let Some(c) = self.chunk_of(index) {
                c.set.fetch_sub(n, Ordering::AcqRel);
            }
            self.set_count.fetch_sub(n, Ordering::AcqRel);
        }
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
            self.counted(index, 1);
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
            self.uncounted(index, 1);
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
        let mut dirty = Vec::new();
        for index in 0..self.chunks.len() as u64 {
            let (ca, cb) = (a.chunk(index), b.chunk(index));
            if ca.is_none() && cb.is_none() {
                continue;
            }
            let Some(mine) = self.chunk(index) else {
                continue;
            };
            let mut removed = 0u64;
            for w in 0..CHUNK_WORDS {
                let mask = ca.map_or(0, |c| c[w].load(Ordering::Acquire))
                    | cb.map_or(0, |c| c[w].load(Ordering::Acquire));
                if mask == 0 {
                    continue;
                }
                let old = mine[w].fetch_and(!mask, Ordering::AcqRel);
                removed += u64::from((old & mask).count_ones());
            }
            if removed > 0 {
                self.uncounted(index, removed);
                dirty.push(index);
            }
        }
        self.dirty_chunks.lock().extend(dirty);
    }

    /// Clears every bit (allocated chunks stay allocated and are marked dirty).
    pub fn clear_all(&self) {
        let mut dirty = Vec::new();
        for (index, chunk) in self.chunks.iter().enumerate() {
            if let Some(c) = chunk.get() {
                for w in c.words.iter() {
                    w.store(0, Ordering::Release);
                }
                c.set.store(0, Ordering::Release);
                dirty.push(index as u64);
            }
        }
        self.set_count.store(0, Ordering::Release);
        self.dirty_chunks.lock().extend(dirty);
    }

    /// Sets every bit (allocates every chunk).
    pub fn set_all(&self) {
        for index in 0..self.chunks.len() as u64 {
            let chunk = self.chunk_or_alloc_of(index);
            for (w, word) in chunk.words.iter().enumerate() {
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
            let bits = (self.len - index * CHUNK_BITS).min(CHUNK_BITS);
            chunk.set.store(bits, Ordering::Release);
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
                    self.counted(index, u64::from((mask & !old).count_ones()));
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
        self.counted(index, added);
        true
    }

    /// Bytes of memory the bitmap holds.
    pub fn memory_bytes(&self) -> usize {
        let table = std::mem::size_of_val(&*self.chunks);
        let allocated = self.chunks.iter().filter(|c| c.get().is_some()).count();
        std::mem::size_of::<Self>() + table + allocated * std::mem::size_of::<Chunk>()
    }

    /// Set bits among bits `from..to`: chunk counters for whole chunks, popcounts only for the
    /// partial chunks at either end; unallocated chunks count zero without being touched.
    pub fn count_range(&self, from: u64, to: u64) -> u64 {
        let to = to.min(self.len);
        if from >= to {
            return 0;
        }
        let (first, last) = (from / CHUNK_BITS, (to - 1) / CHUNK_BITS);
        let in_chunk = |index: u64, lo: u64, hi: u64| {
            self.chunk_of(index).map_or(0, |c| c.count_range(lo, hi))
        };
        let last_hi = to - last * CHUNK_BITS;
        if first == last {
            return in_chunk(first, from % CHUNK_BITS, last_hi);
        }
        let middle: u64 = (first + 1..last)
            .filter_map(|i| self.chunk_of(i))
            .map(|c| c.set.load(Ordering::Acquire).min(CHUNK_BITS))
            .sum();
        in_chunk(first, from % CHUNK_BITS, CHUNK_BITS) + middle + in_chunk(last, 0, last_hi)
    }

    /// The bitmap summarised in `buckets` buckets (clamped to [`MAX_BUCKETS`] and to one bit per
    /// bucket): the set bits of each. Bucket `i` of `n` covers bits `i*len/n .. (i+1)*len/n`, so
    /// buckets differ in size by at most one bit and cover every bit once. Costs one counter per
    /// chunk and at most half a chunk's words per bucket edge, whatever `len` is.
    pub fn downsample(&self, buckets: u64) -> Vec<u64> {
        let n = buckets.clamp(1, MAX_BUCKETS).min(self.len);
        let edge = |i: u64| (u128::from(i) * u128::from(self.len) / u128::from(n.max(1))) as u64;
        (0..n)
            .map(|i| self.count_range(edge(i), edge(i + 1)))
            .collect()
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

    /// The reference the summaries are checked against: one `get` per bit.
    fn naive(b: &Bitmap, from: u64, to: u64) -> u64 {
        (from..to).filter(|&t| b.get(t)).count() as u64
    }

    fn naive_downsample(b: &Bitmap, buckets: u64) -> Vec<u64> {
        let n = buckets.clamp(1, MAX_BUCKETS).min(b.len());
        (0..n)
            .map(|i| naive(b, i * b.len() / n, (i + 1) * b.len() / n))
            .collect()
    }

    #[test]
    fn downsample_edges_inside_chunks() {
        // Three chunks and a bit; 7 buckets put every edge mid-chunk and mid-word.
        let len = 3 * CHUNK_BITS + 1;
        let b = Bitmap::new(len);
        for t in (0..len).filter(|t| t % 3 == 0 || (40_000..50_000).contains(t)) {
            b.set(t);
        }
        let got = b.downsample(7);
        assert_eq!(got.len(), 7);
        assert_eq!(got, naive_downsample(&b, 7));
        assert_eq!(got.iter().sum::<u64>(), b.count());
        // A bucket that starts and ends inside one word, and one that is a whole chunk.
        assert_eq!(b.count_range(3, 10), 3);
        assert_eq!(
            b.count_range(CHUNK_BITS, 2 * CHUNK_BITS),
            naive(&b, CHUNK_BITS, 2 * CHUNK_BITS)
        );
        assert_eq!(b.count_range(len, len + 5), 0);
    }

    #[test]
    fn downsample_more_buckets_than_bits() {
        let b = Bitmap::new(10);
        b.set(0);
        b.set(9);
        assert_eq!(b.downsample(1000), vec![1, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(b.downsample(0), vec![2], "0 buckets is read as one");
        assert_eq!(Bitmap::new(0).downsample(5), Vec::<u64>::new());
    }

    #[test]
    fn downsample_unallocated_chunks_stay_unallocated() {
        let b = Bitmap::new(4 * CHUNK_BITS);
        b.set(2 * CHUNK_BITS + 5);
        let before = b.memory_bytes();
        assert_eq!(b.downsample(4), vec![0, 0, 1, 0]);
        assert_eq!(b.downsample(8), vec![0, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(b.memory_bytes(), before, "a summary allocates no chunk");
    }

    #[test]
    fn chunk_counts_follow_bulk_operations() {
        let len = 2 * CHUNK_BITS + 100;
        let (copied, a, bm) = (Bitmap::new(len), Bitmap::new(len), Bitmap::new(len));
        copied.set_all();
        assert_eq!(copied.downsample(3), naive_downsample(&copied, 3));
        a.set(7);
        bm.set(CHUNK_BITS + 1);
        bm.set(len - 1);
        copied.clear_where(&a, &bm);
        assert_eq!(copied.downsample(3), naive_downsample(&copied, 3));
        let u = Bitmap::new(len);
        u.set_where(&a, &bm);
        assert_eq!(u.downsample(3), vec![1, 1, 1]);
        let d = Bitmap::new(len);
        for i in 0..3 {
            assert!(d.decode_chunk(i, &copied.encode_chunk(i)));
        }
        assert_eq!(d.downsample(5), naive_downsample(&copied, 5));
        copied.clear_all();
        assert_eq!(copied.downsample(3), vec![0, 0, 0]);
    }

    #[test]
    fn downsample_64_tib_is_cheap() {
        // 64 TiB at 64 KiB tracks (2^30 bits) and at 4 KiB tracks (2^34 bits, 2^19 chunks): the
        // summary reads one counter per chunk and edge words, never every bit.
        for track in [64u64 << 10, 4 << 10] {
            let b = Bitmap::new((64u64 << 40) / track);
            for c in 0..100 {
                b.set(c * 7 * CHUNK_BITS + 3);
            }
            b.set(b.len() / 3);
            let start = std::time::Instant::now();
            let got = b.downsample(MAX_BUCKETS * 4);
            let took = start.elapsed();
            assert_eq!(got.len() as u64, MAX_BUCKETS, "clamped");
            assert_eq!(got.iter().sum::<u64>(), 101);
            eprintln!(
                "64 TiB, {} KiB tracks: {MAX_BUCKETS} buckets in {took:?}",
                track >> 10
            );
            assert!(took < std::time::Duration::from_secs(2), "{took:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn downsample_matches_naive(
            len in 1u64..(3 * CHUNK_BITS + 200),
            runs in proptest::collection::vec((0u64..(3 * CHUNK_BITS + 200), 1u64..5000), 0..12),
            cleared in proptest::collection::vec(0u64..(3 * CHUNK_BITS + 200), 0..50),
            buckets in 1u64..600,
        ) {
            let b = Bitmap::new(len);
            for (start, n) in runs {
                for t in start..(start + n).min(len) {
                    b.set(t);
                }
            }
            for t in cleared.into_iter().filter(|&t| t < len) {
                b.clear(t);
            }
            proptest::prop_assert_eq!(b.downsample(buckets), naive_downsample(&b, buckets));
        }
    }
}
