//! API roles, hashed tokens and the audit log against a real daemon: a
//! monitor token reads but gets 403 on any change (and changes nothing),
//! `tzero token rotate` kills the old token at once and across a restart,
//! the daemon stores only digests, and every admin action, refused ones
//! included, is one durable JSON line in `DATA/audit.log`, rotated by size.

mod common;

use common::{tzero_command, Daemon, Env};
use hyper::Method;
use serde_json::Value;
use tzero::client::{Client, Endpoint, RawResponse};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn tcp(d: &Daemon, token: &str) -> Client {
    Client::new(Endpoint::Tcp {
        addr: format!("127.0.0.1:{}", d.api_port),
        token: Some(token.to_owned()),
    })
}

fn send(c: &Client, method: Method, path: &str, body: Option<&str>) -> RawResponse {
    rt().block_on(c.raw(method, path, body.map(|b| b.as_bytes().to_vec())))
        .expect("request")
}

fn body(r: &RawResponse) -> Value {
    serde_json::from_slice(&r.body).unwrap_or(Value::Null)
}

fn audit(d: &Daemon) -> Vec<Value> {
    std::fs::read_to_string(d.data.join("audit.log"))
        .expect("audit.log")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn monitor_reads_only_and_every_admin_action_is_audited() {
    let env = Env::new();
    let d = Daemon::start(&env);
    let admin = d.token();
    // The monitor role has no token until one is made.
    let monitor = d.cli_ok(&["token", "rotate", "monitor"]).trim().to_owned();
    assert_eq!(monitor.len(), 64, "{monitor}");
    assert_ne!(monitor, admin);

    let m = tcp(&d, &monitor);
    for path in ["/v1/volumes", "/v1/flash", "/metrics", "/v1/openapi.json"] {
        let r = send(&m, Method::GET, path, None);
        assert_eq!(r.status, 200, "monitor GET {path}");
    }
    let r = send(
        &m,
        Method::POST,
        "/v1/volumes",
        Some(r#"{"name":"v","capacity_bytes":1048576}"#),
    );
    assert_eq!(r.status, 403);
    let e = body(&r);
    assert_eq!(e["error"]["code"], "forbidden", "{e}");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("monitor token can only read") && msg.contains("admin token"),
        "{msg}"
    );
    let r = send(&m, Method::POST, "/v1/tokens/admin", None);
    assert_eq!(r.status, 403, "a monitor cannot make itself admin");
    // Nothing changed.
    let a = tcp(&d, &admin);
    let vols = body(&send(&a, Method::GET, "/v1/volumes", None));
    assert_eq!(
        vols,
        Value::Array(vec![]),
        "the refused create left no volume"
    );

    let r = send(
        &a,
        Method::POST,
        "/v1/volumes",
        Some(r#"{"name":"v","capacity_bytes":1048576}"#),
    );
    assert_eq!(r.status, 201);
    let r = send(
        &tcp(&d, &"0".repeat(64)),
        Method::DELETE,
        "/v1/volumes/v",
        None,
    );
    assert_eq!(r.status, 401);

    // The audit log: one record per admin action, who and what and how it ended;
    // reads are not admin actions.
    let log = audit(&d);
    let actions: Vec<(String, String, u64)> = log
        .iter()
        .map(|r| {
            (
                r["role"].as_str().unwrap().to_owned(),
                r["action"].as_str().unwrap().to_owned(),
                r["status"].as_u64().unwrap(),
            )
        })
        .collect();
    let want = [
        ("socket", "POST /v1/tokens/{role}", 200),
        ("monitor", "POST /v1/volumes", 403),
        ("monitor", "POST /v1/tokens/{role}", 403),
        ("admin", "POST /v1/volumes", 201),
        ("none", "DELETE /v1/volumes/{name}", 401),
    ];
    let want: Vec<(String, String, u64)> = want
        .iter()
        .map(|(r, a, s)| ((*r).to_owned(), (*a).to_owned(), *s))
        .collect();
    assert_eq!(actions, want, "{log:#?}");
    let created = &log[3];
    assert_eq!(created["result"], "ok");
    assert_eq!(created["args"]["name"], "v", "{created}");
    assert_eq!(created["args"]["capacity_bytes"], 1048576);
    assert!(
        created["time"].as_str().unwrap().ends_with('Z'),
        "{created}"
    );
    assert!(created["duration_ms"].as_f64().is_some());
    assert_eq!(log[1]["result"], "error");
    assert_eq!(log[1]["code"], "forbidden");
    assert_eq!(log[4]["params"]["name"], "v");
    // No token, new or presented, is ever written to the log.
    let text = std::fs::read_to_string(d.data.join("audit.log")).unwrap();
    assert!(!text.contains(&monitor) && !text.contains(&admin));
}

#[test]
fn rotation_kills_the_old_token_now_and_after_a_restart() {
    let env = Env::new();
    let mut d = Daemon::start(&env);
    let old = d.token();
    // Over TCP with the old token, as a remote admin would; the CLI on the
    // daemon's host also refreshes DATA/api-token.
    let out = tzero_command()
        .args(["--data"])
        .arg(&d.data)
        .args([
            "--api",
            &d.api_url(),
            "--token",
            &old,
            "token",
            "rotate",
            "admin",
        ])
        .output()
        .expect("run tzero");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(new.len(), 64);
    assert_eq!(d.token(), new, "DATA/api-token follows the rotation");

    assert_eq!(
        send(&tcp(&d, &old), Method::GET, "/v1/volumes", None).status,
        401
    );
    assert_eq!(
        send(&tcp(&d, &new), Method::GET, "/v1/volumes", None).status,
        200
    );
    let digest = std::fs::read_to_string(d.data.join("tokens/admin.sha256")).unwrap();
    assert_eq!(digest.trim().len(), 64);
    assert!(!digest.contains(&new) && !digest.contains(&old));

    // --save writes the token to a file instead of printing it.
    let file = env.path("monitor-token");
    let shown = d.cli_ok(&[
        "token",
        "rotate",
        "monitor",
        "--save",
        file.to_str().unwrap(),
    ]);
    let monitor = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    assert!(!shown.contains(&monitor), "{shown}");

    d.terminate();
    let d = Daemon::start(&env);
    assert_eq!(
        send(&tcp(&d, &old), Method::GET, "/v1/volumes", None).status,
        401
    );
    assert_eq!(
        send(&tcp(&d, &new), Method::GET, "/v1/volumes", None).status,
        200
    );
    assert_eq!(
        send(&tcp(&d, &monitor), Method::GET, "/metrics", None).status,
        200
    );
    // A bad role is a usage error, not a request.
    let bad = d.cli(&["token", "rotate", "root"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn the_audit_log_is_rotated_by_size() {
    let env = Env::new();
    let d = Daemon::start_with(&env, &["--audit-max", "4KiB"]);
    for i in 0..40 {
        d.cli_ok(&["mkfbvol", "--cap", "1MiB", &format!("vol{i:02}")]);
    }
    let live = audit(&d);
    let older: Vec<Value> = std::fs::read_to_string(d.data.join("audit.log.1"))
        .expect("a rotated log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    for f in ["audit.log", "audit.log.1", "audit.log.2"] {
        let len = std::fs::metadata(d.data.join(f)).expect(f).len();
        assert!(len <= 4096, "{f} is {len} bytes");
    }
    // Consecutive: the rotated log ends where the live one begins.
    let name = |r: &Value| r["args"]["name"].as_str().unwrap_or_default().to_owned();
    let last_old = name(older.last().unwrap());
    let first_new = name(&live[0]);
    let n = |s: &str| s.trim_start_matches("vol").parse::<u32>().unwrap();
    assert_eq!(
        n(&last_old) + 1,
        n(&first_new),
        "{last_old} then {first_new}"
    );
    assert_eq!(name(live.last().unwrap()), "vol39");
}
