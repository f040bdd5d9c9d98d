//! Restarting the daemon in the middle of a background copy, cleanly
//! (SIGTERM) and by a crash (SIGKILL): the relationship survives, the copy
//! resumes and completes, and the target holds exactly the T0 image.

mod common;

use std::time::{Duration, Instant};

use common::{have, qemu_io, Daemon, Env};

fn restart_mid_copy(crash: bool) {
    if !have("qemu-io") {
        return;
    }
    let env = Env::new();
    let mut d = Daemon::start(&env);
    // Small tracks: many copy steps, so the copy is still running when the
    // daemon stops and again when it is back.
    d.cli_ok(&[
        "mkfbvol",
        "--cap",
        "32MiB",
        "--track-size",
        "4KiB",
        "src",
        "tgt",
    ]);
    qemu_io(&d, "src", &["write -P 0x5a 0 32M", "flush"]);
    // 32 MiB at 1 MiB/s: about 32 s, so the stop lands mid-copy.
    d.cli_ok(&["mkflash", "--rate", "1MiB", "src:tgt"]);
    // Source writes after T0 must be copied-on-write before they land.
    qemu_io(
        &d,
        "src",
        &["write -P 0xa5 1M 2M", "write -P 0xa6 30M 100000", "flush"],
    );
    // Mid-copy: the background copy has made progress since now, and is
    // not done. Polled with a deadline, not assumed after a sleep.
    let out_of_sync = |d: &Daemon| {
        let rels = d.flashes();
        assert_eq!(rels.len(), 1, "{rels:?}");
        let oos = rels[0]["out_of_sync_tracks"].as_u64().expect("oos");
        let total = rels[0]["total_tracks"].as_u64().expect("total");
        (oos, total)
    };
    let (start, _) = out_of_sync(&d);
    let deadline = Instant::now() + Duration::from_secs(30);
    let oos = loop {
        let (oos, total) = out_of_sync(&d);
        assert!(oos > 0, "copy complete before the restart: {oos}/{total}");
        if oos < start {
            break oos;
        }
        assert!(
            Instant::now() < deadline,
            "no background copy progress in 30 s: {oos}/{total}\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };

    let (nbd, api) = (d.nbd_port, d.api_port);
    if crash {
        d.kill9();
    } else {
        let status = d.terminate();
        assert!(status.success(), "SIGTERM exit: {status}");
    }
    drop(d);
    let d = match Daemon::try_start(&env, nbd, api) {
        Ok(d) => d,
        // The old ports were taken meanwhile; any ports will do.
        Err(_) => Daemon::start(&env),
    };

    let after = d.flashes();
    assert_eq!(
        after.len(),
        1,
        "relationship lost across restart: {after:?}"
    );
    assert_eq!(after[0]["source"], "src");
    assert_eq!(
        after[0]["copy_rate"],
        1 << 20,
        "copy rate lost across restart"
    );
    let oos_after = after[0]["out_of_sync_tracks"].as_u64().expect("oos");
    assert!(
        oos_after <= oos || crash,
        "copy went backwards: {oos} -> {oos_after}"
    );
    d.cli_ok(&["setflashrate", "--rate", "0", "src:tgt"]);
    d.wait_copied("src", "tgt", Duration::from_secs(60));
    qemu_io(&d, "tgt", &["read -P 0x5a 0 32M"]);
    qemu_io(
        &d,
        "src",
        &[
            "read -P 0x5a 0 1M",
            "read -P 0xa5 1M 2M",
            "read -P 0xa6 30M 100000",
        ],
    );
}

#[test]
fn restart_mid_copy_after_sigterm() {
    restart_mid_copy(false);
}

#[test]
fn restart_mid_copy_after_sigkill() {
    restart_mid_copy(true);
}
