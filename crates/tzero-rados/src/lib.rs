//! tzero's way into Ceph: librados and librbd, loaded at run time ([`ffi`]), behind a small
//! safe API ([`Cluster`], [`Pool`], [`Image`]).
//!
//! This is the one crate of the workspace where `unsafe` is allowed. Each block says why it
//! holds. The invariants they lean on:
//! - a `rados_t` is used only while its [`Cluster`] lives, an `ioctx` only while its [`Pool`]
//!   lives, and an image only while its [`Image`] lives; each holds an `Arc` of its parent, so
//!   the C objects are destroyed child first;
//! - librados and librbd handles are thread-safe (QEMU and rbd-nbd share one image handle
//!   between threads), so the wrappers are `Send + Sync`;
//! - every buffer handed to C is valid for the whole call, and its length is the one passed.
//!
//! Errors keep the negative errno that Ceph returned, as an [`std::io::Error`] with that OS
//! error, so callers can tell `ENOENT`, `ENOSPC` or `EBLOCKLISTED` (`ESHUTDOWN`, 108) apart.

pub mod ffi;
mod image;
mod pool;

pub use ffi::{ClusterStat, LoadError};
pub use image::{Extent, Image};
pub use pool::Pool;

use std::ffi::{CStr, CString};
use std::io;
use std::path::Path;
use std::ptr;
use std::sync::Arc;

/// A connection to a Ceph cluster (`rados_t`).
#[derive(Debug)]
pub struct Cluster {
    handle: ffi::RadosT,
    api: &'static ffi::Api,
}

// SAFETY: librados documents its cluster handle as safe to use from many threads at once;
// the handle is only freed in `Drop`, when no other reference exists.
unsafe impl Send for Cluster {}
// SAFETY: as above: every method takes `&self` and librados serialises internally.
unsafe impl Sync for Cluster {}

/// Why connecting failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{step}: {source}")]
    Step {
        step: String,
        #[source]
        source: io::Error,
    },
}

/// Turns a negative errno return into an error.
pub(crate) fn check(ret: i64) -> io::Result<u64> {
    if ret < 0 {
        let errno = i32::try_from(-ret).unwrap_or(libc::EIO);
        Err(io::Error::from_raw_os_error(errno))
    } else {
        Ok(ret.unsigned_abs())
    }
}

pub(crate) fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name holds a NUL byte"))
}

impl Cluster {
    /// Reads `conf`, applies `options` (e.g. timeouts) and connects as `client.<id>`.
    pub fn connect(
        conf: &Path,
        id: Option<&str>,
        options: &[(&str, &str)],
    ) -> Result<Arc<Cluster>, ConnectError> {
        let api = ffi::api()?;
        let step = |step: &str| {
            let step = step.to_owned();
            move |source| ConnectError::Step { step, source }
        };
        let id = id.map(cstring).transpose().map_err(step("client id"))?;
        let mut handle = ptr::null_mut();
        check(
            // SAFETY: `handle` is a valid out-pointer; `id` is NUL-terminated or null (admin).
            unsafe {
                (api.rados_create)(&mut handle, id.as_ref().map_or(ptr::null(), |s| s.as_ptr()))
            }
            .into(),
        )
        .map_err(step("rados_create"))?;
        // From here on `Drop` shuts the handle down, also on the error paths.
        let cluster = Cluster { handle, api };
        let path = cstring(&conf.to_string_lossy()).map_err(step("ceph.conf path"))?;
        // SAFETY: the handle is live and not yet connected; `path` is NUL-terminated.
        check(unsafe { (api.rados_conf_read_file)(cluster.handle, path.as_ptr()) }.into())
            .map_err(step(&format!("reading {}", conf.display())))?;
        for (key, value) in options {
            let (k, v) = (
                cstring(key).map_err(step(key))?,
                cstring(value).map_err(step(key))?,
            );
            // SAFETY: as above; both strings are NUL-terminated and outlive the call.
            check(unsafe { (api.rados_conf_set)(cluster.handle, k.as_ptr(), v.as_ptr()) }.into())
                .map_err(step(&format!("setting {key}={value}")))?;
        }
        // SAFETY: the handle is configured and connected once.
        check(unsafe { (api.rados_connect)(cluster.handle) }.into()).map_err(step(&format!(
            "connecting to the cluster of {}",
            conf.display()
        )))?;
        Ok(Arc::new(cluster))
    }

