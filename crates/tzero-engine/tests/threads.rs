//! Concurrency tests: many threads on the same few tracks of a source and its target while the
//! background copy and the destager run (or while a thread drives their steps), establish
//! racing a writer, and flush racing an in-flight destage.

// Sizes here are small, fixed and 64-bit: the truncation lints do not apply.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tzero_engine::storage::mem::MemStorage;
use tzero_engine::{Engine, EngineConfig, FlashError, FlashOptions, FlashState, VolumeHandle};

const SLOT: usize = 512;
const PIECE: usize = 64;
const MAGIC: u32 = 0x545a_5431; // "TZT1"
const TAG_INIT: u32 = 3;
const TAG_SRC: u32 = 1;
const TAG_TGT: u32 = 2;

fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// What a slot holds: who wrote it (tag), which slot, which version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    tag: u32,
    slot: u64,
    version: u64,
}

/// A 512-byte slot: a 64-byte header repeated 8 times, so a torn sector or a mix shows.
fn encode(s: Slot) -> [u8; SLOT] {
    let mut h = [0u8; PIECE];
    h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&s.tag.to_le_bytes());
    h[8..16].copy_from_slice(&s.slot.to_le_bytes());
    h[16..24].copy_from_slice(&s.version.to_le_bytes());
    let check = mix(u64::from(s.tag) ^ mix(s.slot ^ mix(s.version)));
    h[56..64].copy_from_slice(&check.to_le_bytes());
    let mut out = [0u8; SLOT];
    for c in out.chunks_exact_mut(PIECE) {
        c.copy_from_slice(&h);
    }
    out
}

fn decode(buf: &[u8]) -> Result<Slot, String> {
    let h = &buf[..PIECE];
    if let Some(i) = buf.chunks_exact(PIECE).position(|c| c != h) {
        return Err(format!(
            "torn slot: piece {i} differs ({:02x?})",
            &buf[..32]
        ));
    }
    let magic = u32::from_le_bytes(h[0..4].try_into().unwrap());
    let tag = u32::from_le_bytes(h[4..8].try_into().unwrap());
    let slot = u64::from_le_bytes(h[8..16].try_into().unwrap());
    let version = u64::from_le_bytes(h[16..24].try_into().unwrap());
    let check = u64::from_le_bytes(h[56..64].try_into().unwrap());
    if magic != MAGIC || check != mix(u64::from(tag) ^ mix(slot ^ mix(version))) {
        return Err(format!("garbage slot {:02x?}", &buf[..32]));
    }
    Ok(Slot { tag, slot, version })
}

// ---------------------------------------------------------------------------------------------
// Hammering the same tracks.

const H_TRACK: u64 = 16 << 10;
const H_CAPACITY: u64 = 64 << 20;
/// Three tracks in the middle of the volume: 96 slots shared by all threads.
const H_FIRST: u64 = 1000 * H_TRACK;
const H_SLOTS: u64 = 3 * H_TRACK / SLOT as u64;
const H_THREADS: u64 = 4;

fn tgt_writable(s: u64) -> bool {
    (s / H_THREADS).is_multiple_of(2)
}

fn slot_off(s: u64) -> u64 {
    H_FIRST + s * SLOT as u64
}

/// Expected contents of the hot slots of both volumes.
#[derive(Debug, Clone)]
struct Expected {
    src: Vec<Slot>,
    tgt: Vec<Slot>,
}

