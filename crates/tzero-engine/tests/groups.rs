//! Consistency groups and freeze, extent pools and target write inhibit, on the engine alone
//! (the daemon's tests drive the same through NBD).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tzero_engine::storage::mem::MemStorage;
use tzero_engine::{
    Engine, EngineConfig, FlashOptions, IoError, Provisioning, VolumeError, VolumeOptions,
};

const TRACK: u64 = 4096;
const CAP: u64 = 16 * TRACK;

fn engine() -> Engine {
    Engine::open(
        Arc::new(MemStorage::new()),
        EngineConfig {
            cache_bytes: 1 << 20,
            background: true,
        },
    )
    .unwrap()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(s, t)| (s.to_string(), t.to_string()))
        .collect()
}

#[test]
fn freeze_holds_writes_until_unfreeze_and_reads_go_on() {
    let e = engine();
    for v in ["a", "b", "ta", "tb"] {
        e.create_volume(v, CAP, TRACK).unwrap();
    }
    let a = e.handle("a").unwrap();
    a.write(0, &[1; 512], false).unwrap();
    e.establish_group(
        &pairs(&[("a", "ta"), ("b", "tb")]),
        FlashOptions::default(),
        Some(Duration::from_secs(60)),
    )
    .unwrap();
    assert!(e.volume("a").unwrap().frozen && e.volume("b").unwrap().frozen);
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (a, done) = (a.clone(), done.clone());
        std::thread::spawn(move || {
            a.write(0, &[2; 512], false).unwrap();
            done.store(true, Ordering::SeqCst);
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !done.load(Ordering::SeqCst),
        "a write went through a freeze"
    );
    // Reads are never held.
    let mut buf = [0u8; 512];
    a.read(0, &mut buf).unwrap();
    assert_eq!(buf, [1; 512]);
    e.unfreeze(&["a".into(), "b".into()]).unwrap();
    writer.join().unwrap();
    assert!(done.load(Ordering::SeqCst));
    a.read(0, &mut buf).unwrap();
    assert_eq!(buf, [2; 512]);
    e.handle("ta").unwrap().read(0, &mut buf).unwrap();
    assert_eq!(buf, [1; 512], "the write held by the freeze is not in T0");
    assert!(
        e.unfreeze(&["a".into()]).is_err(),
        "nothing is frozen any more"
    );
}

#[test]
fn freeze_times_out_by_itself() {
    let e = engine();
    for v in ["a", "ta"] {
        e.create_volume(v, CAP, TRACK).unwrap();
    }
    e.establish_group(
        &pairs(&[("a", "ta")]),
        FlashOptions::default(),
        Some(Duration::from_millis(400)),
    )
    .unwrap();
    let began = Instant::now();
    e.handle("a").unwrap().write(0, &[9; 16], false).unwrap();
    let held = began.elapsed();
    assert!(held >= Duration::from_millis(300), "held only {held:?}");
    assert!(held < Duration::from_secs(5), "held {held:?}");
    assert!(!e.volume("a").unwrap().frozen);
}

#[test]
fn freezing_a_volume_that_is_not_a_source_is_refused() {
    let e = engine();
    e.create_volume("a", CAP, TRACK).unwrap();
    assert!(e.freeze(&["a".into()], Duration::from_secs(1)).is_err());
    assert!(!e.volume("a").unwrap().frozen);
    assert!(e.unfreeze(&["a".into()]).is_err());
}

#[test]
fn a_bad_pair_makes_no_pair_of_the_group() {
    let e = engine();
    for v in ["a", "b", "ta"] {
        e.create_volume(v, CAP, TRACK).unwrap();
    }
    e.create_volume("small", CAP / 2, TRACK).unwrap();
    let r = e.establish_group(
        &pairs(&[("a", "ta"), ("b", "small")]),
        FlashOptions::default(),
        Some(Duration::from_secs(60)),
    );
    assert!(r.is_err());
    assert!(e.relationships().is_empty());
    assert!(!e.volume("a").unwrap().frozen);
    let r = e.establish_group(
        &pairs(&[("a", "ta"), ("b", "ta")]),
        FlashOptions::default(),
        None,
    );
    assert!(r.is_err(), "one target named twice");
    assert!(e.relationships().is_empty());
}

#[test]
fn target_write_inhibit() {
    let e = engine();
    for v in ["s", "t"] {
        e.create_volume(v, CAP, TRACK).unwrap();
    }
    e.establish(
        "s",
        "t",
        FlashOptions {
            target_inhibit: true,
            ..FlashOptions::default()
        },
    )
    .unwrap();
    let t = e.handle("t").unwrap();
    assert!(t.is_read_only());
    assert!(matches!(t.write(0, &[1], false), Err(IoError::ReadOnly(_))));
    assert!(matches!(
        t.write_zeroes(0, 512, true, false),
        Err(IoError::ReadOnly(_))
    ));
    assert!(e.relationship("s", "t").unwrap().target_write_inhibit);
    e.set_target_inhibit("s", "t", false).unwrap();
    assert!(!t.is_read_only());
    t.write(0, &[1], false).unwrap();
    assert!(!e.handle("s").unwrap().is_read_only());
}

#[test]
fn pools_account_standard_and_thin_volumes() {
    let e = engine();
    e.create_pool("p", 8 * CAP).unwrap();
    let std_opts = VolumeOptions {
        pool: Some("p".into()),
        space_efficient: false,
    };
    let thin_opts = VolumeOptions {
        pool: Some("p".into()),
        space_efficient: true,
    };
    let v = e
        .create_volume_with("std", 4 * CAP, TRACK, std_opts.clone())
        .unwrap();
    assert_eq!(v.provisioning, Provisioning::Standard);
    assert_eq!(e.pool("p").unwrap().used_bytes, 4 * CAP);
    assert!(matches!(
        e.create_volume_with("big", 5 * CAP, TRACK, std_opts),
        Err(VolumeError::PoolTooSmall { .. })
    ));
    assert!(e.volume("big").is_err());
    assert!(matches!(
        e.create_volume_with(
            "nopool",
            CAP,
            TRACK,
            VolumeOptions {
                pool: None,
                space_efficient: true
            }
        ),
        Err(VolumeError::NeedsPool(_))
    ));
    // A thin volume larger than the free space: it takes space per track written.
    e.create_volume_with("thin", 8 * CAP, TRACK, thin_opts)
        .unwrap();
    assert_eq!(e.pool("p").unwrap().used_bytes, 4 * CAP);
    let thin = e.handle("thin").unwrap();
    thin.write(0, &[1; 100], false).unwrap();
    thin.write(3 * TRACK + 5, &[1; 100], false).unwrap();
    assert_eq!(e.pool("p").unwrap().used_bytes, 4 * CAP + 2 * TRACK);
    assert_eq!(e.volume("thin").unwrap().allocated_bytes, 2 * TRACK);
    // Fill the pool; the next new track fails with ENOSPC and nothing else changes.
    let free_tracks = e.pool("p").unwrap().free_bytes / TRACK;
    for t in 0..free_tracks {
        thin.write((10 + t) * TRACK, &[2; 10], false).unwrap();
    }
    assert_eq!(e.pool("p").unwrap().free_bytes, 0);
    let last = (10 + free_tracks) * TRACK;
    assert!(matches!(
        thin.write(last, &[3; 10], false),
        Err(IoError::NoSpace(_))
    ));
    let mut buf = [0u8; 10];
    thin.read(last, &mut buf).unwrap();
    assert_eq!(buf, [0; 10]);
    // Rewriting an allocated track still works; trimming a whole track gives it back.
    thin.write(0, &[4; 10], false).unwrap();
    thin.write_zeroes(3 * TRACK, TRACK, true, false).unwrap();
    assert_eq!(e.pool("p").unwrap().free_bytes, TRACK);
    thin.write(last, &[3; 10], false).unwrap();
    assert!(e.delete_pool("p").is_err(), "the pool still holds volumes");
    e.delete_volume("thin", false).unwrap();
    e.delete_volume("std", false).unwrap();
    assert_eq!(e.pool("p").unwrap().used_bytes, 0);
    e.delete_pool("p").unwrap();
}

#[test]
fn settling_by_sequence_number_is_all_or_none() {
    let e = engine();
    for v in ["s", "t1", "t2"] {
        e.create_volume(v, CAP, TRACK).unwrap();
    }
    let opts = FlashOptions {
        background_copy: true,
        persistent: true,
        recording: true,
        seqnum: 7,
        ..FlashOptions::default()
    };
    e.establish("s", "t1", opts).unwrap();
    e.establish("s", "t2", opts).unwrap();
    while e.copy_step(64).unwrap() > 0 {}
    // Only t1 gets a revertible resync: settling seqnum 7 must refuse and change neither.
    e.set_revertible("s", "t1").unwrap();
    e.handle("s").unwrap().write(0, &[5u8; 512], false).unwrap();
    e.resync("s", "t1", opts).unwrap();
    let refused = e.settle_seqnum(7, true);
    assert!(
        matches!(
            refused,
            Err(tzero_engine::FlashError::Refused(
                tzero_engine::Refusal::NotRevertible { .. }
            ))
        ),
        "{refused:?}"
    );
    assert!(
        e.relationship("s", "t1").unwrap().revert_pending,
        "t1 unchanged"
    );
    assert!(matches!(
        e.settle_seqnum(8, true),
        Err(tzero_engine::FlashError::SeqnumNotFound(8))
    ));
    // With both pending, both settle.
    e.set_revertible("s", "t2").unwrap();
    e.resync("s", "t2", opts).unwrap();
    let settled = e.settle_seqnum(7, false).unwrap();
    assert_eq!(settled.len(), 2);
    assert!(settled.iter().all(|f| !f.revert_pending));
}

#[test]
fn a_freeze_timeout_past_the_clock_is_held_not_a_panic() {
    // The API takes timeouts up to 2^63 - 1 s; `Instant + Duration` panicked on them, with the
    // topology lock held, after establish_group had already inserted the relationships.
    let e = engine();
    for v in ["a", "ta", "b", "tb"] {
        e.create_volume(v, CAP, TRACK).unwrap();
    }
    let forever = Duration::from_secs(i64::MAX as u64);
    e.establish_group(
        &pairs(&[("a", "ta")]),
        FlashOptions::default(),
        Some(forever),
    )
    .unwrap();
    assert!(e.volume("a").unwrap().frozen);
    e.establish("b", "tb", FlashOptions::default()).unwrap();
    e.freeze(&["b".into()], Duration::MAX).unwrap();
    assert!(e.volume("b").unwrap().frozen);
    assert!(
        tzero_engine::freeze_deadline(Duration::MAX)
            > Instant::now() + Duration::from_secs(1 << 31)
    );
    e.unfreeze(&["a".into(), "b".into()]).unwrap();
    assert!(!e.volume("a").unwrap().frozen && !e.volume("b").unwrap().frozen);
}
