//! Real NBD clients against the daemon: qemu-io checks FlashCopy semantics
//! byte for byte (the target reads T0 data, a target write wins over the
//! background copy), qemu-img/nbdinfo/nbdcopy exercise the export as a
//! disk, and fio verifies data under concurrent load while a copy runs.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{have, qemu_io, run_ok, Daemon, Env};

const MIB: u64 = 1 << 20;

#[test]
fn qemu_io_target_keeps_t0_data() {
    if !have("qemu-io") {
        return;
    }
    let env = Env::new();
    let d = Daemon::start(&env);
    // Small tracks: the rate-limited copy below takes many steps, so the
    // target writes really race with it.
    d.cli_ok(&[
        "mkfbvol",
        "--cap",
        "16MiB",
        "--track-size",
        "4KiB",
        "a",
        "b",
        "c",
    ]);
    qemu_io(&d, "a", &["write -P 0x11 0 16M", "flush"]);

    // NOCOPY: only tracks the source overwrites are copied, on demand.
    d.cli_ok(&["mkflash", "--nocp", "a:b"]);
    qemu_io(
        &d,
        "a",
        &[
            "write -P 0x22 0 4M",
            // Unaligned and smaller than a track: copy-on-write of a partial track.
            "write -P 0x33 4097 10000",
            "write -P 0x44 6291455 3",
            "write -z 8M 1M",
            "discard 12M 1M",
            "flush",
        ],
    );
    qemu_io(
        &d,
        "a",
        &[
            "read -P 0x22 0 4097",
            "read -P 0x33 4097 10000",
            "read -P 0x22 14097 4180207",
            "read -P 0x11 4M 2097151",
            "read -P 0x44 6291455 3",
            "read -P 0x11 6291458 2097150",
            "read -P 0x00 8M 1M",
        ],
    );
    qemu_io(&d, "b", &["read -P 0x11 0 16M"]);

    // NOCOPY -> COPY; after the copy the target still holds T0, and the
    // non-persistent relationship ends by itself.
    d.cli_ok(&["chflash", "--cp", "--wait", "a:b"]);
    d.wait_copied("a", "b", Duration::from_secs(60));
    qemu_io(&d, "b", &["read -P 0x11 0 16M"]);

    // COPY at a limited rate; write to the target while the copy runs:
    // the host's write wins and survives the background copy.
    qemu_io(&d, "a", &["write -P 0x55 0 16M", "flush"]);
    d.cli_ok(&["mkflash", "--persist", "--rate", "1MiB", "a:c"]);
    qemu_io(
        &d,
        "c",
        &[
            "write -P 0x66 0 1M",
            "write -P 0x77 5000 3000",
            "write -z 10M 64k",
            "flush",
        ],
    );
    let mid = d.flashes();
    assert_ne!(
        mid[0]["out_of_sync_tracks"], 0,
        "copy already done: {mid:?}"
    );
    // Source writes during the copy: copied-on-write first, target unchanged.
    qemu_io(
        &d,
        "a",
        &["write -P 0x88 4M 4M", "write -P 0x99 0 64k", "flush"],
    );
    d.cli_ok(&["setflashrate", "--rate", "0", "a:c"]);
    d.wait_copied("a", "c", Duration::from_secs(60));
    qemu_io(
        &d,
        "c",
        &[
            "read -P 0x66 0 5000",
            "read -P 0x77 5000 3000",
            "read -P 0x66 8000 1040576",
            "read -P 0x55 1M 9M",
            "read -P 0x00 10M 64k",
            "read -P 0x55 10304K 5824K",
        ],
    );
    let rels = d.flashes();
    assert_eq!(rels.len(), 1, "{rels:?}");
    assert_eq!(rels[0]["state"], "copied");
    assert_eq!(rels[0]["out_of_sync_tracks"], 0);
}

