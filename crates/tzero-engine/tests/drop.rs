//! Dropping an engine frees everything it holds: volumes, their files, caches and bitmaps. An
//! engine dropped with live relationships (what a crash-and-reopen test does every time) must
//! leak neither file descriptors nor memory.

use std::path::Path;
use tzero_engine::{Engine, EngineConfig, FlashOptions};

const MIB: u64 = 1 << 20;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Resident set size in KiB, from /proc/self/status.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Opens the engine, does host I/O through every relationship kind (a COPY cascade with cached
/// writes and a NOCOPY with recording), then drops it without a shutdown.
fn open_use_and_drop(dir: &Path) {
    let engine = Engine::open_dir(dir, EngineConfig::default()).expect("open");
    let a = engine.handle("a").expect("a");
    a.write(0, &[1u8; 4096], false).expect("write a");
    let c = engine.handle("c").expect("c");
    let mut buf = [0u8; 4096];
    c.read(0, &mut buf).expect("read c");
    engine
        .handle("d")
        .expect("d")
        .write(MIB, &[2u8; 512], false)
        .expect("write d");
    drop((a, c));
    drop(engine);
}

#[test]
fn dropping_an_engine_with_relationships_frees_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let engine = Engine::open_dir(dir.path(), EngineConfig::default()).expect("open");
        for v in ["a", "b", "c", "d"] {
            engine.create_volume(v, 16 * MIB, 0).expect("create");
        }
        let copy = FlashOptions {
            background_copy: true,
            persistent: true,
            copy_rate: 1, // keeps the copy (and so the relationships) alive across reopens
            ..FlashOptions::default()
        };
        engine.establish("a", "b", copy).expect("a:b");
        engine.establish("b", "c", copy).expect("b:c");
        let record = FlashOptions {
            persistent: true,
            recording: true,
            ..FlashOptions::default()
        };
        engine.establish("a", "d", record).expect("a:d");
        engine.shutdown().expect("shutdown");
    }
    // Warm up allocator arenas and lazily created state before taking the baseline.
    for _ in 0..50 {
        open_use_and_drop(dir.path());
    }
    let (fds_before, rss_before) = (open_fds(), rss_kib());
    for _ in 0..1000 {
        open_use_and_drop(dir.path());
    }
    let (fds_after, rss_after) = (open_fds(), rss_kib());
    assert_eq!(fds_after, fds_before, "file descriptors leaked");
    // Each engine holds four volumes, three relationships and their caches: a leak of even one
    // engine per iteration would be far above this bound over 1000 iterations.
    assert!(
        rss_after <= rss_before + 16 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    let engine = Engine::open_dir(dir.path(), EngineConfig::default()).expect("open");
    assert_eq!(
        engine.relationships().len(),
        3,
        "the relationships survived"
    );
}