/// One writer: owns the slots `s % H_THREADS == me` on both volumes. Checks as it goes that its
/// own slots read back exactly, and that every other slot is whole and plausible.
#[allow(clippy::too_many_arguments)]
fn writer(
    me: u64,
    round: u64,
    seed: u64,
    deadline: Instant,
    vols: [VolumeHandle; 2],
    t0: Arc<Vec<Slot>>,
    mut exp: Expected,
) -> Expected {
    let mut rng = StdRng::seed_from_u64(seed);
    let mine: Vec<u64> = (0..H_SLOTS).filter(|s| s % H_THREADS == me).collect();
    // Half of my slots are written on the target too; the other half must keep reading T0 there.
    let mine_tgt: Vec<u64> = mine.iter().copied().filter(|s| tgt_writable(*s)).collect();
    let mut n = 0u64;
    let mut buf = vec![0u8; H_SLOTS as usize * SLOT];
    while Instant::now() < deadline {
        n += 1;
        let v = rng.random_range(0..2usize);
        let s = if v == 0 {
            mine[rng.random_range(0..mine.len())]
        } else {
            mine_tgt[rng.random_range(0..mine_tgt.len())]
        };
        let new = Slot {
            tag: if v == 0 { TAG_SRC } else { TAG_TGT },
            slot: s,
            version: round << 40 | me << 32 | n,
        };
        vols[v]
            .write(slot_off(s), &encode(new), rng.random_ratio(1, 32))
            .unwrap();
        if v == 0 {
            exp.src[s as usize] = new;
        } else {
            exp.tgt[s as usize] = new;
        }
        if n.is_multiple_of(4) {
            // Read-your-writes on one of my slots.
            let s = mine[rng.random_range(0..mine.len())];
            let v = rng.random_range(0..2usize);
            let mut one = [0u8; SLOT];
            vols[v].read(slot_off(s), &mut one).unwrap();
            let want = if v == 0 {
                exp.src[s as usize]
            } else {
                exp.tgt[s as usize]
            };
            assert_eq!(
                decode(&one),
                Ok(want),
                "thread {me} round {round}: vol {v} slot {s} lost my last write"
            );
        }
        if n.is_multiple_of(16) {
            // Every slot of one volume at once: whole, right slot number, plausible writer.
            let v = rng.random_range(0..2usize);
            vols[v].read(H_FIRST, &mut buf).unwrap();
            for (i, raw) in buf.chunks_exact(SLOT).enumerate() {
                let racing = i as u64 % H_THREADS != me && (v == 0 || tgt_writable(i as u64));
                let got = match decode(raw) {
                    Ok(got) => got,
                    // Another thread may be writing this very slot: a read racing a write of
                    // the same bytes may see part of each.
                    Err(_) if racing => continue,
                    Err(e) => panic!("thread {me} round {round}: vol {v} slot {i}: {e}"),
                };
                if v == 1 && !tgt_writable(i as u64) {
                    // Nobody writes this slot on the target: T0, exactly, all the time.
                    assert_eq!(
                        got, t0[i],
                        "thread {me} round {round}: tgt slot {i} left T0"
                    );
                }
                assert_eq!(
                    got.slot, i as u64,
                    "vol {v}: slot {i} holds slot {}'s data",
                    got.slot
                );
                let ok = if v == 0 {
                    got.tag == TAG_SRC || got.tag == TAG_INIT
                } else {
                    // The target shows T0 or target writes, never the source's newer data.
                    got == t0[i] || got.tag == TAG_TGT
                };
                assert!(
                    ok,
                    "thread {me} round {round}: vol {v} slot {i} reads {got:?}, T0 {:?}",
                    t0[i]
                );
                if i as u64 % H_THREADS == me {
                    let want = if v == 0 { exp.src[i] } else { exp.tgt[i] };
                    assert_eq!(got, want, "thread {me}: my slot {i} on vol {v}");
                }
            }
        }
        if n.is_multiple_of(64) {
            vols[v].flush().unwrap();
        }
    }
    exp
}

fn verify_exact(engine: &Engine, exp: &Expected, when: &str) {
    for (v, name) in ["src", "tgt"].iter().enumerate() {
        let h = engine.handle(name).unwrap();
        let mut buf = vec![0u8; H_SLOTS as usize * SLOT];
        h.read(H_FIRST, &mut buf).unwrap();
        let want = if v == 0 { &exp.src } else { &exp.tgt };
        for (i, raw) in buf.chunks_exact(SLOT).enumerate() {
            assert_eq!(decode(raw), Ok(want[i]), "{when}: {name} slot {i}");
        }
    }
}

