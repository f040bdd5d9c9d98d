//! Engine volumes as NBD exports: the adapter between `tzero_engine` and the
//! `tzero_nbd` server's traits.
//!
//! Every volume is an export of the same name. Each connection gets its own
//! [`VolumeHandle`], so a volume deleted while a client is connected fails
//! that client's I/O (`IoError::Deleted` → EIO) instead of reaching another
//! volume that later takes the same name. Engine I/O errors become device
//! errors in exactly one function, [`device_error`].
//!
//! Each connection also takes its volume's I/O counters ([`VolumeIo`]) when it
//! opens the export, so a request costs a few atomic adds to count, never a
//! lock or a lookup.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use tzero_engine::{Engine, ExportGuard, IoError, VolumeHandle};
use tzero_nbd::{BlockDevice, DeviceError, ExportProvider, Extent};

use crate::metrics::{Op, VolumeIo};

/// Serves every volume of an engine.
pub struct EngineExports {
    engine: Engine,
    /// Where a host's attempt at a Safeguarded Copy backup is recorded.
    audit: Option<Arc<crate::audit::AuditLog>>,
}

impl EngineExports {
    pub fn new(engine: Engine) -> Self {
        EngineExports {
            engine,
            audit: None,
        }
    }

    /// Records in `audit` every host's attempt to open a backup: a refused attempt at an
    /// immutable copy is an audit event, whichever path it took.
    pub fn with_audit(mut self, audit: Arc<crate::audit::AuditLog>) -> Self {
        self.audit = Some(audit);
        self
    }

    fn audit_backup_attempt(&self, name: &str, reason: &str) {
        let Some(audit) = &self.audit else { return };
        let record = serde_json::json!({
            "time": jiff::Timestamp::now().to_string(),
            "caller": "nbd",
            "role": "host",
            "action": "NBD open export",
            "params": { "name": name },
            "status": 409,
            "result": "error",
            "code": "volume_is_backup",
            "message": reason,
        });
        if let Err(e) = audit.append(&record) {
            tracing::error!(error = %e, "cannot record a refused backup export in the audit log");
        }
    }
}

impl ExportProvider for EngineExports {
    fn list(&self) -> Vec<String> {
        self.engine.volumes().into_iter().map(|v| v.name).collect()
    }

    fn open(&self, name: &str) -> Result<Arc<dyn BlockDevice>, String> {
        match self.engine.handle(name) {
            Ok(handle) => {
                tracing::debug!(volume = name, "NBD export opened");
                let io = crate::metrics::global().volume_io(name);
                // Registered with the engine for as long as the connection
                // holds the device: `rmfbvol` refuses it, `--force` revokes it.
                let (revoke, revoked) = watch::channel(false);
                let export = handle.open_export(move || {
                    let _ = revoke.send(true);
                });
                Ok(Arc::new(VolumeDevice {
                    handle,
                    io,
                    _export: export,
                    revoked,
                }))
            }
            Err(e) => {
                if matches!(e, tzero_engine::VolumeError::IsBackup(_)) {
                    tracing::warn!(
                        export = name,
                        "NBD client asked for a Safeguarded Copy backup: refused"
                    );
                    self.audit_backup_attempt(name, &e.to_string());
                }
                tracing::info!(
                    export = name,
                    "NBD client asked for an export we cannot open: {e}"
                );
                Err(e.to_string())
            }
        }
    }

    fn describe(&self, name: &str) -> Option<String> {
        self.engine
            .volume(name)
            .ok()
            .map(|v| format!("tzero volume {}", v.name))
    }
}

/// One client's view of one volume. `read_only` is asked once, when a client
/// connects: a target with write inhibit is advertised `NBD_FLAG_READ_ONLY`
/// to new connections, and a connection made before the inhibit gets EPERM
/// per write (`IoError::ReadOnly`).
pub struct VolumeDevice {
    handle: VolumeHandle,
    io: Arc<VolumeIo>,
    /// Keeps the connection counted as open on the volume.
    _export: ExportGuard,
    /// Set when a forced delete takes the volume away.
    revoked: watch::Receiver<bool>,
}

impl VolumeDevice {
    /// Runs one host request and counts it: its latency, its bytes if it
    /// succeeded, its failure if not.
    fn counted(
        &self,
        op: Op,
        bytes: u64,
        run: impl FnOnce() -> Result<(), IoError>,
    ) -> Result<(), DeviceError> {
        let began = Instant::now();
        let result = run();
        self.io.record(op, began, result.is_ok(), bytes);
        result.map_err(|e| self.fail(op.as_str(), e))
    }

