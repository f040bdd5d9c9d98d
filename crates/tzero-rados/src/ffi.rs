//! The C API of librados and librbd that tzero uses, as a table of function pointers loaded
//! from `librados.so.2` and `librbd.so.1` the first time a Ceph backend is asked for.
//!
//! Loading at run time (not linking) keeps the daemon's binary free of a Ceph dependency: the
//! file backend, the default, runs on a machine without Ceph, and `--backend ceph` on such a
//! machine fails with one line naming the missing library. The signatures are copied by hand
//! from Pacific's (16.2) `rados/librados.h` and `rbd/librbd.h`; every one of them exists,
//! unchanged, in later releases.

use libloading::Library;
use std::ffi::{c_char, c_int, c_void};
use std::sync::OnceLock;

pub type RadosT = *mut c_void;
pub type IoCtxT = *mut c_void;
pub type ImageT = *mut c_void;
pub type WriteOpT = *mut c_void;
pub type ReadOpT = *mut c_void;
pub type OmapIterT = *mut c_void;

/// `struct rados_cluster_stat_t`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct ClusterStat {
    pub kb: u64,
    pub kb_used: u64,
    pub kb_avail: u64,
    pub num_objects: u64,
}

/// `struct timeval`, for lock durations.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct TimeVal {
    pub tv_sec: libc::time_t,
    pub tv_usec: libc::suseconds_t,
}

/// `rbd_diff_iterate2`'s callback: (offset, length, exists, arg) → 0 to go on.
pub type DiffCallback = unsafe extern "C" fn(u64, usize, c_int, *mut c_void) -> c_int;

pub const RBD_FEATURE_LAYERING: u64 = 1 << 0;
pub const RBD_FEATURE_EXCLUSIVE_LOCK: u64 = 1 << 2;
pub const RBD_FEATURE_OBJECT_MAP: u64 = 1 << 3;
pub const RBD_FEATURE_FAST_DIFF: u64 = 1 << 4;
pub const RBD_LOCK_MODE_EXCLUSIVE: c_int = 0;
pub const RBD_IMAGE_OPTION_FEATURES: c_int = 1;
pub const RBD_IMAGE_OPTION_ORDER: c_int = 2;
pub const LIBRADOS_LOCK_FLAG_MAY_RENEW: u8 = 1;
pub const LIBRADOS_CMPXATTR_OP_EQ: u8 = 1;

macro_rules! api {
    (($rados:ident, $rbd:ident) $( $lib:ident : $field:ident = $sym:literal : fn($($arg:ty),*) $(-> $ret:ty)? ;)*) => {
        /// Every function tzero calls, resolved once.
        #[derive(Debug)]
        pub struct Api {
            $( pub $field: unsafe extern "C" fn($($arg),*) $(-> $ret)?, )*
        }

        impl Api {
            fn resolve($rados: &'static Library, $rbd: &'static Library) -> Result<Api, LoadError> {
                Ok(Api {
                    $( $field: {
                        // SAFETY: the symbol's type is the prototype in the Pacific header
                        // (checked by hand, see the module header), and the library stays
                        // loaded for the life of the process (it is leaked), so the pointer
                        // never dangles.
                        let symbol = unsafe {
                            $lib.get::<unsafe extern "C" fn($($arg),*) $(-> $ret)?>($sym)
                        }
                        .map_err(|e| LoadError::Symbol {
                            symbol: String::from_utf8_lossy(&$sym[..$sym.len() - 1]).into_owned(),
                            reason: e.to_string(),
                        })?;
                        *symbol
                    }, )*
                })
            }
        }
    };
}

