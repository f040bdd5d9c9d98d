//! A full host file system, for real: the data directory on a small tmpfs and on a small
//! loop-mounted ext4 (mounted by the test; needs root, and fails instead of skipping under
//! `CI=true`).
//!
//! What must hold: a relationship whose target cannot get space fails with its reason; hosts get
//! ENOSPC, never EIO; reads go on; failing, withdrawing and deleting commit (the catalog's
//! metadata reserve), so the engine never poisons itself; commits that would grow the catalog
//! are refused, not poisoned, when the reserve is short; freeing space brings everything back,
//! reserve included, without a restart. And a volume larger than the file system's largest file
//! is refused with that file system's name and limit.

// Test arithmetic on MiB pieces; the engine itself only builds for 64-bit targets.
#![allow(clippy::cast_possible_truncation)]

use std::path::Path;
use tzero_engine::storage::scratch::{FsKind, ScratchFs};
use tzero_engine::{
    CatalogError, Engine, EngineConfig, FlashOptions, FlashState, IoError, VolumeError,
};

const MIB: u64 = 1 << 20;
const TIB: u64 = 1 << 40;
const VOL: u64 = 150 * MIB;
/// The reserve the catalog keeps on a small catalog (`reserve::MIN_RESERVE`).
const RESERVE: u64 = 32 * MIB;

fn manual() -> EngineConfig {
    EngineConfig {
        cache_bytes: 16 * MIB,
        background: false,
    }
}

/// The mount point inside a fresh temporary directory; None when skipped.
fn scratch(kind: FsKind, size_mib: u64) -> Option<(ScratchFs, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let fs = ScratchFs::mount_or_skip(kind, size_mib, &dir.path().join("mnt"))?;
    Some((fs, dir))
}

fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| ((offset + i) / 4096 % 251) as u8 ^ 0x5a)
        .collect()
}

/// Writes `pattern` over the whole volume in 1 MiB pieces; stops at the first error.
fn fill(engine: &Engine, name: &str, capacity: u64) -> Result<u64, IoError> {
    let h = engine.handle(name).unwrap();
    let mut off = 0;
    while off < capacity {
        h.write(off, &pattern(off, MIB as usize), false)?;
        off += MIB;
    }
    h.flush()?;
    Ok(off)
}

fn assert_reads_pattern(engine: &Engine, name: &str, upto: u64) {
    let h = engine.handle(name).unwrap();
    let mut buf = vec![0u8; MIB as usize];
    let mut off = 0;
    while off < upto {
        h.read(off, &mut buf).unwrap();
        assert!(buf == pattern(off, MIB as usize), "{name} differs at {off}");
        off += MIB;
    }
}

/// The engine is not poisoned: a fresh handle works and a flush of a healthy volume succeeds.
fn assert_alive(engine: &Engine, name: &str) {
    let h = engine
        .handle(name)
        .expect("the engine must not be poisoned");
    let mut buf = [0u8; 4096];
    h.read(0, &mut buf).expect("reads need no metadata commit");
    h.flush().expect("flush of a healthy volume");
}

/// After freeing: the reserve is whole again and a new volume can be created, and `bytes` of it
/// written and read back.
fn assert_recovered(engine: &Engine, dir: &Path, bytes: u64) {
    assert!(
        engine.catalog_reserve() >= RESERVE,
        "reserve restored: {} bytes",
        engine.catalog_reserve()
    );
    engine.create_volume("fresh", 64 * MIB, 0).unwrap();
    let wrote = fill(engine, "fresh", bytes).unwrap();
    assert_reads_pattern(engine, "fresh", wrote);
    assert!(dir.join("catalog.redb").exists());
}