    /// Raw capacity of the cluster (before replication).
    pub fn stat(&self) -> io::Result<ClusterStat> {
        let mut stat = ClusterStat::default();
        // SAFETY: the handle is connected; `stat` is a valid, correctly laid out out-pointer.
        check(unsafe { (self.api.rados_cluster_stat)(self.handle, &mut stat) }.into())?;
        Ok(stat)
    }

    /// This client's global id (`client.<id>` in lock owners and blocklists).
    pub fn instance_id(&self) -> u64 {
        // SAFETY: the handle is connected.
        unsafe { (self.api.rados_get_instance_id)(self.handle) }
    }

    /// This session's addresses, in the form `ceph osd blocklist add` takes.
    pub fn addrs(&self) -> io::Result<String> {
        let mut out: *mut std::ffi::c_char = ptr::null_mut();
        // SAFETY: the handle is connected; `out` receives a malloc'd NUL-terminated string.
        check(unsafe { (self.api.rados_getaddrs)(self.handle, &mut out) }.into())?;
        if out.is_null() {
            return Err(io::Error::other("rados_getaddrs returned no address"));
        }
        // SAFETY: librados returned a valid C string, which we own and free right after copying.
        let addrs = unsafe { CStr::from_ptr(out) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: the string was allocated with malloc by librados (strdup) and is freed once.
        unsafe { libc::free(out.cast()) };
        Ok(addrs)
    }

    /// Fences `addr`: the OSDs reject every later operation of that client session, for
    /// `expire_seconds` (0: the cluster's default, an hour).
    pub fn blocklist_add(&self, addr: &str, expire_seconds: u32) -> io::Result<()> {
        let addr = cstring(addr)?;
        check(
            // SAFETY: the handle is connected; librados only reads the (mutable-typed) string.
            unsafe {
                (self.api.rados_blocklist_add)(
                    self.handle,
                    addr.as_ptr().cast_mut(),
                    expire_seconds,
                )
            }
            .into(),
        )?;
        Ok(())
    }

    /// Sends one command (JSON, as `ceph` sends it) to the monitors; returns its output
    /// buffer, or the error with the monitor's status text.
    pub fn mon_command(&self, json: &str) -> io::Result<Vec<u8>> {
        let cmd = cstring(json)?;
        let mut cmds = [cmd.as_ptr()];
        let (mut out, mut out_len, mut status, mut status_len) =
            (ptr::null_mut(), 0, ptr::null_mut(), 0);
        // SAFETY: the handle is connected; `cmds` holds one NUL-terminated command and lives
        // across the call; the four out-pointers are valid and receive buffers that librados
        // allocated, freed below with rados_buffer_free.
        let ret = unsafe {
            (self.api.rados_mon_command)(
                self.handle,
                cmds.as_mut_ptr(),
                1,
                ptr::null(),
                0,
                &mut out,
                &mut out_len,
                &mut status,
                &mut status_len,
            )
        };
        let take = |buf: *mut std::ffi::c_char, len: usize| -> Vec<u8> {
            if buf.is_null() {
                return Vec::new();
            }
            // SAFETY: librados returned `len` valid bytes at `buf`; copied, then freed once.
            let bytes = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) }.to_vec();
            // SAFETY: as above.
            unsafe { (self.api.rados_buffer_free)(buf) };
            bytes
        };
        let (out, status) = (take(out, out_len), take(status, status_len));
        match check(ret.into()) {
            Ok(_) => Ok(out),
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("{}: {}", e, String::from_utf8_lossy(&status)),
            )),
        }
    }

    /// Opens the pool `name`.
    pub fn pool(self: &Arc<Self>, name: &str) -> io::Result<Arc<Pool>> {
        Pool::open(self, name)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SAFETY: the last reference is going away; every Pool and Image holds an Arc of the
        // Cluster, so none is left that could still use the handle.
        unsafe { (self.api.rados_shutdown)(self.handle) };
    }
}