api! {
    (rados, rbd)
    rados: rados_create = b"rados_create\0": fn(*mut RadosT, *const c_char) -> c_int;
    rados: rados_conf_read_file = b"rados_conf_read_file\0": fn(RadosT, *const c_char) -> c_int;
    rados: rados_conf_set = b"rados_conf_set\0": fn(RadosT, *const c_char, *const c_char) -> c_int;
    rados: rados_connect = b"rados_connect\0": fn(RadosT) -> c_int;
    rados: rados_shutdown = b"rados_shutdown\0": fn(RadosT);
    rados: rados_cluster_stat = b"rados_cluster_stat\0": fn(RadosT, *mut ClusterStat) -> c_int;
    rados: rados_get_instance_id = b"rados_get_instance_id\0": fn(RadosT) -> u64;
    rados: rados_getaddrs = b"rados_getaddrs\0": fn(RadosT, *mut *mut c_char) -> c_int;
    rados: rados_blocklist_add = b"rados_blocklist_add\0": fn(RadosT, *mut c_char, u32) -> c_int;
    rados: rados_mon_command = b"rados_mon_command\0":
        fn(RadosT, *mut *const c_char, usize, *const c_char, usize, *mut *mut c_char, *mut usize, *mut *mut c_char, *mut usize) -> c_int;
    rados: rados_buffer_free = b"rados_buffer_free\0": fn(*mut c_char);
    rados: rados_ioctx_create = b"rados_ioctx_create\0": fn(RadosT, *const c_char, *mut IoCtxT) -> c_int;
    rados: rados_ioctx_destroy = b"rados_ioctx_destroy\0": fn(IoCtxT);
    rados: rados_write_full = b"rados_write_full\0": fn(IoCtxT, *const c_char, *const c_char, usize) -> c_int;
    rados: rados_read = b"rados_read\0": fn(IoCtxT, *const c_char, *mut c_char, usize, u64) -> c_int;
    rados: rados_remove = b"rados_remove\0": fn(IoCtxT, *const c_char) -> c_int;
    rados: rados_lock_exclusive = b"rados_lock_exclusive\0":
        fn(IoCtxT, *const c_char, *const c_char, *const c_char, *const c_char, *mut TimeVal, u8) -> c_int;
    rados: rados_unlock = b"rados_unlock\0": fn(IoCtxT, *const c_char, *const c_char, *const c_char) -> c_int;
    rados: rados_create_write_op = b"rados_create_write_op\0": fn() -> WriteOpT;
    rados: rados_release_write_op = b"rados_release_write_op\0": fn(WriteOpT);
    rados: rados_write_op_create = b"rados_write_op_create\0": fn(WriteOpT, c_int, *const c_char);
    rados: rados_write_op_omap_set2 = b"rados_write_op_omap_set2\0":
        fn(WriteOpT, *const *const c_char, *const *const c_char, *const usize, *const usize, usize);
    rados: rados_write_op_omap_rm_keys2 = b"rados_write_op_omap_rm_keys2\0":
        fn(WriteOpT, *const *const c_char, *const usize, usize);
    rados: rados_write_op_omap_cmp2 = b"rados_write_op_omap_cmp2\0":
        fn(WriteOpT, *const c_char, u8, *const c_char, usize, usize, *mut c_int);
    rados: rados_write_op_operate2 = b"rados_write_op_operate2\0":
        fn(WriteOpT, IoCtxT, *const c_char, *mut libc::timespec, c_int) -> c_int;
    rados: rados_create_read_op = b"rados_create_read_op\0": fn() -> ReadOpT;
    rados: rados_release_read_op = b"rados_release_read_op\0": fn(ReadOpT);
    rados: rados_read_op_omap_get_vals2 = b"rados_read_op_omap_get_vals2\0":
        fn(ReadOpT, *const c_char, *const c_char, u64, *mut OmapIterT, *mut u8, *mut c_int);
    rados: rados_read_op_operate = b"rados_read_op_operate\0": fn(ReadOpT, IoCtxT, *const c_char, c_int) -> c_int;
    rados: rados_omap_get_next2 = b"rados_omap_get_next2\0":
        fn(OmapIterT, *mut *mut c_char, *mut *mut c_char, *mut usize, *mut usize) -> c_int;
    rados: rados_omap_get_end = b"rados_omap_get_end\0": fn(OmapIterT);

    rbd: rbd_image_options_create = b"rbd_image_options_create\0": fn(*mut *mut c_void);
    rbd: rbd_image_options_destroy = b"rbd_image_options_destroy\0": fn(*mut c_void);
    rbd: rbd_image_options_set_uint64 = b"rbd_image_options_set_uint64\0": fn(*mut c_void, c_int, u64) -> c_int;
    rbd: rbd_create4 = b"rbd_create4\0": fn(IoCtxT, *const c_char, u64, *mut c_void) -> c_int;
    rbd: rbd_remove = b"rbd_remove\0": fn(IoCtxT, *const c_char) -> c_int;
    rbd: rbd_open = b"rbd_open\0": fn(IoCtxT, *const c_char, *mut ImageT, *const c_char) -> c_int;
    rbd: rbd_close = b"rbd_close\0": fn(ImageT) -> c_int;
    rbd: rbd_get_size = b"rbd_get_size\0": fn(ImageT, *mut u64) -> c_int;
    rbd: rbd_resize = b"rbd_resize\0": fn(ImageT, u64) -> c_int;
    rbd: rbd_read2 = b"rbd_read2\0": fn(ImageT, u64, usize, *mut c_char, c_int) -> isize;
    rbd: rbd_write2 = b"rbd_write2\0": fn(ImageT, u64, usize, *const c_char, c_int) -> isize;
    rbd: rbd_discard = b"rbd_discard\0": fn(ImageT, u64, u64) -> c_int;
    rbd: rbd_write_zeroes = b"rbd_write_zeroes\0": fn(ImageT, u64, usize, c_int, c_int) -> isize;
    rbd: rbd_flush = b"rbd_flush\0": fn(ImageT) -> c_int;
    rbd: rbd_diff_iterate2 = b"rbd_diff_iterate2\0":
        fn(ImageT, *const c_char, u64, u64, u8, u8, DiffCallback, *mut c_void) -> c_int;
    rbd: rbd_lock_acquire = b"rbd_lock_acquire\0": fn(ImageT, c_int) -> c_int;
    rbd: rbd_lock_release = b"rbd_lock_release\0": fn(ImageT) -> c_int;
    rbd: rbd_lock_get_owners = b"rbd_lock_get_owners\0": fn(ImageT, *mut c_int, *mut *mut c_char, *mut usize) -> c_int;
    rbd: rbd_lock_get_owners_cleanup = b"rbd_lock_get_owners_cleanup\0": fn(*mut *mut c_char, usize);
    rbd: rbd_lock_break = b"rbd_lock_break\0": fn(ImageT, c_int, *const c_char) -> c_int;
}

