//! Who has a volume open: the host connections (NBD exports) registered on a volume, so that a
//! volume in use is not deleted by mistake, and a forced delete tells each of them to go.
//!
//! The engine knows nothing of NBD or async runtimes: a connection registers a plain callback
//! ([`crate::VolumeHandle::open_export`]) and holds the returned [`ExportGuard`] for as long as
//! it serves the volume. `delete_volume` refuses while any guard is alive unless forced; a forced
//! delete marks the volume deleted (its I/O then fails) and then calls every callback once, so
//! the connection can finish what is in flight and close.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

type Revoke = Box<dyn Fn() + Send + Sync>;

/// The open exports of one volume.
#[derive(Default)]
pub(crate) struct Exports {
    next: AtomicU64,
    open: Mutex<BTreeMap<u64, Revoke>>,
}

impl std::fmt::Debug for Exports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exports")
            .field("open", &self.open.lock().len())
            .finish()
    }
}

impl Exports {
    pub fn register(self: &Arc<Self>, revoke: Revoke) -> ExportGuard {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.open.lock().insert(id, revoke);
        ExportGuard {
            exports: Arc::clone(self),
            id,
        }
    }

    pub fn count(&self) -> usize {
        self.open.lock().len()
    }

    /// Calls and forgets every callback (the volume is gone).
    pub fn revoke_all(&self) {
        let revoked = std::mem::take(&mut *self.open.lock());
        for revoke in revoked.values() {
            revoke();
        }
    }
}

/// An open export: dropped when the connection ends.
pub struct ExportGuard {
    exports: Arc<Exports>,
    id: u64,
}

impl std::fmt::Debug for ExportGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportGuard").field("id", &self.id).finish()
    }
}

impl Drop for ExportGuard {
    fn drop(&mut self) {
        self.exports.open.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn guards_count_and_revoke_once() {
        let exports = Arc::new(Exports::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&calls);
        let a = exports.register(Box::new(move || {
            c.fetch_add(1, Ordering::Relaxed);
        }));
        let b = exports.register(Box::new(|| {}));
        assert_eq!(exports.count(), 2);
        drop(b);
        assert_eq!(exports.count(), 1);
        exports.revoke_all();
        exports.revoke_all();
        assert_eq!(calls.load(Ordering::Relaxed), 1, "called once");
        assert_eq!(exports.count(), 0);
        drop(a); // its entry is already gone: nothing to remove
    }
}
