//! The daemon on a full host file system, end to end with the real binary, the CLI and qemu-io:
//! the data directory on a 200 MiB tmpfs and on a 256 MiB loop-mounted ext4 (mounted by the
//! test; root needed, and under `CI=true` a failure to mount fails the test).
//!
//! The repro: two 150 MiB volumes, the source filled, `mkflash --persist src:tgt`. The
//! background copy runs out of space: the relationship fails with its reason, the source keeps
//! serving reads and writes, a write that needs new space gets ENOSPC (not EIO), and `rmflash`,
//! `rmfbvol` and `mkfbvol` work, with no restart and no poisoned engine.

mod common;

use common::{have, one_line_error, qemu_io, Daemon, Env};
use std::process::Command;
use std::time::{Duration, Instant};
use tzero_engine::storage::scratch::{FsKind, ScratchFs};

/// Waits until `src:tgt` has failed; returns its JSON.
fn wait_failed(d: &Daemon, src: &str, tgt: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let rel = d
            .flashes()
            .into_iter()
            .find(|f| f["source"] == src && f["target"] == tgt)
            .unwrap_or_else(|| panic!("{src}:{tgt} is gone:\n{}", d.log_text()));
        if rel["state"] == "failed" {
            return rel;
        }
        assert_ne!(rel["state"], "copied", "the target cannot fit: {rel}");
        assert!(
            Instant::now() < deadline,
            "{src}:{tgt} never failed: {rel}\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs qemu-io, which must fail; returns what it printed.
fn qemu_io_fails(d: &Daemon, export: &str, cmd: &str) -> String {
    let out = Command::new("qemu-io")
        .args(["-f", "raw"])
        .arg(d.uri(export))
        .args(["-c", cmd])
        .output()
        .expect("run qemu-io");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("failed"),
        "qemu-io {cmd} did not fail:\n{text}"
    );
    text
}

fn repro(kind: FsKind, size_mib: u64) {
    if !have("qemu-io") {
        return;
    }
    let env = Env::new();
    let Some(_fs) = ScratchFs::mount_or_skip(kind, size_mib, &env.data()) else {
        return;
    };
    let mut d = Daemon::start(&env);
    d.cli_ok(&["mkfbvol", "--cap", "150MiB", "src", "tgt"]);
    qemu_io(&d, "src", &["write -P 0x5a 0 150M", "flush"]);
    d.cli_ok(&["mkflash", "--persist", "src:tgt"]);

    let rel = wait_failed(&d, "src", "tgt");
    let reason = rel["failure"].as_str().unwrap_or_default().to_owned();
    assert!(
        reason.contains("background copy to target failed")
            && reason.contains("No space left on device"),
        "{rel}"
    );
    let long = d.cli_ok(&["lsflash", "-l"]);
    assert!(
        long.contains(&reason),
        "lsflash -l shows the reason:\n{long}"
    );

    // The source: every byte reads back, and overwriting space it has works.
    qemu_io(&d, "src", &["read -P 0x5a 0 150M"]);
    qemu_io(
        &d,
        "src",
        &["write -P 0x5b 0 1M", "flush", "read -P 0x5b 0 1M"],
    );
    qemu_io(&d, "src", &["read -P 0x5a 1M 149M"]);

    // A new volume on the full file system: created, and a write that needs space gets ENOSPC.
    // Or, when the catalog has had to grow into its metadata reserve (whether it did depends on
    // when the persister last committed), refused with the reserve named: the reserve is kept
    // whole for the commits that free space.
    let created = d.cli(&["mkfbvol", "--cap", "64MiB", "extra"]);
    if created.status.success() {
        let out = qemu_io_fails(&d, "extra", "write -P 0x11 0 64M");
        assert!(out.contains("No space left on device"), "{out}");
    } else {
        let (_, err) = one_line_error(&created);
        assert!(
            err.contains("metadata reserve") && err.contains("free space"),
            "{err}"
        );
    }

    // The admin frees space: all accepted, no restart.
    d.cli_ok(&["rmflash", "src:tgt"]);
    assert!(d.flashes().is_empty());
    d.cli_ok(&["rmfbvol", "tgt"]);
    if created.status.success() {
        d.cli_ok(&["rmfbvol", "extra"]);
    }
    d.cli_ok(&["mkfbvol", "--cap", "16MiB", "fresh"]);
    qemu_io(
        &d,
        "fresh",
        &["write -P 0x33 0 4M", "flush", "read -P 0x33 0 4M"],
    );
    qemu_io(&d, "src", &["read -P 0x5b 0 1M", "read -P 0x5a 1M 149M"]);

    if kind == FsKind::Ext4 {
        // The file system's own limit, named, through the API and the CLI.
        let out = d.cli(&["mkfbvol", "--cap", "17TiB", "huge"]);
        let (_, err) = one_line_error(&out);
        assert!(
            err.contains("exceeds the largest file ext4 allows (16 TiB)"),
            "{err}"
        );
    }

    let log = d.log_text();
    assert!(
        !log.contains("poison"),
        "the engine poisoned itself:\n{log}"
    );
    let status = d.terminate();
    assert!(
        status.success(),
        "clean shutdown: {status}\n{}",
        d.log_text()
    );
    // And after a restart, what the full disk committed is what the daemon finds.
    let d = Daemon::start(&env);
    let vols = d.cli_json(&["lsfbvol"]);
    let mut names: Vec<&str> = vols
        .as_array()
        .expect("lsfbvol --json is an array")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["fresh", "src"]);
    assert!(d.flashes().is_empty());
    qemu_io(&d, "src", &["read -P 0x5b 0 1M", "read -P 0x5a 1M 149M"]);
}

#[test]
fn tmpfs_full_disk_repro() {
    repro(FsKind::Tmpfs, 200);
}

#[test]
fn ext4_full_disk_repro() {
    repro(FsKind::Ext4, 256);
}
