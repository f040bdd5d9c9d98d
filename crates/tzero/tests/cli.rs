//! The `tzero` CLI against a real daemon: the DSCLI verbs round trip, bad
//! input is refused with one error line and changes nothing, and a second
//! daemon on the same data directory is refused. `lsflash -l`'s `%Copied`,
//! `lsflash --watch` (JSON lines, plain tables, and the live redraw on a
//! pseudo-terminal from `script`) and `--wait`'s per-pair bars.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{have, one_line_error, qemu_io, Daemon, Env, TZERO};
use serde_json::Value;

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x["name"].as_str().expect("name").to_owned())
        .collect()
}

#[test]
fn cli_round_trip() {
    let env = Env::new();
    let d = Daemon::start(&env);

    let out = d.cli_ok(&["mkfbvol", "--cap", "16MiB", "src", "tgt"]);
    assert!(out.contains("volume src created"), "{out}");
    d.cli_ok(&["mkfbvol", "--cap", "16m", "--track-size", "4KiB", "small"]);

    let vols = d.cli_json(&["lsfbvol"]);
    assert_eq!(names(&vols), ["small", "src", "tgt"]);
    for v in vols.as_array().expect("array") {
        assert_eq!(v["capacity_bytes"], 16 << 20);
    }
    assert_eq!(vols[0]["track_size"], 4096);
    assert_eq!(vols[1]["track_size"], 65536);
    let table = d.cli_ok(&["lsfbvol"]);
    assert!(table.starts_with("Name"), "{table}");
    assert!(table.contains("16 MiB"), "{table}");
    assert!(
        table
            .lines()
            .next()
            .is_some_and(|h| h.contains("DataState")),
        "{table}"
    );

    // Global flags after the verb work as well as before it.
    d.cli_ok(&["mkflash", "--nocp", "--persist", "src:tgt", "--json"]);
    let rels = d.flashes();
    assert_eq!(rels.len(), 1);
    let r = &rels[0];
    assert_eq!(r["source"], "src");
    assert_eq!(r["target"], "tgt");
    assert_eq!(r["state"], "no_copy");
    assert_eq!(r["background_copy"], false);
    assert_eq!(r["persistent"], true);
    assert!(r["out_of_sync_tracks"].is_u64());

    let long = d.cli_ok(&["lsflash", "-l"]);
    for col in [
        "ID",
        "SequenceNum",
        "ActiveCopy",
        "Recording",
        "Persistent",
        "Revertible",
        "SourceWriteEnabled",
        "TargetWriteEnabled",
        "BackgroundCopy",
        "OutOfSyncTracks",
        "DateCreated",
        "DateSynced",
        "State",
    ] {
        assert!(long.contains(col), "lsflash -l lacks {col}:\n{long}");
    }
    assert!(long.contains("src:tgt"), "{long}");
    let one = d.cli_json(&["lsflash", "src:tgt"]);
    assert_eq!(one.as_array().map(Vec::len), Some(1));

    let lv = d.cli_ok(&["lsfbvol", "-l"]);
    assert!(lv.contains("source of tgt"), "{lv}");
    assert!(lv.contains("target of src"), "{lv}");

    d.cli_ok(&["setflashrate", "--rate", "1MiB", "src:tgt"]);
    assert_eq!(d.flashes()[0]["copy_rate"], 1 << 20);
    d.cli_ok(&["setflashrate", "--rate", "0", "src:tgt"]);
    d.cli_ok(&["chflash", "--cp", "--wait", "src:tgt"]);
    let rels = d.flashes();
    assert!(
        rels.is_empty() || rels[0]["state"] == "copied",
        "after chflash --cp --wait: {rels:?}"
    );

    if !rels.is_empty() {
        d.cli_ok(&["rmflash", "src:tgt"]);
    }
    assert!(d.flashes().is_empty());
    d.cli_ok(&["rmfbvol", "src", "tgt", "small"]);
    assert_eq!(names(&d.cli_json(&["lsfbvol"])), Vec::<String>::new());
}