/// The repro: fill the source, establish a persistent COPY relationship, let the
/// background copy run into the full file system.
fn flashcopy_on_a_full_disk(kind: FsKind, size_mib: u64) {
    let Some((fs, _tmp)) = scratch(kind, size_mib) else {
        return;
    };
    let dir = fs.path().to_path_buf();
    {
        let engine = Engine::open_dir(&dir, manual()).unwrap();
        assert!(
            engine.catalog_reserve() >= RESERVE,
            "the catalog takes its reserve at open"
        );
        engine.create_volume("src", VOL, 0).unwrap();
        engine.create_volume("tgt", VOL, 0).unwrap();
        assert_eq!(fill(&engine, "src", VOL).unwrap(), VOL);
        engine
            .establish(
                "src",
                "tgt",
                FlashOptions {
                    background_copy: true,
                    persistent: true,
                    ..FlashOptions::default()
                },
            )
            .unwrap();
        // Copy until the target cannot take any more.
        let mut steps = 0;
        loop {
            engine
                .copy_step(4096)
                .expect("a copy step is never poisoned");
            engine.persist_bitmaps().expect("persisting bits commits");
            let info = engine.relationship("src", "tgt").unwrap();
            if info.state == FlashState::Failed {
                let reason = info.failure.unwrap();
                assert!(
                    reason.contains("background copy to target failed")
                        && reason.contains("No space left on device"),
                    "{reason}"
                );
                break;
            }
            assert_ne!(info.state, FlashState::Copied, "the target cannot fit");
            steps += 1;
            assert!(steps < 1000, "the copy never ran out of space");
        }
        // The source: reads, and writes over space it already has.
        assert_reads_pattern(&engine, "src", VOL);
        let src = engine.handle("src").unwrap();
        src.write(MIB, &pattern(MIB, MIB as usize), true).unwrap();
        assert_alive(&engine, "src");
        // A new volume while full: created (the reserve is whole), and a host write to it gets
        // a clean ENOSPC.
        engine.create_volume("extra", 64 * MIB, 0).unwrap();
        let extra = fill(&engine, "extra", 64 * MIB);
        assert!(matches!(extra, Err(IoError::NoSpace(_))), "{extra:?}");
        assert_alive(&engine, "src");
        // rmflash, rmfbvol: all commit on the full file system.
        engine.withdraw("src", "tgt").unwrap();
        engine.delete_volume("extra", false).unwrap();
        engine.delete_volume("tgt", false).unwrap();
        assert_alive(&engine, "src");
        // Only what the target had got is free again (the source still fills the disk).
        assert_recovered(&engine, &dir, 4 * MIB);
        assert_reads_pattern(&engine, "src", VOL);
        engine.shutdown().unwrap();
    }
    // What was committed on the full disk is what a reopen finds.
    let engine = Engine::open_dir(&dir, manual()).unwrap();
    let mut names: Vec<String> = engine.volumes().into_iter().map(|v| v.name).collect();
    names.sort();
    assert_eq!(names, ["fresh", "src"]);
    assert!(engine.relationships().is_empty());
    assert_reads_pattern(&engine, "src", VOL);
    assert_reads_pattern(&engine, "fresh", 4 * MIB);
}

/// No FlashCopy: one volume's writes fill the file system.
fn volume_writes_fill_the_disk(kind: FsKind, size_mib: u64) {
    let Some((fs, _tmp)) = scratch(kind, size_mib) else {
        return;
    };
    let dir = fs.path().to_path_buf();
    let engine = Engine::open_dir(&dir, manual()).unwrap();
    let cap = size_mib * MIB * 2;
    engine.create_volume("big", cap, 0).unwrap();
    let h = engine.handle("big").unwrap();
    let mut written = 0;
    let err = loop {
        match h.write(written, &pattern(written, MIB as usize), false) {
            Ok(()) => written += MIB,
            Err(e) => break e,
        }
        assert!(written < cap, "the file system never filled");
    };
    assert!(
        matches!(err, IoError::NoSpace(ref n) if n == "big"),
        "{err:?}"
    );
    assert!(
        written >= (size_mib * MIB).saturating_sub(2 * RESERVE + 32 * MIB),
        "only {written} bytes fitted"
    );
    // Reads of what fitted, and a flush of it, go on.
    assert_reads_pattern(&engine, "big", written);
    h.flush().unwrap();
    assert_alive(&engine, "big");
    engine.delete_volume("big", false).unwrap();
    assert!(matches!(
        h.write(0, &[1; 512], false),
        Err(IoError::Deleted(_))
    ));
    assert_recovered(&engine, &dir, 32 * MIB);
}

/// A catalog whose reserve the file system cannot give: growing commits are refused (catalog
/// unchanged, engine alive); once space is freed, they succeed and the reserve is whole.
fn short_reserve_refuses_then_recovers(kind: FsKind, size_mib: u64) {
    let Some((fs, _tmp)) = scratch(kind, size_mib) else {
        return;
    };
    // Leave less free space than the reserve wants before the engine ever opens.
    let ballast = fs.path().join("ballast");
    let free_target = 12 * MIB;
    {
        let f = std::fs::File::create(&ballast).unwrap();
        let st = rustix::fs::statvfs(fs.path()).unwrap();
        // Root (the tests) may also use the blocks ext4 keeps for root.
        let free = st.f_bfree * st.f_frsize;
        rustix::fs::fallocate(
            &f,
            rustix::fs::FallocateFlags::empty(),
            0,
            free - free_target,
        )
        .unwrap();
    }
    let dir = fs.path().join("data");
    let engine = Engine::open_dir(&dir, manual()).unwrap();
    let held = engine.catalog_reserve();
    assert!(held > 0 && held < RESERVE, "partial reserve: {held}");
    let refused = engine.create_volume("v", 16 * MIB, 0);
    assert!(
        matches!(
            refused,
            Err(VolumeError::Catalog(CatalogError::NoSpace { .. }))
        ),
        "{refused:?}"
    );
    let message = refused.unwrap_err().to_string();
    assert!(message.contains("metadata reserve"), "{message}");
    assert!(engine.volumes().is_empty(), "the refusal changed nothing");
    let pool = engine.create_pool("p", 16 * MIB);
    assert!(
        matches!(
            pool,
            Err(VolumeError::Catalog(CatalogError::NoSpace { .. }))
        ),
        "{pool:?}"
    );
    std::fs::remove_file(&ballast).unwrap();
    engine.create_volume("v", 16 * MIB, 0).unwrap();
    assert!(engine.catalog_reserve() >= RESERVE);
    assert_eq!(fill(&engine, "v", 16 * MIB).unwrap(), 16 * MIB);
    engine.delete_volume("v", false).unwrap();
    assert_recovered(&engine, &dir, 32 * MIB);
}

