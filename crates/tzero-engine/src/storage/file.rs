//! The real backend: one sparse file per volume and one for the catalog, in the data directory.
//!
//! Data moves between files with `copy_file_range`, which lets the kernel share extents on
//! filesystems that support it (XFS with reflink, btrfs) and otherwise copies in the kernel
//! without a trip through user space.

use super::{BlockFile, Storage};
use rustix::fs::{FallocateFlags, SeekFrom};
use std::any::Any;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Files under one directory.
#[derive(Debug)]
pub struct FileStorage {
    dir: PathBuf,
}

impl FileStorage {
    /// Uses `dir`, creating it if missing.
    pub fn new(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(FileStorage {
            dir: dir.to_path_buf(),
        })
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
}

impl Storage for FileStorage {
    fn open(&self, name: &str, create: bool) -> io::Result<Arc<dyn BlockFile>> {
        let path = self.dir.join(name);
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(&path)?;
        if !existed {
            // The new directory entry must survive a power cut before anything refers to it.
            self.sync_dir()?;
        }
        Ok(Arc::new(FileBlock { file, path }))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        match std::fs::remove_file(self.dir.join(name)) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn file_system(&self) -> super::fs_limits::FileSystemInfo {
        super::fs_limits::probe(&self.dir)
    }

    fn free_bytes(&self) -> Option<u64> {
        let st = rustix::fs::statvfs(&self.dir).ok()?;
        Some(st.f_bavail.saturating_mul(st.f_frsize))
    }
}

/// One file of the data directory.
#[derive(Debug)]
pub struct FileBlock {
    file: File,
    path: PathBuf,
}

impl BlockFile for FileBlock {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => {
                    buf[done..].fill(0);
                    return Ok(());
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        rustix::fs::fallocate(
            &self.file,
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            offset,
            len,
        )
        .map_err(io::Error::from)
    }

    fn preallocate(&self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        rustix::fs::fallocate(&self.file, FallocateFlags::empty(), offset, len)
            .map_err(io::Error::from)
    }

    fn allocate_keep_size(&self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        rustix::fs::fallocate(&self.file, FallocateFlags::KEEP_SIZE, offset, len)
            .map_err(io::Error::from)
    }

    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        rustix::fs::fallocate(
            &self.file,
            FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE,
            offset,
            len,
        )
        .map_err(io::Error::from)
    }

    fn next_data(&self, offset: u64, end: u64) -> io::Result<Option<(u64, u64)>> {
        if offset >= end {
            return Ok(None);
        }
        let start = match rustix::fs::seek(&self.file, SeekFrom::Data(offset)) {
            Ok(s) => s,
            // ENXIO: no data at or after offset.
            Err(rustix::io::Errno::NXIO) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if start >= end {
            return Ok(None);
        }
        let hole = rustix::fs::seek(&self.file, SeekFrom::Hole(start))?;
        Ok(Some((start, hole.min(end))))
    }

    fn allocated_bytes(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.blocks() * 512)
    }

    fn copy_range_from(&self, src: &dyn BlockFile, offset: u64, len: u64) -> io::Result<()> {
        let Some(src_file) = src.as_any().downcast_ref::<FileBlock>() else {
            return super::copy_through_buffer(self, src, offset, len);
        };
        let mut done = 0u64;
        while done < len {
            let mut off_in = offset + done;
            let mut off_out = offset + done;
            let want = usize::try_from(len - done)
                .unwrap_or(usize::MAX)
                .min(1 << 30);
            match rustix::fs::copy_file_range(
                &src_file.file,
                Some(&mut off_in),
                &self.file,
                Some(&mut off_out),
                want,
            ) {
                // Zero means the source ended: the rest reads as zeros, so write zeros.
                Ok(0) => {
                    let zeros = vec![0u8; (len - done).min(1 << 20) as usize];
                    self.write_at(&zeros, offset + done)?;
                    done += zeros.len() as u64;
                }
                Ok(n) => done += n as u64,
                Err(rustix::io::Errno::INTR) => {}
                Err(
                    rustix::io::Errno::XDEV | rustix::io::Errno::NOSYS | rustix::io::Errno::INVAL,
                ) => {
                    return super::copy_through_buffer(self, src, offset + done, len - done);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl FileBlock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}
