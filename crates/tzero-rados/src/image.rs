//! An open RBD image: positional I/O, size, discard, allocation map, and its exclusive lock.

use crate::{check, cstring, ffi, Pool};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::io;
use std::ptr;
use std::sync::Arc;

/// An open RBD image (`rbd_image_t`), its head.
#[derive(Debug)]
pub struct Image {
    handle: ffi::ImageT,
    pool: Arc<Pool>,
    name: String,
}

// SAFETY: librbd image handles are thread-safe for I/O and metadata calls (QEMU's rbd driver
// and rbd-nbd issue I/O on one handle from many threads); it is closed only in `Drop`.
unsafe impl Send for Image {}
// SAFETY: as above.
unsafe impl Sync for Image {}

/// A range of an image, and whether it holds data (from `rbd_diff_iterate2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub len: u64,
    pub exists: bool,
}

/// Largest single librbd I/O: keeps `ssize_t` returns far from overflow.
const MAX_IO: usize = 1 << 30;

impl Image {
    pub(crate) fn open(pool: &Arc<Pool>, name: &str) -> io::Result<Image> {
        let c_name = cstring(name)?;
        let mut handle = ptr::null_mut();
        check(
            // SAFETY: the ioctx is live; a null snapshot name opens the head read-write.
            unsafe {
                (pool.api().rbd_open)(pool.handle, c_name.as_ptr(), &mut handle, ptr::null())
            }
            .into(),
        )?;
        Ok(Image {
            handle,
            pool: pool.clone(),
            name: name.to_owned(),
        })
    }

    fn api(&self) -> &'static ffi::Api {
        self.pool.api()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn size(&self) -> io::Result<u64> {
        let mut size = 0;
        // SAFETY: the image is open; `size` is a valid out-pointer.
        check(unsafe { (self.api().rbd_get_size)(self.handle, &mut size) }.into())?;
        Ok(size)
    }

    pub fn resize(&self, size: u64) -> io::Result<()> {
        // SAFETY: the image is open.
        check(unsafe { (self.api().rbd_resize)(self.handle, size) }.into())?;
        Ok(())
    }

