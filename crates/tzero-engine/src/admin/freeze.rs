//! Freeze and unfreeze: hold host writes to FlashCopy sources (DS8000's extended long busy)
//! until released or a timeout. Writes are queued, never failed; reads never wait.

use std::time::{Duration, Instant};

use crate::engine::Engine;
use crate::error::{FlashError, Refusal};

/// The longest a freeze is held: about 136 years, for all purposes until `unfreeze`.
const MAX_FREEZE: Duration = Duration::from_secs(u32::MAX as u64);

/// When a freeze of `timeout` from now ends. The API takes any `int64` of seconds, and
/// `Instant + Duration` panics past the clock's range (it did, with the topology lock held,
/// half-way through `establish_group`), so a longer timeout is held as [`MAX_FREEZE`].
pub fn freeze_deadline(timeout: Duration) -> Instant {
    let now = Instant::now();
    // No monotonic clock is within 136 years of its end; were one, the freeze ends at once
    // rather than the daemon panicking.
    now.checked_add(timeout.min(MAX_FREEZE)).unwrap_or(now)
}

impl Engine {
    /// Holds write I/O on the given source volumes until [`Engine::unfreeze`] or `timeout`.
    pub fn freeze(&self, volumes: &[String], timeout: Duration) -> Result<(), FlashError> {
        self.inner.guard()?;
        let _admin = self.inner.admin.lock();
        // The freeze is set under the exclusive topology lock: a write holding it shared that
        // saw no freeze is ordered before it (see `VolumeHandle::write`).
        let topology = self.inner.topology.write();
        let mut found = Vec::new();
        for name in volumes {
            let vol = topology
                .by_name(name)
                .ok_or_else(|| FlashError::VolumeNotFound(name.clone()))?;
            if topology.links(vol.id).source_of.is_empty() {
                return Err(Refusal::NotASource(name.clone()).into());
            }
            found.push(vol);
        }
        let deadline = freeze_deadline(timeout);
        for vol in found {
            *vol.frozen_until.lock() = Some(deadline);
            tracing::info!(volume = %vol.name, ?timeout, "write I/O frozen");
        }
        Ok(())
    }

    /// Releases held writes (`unfreezeflash`). Every named volume must be frozen.
    pub fn unfreeze(&self, volumes: &[String]) -> Result<(), FlashError> {
        self.inner.guard()?;
        let _admin = self.inner.admin.lock();
        let mut found = Vec::new();
        for name in volumes {
            let vol = self
                .lookup(name)
                .ok_or_else(|| FlashError::VolumeNotFound(name.clone()))?;
            if !vol.is_frozen() {
                return Err(Refusal::NotFrozen(name.clone()).into());
            }
            found.push(vol);
        }
        for vol in found {
            *vol.frozen_until.lock() = None;
            vol.thawed.notify_all();
            tracing::info!(volume = %vol.name, "write I/O released");
        }
        Ok(())
    }
}
