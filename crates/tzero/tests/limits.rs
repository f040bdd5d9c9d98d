//! Resource limits of the daemon: `serve --max-connections` bounds the NBD connections served
//! at once; one more is closed at accept, a freed slot is served again, and a bad value is a
//! usage error. A thousand idle, fully negotiated connections cost the daemon bounded memory
//! and a real client is still served beside them.

mod common;

use std::time::{Duration, Instant};

use common::nbd_client::NbdConn;
use common::{qemu_io, tzero_command, Daemon, Env};

#[test]
fn nbd_connections_beyond_the_limit_are_closed() {
    let env = Env::new();
    let d = Daemon::start_with(&env, &["--max-connections", "2"]);
    d.cli_ok(&["mkfbvol", "--cap", "1MiB", "v"]);
    let mut a = NbdConn::connect(d.nbd_port, "v").expect("first");
    let b = NbdConn::connect(d.nbd_port, "v").expect("second");
    assert!(
        NbdConn::connect(d.nbd_port, "v").is_err(),
        "a third connection must be closed at accept"
    );
    // The ones served are unaffected.
    assert_eq!(a.read(0, 4096).unwrap().unwrap(), vec![0; 4096]);
    assert!(d.log_text().contains("connection limit reached"));

    // A slot freed is served again (the server notices the close at once; allow a moment).
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut c = loop {
        match NbdConn::connect(d.nbd_port, "v") {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("no slot after a close: {e}"),
        }
    };
    assert_eq!(c.read(0, 4096).unwrap().unwrap(), vec![0; 4096]);
}

#[test]
fn max_connections_must_be_positive() {
    let env = Env::new();
    let out = tzero_command()
        .args(["serve", "--data"])
        .arg(env.data())
        .args(["--max-connections", "0"])
        .output()
        .expect("run tzero");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--max-connections"), "{err}");
}

/// The daemon's resident set, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Lets this test process hold more than the usual 1024 descriptors (the
/// daemon raises its own limit at start).
fn raise_own_fd_limit(want: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    let hard = l.maximum.unwrap_or(u64::MAX);
    assert!(
        hard >= want,
        "the hard open-file limit {hard} is below {want}"
    );
    l.current = Some(want.max(l.current.unwrap_or(0)));
    setrlimit(Resource::Nofile, l).expect("raise RLIMIT_NOFILE");
}

#[test]
fn a_thousand_idle_connections_cost_bounded_memory() {
    const IDLE: usize = 1000;
    raise_own_fd_limit(IDLE as u64 + 256);
    let env = Env::new();
    let d = Daemon::start_with(&env, &["--max-connections", "1100"]);
    d.cli_ok(&["mkfbvol", "--cap", "16MiB", "v"]);
    qemu_io(&d, "v", &["write -P 0x5a 0 64k", "flush"]);
    let pid = d.pid().expect("pid");
    let before = rss_kib(pid);

    let mut idle = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        let c = NbdConn::connect(d.nbd_port, "v")
            .unwrap_or_else(|e| panic!("idle connection {i}: {e}\n{}", d.log_text()));
        idle.push(c);
    }
    // Give the daemon a moment to settle whatever each session allocates.
    std::thread::sleep(Duration::from_millis(500));
    let during = rss_kib(pid);
    let per_conn = (during.saturating_sub(before)) * 1024 / IDLE as u64;
    eprintln!("RSS {before} KiB -> {during} KiB with {IDLE} idle connections ({per_conn} B each)");
    // Bounded by design: a session owns a 128 KiB read buffer and a 128 KiB
    // write buffer (tzero-nbd's IO_BUF) and nothing that grows while idle;
    // measured about 62 KB resident each, as only the touched pages count.
    assert!(
        per_conn < 2 * 128 * 1024 + 16 * 1024,
        "{per_conn} bytes per idle connection (RSS {before} -> {during} KiB)"
    );

    // A real client is served beside them, and one of them too.
    qemu_io(
        &d,
        "v",
        &["read -P 0x5a 0 64k", "write -P 0x33 64k 4k", "flush"],
    );
    let first = idle.first_mut().expect("one");
    assert_eq!(first.read(65536, 4096).unwrap().unwrap(), vec![0x33; 4096]);
    drop(idle);
    qemu_io(&d, "v", &["read -P 0x33 64k 4k"]);
}
