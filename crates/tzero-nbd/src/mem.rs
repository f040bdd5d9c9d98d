//! An in-memory [`BlockDevice`] and [`ExportProvider`], for tests, fuzzing
//! and demos.
//!
//! The device keeps its bytes in a `Vec<u8>` behind a mutex and an
//! allocation map at [`MemDevice::GRAIN`] granularity so `base:allocation`
//! has real holes to report. It counts flushes and FUA writes so tests can
//! check that the server forwarded them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::device::{BlockDevice, DeviceError, ExportProvider, Extent};

struct Inner {
    data: Vec<u8>,
    /// One flag per grain: true when allocated.
    allocated: Vec<bool>,
}

/// A RAM-backed block device with a hole map.
pub struct MemDevice {
    inner: Mutex<Inner>,
    size: u64,
    preferred: u32,
    read_only: AtomicBool,
    flushes: AtomicU64,
    fua_ops: AtomicU64,
}

impl MemDevice {
    /// Allocation granularity of the hole map.
    pub const GRAIN: u64 = 4096;
    const G: usize = 4096;

    /// A zero-filled, fully unallocated device of `size` bytes.
    pub fn new(size: usize, preferred_block_size: u32) -> Self {
        let grains = (size as u64).div_ceil(Self::GRAIN);
        Self {
            inner: Mutex::new(Inner {
                data: vec![0; size],
                allocated: vec![false; usize::try_from(grains).unwrap_or(0)],
            }),
            size: size as u64,
            preferred: preferred_block_size,
            read_only: AtomicBool::new(false),
            flushes: AtomicU64::new(0),
            fua_ops: AtomicU64::new(0),
        }
    }

    /// Switch read-only on or off at run time.
    pub fn set_read_only(&self, ro: bool) {
        self.read_only.store(ro, Ordering::SeqCst);
    }

    /// How many flushes the device has seen.
    pub fn flush_count(&self) -> u64 {
        self.flushes.load(Ordering::SeqCst)
    }

    /// How many write-type operations arrived with FUA.
    pub fn fua_count(&self) -> u64 {
        self.fua_ops.load(Ordering::SeqCst)
    }

    /// A copy of the device contents.
    pub fn snapshot(&self) -> Vec<u8> {
        self.lock().data.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the byte vector in an
        // unsafe state, so recover from poisoning.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Converts an (offset, len) into a checked index range.
    fn range(&self, offset: u64, len: u64) -> Result<(usize, usize), DeviceError> {
        let end = offset.checked_add(len).ok_or(DeviceError::Invalid)?;
        if end > self.size {
            return Err(DeviceError::Invalid);
        }
        let s = usize::try_from(offset).map_err(|_| DeviceError::Invalid)?;
        let e = usize::try_from(end).map_err(|_| DeviceError::Invalid)?;
        Ok((s, e))
    }

    fn check_writable(&self) -> Result<(), DeviceError> {
        if self.read_only.load(Ordering::SeqCst) {
            Err(DeviceError::NotPermitted)
        } else {
            Ok(())
        }
    }

    fn note_fua(&self, fua: bool) {
        if fua {
            self.fua_ops.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Grains touched by [s, e).
    fn grains_touched(s: usize, e: usize) -> std::ops::Range<usize> {
        let g = Self::G;
        if s >= e {
            return 0..0;
        }
        s / g..e.div_ceil(g)
    }

    /// Grains fully inside [s, e).
    fn grains_covered(s: usize, e: usize) -> std::ops::Range<usize> {
        let g = Self::G;
        let first = s.div_ceil(g);
        let last = e / g;
        if first >= last {
            0..0
        } else {
            first..last
        }
    }

    /// Zero [s, e) and, unless `keep`, unallocate the grains it fully covers.
    fn zero_range(inner: &mut Inner, s: usize, e: usize, keep: bool) {
        inner.data[s..e].fill(0);
        if keep {
            for g in Self::grains_touched(s, e) {
                inner.allocated[g] = true;
            }
        } else {
            for g in Self::grains_covered(s, e) {
                inner.allocated[g] = false;
            }
        }
    }
}

impl BlockDevice for MemDevice {
    fn size(&self) -> u64 {
        self.size
    }

    fn preferred_block_size(&self) -> u32 {
        self.preferred
    }

    fn read_only(&self) -> bool {
        self.read_only.load(Ordering::SeqCst)
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        let (s, e) = self.range(offset, buf.len() as u64)?;
        buf.copy_from_slice(&self.lock().data[s..e]);
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8], fua: bool) -> Result<(), DeviceError> {
        self.check_writable()?;
        let (s, e) = self.range(offset, data.len() as u64)?;
        let mut inner = self.lock();
        inner.data[s..e].copy_from_slice(data);
        for g in Self::grains_touched(s, e) {
            inner.allocated[g] = true;
        }
        drop(inner);
        self.note_fua(fua);
        Ok(())
    }

    fn flush(&self) -> Result<(), DeviceError> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn trim(&self, offset: u64, len: u64, fua: bool) -> Result<(), DeviceError> {
        self.check_writable()?;
        let (s, e) = self.range(offset, len)?;
        let mut inner = self.lock();
        // Only whole grains are discarded; partial edges keep their data,
        // which the spec allows for a trim hint.
        let g = Self::G;
        for grain in Self::grains_covered(s, e) {
            inner.data[grain * g..(grain + 1) * g].fill(0);
            inner.allocated[grain] = false;
        }
        drop(inner);
        self.note_fua(fua);
        Ok(())
    }

    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        no_hole: bool,
        fua: bool,
    ) -> Result<(), DeviceError> {
        self.check_writable()?;
        let (s, e) = self.range(offset, len)?;
        Self::zero_range(&mut self.lock(), s, e, no_hole);
        self.note_fua(fua);
        Ok(())
    }

    fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>, DeviceError> {
        let (s, e) = self.range(offset, len)?;
        if s == e {
            return Err(DeviceError::Invalid);
        }
        let inner = self.lock();
        let g = Self::G;
        let mut out: Vec<Extent> = Vec::new();
        let mut pos = s;
        while pos < e {
            let grain = pos / g;
            let grain_end = ((grain + 1) * g).min(e);
            let hole = !inner.allocated[grain];
            let piece = (grain_end - pos) as u64;
            match out.last_mut() {
                Some(last) if last.hole == hole => last.length += piece,
                _ => out.push(Extent {
                    length: piece,
                    hole,
                    zero: hole,
                }),
            }
            pos = grain_end;
        }
        Ok(out)
    }
}

/// A device and its optional description.
type Entry = (Arc<MemDevice>, Option<String>);

/// A name → [`MemDevice`] map implementing [`ExportProvider`].
#[derive(Default)]
pub struct MemProvider {
    exports: Mutex<BTreeMap<String, Entry>>,
}

impl MemProvider {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) an export.
    pub fn insert(&self, name: &str, dev: Arc<MemDevice>, description: Option<&str>) {
        self.exports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), (dev, description.map(str::to_owned)));
    }

    /// The device behind an export, for test assertions.
    pub fn device(&self, name: &str) -> Option<Arc<MemDevice>> {
        self.exports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .map(|(d, _)| Arc::clone(d))
    }
}

