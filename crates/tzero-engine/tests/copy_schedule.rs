//! Copy scheduling: a rate-limited relationship paces only itself. The background copy of an
//! unlimited relationship takes as long with a 1 MiB/s neighbour copying beside it as it does
//! alone, and the neighbour still copies at about its rate meanwhile. A rate lifted mid-copy
//! applies at once, and a relationship paced hours ahead holds up neither others nor shutdown.
//!
//! Real files and the engine's own threads (`EngineConfig::default()`), so what is timed is the
//! copier thread's scheduling, not a test driving steps.

// Sizes here are small, fixed and 64-bit: the truncation lints do not apply.
#![allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]

use std::sync::Mutex;
use std::time::{Duration, Instant};
use tzero_engine::{Engine, EngineConfig, FlashOptions, FlashState};

const MIB: u64 = 1 << 20;
/// Enough real data that the copy takes a measurable time (holes would copy for free).
const FAST_CAPACITY: u64 = 256 * MIB;
/// Never finishes at 1 MiB/s while the test runs, so it competes for the whole measurement.
const SLOW_CAPACITY: u64 = 64 * MIB;
const SLOW_RATE: u64 = MIB;
/// Alone / with-neighbour pairs; the best of each is compared, which filters out runs that lost
/// the shared cores or the disk to something else (other builds slow a 256 MiB copy from 0.1 s
/// to 1 s for seconds at a time). More pairs are measured only while the comparison fails; the
/// fault this test is for (the copier sleeping for the slow one) costs every pair about a
/// second, so extra pairs cannot hide it.
const MIN_ROUNDS: usize = 3;
const MAX_ROUNDS: usize = 10;
const DEADLINE: Duration = Duration::from_secs(120);

/// The tests run one at a time: the timing one should not share the cores with the others.
static SERIAL: Mutex<()> = Mutex::new(());

fn copy(rate: u64, persistent: bool) -> FlashOptions {
    FlashOptions {
        background_copy: true,
        persistent,
        copy_rate: rate,
        ..FlashOptions::default()
    }
}

