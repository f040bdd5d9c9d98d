//! DS8000 functions through the real daemon and real clients: consistency
//! groups with freeze (a prefix-consistent cut across three volumes under a
//! dependent-write stream), the freeze timeout, target write inhibit (NBD
//! read-only flag, EPERM on an existing connection), space-efficient targets
//! in a small extent pool (a full pool fails the relationship, never the
//! source), revertible incremental resyncs (also across SIGKILL), and the
//! refusals that must change nothing.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::nbd_client::NbdConn;
use common::{have, one_line_error, qemu_io, run_ok, Daemon, Env};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);
const EPERM: u32 = 1;

fn rel(d: &Daemon, src: &str, tgt: &str) -> Value {
    d.flashes()
        .into_iter()
        .find(|f| f["source"] == src && f["target"] == tgt)
        .unwrap_or_else(|| panic!("no relationship {src}:{tgt}"))
}

fn volume(d: &Daemon, name: &str) -> Value {
    d.cli_json(&["lsfbvol", name])[0].clone()
}

fn pool(d: &Daemon, name: &str) -> Value {
    d.cli_json(&["lsextpool", name])[0].clone()
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Rows of a CLI table, each as header → cell (columns start where their
/// headers start).
fn table(text: &str) -> Vec<HashMap<String, String>> {
    let mut lines = text.lines();
    let header = lines.next().expect("header line");
    let mut starts = Vec::new();
    let mut prev_space = true;
    for (i, ch) in header.char_indices() {
        if ch != ' ' && prev_space && (i == 0 || header[..i].ends_with("  ")) {
            starts.push(i);
        }
        prev_space = ch == ' ';
    }
    let names: Vec<String> = starts
        .iter()
        .enumerate()
        .map(|(k, &s)| {
            let end = starts.get(k + 1).copied().unwrap_or(header.len());
            header[s..end].trim().to_owned()
        })
        .collect();
    lines
        .skip(1)
        .map(|line| {
            let mut row = HashMap::new();
            for (k, &s) in starts.iter().enumerate() {
                let end = starts.get(k + 1).copied().unwrap_or(line.len());
                let cell = line
                    .get(s.min(line.len())..end.min(line.len()))
                    .unwrap_or("");
                row.insert(names[k].clone(), cell.trim().to_owned());
            }
            row
        })
        .collect()
}

fn md5_export(d: &Daemon, env: &Env, export: &str, file: &str) -> String {
    let path = env.path(file);
    let _ = std::fs::remove_file(&path);
    run_ok(Command::new("nbdcopy").arg(d.uri(export)).arg(&path), d);
    let out = run_ok(Command::new("md5sum").arg(&path), d);
    out.split_whitespace().next().expect("md5").to_owned()
}

/// qemu-io that is expected to fail; returns its combined output.
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

fn fresh_read_all(d: &Daemon, export: &str) -> Vec<u8> {
    NbdConn::connect(d.nbd_port, export)
        .expect("connect")
        .read_all()
}

const RECORD: usize = 512;

/// A record of the dependent-write stream: global sequence number (from 1)
/// and slot, then filler.
fn record(seq: u64, slot: u64) -> Vec<u8> {
    let mut r = vec![0xa5u8; RECORD];
    r[..8].copy_from_slice(&seq.to_le_bytes());
    r[8..16].copy_from_slice(&slot.to_le_bytes());
    r
}

/// The sequence numbers found in a volume image (all-zero slots skipped).
fn seqs_in(image: &[u8]) -> Vec<u64> {
    image
        .chunks(RECORD)
        .enumerate()
        .filter_map(|(slot, r)| {
            let seq = u64::from_le_bytes(r[..8].try_into().expect("8"));
            if seq == 0 {
                return None;
            }
            let s = u64::from_le_bytes(r[8..16].try_into().expect("8"));
            assert_eq!(s, slot as u64, "record of seq {seq} in the wrong slot");
            Some(seq)
        })
        .collect()
}

#[test]
fn consistency_group_freeze_gives_a_prefix_consistent_cut() {
    let started = Instant::now();
    let env = Env::new();
    let d = Daemon::start(&env);
    let vols = ["a", "b", "c"];
    d.cli_ok(&[
        "mkfbvol",
        "--cap",
        "1MiB",
        "--track-size",
        "4KiB",
        "a",
        "b",
        "c",
        "ta",
        "tb",
        "tc",
    ]);
    let slots = (1u64 << 20) / RECORD as u64;
    let total = slots * 3;
    // One writer, three connections: write n+1 is issued only after write n
    // is acknowledged, round-robin over the volumes, so the stream is a
    // chain of dependent writes across the three volumes.
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // (seq, issued, completed)
    let log: Arc<Mutex<Vec<(u64, Instant, Instant)>>> = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let (count, stop, log) = (count.clone(), stop.clone(), log.clone());
        let port = d.nbd_port;
        std::thread::spawn(move || {
            let mut conns: Vec<NbdConn> = vols
                .iter()
                .map(|v| NbdConn::connect(port, v).expect("connect"))
                .collect();
            for seq in 1..=total {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let i = ((seq - 1) % 3) as usize;
                let slot = (seq - 1) / 3;
                let issued = Instant::now();
                let errno = conns[i]
                    .write(slot * RECORD as u64, &record(seq, slot))
                    .expect("write");
                assert_eq!(errno, 0, "write {seq} failed");
                log.lock().expect("log").push((seq, issued, Instant::now()));
                count.store(seq, Ordering::SeqCst);
            }
            for c in &mut conns {
                assert_eq!(c.flush().expect("flush"), 0);
            }
        })
    };
    let deadline = Instant::now() + WAIT;
    while count.load(Ordering::SeqCst) < 600 {
        assert!(Instant::now() < deadline, "writer stuck");
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = d.cli_ok(&["mkflash", "--nocp", "--freeze", "a:ta", "b:tb", "c:tc"]);
    let frozen_at = Instant::now();
    assert!(out.contains("consistency group"), "{out}");
    assert!(
        out.contains("frozen") && out.contains("tzero unfreezeflash a b c"),
        "{out}"
    );
    // One T0 for the three.
    let rels = d.flashes();
    assert_eq!(rels.len(), 3, "{rels:?}");
    assert!(rels
        .iter()
        .all(|f| f["created_ms"] == rels[0]["created_ms"]));
    let lv = d.cli_json(&["lsfbvol", "a", "b", "c", "ta"]);
    assert_eq!(lv[0]["frozen"], true);
    assert_eq!(lv[2]["frozen"], true);
    assert_eq!(lv[3]["frozen"], false, "targets are not frozen");
    // A write issued now, on its own connection (to the last slot of a,
    // which the stream does not reach; zeroes read as no record), is held.
    let late_done: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let late = {
        let (late_done, port) = (late_done.clone(), d.nbd_port);
        std::thread::spawn(move || {
            let mut conn = NbdConn::connect(port, "a").expect("connect");
            let errno = conn
                .write((slots - 1) * RECORD as u64, &[0u8; RECORD])
                .expect("write");
            assert_eq!(errno, 0, "a held write must not fail");
            *late_done.lock().expect("late") = Some(Instant::now());
        })
    };
    // Writes are held: the writer makes no progress (at most the write
    // already admitted when the freeze began).
    let before = count.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(600));
    let held = count.load(Ordering::SeqCst);
    assert!(
        held <= before + 1,
        "writes went on during the freeze: {before} → {held}"
    );
    assert!(
        late_done.lock().expect("late").is_none(),
        "a write issued while frozen completed before unfreezeflash"
    );
    // Reads are not held.
    let mut reader = NbdConn::connect(d.nbd_port, "a").expect("connect");
    reader.read(0, 4096).expect("read").expect("read ok");
    let unfreeze_at = Instant::now();
    let out = d.cli_ok(&["unfreezeflash", "a", "b", "c"]);
    assert!(out.contains("released"), "{out}");
    let target = held + 600;
    let deadline = Instant::now() + WAIT;
    while count.load(Ordering::SeqCst) < target.min(total) {
        assert!(Instant::now() < deadline, "writer stuck after unfreeze");
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("writer");
    let written = count.load(Ordering::SeqCst);

    late.join().expect("late writer");
    let late_at = late_done.lock().expect("late").expect("late write done");
    assert!(
        late_at >= unfreeze_at,
        "held write completed before unfreezeflash"
    );
    // The stream's writes that completed while frozen: at most the one
    // admitted as the freeze began.
    let log = log.lock().expect("log");
    let during = log
        .iter()
        .filter(|(_, _, done)| *done > frozen_at && *done < unfreeze_at)
        .count();
    assert!(during <= 1, "{during} stream writes completed while frozen");

    // The cut: the union of the targets' writes is exactly 1..=k.
    let mut present = Vec::new();
    for t in ["ta", "tb", "tc"] {
        let img = NbdConn::connect(d.nbd_port, t).expect("connect").read_all();
        present.extend(seqs_in(&img));
    }
    present.sort_unstable();
    let k = present.len() as u64;
    assert!(
        k >= 600,
        "T0 is before the writes acknowledged before mkflash: {k}"
    );
    assert!(
        k < written,
        "T0 is after writes that were held: {k} of {written}"
    );
    for (i, seq) in present.iter().enumerate() {
        assert_eq!(
            *seq,
            i as u64 + 1,
            "not prefix-consistent: write {} is in a target but write {} is missing",
            seq,
            i + 1
        );
    }
    // The sources have everything.
    let mut all = Vec::new();
    for v in vols {
        let img = NbdConn::connect(d.nbd_port, v).expect("connect").read_all();
        all.extend(seqs_in(&img));
    }
    assert_eq!(all.len() as u64, written);
    // Nothing is frozen any more: unfreezing again is refused.
    let (code, err) = one_line_error(&d.cli(&["unfreezeflash", "a"]));
    assert_eq!(code, 1);
    assert!(err.contains("not frozen"), "{err}");
    eprintln!(
        "cut at write {k} of {written}; a write held {:?}; {:?}",
        late_at - frozen_at,
        started.elapsed()
    );
}

#[test]
fn freeze_timeout_releases_held_writes_by_itself() {
    let env = Env::new();
    let d = Daemon::start(&env);
    d.cli_ok(&["mkfbvol", "--cap", "1MiB", "--track-size", "4KiB", "s", "t"]);
    let mut conn = NbdConn::connect(d.nbd_port, "s").expect("connect");
    assert_eq!(conn.write(0, &[1u8; 4096]).expect("write"), 0);
    let out = d.cli_ok(&[
        "mkflash",
        "--nocp",
        "--freeze",
        "--freeze-timeout",
        "1",
        "s:t",
    ]);
    assert!(out.contains("for up to 1 s"), "{out}");
    let start = Instant::now();
    assert_eq!(
        conn.write(0, &[2u8; 4096]).expect("write"),
        0,
        "held, not failed"
    );
    let held = start.elapsed();
    assert!(
        held >= Duration::from_millis(700) && held < Duration::from_secs(10),
        "the write was held {held:?}, expected about 1 s"
    );
    assert_eq!(volume(&d, "s")["frozen"], false);
    let img = NbdConn::connect(d.nbd_port, "t")
        .expect("connect")
        .read(0, 4096);
    assert_eq!(img.expect("read").expect("ok"), vec![1u8; 4096], "T0 kept");
    // freezeflash on an existing source, then the same timeout path.
    let out = d.cli_ok(&["freezeflash", "--timeout", "1", "s"]);
    assert!(out.contains("frozen"), "{out}");
    assert_eq!(volume(&d, "s")["frozen"], true);
    let start = Instant::now();
    assert_eq!(conn.write(4096, &[3u8; 4096]).expect("write"), 0);
    assert!(start.elapsed() >= Duration::from_millis(700));
    assert!(
        d.log_text().contains("freeze timed out"),
        "the timeout is logged"
    );
}

#[test]
fn target_write_inhibit_read_only_export_and_eperm() {
    if !have("qemu-io") || !have("nbdinfo") {
        return;
    }
    let env = Env::new();
    let d = Daemon::start(&env);
    d.cli_ok(&["mkfbvol", "--cap", "1MiB", "--track-size", "4KiB", "s", "t"]);
    qemu_io(&d, "s", &["write -P 0x5a 0 1M", "flush"]);
    // A connection to the target made before the inhibit.
    let mut early = NbdConn::connect(d.nbd_port, "t").expect("connect");
    assert!(!early.read_only());
    let out = d.cli_ok(&["mkflash", "--tgtinhibit", "--persist", "s:t"]);
    assert!(out.contains("target write inhibited"), "{out}");

    let info = run_ok(Command::new("nbdinfo").arg("--json").arg(d.uri("t")), &d);
    let info: Value = serde_json::from_str(&info).expect("nbdinfo JSON");
    assert_eq!(info["exports"][0]["is_read_only"], true, "{info}");
    let fresh = NbdConn::connect(d.nbd_port, "t").expect("connect");
    assert!(fresh.read_only(), "new connections see NBD_FLAG_READ_ONLY");
    let text = qemu_io_fails(&d, "t", &["write -P 0x66 0 4k"]);
    assert!(
        text.contains("read-only")
            || text.contains("Operation not permitted")
            || text.contains("Permission denied"),
        "{text}"
    );
    assert_eq!(early.write(0, &[7u8; 4096]).expect("write"), EPERM);
    assert_eq!(fresh_read_all(&d, "t"), vec![0x5a; 1 << 20]);
    let rows = table(&d.cli_ok(&["lsflash", "-l"]));
    assert_eq!(rows[0]["TargetWriteEnabled"], "Disabled", "{rows:?}");
    assert_eq!(rows[0]["SourceWriteEnabled"], "Enabled");
    assert_eq!(volume(&d, "t")["write_inhibited"], true);
    let rows = table(&d.cli_ok(&["lsfbvol", "-l", "t"]));
    assert_eq!(rows[0]["WriteInhibited"], "yes");

    let out = d.cli_ok(&["rmflash", "--resettgtinhibit", "s:t"]);
    assert!(out.contains("lifted"), "{out}");
    // The relationship stays; the target is writable again, on new and old
    // connections.
    let f = rel(&d, "s", "t");
    assert_eq!(f["target_write_inhibit"], false, "{f}");
    let info = run_ok(Command::new("nbdinfo").arg("--json").arg(d.uri("t")), &d);
    let info: Value = serde_json::from_str(&info).expect("nbdinfo JSON");
    assert_eq!(info["exports"][0]["is_read_only"], false, "{info}");
    qemu_io(
        &d,
        "t",
        &["write -P 0x66 0 4k", "flush", "read -P 0x66 0 4k"],
    );
    assert_eq!(early.write(8192, &[7u8; 4096]).expect("write"), 0);
    let rows = table(&d.cli_ok(&["lsflash", "-l"]));
    assert_eq!(rows[0]["TargetWriteEnabled"], "Enabled");
}

#[test]
fn space_efficient_target_in_a_full_pool_fails_the_relationship_not_the_source() {
    if !have("qemu-io") {
        return;
    }
    let env = Env::new();
    let d = Daemon::start(&env);
    d.cli_ok(&["mkextpool", "--cap", "4MiB", "p"]);
    d.cli_ok(&["mkfbvol", "--cap", "8MiB", "s"]);
    let out = d.cli_ok(&[
        "mkfbvol",
        "--cap",
        "8MiB",
        "--extpool",
        "p",
        "--sam",
        "ese",
        "t",
        "u",
    ]);
    assert!(out.contains("ese in extent pool p"), "{out}");
    let rows = table(&d.cli_ok(&["lsfbvol", "-l"]));
    let t_row = rows.iter().find(|r| r["Name"] == "t").expect("t row");
    assert_eq!(t_row["Pool"], "p");
    assert_eq!(t_row["SAM"], "ese");
    assert_eq!(t_row["Alloc(bytes)"], "0");
    let s_row = rows.iter().find(|r| r["Name"] == "s").expect("s row");
    assert_eq!((s_row["Pool"].as_str(), s_row["SAM"].as_str()), ("-", "-"));
    let pools = table(&d.cli_ok(&["lsextpool"]));
    assert_eq!(pools[0]["Name"], "p");
    assert_eq!(pools[0]["Used(bytes)"], "0");
    assert_eq!(pools[0]["Volumes"], "2");

    qemu_io(&d, "s", &["write -P 0x11 0 8M", "flush"]);
    d.cli_ok(&["mkflash", "--nocp", "s:t"]);
    // A NOCOPY thin target costs nothing until the source is written...
    assert_eq!(u(&volume(&d, "t")["allocated_bytes"]), 0);
    // ...and then only the tracks copied (1 MiB = 16 tracks of 64 KiB).
    qemu_io(&d, "s", &["write -P 0x22 0 1M", "flush"]);
    assert_eq!(u(&volume(&d, "t")["allocated_bytes"]), 1 << 20);
    assert_eq!(u(&pool(&d, "p")["used_bytes"]), 1 << 20);
    qemu_io(&d, "t", &["read -P 0x11 0 8M"]);
    // A thin volume that is not a target: pool space as written.
    qemu_io(&d, "u", &["write -P 0x33 0 2M", "flush"]);
    assert_eq!(u(&volume(&d, "u")["allocated_bytes"]), 2 << 20);
    let p = pool(&d, "p");
    assert_eq!(
        (u(&p["used_bytes"]), u(&p["free_bytes"])),
        (3 << 20, 1 << 20)
    );

    // The source goes on: 7 MiB more to copy, 1 MiB free. The relationship
    // fails; the source takes every write.
    qemu_io(&d, "s", &["write -P 0x44 1M 7M", "flush"]);
    let deadline = Instant::now() + WAIT;
    let f = loop {
        let f = rel(&d, "s", "t");
        if f["state"] == "failed" {
            break f;
        }
        assert!(Instant::now() < deadline, "not failed: {f}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let reason = f["failure"].as_str().expect("failure reason");
    assert!(reason.contains("extent pool p is full"), "{reason}");
    let rows = table(&d.cli_ok(&["lsflash", "-l"]));
    assert_eq!(rows[0]["State"], "Failed");
    assert!(
        rows[0]["Reason"].contains("extent pool p is full"),
        "{rows:?}"
    );
    qemu_io(&d, "s", &["read -P 0x22 0 1M", "read -P 0x44 1M 7M"]);
    let text = qemu_io_fails(&d, "t", &["read 0 64k"]);
    assert!(text.contains("Input/output error"), "{text}");

    // A host write to a thin volume of the full pool gets ENOSPC.
    let free = u(&pool(&d, "p")["free_bytes"]);
    assert!(free < 4 << 20, "{free}");
    let text = qemu_io_fails(&d, "u", &["write -P 0x55 2M 6M"]);
    assert!(text.contains("No space left on device"), "{text}");
    qemu_io(&d, "u", &["read -P 0x33 0 2M"]);
    // Withdrawing the failed relationship and deleting t gives its space back.
    d.cli_ok(&["rmflash", "s:t"]);
    d.cli_ok(&["rmfbvol", "t"]);
    let p = pool(&d, "p");
    assert_eq!(u(&p["volumes"]), 1, "{p}");
    assert_eq!(
        u(&p["used_bytes"]),
        u(&volume(&d, "u")["allocated_bytes"]),
        "{p}"
    );
}

#[test]
fn revertible_resync_revert_commit_and_sigkill() {
    if !have("qemu-io") || !have("nbdcopy") {
        return;
    }
    let env = Env::new();
    let mut d = Daemon::start(&env);
    d.cli_ok(&["mkfbvol", "--cap", "2MiB", "--track-size", "4KiB", "s", "t"]);
    qemu_io(&d, "s", &["write -P 0x11 0 2M", "flush"]);
    d.cli_ok(&[
        "mkflash",
        "--record",
        "--persist",
        "--seqnum",
        "7",
        "--wait",
        "s:t",
    ]);
    d.wait_copied("s", "t", WAIT);
    let a = md5_export(&d, &env, "t", "a.img");
    assert_eq!(a, md5_export(&d, &env, "s", "s.img"));
    let rows = table(&d.cli_ok(&["lsflash", "-l", "--seqnum", "7"]));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["SequenceNum"], "7");
    assert_eq!(rows[0]["Revertible"], "Disabled");
    assert!(d
        .cli_json(&["lsflash", "--seqnum", "8"])
        .as_array()
        .expect("array")
        .is_empty());

    // Revert: change s, make revertible, resync; t is the new s; revert.
    qemu_io(&d, "s", &["write -P 0x22 0 512k", "flush"]);
    d.cli_ok(&["setflashrevertible", "s:t"]);
    let rows = table(&d.cli_ok(&["lsflash", "-l"]));
    assert_eq!(rows[0]["Revertible"], "Enabled");
    d.cli_ok(&["resyncflash", "--record", "--persist", "--wait", "s:t"]);
    d.wait_copied("s", "t", WAIT);
    assert_eq!(rel(&d, "s", "t")["revert_pending"], true);
    let b = md5_export(&d, &env, "s", "s.img");
    assert_eq!(md5_export(&d, &env, "t", "t.img"), b);
    assert_ne!(a, b);
    let out = d.cli_ok(&["revertflash", "s:t"]);
    assert!(out.contains("previous point in time"), "{out}");
    assert_eq!(
        md5_export(&d, &env, "t", "t.img"),
        a,
        "t is back at the previous copy"
    );
    assert_eq!(
        md5_export(&d, &env, "s", "s.img"),
        b,
        "the source is untouched"
    );
    assert_eq!(rel(&d, "s", "t")["revert_pending"], false);

    // Commit, by sequence number: the new point in time stays.
    qemu_io(&d, "s", &["write -P 0x33 1M 512k", "flush"]);
    d.cli_ok(&["setflashrevertible", "s:t"]);
    d.cli_ok(&["resyncflash", "--record", "--persist", "--wait", "s:t"]);
    d.wait_copied("s", "t", WAIT);
    let c = md5_export(&d, &env, "s", "s.img");
    let out = d.cli_ok(&["commitflash", "--seqnum", "7"]);
    assert!(out.contains("committed"), "{out}");
    assert_eq!(md5_export(&d, &env, "t", "t.img"), c);
    let (code, err) = one_line_error(&d.cli(&["revertflash", "s:t"]));
    assert_eq!(code, 1);
    assert!(err.contains("not revertible"), "{err}");
    assert_eq!(md5_export(&d, &env, "t", "t.img"), c);

    // SIGKILL inside the revertible window: revert still restores.
    qemu_io(&d, "s", &["write -P 0x44 256k 512k", "flush"]);
    d.cli_ok(&["setflashrevertible", "s:t"]);
    d.cli_ok(&["resyncflash", "--record", "--persist", "--wait", "s:t"]);
    d.wait_copied("s", "t", WAIT);
    let dd = md5_export(&d, &env, "s", "s.img");
    assert_eq!(md5_export(&d, &env, "t", "t.img"), dd);
    let (nbd, api) = (d.nbd_port, d.api_port);
    d.kill9();
    drop(d);
    let d = Daemon::try_start(&env, nbd, api).unwrap_or_else(|log| panic!("restart: {log}"));
    let f = rel(&d, "s", "t");
    assert_eq!(f["revert_pending"], true, "{f}");
    assert_eq!(f["seqnum"], 7, "{f}");
    d.cli_ok(&["revertflash", "--seqnum", "7"]);
    assert_eq!(
        md5_export(&d, &env, "t", "t.img"),
        c,
        "previous copy after restart"
    );
    assert_eq!(md5_export(&d, &env, "s", "s.img"), dd);
}

#[test]
fn refusals_are_one_line_and_change_nothing() {
    let env = Env::new();
    let d = Daemon::start(&env);
    d.cli_ok(&["mkfbvol", "--cap", "1MiB", "s", "t", "x"]);
    d.cli_ok(&["mkflash", "--nocp", "--record", "--persist", "s:t"]);
    let before_vols = d.cli_json(&["lsfbvol"]);
    let before_rels = d.flashes();

    let check = |args: &[&str], want_code: i32, want: &str| {
        let (code, err) = one_line_error(&d.cli(args));
        assert_eq!(code, want_code, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    };
    // Freezing a volume that is not a source (a target, a lone volume).
    check(&["freezeflash", "x"], 1, "not the source");
    check(&["freezeflash", "t"], 1, "not the source");
    check(&["freezeflash", "s", "x"], 1, "not the source");
    check(&["freezeflash", "nope"], 1, "not found");
    // Unfreezing with nothing frozen.
    check(&["unfreezeflash", "s"], 1, "not frozen");
    // Commit / revert without a revertible resync; setflashrevertible on a
    // relationship without recording is refused by the engine.
    check(&["commitflash", "s:t"], 1, "not revertible");
    check(&["revertflash", "s:t"], 1, "not revertible");
    check(&["commitflash", "--seqnum", "3"], 1, "sequence number 3");
    // Usage errors (exit 2) before any request.
    check(
        &["mkfbvol", "--cap", "1MiB", "--sam", "ese", "v"],
        2,
        "--extpool",
    );
    check(&["commitflash"], 2, "");
    check(&["mkflash", "--freeze-timeout", "5", "s:x"], 2, "--freeze");
    check(&["rmflash", "--cp", "--resettgtinhibit", "s:t"], 2, "");
    // Pools: too small for a standard volume; unknown; in use.
    d.cli_ok(&["mkextpool", "--cap", "1MiB", "small"]);
    check(
        &["mkfbvol", "--cap", "2MiB", "--extpool", "small", "v"],
        1,
        "too small",
    );
    check(
        &["mkfbvol", "--cap", "1MiB", "--extpool", "none", "v"],
        1,
        "not found",
    );
    check(
        &["mkextpool", "--cap", "1MiB", "small"],
        1,
        "already exists",
    );
    assert_eq!(u(&pool(&d, "small")["used_bytes"]), 0);
    d.cli_ok(&[
        "mkfbvol",
        "--cap",
        "1MiB",
        "--extpool",
        "small",
        "--sam",
        "standard",
        "v",
    ]);
    let v = volume(&d, "v");
    assert_eq!(v["provisioning"], "standard", "{v}");
    assert_eq!(u(&pool(&d, "small")["free_bytes"]), 0);
    check(&["rmextpool", "small"], 1, "still holds 1 volume");
    d.cli_ok(&["rmfbvol", "v"]);
    d.cli_ok(&["rmextpool", "small"]);
    check(&["lsextpool", "small"], 1, "not found");

    assert_eq!(d.cli_json(&["lsfbvol"]), before_vols, "volumes changed");
    assert_eq!(d.flashes(), before_rels, "relationships changed");

    // The API's own codes for the same refusals.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client =
        tzero::client::Client::new(tzero::client::Endpoint::Unix(d.data.join("tzero.sock")));
    let call = |method: hyper::Method, path: &str, body: &str| {
        let body = (!body.is_empty()).then(|| body.as_bytes().to_vec());
        let r = rt
            .block_on(client.raw(method, path, body))
            .expect("request");
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        (
            r.status,
            v["error"]["code"].as_str().unwrap_or("").to_owned(),
        )
    };
    use hyper::Method;
    for (method, path, body, status, code) in [
        (
            Method::POST,
            "/v1/volumes",
            r#"{"name":"v","capacity_bytes":1048576,"space_efficient":true}"#,
            400,
            "needs_pool",
        ),
        (
            Method::POST,
            "/v1/freeze",
            r#"{"volumes":["x"]}"#,
            409,
            "not_a_source",
        ),
        (
            Method::POST,
            "/v1/unfreeze",
            r#"{"volumes":["s"]}"#,
            409,
            "not_frozen",
        ),
        (
            Method::POST,
            "/v1/flash/s/t/commit",
            "",
            409,
            "not_revertible",
        ),
        (
            Method::POST,
            "/v1/flash/revert?seqnum=0",
            "",
            409,
            "not_revertible",
        ),
        (Method::POST, "/v1/flash/revert", "", 400, "invalid_query"),
        (Method::GET, "/v1/pools/none", "", 404, "pool_not_found"),
        (
            Method::POST,
            "/v1/flash/group",
            r#"{"pairs":[]}"#,
            400,
            "no_pairs",
        ),
        (
            Method::POST,
            "/v1/flash/group",
            r#"{"pairs":[{"source":"s","target":"x"},{"source":"x","target":"t"}]}"#,
            409,
            "source_and_target_in_group",
        ),
    ] {
        let (got_status, got_code) = call(method.clone(), path, body);
        assert_eq!(
            (got_status, got_code.as_str()),
            (status, code),
            "{method} {path} {body}"
        );
    }
    // A group whose second pair is bad makes none of them.
    assert_eq!(
        d.flashes(),
        before_rels,
        "a refused group changed something"
    );
    let (status, _) = call(
        Method::PUT,
        "/v1/flash/s/t/target-inhibit",
        r#"{"inhibit":true}"#,
    );
    assert_eq!(status, 200);
    assert_eq!(volume(&d, "t")["write_inhibited"], true);
}