impl ExportProvider for MemProvider {
    fn list(&self) -> Vec<String> {
        self.exports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    fn open(&self, name: &str) -> Result<Arc<dyn BlockDevice>, String> {
        self.device(name)
            .map(|d| d as Arc<dyn BlockDevice>)
            .ok_or_else(|| format!("unknown export {name:?}"))
    }

    fn describe(&self, name: &str) -> Option<String> {
        self.exports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .and_then(|(_, d)| d.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_and_extents() {
        let d = MemDevice::new(64 * 1024, 4096);
        d.write(4096, &[7; 100], false).unwrap();
        let mut b = [0u8; 100];
        d.read(4096, &mut b).unwrap();
        assert_eq!(b, [7; 100]);
        let ex = d.block_status(0, 64 * 1024).unwrap();
        assert_eq!(ex.len(), 3);
        assert!(ex[0].hole && ex[0].length == 4096);
        assert!(!ex[1].hole && ex[1].length == 4096);
        assert!(ex[2].hole);
        assert_eq!(ex.iter().map(|e| e.length).sum::<u64>(), 64 * 1024);
    }

    #[test]
    fn zeroes_trim_and_bounds() {
        let d = MemDevice::new(16 * 1024, 4096);
        d.write(0, &[1; 16 * 1024], true).unwrap();
        d.write_zeroes(4096, 4096, false, false).unwrap();
        assert!(d.block_status(4096, 4096).unwrap()[0].hole);
        d.write_zeroes(8192, 4096, true, false).unwrap();
        assert!(!d.block_status(8192, 4096).unwrap()[0].hole);
        d.trim(12288, 4096, false).unwrap();
        let snap = d.snapshot();
        assert!(snap[4096..].iter().all(|&b| b == 0));
        assert_eq!(
            d.read(16 * 1024 - 1, &mut [0; 2]),
            Err(DeviceError::Invalid)
        );
        assert_eq!(d.read(u64::MAX, &mut [0; 2]), Err(DeviceError::Invalid));
        assert_eq!(d.fua_count(), 1);
        d.set_read_only(true);
        assert_eq!(d.write(0, &[1], false), Err(DeviceError::NotPermitted));
    }
}