#[test]
fn cli_rejects_bad_input_and_changes_nothing() {
    let env = Env::new();
    let d = Daemon::start(&env);
    d.cli_ok(&["mkfbvol", "--cap", "16MiB", "a", "b", "c"]);
    d.cli_ok(&["mkfbvol", "--cap", "32MiB", "big"]);
    d.cli_ok(&["mkflash", "--nocp", "a:b"]);
    let vols_before = d.cli_json(&["lsfbvol"]);
    let rels_before = names_of_rels(&d);

    // Usage errors: exit 2, before any request.
    for args in [
        &["mkfbvol", "--cap", "10GB", "x"][..],
        &["mkfbvol", "--cap", "lots", "x"],
        &["mkfbvol", "--cap", "99999999999T", "x"],
        &["mkfbvol", "x"],
        &["mkflash", "a-b"],
        &["mkflash", "a:b:c"],
        &["mkflash", ":b"],
        &["mkflash", "--rate", "fast", "a:c"],
        &["rmflash", "a"],
        &["mkflash", "--record", "a:c"],
        &["resyncflash", "a:b"],
        &["reverseflash"],
        &["lsfbvol", "--api", "ftp://x:1"],
        &["frobnicate"],
    ] {
        let (code, err) = one_line_error(&d.cli(args));
        assert_eq!(code, 2, "{args:?}: {err}");
    }

    // Operation errors: exit 1, refused by the daemon.
    for (args, needle) in [
        (&["mkflash", "nosuch:c"][..], "nosuch"),
        (&["mkflash", "a:big"], "differ"),
        (&["mkflash", "c:b"], "already the target"),
        (&["mkflash", "a:a"], "same volume"),
        (&["mkfbvol", "--cap", "16MiB", "a"], "already exists"),
        (&["mkfbvol", "--cap", "1000", "odd"], "capacity"),
        (
            &["mkfbvol", "--cap", "16MiB", "--track-size", "3000", "t"],
            "track size",
        ),
        (
            &["mkfbvol", "--cap", "16MiB", "bad/name"],
            "invalid volume name",
        ),
        (&["rmfbvol", "nosuch"], "not found"),
        (&["rmfbvol", "a"], "FlashCopy relationship"),
        (&["rmflash", "a:c"], "no FlashCopy relationship"),
        (&["lsflash", "b:a"], "no FlashCopy relationship"),
        (&["chflash", "--cp", "c:a"], "no FlashCopy relationship"),
        (&["rmflash", "--cp", "c:a"], "no FlashCopy relationship"),
        (
            &["resyncflash", "--record", "--persist", "a:b"],
            "does not record changes",
        ),
        (&["reverseflash", "b:a"], "no FlashCopy relationship"),
    ] {
        let (code, err) = one_line_error(&d.cli(args));
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: expected {needle:?} in {err}"
        );
    }

    assert_eq!(d.cli_json(&["lsfbvol"]), vols_before);
    assert_eq!(names_of_rels(&d), rels_before);

    // No daemon behind the socket: a clear connection error.
    let out = std::process::Command::new(TZERO)
        .args(["--data", "/nonexistent/tzero", "lsfbvol"])
        .env_remove("TZERO_API")
        .output()
        .expect("run");
    let (code, err) = one_line_error(&out);
    assert_eq!(code, 1);
    assert!(err.contains("cannot connect"), "{err}");
}

fn names_of_rels(d: &Daemon) -> Vec<String> {
    d.flashes()
        .iter()
        .map(|f| format!("{}:{}", f["source"], f["target"]))
        .collect()
}