/// Why the Ceph libraries could not be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("cannot load {library} ({reason}); install Debian's librados2 and librbd1 (Ceph 16.2 or later)")]
    Library {
        library: &'static str,
        reason: String,
    },
    #[error(
        "the Ceph library has no {symbol} ({reason}); tzero needs Ceph 16.2 (Pacific) or later"
    )]
    Symbol { symbol: String, reason: String },
}

static API: OnceLock<Result<Api, LoadError>> = OnceLock::new();

/// The loaded API, loading it on first use.
pub fn api() -> Result<&'static Api, LoadError> {
    API.get_or_init(load).as_ref().map_err(Clone::clone)
}

fn open(library: &'static str) -> Result<&'static Library, LoadError> {
    // SAFETY: loading runs the library's initialisers; librados and librbd are ordinary C++
    // shared libraries whose initialisers only set up their own globals.
    let lib = unsafe { Library::new(library) }.map_err(|e| LoadError::Library {
        library,
        reason: e.to_string(),
    })?;
    // Leaked on purpose: the function pointers in `Api` must stay valid for the whole process.
    Ok(Box::leak(Box::new(lib)))
}

fn load() -> Result<Api, LoadError> {
    let rados = open("librados.so.2")?;
    let rbd = open("librbd.so.1")?;
    Api::resolve(rados, rbd)
}