fn hammer(background: bool, cache_bytes: u64, seed: u64) {
    eprintln!("hammer: background {background}, cache {cache_bytes}, seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().unwrap();
    let cfg = EngineConfig {
        cache_bytes,
        background,
    };
    let mut engine = Engine::open_dir(tmp.path(), cfg.clone()).unwrap();
    engine.create_volume("src", H_CAPACITY, H_TRACK).unwrap();
    engine.create_volume("tgt", H_CAPACITY, H_TRACK).unwrap();
    let src = engine.handle("src").unwrap();
    // Data everywhere, so the copier has real work around the hot tracks.
    let fill = vec![0x11u8; 1 << 20];
    for mib in 0..H_CAPACITY >> 20 {
        src.write(mib << 20, &fill, false).unwrap();
    }
    let init: Vec<Slot> = (0..H_SLOTS)
        .map(|s| Slot {
            tag: TAG_INIT,
            slot: s,
            version: 0,
        })
        .collect();
    for s in &init {
        src.write(slot_off(s.slot), &encode(*s), false).unwrap();
    }
    src.flush().unwrap();
    let mut exp = Expected {
        src: init.clone(),
        tgt: vec![],
    };
    for round in 0..4u64 {
        match engine.withdraw("src", "tgt") {
            Ok(()) | Err(FlashError::NotFound(..)) => {}
            Err(e) => panic!("withdraw: {e}"),
        }
        let persistent = round % 2 == 0;
        engine
            .establish(
                "src",
                "tgt",
                FlashOptions {
                    background_copy: true,
                    persistent,
                    copy_rate: 0,
                    ..FlashOptions::default()
                },
            )
            .unwrap();
        let t0 = Arc::new(exp.src.clone());
        exp.tgt = exp.src.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let driver = (!background).then(|| {
            let engine = engine.clone();
            let stop = stop.clone();
            let seed = rng.random::<u64>();
            std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed);
                while !stop.load(Ordering::Acquire) {
                    engine.copy_step(rng.random_range(1..8)).unwrap();
                    engine.destage_step();
                    if rng.random_ratio(1, 8) {
                        engine.persist_bitmaps().unwrap();
                    }
                    std::thread::yield_now();
                }
            })
        });
        let deadline = Instant::now() + Duration::from_millis(500);
        let writers: Vec<_> = (0..H_THREADS)
            .map(|me| {
                let vols = [engine.handle("src").unwrap(), engine.handle("tgt").unwrap()];
                let (t0, exp, seed) = (t0.clone(), exp.clone(), rng.random::<u64>());
                std::thread::spawn(move || writer(me, round, seed, deadline, vols, t0, exp))
            })
            .collect();
        let results: Vec<Expected> = writers.into_iter().map(|w| w.join().unwrap()).collect();
        stop.store(true, Ordering::Release);
        if let Some(d) = driver {
            d.join().unwrap();
        }
        for (me, r) in results.iter().enumerate() {
            for s in (0..H_SLOTS as usize).filter(|s| *s as u64 % H_THREADS == me as u64) {
                exp.src[s] = r.src[s];
                exp.tgt[s] = r.tgt[s];
            }
        }
        let written_tgt = exp.tgt.iter().filter(|s| s.tag == TAG_TGT).count();
        assert!(written_tgt > 0, "no target writes");
        for s in (0..H_SLOTS).filter(|s| !tgt_writable(*s)) {
            assert_eq!(exp.tgt[s as usize], t0[s as usize]);
        }
        engine.handle("src").unwrap().flush().unwrap();
        engine.handle("tgt").unwrap().flush().unwrap();
        verify_exact(&engine, &exp, &format!("round {round} after the writers"));
        // Finish the copy: it must not disturb anything.
        let began = Instant::now();
        loop {
            if !background {
                engine.copy_step(1024).unwrap();
            }
            match engine.relationship("src", "tgt") {
                Ok(info) if info.out_of_sync_tracks == 0 => {
                    assert_eq!(info.state, FlashState::Copied);
                    break;
                }
                Ok(info) => assert_ne!(info.state, FlashState::Failed, "{info:?}"),
                Err(FlashError::NotFound(..)) if !persistent => break,
                Err(e) => panic!("{e}"),
            }
            assert!(
                began.elapsed() < Duration::from_secs(60),
                "copy never finished"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        verify_exact(&engine, &exp, &format!("round {round} after the copy"));
        // A crash now loses nothing: everything was flushed.
        drop(engine);
        engine = Engine::open_dir(tmp.path(), cfg.clone()).unwrap();
        verify_exact(&engine, &exp, &format!("round {round} after a crash"));
    }
    engine.shutdown().unwrap();
}

#[test]
fn hammer_same_tracks_with_background_threads() {
    hammer(true, 256 << 20, rand::random());
}

#[test]
fn hammer_same_tracks_small_cache_with_background_threads() {
    hammer(true, 16 << 10, rand::random());
}

#[test]
fn hammer_same_tracks_with_a_thread_driving_the_steps() {
    hammer(false, 32 << 10, rand::random());
}

// ---------------------------------------------------------------------------------------------
// Establish racing a writer: T0 is a prefix of the write sequence.

const E_TRACK: u64 = 4096;
const E_CAPACITY: u64 = 4 << 20;
const E_SLOTS: u64 = 256;
const E_PERMS: usize = 7;

