//! Extent pools and space-efficient (thin) volumes.
//!
//! A pool has a capacity. A standard volume reserves its whole capacity when it is created and
//! its file is fully allocated (`fallocate`); holes are never punched into it, ranges are zeroed
//! in place instead. A space-efficient volume takes pool space one track at a time, the first
//! time anything (a host write, a copy-on-write, the background copy) puts data in the track,
//! and gives it back when a host discards (trims) a whole track. When the pool is full the write fails
//! with ENOSPC: a host gets ENOSPC, and a relationship whose target needed the space fails.
//!
//! Both behaviours are [`BlockFile`] wrappers, so the engine's I/O paths stay the same for
//! every kind of volume.

use crate::bitmap::Bitmap;
use crate::geometry::Geometry;
use crate::storage::BlockFile;
use serde::Serialize;
use std::any::Any;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// An extent pool.
#[derive(Debug)]
pub(crate) struct Pool {
    pub id: u64,
    pub name: String,
    pub capacity: u64,
    pub created_ms: u64,
    used: AtomicU64,
}

/// What callers see of a pool.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PoolInfo {
    pub name: String,
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub free_bytes: u64,
    pub volumes: usize,
    pub created_ms: u64,
}

impl Pool {
    pub fn new(id: u64, name: String, capacity: u64, created_ms: u64) -> Self {
        Pool {
            id,
            name,
            capacity,
            created_ms,
            used: AtomicU64::new(0),
        }
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// Takes `bytes` if they are free.
    pub fn reserve(&self, bytes: u64) -> bool {
        let mut used = self.used.load(Ordering::Acquire);
        loop {
            if used
                .checked_add(bytes)
                .is_none_or(|total| total > self.capacity)
            {
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

    /// Takes `bytes` whether or not they are free (rebuilding the count at open).
    pub fn charge(&self, bytes: u64) {
        self.used.fetch_add(bytes, Ordering::AcqRel);
    }

    pub fn release(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    fn full_error(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::StorageFull,
            format!(
                "extent pool {} is full ({} bytes)",
                self.name, self.capacity
            ),
        )
    }
}

/// A space-efficient volume's file: charges its pool per allocated track.
#[derive(Debug)]
pub(crate) struct ThinFile {
    inner: Arc<dyn BlockFile>,
    geometry: Geometry,
    pool: Arc<Pool>,
    allocated: Bitmap,
}

impl ThinFile {
    /// Wraps `inner`, counting the tracks that already hold data against the pool.
    pub fn open(
        inner: Arc<dyn BlockFile>,
        geometry: Geometry,
        pool: Arc<Pool>,
    ) -> io::Result<Self> {
        let allocated = Bitmap::new(geometry.tracks());
        let mut pos = 0;
        while let Some((start, end)) = inner.next_data(pos, geometry.capacity)? {
            for t in start / geometry.track_size..end.div_ceil(geometry.track_size) {
                if allocated.set(t) {
                    pool.charge(geometry.track_size);
                }
            }
            pos = end;
        }
        allocated.take_dirty();
        Ok(ThinFile {
            inner,
            geometry,
            pool,
            allocated,
        })
    }

    /// Reserves pool space for every unallocated track that `[offset, offset+len)` touches.
    /// Host writes call it before they are acknowledged, so a write waiting in the cache can
    /// never run out of space at destage.
    pub fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let first = offset / self.geometry.track_size;
        let last = (offset + len - 1) / self.geometry.track_size;
        for t in first..=last.min(self.geometry.tracks().saturating_sub(1)) {
            if self.allocated.get(t) {
                continue;
            }
            if !self.pool.reserve(self.geometry.track_size) {
                return Err(self.pool.full_error());
            }
            if !self.allocated.set(t) {
                // Another writer allocated it meanwhile.
                self.pool.release(self.geometry.track_size);
            }
        }
        Ok(())
    }

    /// Gives back every allocated track of the volume (when it is deleted).
    pub fn release_all(&self) {
        self.pool
            .release(self.allocated.count() * self.geometry.track_size);
    }
}

impl BlockFile for ThinFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.allocate(offset, data.len() as u64)?;
        self.inner.write_at(data, offset)
    }
    fn sync(&self) -> io::Result<()> {
        self.inner.sync()
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        self.inner.punch_hole(offset, len)
    }
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.inner.punch_hole(offset, len)?;
        // Whole tracks discarded give their space back.
        let ts = self.geometry.track_size;
        let first = offset.div_ceil(ts);
        let end = (offset + len) / ts;
        for t in first..end {
            if self.allocated.clear(t) {
                self.pool.release(ts);
            }
        }
        Ok(())
    }
    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        // A thin volume reads zeros from holes: punching is the cheap way to zero it.
        self.punch_hole(offset, len)
    }
    fn next_data(&self, offset: u64, end: u64) -> io::Result<Option<(u64, u64)>> {
        self.inner.next_data(offset, end)
    }
    fn allocated_bytes(&self) -> io::Result<u64> {
        Ok(self.allocated.count() * self.geometry.track_size)
    }
    fn copy_range_from(&self, src: &dyn BlockFile, offset: u64, len: u64) -> io::Result<()> {
        self.allocate(offset, len)?;
        self.inner.copy_range_from(src, offset, len)
    }
    fn as_any(&self) -> &dyn Any {
        self.inner.as_any()
    }
}

/// A standard (fully allocated) volume's file: holes are never punched into it.
#[derive(Debug)]
pub(crate) struct StandardFile {
    inner: Arc<dyn BlockFile>,
}

impl StandardFile {
    pub fn new(inner: Arc<dyn BlockFile>) -> Self {
        StandardFile { inner }
    }
}

impl BlockFile for StandardFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_at(data, offset)
    }
    fn sync(&self) -> io::Result<()> {
        self.inner.sync()
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        self.inner.zero_range(offset, len)
    }
    fn preallocate(&self, offset: u64, len: u64) -> io::Result<()> {
        self.inner.preallocate(offset, len)
    }
    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        self.inner.zero_range(offset, len)
    }
    fn next_data(&self, offset: u64, end: u64) -> io::Result<Option<(u64, u64)>> {
        self.inner.next_data(offset, end)
    }
    fn allocated_bytes(&self) -> io::Result<u64> {
        self.inner.allocated_bytes()
    }
    fn copy_range_from(&self, src: &dyn BlockFile, offset: u64, len: u64) -> io::Result<()> {
        self.inner.copy_range_from(src, offset, len)
    }
    fn as_any(&self) -> &dyn Any {
        self.inner.as_any()
    }
}
