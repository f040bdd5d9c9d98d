//! Safeguarded Copy on the engine alone: backups keep their points in time while the source
//! changes, cost one copy per changed track whatever their number, cannot be removed before
//! their retention, survive power cuts (an interrupted backup is whole or absent), and recover
//! to a new volume or onto the source. A model test checks every backup against the bytes the
//! source had at its T0, across random writes, backups, expiries, restores and power cuts.

// Test arithmetic on tiny volumes; the engine itself only builds for 64-bit targets.
#![allow(clippy::cast_possible_truncation)]

use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use tzero_engine::storage::mem::MemStorage;
use tzero_engine::{
    BackupOptions, Engine, EngineConfig, FlashOptions, OnFull, SgcError, VolumeError,
};

const TRACK: u64 = 4096;
const TRACKS: u64 = 16;
const CAP: u64 = TRACKS * TRACK;

fn config() -> EngineConfig {
    EngineConfig {
        cache_bytes: 1 << 20,
        background: false,
    }
}

fn open(storage: &Arc<MemStorage>) -> Engine {
    Engine::open(storage.clone(), config()).unwrap()
}

/// A source `src` with safeguarded capacity from pool `p`.
fn setup(e: &Engine, capacity: u64) {
    e.create_pool("p", 1 << 30).unwrap();
    e.create_volume("src", CAP, TRACK).unwrap();
    e.set_safeguarded_capacity(&["src".to_string()], capacity, "p")
        .unwrap();
}

fn take(e: &Engine, retain_ms: u64) -> u64 {
    let opts = BackupOptions {
        retain_ms,
        ..BackupOptions::default()
    };
    e.take_backups(&["src".to_string()], &opts).unwrap()[0].id
}

fn read_backup(e: &Engine, id: u64) -> Vec<u8> {
    let mut buf = vec![0; CAP as usize];
    e.read_backup(id, 0, &mut buf).unwrap();
    buf
}

fn write_track(e: &Engine, track: u64, byte: u8) {
    let h = e.handle("src").unwrap();
    h.write(track * TRACK, &vec![byte; TRACK as usize], false)
        .unwrap();
}

#[test]
fn backups_keep_their_point_in_time_and_cost_one_copy_per_change() {
    let e = open(&Arc::new(MemStorage::new()));
    setup(&e, 1 << 20);
    let mut expected = Vec::new();
    let mut ids = Vec::new();
    for round in 0..20u8 {
        let id = take(&e, 0);
        let mut image = vec![0; CAP as usize];
        e.handle("src").unwrap().read(0, &mut image).unwrap();
        expected.push(image);
        ids.push(id);
        // Two tracks change per round.
        write_track(&e, u64::from(round) % TRACKS, round + 1);
        write_track(&e, (u64::from(round) * 7 + 3) % TRACKS, round + 101);
        e.handle("src").unwrap().flush().unwrap();
    }
    for (id, image) in ids.iter().zip(&expected) {
        assert!(read_backup(&e, *id) == *image, "backup {id} lost its T0");
    }
    // One copy per changed track: the backups hold, together, exactly the tracks the rounds
    // changed (a track changed twice in a round is copied once).
    let backups = e.backups();
    let stored: u64 = backups.iter().map(|b| b.stored_tracks).sum();
    let changes: u64 = backups
        .iter()
        .skip(1)
        .filter_map(|b| b.changed_tracks)
        .sum::<u64>()
        + backups.last().unwrap().stored_tracks;
    assert_eq!(stored, changes);
    assert!(stored <= 40, "{stored} tracks stored for 40 track writes");
    // Each backup after the first knows what changed since the one before.
    assert_eq!(backups[0].changed_tracks, None);
    assert!(backups[1..].iter().all(|b| b.changed_tracks == Some(2)));
    // The changed extents between two backups are the tracks written in between.
    let extents = e.diff_backups(ids[3], Some(ids[5])).unwrap();
    let tracks: u64 = extents.iter().map(|(_, l)| l / TRACK).sum();
    assert!((2..=4).contains(&tracks), "{extents:?}");
    for (off, len) in &extents {
        assert!(
            expected[3][*off as usize..(*off + *len) as usize]
                != expected[5][*off as usize..(*off + *len) as usize]
                || *len > TRACK
        );
    }
}

