//! Engine benchmarks for issue 2 (a plain `main`, `harness = false`): establish time against
//! volume size, the cost of copy-on-write on 4 KiB random writes, background copy against `cp`,
//! and the memory of a full bitmap. Prints Markdown tables.
//!
//! Run with `bench/engine.sh` (or `cargo bench -p tzero-engine --bench engine`). Volumes live in
//! a temporary directory under `$TZERO_BENCH_DIR` (default: the system temp dir);
//! `$TZERO_BENCH_SHM` (default `/dev/shm`) is used for volume sizes the main file system cannot
//! hold as one file (ext4 stops at 16 TiB).

// Sizes here are small, fixed and 64-bit: the truncation lints do not apply.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tzero_engine::{Engine, EngineConfig, FlashOptions, FlashState};

const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("TZERO_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    }
}

fn quiet() -> EngineConfig {
    EngineConfig {
        cache_bytes: 256 << 20,
        background: false,
    }
}

fn busy() -> EngineConfig {
    EngineConfig {
        cache_bytes: 256 << 20,
        background: true,
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort_unstable();
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i]
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= TIB => format!("{} TiB", b / TIB),
        b if b >= GIB => format!("{} GiB", b / GIB),
        b => format!("{} MiB", b >> 20),
    }
}

fn nocopy() -> FlashOptions {
    FlashOptions::default()
}

fn copy_persistent() -> FlashOptions {
    FlashOptions {
        background_copy: true,
        persistent: true,
        copy_rate: 0,
        ..FlashOptions::default()
    }
}

// ---------------------------------------------------------------------------------------------

fn establish_times(
    dir: &Path,
    size: u64,
    cycles: usize,
) -> Result<(Duration, Duration, Duration), String> {
    let engine = Engine::open_dir(dir, quiet()).map_err(|e| e.to_string())?;
    engine.create_volume("src", size, 0).map_err(|e| {
        let cause = std::error::Error::source(&e)
            .map(|c| format!(": {c}"))
            .unwrap_or_default();
        format!("{e}{cause}")
    })?;
    engine
        .create_volume("tgt", size, 0)
        .map_err(|e| e.to_string())?;
    // A little data, so the source is not entirely a hole.
    engine
        .handle("src")
        .unwrap()
        .write(0, &[7u8; 4096], true)
        .unwrap();
    let mut est = Vec::with_capacity(cycles);
    let mut wd = Vec::with_capacity(cycles);
    for _ in 0..cycles {
        let t = Instant::now();
        engine.establish("src", "tgt", nocopy()).unwrap();
        est.push(t.elapsed());
        let t = Instant::now();
        engine.withdraw("src", "tgt").unwrap();
        wd.push(t.elapsed());
    }
    engine.shutdown().unwrap();
    let p90 = pct(&mut est.clone(), 0.9);
    Ok((median(&mut est), p90, median(&mut wd)))
}

fn bench_establish() {
    println!("### Establish time (NOCOPY, empty cache, 64 KiB tracks; 200 establish/withdraw cycles per size)\n");
    println!("| storage | volume size | tracks | establish median (ms) | establish p90 (ms) | withdraw median (ms) |");
    println!("|---|---|---|---|---|---|");
    let shm = std::env::var_os("TZERO_BENCH_SHM")
        .map_or_else(|| PathBuf::from("/dev/shm"), PathBuf::from);
    for (label, base) in [("disk (ext4)", None), ("tmpfs", Some(shm))] {
        for size in [GIB, TIB, 64 * TIB] {
            let dir = match &base {
                None => bench_dir(),
                Some(b) if b.is_dir() => tempfile::tempdir_in(b).unwrap(),
                Some(_) => continue,
            };
            let tracks = size / (64 << 10);
            match establish_times(dir.path(), size, 200) {
                Ok((m, p90, w)) => println!(
                    "| {label} | {} | {tracks} | {} | {} | {} |",
                    human(size),
                    ms(m),
                    ms(p90),
                    ms(w)
                ),
                Err(e) => println!("| {label} | {} | {tracks} | n/a: {e} | | |", human(size)),
            }
        }
    }
    println!();
}

// ---------------------------------------------------------------------------------------------

const W_SIZE: u64 = GIB;
const W_TRACK: u64 = 64 << 10;
const W_THREADS: u64 = 4;

