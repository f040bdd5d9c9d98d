//! The pool lease: an exclusive RADOS lock with a duration, renewed by a thread, watched by
//! another; and the owner record that tells standbys where the owner is.

use serde::{Deserialize, Serialize};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tzero_rados::Pool;

const LOCK_NAME: &str = "tzero-owner";
/// `EBLOCKLISTED` is `ESHUTDOWN` on Linux.
const EBLOCKLISTED: i32 = 108;

/// Who owns the pool and where it is reached (`<prefix>owner`, JSON).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OwnerRecord {
    pub node: String,
    /// NBD `host:port`.
    pub nbd: String,
    /// TCP API `host:port`.
    pub api: String,
    /// The owner's RADOS client addresses, as the blocklist takes them.
    pub addrs: String,
    /// When it took the lease (Unix ms).
    pub since_ms: u64,
}

/// The owner record, if any node ever owned the pool.
pub fn read_owner(pool: &Pool, prefix: &str) -> io::Result<Option<OwnerRecord>> {
    let Some(bytes) = pool.read(&format!("{prefix}owner"), 64 * 1024)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{prefix}owner: {e}")))
}

/// This node's lease on the pool.
#[derive(Debug)]
pub struct Lease {
    pool: Arc<Pool>,
    oid: String,
    owner_oid: String,
    cookie: String,
    record: OwnerRecord,
    duration: Duration,
    /// When the last renewal (or the acquisition) was sent, in ms since `epoch`.
    renewed_ms: AtomicU64,
    epoch: Instant,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Lease {
    pub fn new(pool: Arc<Pool>, prefix: &str, record: OwnerRecord, duration: Duration) -> Lease {
        // One cookie per process: a restarted node is a new owner, never a renewal.
        let cookie = format!(
            "{}-{}-{}",
            record.node,
            std::process::id(),
            pool.cluster().instance_id()
        );
        Lease {
            pool,
            oid: format!("{prefix}lease"),
            owner_oid: format!("{prefix}owner"),
            cookie,
            record,
            duration,
            renewed_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    pub fn record(&self) -> &OwnerRecord {
        &self.record
    }

    fn lock(&self) -> io::Result<()> {
        // Stamped before the request: the OSD's lease starts no earlier than this.
        let sent = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.pool.lock_exclusive(
            &self.oid,
            LOCK_NAME,
            &self.cookie,
            &self.record.node,
            self.duration,
        )?;
        self.renewed_ms.store(sent, Ordering::Release);
        Ok(())
    }

    /// Takes the lease if nobody holds it (or the holder's has expired).
    pub fn try_acquire(&self) -> io::Result<bool> {
        match self.lock() {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc_ebusy()) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Writes the owner record (after fencing the previous owner).
    pub fn publish(&self) -> io::Result<()> {
        let mut record = self.record.clone();
        record.since_ms = now_ms();
        let json = serde_json::to_vec(&record).map_err(io::Error::other)?;
        self.pool.write_full(&self.owner_oid, &json)
    }

    /// Time left before the lease may have expired on the OSDs.
    fn remaining(&self) -> Duration {
        let renewed = Duration::from_millis(self.renewed_ms.load(Ordering::Acquire));
        (renewed + self.duration).saturating_sub(self.epoch.elapsed())
    }

    /// Gives the lease up (clean shutdown): a standby takes over at once.
    pub fn release(&self) {
        let _ = self.pool.unlock(&self.oid, LOCK_NAME, &self.cookie);
    }
}

fn libc_ebusy() -> i32 {
    rustix::io::Errno::BUSY.raw_os_error()
}

/// Stops the process: the lease is, or may soon be, another node's.
fn fenced(why: &str) -> ! {
    tracing::error!("lost the pool lease ({why}); stopping so that only the new owner writes");
    eprintln!("tzero: lost the pool lease ({why}); stopping");
    std::process::exit(super::FENCED_EXIT);
}

/// Renews the lease five times per period, and stops the process when it cannot be sure it
/// still holds it: a renewal refused (another owner, or this node blocklisted), or no
/// successful renewal for 80 % of the period (a margin for clock rate and the request's own
/// latency).
pub fn keep_alive(lease: &Arc<Lease>) {
    let renewer = lease.clone();
    std::thread::Builder::new()
        .name("tzero-lease".into())
        .spawn(move || loop {
            std::thread::sleep(renewer.duration / 5);
            match renewer.lock() {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc_ebusy()) => fenced("another node holds it"),
                Err(e) if e.raw_os_error() == Some(EBLOCKLISTED) => {
                    fenced("this node was blocklisted")
                }
                Err(e) => tracing::warn!("cannot renew the pool lease: {e}"),
            }
        })
        .expect("spawn the lease renewer");
    let watchdog = lease.clone();
    std::thread::Builder::new()
        .name("tzero-lease-watchdog".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_millis(50));
            if watchdog.remaining() < watchdog.duration / 5 {
                fenced("not renewed in time");
            }
        })
        .expect("spawn the lease watchdog");
}