#[test]
fn backups_are_immutable_until_their_retention_ends() {
    let e = open(&Arc::new(MemStorage::new()));
    setup(&e, 1 << 20);
    let id = take(&e, 3_600_000);
    let name = format!(".sgc-{id}");
    assert!(matches!(e.handle(&name), Err(VolumeError::IsBackup(_))));
    assert!(matches!(
        e.expire_backup(id),
        Err(SgcError::Retained { .. })
    ));
    assert!(matches!(
        e.delete_volume("src", true),
        Err(VolumeError::HasBackups { .. })
    ));
    assert!(matches!(
        e.delete_volume(&name, true),
        Err(VolumeError::IsBackup(_))
    ));
    assert!(matches!(
        e.delete_pool("p"),
        Err(VolumeError::PoolHoldsSafeguarded { .. })
    ));
    assert!(e.withdraw("src", &name).is_err());
    assert!(e.establish("src", &name, FlashOptions::default()).is_err());
    assert!(matches!(
        e.set_safeguarded_capacity(&["src".to_string()], 4096, "p"),
        Err(SgcError::CapacityInUse { .. })
    ));
    // Hidden from listings.
    assert!(e.volumes().iter().all(|v| !v.name.starts_with('.')));
    assert!(e.relationships().is_empty());
    // Once the retention is over (here: set to now), it goes.
    e.set_backup_retention(id, 0).unwrap();
    e.expire_backup(id).unwrap();
    assert!(e.backups().is_empty());
    e.delete_volume("src", false).unwrap();
    e.delete_pool("p").unwrap();
}

#[test]
fn full_capacity_refuses_the_new_backup_and_the_source_goes_on() {
    let e = open(&Arc::new(MemStorage::new()));
    setup(&e, 2 * TRACK);
    // T0 data that is not a hole: copies of it take space.
    for t in 0..4 {
        write_track(&e, t, 8);
    }
    let first = take(&e, 3_600_000);
    for t in 0..4 {
        write_track(&e, t, 9);
    }
    e.handle("src").unwrap().flush().unwrap();
    let err = e
        .take_backups(&["src".to_string()], &BackupOptions::default())
        .unwrap_err();
    assert!(matches!(err, SgcError::CapacityFull { .. }), "{err}");
    // The source still works, and the existing backup still reads its T0 (zeros).
    for t in 4..8 {
        write_track(&e, t, 10);
    }
    e.handle("src").unwrap().flush().unwrap();
    let t0 = read_backup(&e, first);
    assert!(t0[..4 * TRACK as usize].iter().all(|b| *b == 8));
    assert!(t0[4 * TRACK as usize..].iter().all(|b| *b == 0));
    // With expire-oldest, nothing expired is there to drop: still refused.
    let opts = BackupOptions {
        on_full: OnFull::ExpireOldest,
        ..BackupOptions::default()
    };
    assert!(e.take_backups(&["src".to_string()], &opts).is_err());
    e.set_backup_retention(first, 0).unwrap();
    let next = e.take_backups(&["src".to_string()], &opts).unwrap();
    assert_eq!(e.backups().len(), 1);
    assert_ne!(next[0].id, first);
}

#[test]
fn recovery_to_a_new_volume_and_restore_onto_the_source() {
    let e = open(&Arc::new(MemStorage::new()));
    setup(&e, 1 << 20);
    write_track(&e, 1, 1);
    let b1 = take(&e, 0);
    write_track(&e, 1, 2);
    write_track(&e, 2, 2);
    let b2 = take(&e, 0);
    // "Ransomware": everything overwritten.
    for t in 0..TRACKS {
        write_track(&e, t, 0xee);
    }
    let want1 = read_backup(&e, b1);
    let want2 = read_backup(&e, b2);
    let info = e
        .recover_backup_to(b1, "r1", FlashOptions::default())
        .unwrap();
    assert_eq!(info.source, format!(".sgc-{b1}"));
    let mut got = vec![0; CAP as usize];
    e.handle("r1").unwrap().read(0, &mut got).unwrap();
    assert!(got == want1);
    // The recovered volume is writable and the backup stays as it was.
    e.handle("r1").unwrap().write(0, &[7; 4096], true).unwrap();
    assert!(read_backup(&e, b1) == want1);
    // A backup read by a recovered volume does not expire under it.
    assert!(matches!(
        e.expire_backup(b1),
        Err(SgcError::HeldByRecovery { .. })
    ));
    // Roll the source back to b1; b2 keeps its own point in time.
    let report = e.restore_backup(b1, "src").unwrap();
    assert_eq!(report.tracks, TRACKS);
    e.handle("src").unwrap().read(0, &mut got).unwrap();
    assert!(got == want1);
    assert!(read_backup(&e, b2) == want2);
}

