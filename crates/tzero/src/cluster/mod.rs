//! Several tzero nodes on one Ceph pool: one owner at a time, by lease, with fencing.
//!
//! The pool's engine (its catalog and every volume's writes) belongs to one node, the one that
//! holds the lease: an exclusive RADOS lock on the object `<prefix>lease`, taken for
//! [`ClusterConfig::lease`] and renewed five times per lease. The owner writes where it can
//! be reached (its NBD and API addresses, its RADOS client address) to `<prefix>owner`.
//! Every other node is a standby: it forwards NBD and API connections to the owner
//! ([`proxy`]) and tries for the lease twice a second.
//!
//! Takeover, once the lease has run out (the owner died or stopped renewing):
//! 1. the standby takes the lock (the OSD lets it once the old one has expired);
//! 2. it blocklists the old owner's RADOS address, so the OSDs refuse any write the old
//!    process still issues: a paused owner that wakes up cannot change a byte;
//! 3. it opens the engine, breaking the old owner's RBD exclusive locks;
//! 4. it writes its own `<prefix>owner` record and serves.
//!
//! An owner that cannot renew before its lease would have expired stops itself (exit code
//! [`FENCED_EXIT`]): its lease may be someone else's by then. Step 2 covers an owner that
//! cannot even notice (paused, or its renewals stuck).

pub mod lease;
pub mod proxy;

pub use lease::{Lease, OwnerRecord};

use anyhow::Context;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tzero_rados::Pool;

/// Exit status of a node that lost its lease.
pub const FENCED_EXIT: i32 = 75;

/// How a node takes part.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node's name, in the owner record and the logs.
    pub node: String,
    /// Prefix of the lease and owner objects (the backend's image prefix).
    pub prefix: String,
    /// Where this node serves NBD and the TCP API (forwarded to by standbys).
    pub nbd_addr: String,
    pub api_addr: String,
    /// How long a lease lasts without renewal: a takeover happens this long after the owner
    /// stopped, plus the time to open the engine.
    pub lease: Duration,
}

/// Waits until this node owns the pool, forwarding clients to the current owner meanwhile;
/// then fences the previous owner and returns the lease, kept alive by its own threads.
pub fn become_owner(
    config: &ClusterConfig,
    pool: &Arc<Pool>,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<(Arc<Lease>, Option<OwnerRecord>)> {
    let addrs = pool
        .cluster()
        .addrs()
        .context("cannot read this node's RADOS address")?;
    let record = OwnerRecord {
        node: config.node.clone(),
        nbd: config.nbd_addr.clone(),
        api: config.api_addr.clone(),
        addrs,
        since_ms: 0,
    };
    let lease = Arc::new(Lease::new(
        pool.clone(),
        &config.prefix,
        record,
        config.lease,
    ));
    let mut standby: Option<proxy::Standby> = None;
    let mut announced = false;
    loop {
        match lease.try_acquire() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => tracing::warn!("cannot take the pool lease: {e}"),
        }
        if standby.is_none() {
            standby = Some(
                proxy::Standby::start(rt, config, pool.clone())
                    .context("cannot listen as a standby")?,
            );
        }
        if !announced {
            let owner = lease::read_owner(pool, &config.prefix).ok().flatten();
            tracing::info!(
                node = %config.node,
                owner = owner.as_ref().map(|o| o.node.as_str()).unwrap_or("?"),
                "standby: another node owns the pool; forwarding NBD and API clients to it"
            );
            announced = true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let started = Instant::now();
    // Stop forwarding: the listeners are rebound by the engine's own servers.
    if let Some(standby) = standby {
        rt.block_on(standby.stop());
    }
    let previous =
        lease::read_owner(pool, &config.prefix).context("cannot read the previous owner")?;
    if let Some(old) = &previous {
        if old.addrs != lease.record().addrs && !old.addrs.is_empty() {
            pool.cluster()
                .blocklist_add(&old.addrs, 0)
                .with_context(|| {
                    format!(
                        "cannot fence the previous owner {} ({})",
                        old.node, old.addrs
                    )
                })?;
            tracing::warn!(previous = %old.node, addrs = %old.addrs, "fenced the previous owner (blocklisted)");
        }
    }
    lease.publish().context("cannot publish the owner record")?;
    lease::keep_alive(&lease);
    tracing::info!(
        node = %config.node,
        previous = previous.as_ref().map(|o| o.node.as_str()).unwrap_or("none"),
        fenced_in_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "this node owns the pool"
    );
    Ok((lease, previous))
}
