//! Storage backends behind one small trait.
//!
//! The engine keeps every byte it owns (volume data and the redb catalog) in [`BlockFile`]s
//! opened through a [`Storage`]. [`file::FileStorage`] is the real backend: sparse files in the
//! data directory, copied with `copy_file_range`. [`mem::MemStorage`] keeps pages in memory and
//! models a power cut: every write not yet synced can be dropped, and the "power" can be cut after
//! a chosen number of mutating operations. It exists for model and crash tests only.
//! [`rbd::RbdStorage`] keeps every file as an RBD image in a Ceph pool (`serve --backend ceph`).

pub mod file;
pub mod fs_limits;
#[cfg(any(test, feature = "test-util"))]
pub mod mem;
pub mod rbd;
#[cfg(any(test, feature = "test-util"))]
pub mod scratch;

use std::any::Any;
use std::fmt::Debug;
use std::io;
use std::sync::Arc;

/// A file-like store of bytes with positional I/O.
pub trait BlockFile: Send + Sync + Debug {
    /// Reads exactly `buf.len()` bytes at `offset`; bytes past the end of the file read as zero.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `data` at `offset`, growing the file if needed.
    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every completed write durable (fdatasync).
    fn sync(&self) -> io::Result<()>;
    fn len(&self) -> io::Result<u64>;
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Deallocates a range; it then reads as zeros.
    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Host discard (TRIM): like `punch_hole`, and space-accounting wrappers may give the
    /// space back. `punch_hole` itself never does, because the engine also punches holes on
    /// behalf of copies, into tracks that cached host writes have already reserved.
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.punch_hole(offset, len)
    }
    /// Allocates a range without changing what it reads (fallocate); a no-op where that is not
    /// meaningful.
    fn preallocate(&self, offset: u64, len: u64) -> io::Result<()> {
        let _ = (offset, len);
        Ok(())
    }
    /// Allocates a range, which may lie past the end, without changing the file's length or
    /// what it reads (`fallocate(FALLOC_FL_KEEP_SIZE)`): later writes there need no new space.
    /// Backends that cannot return [`io::ErrorKind::Unsupported`].
    fn allocate_keep_size(&self, offset: u64, len: u64) -> io::Result<()> {
        let _ = (offset, len);
        Err(io::ErrorKind::Unsupported.into())
    }
    /// Zeroes a range, keeping it allocated.
    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        const CHUNK: u64 = 1 << 20;
        let zeros = vec![0u8; CHUNK.min(len) as usize];
        let mut pos = offset;
        while pos < offset + len {
            let n = CHUNK.min(offset + len - pos);
            self.write_at(&zeros[..n as usize], pos)?;
            pos += n;
        }
        Ok(())
    }
    /// The first allocated (data) region that starts before `end`, at or after `offset`, clipped
    /// to `[offset, end)`; `None` when the whole range is a hole.
    fn next_data(&self, offset: u64, end: u64) -> io::Result<Option<(u64, u64)>>;
    /// Bytes of storage the file occupies.
    fn allocated_bytes(&self) -> io::Result<u64>;
    /// Copies `[offset, offset+len)` of `src` to the same range of `self`. Backends may share
    /// extents instead of moving bytes.
    fn copy_range_from(&self, src: &dyn BlockFile, offset: u64, len: u64) -> io::Result<()> {
        copy_through_buffer(self, src, offset, len)
    }
    fn as_any(&self) -> &dyn Any;
}

/// A namespace of [`BlockFile`]s: the data directory.
pub trait Storage: Send + Sync + Debug {
    /// Opens `name`; creates it (empty) when `create` is set and it does not exist.
    fn open(&self, name: &str, create: bool) -> io::Result<Arc<dyn BlockFile>>;
    /// Removes `name`; a missing file is not an error.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// The file system the files live on, to name its limits in errors.
    fn file_system(&self) -> fs_limits::FileSystemInfo {
        fs_limits::FileSystemInfo::UNKNOWN
    }
    /// Bytes an unprivileged writer may still allocate on that file system, when known.
    fn free_bytes(&self) -> Option<u64> {
        None
    }
}

/// Portable copy: read into a buffer, skip all-zero pieces where the destination is a hole.
pub(crate) fn copy_through_buffer<D: BlockFile + ?Sized>(
    dst: &D,
    src: &dyn BlockFile,
    offset: u64,
    len: u64,
) -> io::Result<()> {
    const CHUNK: u64 = 1 << 20;
    let mut buf = vec![0u8; CHUNK.min(len) as usize];
    let mut pos = offset;
    let end = offset + len;
    while pos < end {
        let n = CHUNK.min(end - pos) as usize;
        src.read_at(&mut buf[..n], pos)?;
        dst.write_at(&buf[..n], pos)?;
        pos += n as u64;
    }
    Ok(())
}