struct Order {
    /// `perm[c][k]`: the slot written k-th in cycle c (mod E_PERMS).
    perm: Vec<Vec<u64>>,
    /// `pos[c][s]`: when slot s is written in cycle c.
    pos: Vec<Vec<u64>>,
}

impl Order {
    fn new(rng: &mut StdRng) -> Self {
        let mut perm = Vec::new();
        let mut pos = Vec::new();
        for _ in 0..E_PERMS {
            let mut p: Vec<u64> = (0..E_SLOTS).collect();
            p.shuffle(rng);
            let mut inv = vec![0; E_SLOTS as usize];
            for (k, s) in p.iter().enumerate() {
                inv[*s as usize] = k as u64;
            }
            perm.push(p);
            pos.push(inv);
        }
        Order { perm, pos }
    }

    fn slot_of(&self, seq: u64) -> u64 {
        self.perm[(seq / E_SLOTS) as usize % E_PERMS][(seq % E_SLOTS) as usize]
    }

    /// The sequence number slot `s` holds after the first `k` writes (k ≥ E_SLOTS).
    fn value_after(&self, k: u64, s: u64) -> u64 {
        let (c, r) = (k / E_SLOTS, k % E_SLOTS);
        let p = self.pos[c as usize % E_PERMS][s as usize];
        if p < r {
            c * E_SLOTS + p
        } else {
            (c - 1) * E_SLOTS + self.pos[(c - 1) as usize % E_PERMS][s as usize]
        }
    }
}

/// Reads `vol`'s slots and checks they are the source after exactly K writes, for some K in
/// `[lo, hi]`. Returns K.
fn check_prefix(h: &VolumeHandle, order: &Order, lo: u64, hi: u64, what: &str) -> u64 {
    let mut buf = vec![0u8; E_SLOTS as usize * SLOT];
    h.read(0, &mut buf).unwrap();
    let got: Vec<Slot> = buf
        .chunks_exact(SLOT)
        .enumerate()
        .map(|(i, raw)| {
            let s = decode(raw).unwrap_or_else(|e| panic!("{what}: slot {i}: {e}"));
            assert_eq!((s.tag, s.slot), (TAG_SRC, i as u64), "{what}: slot {i}");
            s
        })
        .collect();
    let k = got.iter().map(|s| s.version).max().unwrap() + 1;
    assert!(
        (lo..=hi).contains(&k),
        "{what}: the image is the source after {k} writes, but establish ran between write {lo} and {hi}"
    );
    let bad: Vec<String> = got
        .iter()
        .enumerate()
        .filter(|(i, s)| s.version != order.value_after(k, *i as u64))
        .map(|(i, s)| {
            format!(
                "slot {i}: {} (want {})",
                s.version,
                order.value_after(k, i as u64)
            )
        })
        .take(8)
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: not a prefix of the writes (newest write {}): {}",
        k - 1,
        bad.join(", ")
    );
    k
}