/// Copies `src` to a fresh target and returns how long the background copy took: from
/// establish until no track is out of sync.
fn time_fast_copy(e: &Engine, target: &str) -> Duration {
    e.create_volume(target, FAST_CAPACITY, 0).unwrap();
    let began = Instant::now();
    e.establish("src", target, copy(0, false)).unwrap();
    let mut took = None;
    // Then the copier persists the bits (syncing the 256 MiB target) and, the relationship
    // not being persistent, ends it. That sync's time is the disk's, not the scheduling's, so
    // it is not counted; but it is waited for, so the next copy starts on an idle disk.
    while let Ok(r) = e.relationship("src", target) {
        assert_ne!(r.state, FlashState::Failed, "{:?}", r.failure);
        if took.is_none() && r.out_of_sync_tracks == 0 {
            took = Some(began.elapsed());
        }
        assert!(
            began.elapsed() < DEADLINE,
            "copy to {target} never finished"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // The copy can end between two polls.
    let took = took.unwrap_or_else(|| began.elapsed());
    e.delete_volume(target, false).unwrap();
    took
}

fn best(alone: &[Duration], with: &[Duration]) -> (Duration, Duration) {
    (*alone.iter().min().unwrap(), *with.iter().min().unwrap())
}

fn within_10_percent(alone: &[Duration], with: &[Duration]) -> bool {
    let (alone, with) = best(alone, with);
    with.as_secs_f64() <= alone.as_secs_f64() * 1.10
}

#[test]
fn slow_relationship_does_not_delay_an_unlimited_one() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open_dir(dir.path(), EngineConfig::default()).unwrap();
    e.create_volume("src", FAST_CAPACITY, 0).unwrap();
    e.create_volume("slow-src", SLOW_CAPACITY, 0).unwrap();
    let h = e.handle("src").unwrap();
    let mut chunk = vec![0u8; MIB as usize];
    for i in 0..FAST_CAPACITY / MIB {
        for (j, b) in chunk.iter_mut().enumerate() {
            *b = (i as u8) ^ (j as u8) | 1;
        }
        h.write(i * MIB, &chunk, false).unwrap();
    }
    h.flush().unwrap();

    // The first copy also pays for warming the page cache and the catalog: not counted.
    time_fast_copy(&e, "warm-up");
    let (mut alone, mut with) = (Vec::new(), Vec::new());
    let (mut slow_bytes, mut slow_time) = (0u64, Duration::ZERO);
    for round in 0..MAX_ROUNDS {
        if round >= MIN_ROUNDS && within_10_percent(&alone, &with) {
            break;
        }
        // Measured right before its with-neighbour counterpart, so both see the same machine.
        alone.push(time_fast_copy(&e, &format!("alone-{round}")));

        let slow_target = format!("slow-{round}");
        e.create_volume(&slow_target, SLOW_CAPACITY, 0).unwrap();
        let slow_began = Instant::now();
        e.establish("slow-src", &slow_target, copy(SLOW_RATE, true))
            .unwrap();
        with.push(time_fast_copy(&e, &format!("with-{round}")));
        // A rate is only measurable over many steps (one is 64 KiB, 1/16 s): follow the slow
        // copy on for a second, to check the fast one's copy did not stall it either.
        let copied = loop {
            let slow = e.relationship("slow-src", &slow_target).unwrap();
            assert_eq!(slow.state, FlashState::Copying, "{:?}", slow.failure);
            let copied = (slow.total_tracks - slow.out_of_sync_tracks) * slow.track_size;
            if copied >= SLOW_RATE {
                break copied;
            }
            assert!(slow_began.elapsed() < DEADLINE, "the slow copy stalled");
            std::thread::sleep(Duration::from_millis(1));
        };
        slow_time += slow_began.elapsed();
        slow_bytes += copied;
        e.withdraw("slow-src", &slow_target).unwrap();
        e.delete_volume(&slow_target, false).unwrap();
    }

    let (best_alone, best_with) = best(&alone, &with);
    let slow_rate = slow_bytes as f64 / slow_time.as_secs_f64();
    eprintln!(
        "unlimited copy of {} MiB: alone {alone:?} (best {best_alone:?}), with a {} MiB/s \
         neighbour {with:?} (best {best_with:?}); neighbour copied {:.2} MiB in {slow_time:?} \
         = {:.2} MiB/s",
        FAST_CAPACITY / MIB,
        SLOW_RATE / MIB,
        slow_bytes as f64 / MIB as f64,
        slow_rate / MIB as f64,
    );
    assert!(
        within_10_percent(&alone, &with),
        "the slow neighbour delayed the unlimited copy: {best_with:?} vs {best_alone:?} alone"
    );
    // Loosely: a step's worth of burst at each establish, and the timer's granularity, skew a
    // second or two of measurement; starving or ignoring the limit would be far outside this.
    assert!(
        slow_rate >= 0.5 * SLOW_RATE as f64 && slow_rate <= 2.0 * SLOW_RATE as f64,
        "the slow neighbour copied at {slow_rate:.0} B/s, not about {SLOW_RATE}"
    );
    e.shutdown().unwrap();
}

/// Raising the rate mid-copy applies at once: a copy that would take a minute at 1 MiB/s ends
/// soon after the limit is lifted, though its last step had set its next one a while off.
#[test]
fn a_rate_change_applies_mid_copy() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open_dir(dir.path(), EngineConfig::default()).unwrap();
    e.create_volume("s", SLOW_CAPACITY, 0).unwrap();
    e.create_volume("t", SLOW_CAPACITY, 0).unwrap();
    e.establish("s", "t", copy(SLOW_RATE, true)).unwrap();
    let began = Instant::now();
    let copied = |e: &Engine| {
        let r = e.relationship("s", "t").unwrap();
        r.total_tracks - r.out_of_sync_tracks
    };
    while copied(&e) < 2 {
        assert!(began.elapsed() < DEADLINE, "the slow copy never started");
        std::thread::sleep(Duration::from_millis(1));
    }
    e.set_copy_rate("s", "t", 0).unwrap();
    let lifted = Instant::now();
    while e.relationship("s", "t").unwrap().out_of_sync_tracks > 0 {
        assert!(lifted.elapsed() < DEADLINE, "the copy never finished");
        std::thread::sleep(Duration::from_millis(1));
    }
    // At 1 MiB/s the 64 MiB would take a minute more; unlimited, its holes take well under 10 s
    // even on a loaded machine.
    assert!(
        lifted.elapsed() < Duration::from_secs(10),
        "took {:?} after the rate was lifted",
        lifted.elapsed()
    );
    e.shutdown().unwrap();
}

/// A relationship paced far into the future (one 64 KiB track at 1 B/s is due again in 18
/// hours) neither holds the copier from an unlimited one nor holds up shutdown.
#[test]
fn a_very_slow_relationship_holds_up_neither_others_nor_shutdown() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open_dir(dir.path(), EngineConfig::default()).unwrap();
    for v in ["slow-s", "slow-t", "s", "t"] {
        e.create_volume(v, SLOW_CAPACITY, 0).unwrap();
    }
    e.establish("slow-s", "slow-t", copy(1, true)).unwrap();
    let began = Instant::now();
    loop {
        let r = e.relationship("slow-s", "slow-t").unwrap();
        if r.out_of_sync_tracks < r.total_tracks {
            break;
        }
        assert!(began.elapsed() < DEADLINE, "the slow copy never started");
        std::thread::sleep(Duration::from_millis(1));
    }
    e.establish("s", "t", copy(0, true)).unwrap();
    while e.relationship("s", "t").unwrap().out_of_sync_tracks > 0 {
        assert!(
            began.elapsed() < DEADLINE,
            "the unlimited copy waited for the slow one"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let slow = e.relationship("slow-s", "slow-t").unwrap();
    assert_eq!(slow.total_tracks - slow.out_of_sync_tracks, 1);
    let stopping = Instant::now();
    e.shutdown().unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        stopping.elapsed()
    );
}
