//! The contract between the NBD server and whatever stores the bytes.
//!
//! The server knows nothing about FlashCopy: the daemon implements
//! [`ExportProvider`] (name → device) and [`BlockDevice`] (blocking I/O), and
//! the server turns NBD requests into calls on them. Device errors become NBD
//! error numbers in exactly one place, [`nbd_errno`].

use std::sync::Arc;

use crate::wire;

/// Errors a device returns; mapped to NBD error numbers in exactly one
/// function ([`nbd_errno`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    #[error("I/O error")]
    Io,
    #[error("not permitted")]
    NotPermitted,
    #[error("no space left")]
    NoSpace,
    #[error("invalid argument")]
    Invalid,
    #[error("not supported")]
    NotSupported,
    #[error("out of memory")]
    NoMemory,
    #[error("shutting down")]
    ShuttingDown,
}

/// One `base:allocation` extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub length: u64,
    /// Not allocated in the backing store (`NBD_STATE_HOLE`).
    pub hole: bool,
    /// Known to read as zeroes (`NBD_STATE_ZERO`).
    pub zero: bool,
}

/// A block device exported over NBD.
///
/// All I/O methods are blocking (they do disk I/O); the server calls them
/// from tokio's blocking pool, never on the async reactor, and may call them
/// concurrently from many threads.
pub trait BlockDevice: Send + Sync + 'static {
    /// Size in bytes, sampled when a client connects.
    fn size(&self) -> u64;
    /// Becomes `true` when the device is taken away (its volume deleted): the
    /// connection then reads no more requests, answers those in flight and
    /// closes. `None`: never taken away.
    fn revoked(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        None
    }
    /// Preferred block size (the volume's track size); the minimum is always
    /// 512 and the maximum 32 MiB. Rounded down to a power of two and clamped
    /// into that range before it is advertised.
    fn preferred_block_size(&self) -> u32;
    /// Evaluated when a client connects (sets `NBD_FLAG_READ_ONLY`) and may
    /// change later: writes must then get `NotPermitted` from the device.
    fn read_only(&self) -> bool;
    /// Fill `buf` from `offset`. The server guarantees the range is inside
    /// the size seen at connect time.
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), DeviceError>;
    /// Write `data` at `offset`; with `fua` the data must be durable before
    /// returning.
    fn write(&self, offset: u64, data: &[u8], fua: bool) -> Result<(), DeviceError>;
    /// Make every write completed so far durable.
    fn flush(&self) -> Result<(), DeviceError>;
    /// Discard a range (a hint; contents afterwards are unspecified).
    fn trim(&self, offset: u64, len: u64, fua: bool) -> Result<(), DeviceError>;
    /// Make a range read as zeroes; with `no_hole` it must stay allocated.
    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        no_hole: bool,
        fua: bool,
    ) -> Result<(), DeviceError>;
    /// `NBD_CMD_FLAG_FAST_ZERO`: zero the range only if that is faster than
    /// writing zeroes, otherwise return `Err(NotSupported)` without changing
    /// anything. The default assumes zeroing is always fast (tzero zeroes by
    /// punching/marking) and delegates to [`BlockDevice::write_zeroes`].
    fn write_zeroes_fast(
        &self,
        offset: u64,
        len: u64,
        no_hole: bool,
        fua: bool,
    ) -> Result<(), DeviceError> {
        self.write_zeroes(offset, len, no_hole, fua)
    }
    /// The client plans to access this range soon (`NBD_CMD_CACHE`).
    fn cache(&self, offset: u64, len: u64) -> Result<(), DeviceError> {
        let _ = (offset, len);
        Ok(())
    }
    /// `base:allocation` extents covering a prefix (at least one extent,
    /// total ≤ len) of `[offset, offset+len)`.
    fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>, DeviceError>;
}

/// Looks up exports by name; the daemon maps every volume to an export.
pub trait ExportProvider: Send + Sync + 'static {
    /// Names for `NBD_OPT_LIST`.
    fn list(&self) -> Vec<String>;
    /// Opens an export; `Err` says why not (it does not exist, or what keeps it from being
    /// served), and is sent to the client as the option's error message.
    fn open(&self, name: &str) -> Result<Arc<dyn BlockDevice>, String>;
    /// Optional description for `NBD_INFO_DESCRIPTION`.
    fn describe(&self, name: &str) -> Option<String> {
        let _ = name;
        None
    }
}

/// The one place where device errors become NBD error numbers.
pub fn nbd_errno(err: DeviceError) -> u32 {
    match err {
        DeviceError::Io => wire::EIO,
        DeviceError::NotPermitted => wire::EPERM,
        DeviceError::NoSpace => wire::ENOSPC,
        DeviceError::Invalid => wire::EINVAL,
        // Only meaningful for FAST_ZERO; clients treat unexpected values
        // as EINVAL, which is the right reading everywhere else.
        DeviceError::NotSupported => wire::ENOTSUP,
        DeviceError::NoMemory => wire::ENOMEM,
        DeviceError::ShuttingDown => wire::ESHUTDOWN,
    }
}

/// The preferred block size we advertise: the device's value rounded down to
/// a power of two and clamped into `[512, 32 MiB]`, as the spec requires
/// powers of two.
pub fn advertised_preferred(dev_pref: u32) -> u32 {
    let v = dev_pref.clamp(wire::MIN_BLOCK, wire::MAX_PAYLOAD);
    // Round down to a power of two: keep only the highest set bit.
    1u32 << (31 - v.leading_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping() {
        assert_eq!(nbd_errno(DeviceError::Io), 5);
        assert_eq!(nbd_errno(DeviceError::NotPermitted), 1);
        assert_eq!(nbd_errno(DeviceError::NoSpace), 28);
        assert_eq!(nbd_errno(DeviceError::Invalid), 22);
        assert_eq!(nbd_errno(DeviceError::NotSupported), 95);
        assert_eq!(nbd_errno(DeviceError::NoMemory), 12);
        assert_eq!(nbd_errno(DeviceError::ShuttingDown), 108);
    }

    #[test]
    fn preferred_is_power_of_two_in_range() {
        assert_eq!(advertised_preferred(0), 512);
        assert_eq!(advertised_preferred(4096), 4096);
        assert_eq!(advertised_preferred(65536 + 1), 65536);
        assert_eq!(advertised_preferred(u32::MAX), 32 * 1024 * 1024);
        assert_eq!(advertised_preferred(3000), 2048);
    }
}
