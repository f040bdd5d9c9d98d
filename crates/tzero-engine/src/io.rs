//! Host I/O on a volume: the seed's routing rules.
//!
//! - Read source: the source file, with the volume's cached writes on top.
//! - Read target: a track whose bit is set reads the target file; a clear one reads the source's
//!   view (its file, or further up a cascade), which still holds T0 (source writes to that track
//!   wait in the cache). The target's own cached writes go on top.
//! - Write: if no relationship still owes T0 data for the track (durably), the bytes go straight
//!   to the volume file; otherwise they wait in the write cache for the destager, which does the
//!   copy-on-write (source) or the T0 fill of the rest of the track (target) first.
//! - Flush: destage the volume's cached tracks, then sync its file.

use crate::cache::PendingTrack;
use crate::engine::Inner;
use crate::error::IoError;
use crate::exports::ExportGuard;
use crate::volume::Volume;
use crate::volumes::map_write_err;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A handle for host I/O on one volume. Cheap to clone. Every method blocks on disk I/O.
#[derive(Debug, Clone)]
pub struct VolumeHandle {
    inner: Arc<Inner>,
    vol: Arc<Volume>,
}

/// A run of a volume reported by [`VolumeHandle::block_status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub length: u64,
    pub allocated: bool,
}

/// Tracks examined per block-status call, to bound its cost.
const BLOCK_STATUS_MAX_TRACKS: u64 = 65536;

impl VolumeHandle {
    pub(crate) fn new(inner: Arc<Inner>, vol: Arc<Volume>) -> Self {
        VolumeHandle { inner, vol }
    }

    pub fn name(&self) -> &str {
        &self.vol.name
    }

    /// Registers a host connection serving this volume until the guard is dropped: the volume
    /// is then not deleted unless forced, and a forced delete calls `revoke` once (after the
    /// volume's I/O already fails), so the connection can answer what is in flight and close.
    pub fn open_export(&self, revoke: impl Fn() + Send + Sync + 'static) -> ExportGuard {
        self.vol.exports.register(Box::new(revoke))
    }

    pub fn capacity(&self) -> u64 {
        self.vol.geometry.capacity
    }

    pub fn track_size(&self) -> u64 {
        self.vol.geometry.track_size
    }

    /// Read-only to hosts: the target of a relationship with target write inhibit.
    pub fn is_read_only(&self) -> bool {
        self.inner.topology.read().write_inhibited(self.vol.id)
    }

    /// Checks a host write: refused while write-inhibited, held while frozen.
    fn admit_write(&self) -> Result<(), IoError> {
        if self.is_read_only() {
            return Err(IoError::ReadOnly(self.vol.name.clone()));
        }
        self.vol.wait_unfrozen();
        Ok(())
    }

    fn check(&self, offset: u64, len: u64) -> Result<(), IoError> {
        if self.vol.deleted.load(Ordering::Acquire) {
            return Err(IoError::Deleted(self.vol.name.clone()));
        }
        self.inner.guard()?;
        if !self.vol.geometry.check_range(offset, len) {
            return Err(IoError::OutOfRange {
                offset,
                len,
                capacity: self.vol.geometry.capacity,
            });
        }
        self.inner.host_ops.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn read_err(&self, source: std::io::Error) -> IoError {
        IoError::Storage {
            name: self.vol.name.clone(),
            source,
        }
    }

    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        self.check(offset, buf.len() as u64)?;
        let vol = &self.vol;
        let topology = self.inner.topology.read();
        for span in vol.geometry.spans(offset, buf.len() as u64) {
            let out = &mut buf[span.buf_offset as usize..(span.buf_offset + span.len) as usize];
            let _stripe = self.inner.locks.shared(span.track);
            if let Some(p) = vol.cache.lock().get(&span.track) {
                if p.covers(span.in_track, span.len) {
                    p.overlay(span.in_track, out);
                    continue;
                }
            }
            let file = topology
                .view_file(vol.id, span.track)
                .map_err(IoError::TargetFailed)?;
            file.read_at(out, offset + span.buf_offset)
                .map_err(|e| self.read_err(e))?;
            if let Some(p) = vol.cache.lock().get(&span.track) {
                p.overlay(span.in_track, out);
            }
        }
        Ok(())
    }

