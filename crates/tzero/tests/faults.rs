//! Disk faults under the real daemon: its data directory is a FUSE mount of `tzero-faultfs`
//! (a pass-through to a backing directory in the test's temporary directory) that fails reads,
//! writes or fsyncs of chosen files, or slows every fsync, when the test says so.
//!
//! - a target write fails (EIO, ENOSPC) during copy-on-write and during the background copy,
//!   or the target's fsync fails: the relationship fails with its reason, the source goes on
//!   and loses nothing;
//! - the catalog's fsync fails: the daemon poisons itself and refuses I/O, the flush that hit it
//!   is not acknowledged, and after a restart on a healthy disk every acknowledged write is
//!   there and the target still reads T0;
//! - the source's reads fail: hosts get NBD EIO, never wrong data, and the daemon goes on;
//! - the audit log's fsync fails: admin actions are refused until the disk heals, I/O goes on;
//! - every fsync takes 200 ms: flushes, the background copy and admin commands complete, and
//!   freeze timeouts still release held writes.
//!
//! Every case checks that its fault fired (the file system counts them), and ends by stopping
//! the daemon, unmounting and starting a daemon on the backing directory itself (the same files
//! on a disk that does not fail) to read back, with qemu-io, what was acknowledged.
//!
//! Needs /dev/fuse and root (or fuse3's `fusermount3`); under `CI=true` a failure to mount, or
//! a missing qemu-io, fails the test instead of skipping it. The mount is detached when a test
//! ends, also by a panic (`tzero_faultfs::Mounted` unmounts on drop, after the daemon, which is
//! declared later, is killed).

mod common;

use common::nbd_client::NbdConn;
use common::{have, one_line_error, qemu_io, Daemon, Env};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tzero_faultfs::Mounted;

/// NBD error numbers.
const EIO: u32 = 5;

const WAIT: Duration = Duration::from_secs(60);

/// The same rule as the real clients' (`common::have`): under CI nothing may be skipped.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The daemon's data directory (`env.data()`) on the fault file system.
struct FaultDisk {
    mounted: Option<Mounted>,
    backing: PathBuf,
}

impl FaultDisk {
    fn mount_or_skip(env: &Env) -> Option<FaultDisk> {
        let backing = env.path("backing");
        match Mounted::mount(&env.data(), &backing, &env.path("faultfs.sock")) {
            Ok(m) => Some(FaultDisk {
                mounted: Some(m),
                backing,
            }),
            Err(e) => {
                let why = format!(
                    "cannot mount the fault file system on {}: {e} (needs /dev/fuse, and root \
                     or fusermount3 from the fuse3 package)",
                    env.data().display()
                );
                assert!(!in_ci(), "{why}: under CI=true this fails the test");
                eprintln!("!!!!!!!! SKIPPED: {why}; under CI=true this test would fail !!!!!!!!");
                None
            }
        }
    }

    /// One control command; panics on `err`.
    fn send(&self, command: &str) -> String {
        let m = self
            .mounted
            .as_ref()
            .expect("the fault file system is mounted");
        tzero_faultfs::send(m.control_socket(), command)
            .unwrap_or_else(|e| panic!("faultfs {command:?}: {e}"))
    }

    /// Operations failed or delayed so far.
    fn hits(&self) -> u64 {
        let n = self.send("hits");
        n.parse().unwrap_or_else(|_| panic!("hits: {n:?}"))
    }

    fn volume_files(&self) -> BTreeSet<String> {
        std::fs::read_dir(&self.backing)
            .expect("read the backing directory")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("vol-") && n.ends_with(".img"))
            .collect()
    }

    /// Creates a volume and returns its image's file name (the `vol-*.img` that appeared), the
    /// name the fault rules match.
    fn mkvol(&self, d: &Daemon, name: &str, cap: &str, track: &str) -> String {
        let before = self.volume_files();
        d.cli_ok(&["mkfbvol", "--cap", cap, "--track-size", track, name]);
        let new: Vec<String> = self.volume_files().difference(&before).cloned().collect();
        assert_eq!(new.len(), 1, "one new image for {name}: {new:?}");
        new.into_iter().next().expect("one")
    }

    /// Stops `d`, unmounts, and starts a daemon on the backing directory: the same files on a
    /// disk that does not fail, read with nothing of the old process or the FUSE layer between.
    fn restart_healthy(&mut self, env: &Env, mut d: Daemon) -> Daemon {
        // A poisoned engine cannot shut down cleanly (it exits 1); a healthy one exits 0.
        let poisoned = d.log_text().contains("poisoned");
        let status = d.terminate();
        assert!(
            poisoned || status.success(),
            "clean shutdown: {status}\n{}",
            d.log_text()
        );
        drop(d);
        if let Some(m) = self.mounted.take() {
            m.unmount().expect("unmount the fault file system");
        }
        Daemon::start_in(env, &self.backing)
    }
}

