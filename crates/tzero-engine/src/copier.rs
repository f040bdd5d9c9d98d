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

use crate::copy::copy_to_target;
use crate::engine::Inner;
use crate::error::FlashError;
use crate::relationship::Rel;
use crate::storage::BlockFile;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Tracks copied per step.
pub(crate) const COPY_STEP_TRACKS: u64 = 256;
/// Unpersisted bits are made durable once this many accumulate.
pub(crate) const PERSIST_EVERY_TRACKS: usize = 4096;

impl Inner {
    /// Copies up to `max_tracks` tracks of `rel`. Returns the number copied.
    pub(crate) fn copy_step(&self, rel: &Arc<Rel>, max_tracks: u64) -> Result<u64, FlashError> {
        let copied = {
            // The topology lock keeps a withdraw out while tracks move.
            let topology = self.topology.read();
            if !rel.is_live() || !rel.record.lock().background_copy {
                return Ok(0);
            }
            let tracks = self.next_tracks(rel, max_tracks);
            if tracks.is_empty() {
                0
            } else {
                let geometry = rel.geometry;
                let target = topology.volume(rel.target);
                let _guards = self.locks.exclusive(&tracks);
                let mut copied = 0;
                // Skip tracks that copy-on-write already handled while we waited; group the
                // rest by the file that holds the source's view (it differs only in cascades).
                let mut todo: Vec<(u64, Arc<dyn BlockFile>)> = Vec::new();
                for t in tracks.iter().copied().filter(|t| !rel.bitmap.get(*t)) {
                    match topology.view_file(rel.source, t) {
                        Ok(f) => todo.push((t, f.clone())),
                        Err(failed) => {
                            self.fail_rel(
                                rel,
                                &format!("its source's view is lost: {failed} failed"),
                            );
                            return Ok(copied);
                        }
                    }
                }
                let mut i = 0;
                while i < todo.len() {
                    let mut j = i + 1;
                    while j < todo.len()
                        && todo[j].0 == todo[j - 1].0 + 1
                        && Arc::ptr_eq(&todo[j].1, &todo[i].1)
                    {
                        j += 1;
                    }
                    let (first, last) = (todo[i].0, todo[j - 1].0);
                    let start = geometry.track_start(first);
                    let end = geometry.track_start(last) + geometry.track_len(last);
                    if let Err(e) = copy_to_target(&*todo[i].1, target, start, end) {
                        self.fail_rel(rel, &format!("background copy to target failed: {e}"));
                        return Ok(copied);
                    }
                    for (t, _) in &todo[i..j] {
                        rel.bitmap.set(*t);
                    }
                    rel.mark_unpersisted(todo[i..j].iter().map(|(t, _)| *t));
                    copied += (j - i) as u64;
                    i = j;
                }
                if let Some(last) = tracks.last() {
                    rel.copy_cursor.store(last + 1, Ordering::Release);
                }
                copied
            }
        };
        let full = rel.bitmap.is_full();
        let unpersisted = rel.unpersisted_len();
        // With a persister thread the copy goes on while the last batch of bits is synced and
        // committed; it waits only when far ahead. Without one (tests), persist inline.
        let inline_limit = if self.has_persister {
            4 * PERSIST_EVERY_TRACKS
        } else {
            PERSIST_EVERY_TRACKS
        };
        if full || unpersisted >= inline_limit {
            self.persist(std::slice::from_ref(rel))?;
        } else if unpersisted >= PERSIST_EVERY_TRACKS {
            self.persist_wakeup.kick();
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
        while !self.stopping.load(Ordering::Acquire) {
            let rel = self.next_copy_rel(next_rel);
            let Some(rel) = rel else {
                self.copy_wakeup.wait(Duration::from_millis(100));
                continue;
            };
            next_rel = rel.id + 1;
            let host_ops_before = self.host_ops.load(Ordering::Relaxed);
            let (rate, track_size) = (rel.record.lock().copy_rate, rel.geometry.track_size);
            // A rate-limited copy moves about 100 ms worth of tracks per step, so the limit holds
            // even below one step's worth per second.
            let step = if rate > 0 {
                (rate / 10 / track_size).clamp(1, COPY_STEP_TRACKS)
            } else {
                COPY_STEP_TRACKS
            };
            let began = Instant::now();
            let copied = match self.copy_step(&rel, step) {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, "background copy stopped");
                    self.copy_wakeup.wait(Duration::from_secs(1));
                    continue;
                }
            };
            let took = began.elapsed();
            let mut pause = Duration::ZERO;
            if self.host_ops.load(Ordering::Relaxed) != host_ops_before {
                pause = took;
            }
            if self.budget.used() > 0 {
                // Host writes wait in the cache for their copy-on-write: the destager does the
                // same copying for them, so the copier steps back further and leaves it the disk.
                pause = took * 3;
            }
            if rate > 0 && copied > 0 {
                let budget = Duration::from_secs_f64((copied * track_size) as f64 / rate as f64);
                pause = pause.max(budget.saturating_sub(took));
            }
            self.sleep_unless_stopping(pause);
        }
    }

    /// Sleeps in short slices so shutdown is never held up by a slow copy rate.
    fn sleep_unless_stopping(&self, pause: Duration) {
        let until = Instant::now() + pause;
        while !self.stopping.load(Ordering::Acquire) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }

    fn next_copy_rel(&self, from_id: u64) -> Option<Arc<Rel>> {
        let topology = self.topology.read();
        // A relationship with tracks to copy, or one whose copy is complete but which has not
        // ended or been marked copied yet (a reverse with nothing to restore starts that way).
        let wants = |r: &&Arc<Rel>| {
            let record = r.record.lock();
            r.is_live()
                && record.background_copy
                && (!r.bitmap.is_full() || record.state == crate::catalog::RelState::Active)
        };
        let next = topology
            .rels()
            .filter(|r| r.id >= from_id)
            .find(wants)
            .or_else(|| topology.rels().find(wants))
            .cloned();
        next
    }
}
