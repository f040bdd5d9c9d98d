//! More than one copy, through the real daemon and real NBD clients: one
//! source with three targets made at different times, a cascade A→B→C whose
//! middle is withdrawn, incremental resync after changes on both sides,
//! reverse restore of a corrupted source, and the refusals (13th target,
//! cycle, resync without recording, reverse of an incomplete copy, a target
//! that already has a source) that must change nothing.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{have, one_line_error, qemu_io, run_ok, Daemon, Env};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

/// The relationship `src:tgt` as `lsflash --json` shows it, if it exists.
fn rel(d: &Daemon, src: &str, tgt: &str) -> Option<Value> {
    d.flashes()
        .into_iter()
        .find(|f| f["source"] == src && f["target"] == tgt)
}

fn volume(d: &Daemon, name: &str) -> Value {
    d.cli_json(&["lsfbvol", name])[0].clone()
}

/// Rows of a CLI table, each as header → cell. Columns start where their
/// headers start (cells may contain spaces, like DSCLI dates).
fn table(text: &str) -> Vec<HashMap<String, String>> {
    let mut lines = text.lines();
    let header = lines.next().expect("header line");
    let mut starts = Vec::new();
    let mut names = Vec::new();
    let mut prev_space = true;
    for (i, ch) in header.char_indices() {
        if ch != ' ' && prev_space && (i == 0 || header[..i].ends_with("  ")) {
            starts.push(i);
        }
        prev_space = ch == ' ';
    }
    for (k, &s) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(header.len());
        names.push(header[s..end].trim().to_owned());
    }
    lines
        .skip(1) // the ==== line
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

fn row<'a>(
    rows: &'a [HashMap<String, String>],
    col: &str,
    id: &str,
) -> &'a HashMap<String, String> {
    rows.iter()
        .find(|r| r.get(col).map(String::as_str) == Some(id))
        .unwrap_or_else(|| panic!("no row {col}={id} in {rows:?}"))
}

/// Copies an export into a file with nbdcopy.
fn export_to_file(d: &Daemon, env: &Env, export: &str, file: &str) -> PathBuf {
    let path = env.path(file);
    run_ok(Command::new("nbdcopy").arg(d.uri(export)).arg(&path), d);
    path
}

fn md5(d: &Daemon, path: &PathBuf) -> String {
    let out = run_ok(Command::new("md5sum").arg(path), d);
    out.split_whitespace()
        .next()
        .expect("md5sum output")
        .to_owned()
}

/// md5 of an export's whole contents, read through NBD by nbdcopy.
fn export_md5(d: &Daemon, env: &Env, export: &str, file: &str) -> String {
    let path = export_to_file(d, env, export, file);
    md5(d, &path)
}

fn tools() -> bool {
    have("qemu-io") && have("nbdcopy")
}

