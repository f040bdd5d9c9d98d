//! The engine's background threads: the destager (cached writes to volume files, after their
//! copy-on-write), the persister (background-copy bits made durable off the copy path) and the
//! copier ([`crate::copier`]). Each sleeps on its own [`crate::engine::Wakeup`], so one taking a
//! wake-up never leaves another asleep.

use crate::copier::PERSIST_EVERY_TRACKS;
use crate::engine::Inner;
use crate::error::OpenError;
use crate::relationship::Rel;
use crate::volume::Volume;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The body of one of the engine's threads.
type ThreadBody = fn(&Arc<Inner>);

/// Starts the persister, destager and copier.
pub(crate) fn spawn(inner: &Arc<Inner>) -> Result<Vec<JoinHandle<()>>, OpenError> {
    let loops: [(&str, ThreadBody); 3] = [
        ("tzero-persister", Inner::persister_loop),
        ("tzero-destager", Inner::destager_loop),
        ("tzero-copier", Inner::copier_loop),
    ];
    let mut threads = Vec::new();
    for (name, body) in loops {
        let inner = inner.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || body(&inner))
            .map_err(|source| OpenError::DataDir {
                path: format!("{name} thread"),
                source,
            })?;
        threads.push(thread);
    }
    Ok(threads)
}

impl Inner {
    /// The destager thread: drains volume caches in batches until shutdown.
    fn destager_loop(self: &Arc<Self>) {
        while !self.stopping.load(Ordering::Acquire) {
            if self.destage_round() == 0 {
                self.destage_wakeup.wait(Duration::from_millis(20));
            }
        }
    }

    /// One batch for every volume with cached writes. Returns tracks destaged.
    pub(crate) fn destage_round(&self) -> usize {
        let volumes: Vec<Arc<Volume>> = self.topology.read().volumes().cloned().collect();
        let mut done = 0;
        for vol in volumes {
            let tracks: Vec<u64> = vol
                .cache
                .lock()
                .keys()
                .take(crate::destage::DESTAGE_BATCH)
                .copied()
                .collect();
            if tracks.is_empty() {
                continue;
            }
            let topology = self.topology.read();
            match self.destage_tracks(&topology, &vol, &tracks) {
                Ok(n) => done += n,
                Err(e) => {
                    tracing::error!(volume = %vol.name, error = %e, "destage failed");
                    return done;
                }
            }
        }
        done
    }

    /// The persister thread: makes background-copy bits durable off the copy path, as soon as
    /// [`PERSIST_EVERY_TRACKS`] accumulate on a relationship, and at least every second.
    fn persister_loop(self: &Arc<Self>) {
        let mut last_full_pass = Instant::now();
        while !self.stopping.load(Ordering::Acquire) {
            self.persist_wakeup.wait(Duration::from_millis(200));
            let every = last_full_pass.elapsed() >= Duration::from_secs(1);
            let due: Vec<Arc<Rel>> = self
                .topology
                .read()
                .rels()
                .filter(|r| {
                    let n = r.unpersisted_len();
                    n >= PERSIST_EVERY_TRACKS || (every && n > 0)
                })
                .cloned()
                .collect();
            if every {
                last_full_pass = Instant::now();
            }
            if !due.is_empty() {
                if let Err(e) = self.persist(&due) {
                    tracing::error!(error = %e, "persisting background copy bits failed");
                }
            }
        }
    }
}
