//! The background copy: copies the tracks a COPY relationship still owes its target.
//!
//! A step takes a run of clear bits, locks their stripes exclusively, copies each track from the
//! source file (which still holds T0 for every clear bit) and sets the bits in memory. The bits
//! become durable lazily ([`PERSIST_EVERY_TRACKS`]): until then they are "unpersisted", and a host
//! write that would destroy the T0 data they protect goes through the destager, which makes them
//! durable first. So a crash can only make the copy redo tracks, never lose T0.
//!
//! The copier yields to host I/O: after a step during which the host did I/O, it sleeps as long
//! as the step took, so copying takes at most half the disk's time while hosts are busy. A
//! per-relationship rate limit in bytes per second applies on top.

use crate::destage::copy_span;
use crate::engine::Inner;
use crate::error::IoError;
use crate::relationship::Rel;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Tracks copied per step.
pub(crate) const COPY_STEP_TRACKS: u64 = 256;
/// Unpersisted bits are made durable once this many accumulate.
pub(crate) const PERSIST_EVERY_TRACKS: usize = 4096;

impl Inner {
    /// Copies up to `max_tracks` tracks of `rel`. Returns the number copied.
    pub(crate) fn copy_step(&self, rel: &Arc<Rel>, max_tracks: u64) -> Result<u64, IoError> {
        let copied = {
            // The target's gate keeps a withdraw out while tracks move.
            let _links = rel.target.links.read();
            if !rel.is_live() || !rel.record.lock().background_copy {
                return Ok(0);
            }
            let tracks = self.next_tracks(rel, max_tracks);
            if tracks.is_empty() {
                0
            } else {
                let geometry = rel.source.geometry;
                let _guards = self.locks.exclusive(&tracks);
                let mut copied = 0;
                for run in runs(&tracks) {
                    // Skip tracks that copy-on-write already handled while we waited.
                    let todo: Vec<u64> = run.iter().copied().filter(|t| !rel.bitmap.get(*t)).collect();
                    for sub in runs(&todo) {
                        let start = geometry.track_start(sub[0]);
                        let last = sub[sub.len() - 1];
                        let end = geometry.track_start(last) + geometry.track_len(last);
                        if let Err(e) = copy_span(&*rel.source.file, &*rel.target.file, start, end) {
                            self.fail_rel(rel, &format!("background copy to target failed: {e}"));
                            return Ok(copied);
                        }
                        let mut unpersisted = rel.unpersisted.lock();
                        for t in sub {
                            rel.bitmap.set(*t);
                            unpersisted.insert(*t);
                        }
                        copied += sub.len() as u64;
                    }
                }
                if let Some(last) = tracks.last() {
                    rel.copy_cursor.store(last + 1, Ordering::Release);
                }
                copied
            }
        };
        let full = rel.bitmap.is_full();
        if full || rel.unpersisted.lock().len() >= PERSIST_EVERY_TRACKS {
            self.persist(std::slice::from_ref(rel))?;
        }
        if full {
            self.complete(rel)?;
        }
        Ok(copied)
    }

    /// Up to `max` clear bits, from the cursor on, wrapping once.
    fn next_tracks(&self, rel: &Rel, max: u64) -> Vec<u64> {
        let mut tracks = Vec::new();
        let cursor = rel.copy_cursor.load(Ordering::Acquire);
        let mut from = cursor;
        let mut wrapped = false;
        while (tracks.len() as u64) < max {
            match rel.bitmap.next_clear(from) {
                Some(t) if !(wrapped && t >= cursor) => {
                    tracks.push(t);
                    from = t + 1;
                }
                _ if !wrapped && cursor > 0 => {
                    wrapped = true;
                    from = 0;
                }
                _ => break,
            }
        }
        tracks.sort_unstable();
        tracks
    }

    /// The copier thread: serves COPY relationships round robin until shutdown.
    pub(crate) fn copier_loop(self: &Arc<Self>) {
        let mut next_rel = 0u64;
        let mut last_persist = Instant::now();
        while !self.stopping.load(Ordering::Acquire) {
            let rel = self.next_copy_rel(next_rel);
            let Some(rel) = rel else {
                self.wait_for_work(Duration::from_millis(100));
                continue;
            };
            next_rel = rel.id + 1;
            let host_ops_before = self.host_ops.load(Ordering::Relaxed);
            let began = Instant::now();
            let copied = match self.copy_step(&rel, COPY_STEP_TRACKS) {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, "background copy stopped");
                    self.wait_for_work(Duration::from_secs(1));
                    continue;
                }
            };
            let took = began.elapsed();
            if last_persist.elapsed() > Duration::from_secs(1) {
                if let Err(e) = self.persist(std::slice::from_ref(&rel)) {
                    tracing::error!(error = %e, "persisting background copy bits failed");
                }
                last_persist = Instant::now();
            }
            let mut pause = Duration::ZERO;
            if self.host_ops.load(Ordering::Relaxed) != host_ops_before {
                pause = took;
            }
            let rate = rel.record.lock().copy_rate;
            if rate > 0 && copied > 0 {
                let bytes = copied * rel.source.geometry.track_size;
                let budget = Duration::from_secs_f64(bytes as f64 / rate as f64);
                pause = pause.max(budget.saturating_sub(took));
            }
            if !pause.is_zero() {
                std::thread::sleep(pause.min(Duration::from_secs(1)));
            }
        }
    }

    fn next_copy_rel(&self, from_id: u64) -> Option<Arc<Rel>> {
        let registry = self.registry.read();
        let wants = |r: &&Arc<Rel>| {
            r.is_live() && r.record.lock().background_copy && !r.bitmap.is_full()
        };
        registry
            .rels
            .range(from_id..)
            .map(|(_, r)| r)
            .find(wants)
            .or_else(|| registry.rels.values().find(wants))
            .cloned()
    }
}

/// Splits sorted tracks into runs of consecutive numbers.
fn runs(tracks: &[u64]) -> Vec<&[u64]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=tracks.len() {
        if i == tracks.len() || tracks[i] != tracks[i - 1] + 1 {
            if i > start {
                out.push(&tracks[start..i]);
            }
            start = i;
        }
    }
    out
}