fn rel(d: &Daemon, src: &str, tgt: &str) -> Value {
    d.flashes()
        .into_iter()
        .find(|f| f["source"] == src && f["target"] == tgt)
        .unwrap_or_else(|| panic!("no relationship {src}:{tgt}\n{}", d.log_text()))
}

/// Waits until `src:tgt` has failed; returns it.
fn wait_failed(d: &Daemon, src: &str, tgt: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let r = rel(d, src, tgt);
        if r["state"] == "failed" {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{src}:{tgt} never failed: {r}\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs qemu-io, which must fail; returns what it printed.
fn qemu_io_fails(d: &Daemon, export: &str, cmds: &[&str]) -> String {
    let mut cmd = Command::new("qemu-io");
    cmd.args(["-f", "raw"]).arg(d.uri(export));
    for c in cmds {
        cmd.args(["-c", c]);
    }
    let out = cmd.output().expect("run qemu-io");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success() || text.contains("failed"),
        "qemu-io {export} {cmds:?} should have failed:\n{text}"
    );
    text
}

/// Runs qemu-io that must succeed within `limit`: a hang is a deadlock, not a slow test.
fn qemu_io_within(d: &Daemon, export: &str, cmds: &[String], limit: Duration) -> Duration {
    let mut cmd = Command::new("qemu-io");
    cmd.args(["-f", "raw"]).arg(d.uri(export));
    for c in cmds {
        cmd.args(["-c", c]);
    }
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn qemu-io");
    loop {
        if let Some(status) = child.try_wait().expect("wait qemu-io") {
            let out = child.wait_with_output().expect("qemu-io output");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                status.success() && !text.contains("failed"),
                "qemu-io {export}: {status}\n{text}\n{}",
                d.log_text()
            );
            return start.elapsed();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "qemu-io {export} not done after {limit:?}: deadlock?\n{}",
                d.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_not_poisoned(d: &Daemon) {
    let log = d.log_text();
    assert!(
        !log.contains("poison"),
        "the engine poisoned itself:\n{log}"
    );
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum During {
    /// A host write's copy-on-write writes the target.
    CopyOnWrite,
    /// The background copy writes the target.
    BackgroundCopy,
    /// The background copy's data is written, the target's fsync (before its bits are
    /// committed) fails.
    TargetSync,
}

/// Cases (a) and (b): the target's writes (or its fsync) fail with `errno` (`strerror` text
/// `says`).
fn target_write_fault(errno: &str, says: &str, during: During) {
    if !have("qemu-io") {
        return;
    }
    let env = Env::new();
    let Some(mut disk) = FaultDisk::mount_or_skip(&env) else {
        return;
    };
    let d = Daemon::start(&env);
    // The background copy: small tracks at 1 MiB/s, so it is mid-way when the disk fails.
    let (cap, track, total) = match during {
        During::CopyOnWrite => ("8MiB", "64KiB", 8),
        During::BackgroundCopy | During::TargetSync => ("16MiB", "4KiB", 16),
    };
    disk.mkvol(&d, "src", cap, track);
    let tgt_file = disk.mkvol(&d, "tgt", cap, track);
    qemu_io(&d, "src", &[&format!("write -P 0x11 0 {total}M"), "flush"]);

    let reason_starts = match during {
        During::CopyOnWrite => {
            d.cli_ok(&["mkflash", "--nocp", "src:tgt"]);
            disk.send(&format!("fail write {tgt_file} {errno}"));
            // The host's write and flush succeed: the copy-on-write that fails fails the
            // relationship, not the source.
            qemu_io(&d, "src", &["write -P 0x22 0 1M", "flush"]);
            "copy-on-write to target failed"
        }
        During::BackgroundCopy | During::TargetSync => {
            d.cli_ok(&["mkflash", "--rate", "1MiB", "src:tgt"]);
            let start = Instant::now();
            while rel(&d, "src", "tgt")["out_of_sync_tracks"]
                == rel(&d, "src", "tgt")["total_tracks"]
            {
                assert!(start.elapsed() < WAIT, "no background copy progress");
                std::thread::sleep(Duration::from_millis(20));
            }
            if during == During::TargetSync {
                disk.send(&format!("fail fsync {tgt_file} {errno}"));
                "syncing the target failed"
            } else {
                disk.send(&format!("fail write {tgt_file} {errno}"));
                "background copy to target failed"
            }
        }
    };
    let r = wait_failed(&d, "src", "tgt");
    let reason = r["failure"].as_str().unwrap_or_default().to_owned();
    assert!(
        reason.starts_with(reason_starts) && reason.contains(says),
        "reason: {r}"
    );
    let long = d.cli_ok(&["lsflash", "-l"]);
    assert!(
        long.contains(&reason),
        "lsflash -l shows the reason:\n{long}"
    );
    assert!(disk.hits() > 0, "the fault never fired");
    if during != During::CopyOnWrite {
        qemu_io(&d, "src", &["write -P 0x22 0 1M", "flush"]);
    }

    // The source goes on, disk still failing the target; the target is unreadable, never
    // wrong.
    qemu_io(
        &d,
        "src",
        &[
            "write -P 0x33 1M 1M",
            "flush",
            "read -P 0x22 0 1M",
            "read -P 0x33 1M 1M",
            &format!("read -P 0x11 2M {}M", total - 2),
        ],
    );
    let mut conn = NbdConn::connect(d.nbd_port, "tgt").expect("connect tgt");
    assert_eq!(
        conn.read(0, 4096).expect("read tgt"),
        Err(EIO),
        "target of a failed pair"
    );
    assert_not_poisoned(&d);

    // The disk heals; the admin withdraws the failed pair and reuses the target, no restart.
    disk.send("clear");
    d.cli_ok(&["rmflash", "src:tgt"]);
    d.cli_ok(&["mkflash", "--nocp", "src:tgt"]);
    qemu_io(&d, "src", &["write -P 0x44 2M 1M", "flush"]);
    qemu_io(
        &d,
        "tgt",
        &[
            "read -P 0x22 0 1M",
            "read -P 0x33 1M 1M",
            &format!("read -P 0x11 2M {}M", total - 2),
        ],
    );

    let d = disk.restart_healthy(&env, d);
    let rest = format!("read -P 0x11 3M {}M", total - 3);
    qemu_io(
        &d,
        "src",
        &[
            "read -P 0x22 0 1M",
            "read -P 0x33 1M 1M",
            "read -P 0x44 2M 1M",
            &rest,
        ],
    );
    qemu_io(&d, "tgt", &["read -P 0x33 1M 1M", "read -P 0x11 2M 1M"]);
}

#[test]
fn eio_on_target_during_copy_on_write_fails_the_relationship_not_the_source() {
    target_write_fault("EIO", "Input/output error", During::CopyOnWrite);
}

#[test]
fn eio_on_target_during_background_copy_fails_the_relationship_not_the_source() {
    target_write_fault("EIO", "Input/output error", During::BackgroundCopy);
}

#[test]
fn eio_on_target_fsync_during_background_copy_fails_the_relationship_not_the_source() {
    target_write_fault("EIO", "Input/output error", During::TargetSync);
}

#[test]
fn enospc_on_target_during_copy_on_write_fails_the_relationship_not_the_source() {
    target_write_fault("ENOSPC", "No space left on device", During::CopyOnWrite);
}

#[test]
fn enospc_on_target_during_background_copy_fails_the_relationship_not_the_source() {
    target_write_fault("ENOSPC", "No space left on device", During::BackgroundCopy);
}

/// Case (c).
#[test]
fn catalog_fsync_failure_poisons_and_loses_nothing_acknowledged() {
    if !have("qemu-io") {
        return;
    }
    let env = Env::new();
    let Some(mut disk) = FaultDisk::mount_or_skip(&env) else {
        return;
    };
    let d = Daemon::start(&env);
    disk.mkvol(&d, "src", "8MiB", "64KiB");
    disk.mkvol(&d, "tgt", "8MiB", "64KiB");
    qemu_io(&d, "src", &["write -P 0x11 0 8M", "flush"]);
    d.cli_ok(&["mkflash", "--nocp", "src:tgt"]);
    // Acknowledged: its copy-on-write bits are committed to the catalog before the flush's
    // answer.
    qemu_io(&d, "src", &["write -P 0x22 0 1M", "flush"]);

    // The commit's fsync fails, after a second: long enough for the flush below to arrive
    // while the background destager's batch is stuck in it.
    disk.send("delay fsync catalog.redb 1000");
    disk.send("fail fsync catalog.redb EIO");
    let mut conn = NbdConn::connect(d.nbd_port, "src").expect("connect src");
    assert_eq!(
        conn.write(2 << 20, &[0x33; 1 << 20]).expect("write"),
        0,
        "cached"
    );
    // The destager (every 20 ms) takes the cached tracks; its commit fails. The flush must not
    // be acknowledged although it finds nothing left to destage (the engine's bug this found:
    // it was, and the write was lost).
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        conn.flush().expect("flush"),
        EIO,
        "flush must not be acknowledged; faults: {}\n{}",
        disk.send("list"),
        d.log_text()
    );
    assert!(disk.hits() > 0, "the fault never fired");
    assert!(
        d.log_text().contains("destage failed"),
        "the background destager's commit was to fail, not the flush's own:\n{}",
        d.log_text()
    );

    // Poisoned: I/O refused on the open connection and for new ones; admin commands that
    // change anything refused with the reason.
    assert_ne!(
        conn.write(4 << 20, &[0x55; 4096]).expect("write"),
        0,
        "write after poison"
    );
    assert_ne!(conn.flush().expect("flush"), 0, "flush after poison");
    assert!(
        conn.read(0, 4096).expect("read").is_err(),
        "read after poison"
    );
    drop(conn);
    let out = qemu_io_fails(&d, "src", &["read 0 4k"]);
    assert!(
        out.contains("poisoned"),
        "a new connection is told why:\n{out}"
    );
    let (_, err) = one_line_error(&d.cli(&["mkfbvol", "--cap", "1MiB", "extra"]));
    assert!(err.contains("poisoned") && err.contains("restart"), "{err}");
    let log = d.log_text();
    assert!(log.contains("metadata could not be persisted"), "{log}");

    // The disk heals, the daemon restarts: what was acknowledged is there, the target reads T0,
    // the unacknowledged write is whole or absent per sector, never anything else.
    disk.send("clear");
    let d = disk.restart_healthy(&env, d);
    qemu_io(
        &d,
        "src",
        &[
            "read -P 0x22 0 1M",
            "read -P 0x11 1M 1M",
            "read -P 0x11 3M 5M",
        ],
    );
    let mut conn = NbdConn::connect(d.nbd_port, "src").expect("connect src");
    let unacked = conn.read(2 << 20, 1 << 20).expect("read").expect("ok");
    for (i, sector) in unacked.chunks(512).enumerate() {
        assert!(
            sector.iter().all(|&b| b == 0x11) || sector.iter().all(|&b| b == 0x33),
            "sector {i} of the unacknowledged write holds neither the old nor the new data"
        );
    }
    qemu_io(&d, "tgt", &["read -P 0x11 0 8M"]);
    assert_eq!(rel(&d, "src", "tgt")["state"], "no_copy");
    qemu_io(
        &d,
        "src",
        &["write -P 0x66 4M 1M", "flush", "read -P 0x66 4M 1M"],
    );
    qemu_io(&d, "tgt", &["read -P 0x11 0 8M"]);
}

/// Case (d).
#[test]
fn source_read_errors_reach_the_host_as_eio_never_wrong_data() {
    if !have("qemu-io") {
        return;
    }
    let env = Env::new();
    let Some(mut disk) = FaultDisk::mount_or_skip(&env) else {
        return;
    };
    let d = Daemon::start(&env);
    let src_file = disk.mkvol(&d, "src", "8MiB", "64KiB");
    disk.mkvol(&d, "tgt", "8MiB", "64KiB");
    qemu_io(&d, "src", &["write -P 0x11 0 8M", "flush"]);
    // The target reads through to the source's file.
    d.cli_ok(&["mkflash", "--nocp", "src:tgt"]);

    disk.send(&format!("fail read {src_file} EIO"));
    let out = qemu_io_fails(&d, "src", &["read -P 0x11 0 1M"]);
    assert!(out.contains("Input/output error"), "{out}");
    for export in ["src", "tgt"] {
        let mut conn = NbdConn::connect(d.nbd_port, export).expect("connect");
        assert_eq!(
            conn.read(4 << 20, 65536).expect("read"),
            Err(EIO),
            "{export}"
        );
    }
    assert!(disk.hits() > 0, "the fault never fired");
    // One read fails, the next succeeds: a transient error is not remembered.
    disk.send("clear");
    disk.send(&format!("fail read {src_file} EIO 1"));
    let mut conn = NbdConn::connect(d.nbd_port, "src").expect("connect");
    assert_eq!(conn.read(0, 65536).expect("read"), Err(EIO));
    assert_eq!(conn.read(0, 65536).expect("read"), Ok(vec![0x11; 65536]));
    // Nothing failed but the reads: the pair and the daemon are fine.
    assert_eq!(rel(&d, "src", "tgt")["state"], "no_copy");
    assert_not_poisoned(&d);

    disk.send("clear");
    qemu_io(&d, "src", &["read -P 0x11 0 8M"]);
    qemu_io(
        &d,
        "src",
        &["write -P 0x22 0 1M", "flush", "read -P 0x22 0 1M"],
    );
    qemu_io(&d, "tgt", &["read -P 0x11 0 8M"]);

    let d = disk.restart_healthy(&env, d);
    qemu_io(&d, "src", &["read -P 0x22 0 1M", "read -P 0x11 1M 7M"]);
    qemu_io(&d, "tgt", &["read -P 0x11 0 8M"]);
}

/// Case (e).
#[test]
fn slow_fsync_neither_times_out_nor_deadlocks_and_freeze_timeouts_fire() {
    if !have("qemu-io") {
        return;
    }
    let env = Env::new();
    let Some(mut disk) = FaultDisk::mount_or_skip(&env) else {
        return;
    };
    let d = Daemon::start(&env);
    disk.mkvol(&d, "src", "16MiB", "64KiB");
    disk.mkvol(&d, "tgt", "16MiB", "64KiB");
    qemu_io(&d, "src", &["write -P 0x11 0 16M", "flush"]);

    disk.send("delay fsync * 200");
    // A background copy (the persister syncs the target and commits every second) under a
    // host stream of writes, each followed by a flush.
    d.cli_ok(&["mkflash", "src:tgt"]);
    const FLUSHES: u64 = 10;
    let mut cmds = Vec::new();
    for i in 0..FLUSHES {
        cmds.push(format!("write -P {} {}M 512K", 0x40 + i, i));
        cmds.push("flush".to_owned());
    }
    let took = qemu_io_within(&d, "src", &cmds, Duration::from_secs(90));
    assert!(
        took >= Duration::from_millis(200 * FLUSHES),
        "{FLUSHES} flushes in {took:?}: the fsyncs were not slow"
    );
    d.wait_copied("src", "tgt", Duration::from_secs(90));
    qemu_io(&d, "tgt", &["read -P 0x11 0 16M"]);
    let mut reads: Vec<String> = (0..FLUSHES)
        .map(|i| format!("read -P {} {}M 512K", 0x40 + i, i))
        .collect();
    reads.push(format!("read -P 0x11 {FLUSHES}M {}M", 16 - FLUSHES));
    let reads: Vec<&str> = reads.iter().map(String::as_str).collect();
    qemu_io(&d, "src", &reads);

    // A freeze's timeout releases held writes by itself, slow disk or not.
    disk.mkvol(&d, "s", "1MiB", "4KiB");
    disk.mkvol(&d, "t", "1MiB", "4KiB");
    let mut conn = NbdConn::connect(d.nbd_port, "s").expect("connect");
    assert_eq!(conn.write(0, &[1u8; 4096]).expect("write"), 0);
    let out = d.cli_ok(&[
        "mkflash",
        "--nocp",
        "--freeze",
        "--freeze-timeout",
        "2",
        "s:t",
    ]);
    assert!(out.contains("for up to 2 s"), "{out}");
    let start = Instant::now();
    assert_eq!(
        conn.write(0, &[2u8; 4096]).expect("write"),
        0,
        "held, not failed"
    );
    let held = start.elapsed();
    assert!(
        held >= Duration::from_millis(300) && held < Duration::from_secs(15),
        "the write was held {held:?}, expected up to 2 s"
    );
    let out = d.cli_ok(&["freezeflash", "--timeout", "1", "s"]);
    assert!(out.contains("frozen"), "{out}");
    let start = Instant::now();
    assert_eq!(conn.write(4096, &[3u8; 4096]).expect("write"), 0);
    let held = start.elapsed();
    assert!(
        held >= Duration::from_millis(700) && held < Duration::from_secs(15),
        "held {held:?}, expected about 1 s"
    );
    assert_eq!(conn.flush().expect("flush"), 0);
    assert!(
        d.log_text().contains("freeze timed out"),
        "the timeout is logged"
    );
    assert!(disk.hits() >= FLUSHES, "the delays never applied");
    assert_not_poisoned(&d);
    drop(conn);

    disk.send("clear");
    let d = disk.restart_healthy(&env, d);
    qemu_io(&d, "src", &reads);
    qemu_io(&d, "tgt", &["read -P 0x11 0 16M"]);
    qemu_io(&d, "s", &["read -P 2 0 4k", "read -P 3 4k 4k"]);
    qemu_io(&d, "t", &["read -P 1 0 4k", "read -P 0 4k 4k"]);
}

/// The backing directory of a mount that is gone holds no FUSE leftovers: a test helper
/// check that the guard unmounted (a stale mount would fail every later test on this path).
#[test]
fn dropping_the_guard_unmounts() {
    let env = Env::new();
    let Some(disk) = FaultDisk::mount_or_skip(&env) else {
        return;
    };
    let mountpoint = env.data();
    std::fs::write(mountpoint.join("probe"), b"through").expect("write through the mount");
    assert!(mounted(&mountpoint), "mounted");
    drop(disk);
    assert!(!mounted(&mountpoint), "still mounted after drop");
    assert_eq!(
        std::fs::read(env.path("backing").join("probe")).expect("backing file"),
        b"through"
    );
}

fn mounted(path: &Path) -> bool {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(path.to_str().unwrap_or_default()))
}

/// The audit log's fdatasync fails: the admin action it hit stands, later ones are refused (503
/// `audit_unavailable`) while the disk fails, host I/O and reads go on, and the refusal lifts
/// by itself once the disk heals. (It found the daemon reopening the log after the failure
/// without checking that it could sync, which let every later action through unrecorded.)
#[test]
fn audit_log_fsync_failure_refuses_admin_actions_until_the_disk_heals() {
    if !have("qemu-io") {
        return;
    }
    let env = Env::new();
    let Some(mut disk) = FaultDisk::mount_or_skip(&env) else {
        return;
    };
    let d = Daemon::start(&env);
    disk.mkvol(&d, "a", "4MiB", "64KiB");
    qemu_io(&d, "a", &["write -P 0x11 0 4M", "flush"]);

    disk.send("fail fsync audit.log EIO");
    // Done before its record failed: it stands.
    d.cli_ok(&["mkfbvol", "--cap", "1MiB", "b"]);
    assert!(disk.hits() > 0, "the fault never fired");
    for _ in 0..2 {
        let (_, err) = one_line_error(&d.cli(&["mkfbvol", "--cap", "1MiB", "c"]));
        assert!(
            err.contains("audit log") && err.contains("cannot be written"),
            "{err}"
        );
    }
    let names = |d: &Daemon| -> Vec<String> {
        d.cli_json(&["lsfbvol"])
            .as_array()
            .expect("lsfbvol --json is an array")
            .iter()
            .filter_map(|v| v["name"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(names(&d), ["a", "b"], "the refused action was not done");
    qemu_io(
        &d,
        "a",
        &[
            "write -P 0x22 0 1M",
            "flush",
            "read -P 0x22 0 1M",
            "read -P 0x11 1M 3M",
        ],
    );
    assert_not_poisoned(&d);

    disk.send("clear");
    d.cli_ok(&["mkfbvol", "--cap", "1MiB", "c"]);
    let log = std::fs::read_to_string(disk.backing.join("audit.log")).expect("audit.log");
    assert!(
        log.lines()
            .last()
            .is_some_and(|l| l.contains(r#""name":"c""#) && l.contains(r#""result":"ok""#)),
        "the healed log records the action:\n{log}"
    );

    let d = disk.restart_healthy(&env, d);
    assert_eq!(names(&d), ["a", "b", "c"]);
    qemu_io(&d, "a", &["read -P 0x22 0 1M", "read -P 0x11 1M 3M"]);
}
