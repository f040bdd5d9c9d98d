//! Real `kill -9` test.
//!
//! The test re-executes its own binary as a child process (test `kill_child`, which does nothing
//! unless `TZERO_KILL_CHILD` names a data directory). The child opens the engine with its
//! background threads, so the destager and the rate-limited background copy of a persistent COPY
//! relationship run while it writes self-describing 4 KiB blocks at full speed on both the
//! source and the target. After every successful flush (and every FUA write) it appends to a log
//! (fsynced) the generation each block reached. The parent SIGKILLs the child at a random moment,
//! reopens the engine in process (threads off) and checks every block it can name against the
//! log:
//!
//! - a source block is a valid source block of generation ≥ the last flushed one, or, if no
//!   write to it was ever flushed, possibly still its T0 content;
//! - a target block is a valid target block of generation ≥ the last flushed one, or, if no
//!   target write to it was ever flushed, possibly its source's T0 content — never anything the
//!   source got after T0;
//! - the relationship is still there, not failed, and its out-of-sync count never grows across
//!   restarts.
//!
//! After the kills, the copy is driven to completion and the whole of both volumes is checked.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tzero_engine::{Engine, EngineConfig, FlashOptions, FlashState, VolumeHandle};

const BLOCK: u64 = 4096;
const TRACK: u64 = 16 << 10;
/// 16384 tracks: a first copy step of 256 tracks per child start still leaves the copy running
/// after 50 kills.
const CAPACITY: u64 = 256 << 20;
const BLOCKS: u64 = CAPACITY / BLOCK;
/// Most writes go to the first 32 MiB, so the copier, not copy-on-write, does most of the copy.
const HOT_BLOCKS: u64 = 8192;
/// One 256-track copy step (4 MiB) per second: the copier sleeps its 1 s maximum between steps.
const COPY_RATE: u64 = 4 << 20;

const MAGIC: u32 = 0x545a_4b31; // "TZK1"
const TAG_T0: u32 = 3;
const TAG_SRC: u32 = 1;
const TAG_TGT: u32 = 2;
const HEADER: usize = 64;

const CHILD_ENV: &str = "TZERO_KILL_CHILD";
const RUN_ENV: &str = "TZERO_KILL_RUN";
const SEED_ENV: &str = "TZERO_KILL_CHILD_SEED";
const LOG_FILE: &str = "flushed.log";
const ENGINE_DIR: &str = "engine";

fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn check_of(tag: u32, block: u64, gen: u64) -> u64 {
    mix(u64::from(MAGIC) ^ mix(u64::from(tag) ^ mix(block ^ mix(gen))))
}

/// A block: a 64-byte header (magic, tag, block, generation, check) repeated 64 times, so a torn
/// write of any 512-byte sector shows.
fn make_block(tag: u32, block: u64, gen: u64) -> Vec<u8> {
    let mut h = [0u8; HEADER];
    h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&tag.to_le_bytes());
    h[8..16].copy_from_slice(&block.to_le_bytes());
    h[16..24].copy_from_slice(&gen.to_le_bytes());
    h[56..64].copy_from_slice(&check_of(tag, block, gen).to_le_bytes());
    h.repeat(BLOCK as usize / HEADER)
}

/// Three in four source blocks hold a T0 pattern; the rest are holes (zeros), so whole-hole
/// tracks and holes inside tracks both exist.
fn t0_has_data(block: u64) -> bool {
    mix(block ^ 0x5eed) % 4 != 0
}