#[test]
fn qemu_img_nbdinfo_nbdcopy() {
    if !have("qemu-img") || !have("nbdinfo") || !have("nbdcopy") || !have("qemu-io") {
        return;
    }
    let env = Env::new();
    let d = Daemon::start(&env);
    d.cli_ok(&["mkfbvol", "--cap", "32MiB", "src", "tgt", "dup"]);
    // Data first, so the compares below are not of two all-zero volumes.
    qemu_io(
        &d,
        "src",
        &[
            "write -P 0x5a 0 8M",
            "write -P 0xa5 20M 3M",
            "write -P 0x01 31M 4096",
            "flush",
        ],
    );

    // A COPY that completes with no writes since T0: target == source.
    d.cli_ok(&["mkflash", "--wait", "src:tgt"]);
    d.wait_copied("src", "tgt", Duration::from_secs(60));
    run_ok(
        Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "raw"])
            .arg(d.uri("src"))
            .arg(d.uri("tgt")),
        &d,
    );

    // Out of an export into a file, then the file against the source.
    let file = env.path("tgt.raw");
    run_ok(
        Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "raw"])
            .arg(d.uri("tgt"))
            .arg(&file),
        &d,
    );
    assert_eq!(std::fs::metadata(&file).expect("stat").len(), 32 * MIB);
    run_ok(
        Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "raw"])
            .arg(&file)
            .arg(d.uri("src")),
        &d,
    );

    // nbdinfo: export listing, size, description, block sizes, map.
    let info = run_ok(Command::new("nbdinfo").arg("--json").arg(d.uri("src")), &d);
    let info: serde_json::Value = serde_json::from_str(&info).expect("nbdinfo JSON");
    let export = &info["exports"][0];
    assert_eq!(export["export-name"], "src");
    assert_eq!(export["export-size"], 32 * MIB);
    assert_eq!(export["description"], "tzero volume src");
    assert_eq!(export["block_size_preferred"], 65536);
    let map = run_ok(Command::new("nbdinfo").arg("--map").arg(d.uri("src")), &d);
    assert!(!map.trim().is_empty());
    let list = run_ok(
        Command::new("nbdinfo")
            .arg("--list")
            .arg(format!("nbd://127.0.0.1:{}", d.nbd_port)),
        &d,
    );
    for name in ["src", "tgt", "dup"] {
        assert!(list.contains(name), "{list}");
    }

    // nbdcopy between two exports.
    run_ok(
        Command::new("nbdcopy").arg(d.uri("src")).arg(d.uri("dup")),
        &d,
    );
    run_ok(
        Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "raw"])
            .arg(d.uri("src"))
            .arg(d.uri("dup")),
        &d,
    );
}

#[test]
fn fio_verify_during_background_copy() {
    if !have("fio") || !have("qemu-io") {
        return;
    }
    let env = Env::new();
    let d = Daemon::start(&env);
    d.cli_ok(&[
        "mkfbvol",
        "--cap",
        "32MiB",
        "--track-size",
        "16KiB",
        "src",
        "tgt",
    ]);
    qemu_io(&d, "src", &["write -P 0x3c 0 32M", "flush"]);
    d.cli_ok(&["mkflash", "--persist", "--rate", "8MiB", "src:tgt"]);

    // Each job owns an 8 MiB region so verification is meaningful.
    run_ok(
        Command::new("fio").args([
            "--name=verify",
            "--ioengine=nbd",
            &format!("--uri={}", d.uri("src")),
            "--rw=randwrite",
            "--bsrange=4k-64k",
            "--size=8M",
            "--offset_increment=8M",
            "--numjobs=4",
            "--iodepth=8",
            "--verify=crc32c",
            "--verify_fatal=1",
            "--do_verify=1",
            // Verify while writing, for a fixed few seconds.
            "--verify_backlog=512",
            "--time_based",
            "--runtime=3",
            "--group_reporting",
            // No local-verify-*.state files left in the working directory.
            "--verify_state_save=0",
        ]),
        &d,
    );
    d.cli_ok(&["setflashrate", "--rate", "0", "src:tgt"]);
    d.wait_copied("src", "tgt", Duration::from_secs(60));
    // Whatever fio did to the source, the target is the T0 image.
    qemu_io(&d, "tgt", &["read -P 0x3c 0 32M"]);
}
