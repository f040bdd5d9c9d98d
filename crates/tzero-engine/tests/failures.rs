//! Failure handling: a target that runs out of space fails its relationship visibly while the
//! source goes on and loses nothing; a failed metadata write poisons the engine.

// Test arithmetic on tiny volumes; the engine itself only builds for 64-bit targets.
#![allow(clippy::cast_possible_truncation)]

use std::sync::Arc;
use tzero_engine::storage::mem::MemStorage;
use tzero_engine::{
    Engine, EngineConfig, FlashError, FlashOptions, FlashState, IoError, Refusal, VolumeError,
};

const TRACK: u64 = 4096;
const CAP: u64 = 64 * TRACK;

fn manual() -> EngineConfig {
    EngineConfig {
        cache_bytes: 1 << 20,
        background: false,
    }
}

#[test]
fn full_disk_fails_the_relationship_not_the_source() {
    let storage = Arc::new(MemStorage::new());
    let engine = Engine::open(storage.clone(), manual()).unwrap();
    engine.create_volume("src", CAP, TRACK).unwrap();
    engine.create_volume("tgt", CAP, TRACK).unwrap();
    let src = engine.handle("src").unwrap();
    src.write(0, &vec![7u8; CAP as usize], false).unwrap();
    src.flush().unwrap();
    engine
        .establish(
            "src",
            "tgt",
            FlashOptions {
                background_copy: false,
                persistent: true,
                ..FlashOptions::default()
            },
        )
        .unwrap();
    // The target's disk is full (volume ids start at 1: src is 1, tgt is 2).
    storage.set_full_file(Some(&format!("vol-{:016x}.img", 2)));
    for t in 0..CAP / TRACK {
        src.write(t * TRACK, &[t as u8; 100], false).unwrap();
    }
    src.flush()
        .expect("the source flush succeeds although the target is full");
    let info = engine.relationship("src", "tgt").unwrap();
    assert_eq!(info.state, FlashState::Failed, "{info:?}");
    assert!(
        info.failure.as_deref().unwrap_or("").contains("target"),
        "{info:?}"
    );
    let mut buf = vec![0u8; CAP as usize];
    src.read(0, &mut buf).unwrap();
    for t in 0..CAP / TRACK {
        let track = &buf[(t * TRACK) as usize..((t + 1) * TRACK) as usize];
        assert_eq!(&track[..100], &[t as u8; 100][..]);
        assert!(track[100..].iter().all(|b| *b == 7));
    }
    let tgt = engine.handle("tgt").unwrap();
    assert!(matches!(
        tgt.read(0, &mut buf[..512]),
        Err(IoError::TargetFailed(_))
    ));
    // The failure is durable, and withdrawing it leaves the target marked undefined.
    storage.set_full_file(None);
    engine.shutdown().unwrap();
    drop(engine);
    let engine = Engine::open(storage.clone(), manual()).unwrap();
    assert_eq!(
        engine.relationship("src", "tgt").unwrap().state,
        FlashState::Failed
    );
    engine.withdraw("src", "tgt").unwrap();
    assert!(engine.volume("tgt").unwrap().contents_undefined);
}

#[test]
fn failed_catalog_commit_poisons_the_engine() {
    let storage = Arc::new(MemStorage::new());
    let engine = Engine::open(storage.clone(), manual()).unwrap();
    engine.create_volume("a", CAP, TRACK).unwrap();
    engine.create_volume("b", CAP, TRACK).unwrap();
    engine
        .establish(
            "a",
            "b",
            FlashOptions {
                background_copy: false,
                persistent: false,
                ..FlashOptions::default()
            },
        )
        .unwrap();
    let a = engine.handle("a").unwrap();
    a.write(0, &[1u8; 10], false).unwrap();
    // Every storage operation now fails: the destage cannot persist its bits.
    storage.arm(0);
    assert!(a.flush().is_err());
    storage.power_cut(&mut |_, _| true);
    // The disk is back, but the engine must not carry on with a state that may be wrong.
    assert!(matches!(
        a.write(0, &[2u8; 10], false),
        Err(IoError::Poisoned)
    ));
    let mut buf = [0u8; 10];
    assert!(matches!(a.read(0, &mut buf), Err(IoError::Poisoned)));
    // Every operation that could change metadata is refused before it changes anything: one
    // guard at the start of each, so none commits on top of a state that may be wrong.
    let poisoned = |r: Result<(), FlashError>| matches!(r, Err(FlashError::Poisoned));
    assert!(poisoned(
        engine.set_copy_rate("a", "b", 1 << 20).map(|_| ())
    ));
    assert!(poisoned(engine.start_background_copy("a", "b").map(|_| ())));
    assert!(poisoned(
        engine.set_target_inhibit("a", "b", true).map(|_| ())
    ));
    assert!(poisoned(engine.withdraw_after_copy("a", "b").map(|_| ())));
    assert!(poisoned(engine.withdraw("a", "b").map(|_| ())));
    assert!(poisoned(
        engine
            .establish("b", "a", FlashOptions::default())
            .map(|_| ())
    ));
    assert!(poisoned(
        engine.resync("a", "b", FlashOptions::default()).map(|_| ())
    ));
    assert!(poisoned(engine.reverse("a", "b", true).map(|_| ())));
    assert!(poisoned(engine.set_revertible("a", "b").map(|_| ())));
    assert!(poisoned(
        engine
            .freeze(&["a".into()], std::time::Duration::from_secs(1))
            .map(|_| ())
    ));
    assert!(poisoned(engine.copy_step(1).map(|_| ())));
    let vol_poisoned = |r: Result<(), VolumeError>| matches!(r, Err(VolumeError::Poisoned));
    assert!(vol_poisoned(
        engine.create_volume("c", CAP, TRACK).map(|_| ())
    ));
    assert!(vol_poisoned(engine.delete_volume("a", true).map(|_| ())));
    assert!(vol_poisoned(engine.create_pool("p", CAP).map(|_| ())));
    assert!(vol_poisoned(engine.handle("a").map(|_| ())));
    // Reads of the listing need no metadata and keep working.
    assert_eq!(engine.relationships()[0].copy_rate, 0, "nothing changed");
    drop(engine);
    let engine = Engine::open(storage, manual()).unwrap();
    let b = engine.handle("b").unwrap();
    b.read(0, &mut buf).unwrap();
    assert_eq!(buf, [0u8; 10], "the target still reads T0");
}