fn establish_races_writer(background: bool, seed: u64) {
    eprintln!("establish race: background {background}, seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let order = Arc::new(Order::new(&mut rng));
    let tmp = tempfile::tempdir().unwrap();
    let engine = Engine::open_dir(
        tmp.path(),
        EngineConfig {
            cache_bytes: 256 << 20,
            background,
        },
    )
    .unwrap();
    for name in ["src", "side", "tgt"] {
        engine.create_volume(name, E_CAPACITY, E_TRACK).unwrap();
    }
    let completed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let w = {
        let (src, order) = (engine.handle("src").unwrap(), order.clone());
        let (completed, stop) = (completed.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seq = 0u64;
            while !stop.load(Ordering::Acquire) {
                let s = order.slot_of(seq);
                let slot = Slot {
                    tag: TAG_SRC,
                    slot: s,
                    version: seq,
                };
                src.write(s * SLOT as u64, &encode(slot), false).unwrap();
                seq += 1;
                completed.store(seq, Ordering::SeqCst);
            }
        })
    };
    while completed.load(Ordering::SeqCst) < E_SLOTS {
        std::thread::yield_now();
    }
    let src_nocopy = FlashOptions::default();
    let mut side_bounds = None;
    let mut ks = Vec::new();
    for round in 0..40 {
        // A NOCOPY relationship to a side volume, re-established now and then, keeps source
        // writes going through the write cache, so establish has cached writes to order.
        if round % 3 == 0 {
            if side_bounds.is_some() {
                engine.withdraw("src", "side").unwrap();
            }
            let a = completed.load(Ordering::SeqCst);
            engine.establish("src", "side", src_nocopy).unwrap();
            let b = completed.load(Ordering::SeqCst);
            side_bounds = Some((a, b + 1));
        }
        std::thread::sleep(Duration::from_micros(rng.random_range(0..3000)));
        let opts = FlashOptions {
            background_copy: rng.random(),
            persistent: true,
            copy_rate: 0,
            ..FlashOptions::default()
        };
        let a = completed.load(Ordering::SeqCst);
        engine.establish("src", "tgt", opts).unwrap();
        let b = completed.load(Ordering::SeqCst);
        let tgt = engine.handle("tgt").unwrap();
        let k = check_prefix(&tgt, &order, a, b + 1, &format!("round {round}: tgt"));
        // Again after more source writes and some copying: T0 must not move.
        std::thread::sleep(Duration::from_millis(2));
        if !background {
            engine.destage_step();
            engine.copy_step(64).unwrap();
        }
        assert_eq!(
            check_prefix(&tgt, &order, k, k, &format!("round {round}: tgt later")),
            k
        );
        let (sa, sb) = side_bounds.unwrap();
        check_prefix(
            &engine.handle("side").unwrap(),
            &order,
            sa,
            sb,
            &format!("round {round}: side"),
        );
        engine.withdraw("src", "tgt").unwrap();
        ks.push(k - a);
    }
    stop.store(true, Ordering::Release);
    w.join().unwrap();
    eprintln!(
        "establish race: {} writes; cut minus writes-before-establish per round: {ks:?}",
        completed.load(Ordering::SeqCst)
    );
    engine.shutdown().unwrap();
}

#[test]
fn establish_during_writes_is_prefix_consistent_background() {
    establish_races_writer(true, rand::random());
}

#[test]
fn establish_during_writes_is_prefix_consistent_stepped() {
    establish_races_writer(false, rand::random());
}

// ---------------------------------------------------------------------------------------------
// Flush racing the destager.

/// `flush()` must not return while a destage that already took the volume's cached writes is
/// still on its way: the writes it acknowledged are not durable until that destage has ended.
/// A target write to an uncopied track is cached; a destager (here `destage_step` on a helper
/// thread, as the destager thread would) takes the batch; a host flush that starts meanwhile
/// finds the cache empty. Right after the flush returns the power goes out; the target must
/// still read what was written.
#[test]
fn flush_waits_for_a_destage_in_flight() {
    const TRACK: u64 = 64 << 10;
    const TRACKS: u64 = 256;
    for attempt in 0..16u64 {
        let storage = Arc::new(MemStorage::new());
        let cfg = EngineConfig {
            cache_bytes: 256 << 20,
            background: false,
        };
        let engine = Engine::open(storage.clone(), cfg.clone()).unwrap();
        engine.create_volume("src", TRACKS * TRACK, TRACK).unwrap();
        engine.create_volume("tgt", TRACKS * TRACK, TRACK).unwrap();
        let src = engine.handle("src").unwrap();
        src.write(0, &vec![0x11u8; (TRACKS * TRACK) as usize], false)
            .unwrap();
        src.flush().unwrap();
        engine
            .establish("src", "tgt", FlashOptions::default())
            .unwrap();
        let tgt = engine.handle("tgt").unwrap();
        for t in 0..TRACKS {
            tgt.write(t * TRACK, &[0x22u8; 4096], false).unwrap();
        }
        let destager = {
            let engine = engine.clone();
            std::thread::spawn(move || engine.destage_step())
        };
        std::thread::sleep(Duration::from_micros(attempt * 200));
        tgt.flush().unwrap();
        // Power off right after the flush is acknowledged.
        storage.arm(0);
        let _ = destager.join().unwrap();
        drop((src, tgt, engine));
        storage.power_cut(&mut |_, _| false);
        let engine = Engine::open(storage.clone(), cfg).unwrap();
        let tgt = engine.handle("tgt").unwrap();
        let mut lost = Vec::new();
        for t in 0..TRACKS {
            let mut buf = [0u8; 4096];
            tgt.read(t * TRACK, &mut buf).unwrap();
            if buf != [0x22u8; 4096] {
                lost.push(t);
            }
        }
        assert!(
            lost.is_empty(),
            "attempt {attempt}: flushed target writes lost after a power cut on tracks {:?} ({} of {TRACKS})",
            &lost[..lost.len().min(8)],
            lost.len()
        );
    }
}
