//! A pool (`rados_ioctx_t`): whole objects, advisory locks, and the RBD images in it.

use crate::{check, cstring, ffi, Cluster, Image};
use std::ffi::c_int;
use std::io;
use std::ptr;
use std::sync::Arc;
use std::time::Duration;

/// An open pool.
#[derive(Debug)]
pub struct Pool {
    pub(crate) handle: ffi::IoCtxT,
    pub(crate) cluster: Arc<Cluster>,
    name: String,
}

// SAFETY: librados I/O contexts may be shared between threads for object operations (the
// only state they keep per context, the snapshot and namespace, tzero never changes).
unsafe impl Send for Pool {}
// SAFETY: as above.
unsafe impl Sync for Pool {}

/// RBD features every tzero image gets.
pub const IMAGE_FEATURES: u64 = ffi::RBD_FEATURE_LAYERING
    | ffi::RBD_FEATURE_EXCLUSIVE_LOCK
    | ffi::RBD_FEATURE_OBJECT_MAP
    | ffi::RBD_FEATURE_FAST_DIFF;

impl Pool {
    pub(crate) fn open(cluster: &Arc<Cluster>, name: &str) -> io::Result<Arc<Pool>> {
        let c_name = cstring(name)?;
        let mut handle = ptr::null_mut();
        check(
            // SAFETY: the cluster is connected; `handle` is a valid out-pointer.
            unsafe {
                (cluster.api.rados_ioctx_create)(cluster.handle, c_name.as_ptr(), &mut handle)
            }
            .into(),
        )?;
        Ok(Arc::new(Pool {
            handle,
            cluster: cluster.clone(),
            name: name.to_owned(),
        }))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    pub(crate) fn api(&self) -> &'static ffi::Api {
        self.cluster.api
    }

    /// Replaces the whole object `oid` with `data` (atomic on the OSDs).
    pub fn write_full(&self, oid: &str, data: &[u8]) -> io::Result<()> {
        let oid = cstring(oid)?;
        check(
            // SAFETY: the ioctx is live; `data` is valid for `data.len()` bytes during the call.
            unsafe {
                (self.api().rados_write_full)(
                    self.handle,
                    oid.as_ptr(),
                    data.as_ptr().cast(),
                    data.len(),
                )
            }
            .into(),
        )?;
        Ok(())
    }

    /// Reads at most `max` bytes of the object `oid`; `None` when it does not exist.
    pub fn read(&self, oid: &str, max: usize) -> io::Result<Option<Vec<u8>>> {
        let c_oid = cstring(oid)?;
        let mut buf = vec![0u8; max];
        // SAFETY: the ioctx is live; `buf` is writable for `max` bytes during the call.
        let ret = unsafe {
            (self.api().rados_read)(self.handle, c_oid.as_ptr(), buf.as_mut_ptr().cast(), max, 0)
        };
        match check(ret.into()) {
            Ok(n) => {
                buf.truncate(usize::try_from(n).unwrap_or(max));
                Ok(Some(buf))
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes the object `oid`; a missing object is not an error.
    pub fn remove(&self, oid: &str) -> io::Result<()> {
        let oid = cstring(oid)?;
        // SAFETY: the ioctx is live; `oid` is NUL-terminated.
        match check(unsafe { (self.api().rados_remove)(self.handle, oid.as_ptr()) }.into()) {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => Err(e),
            _ => Ok(()),
        }
    }

    /// Takes (or, with the same `cookie`, renews) the exclusive advisory lock `name` on `oid`
    /// for `duration`, after which the OSD lets another client take it. `EBUSY`: held by
    /// another, not yet expired.
    pub fn lock_exclusive(
        &self,
        oid: &str,
        name: &str,
        cookie: &str,
        description: &str,
        duration: Duration,
    ) -> io::Result<()> {
        let (oid, name, cookie, description) = (
            cstring(oid)?,
            cstring(name)?,
            cstring(cookie)?,
            cstring(description)?,
        );
        let mut tv = ffi::TimeVal {
            tv_sec: libc::time_t::try_from(duration.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_usec: libc::suseconds_t::from(duration.subsec_micros()),
        };
        // SAFETY: the ioctx is live; every string is NUL-terminated and `tv` a valid timeval.
        let ret = unsafe {
            (self.api().rados_lock_exclusive)(
                self.handle,
                oid.as_ptr(),
                name.as_ptr(),
                cookie.as_ptr(),
                description.as_ptr(),
                &mut tv,
                ffi::LIBRADOS_LOCK_FLAG_MAY_RENEW,
            )
        };
        // Renewing a lock we hold answers EEXIST on some releases: that is success.
        match check(ret.into()) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            other => other.map(drop),
        }
    }

    /// Releases the lock taken by [`Pool::lock_exclusive`]; not holding it is not an error.
    pub fn unlock(&self, oid: &str, name: &str, cookie: &str) -> io::Result<()> {
        let (oid, name, cookie) = (cstring(oid)?, cstring(name)?, cstring(cookie)?);
        match check(
            // SAFETY: the ioctx is live; the strings are NUL-terminated.
            unsafe {
                (self.api().rados_unlock)(self.handle, oid.as_ptr(), name.as_ptr(), cookie.as_ptr())
            }
            .into(),
        ) {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => Err(e),
            _ => Ok(()),
        }
    }

    /// Creates an RBD image of `size` bytes with [`IMAGE_FEATURES`] and objects of
    /// 2^`order` bytes. `EEXIST` when it exists.
    pub fn create_image(&self, name: &str, size: u64, order: u8) -> io::Result<()> {
        let api = self.api();
        let c_name = cstring(name)?;
        let mut opts = ptr::null_mut();
        // SAFETY: `opts` is a valid out-pointer; the options are destroyed below on every path.
        unsafe { (api.rbd_image_options_create)(&mut opts) };
        let set = |option: c_int, value: u64| {
            // SAFETY: `opts` is live until destroyed below.
            check(unsafe { (api.rbd_image_options_set_uint64)(opts, option, value) }.into())
        };
        let result = set(ffi::RBD_IMAGE_OPTION_FEATURES, IMAGE_FEATURES)
            .and_then(|_| set(ffi::RBD_IMAGE_OPTION_ORDER, u64::from(order)))
            .and_then(|_| {
                // SAFETY: the ioctx and `opts` are live; `c_name` is NUL-terminated.
                check(unsafe { (api.rbd_create4)(self.handle, c_name.as_ptr(), size, opts) }.into())
            });
        // SAFETY: created above, destroyed once.
        unsafe { (api.rbd_image_options_destroy)(opts) };
        result.map(drop)
    }

    /// Removes an RBD image; a missing one is not an error.
    pub fn remove_image(&self, name: &str) -> io::Result<()> {
        let c_name = cstring(name)?;
        // SAFETY: the ioctx is live; the image is not open through this process (callers close
        // their `Image` first; librbd refuses with EBUSY otherwise).
        match check(unsafe { (self.api().rbd_remove)(self.handle, c_name.as_ptr()) }.into()) {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => Err(e),
            _ => Ok(()),
        }
    }

    /// Opens the image `name` (head, read-write). `ENOENT` when it does not exist.
    pub fn open_image(self: &Arc<Self>, name: &str) -> io::Result<Image> {
        Image::open(self, name)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // SAFETY: the last reference is going away; every Image holds an Arc of its Pool.
        unsafe { (self.api().rados_ioctx_destroy)(self.handle) };
    }
}