/// One 4 KiB write per track, tracks in a random order, offsets random inside the track, from
/// `W_THREADS` threads; then a flush. Returns the elapsed time.
fn random_writes(engine: &Engine, seed: u64) -> Duration {
    let tracks = W_SIZE / W_TRACK;
    let mut order: Vec<u64> = (0..tracks).collect();
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in (1..order.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    let offsets: Vec<u64> = order
        .iter()
        .map(|t| t * W_TRACK + (next() % (W_TRACK / 4096)) * 4096)
        .collect();
    let offsets = Arc::new(offsets);
    let src = engine.handle("src").unwrap();
    let began = Instant::now();
    let threads: Vec<_> = (0..W_THREADS)
        .map(|me| {
            let (src, offsets) = (src.clone(), offsets.clone());
            std::thread::spawn(move || {
                let block = vec![0x5au8 ^ me as u8; 4096];
                for off in offsets.iter().skip(me as usize).step_by(W_THREADS as usize) {
                    src.write(*off, &block, false).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    src.flush().unwrap();
    began.elapsed()
}

/// Lets the disk settle between cases: everything synced, the kernel's writeback of the
/// previous case done, so no case pays for another's dirty pages.
fn settle(engine: &Engine) {
    engine.flush_all().unwrap();
    let _ = std::process::Command::new("sync").status();
    std::thread::sleep(Duration::from_millis(500));
}

fn wait_copied(engine: &Engine) -> Duration {
    let began = Instant::now();
    loop {
        let info = engine.relationship("src", "tgt").unwrap();
        assert_ne!(info.state, FlashState::Failed, "{info:?}");
        if info.out_of_sync_tracks == 0 && info.state == FlashState::Copied {
            return began.elapsed();
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn bench_random_writes() {
    let dir = bench_dir();
    let engine = Engine::open_dir(dir.path(), busy()).unwrap();
    engine.create_volume("src", W_SIZE, W_TRACK).unwrap();
    engine.create_volume("tgt", W_SIZE, W_TRACK).unwrap();
    let src = engine.handle("src").unwrap();
    let chunk: Vec<u8> = (0..(8u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for off in (0..W_SIZE).step_by(chunk.len()) {
        src.write(off, &chunk, false).unwrap();
    }
    src.flush().unwrap();
    let reps = 3;
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..reps {
        settle(&engine);
        a.push(random_writes(&engine, 11 + rep));
        engine.establish("src", "tgt", nocopy()).unwrap();
        b.push(random_writes(&engine, 101 + rep));
        engine.withdraw("src", "tgt").unwrap();
        engine.establish("src", "tgt", copy_persistent()).unwrap();
        wait_copied(&engine);
        settle(&engine);
        c.push(random_writes(&engine, 1001 + rep));
        engine.withdraw("src", "tgt").unwrap();
    }
    engine.shutdown().unwrap();
    let n = W_SIZE / W_TRACK;
    let (ma, mb, mc) = (median(&mut a), median(&mut b), median(&mut c));
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "### 4 KiB random writes on the source ({} volume, 64 KiB tracks, {W_THREADS} writer threads, {n} writes = one per track in random order, final flush included; median of {reps})\n",
        human(W_SIZE)
    );
    println!("| case | time (ms) | writes/s | time vs (a) | throughput vs (a) |");
    println!("|---|---|---|---|---|");
    for (label, d) in [
        ("(a) no relationship", ma),
        ("(b) NOCOPY, first touch of every track (copy-on-write)", mb),
        ("(c) COPY complete (persistent), every track copied", mc),
    ] {
        println!(
            "| {label} | {} | {:.0} | {:.2}× | {:.2} |",
            ms(d),
            rate(d),
            d.as_secs_f64() / ma.as_secs_f64(),
            rate(d) / rate(ma)
        );
    }
    println!();
}

// ---------------------------------------------------------------------------------------------

const C_SIZE: u64 = 2 * GIB;

fn volume_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("vol-"))
        .collect();
    v.sort();
    v
}

fn run(cmd: &mut Command) -> Duration {
    let t = Instant::now();
    let status = cmd.status().unwrap();
    assert!(status.success(), "{cmd:?}: {status}");
    t.elapsed()
}

fn bench_background_copy() {
    let dir = bench_dir();
    let engine = Engine::open_dir(dir.path(), busy()).unwrap();
    engine.create_volume("src", C_SIZE, 0).unwrap();
    engine.create_volume("tgt", C_SIZE, 0).unwrap();
    let src = engine.handle("src").unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut chunk = vec![0u8; 8 << 20];
    for off in (0..C_SIZE).step_by(chunk.len()) {
        for w in chunk.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        src.write(off, &chunk, false).unwrap();
    }
    src.flush().unwrap();
    let src_file = volume_files(dir.path())[0].clone();
    let copy = dir.path().join("cp-copy.img");
    let reps = 2;
    let (mut eng, mut cp, mut cps) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        let t = Instant::now();
        engine.establish("src", "tgt", copy_persistent()).unwrap();
        wait_copied(&engine);
        eng.push(t.elapsed());
        engine.withdraw("src", "tgt").unwrap();

        let _ = std::fs::remove_file(&copy);
        cp.push(run(Command::new("cp")
            .arg("--reflink=never")
            .arg(&src_file)
            .arg(&copy)));
        std::fs::remove_file(&copy).unwrap();
        let t = Instant::now();
        run(Command::new("cp")
            .arg("--reflink=never")
            .arg(&src_file)
            .arg(&copy));
        run(Command::new("sync").arg(&copy));
        cps.push(t.elapsed());
        std::fs::remove_file(&copy).unwrap();
    }
    engine.shutdown().unwrap();
    let (me, mc, ms_) = (median(&mut eng), median(&mut cp), median(&mut cps));
    println!(
        "### Background copy of a {} volume of random data (COPY, persistent, no rate limit; establish → out of sync 0, median of {reps})\n",
        human(C_SIZE)
    );
    println!("| copy | time (s) | MiB/s | vs cp | vs cp + sync |");
    println!("|---|---|---|---|---|");
    let mibs = |d: Duration| (C_SIZE >> 20) as f64 / d.as_secs_f64();
    for (label, d) in [
        (
            "tzero background copy (durable: target synced, bitmap committed)",
            me,
        ),
        ("cp --reflink=never", mc),
        ("cp --reflink=never; sync FILE", ms_),
    ] {
        println!(
            "| {label} | {:.2} | {:.0} | {:.2}× | {:.2}× |",
            d.as_secs_f64(),
            mibs(d),
            d.as_secs_f64() / mc.as_secs_f64(),
            d.as_secs_f64() / ms_.as_secs_f64()
        );
    }
    println!();
}

// ---------------------------------------------------------------------------------------------

fn bench_bitmap_memory() {
    let dir = bench_dir();
    let engine = Engine::open_dir(dir.path(), quiet()).unwrap();
    let size = TIB;
    engine.create_volume("src", size, 0).unwrap();
    engine.create_volume("tgt", size, 0).unwrap();
    engine.establish("src", "tgt", copy_persistent()).unwrap();
    let empty = engine.bitmap_memory("src", "tgt").unwrap();
    let t = Instant::now();
    while engine.copy_step(1 << 20).unwrap() > 0 {}
    let took = t.elapsed();
    let info = engine.relationship("src", "tgt").unwrap();
    assert_eq!(info.out_of_sync_tracks, 0, "{info:?}");
    let full = engine.bitmap_memory("src", "tgt").unwrap();
    engine.shutdown().unwrap();
    let tracks = size / (64 << 10);
    let ideal = tracks / 8;
    println!(
        "### Bitmap memory, one relationship on a {} volume (64 KiB tracks, {tracks} tracks)\n",
        human(size)
    );
    println!("All bits were really set: COPY on a sparse source driven to completion with `copy_step` ({:.1} s; holes copy as punches).\n", took.as_secs_f64());
    println!("| state | bitmap_memory (bytes) | 1 bit per track (bytes) | ratio |");
    println!("|---|---|---|---|");
    for (label, m) in [("just established", empty), ("all bits set", full)] {
        println!(
            "| {label} | {m} | {ideal} | {:.3} |",
            m as f64 / ideal as f64
        );
    }
    println!();
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing useful. Only run the
    // (slow) benchmarks when asked to bench.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("engine benchmarks: run with `cargo bench -p tzero-engine --bench engine`");
        return;
    }
    let only = args.iter().skip(1).find(|a| !a.starts_with("--")).cloned();
    let want = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    let began = Instant::now();
    println!(
        "Machine: {} CPUs, {}\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(
                |s| s.lines().find(|l| l.starts_with("model name")).map(|l| l
                    .split(':')
                    .nth(1)
                    .unwrap_or("")
                    .trim()
                    .to_string())
            )
            .unwrap_or_default()
    );
    if want("establish") {
        bench_establish();
    }
    if want("writes") {
        bench_random_writes();
    }
    if want("copy") {
        bench_background_copy();
    }
    if want("bitmap") {
        bench_bitmap_memory();
    }
    println!("(total bench time {:.0} s)", began.elapsed().as_secs_f64());
}
