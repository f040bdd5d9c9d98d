//! Benchmarks of the FlashCopy functions beyond the basic copy (issues 4 and 5), a plain
//! `main` that prints Markdown tables:
//! - source 4 KiB random-write throughput with 0, 1, 4 and 12 NOCOPY targets (first touch);
//! - incremental resync time against the fraction of tracks changed;
//! - consistency-group establish of 16 pairs under write load: how long writes are held;
//! - the extra cost of a space-efficient (thin) target per copied track, against a standard one.
//!
//! Run with `bench/engine.sh functions` or `cargo bench -p tzero-engine --bench functions`.

#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tzero_engine::{Engine, EngineConfig, FlashOptions, FlashState, VolumeOptions};

const MIB: u64 = 1 << 20;
const TRACK: u64 = 64 << 10;

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("TZERO_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    }
}

fn open(dir: &std::path::Path) -> Engine {
    Engine::open_dir(
        dir,
        EngineConfig {
            cache_bytes: 256 << 20,
            background: true,
        },
    )
    .unwrap()
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn fill(engine: &Engine, name: &str, size: u64) {
    let h = engine.handle(name).unwrap();
    let chunk: Vec<u8> = (0..(8u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for off in (0..size).step_by(chunk.len()) {
        h.write(off, &chunk[..chunk.len().min((size - off) as usize)], false)
            .unwrap();
    }
    h.flush().unwrap();
}

fn settle(engine: &Engine) {
    engine.flush_all().unwrap();
    let _ = std::process::Command::new("sync").status();
    std::thread::sleep(Duration::from_millis(300));
}

fn shuffled(n: u64, seed: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..n).collect();
    let mut x = seed | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

/// One 4 KiB write per track in random order from 4 threads, then a flush.
fn touch_every_track(engine: &Engine, name: &str, size: u64, seed: u64) -> Duration {
    let order = Arc::new(shuffled(size / TRACK, seed));
    let h = engine.handle(name).unwrap();
    let began = Instant::now();
    let threads: Vec<_> = (0..4usize)
        .map(|me| {
            let (h, order) = (h.clone(), order.clone());
            std::thread::spawn(move || {
                let block = vec![me as u8; 4096];
                for t in order.iter().skip(me).step_by(4) {
                    h.write(t * TRACK, &block, false).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    h.flush().unwrap();
    began.elapsed()
}

fn bench_targets() {
    const SIZE: u64 = 256 * MIB;
    let dir = bench_dir();
    let engine = open(dir.path());
    engine.create_volume("src", SIZE, TRACK).unwrap();
    for i in 0..12 {
        engine.create_volume(&format!("t{i}"), SIZE, TRACK).unwrap();
    }
    fill(&engine, "src", SIZE);
    println!("### Source 4 KiB random writes with N NOCOPY targets, first touch ({} MiB volumes, 64 KiB tracks, one write per track from 4 threads, final flush; median of 3)\n", SIZE / MIB);
    println!("| targets | time (ms) | writes/s | throughput vs no relationship |");
    println!("|---|---|---|---|");
    let mut base = None;
    for n in [0usize, 1, 4, 12] {
        let mut times = Vec::new();
        for rep in 0..3 {
            for i in 0..n {
                engine
                    .establish("src", &format!("t{i}"), FlashOptions::default())
                    .unwrap();
            }
            settle(&engine);
            times.push(touch_every_track(&engine, "src", SIZE, 7 + rep));
            for i in 0..n {
                engine.withdraw("src", &format!("t{i}")).unwrap();
            }
        }
        let d = median(&mut times);
        let rate = (SIZE / TRACK) as f64 / d.as_secs_f64();
        let b = *base.get_or_insert(rate);
        println!("| {n} | {} | {rate:.0} | {:.2} |", ms(d), rate / b);
    }
    println!();
    engine.shutdown().unwrap();
}

fn wait_copied(engine: &Engine, s: &str, t: &str) {
    loop {
        let info = engine.relationship(s, t).unwrap();
        assert_ne!(info.state, FlashState::Failed, "{info:?}");
        if info.out_of_sync_tracks == 0 {
            return;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn bench_resync() {
    const ROUNDS: u64 = 5;
    const SIZE: u64 = 256 * MIB;
    let dir = bench_dir();
    let engine = open(dir.path());
    engine.create_volume("src", SIZE, TRACK).unwrap();
    engine.create_volume("tgt", SIZE, TRACK).unwrap();
    fill(&engine, "src", SIZE);
    let opts = FlashOptions {
        background_copy: true,
        persistent: true,
        recording: true,
        ..FlashOptions::default()
    };
    engine.establish("src", "tgt", opts).unwrap();
    wait_copied(&engine, "src", "tgt");
    println!(
        "### Incremental resync of a {} MiB volume (64 KiB tracks) against the changed fraction\n",
        SIZE / MIB
    );
    println!(
        "Median of {ROUNDS} rounds. Time from `resync` until every changed track is copied again \
         (in memory), then until that copy is durable (target synced, bits committed); the resync \
         call alone is the new T0.\n"
    );
    println!(
        "| changed | changed MiB | resync call (ms) | until copied (ms) | until durable (ms) |"
    );
    println!("|---|---|---|---|---|");
    let src = engine.handle("src").unwrap();
    let tracks = SIZE / TRACK;
    for (label, fraction) in [
        ("1 %", 0.01),
        ("12.5 %", 0.125),
        ("50 %", 0.5),
        ("100 %", 1.0),
    ] {
        let n = ((tracks as f64) * fraction) as u64;
        let mut rounds = Vec::new();
        for round in 0..ROUNDS {
            for t in shuffled(tracks, n + 3 + round).into_iter().take(n as usize) {
                src.write(t * TRACK, &[0xee; 4096], false).unwrap();
            }
            settle(&engine);
            let began = Instant::now();
            engine.resync("src", "tgt", opts).unwrap();
            let call = began.elapsed();
            wait_copied(&engine, "src", "tgt");
            let copied = began.elapsed();
            engine.flush_all().unwrap();
            rounds.push((call, copied, began.elapsed()));
        }
        let median = |pick: fn(&(Duration, Duration, Duration)) -> Duration| {
            let mut v: Vec<Duration> = rounds.iter().map(pick).collect();
            v.sort();
            v[v.len() / 2]
        };
        println!(
            "| {label} | {} | {} | {} | {} |",
            n * TRACK / MIB,
            ms(median(|r| r.0)),
            ms(median(|r| r.1)),
            ms(median(|r| r.2))
        );
    }
    println!();
    engine.shutdown().unwrap();
}

fn bench_group() {
    const SIZE: u64 = 64 * MIB;
    const PAIRS: usize = 16;
    let dir = bench_dir();
    let engine = open(dir.path());
    for i in 0..PAIRS {
        engine.create_volume(&format!("s{i}"), SIZE, TRACK).unwrap();
        engine.create_volume(&format!("t{i}"), SIZE, TRACK).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let max_latency = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..4usize)
        .map(|me| {
            let handles: Vec<_> = (0..PAIRS)
                .map(|i| engine.handle(&format!("s{i}")).unwrap())
                .collect();
            let (stop, writes, max_latency) = (stop.clone(), writes.clone(), max_latency.clone());
            std::thread::spawn(move || {
                let mut x = me as u64 + 1;
                let block = [me as u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let h = &handles[(x % PAIRS as u64) as usize];
                    let t = Instant::now();
                    h.write((x >> 8) % (SIZE / 4096) * 4096, &block, false)
                        .unwrap();
                    let us = t.elapsed().as_micros() as u64;
                    max_latency.fetch_max(us, Ordering::Relaxed);
                    writes.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let pairs: Vec<(String, String)> = (0..PAIRS)
        .map(|i| (format!("s{i}"), format!("t{i}")))
        .collect();
    let mut held = Vec::new();
    let mut lat = Vec::new();
    for _ in 0..5 {
        max_latency.store(0, Ordering::Relaxed);
        let began = Instant::now();
        engine
            .establish_group(&pairs, FlashOptions::default(), None)
            .unwrap();
        held.push(began.elapsed());
        std::thread::sleep(Duration::from_millis(300));
        lat.push(Duration::from_micros(max_latency.load(Ordering::Relaxed)));
        for (s, t) in &pairs {
            engine.withdraw(s, t).unwrap();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    println!("### Consistency group: establish of {PAIRS} pairs under 4 KiB random-write load (4 writer threads over the 16 sources; median of 5)\n");
    println!("Host writes are held for the duration of the establish call (one exclusive section for the whole group).\n");
    println!("| establish, writes held (ms) | worst host write latency around it (ms) | writes during the run |");
    println!("|---|---|---|");
    println!(
        "| {} | {} | {} |\n",
        ms(median(&mut held)),
        ms(median(&mut lat)),
        writes.load(Ordering::Relaxed)
    );
    engine.shutdown().unwrap();
}

fn bench_thin() {
    const SIZE: u64 = 512 * MIB;
    let dir = bench_dir();
    let engine = open(dir.path());
    engine.create_pool("pool", 4 * SIZE).unwrap();
    engine.create_volume("src", SIZE, TRACK).unwrap();
    fill(&engine, "src", SIZE);
    println!("### Space-efficient against standard target: background copy of {} MiB (64 KiB tracks; median of 3)\n", SIZE / MIB);
    println!("| target | copy time (ms) | per copied track (µs) |");
    println!("|---|---|---|");
    let tracks = SIZE / TRACK;
    let mut results = Vec::new();
    for (label, thin) in [
        ("standard (fallocated)", false),
        ("space-efficient (thin)", true),
    ] {
        let mut times = Vec::new();
        for rep in 0..3 {
            let name = format!("t{thin}{rep}");
            engine
                .create_volume_with(
                    &name,
                    SIZE,
                    TRACK,
                    VolumeOptions {
                        pool: Some("pool".into()),
                        space_efficient: thin,
                    },
                )
                .unwrap();
            settle(&engine);
            let began = Instant::now();
            engine
                .establish(
                    "src",
                    &name,
                    FlashOptions {
                        background_copy: true,
                        persistent: true,
                        ..FlashOptions::default()
                    },
                )
                .unwrap();
            wait_copied(&engine, "src", &name);
            engine.flush_all().unwrap();
            times.push(began.elapsed());
            engine.withdraw("src", &name).unwrap();
            engine.delete_volume(&name, false).unwrap();
        }
        let d = median(&mut times);
        results.push(d);
        println!(
            "| {label} | {} | {:.2} |",
            ms(d),
            d.as_secs_f64() * 1e6 / tracks as f64
        );
    }
    let extra = results[1].as_secs_f64() - results[0].as_secs_f64();
    println!(
        "\nExtra cost of the thin target: {:.2} µs per copied track ({:+.1} %).\n",
        extra * 1e6 / tracks as f64,
        extra / results[0].as_secs_f64() * 100.0
    );
    engine.shutdown().unwrap();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("function benchmarks: run with `cargo bench -p tzero-engine --bench functions`");
        return;
    }
    let only = args.iter().skip(1).find(|a| !a.starts_with("--")).cloned();
    let want = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    let began = Instant::now();
    if want("targets") {
        bench_targets();
    }
    if want("resync") {
        bench_resync();
    }
    if want("group") {
        bench_group();
    }
    if want("thin") {
        bench_thin();
    }
    println!("(total bench time {:.0} s)", began.elapsed().as_secs_f64());
}