#[test]
fn second_daemon_on_same_data_dir_is_refused() {
    let env = Env::new();
    let d = Daemon::start(&env);
    let pid = d.pid().expect("running");
    let out = std::process::Command::new(TZERO)
        .args(["serve", "--data"])
        .arg(&d.data)
        .args(["--nbd", &format!("127.0.0.1:{}", common::free_port())])
        .args(["--api", &format!("127.0.0.1:{}", common::free_port())])
        .output()
        .expect("run second daemon");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "data directory {} is in use by another tzero daemon (pid {pid})",
        d.data.display()
    );
    assert!(err.contains(&expected), "{err}");
    // The first daemon is unharmed.
    d.cli_ok(&["lsfbvol"]);
}

#[test]
fn sigterm_exits_zero_and_data_survives() {
    let env = Env::new();
    let mut d = Daemon::start(&env);
    d.cli_ok(&["mkfbvol", "--cap", "16MiB", "keep"]);
    let status = d.terminate();
    assert!(status.success(), "exit after SIGTERM: {status}");
    assert!(!d.data.join("tzero.sock").exists());
    let d = Daemon::start(&env);
    assert_eq!(names(&d.cli_json(&["lsfbvol"])), ["keep"]);
}

/// The cell under `column` of each row of a CLI table: the tables are
/// left-aligned, so a cell starts where its header does.
fn column(table: &str, column: &str) -> Vec<String> {
    let mut lines = table.lines();
    let header = lines.next().expect("header");
    let at = header
        .find(column)
        .unwrap_or_else(|| panic!("no {column} in {header}"));
    lines
        .skip(1)
        .map(|l| {
            l.get(at..)
                .unwrap_or("")
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .collect()
}

#[test]
fn lsflash_long_shows_percent_copied() {
    if !have("qemu-io") {
        return;
    }
    let env = Env::new();
    let d = Daemon::start(&env);
    // 16 MiB of 64 KiB tracks: 256 tracks.
    d.cli_ok(&["mkfbvol", "--cap", "16MiB", "a", "b", "c"]);
    d.cli_ok(&["mkflash", "--nocp", "--persist", "a:b"]);
    d.cli_ok(&["mkflash", "--persist", "a:c"]);
    d.wait_copied("a", "c", Duration::from_secs(60));
    let long = d.cli_ok(&["lsflash", "-l"]);
    assert_eq!(column(&long, "ID"), ["a:b", "a:c"], "{long}");
    assert_eq!(column(&long, "%Copied"), ["0.0", "100.0"], "{long}");
    // A NOCOPY relationship shows its real share: a host write to 4
    // source tracks copies their T0 first, 4/256 = 1.5625 %.
    qemu_io(&d, "a", &["write -P 0x5a 0 256k", "flush"]);
    let long = d.cli_ok(&["lsflash", "-l"]);
    assert_eq!(column(&long, "OutOfSyncTracks"), ["252", "0"], "{long}");
    assert_eq!(column(&long, "%Copied"), ["1.5", "100.0"], "{long}");
}

/// A relationship still copying for a few seconds: 16 MiB at 4 MiB/s.
fn slow_copy(d: &Daemon) {
    d.cli_ok(&["mkfbvol", "--cap", "16MiB", "src", "tgt"]);
    d.cli_ok(&["mkflash", "--persist", "--rate", "4MiB", "src:tgt"]);
}

#[test]
fn lsflash_watch_prints_one_json_line_per_interval() {
    let env = Env::new();
    let d = Daemon::start(&env);
    slow_copy(&d);
    let start = Instant::now();
    let out = d.cli_ok(&["--json", "lsflash", "--watch", "0.4", "--count", "3"]);
    let took = start.elapsed();
    let docs: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {e}: {l}")))
        .collect();
    assert_eq!(docs.len(), 3, "{out}");
    // Three listings, two intervals apart.
    assert!(took >= Duration::from_millis(800), "{took:?}");
    let left: Vec<u64> = docs
        .iter()
        .map(|d| {
            let rels = d.as_array().expect("array");
            assert_eq!(rels.len(), 1, "{d}");
            assert_eq!(rels[0]["source"], "src");
            rels[0]["out_of_sync_tracks"].as_u64().expect("tracks")
        })
        .collect();
    assert!(left.windows(2).all(|w| w[1] <= w[0]), "{left:?}");
    assert!(left[2] < left[0], "the copy did not move: {left:?}");

    // A pipe gets plain tables after a timestamp line, no escape codes.
    let out = d.cli_ok(&["lsflash", "--watch", "0.2", "--count", "2", "src:tgt"]);
    assert!(!out.contains('\x1b'), "{out:?}");
    let stamps = out
        .lines()
        .filter(|l| l.starts_with("--- ") && l.ends_with(" UTC ---"));
    assert_eq!(stamps.count(), 2, "{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ID ")).count(),
        2,
        "{out}"
    );
    assert_eq!(
        out.lines().filter(|l| l.starts_with("src:tgt ")).count(),
        2,
        "{out}"
    );

    // Bad intervals and counts are usage errors.
    for bad in [
        &["lsflash", "--watch", "0"][..],
        &["lsflash", "--watch", "fast"],
        &["lsflash", "--count", "2"],
        &["lsflash", "--watch", "1", "--count", "0"],
    ] {
        let (code, err) = one_line_error(&d.cli(bad));
        assert_eq!(code, 2, "{bad:?}: {err}");
    }
}