// ---- Model test ----------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    /// Writes `len` tracks from `track` with `byte`, then flushes.
    Write {
        track: u64,
        len: u64,
        byte: u8,
    },
    Take,
    /// Expires the `nth` backup (modulo their number).
    Expire {
        nth: usize,
    },
    Restore {
        nth: usize,
    },
    /// Recovers the `nth` backup to a new volume, checks and writes it, then removes it.
    Recover {
        nth: usize,
    },
    Reopen,
    /// A power cut after `ops` storage operations into the inner operation.
    CutDuring {
        ops: i64,
        inner: Box<Op>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let base = prop_oneof![
        5 => (0..TRACKS, 1..4u64, any::<u8>()).prop_map(|(track, len, byte)| Op::Write { track, len: len.min(TRACKS - track), byte }),
        3 => Just(Op::Take),
        1 => (0..8usize).prop_map(|nth| Op::Expire { nth }),
        1 => (0..8usize).prop_map(|nth| Op::Restore { nth }),
        1 => (0..8usize).prop_map(|nth| Op::Recover { nth }),
        1 => Just(Op::Reopen),
    ];
    prop_oneof![
        8 => base.clone(),
        2 => (1..60i64, base).prop_map(|(ops, inner)| Op::CutDuring { ops, inner: Box::new(inner) }),
    ]
}

struct Harness {
    storage: Arc<MemStorage>,
    engine: Engine,
    source: Vec<u8>,
    /// Backup id → the source's bytes at its T0.
    backups: BTreeMap<u64, Vec<u8>>,
}