    pub fn write(&self, offset: u64, data: &[u8], fua: bool) -> Result<(), IoError> {
        self.check(offset, data.len() as u64)?;
        self.admit_write()?;
        self.write_unchecked(offset, data)?;
        if fua {
            self.flush_range(offset, data.len() as u64)?;
        }
        Ok(())
    }

    fn write_unchecked(&self, offset: u64, data: &[u8]) -> Result<(), IoError> {
        let inner = &self.inner;
        let vol = &self.vol;
        // Reserve cache space before taking any lock: waiting for the destager while holding
        // the gate could deadlock against an admin operation queued on it.
        inner.budget.reserve(data.len() as u64, &|| inner.kick());
        let mut unused = data.len() as u64;
        let mut kick = false;
        let result = (|| {
            // A freeze is set under the exclusive topology lock, so a write that holds the lock
            // shared and sees no freeze is ordered before it; one that sees a freeze lets go
            // of the lock (admin operations must not wait for it) and waits.
            let topology = loop {
                let guard = inner.topology.read();
                if !vol.is_frozen() {
                    break guard;
                }
                drop(guard);
                vol.wait_unfrozen();
            };
            for span in vol.geometry.spans(offset, data.len() as u64) {
                let piece = &data[span.buf_offset as usize..(span.buf_offset + span.len) as usize];
                let _stripe = inner.locks.shared(span.track);
                // A space-efficient volume reserves the track's space before the write is
                // acknowledged, under the stripe, so no copy can give it back meanwhile and a
                // cached write can never run out of space at destage.
                if let Some(thin) = &vol.thin {
                    thin.allocate(offset + span.buf_offset, span.len)
                        .map_err(|e| map_write_err(&vol.name, e))?;
                }
                let mut cache = vol.cache.lock();
                if let Some(p) = cache.get_mut(&span.track) {
                    unused -= p.insert(span.in_track, piece);
                    continue;
                }
                if topology.write_through_ok(vol.id, span.track) {
                    drop(cache);
                    vol.file
                        .write_at(piece, offset + span.buf_offset)
                        .map_err(|e| map_write_err(&vol.name, e))?;
                    continue;
                }
                let mut p = PendingTrack::default();
                unused -= p.insert(span.in_track, piece);
                cache.insert(span.track, p);
                kick = true;
            }
            Ok(())
        })();
        inner.budget.release(unused);
        if kick {
            inner.kick();
        }
        result
    }

    /// Everything acknowledged on this volume before the call is durable when it returns.
    pub fn flush(&self) -> Result<(), IoError> {
        self.check(0, 0)?;
        self.flush_unchecked()
    }

    /// Flush without the shutdown check, for the engine's own final flush.
    pub(crate) fn flush_unchecked(&self) -> Result<(), IoError> {
        self.inner.check_poison()?;
        let upstream = {
            let topology = self.inner.topology.read();
            self.inner.destage_all(&topology, &self.vol)?;
            topology.upstream_files(self.vol.id)
        };
        self.sync_file()?;
        // A target's uncopied tracks are its sources' bytes at T0, which establish did not
        // sync: the target's flush makes them durable too.
        for (name, file) in upstream {
            file.sync().map_err(|e| map_write_err(&name, e))?;
        }
        self.acknowledge()
    }

    /// The last check before a flush is acknowledged. A destager batch that had taken some of
    /// this volume's cached tracks and failed its commit dropped them unwritten; it poisoned the
    /// engine before releasing their stripes, which our destage then waited for. So a flush that
    /// passed the first poison check while that batch was in flight sees the poison here, and
    /// is not acknowledged for data that never reached the disk.
    fn acknowledge(&self) -> Result<(), IoError> {
        self.inner.check_poison()?;
        Ok(())
    }

