//! The write cache: host writes that must wait for copy-on-write before they reach the disk.
//!
//! A write whose track has T0 data still owed to a target (a source track whose bit is clear in
//! some relationship, or a target track not yet filled) is kept here, acknowledged, and moved to
//! the volume file later by the destager, after the copy-on-write is durable. Writes to tracks
//! that owe nothing go straight to the volume file (the OS page cache), so a volume with no
//! relationship, or whose tracks are all copied, pays nothing for the cache.
//!
//! Each cached track holds only the byte ranges written (sorted, non-overlapping extents), so a
//! 4 KiB write costs 4 KiB of cache, not a track. The [`CacheBudget`] bounds the bytes held; a
//! writer waits for the destager when it is full, holding no lock while it waits.

use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The pending writes of one track: sorted, non-overlapping `(offset in track, bytes)` extents.
#[derive(Debug, Default, Clone)]
pub struct PendingTrack {
    extents: Vec<(u64, Vec<u8>)>,
}

impl PendingTrack {
    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.extents.iter().map(|(_, d)| d.len() as u64).sum()
    }

    pub fn extents(&self) -> &[(u64, Vec<u8>)] {
        &self.extents
    }

    /// Adds a write; newer bytes replace older ones. Returns the bytes added (merging never
    /// shrinks the extents, so the change is never negative).
    pub fn insert(&mut self, offset: u64, data: &[u8]) -> u64 {
        let before = self.bytes();
        let end = offset + data.len() as u64;
        // Extents that overlap or touch the new one are merged into it.
        let first = self
            .extents
            .partition_point(|(o, d)| (o + d.len() as u64) < offset);
        let mut last = first;
        while last < self.extents.len() && self.extents[last].0 <= end {
            last += 1;
        }
        let merged_start = self.extents[first..last]
            .first()
            .map_or(offset, |(o, _)| (*o).min(offset));
        let merged_end = self.extents[first..last]
            .last()
            .map_or(end, |(o, d)| (o + d.len() as u64).max(end));
        let mut merged = vec![0u8; (merged_end - merged_start) as usize];
        for (o, d) in self.extents.drain(first..last) {
            let at = (o - merged_start) as usize;
            merged[at..at + d.len()].copy_from_slice(&d);
        }
        let at = (offset - merged_start) as usize;
        merged[at..at + data.len()].copy_from_slice(data);
        self.extents.insert(first, (merged_start, merged));
        self.bytes() - before
    }

    /// Copies the cached bytes that fall in `[offset, offset+buf.len())` of the track into `buf`.
    pub fn overlay(&self, offset: u64, buf: &mut [u8]) {
        let end = offset + buf.len() as u64;
        for (o, d) in &self.extents {
            let e = o + d.len() as u64;
            if e <= offset || *o >= end {
                continue;
            }
            let from = (*o).max(offset);
            let to = e.min(end);
            buf[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&d[(from - o) as usize..(to - o) as usize]);
        }
    }

    /// True when the extents cover `[offset, offset+len)` completely.
    pub fn covers(&self, offset: u64, len: u64) -> bool {
        self.extents
            .iter()
            .any(|(o, d)| *o <= offset && o + d.len() as u64 >= offset + len)
    }
}

/// Bounds the bytes held by the write cache across all volumes.
///
/// Reserving is one compare-and-swap while there is room; only a writer that must wait touches
/// the mutex and condition variable.
#[derive(Debug)]
pub struct CacheBudget {
    limit: u64,
    used: AtomicU64,
    waiters: AtomicUsize,
    lock: Mutex<()>,
    freed: Condvar,
}

impl CacheBudget {
    pub fn new(limit: u64) -> Self {
        CacheBudget {
            limit,
            used: AtomicU64::new(0),
            waiters: AtomicUsize::new(0),
            lock: Mutex::new(()),
            freed: Condvar::new(),
        }
    }

    fn try_reserve(&self, bytes: u64) -> bool {
        let mut used = self.used.load(Ordering::Acquire);
        loop {
            // A request larger than the whole cache is admitted once the cache is empty, so it
            // can never wait forever.
            if used > 0 && used + bytes > self.limit {
                return false;
            }
            match self.used.compare_exchange_weak(
                used,
                used + bytes,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
    }

    /// Reserves `bytes`, waiting while the cache is full. `kick` wakes the destager.
    pub fn reserve(&self, bytes: u64, kick: &dyn Fn()) {
        if self.try_reserve(bytes) {
            return;
        }
        self.waiters.fetch_add(1, Ordering::AcqRel);
        let mut guard = self.lock.lock();
        while !self.try_reserve(bytes) {
            kick();
            self.freed
                .wait_for(&mut guard, std::time::Duration::from_millis(20));
        }
        drop(guard);
        self.waiters.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn release(&self, bytes: u64) {
        if bytes == 0 {
            return;
        }
        self.used.fetch_sub(bytes, Ordering::AcqRel);
        if self.waiters.load(Ordering::Acquire) > 0 {
            let _guard = self.lock.lock();
            self.freed.notify_all();
        }
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_merge_and_overlay() {
        let mut p = PendingTrack::default();
        assert_eq!(p.insert(10, &[1; 10]), 10);
        assert_eq!(p.insert(30, &[2; 10]), 10);
        assert_eq!(p.insert(15, &[3; 20]), 10); // joins both: 10..40
        assert_eq!(p.extents().len(), 1);
        let mut buf = [0u8; 50];
        p.overlay(0, &mut buf);
        assert_eq!(&buf[10..15], &[1; 5]);
        assert_eq!(&buf[15..35], &[3; 20]);
        assert_eq!(&buf[35..40], &[2; 5]);
        assert_eq!(buf[40], 0);
        assert!(p.covers(12, 20));
        assert!(!p.covers(5, 10));
        // adjacent extents merge too
        assert_eq!(p.insert(40, &[4; 2]), 2);
        assert_eq!(p.extents().len(), 1);
    }
}