impl Harness {
    fn apply(&mut self, op: &Op) -> Result<(), String> {
        let e = &self.engine;
        match op {
            Op::Write { track, len, byte } => {
                let h = e.handle("src").map_err(|x| x.to_string())?;
                let (start, n) = ((track * TRACK) as usize, (len * TRACK) as usize);
                h.write(start as u64, &vec![*byte; n], false)
                    .map_err(|x| x.to_string())?;
                h.flush().map_err(|x| x.to_string())?;
                self.source[start..start + n].fill(*byte);
            }
            Op::Take => {
                let b = e
                    .take_backups(&["src".to_string()], &BackupOptions::default())
                    .map_err(|x| x.to_string())?;
                self.backups.insert(b[0].id, self.source.clone());
            }
            Op::Expire { nth } => {
                if let Some(id) = self.nth(*nth) {
                    e.expire_backup(id).map_err(|x| x.to_string())?;
                    self.backups.remove(&id);
                }
            }
            Op::Restore { nth } => {
                if let Some(id) = self.nth(*nth) {
                    e.restore_backup(id, "src").map_err(|x| x.to_string())?;
                    self.source = self.backups[&id].clone();
                }
            }
            Op::Recover { nth } => {
                if let Some(id) = self.nth(*nth) {
                    e.recover_backup_to(id, "r", FlashOptions::default())
                        .map_err(|x| x.to_string())?;
                    self.check_recovered(id)?;
                    // The recovered volume is the host's to write; the backup stays as it was.
                    let h = self.engine.handle("r").map_err(|x| x.to_string())?;
                    h.write(0, &[0xab; 4096], true).map_err(|x| x.to_string())?;
                    self.remove_recovered(id)?;
                }
            }
            Op::Reopen => {
                e.shutdown().map_err(|x| x.to_string())?;
                self.engine =
                    Engine::open(self.storage.clone(), config()).map_err(|x| x.to_string())?;
            }
            Op::CutDuring { ops, inner } => {
                self.storage.arm(*ops);
                let result = self.apply(inner);
                let died = self.storage.is_dead();
                self.storage.arm(-1);
                if result.is_ok() && !died {
                    return Ok(());
                }
                // Everything before was flushed: what must survive is known, but for the cut
                // operation, which is either whole or absent (a restore, a mix that running it
                // again completes).
                self.storage.power_cut(&mut |_, _| false);
                self.engine = open(&self.storage);
                let ids: Vec<u64> = self.engine.backups().iter().map(|b| b.id).collect();
                match &**inner {
                    Op::Take => {
                        // Absent from the model (its apply failed) unless it came through.
                        for id in &ids {
                            if !self.backups.contains_key(id) {
                                self.backups.insert(*id, self.source.clone());
                            }
                        }
                    }
                    Op::Expire { .. } => self.backups.retain(|id, _| ids.contains(id)),
                    Op::Recover { nth } => {
                        // One commit makes the volume and its relationship, so `r` without one is
                        // only what a cut removal leaves (withdrawn, not yet deleted).
                        let id = self.nth(*nth).expect("a recovery had a backup");
                        if self.engine.volume("r").is_ok() {
                            if self.engine.relationship(&format!(".sgc-{id}"), "r").is_ok() {
                                self.remove_recovered(id)?;
                            } else {
                                self.engine
                                    .delete_volume("r", true)
                                    .map_err(|e| e.to_string())?;
                            }
                        }
                    }
                    Op::Restore { nth } => {
                        let id = self.nth(*nth).expect("a restore had a backup");
                        self.engine
                            .restore_backup(id, "src")
                            .map_err(|x| format!("restore again after the cut: {x}"))?;
                        self.source = self.backups[&id].clone();
                    }
                    Op::Write { track, len, byte } => {
                        // The write was never flushed: each track is old or new.
                        let mut now = vec![0; CAP as usize];
                        self.engine
                            .handle("src")
                            .unwrap()
                            .read(0, &mut now)
                            .unwrap();
                        for t in *track..track + len {
                            let r = (t * TRACK) as usize..((t + 1) * TRACK) as usize;
                            if now[r.clone()].iter().all(|b| b == byte) {
                                self.source[r].fill(*byte);
                            }
                        }
                        // Make what was read durable, so the model is exact again.
                        self.engine.handle("src").unwrap().flush().unwrap();
                    }
                    _ => {}
                }
                let model: Vec<u64> = self.backups.keys().copied().collect();
                if model != ids {
                    return Err(format!(
                        "backups after the cut: engine {ids:?}, model {model:?}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The recovered volume `r` reads backup `id`'s point in time (it may have been written
    /// at track 0 since, by the recovery op itself).
    fn check_recovered(&self, id: u64) -> Result<(), String> {
        let mut got = vec![0; CAP as usize];
        self.engine
            .handle("r")
            .and_then(|h| {
                h.read(0, &mut got)
                    .map_err(|e| tzero_engine::VolumeError::Storage {
                        name: "r".into(),
                        source: std::io::Error::other(e.to_string()),
                    })
            })
            .map_err(|e| e.to_string())?;
        if got != self.backups[&id] {
            return Err(format!(
                "the volume recovered from backup {id} differs from its T0"
            ));
        }
        Ok(())
    }

    fn remove_recovered(&self, id: u64) -> Result<(), String> {
        self.engine
            .withdraw(&format!(".sgc-{id}"), "r")
            .map_err(|e| e.to_string())?;
        self.engine
            .delete_volume("r", true)
            .map_err(|e| e.to_string())
    }

    fn nth(&self, nth: usize) -> Option<u64> {
        let ids: Vec<u64> = self.backups.keys().copied().collect();
        (!ids.is_empty()).then(|| ids[nth % ids.len()])
    }

    fn check(&self) -> Result<(), String> {
        let mut now = vec![0; CAP as usize];
        self.engine
            .handle("src")
            .unwrap()
            .read(0, &mut now)
            .map_err(|e| e.to_string())?;
        if now != self.source {
            return Err("the source differs from the model".into());
        }
        for (id, want) in &self.backups {
            let mut got = vec![0; CAP as usize];
            self.engine
                .read_backup(*id, 0, &mut got)
                .map_err(|e| format!("backup {id}: {e}"))?;
            if got != *want {
                let t = (0..CAP as usize).find(|i| got[*i] != want[*i]).unwrap() as u64 / TRACK;
                return Err(format!("backup {id} differs from its T0 at track {t}"));
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
    #[test]
    fn backups_match_the_model_across_power_cuts(ops in prop::collection::vec(op(), 1..40)) {
        let storage = Arc::new(MemStorage::new());
        let engine = open(&storage);
        setup(&engine, 1 << 30);
        let mut h = Harness { storage, engine, source: vec![0; CAP as usize], backups: BTreeMap::new() };
        for (i, op) in ops.iter().enumerate() {
            // Every operation here is allowed (retention 0, room to spare); storage that died
            // is handled inside `CutDuring`, which fails only on a mismatch.
            if let Err(e) = h.apply(op) {
                prop_assert!(false, "op {i} {op:?}: {e}");
            }
            if let Err(e) = h.check() {
                prop_assert!(false, "after op {i} {op:?}: {e}");
            }
        }
    }
}

#[test]
fn a_burst_of_change_is_flagged_as_an_anomaly() {
    let e = open(&Arc::new(MemStorage::new()));
    setup(&e, 1 << 20);
    let mut flagged = Vec::new();
    for round in 0..8u8 {
        // One track a round, then (round 6) every track: mass encryption.
        let tracks = if round == 6 { TRACKS } else { 1 };
        for t in 0..tracks {
            write_track(&e, t, round + 1);
        }
        e.handle("src").unwrap().flush().unwrap();
        let b = e
            .take_backups(&["src".to_string()], &BackupOptions::default())
            .unwrap();
        flagged.push(b[0].anomaly);
    }
    // Backup k reports the change since backup k-1, so the burst written before backup 6
    // shows there; the first backups have too little history to be judged.
    assert_eq!(
        flagged,
        [false, false, false, false, false, false, true, false],
        "{:?}",
        e.backups()
            .iter()
            .map(|b| b.changed_tracks)
            .collect::<Vec<_>>()
    );
    assert!(e.backups()[6].anomaly && e.backups()[6].changed_tracks == Some(TRACKS));
}