fn t0_block(block: u64) -> Vec<u8> {
    if t0_has_data(block) {
        make_block(TAG_T0, block, 0)
    } else {
        vec![0u8; BLOCK as usize]
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Decoded {
    Zero,
    Block { tag: u32, block: u64, gen: u64 },
    Garbage(String),
}

fn decode(buf: &[u8]) -> Decoded {
    let h = &buf[..HEADER];
    if buf.iter().all(|b| *b == 0) {
        return Decoded::Zero;
    }
    if let Some(i) = buf.chunks_exact(HEADER).position(|c| c != h) {
        return Decoded::Garbage(format!("torn: piece {i} differs from the first"));
    }
    let magic = u32::from_le_bytes(h[0..4].try_into().unwrap());
    let tag = u32::from_le_bytes(h[4..8].try_into().unwrap());
    let block = u64::from_le_bytes(h[8..16].try_into().unwrap());
    let gen = u64::from_le_bytes(h[16..24].try_into().unwrap());
    let check = u64::from_le_bytes(h[56..64].try_into().unwrap());
    if magic != MAGIC || check != check_of(tag, block, gen) || h[24..56].iter().any(|b| *b != 0) {
        return Decoded::Garbage(format!("bad header {h:02x?}"));
    }
    Decoded::Block { tag, block, gen }
}

/// One durable claim: volume (0 = src, 1 = tgt), block, generation. 24 bytes with a check, so a
/// record torn by the kill is recognised and ignored.
fn encode_record(vol: u32, block: u64, gen: u64) -> [u8; 24] {
    let mut r = [0u8; 24];
    let head = u64::from(vol) << 32 | block;
    r[0..8].copy_from_slice(&head.to_le_bytes());
    r[8..16].copy_from_slice(&gen.to_le_bytes());
    r[16..24].copy_from_slice(&mix(head ^ mix(gen)).to_le_bytes());
    r
}

/// The highest flushed generation per (volume, block).
fn read_log(path: &Path) -> HashMap<(u32, u64), u64> {
    let bytes = std::fs::read(path).unwrap_or_default();
    let mut map = HashMap::new();
    let records: Vec<&[u8]> = bytes.chunks_exact(24).collect();
    let n = records.len();
    for (i, r) in records.into_iter().enumerate() {
        let head = u64::from_le_bytes(r[0..8].try_into().unwrap());
        let gen = u64::from_le_bytes(r[8..16].try_into().unwrap());
        let check = u64::from_le_bytes(r[16..24].try_into().unwrap());
        if check != mix(head ^ mix(gen)) {
            // Only the record being appended when the child died may be torn.
            assert_eq!(
                i + 1,
                n,
                "corrupt record {i} of {n} in the middle of the log"
            );
            continue;
        }
        let vol = u32::try_from(head >> 32).unwrap();
        let block = head & 0xffff_ffff;
        let e = map.entry((vol, block)).or_insert(0);
        *e = (*e).max(gen);
    }
    map
}

fn background_config() -> EngineConfig {
    EngineConfig {
        cache_bytes: 8 << 20,
        background: true,
    }
}

fn quiet_config() -> EngineConfig {
    EngineConfig {
        cache_bytes: 64 << 20,
        background: false,
    }
}

/// The child: writes until killed. Does nothing when run as a normal test.
#[test]
fn kill_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let run: u64 = std::env::var(RUN_ENV).unwrap().parse().unwrap();
    let seed: u64 = std::env::var(SEED_ENV).unwrap().parse().unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let engine = Engine::open_dir(&dir.join(ENGINE_DIR), background_config()).unwrap();
    let info = engine
        .relationship("src", "tgt")
        .expect("the relationship came back");
    assert_ne!(info.state, FlashState::Failed, "{info:?}");
    let vols = [engine.handle("src").unwrap(), engine.handle("tgt").unwrap()];
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(dir.join(LOG_FILE))
        .unwrap();
    // Generations grow across runs: run number in the high half.
    let mut seq = 0u64;
    let mut pending: Vec<(u32, u64, u64)> = Vec::new();
    let mut dirty = [false, false];
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(30) {
        seq += 1;
        let gen = run << 32 | seq;
        let vol = rng.random_range(0..2u32);
        let block = if rng.random_ratio(9, 10) {
            rng.random_range(0..HOT_BLOCKS)
        } else {
            rng.random_range(0..BLOCKS)
        };
        let tag = if vol == 0 { TAG_SRC } else { TAG_TGT };
        let fua = rng.random_ratio(1, 16);
        vols[vol as usize]
            .write(block * BLOCK, &make_block(tag, block, gen), fua)
            .unwrap();
        if fua {
            log.write_all(&encode_record(vol, block, gen)).unwrap();
            log.sync_data().unwrap();
        } else {
            pending.push((vol, block, gen));
            dirty[vol as usize] = true;
        }
        if pending.len() >= 24 || (!pending.is_empty() && rng.random_ratio(1, 16)) {
            for (v, d) in vols.iter().zip(dirty) {
                if d {
                    v.flush().unwrap();
                }
            }
            let mut buf = Vec::with_capacity(pending.len() * 24);
            for (v, b, g) in pending.drain(..) {
                buf.extend_from_slice(&encode_record(v, b, g));
            }
            log.write_all(&buf).unwrap();
            log.sync_data().unwrap();
            dirty = [false, false];
        }
    }
    panic!("the child was not killed within 30 s");
}

fn read_block(h: &VolumeHandle, block: u64, buf: &mut [u8]) {
    h.read(block * BLOCK, buf).unwrap();
}

/// Checks one block of `vol` against the log. Returns a description of a violation.
fn check_block(
    vol: u32,
    block: u64,
    buf: &[u8],
    flushed: &HashMap<(u32, u64), u64>,
) -> Result<(), String> {
    let min_gen = flushed.get(&(vol, block)).copied();
    let own_tag = if vol == 0 { TAG_SRC } else { TAG_TGT };
    let name = if vol == 0 { "src" } else { "tgt" };
    let is_t0 = buf == t0_block(block).as_slice();
    if is_t0 {
        return match min_gen {
            None => Ok(()),
            Some(g) => Err(format!(
                "{name} block {block} reads its T0 content, but generation {g:#x} was flushed"
            )),
        };
    }
    match decode(buf) {
        Decoded::Block { tag, block: b, gen } if tag == own_tag && b == block => match min_gen {
            Some(g) if gen < g => Err(format!(
                "{name} block {block}: generation {gen:#x} is older than the flushed {g:#x} (lost write)"
            )),
            _ => Ok(()),
        },
        other => Err(format!(
            "{name} block {block}: unexpected content {other:?} (T0 would be {:?}; flushed generation {min_gen:?})",
            decode(&t0_block(block))
        )),
    }
}

/// Verifies `blocks` of both volumes. Returns the number of blocks checked.
fn verify(
    engine: &Engine,
    flushed: &HashMap<(u32, u64), u64>,
    blocks: &[u64],
) -> Result<usize, String> {
    let vols = [engine.handle("src").unwrap(), engine.handle("tgt").unwrap()];
    let mut buf = vec![0u8; BLOCK as usize];
    let mut errors = Vec::new();
    for &b in blocks {
        for (v, h) in vols.iter().enumerate() {
            read_block(h, b, &mut buf);
            if let Err(e) = check_block(u32::try_from(v).unwrap(), b, &buf, flushed) {
                errors.push(e);
            }
        }
    }
    if errors.is_empty() {
        Ok(blocks.len() * 2)
    } else {
        let n = errors.len();
        errors.truncate(10);
        Err(format!(
            "{n} bad blocks, first ones:\n{}",
            errors.join("\n")
        ))
    }
}

/// Reads whole volumes in 1 MiB requests and verifies every block.
fn verify_all(engine: &Engine, flushed: &HashMap<(u32, u64), u64>) -> Result<(), String> {
    let vols = [engine.handle("src").unwrap(), engine.handle("tgt").unwrap()];
    let mut buf = vec![0u8; 1 << 20];
    let per = buf.len() as u64 / BLOCK;
    let mut errors = Vec::new();
    for (v, h) in vols.iter().enumerate() {
        for chunk in 0..BLOCKS / per {
            h.read(chunk * per * BLOCK, &mut buf).unwrap();
            for (i, data) in buf.chunks_exact(BLOCK as usize).enumerate() {
                let b = chunk * per + i as u64;
                if let Err(e) = check_block(u32::try_from(v).unwrap(), b, data, flushed) {
                    errors.push(e);
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        let n = errors.len();
        errors.truncate(10);
        Err(format!(
            "{n} bad blocks, first ones:\n{}",
            errors.join("\n")
        ))
    }
}

fn setup(dir: &Path) {
    let engine = Engine::open_dir(&dir.join(ENGINE_DIR), quiet_config()).unwrap();
    engine.create_volume("src", CAPACITY, TRACK).unwrap();
    engine.create_volume("tgt", CAPACITY, TRACK).unwrap();
    let src = engine.handle("src").unwrap();
    // The target starts with garbage that must never show through.
    let tgt = engine.handle("tgt").unwrap();
    let junk = vec![0xa5u8; 1 << 20];
    for mib in 0..CAPACITY >> 20 {
        tgt.write(mib << 20, &junk, false).unwrap();
    }
    let mut chunk = Vec::with_capacity(1 << 20);
    let per = (1u64 << 20) / BLOCK;
    for c in 0..BLOCKS / per {
        chunk.clear();
        for b in c * per..(c + 1) * per {
            chunk.extend_from_slice(&t0_block(b));
        }
        // Holes stay holes: write only the pattern blocks, in runs.
        let mut b = c * per;
        while b < (c + 1) * per {
            if !t0_has_data(b) {
                b += 1;
                continue;
            }
            let mut e = b;
            while e < (c + 1) * per && t0_has_data(e) {
                e += 1;
            }
            let at = ((b - c * per) * BLOCK) as usize;
            let len = ((e - b) * BLOCK) as usize;
            src.write(b * BLOCK, &chunk[at..at + len], false).unwrap();
            b = e;
        }
    }
    src.flush().unwrap();
    tgt.flush().unwrap();
    engine
        .establish(
            "src",
            "tgt",
            FlashOptions {
                background_copy: true,
                persistent: true,
                copy_rate: COPY_RATE,
            },
        )
        .unwrap();
    engine.shutdown().unwrap();
}

#[test]
fn sigkill_during_writes_and_background_copy() {
    let iterations: usize = std::env::var("TZERO_KILL_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("TZERO_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("kill test: seed {seed} (TZERO_KILL_SEED), {iterations} kills");
    let mut rng = StdRng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir);
    let exe = std::env::current_exe().unwrap();
    let began = Instant::now();
    let mut last_out_of_sync = u64::MAX;
    let mut copying_at_kill = 0;
    let mut checked = 0usize;
    for run in 1..=iterations {
        let stderr = std::fs::File::create(dir.join("child.stderr")).unwrap();
        let mut child = Command::new(&exe)
            .args(["kill_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir)
            .env(RUN_ENV, run.to_string())
            .env(SEED_ENV, rng.random::<u64>().to_string())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(20..300)));
        if let Some(status) = child.try_wait().unwrap() {
            let err = std::fs::read_to_string(dir.join("child.stderr")).unwrap_or_default();
            panic!("run {run}: the child exited by itself ({status}):\n{err}");
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success(), "run {run}: child status {status}");

        let flushed = read_log(&dir.join(LOG_FILE));
        let engine = Engine::open_dir(&dir.join(ENGINE_DIR), quiet_config()).unwrap();
        let info = engine
            .relationship("src", "tgt")
            .unwrap_or_else(|e| panic!("run {run}: the relationship is gone after the kill: {e}"));
        assert!(
            matches!(info.state, FlashState::Copying | FlashState::Copied),
            "run {run}: {info:?}"
        );
        assert!(
            info.out_of_sync_tracks <= last_out_of_sync,
            "run {run}: out of sync tracks grew from {last_out_of_sync} to {} across a restart",
            info.out_of_sync_tracks
        );
        last_out_of_sync = info.out_of_sync_tracks;
        if info.state == FlashState::Copying {
            copying_at_kill += 1;
        }
        // Every hot block, every block the log names, and a random sample of the rest.
        let mut blocks: Vec<u64> = (0..HOT_BLOCKS).collect();
        blocks.extend(flushed.keys().map(|(_, b)| *b).filter(|b| *b >= HOT_BLOCKS));
        blocks.extend((0..1024).map(|_| rng.random_range(HOT_BLOCKS..BLOCKS)));
        blocks.sort_unstable();
        blocks.dedup();
        checked += verify(&engine, &flushed, &blocks)
            .unwrap_or_else(|e| panic!("run {run} (seed {seed}): {e}"));
        drop(engine);
    }
    let kills_elapsed = began.elapsed();

    // Let the copy finish; the whole target must then be T0 except target-written blocks.
    let flushed = read_log(&dir.join(LOG_FILE));
    let engine = Engine::open_dir(&dir.join(ENGINE_DIR), quiet_config()).unwrap();
    verify_all(&engine, &flushed).unwrap_or_else(|e| panic!("before the copy ends: {e}"));
    while engine.copy_step(4096).unwrap() > 0 {}
    let info = engine.relationship("src", "tgt").unwrap();
    assert_eq!(info.state, FlashState::Copied, "{info:?}");
    assert_eq!(info.out_of_sync_tracks, 0);
    verify_all(&engine, &flushed).unwrap_or_else(|e| panic!("after the copy ended: {e}"));
    engine.shutdown().unwrap();
    drop(engine);
    let engine = Engine::open_dir(&dir.join(ENGINE_DIR), quiet_config()).unwrap();
    assert_eq!(
        engine.relationship("src", "tgt").unwrap().state,
        FlashState::Copied
    );
    verify_all(&engine, &flushed).unwrap_or_else(|e| panic!("after a clean restart: {e}"));
    let src_writes = flushed.keys().filter(|(v, _)| *v == 0).count();
    let tgt_writes = flushed.keys().filter(|(v, _)| *v == 1).count();
    eprintln!(
        "kill test: {iterations} kills in {kills_elapsed:?}, copy still running at {copying_at_kill} of them, \
         out of sync at the last kill {last_out_of_sync}, {checked} block checks, \
         {src_writes} source and {tgt_writes} target blocks with flushed writes; total {:?}",
        began.elapsed()
    );
    assert!(
        copying_at_kill * 2 >= iterations,
        "the background copy finished too early ({copying_at_kill} of {iterations} kills hit it running)"
    );
    assert!(
        src_writes > 0 && tgt_writes > 0,
        "the children flushed nothing"
    );
}
