//! Counters the engine keeps for monitoring, read at scrape time through [`crate::Engine::stats`]
//! and the `copied_bytes`/`cow_*` fields of [`crate::FlashInfo`].
//!
//! Everything here is a plain atomic bumped with `Relaxed` ordering: the paths that count
//! (destage batches, copy-on-write, background copy, catalog commits, and the daemon's host I/O)
//! must not get slower for being watched, so there is no lock, no allocation and no map lookup
//! per event. A reader may see one counter a little ahead of another; each one alone is exact.
//!
//! [`Histogram`] has fixed buckets (seconds, [`LATENCY_BOUNDS`]): observing is a short scan of
//! 16 integer bounds and two atomic adds. Its snapshot derives the total count from the buckets,
//! so the `+Inf` bucket always equals `_count`, as the Prometheus format demands.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds: 50 µs to 10 s, about ×2.5 apart. A host
/// request to the page cache takes tens of µs; a destage batch or a catalog commit (one sync)
/// takes milliseconds, more on a loaded disk.
pub const LATENCY_BOUNDS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];

/// [`LATENCY_BOUNDS`] in nanoseconds, what `observe` compares with.
const BOUNDS_NS: [u64; 16] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    10_000_000_000,
];

/// A latency histogram with fixed buckets, lock-free.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; 17],
    sum_ns: AtomicU64,
}

impl Histogram {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        // Saturates after 584 years, which no single observation reaches.
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = BOUNDS_NS
            .iter()
            .position(|&b| ns <= b)
            .unwrap_or(BOUNDS_NS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let per_bucket: [u64; 17] =
            std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed));
        HistogramSnapshot {
            per_bucket,
            count: per_bucket.iter().sum(),
            sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// A histogram as read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Observations in each bucket alone (not cumulative): `(previous bound, bound]` of
    /// [`LATENCY_BOUNDS`], then above the last bound.
    pub per_bucket: [u64; 17],
    /// Every observation (the `+Inf` bucket).
    pub count: u64,
    pub sum_seconds: f64,
}

impl HistogramSnapshot {
    /// `(upper bound, observations in that bucket alone)`, the `+Inf` bucket last: the form
    /// prometheus-client's encoders take, which make the counts cumulative as they write.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        LATENCY_BOUNDS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.per_bucket)
            .collect()
    }

    /// Observations `<=` the `i`-th bound, as a Prometheus `le` bucket counts them.
    pub fn cumulative(&self, i: usize) -> u64 {
        self.per_bucket[..=i].iter().sum()
    }
}

/// A relationship's counters, in memory only: they count from when the daemon opened the
/// engine, or the relationship was established (a reverse establishes a new one), whichever
/// came later. A resync does not reset them.
#[derive(Debug, Default)]
pub(crate) struct RelCounters {
    /// Bytes the background copy wrote to the target (holes included, as track lengths).
    pub copied_bytes: AtomicU64,
    /// Tracks copied to the target because a host write was about to overwrite their T0 data.
    pub cow_tracks: AtomicU64,
    pub cow_bytes: AtomicU64,
}

