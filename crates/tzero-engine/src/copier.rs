//! The background copy: copies the tracks a COPY relationship still owes its target.
//!
//! A step takes a run of clear bits, locks their stripes exclusively, copies each track from the
//! source file (which still holds T0 for every clear bit) and sets the bits in memory. The bits
//! become durable lazily ([`PERSIST_EVERY_TRACKS`]): until then they are "unpersisted", and a host
//! write that would destroy the T0 data they protect goes through the destager, which makes them
//! durable first. So a crash can only make the copy redo tracks, never lose T0.
//!
//! One copier thread serves every COPY relationship. Each relationship is paced on its own: a
//! rate-limited one (bytes per second) is not due again until the bytes of its last step have
//! had their time at its current rate, and the copier takes the due relationships round robin,
//! waiting for the earliest one only when none is due. So a slow relationship never holds up a
//! fast one, and a rate change applies from the next decision on.
//!
//! The copier yields to host I/O, for all relationships alike since they share the disk: after
//! a step during which the host did I/O, it sleeps as long as the step took, so copying takes at
//! most half the disk's time while hosts are busy.

use crate::copy::copy_to_target;
use crate::engine::Inner;
use crate::error::FlashError;
use crate::relationship::Rel;
use crate::storage::BlockFile;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Tracks copied per step.
pub(crate) const COPY_STEP_TRACKS: u64 = 256;
/// Unpersisted bits are made durable once this many accumulate.
pub(crate) const PERSIST_EVERY_TRACKS: usize = 4096;
/// The copier looks at the relationships at least this often even without a kick, in case one
/// came to want copying without one.
const RESCAN: Duration = Duration::from_millis(100);

/// A rate-limited relationship's last step: when it began and how many bytes it copied. The
/// next step is due once those bytes have had their time at the rate set *now*, so
/// `set_copy_rate` (which kicks the copier) takes effect at once, up or down.
#[derive(Debug, Clone, Copy)]
struct Paced {
    began: Instant,
    bytes: u64,
}

impl Paced {
    fn due(self, rate: u64) -> Instant {
        if rate == 0 {
            return self.began;
        }
        self.began + Duration::from_secs_f64(self.bytes as f64 / rate as f64)
    }
}

/// What the copier does next.
enum Next {
    Copy(Arc<Rel>),
    /// Relationships want copying, but none is due before this instant.
    WaitUntil(Instant),
    Idle,
}

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
                // rest by the file that holds the target's view (the source's, or a sibling holding the
                // track shared, or further up a cascade).
                let mut todo: Vec<(u64, Arc<dyn BlockFile>)> = Vec::new();
                for t in tracks.iter().copied().filter(|t| !rel.bitmap.get(*t)) {
                    match topology.view_file(rel.target, t) {
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
                    rel.counters.add_copied(end - start);
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

    /// The copier thread: serves the due COPY relationships round robin until shutdown.
    pub(crate) fn copier_loop(self: &Arc<Self>) {
        let mut next_rel = 0u64;
        // Per relationship id, kept here rather than in `Rel`: only this thread paces.
        let mut paced: HashMap<u64, Paced> = HashMap::new();
        while !self.stopping.load(Ordering::Acquire) {
            let now = Instant::now();
            let rel = match self.next_copy_rel(next_rel, &mut paced, now) {
                Next::Copy(rel) => rel,
                // A kick (new work, a rate change, shutdown) ends the wait early.
                Next::WaitUntil(due) => {
                    self.copy_wakeup
                        .wait(due.saturating_duration_since(now).min(RESCAN));
                    continue;
                }
                Next::Idle => {
                    self.copy_wakeup.wait(RESCAN);
                    continue;
                }
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
            // The limit is this relationship's alone: it only pushes back its own next step.
            if rate > 0 && copied > 0 {
                paced.insert(
                    rel.id,
                    Paced {
                        began,
                        bytes: copied * track_size,
                    },
                );
            } else {
                paced.remove(&rel.id);
            }
            let mut pause = Duration::ZERO;
            if self.host_ops.load(Ordering::Relaxed) != host_ops_before {
                pause = took;
            }
            if self.budget.used() > 0 {
                // Host writes wait in the cache for their copy-on-write: the destager does the
                // same copying for them, so the copier steps back further and leaves it the disk.
                pause = took * 3;
            }
            self.sleep_unless_stopping(pause);
        }
    }

    /// Sleeps in short slices so shutdown is never held up by a long yield to host I/O.
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

    /// The first relationship from `from_id` on (wrapping) that wants copying and is due, or
    /// when the earliest one that wants copying will be due.
    fn next_copy_rel(&self, from_id: u64, paced: &mut HashMap<u64, Paced>, now: Instant) -> Next {
        let topology = self.topology.read();
        paced.retain(|id, _| topology.rel(*id).is_some());
        let mut earliest: Option<Instant> = None;
        let ordered = topology
            .rels()
            .filter(|r| r.id >= from_id)
            .chain(topology.rels().filter(|r| r.id < from_id));
        for r in ordered {
            let id = &r.id;
            let rate = {
                let record = r.record.lock();
                // A relationship with tracks to copy, or one whose copy is complete but which
                // has not ended or been marked copied yet (a reverse with nothing to restore
                // starts that way).
                let wants = r.is_live()
                    && record.background_copy
                    && (!r.bitmap.is_full() || record.state == crate::catalog::RelState::Active);
                if !wants {
                    continue;
                }
                record.copy_rate
            };
            let due = paced.get(id).map_or(now, |p| p.due(rate));
            if due <= now {
                return Next::Copy(r.clone());
            }
            earliest = Some(earliest.map_or(due, |e| e.min(due)));
        }
        earliest.map_or(Next::Idle, Next::WaitUntil)
    }
}