#[test]
fn deleting_a_volume_in_a_relationship_needs_force() {
    let storage = Arc::new(MemStorage::new());
    let engine = Engine::open(storage, manual()).unwrap();
    engine.create_volume("a", CAP, TRACK).unwrap();
    engine.create_volume("b", CAP, TRACK).unwrap();
    engine.establish("a", "b", FlashOptions::default()).unwrap();
    assert!(engine.delete_volume("a", false).is_err());
    assert_eq!(engine.relationships().len(), 1);
    engine.delete_volume("a", true).unwrap();
    assert!(engine.relationships().is_empty());
    assert!(engine.volume("a").is_err());
    assert!(engine.volume("b").unwrap().contents_undefined);
}

#[test]
fn bad_volume_parameters_are_refused() {
    let engine = Engine::open(Arc::new(MemStorage::new()), manual()).unwrap();
    assert!(engine.create_volume("", CAP, TRACK).is_err());
    assert!(engine.create_volume("../x", CAP, TRACK).is_err());
    assert!(engine.create_volume("a", 0, TRACK).is_err());
    assert!(engine.create_volume("a", 1000, TRACK).is_err());
    assert!(engine.create_volume("a", CAP, 3000).is_err());
    assert!(engine.create_volume("a", CAP, 2 << 20).is_err());
    engine.create_volume("a", CAP, TRACK).unwrap();
    assert!(engine.create_volume("a", CAP, TRACK).is_err());
    engine.create_volume("b", 2 * CAP, TRACK).unwrap();
    engine.create_volume("c", CAP, 2 * TRACK).unwrap();
    let mismatch = |r: Result<_, FlashError>, what: &str| matches!(r, Err(FlashError::Refused(Refusal::SizeMismatch { what: w, .. })) if w == what);
    assert!(mismatch(
        engine.establish("a", "b", FlashOptions::default()),
        "capacity"
    ));
    assert!(mismatch(
        engine.establish("a", "c", FlashOptions::default()),
        "track size"
    ));
    assert!(matches!(
        engine.establish("a", "a", FlashOptions::default()),
        Err(FlashError::Refused(Refusal::SameVolume(_)))
    ));
    assert!(engine
        .establish("a", "zz", FlashOptions::default())
        .is_err());
    assert!(engine.relationships().is_empty());
}

#[test]
fn twelve_targets_then_refuse_the_thirteenth() {
    let engine = Engine::open(Arc::new(MemStorage::new()), manual()).unwrap();
    engine.create_volume("s", CAP, TRACK).unwrap();
    let s = engine.handle("s").unwrap();
    for i in 0..13 {
        engine.create_volume(&format!("t{i}"), CAP, TRACK).unwrap();
    }
    for i in 0..12u8 {
        s.write(0, &[i; 64], false).unwrap();
        engine
            .establish("s", &format!("t{i}"), FlashOptions::default())
            .unwrap();
    }
    assert!(matches!(
        engine.establish("s", "t12", FlashOptions::default()),
        Err(FlashError::Refused(Refusal::TooManyTargets { max: 12, .. }))
    ));
    s.write(0, &[99; 64], false).unwrap();
    s.flush().unwrap();
    for i in 0..12u8 {
        let mut buf = [0u8; 64];
        engine
            .handle(&format!("t{i}"))
            .unwrap()
            .read(0, &mut buf)
            .unwrap();
        assert_eq!(buf, [i; 64], "target t{i} reads its own T0");
    }
}