/// Runs `tzero --data DIR ARGS` on a pseudo-terminal (util-linux `script`),
/// returning its exit status and everything it wrote, escapes included.
fn on_terminal(d: &Daemon, args: &str) -> (bool, String) {
    let cmd = format!("{TZERO} --data {} {args}", d.data.display());
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("COLUMNS", "160")
        .env("LINES", "40")
        .output()
        .expect("run script");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn lsflash_watch_redraws_in_place_on_a_terminal() {
    if !have("script") {
        return;
    }
    let env = Env::new();
    let d = Daemon::start(&env);
    slow_copy(&d);
    let (ok, raw) = on_terminal(&d, "lsflash --watch 0.3 --count 3");
    assert!(ok, "{raw}");
    // One bar per relationship in every frame, with its percentage.
    let frames = raw.matches("Every 0.3s: tzero lsflash").count();
    assert_eq!(frames, 3, "{raw:?}");
    let bars = raw
        .lines()
        .filter(|l| l.contains("src:tgt") && (l.contains("  [#") || l.contains("  [-")))
        .count();
    assert!(bars >= 3, "{raw:?}");
    // Frames 2 and 3 go back up over the previous one (title, blank line,
    // header, separator, one row: 5 lines) and clear only what is left;
    // the screen is never cleared or homed.
    assert_eq!(raw.matches("\x1b[5A").count(), 2, "{raw:?}");
    assert!(raw.contains("\x1b[J"), "{raw:?}");
    assert!(
        !raw.contains("\x1b[2J") && !raw.contains("\x1b[H"),
        "{raw:?}"
    );
    // The cursor hidden while drawing is shown again at the end.
    assert!(raw.trim_end().ends_with("\x1b[?25h"), "{raw:?}");
}

#[test]
fn wait_shows_one_bar_per_pair_and_fails_on_a_failed_pair() {
    if !have("script") || !have("qemu-io") {
        return;
    }
    let env = Env::new();
    let d = Daemon::start(&env);
    d.cli_ok(&["mkfbvol", "--cap", "8MiB", "a", "b", "c", "d"]);
    let (ok, raw) = on_terminal(&d, "mkflash --wait --rate 8MiB a:b c:d");
    assert!(ok, "{raw}");
    // indicatif redraws with \r and cursor moves: look at the last frame.
    for pair in ["a:b [", "c:d ["] {
        assert!(raw.contains(pair), "no bar for {pair}: {raw:?}");
    }
    assert!(raw.contains("ETA"), "{raw:?}");
    assert!(raw.matches("100%  copied").count() >= 2, "{raw:?}");
    assert!(d.flashes().iter().all(|f| f["state"] == "copied"));

    // A thin target in a 2 MiB pool cannot take 8 MiB: that pair fails,
    // and --wait says which, with the reason, and exits 1.
    d.cli_ok(&["mkextpool", "--cap", "2MiB", "p"]);
    d.cli_ok(&[
        "mkfbvol",
        "--cap",
        "8MiB",
        "--extpool",
        "p",
        "--sam",
        "ese",
        "t",
    ]);
    d.cli_ok(&["mkfbvol", "--cap", "8MiB", "e", "s"]);
    qemu_io(&d, "s", &["write -P 0x11 0 8M", "flush"]);
    let (ok, raw) = on_terminal(&d, "mkflash --wait --rate 8MiB e:b s:t");
    assert!(!ok, "{raw}");
    assert!(raw.contains("FAILED: "), "{raw:?}");
    assert!(
        raw.contains("tzero: error: FlashCopy pair s:t failed: ")
            && raw.contains("extent pool p is full"),
        "{raw:?}"
    );
    // Without a terminal the same failure is one error line.
    d.cli_ok(&["rmflash", "s:t"]);
    let out = d.cli(&["mkflash", "--wait", "s:t"]);
    let (code, err) = one_line_error(&out);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("FlashCopy pair s:t failed"), "{err}");
}