#[test]
fn tmpfs_flashcopy_on_a_full_disk() {
    flashcopy_on_a_full_disk(FsKind::Tmpfs, 200);
}

#[test]
fn ext4_flashcopy_on_a_full_disk() {
    flashcopy_on_a_full_disk(FsKind::Ext4, 256);
}

#[test]
fn tmpfs_volume_writes_fill_the_disk() {
    volume_writes_fill_the_disk(FsKind::Tmpfs, 200);
}

#[test]
fn ext4_volume_writes_fill_the_disk() {
    volume_writes_fill_the_disk(FsKind::Ext4, 256);
}

#[test]
fn tmpfs_short_reserve_refuses_then_recovers() {
    short_reserve_refuses_then_recovers(FsKind::Tmpfs, 200);
}

#[test]
fn ext4_short_reserve_refuses_then_recovers() {
    short_reserve_refuses_then_recovers(FsKind::Ext4, 256);
}

/// ext4 stops at 16 TiB (4 KiB blocks): a larger volume is refused naming ext4 and its limit,
/// the engine's own 2^60 limit stays, and 1 TiB (sparse) is fine.
#[test]
fn ext4_names_its_largest_file() {
    let Some((fs, _tmp)) = scratch(FsKind::Ext4, 256) else {
        return;
    };
    let engine = Engine::open_dir(fs.path(), manual()).unwrap();
    for capacity in [17 * TIB, 1 << 60] {
        let err = engine.create_volume("huge", capacity, 0).unwrap_err();
        match &err {
            VolumeError::TooLargeForFileSystem {
                capacity: c,
                fs: Some("ext4"),
                max: Some(max),
            } => {
                assert_eq!(*c, capacity);
                assert_eq!(*max, 16 * TIB);
            }
            other => panic!("{other:?}"),
        }
        let message = err.to_string();
        assert!(
            message.contains("exceeds the largest file ext4 allows (16 TiB)"),
            "{message}"
        );
    }
    assert!(matches!(
        engine.create_volume("over", (1 << 60) + 512, 0),
        Err(VolumeError::InvalidCapacity(_))
    ));
    assert!(engine.volumes().is_empty(), "nothing of the refusals stays");
    let strays: Vec<_> = std::fs::read_dir(fs.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("vol-"))
        .collect();
    assert!(strays.is_empty(), "no stray volume file: {strays:?}");
    engine.create_volume("tib", TIB, 0).unwrap();
    let h = engine.handle("tib").unwrap();
    h.write(TIB - MIB, &pattern(0, MIB as usize), true).unwrap();
    let mut buf = vec![0u8; MIB as usize];
    h.read(TIB - MIB, &mut buf).unwrap();
    assert!(buf == pattern(0, MIB as usize));
    assert_alive(&engine, "tib");
}

/// Limits that depend on neither the bytes written nor the catalog: a volume of more than 2^32
/// tracks is refused before anything is made (its relationships' chunk tables would not fit in
/// memory), the daemon's announced largest capacity can really be created, and a standard
/// volume larger than the free space is a refusal that leaves nothing behind.
#[test]
fn tmpfs_refuses_what_cannot_fit() {
    let Some((fs, _tmp)) = scratch(FsKind::Tmpfs, 64) else {
        return;
    };
    let engine = Engine::open_dir(fs.path(), manual()).unwrap();
    let err = engine.create_volume("many", 1 << 50, 4096).unwrap_err();
    assert!(
        matches!(
            err,
            VolumeError::TooManyTracks {
                track_size: 4096,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("at most 2^32 tracks"), "{err}");

    let largest = engine.max_volume_capacity();
    assert_eq!(largest, 4 << 50, "tmpfs: 2^32 tracks of 1 MiB");
    engine.create_volume("largest", largest, MIB).unwrap();
    let h = engine.handle("largest").unwrap();
    h.write(largest - MIB, &pattern(7, MIB as usize), true)
        .unwrap();
    let mut buf = vec![0u8; MIB as usize];
    h.read(largest - MIB, &mut buf).unwrap();
    assert!(buf == pattern(7, MIB as usize));

    engine.create_pool("p", 1 << 30).unwrap();
    let options = tzero_engine::VolumeOptions {
        pool: Some("p".into()),
        space_efficient: false,
    };
    let err = engine
        .create_volume_with("std", 512 * MIB, 0, options.clone())
        .unwrap_err();
    assert!(
        matches!(err, VolumeError::FileSystemTooFull { needed, .. } if needed == 512 * MIB),
        "{err:?}"
    );
    assert_eq!(
        engine.pool("p").unwrap().used_bytes,
        0,
        "the pool got its space back"
    );
    assert!(engine.volume("std").is_err());
    // What fits is still made, from the same pool.
    engine
        .create_volume_with("small", 8 * MIB, 0, options)
        .unwrap();
    assert_alive(&engine, "small");
}