#[test]
fn three_targets_each_keep_their_own_t0() {
    if !tools() {
        return;
    }
    let env = Env::new();
    let d = Daemon::start(&env);
    d.cli_ok(&[
        "mkfbvol",
        "--cap",
        "4MiB",
        "--track-size",
        "4KiB",
        "s",
        "t1",
        "t2",
        "t3",
    ]);
    // Pattern A, then t1 (NOCOPY).
    qemu_io(&d, "s", &["write -P 0xa1 0 4M", "flush"]);
    d.cli_ok(&["mkflash", "--nocp", "s:t1"]);
    // Pattern B (with a partial-track write), then t2 (COPY, persistent).
    qemu_io(
        &d,
        "s",
        &["write -P 0xb2 0 2M", "write -P 0xb3 3000000 5000", "flush"],
    );
    d.cli_ok(&["mkflash", "--persist", "s:t2"]);
    // Pattern C, then t3 (NOCOPY, persistent).
    qemu_io(&d, "s", &["write -P 0xc3 1M 2M", "flush"]);
    d.cli_ok(&["mkflash", "--nocp", "--persist", "s:t3"]);

    let s = volume(&d, "s");
    assert_eq!(s["source_of"], serde_json::json!(["t1", "t2", "t3"]), "{s}");
    assert_eq!(d.flashes().len(), 3);

    // A host write to one target changes only that target.
    qemu_io(&d, "t3", &["write -P 0xe5 100 200", "flush"]);
    let t1_reads: &[&str] = &["read -P 0xa1 0 4M"];
    let t2_reads: &[&str] = &[
        "read -P 0xb2 0 2M",
        "read -P 0xa1 2M 902848",
        "read -P 0xb3 3000000 5000",
        "read -P 0xa1 3005000 1189304",
    ];
    let t3_reads: &[&str] = &[
        "read -P 0xb2 0 100",
        "read -P 0xe5 100 200",
        "read -P 0xb2 300 1048276",
        "read -P 0xc3 1M 2M",
        "read -P 0xa1 3M 1M",
    ];
    let check = |when: &str| {
        eprintln!("checking the three targets {when}");
        qemu_io(&d, "t1", t1_reads);
        qemu_io(&d, "t2", t2_reads);
        qemu_io(&d, "t3", t3_reads);
    };
    check("right after establishing");

    // Overwrite the source, whole and in part: every target keeps its T0.
    qemu_io(
        &d,
        "s",
        &["write -P 0xd4 0 4M", "write -P 0xd5 12345 777", "flush"],
    );
    qemu_io(
        &d,
        "s",
        &[
            "read -P 0xd4 0 12345",
            "read -P 0xd5 12345 777",
            "read -P 0xd4 13122 4181182",
        ],
    );
    check("after the source was overwritten");

    // rmflash --cp: copy t1 fully, then end the relationship by itself.
    let pending = d.cli_json(&["rmflash", "--cp", "s:t1"]);
    assert_eq!(pending[0]["withdraw_pending"], true, "{pending}");
    assert_eq!(pending[0]["background_copy"], true, "{pending}");
    let deadline = Instant::now() + WAIT;
    while rel(&d, "s", "t1").is_some() {
        assert!(
            Instant::now() < deadline,
            "s:t1 still there: {:?}",
            d.flashes()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(volume(&d, "t1")["contents_undefined"], false);
    // The COPY and the NOCOPY→COPY targets after their copies complete.
    d.cli_ok(&["chflash", "--cp", "--wait", "s:t3"]);
    d.wait_copied("s", "t2", WAIT);
    d.wait_copied("s", "t3", WAIT);
    check("after the background copies");
    let s = volume(&d, "s");
    assert_eq!(s["source_of"], serde_json::json!(["t2", "t3"]), "{s}");
}

#[test]
fn cascade_a_b_c_and_withdrawing_the_middle() {
    if !tools() {
        return;
    }
    let env = Env::new();
    let d = Daemon::start(&env);
    d.cli_ok(&[
        "mkfbvol",
        "--cap",
        "2MiB",
        "--track-size",
        "4KiB",
        "a",
        "b",
        "c",
    ]);
    qemu_io(&d, "a", &["write -P 0x1a 0 2M", "flush"]);
    d.cli_ok(&["mkflash", "--nocp", "--persist", "a:b"]);
    // B's own write, part of one track, before B becomes a source.
    qemu_io(&d, "b", &["write -P 0x2b 5000 3000", "flush"]);
    d.cli_ok(&["mkflash", "--nocp", "--persist", "b:c"]);
    let lv = table(&d.cli_ok(&["lsfbvol", "-l"]));
    assert_eq!(row(&lv, "Name", "b")["Role"], "source of c; target of a");

    // Writes at every level after T0(C).
    qemu_io(
        &d,
        "a",
        &["write -P 0x3a 0 64k", "write -P 0x3b 1M 8k", "flush"],
    );
    qemu_io(
        &d,
        "b",
        &["write -P 0x4b 32k 32k", "write -P 0x4c 6000 100", "flush"],
    );
    qemu_io(&d, "c", &["write -P 0x5c 48k 4k", "flush"]);

    let a_reads: &[&str] = &[
        "read -P 0x3a 0 64k",
        "read -P 0x1a 64k 960k",
        "read -P 0x3b 1M 8k",
        "read -P 0x1a 1032k 1016k",
    ];
    // B: A at T0(B), B's writes on top.
    let b_reads: &[&str] = &[
        "read -P 0x1a 0 5000",
        "read -P 0x2b 5000 1000",
        "read -P 0x4c 6000 100",
        "read -P 0x2b 6100 1900",
        "read -P 0x1a 8000 24768",
        "read -P 0x4b 32k 32k",
        "read -P 0x1a 64k 1984k",
    ];
    // C: B's view at T0(C), C's writes on top.
    let c_reads: &[&str] = &[
        "read -P 0x1a 0 5000",
        "read -P 0x2b 5000 3000",
        "read -P 0x1a 8000 41152",
        "read -P 0x5c 48k 4k",
        "read -P 0x1a 52k 1996k",
    ];
    qemu_io(&d, "a", a_reads);
    qemu_io(&d, "b", b_reads);
    qemu_io(&d, "c", c_reads);

    // Withdraw the middle relationship. B's copy was incomplete (NOCOPY):
    // the CLI warns that B is now undefined, lsfbvol shows it, and C, which
    // read through B into A, is cleaned first and keeps its point in time.
    let out = d.cli(&["rmflash", "a:b"]);
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning") && stderr.contains("contents of b are now undefined"),
        "{stderr}"
    );
    assert!(rel(&d, "a", "b").is_none());
    assert!(rel(&d, "b", "c").is_some());
    assert_eq!(volume(&d, "b")["contents_undefined"], true);
    for args in [&["lsfbvol"][..], &["lsfbvol", "-l"]] {
        let rows = table(&d.cli_ok(args));
        assert_eq!(row(&rows, "Name", "b")["DataState"], "contents undefined");
        assert_eq!(row(&rows, "Name", "c")["DataState"], "normal");
    }
    qemu_io(&d, "c", c_reads);

    // A is unlinked now; B and C still are. Writing all three leaves C's
    // data alone (C's own write aside).
    qemu_io(&d, "a", &["write -P 0x6a 0 2M", "flush"]);
    qemu_io(&d, "b", &["write -P 0x7b 0 2M", "flush"]);
    qemu_io(&d, "c", c_reads);
    d.cli_ok(&["chflash", "--cp", "--wait", "b:c"]);
    d.wait_copied("b", "c", WAIT);
    qemu_io(&d, "c", c_reads);
    // A plain rmflash of a complete copy prints no warning.
    let out = d.cli(&["rmflash", "b:c"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(volume(&d, "c")["contents_undefined"], false);
    qemu_io(&d, "c", c_reads);
}

#[test]
fn resync_copies_what_changed_on_both_sides() {
    if !tools() {
        return;
    }
    let env = Env::new();
    let mut d = Daemon::start(&env);
    d.cli_ok(&["mkfbvol", "--cap", "4MiB", "s", "t"]); // 64 tracks of 64 KiB
    qemu_io(&d, "s", &["write -P 0x11 0 4M", "flush"]);
    let out = d.cli_ok(&["mkflash", "--record", "--persist", "--wait", "s:t"]);
    assert!(out.contains("with change recording"), "{out}");
    d.wait_copied("s", "t", WAIT);
    let f = rel(&d, "s", "t").expect("s:t");
    assert_eq!(
        (&f["recording"], &f["changed_tracks"], &f["state"]),
        (&Value::Bool(true), &Value::from(0), &Value::from("copied")),
        "{f}"
    );

    // Changes on both sides: source tracks 0, 1, 16; target tracks 1, 48.
    qemu_io(
        &d,
        "s",
        &["write -P 0x22 0 128k", "write -P 0x23 1M 100", "flush"],
    );
    qemu_io(
        &d,
        "t",
        &["write -P 0x33 64k 64k", "write -P 0x34 3M 4096", "flush"],
    );
    let f = rel(&d, "s", "t").expect("s:t");
    assert_eq!(f["changed_tracks"], 4, "{f}");
    // The change record survives a crash: kill -9 and start again.
    let (nbd, api) = (d.nbd_port, d.api_port);
    d.kill9();
    drop(d);
    let d = Daemon::try_start(&env, nbd, api).unwrap_or_else(|_| Daemon::start(&env));
    let f = rel(&d, "s", "t").expect("s:t after restart");
    assert_eq!(
        (&f["recording"], &f["changed_tracks"]),
        (&Value::Bool(true), &Value::from(4)),
        "{f}"
    );
    let long = table(&d.cli_ok(&["lsflash", "-l"]));
    let r = row(&long, "ID", "s:t");
    assert_eq!(r["Recording"], "Enabled");
    assert_eq!(r["ChangedTracks"], "4");
    assert_ne!(
        export_md5(&d, &env, "s", "s0.raw"),
        export_md5(&d, &env, "t", "t0.raw")
    );

    let out = d.cli_ok(&["resyncflash", "--record", "--persist", "--wait", "s:t"]);
    assert!(out.contains("(4 changed tracks to copy)"), "{out}");
    d.wait_copied("s", "t", WAIT);
    let f = rel(&d, "s", "t").expect("s:t");
    assert_eq!(f["changed_tracks"], 0, "{f}");
    assert_eq!(f["out_of_sync_tracks"], 0, "{f}");
    assert_eq!(f["recording"], true, "{f}");
    let r2 = table(&d.cli_ok(&["lsflash", "-l"]));
    assert_eq!(row(&r2, "ID", "s:t")["ChangedTracks"], "0");
    let sf = export_to_file(&d, &env, "s", "s1.raw");
    let tf = export_to_file(&d, &env, "t", "t1.raw");
    assert_eq!(md5(&d, &sf), md5(&d, &tf));
    assert!(
        std::fs::read(&sf).expect("s1") == std::fs::read(&tf).expect("t1"),
        "t differs from s after the resync"
    );
    qemu_io(
        &d,
        "t",
        &[
            "read -P 0x22 0 128k",
            "read -P 0x11 128k 896k",
            "read -P 0x23 1M 100",
            "read -P 0x11 1048676 3145628",
        ],
    );

    // A second round, changes on the target only, and the new T0 is
    // independent of later source writes.
    qemu_io(&d, "t", &["write -P 0x44 2M 1M", "flush"]);
    assert_eq!(rel(&d, "s", "t").expect("s:t")["changed_tracks"], 16);
    d.cli_ok(&["resyncflash", "--record", "--persist", "--wait", "s:t"]);
    qemu_io(&d, "s", &["write -P 0x55 0 4M", "flush"]);
    qemu_io(
        &d,
        "t",
        &[
            "read -P 0x22 0 128k",
            "read -P 0x11 128k 896k",
            "read -P 0x23 1M 100",
            "read -P 0x11 1048676 3145628",
        ],
    );
}

#[test]
fn reverse_restores_a_corrupted_source() {
    if !tools() {
        return;
    }
    let env = Env::new();
    let d = Daemon::start(&env);
    d.cli_ok(&["mkfbvol", "--cap", "8MiB", "s", "t"]);
    qemu_io(
        &d,
        "s",
        &[
            "write -P 0x5a 0 8M",
            "write -P 0x6b 1M 1234",
            "write -P 0x7c 5M 3M",
            "flush",
        ],
    );
    d.cli_ok(&["mkflash", "--record", "--persist", "--wait", "s:t"]);
    d.wait_copied("s", "t", WAIT);
    let good = export_md5(&d, &env, "s", "good.raw");

    // Corrupt the whole source with garbage.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let garbage: Vec<u8> = (0..8 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect();
    let garbage_file = env.path("garbage.raw");
    std::fs::write(&garbage_file, &garbage).expect("write garbage");
    run_ok(
        Command::new("nbdcopy").arg(&garbage_file).arg(d.uri("s")),
        &d,
    );
    let bad = export_md5(&d, &env, "s", "bad.raw");
    assert_ne!(bad, good);
    assert_eq!(rel(&d, "s", "t").expect("s:t")["changed_tracks"], 128);

    let out = d.cli_ok(&["reverseflash", "s:t"]);
    assert!(out.contains("it is now t:s"), "{out}");
    // The source reads yesterday's data at once, before any copy.
    assert_eq!(export_md5(&d, &env, "s", "restored0.raw"), good);
    assert!(rel(&d, "s", "t").is_none());
    let f = rel(&d, "t", "s").expect("t:s");
    assert_eq!(f["recording"], true, "{f}");
    let rows = table(&d.cli_ok(&["lsflash"]));
    row(&rows, "ID", "t:s");
    let vols = table(&d.cli_ok(&["lsfbvol", "-l"]));
    assert_eq!(row(&vols, "Name", "s")["Role"], "target of t");
    d.wait_copied("t", "s", WAIT);
    assert_eq!(export_md5(&d, &env, "s", "restored1.raw"), good);
    assert_eq!(export_md5(&d, &env, "t", "t.raw"), good);
    assert_eq!(volume(&d, "t")["contents_undefined"], false);
    assert_eq!(volume(&d, "s")["contents_undefined"], false);
}

#[test]
fn fast_reverse_before_the_copy_completes() {
    if !tools() {
        return;
    }
    let env = Env::new();
    let d = Daemon::start(&env);
    d.cli_ok(&["mkfbvol", "--cap", "4MiB", "--track-size", "4KiB", "p", "q"]);
    qemu_io(&d, "p", &["write -P 0x11 0 4M", "flush"]);
    // 1024 tracks at 64 KiB/s: far from complete when reversed.
    d.cli_ok(&["mkflash", "--record", "--persist", "--rate", "64KiB", "p:q"]);
    qemu_io(&d, "p", &["write -P 0x22 1M 1M", "flush"]);
    qemu_io(&d, "q", &["write -P 0x33 3M 4096", "flush"]);
    let f = rel(&d, "p", "q").expect("p:q");
    assert_ne!(f["out_of_sync_tracks"], 0, "{f}");
    let (code, err) = one_line_error(&d.cli(&["reverseflash", "p:q"]));
    assert_eq!(code, 1);
    assert!(err.contains("--fast"), "{err}");

    let out = d.cli_ok(&["reverseflash", "--fast", "p:q"]);
    assert!(out.contains("it is now q:p"), "{out}");
    // P is back at T0 with Q's own write, at once.
    let p_reads: &[&str] = &[
        "read -P 0x11 0 3M",
        "read -P 0x33 3M 4096",
        "read -P 0x11 3149824 1044480",
    ];
    qemu_io(&d, "p", p_reads);
    d.cli_ok(&["setflashrate", "--rate", "0", "q:p"]);
    d.wait_copied("q", "p", WAIT);
    // A fast reverse is not persistent: it ends when the restore completes,
    // and Q, whose own copy was incomplete, is left undefined. (The
    // relationship may show `copied` for a moment before the copier ends it.)
    let deadline = Instant::now() + WAIT;
    while rel(&d, "q", "p").is_some() {
        assert!(Instant::now() < deadline, "{:?}", d.flashes());
        std::thread::sleep(Duration::from_millis(50));
    }
    qemu_io(&d, "p", p_reads);
    assert_eq!(volume(&d, "p")["contents_undefined"], false);
    assert_eq!(volume(&d, "q")["contents_undefined"], true);
    let rows = table(&d.cli_ok(&["lsfbvol"]));
    assert_eq!(row(&rows, "Name", "q")["DataState"], "contents undefined");
}

/// What must not change when a command is refused: relationships (without
/// progress counters, which a running copy moves) and volume roles.
fn topology(d: &Daemon) -> (Vec<String>, Vec<String>) {
    let rels = d
        .flashes()
        .iter()
        .map(|f| {
            format!(
                "{}:{} copy={} persist={} record={} state={} pending={}",
                f["source"],
                f["target"],
                f["background_copy"],
                f["persistent"],
                f["recording"],
                f["state"],
                f["withdraw_pending"]
            )
        })
        .collect();
    let vols = d
        .cli_json(&["lsfbvol"])
        .as_array()
        .expect("array")
        .iter()
        .map(|v| {
            format!(
                "{} source_of={} target_of={} undefined={}",
                v["name"], v["source_of"], v["target_of"], v["contents_undefined"]
            )
        })
        .collect();
    (rels, vols)
}

#[test]
fn refusals_are_clear_and_change_nothing() {
    let env = Env::new();
    let d = Daemon::start(&env);
    let targets: Vec<String> = (1..=13).map(|i| format!("t{i:02}")).collect();
    let mut args = vec!["mkfbvol", "--cap", "1MiB", "--track-size", "4KiB"];
    args.extend(["src", "a", "b", "c", "x", "y", "r1", "r2"]);
    args.extend(targets.iter().map(String::as_str));
    d.cli_ok(&args);
    let pairs: Vec<String> = targets[..12].iter().map(|t| format!("src:{t}")).collect();
    let mut args = vec!["mkflash", "--nocp"];
    args.extend(pairs.iter().map(String::as_str));
    d.cli_ok(&args);
    d.cli_ok(&["mkflash", "--nocp", "a:b"]);
    d.cli_ok(&["mkflash", "--nocp", "--persist", "x:y"]);
    // 256 tracks at 4 KiB/s: incomplete for the whole test.
    d.cli_ok(&[
        "mkflash",
        "--record",
        "--persist",
        "--rate",
        "4KiB",
        "r1:r2",
    ]);
    let before = topology(&d);
    assert_eq!(before.0.len(), 15, "{before:?}");

    for (args, needle) in [
        (
            &["mkflash", "--nocp", "src:t13"][..],
            "maximum of 12 targets",
        ),
        (&["mkflash", "--nocp", "b:a"], "would make a cycle"),
        (&["mkflash", "c:b"], "already the target of \"a\""),
        (&["mkflash", "--nocp", "c:src"], "cannot make src a target"),
        (
            &["resyncflash", "--record", "--persist", "x:y"],
            "does not record changes",
        ),
        (&["reverseflash", "r1:r2"], "background copy is incomplete"),
        (&["reverseflash", "a:c"], "no FlashCopy relationship"),
    ] {
        let (code, err) = one_line_error(&d.cli(args));
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: expected {needle:?} in {err}"
        );
    }
    // Usage errors: refused before any request.
    for (args, needle) in [
        (&["mkflash", "--record", "c:y"][..], "--persist"),
        (&["resyncflash", "x:y"], "--record"),
        (&["resyncflash", "--record", "x:y"], "--persist"),
    ] {
        let (code, err) = one_line_error(&d.cli(args));
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: expected {needle:?} in {err}"
        );
    }
    assert_eq!(topology(&d), before);
    let f = rel(&d, "r1", "r2").expect("r1:r2");
    assert_ne!(f["out_of_sync_tracks"], 0, "copy done too soon: {f}");
}