    /// Reads up to `buf.len()` bytes at `offset`; returns how many the image had (fewer at
    /// its end).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            let end = (done + MAX_IO).min(buf.len());
            let piece = &mut buf[done..end];
            // SAFETY: the image is open; `piece` is writable for its length during the call.
            let n = check(unsafe {
                (self.api().rbd_read2)(
                    self.handle,
                    offset + done as u64,
                    piece.len(),
                    piece.as_mut_ptr().cast(),
                    0,
                )
            } as i64)?;
            let n = usize::try_from(n).unwrap_or(0);
            done += n;
            if n < piece.len() {
                break;
            }
        }
        Ok(done)
    }

    /// Writes all of `data` at `offset`, which must lie inside the image.
    pub fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        let mut done = 0;
        while done < data.len() {
            let piece = &data[done..(done + MAX_IO).min(data.len())];
            // SAFETY: the image is open; `piece` is readable for its length during the call.
            let n = check(unsafe {
                (self.api().rbd_write2)(
                    self.handle,
                    offset + done as u64,
                    piece.len(),
                    piece.as_ptr().cast(),
                    0,
                )
            } as i64)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "librbd wrote nothing",
                ));
            }
            done += usize::try_from(n).unwrap_or(piece.len());
        }
        Ok(())
    }

    /// Deallocates a range (reads as zeros afterwards).
    pub fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        // SAFETY: the image is open.
        check(unsafe { (self.api().rbd_discard)(self.handle, offset, len) }.into())?;
        Ok(())
    }

    /// Writes zeros over a range.
    pub fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        let mut pos = offset;
        while pos < offset + len {
            let n = (offset + len - pos).min(MAX_IO as u64);
            check(
                // SAFETY: the image is open; no buffer is passed.
                unsafe { (self.api().rbd_write_zeroes)(self.handle, pos, n as usize, 0, 0) } as i64,
            )?;
            pos += n;
        }
        Ok(())
    }

    /// Waits until every completed write is durable on the OSDs (with the client cache off,
    /// they already are; this also orders against a cache when one is configured).
    pub fn flush(&self) -> io::Result<()> {
        // SAFETY: the image is open.
        check(unsafe { (self.api().rbd_flush)(self.handle) }.into())?;
        Ok(())
    }

    /// The allocated extents of `[offset, offset+len)`, whole objects at a time (fast-diff).
    pub fn allocated(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        unsafe extern "C" fn collect(
            offset: u64,
            len: usize,
            exists: c_int,
            arg: *mut c_void,
        ) -> c_int {
            // SAFETY: `arg` is the `&mut Vec<Extent>` passed below, live for the whole call
            // to rbd_diff_iterate2, which invokes this callback synchronously.
            let out = unsafe { &mut *arg.cast::<Vec<Extent>>() };
            out.push(Extent {
                offset,
                len: len as u64,
                exists: exists != 0,
            });
            0
        }
        let mut out: Vec<Extent> = Vec::new();
        check(
            // SAFETY: the image is open; a null snapshot name diffs against "nothing", i.e. lists
            // the allocated extents; the callback and its argument are valid for the call.
            unsafe {
                (self.api().rbd_diff_iterate2)(
                    self.handle,
                    ptr::null(),
                    offset,
                    len,
                    1,
                    1,
                    collect,
                    (&mut out as *mut Vec<Extent>).cast(),
                )
            }
            .into(),
        )?;
        out.retain(|e| e.exists);
        Ok(out)
    }

    /// Takes the image's exclusive lock and keeps it: librbd will not hand it over to another
    /// client that asks (`EROFS`/`EBUSY` while another live client holds it).
    pub fn lock_exclusive(&self) -> io::Result<()> {
        check(
            // SAFETY: the image is open.
            unsafe { (self.api().rbd_lock_acquire)(self.handle, ffi::RBD_LOCK_MODE_EXCLUSIVE) }
                .into(),
        )?;
        Ok(())
    }

    /// Who holds the exclusive lock (librbd's owner strings).
    pub fn lock_owners(&self) -> io::Result<Vec<String>> {
        let mut mode: c_int = 0;
        let mut owners: [*mut c_char; 8] = [ptr::null_mut(); 8];
        let mut count = owners.len();
        // SAFETY: the image is open; `owners` has room for `count` pointers, which librbd
        // fills with strings freed by the cleanup call below.
        let ret = unsafe {
            (self.api().rbd_lock_get_owners)(
                self.handle,
                &mut mode,
                owners.as_mut_ptr(),
                &mut count,
            )
        };
        match check(ret.into()) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Vec::new()),
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        let list = owners[..count]
            .iter()
            // SAFETY: librbd filled the first `count` entries with valid C strings.
            .map(|&p| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
            .collect();
        // SAFETY: frees exactly the `count` strings librbd allocated, once.
        unsafe { (self.api().rbd_lock_get_owners_cleanup)(owners.as_mut_ptr(), count) };
        Ok(list)
    }

    /// Breaks `owner`'s exclusive lock; librbd blocklists that client first
    /// (`rbd_blocklist_on_break_lock`), so its late writes are refused by the OSDs.
    pub fn break_lock(&self, owner: &str) -> io::Result<()> {
        let owner = cstring(owner)?;
        check(
            // SAFETY: the image is open; `owner` is NUL-terminated.
            unsafe {
                (self.api().rbd_lock_break)(
                    self.handle,
                    ffi::RBD_LOCK_MODE_EXCLUSIVE,
                    owner.as_ptr(),
                )
            }
            .into(),
        )?;
        Ok(())
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        // SAFETY: the last user is going away; the handle is closed once. A failure to close
        // (the cluster gone) leaves nothing for us to clean up.
        unsafe { (self.api().rbd_close)(self.handle) };
    }
}