impl RelCounters {
    pub fn add_copied(&self, bytes: u64) {
        self.copied_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn add_cow(&self, bytes: u64) {
        self.cow_tracks.fetch_add(1, Ordering::Relaxed);
        self.cow_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The engine-wide counters (in [`crate::engine::Inner`]).
#[derive(Debug, Default)]
pub(crate) struct EngineCounters {
    /// Destage batches that had cached writes to move, and how long each took (copy-on-write,
    /// sync, commit, write).
    pub destage: Histogram,
}

/// What [`crate::Engine::stats`] reports.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineStats {
    /// Bytes the write cache holds now, and may hold before writers wait.
    pub cache_bytes: u64,
    pub cache_limit: u64,
    /// Destage batches and their durations.
    pub destage_batches: HistogramSnapshot,
    /// Catalog transactions committed (or attempted: a failed one poisons the engine) and their
    /// durations (the commit's sync).
    pub catalog_commits: HistogramSnapshot,
    /// Bytes of the write cache each volume holds, by name.
    pub volume_cache_bytes: Vec<(String, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_agree() {
        for (s, ns) in LATENCY_BOUNDS.iter().zip(BOUNDS_NS) {
            assert!((s * 1e9 - ns as f64).abs() < 0.5, "{s} s vs {ns} ns");
        }
        assert!(BOUNDS_NS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn observations_land_in_their_bucket() {
        let h = Histogram::new();
        h.observe(Duration::from_micros(10)); // first bucket
        h.observe(Duration::from_micros(50)); // on the bound: still first
        h.observe(Duration::from_micros(51)); // second
        h.observe(Duration::from_millis(3)); // 0.005
        h.observe(Duration::from_secs(60)); // +Inf only
        let s = h.snapshot();
        assert_eq!(s.count, 5);
        assert_eq!(h.count(), 5);
        assert_eq!(s.cumulative(0), 2);
        assert_eq!(s.cumulative(1), 3);
        assert_eq!(s.cumulative(5), 3, "2.5 ms bucket");
        assert_eq!(s.cumulative(6), 4, "5 ms bucket");
        assert_eq!(s.cumulative(15), 4, "10 s bucket");
        assert_eq!(s.cumulative(16), 5, "+Inf");
        let want = 10e-6 + 50e-6 + 51e-6 + 3e-3 + 60.0;
        assert!((s.sum_seconds - want).abs() < 1e-9, "{}", s.sum_seconds);
        let b = s.buckets();
        assert_eq!(b.len(), 17);
        assert_eq!(b[16], (f64::INFINITY, 1));
        assert_eq!(b[6], (0.005, 1));
        assert_eq!(b.iter().map(|(_, n)| n).sum::<u64>(), s.count);
    }

    #[test]
    fn concurrent_observers_lose_nothing() {
        let h = std::sync::Arc::new(Histogram::new());
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for n in 0..10_000u64 {
                        h.observe(Duration::from_nanos(n * 1000 * (i + 1)));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("observer");
        }
        let s = h.snapshot();
        assert_eq!(s.count, 40_000);
        // Sum of n*1000*(i+1) ns over n < 10000, i in 0..4.
        let want_ns: u64 = (0..10_000u64).sum::<u64>() * 1000 * (1 + 2 + 3 + 4);
        assert!((s.sum_seconds - want_ns as f64 / 1e9).abs() < 1e-6);
    }

    #[test]
    fn rel_counters_add_up() {
        let c = RelCounters::default();
        c.add_copied(4096);
        c.add_cow(65536);
        c.add_cow(65536);
        assert_eq!(RelCounters::get(&c.cow_tracks), 2);
        assert_eq!(RelCounters::get(&c.cow_bytes), 131072);
        assert_eq!(RelCounters::get(&c.copied_bytes), 4096);
    }

    /// The hooks count what the engine did: copy-on-write at destage, background copy, destage
    /// batches and catalog commits, and the cache bytes a volume holds.
    #[test]
    fn engine_counts_what_it_does() {
        use crate::storage::mem::MemStorage;
        use crate::{Engine, EngineConfig, FlashOptions};
        let cfg = EngineConfig {
            background: false,
            ..EngineConfig::default()
        };
        let engine = Engine::open(std::sync::Arc::new(MemStorage::new()), cfg).expect("open");
        let ts = 64 * 1024;
        for name in ["a", "b", "c"] {
            engine.create_volume(name, 16 * ts, ts).expect("volume");
        }
        let before = engine.stats();
        assert!(before.catalog_commits.count >= 3, "{before:?}");
        let a = engine.handle("a").expect("handle");
        a.write(0, &vec![1u8; 3 * ts as usize], false)
            .expect("write");
        let nocopy = FlashOptions::default();
        engine.establish("a", "b", nocopy).expect("nocopy");
        // Two tracks overwritten after T0: they wait in the cache for their copy-on-write.
        a.write(0, &[2u8; 4096], false).expect("write");
        a.write(ts + 10, &[3u8; 100], false).expect("write");
        let cached = engine.stats();
        assert_eq!(
            cached.volume_cache_bytes,
            vec![("a".into(), 4196), ("b".into(), 0), ("c".into(), 0)]
        );
        assert_eq!(cached.cache_bytes, 4196);
        assert_eq!(engine.destage_step(), 2);
        let info = engine.relationship("a", "b").expect("rel");
        assert_eq!(
            (info.cow_tracks, info.cow_bytes, info.copied_bytes),
            (2, 2 * ts, 0)
        );
        let after = engine.stats();
        assert_eq!(
            after.destage_batches.count,
            before.destage_batches.count + 1
        );
        assert!(after.catalog_commits.count > cached.catalog_commits.count);
        assert_eq!(after.cache_bytes, 0);
        let copy = FlashOptions {
            background_copy: true,
            ..FlashOptions::default()
        };
        engine.establish("a", "c", copy).expect("copy");
        assert_eq!(engine.copy_step(4).expect("copy step"), 4);
        let info = engine.relationship("a", "c").expect("rel");
        assert_eq!((info.copied_bytes, info.cow_tracks), (4 * ts, 0));
    }
}