    /// Maps an engine error and logs the ones that mean something broke.
    fn fail(&self, op: &str, e: IoError) -> DeviceError {
        let mapped = device_error(&e);
        if mapped == DeviceError::Io {
            tracing::warn!(
                volume = self.handle.name(),
                op,
                "{}",
                crate::api::error_chain(&e)
            );
        } else {
            tracing::debug!(volume = self.handle.name(), op, "{e}");
        }
        mapped
    }
}

/// The one place where engine I/O errors become NBD device errors.
pub fn device_error(e: &IoError) -> DeviceError {
    match e {
        IoError::OutOfRange { .. } => DeviceError::Invalid,
        IoError::NoSpace(_) => DeviceError::NoSpace,
        IoError::ReadOnly(_) => DeviceError::NotPermitted,
        IoError::ShuttingDown => DeviceError::ShuttingDown,
        // The target of a failed relationship (a full extent pool, a broken
        // disk): its point in time is lost, so reads fail as EIO.
        IoError::TargetFailed(_) => DeviceError::Io,
        _ => DeviceError::Io,
    }
}

impl BlockDevice for VolumeDevice {
    fn size(&self) -> u64 {
        self.handle.capacity()
    }

    fn revoked(&self) -> Option<watch::Receiver<bool>> {
        Some(self.revoked.clone())
    }

    fn preferred_block_size(&self) -> u32 {
        // Track sizes are at most 1 MiB, so this never saturates in practice.
        u32::try_from(self.handle.track_size()).unwrap_or(u32::MAX)
    }

    fn read_only(&self) -> bool {
        self.handle.is_read_only()
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        let len = buf.len() as u64;
        self.counted(Op::Read, len, || self.handle.read(offset, buf))
    }

    fn write(&self, offset: u64, data: &[u8], fua: bool) -> Result<(), DeviceError> {
        self.counted(Op::Write, data.len() as u64, || {
            self.handle.write(offset, data, fua)
        })
    }

    fn flush(&self) -> Result<(), DeviceError> {
        self.counted(Op::Flush, 0, || self.handle.flush())
    }

    /// A discard is a zeroing punch: the engine then frees the space and
    /// still copies the source's T0 data to its targets first, which a plain
    /// "ignore the hint" would also preserve but without freeing anything.
    fn trim(&self, offset: u64, len: u64, fua: bool) -> Result<(), DeviceError> {
        self.counted(Op::Trim, len, || {
            self.handle.write_zeroes(offset, len, true, fua)
        })
    }

    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        no_hole: bool,
        fua: bool,
    ) -> Result<(), DeviceError> {
        self.counted(Op::WriteZeroes, len, || {
            self.handle.write_zeroes(offset, len, !no_hole, fua)
        })
    }

    /// The engine reports allocation of what the volume's view reads from
    /// (for a target track not yet copied, the source's file), and an
    /// unallocated range there reads as zeroes: so a hole is also `zero`,
    /// which lets `qemu-img convert` and `nbdcopy` skip it.
    fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>, DeviceError> {
        let extents = self
            .handle
            .block_status(offset, len)
            .map_err(|e| self.fail("block_status", e))?;
        if extents.is_empty() {
            // The server needs at least one extent; report the range as data.
            return Ok(vec![Extent {
                length: len,
                hole: false,
                zero: false,
            }]);
        }
        Ok(extents
            .into_iter()
            .map(|e| Extent {
                length: e.length,
                hole: !e.allocated,
                zero: !e.allocated,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_error_mapping() {
        let oor = IoError::OutOfRange {
            offset: 1,
            len: 2,
            capacity: 3,
        };
        assert_eq!(device_error(&oor), DeviceError::Invalid);
        assert_eq!(
            device_error(&IoError::NoSpace("a".into())),
            DeviceError::NoSpace
        );
        assert_eq!(
            device_error(&IoError::ReadOnly("a".into())),
            DeviceError::NotPermitted
        );
        assert_eq!(
            device_error(&IoError::ShuttingDown),
            DeviceError::ShuttingDown
        );
        assert_eq!(device_error(&IoError::Deleted("a".into())), DeviceError::Io);
        assert_eq!(
            device_error(&IoError::TargetFailed("a".into())),
            DeviceError::Io
        );
        assert_eq!(device_error(&IoError::Poisoned), DeviceError::Io);
    }
}
