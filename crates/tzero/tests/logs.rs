//! The daemon's logs, read from a real daemon's stderr: with
//! `--log-format json` every line is one JSON object, every admin action
//! (a non-GET request) is one `tzero::admin` line saying who, what, how it
//! ended and how long it took, over the unix socket and over TCP with the
//! token, refusals included; lines inside an NBD connection carry its peer
//! and export. The default text format says the same in `key=value` form.

mod common;

use std::process::Output;

use common::{have, qemu_io, Daemon, Env};
use serde_json::Value;

/// Runs the CLI over TCP (`--api URL --token T`), as a remote admin would.
fn over_tcp(d: &Daemon, token: &str, args: &[&str]) -> Output {
    common::tzero_command()
        .args(["--api", &d.api_url(), "--token", token])
        .args(args)
        .output()
        .expect("run tzero")
}

/// Every stderr line, each of which must be a JSON object.
fn json_lines(d: &Daemon) -> Vec<Value> {
    d.log_text()
        .lines()
        .map(|l| {
            let v: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            assert!(v.is_object(), "{l}");
            v
        })
        .collect()
}

#[test]
fn json_logs_have_one_line_per_admin_action() {
    let env = Env::new();
    let d = Daemon::start_with(&env, &["--log-format", "json"]);
    let token = d.token();

    // Over the unix socket: two creates, an establish, a refused create.
    d.cli_ok(&["mkfbvol", "--cap", "16MiB", "a", "b"]);
    d.cli_ok(&["mkflash", "--nocp", "--persist", "a:b"]);
    let dup = d.cli(&["mkfbvol", "--cap", "16MiB", "a"]);
    assert!(!dup.status.success());
    // Reads are not admin actions.
    d.cli_ok(&["lsflash", "-l"]);
    d.cli_ok(&["lsfbvol"]);
    // Over TCP with the token: a create and a delete; with a wrong token,
    // a refused withdraw.
    let ok = over_tcp(&d, &token, &["mkfbvol", "--cap", "1MiB", "c"]);
    assert!(ok.status.success(), "{ok:?}");
    let ok = over_tcp(&d, &token, &["rmfbvol", "c"]);
    assert!(ok.status.success(), "{ok:?}");
    let bad = over_tcp(&d, &"0".repeat(64), &["rmflash", "a:b"]);
    assert!(!bad.status.success());

    let lines = json_lines(&d);
    let admin: Vec<&Value> = lines
        .iter()
        .filter(|l| l["target"] == "tzero::admin")
        .collect();
    let seen: Vec<(&str, &str, &str, u64, &str)> = admin
        .iter()
        .map(|l| {
            let f = &l["fields"];
            (
                f["caller"].as_str().expect("caller"),
                f["method"].as_str().expect("method"),
                f["route"].as_str().expect("route"),
                f["status"].as_u64().expect("status"),
                f["code"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("socket", "POST", "/v1/volumes", 201, ""),
            ("socket", "POST", "/v1/volumes", 201, ""),
            ("socket", "POST", "/v1/flash", 201, ""),
            ("socket", "POST", "/v1/volumes", 409, "volume_exists"),
            ("token", "POST", "/v1/volumes", 201, ""),
            ("token", "DELETE", "/v1/volumes/{name}", 204, ""),
            (
                "token",
                "DELETE",
                "/v1/flash/{source}/{target}",
                401,
                "unauthorized"
            ),
        ],
        "{admin:#?}"
    );
    for l in &admin {
        let f = &l["fields"];
        let ms = f["duration_ms"].as_f64().expect("duration_ms");
        assert!((0.0..60_000.0).contains(&ms), "{l}");
        assert_eq!(f["message"], "admin action");
        // The request's span goes with the line, with its outcome.
        assert_eq!(l["span"]["name"], "api", "{l}");
        assert_eq!(l["span"]["route"], f["route"], "{l}");
        assert_eq!(l["span"]["status"], f["status"], "{l}");
    }
    // The key arguments: the body's, and the route's parameters.
    let args = |i: usize| admin[i]["fields"]["args"].as_str().unwrap_or("").to_owned();
    assert!(args(0).contains(r#""name":"a""#), "{}", args(0));
    assert!(args(2).contains(r#""source":"a""#) && args(2).contains(r#""target":"b""#));
    assert_eq!(admin[5]["fields"]["name"], "c");
    assert_eq!(admin[6]["fields"]["source"], "a");
    assert_eq!(admin[6]["fields"]["target"], "b");
    // What a handler logs inside the request carries the request's span.
    let inner = lines
        .iter()
        .find(|l| l["fields"]["message"] == "FlashCopy established" && l["span"].is_object())
        .expect("the establish handler's own line");
    assert_eq!(inner["span"]["caller"], "socket");
    assert_eq!(inner["span"]["route"], "/v1/flash");

    // An NBD connection's lines carry its peer and, once negotiated, the
    // export.
    if have("qemu-io") {
        qemu_io(&d, "a", &["read 0 4k"]);
        let lines = json_lines(&d);
        let conn = lines
            .iter()
            .find(|l| l["span"]["name"] == "nbd_conn" && l["span"]["export"] == "a")
            .unwrap_or_else(|| panic!("no line in an NBD connection's span:\n{}", d.log_text()));
        let peer = conn["span"]["peer"].as_str().expect("peer");
        assert!(peer.starts_with("127.0.0.1:"), "{conn}");
    }
}

#[test]
fn text_logs_say_the_same() {
    let env = Env::new();
    let d = Daemon::start(&env);
    d.cli_ok(&["mkfbvol", "--cap", "1MiB", "v"]);
    let refused = d.cli(&["rmfbvol", "nosuch"]);
    assert!(!refused.status.success());
    let log = d.log_text();
    assert!(log.lines().all(|l| !l.starts_with('{')), "{log}");
    let admin: Vec<&str> = log.lines().filter(|l| l.contains("admin action")).collect();
    assert_eq!(admin.len(), 2, "{log}");
    for (line, want) in admin.iter().zip([
        ["method=POST", "route=/v1/volumes", "status=201"],
        ["method=DELETE", "route=/v1/volumes/{name}", "status=404"],
    ]) {
        assert!(line.contains("caller=\"socket\""), "{line}");
        assert!(line.contains("duration_ms="), "{line}");
        for w in want {
            assert!(line.contains(w), "{w} not in {line}");
        }
    }
    assert!(
        admin[1].contains("code=\"volume_not_found\""),
        "{}",
        admin[1]
    );
    assert!(admin[1].contains("name=\"nosuch\""), "{}", admin[1]);
}