    /// Flushes what a FUA write covered: its tracks' cached data, then the file.
    fn flush_range(&self, offset: u64, len: u64) -> Result<(), IoError> {
        let g = self.vol.geometry;
        let first = offset / g.track_size;
        let last = (offset + len.max(1) - 1) / g.track_size;
        {
            let topology = self.inner.topology.read();
            self.inner
                .destage_range(&topology, &self.vol, first, last)?;
        }
        self.sync_file()?;
        self.acknowledge()
    }

    fn sync_file(&self) -> Result<(), IoError> {
        if let Some(e) = self.vol.write_error.lock().take() {
            // Reported once, like a failed writeback: an earlier destage lost unflushed data.
            return Err(map_write_err(&self.vol.name, e));
        }
        self.vol
            .file
            .sync()
            .map_err(|e| map_write_err(&self.vol.name, e))
    }

    /// Zeroes a range. With `punch`, space may be deallocated (TRIM, or WRITE_ZEROES without
    /// NO_HOLE); reads return zeros either way.
    pub fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        punch: bool,
        fua: bool,
    ) -> Result<(), IoError> {
        self.check(offset, len)?;
        self.admit_write()?;
        let vol = &self.vol;
        let punched = punch && {
            let topology = self.inner.topology.read();
            // No relationship and nothing cached: nothing can route through these bytes.
            let alone = topology.links(vol.id).is_empty() && vol.cache.lock().is_empty();
            if alone {
                vol.file
                    .discard(offset, len)
                    .map_err(|e| map_write_err(&vol.name, e))?;
            }
            alone
        };
        if !punched {
            self.zero_by_writes(offset, len)?;
        }
        if fua {
            self.flush_range(offset, len)?;
        }
        Ok(())
    }

    fn zero_by_writes(&self, offset: u64, len: u64) -> Result<(), IoError> {
        const CHUNK: u64 = 1 << 20;
        let zeros = vec![0u8; CHUNK.min(len) as usize];
        let mut pos = offset;
        while pos < offset + len {
            let n = CHUNK.min(offset + len - pos);
            self.write_unchecked(pos, &zeros[..n as usize])?;
            pos += n;
        }
        Ok(())
    }

    /// Allocation of a prefix of `[offset, offset+len)`: what the volume's view reads from. For
    /// a target track not yet copied that is the source's allocation.
    pub fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>, IoError> {
        self.check(offset, len)?;
        let vol = &self.vol;
        let g = vol.geometry;
        let topology = self.inner.topology.read();
        let mut extents: Vec<Extent> = Vec::new();
        let mut push = |length: u64, allocated: bool| match extents.last_mut() {
            Some(last) if last.allocated == allocated => last.length += length,
            _ => extents.push(Extent { length, allocated }),
        };
        let end = offset + len;
        if topology.target_of(vol.id).is_none() && vol.cache.lock().is_empty() {
            let mut pos = offset;
            while pos < end {
                match vol.file.next_data(pos, end).map_err(|e| self.read_err(e))? {
                    Some((s, e)) => {
                        if s > pos {
                            push(s - pos, false);
                        }
                        push(e - s, true);
                        pos = e;
                    }
                    None => {
                        push(end - pos, false);
                        pos = end;
                    }
                }
            }
            return Ok(extents);
        }
        let mut pos = offset;
        let mut tracks = 0;
        while pos < end && tracks < BLOCK_STATUS_MAX_TRACKS {
            let track = pos / g.track_size;
            let track_end = (g.track_start(track) + g.track_len(track)).min(end);
            let file = topology
                .view_file(vol.id, track)
                .map_err(IoError::TargetFailed)?;
            let cached = vol.cache.lock().contains_key(&track);
            let allocated = cached
                || file
                    .next_data(pos, track_end)
                    .map_err(|e| self.read_err(e))?
                    .is_some();
            push(track_end - pos, allocated);
            pos = track_end;
            tracks += 1;
        }
        Ok(extents)
    }
}
