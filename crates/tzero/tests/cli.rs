//! The `tzero` CLI against a real daemon: the DSCLI verbs round trip, bad
//! input is refused with one error line and changes nothing, and a second
//! daemon on the same data directory is refused.

mod common;

use common::{one_line_error, Daemon, Env, TZERO};
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