#[test]
fn ctrl_c_ends_a_live_watch_with_the_cursor_back() {
    if !have("script") {
        return;
    }
    let env = Env::new();
    let d = Daemon::start(&env);
    slow_copy(&d);
    // `exec`: script runs the command through $SHELL, and dash (Debian's
    // /bin/sh, which CI runners use) stays in between as the parent of the
    // CLI, so a SIGINT sent to script's child reached the shell, not the CLI.
    let cmd = format!(
        "exec {TZERO} --data {} lsflash --watch 0.2",
        d.data.display()
    );
    // The signal mask and ignored signals survive exec, and a CI runner
    // started the tests with SIGINT blocked: the CLI never saw its Ctrl-C and
    // this test hung. `env --default-signal=INT` unblocks it and resets it to
    // its default for script and the CLI, as on a user's terminal.
    let mut script = Command::new("env")
        .args(["--default-signal=INT", "script", "-qec", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run script");
    // Read the terminal's output on a thread, so the wait below can give up.
    let mut stdout = script.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut raw).map(|_| raw)
    });
    // script's child is the tzero CLI; Ctrl-C on a terminal is SIGINT to it.
    let pid = script.id();
    let children = format!("/proc/{pid}/task/{pid}/children");
    let deadline = Instant::now() + Duration::from_secs(10);
    let cli = loop {
        let text = std::fs::read_to_string(&children).unwrap_or_default();
        if let Some(c) = text.split_whitespace().next() {
            break c.to_owned();
        }
        assert!(Instant::now() < deadline, "script started no child");
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(800));
    let exe = std::fs::read_link(format!("/proc/{cli}/exe")).unwrap_or_default();
    assert_eq!(
        exe,
        std::path::Path::new(TZERO),
        "script's child is not the CLI"
    );
    let sent = Command::new("kill")
        .args(["-INT", &cli])
        .status()
        .expect("kill");
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = script.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = Command::new("kill").args(["-KILL", &cli]).status();
            let _ = script.kill();
            panic!("the watch did not end within 20 s of its SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = std::process::Output {
        status,
        stdout: reader.join().expect("reader").expect("read"),
        stderr: Vec::new(),
    };
    let raw = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {:?}: {raw:?}", out.status);
    assert!(raw.matches("Every 0.2s").count() >= 2, "{raw:?}");
    assert!(raw.trim_end().ends_with("\x1b[?25h"), "{raw:?}");
}
