//! Resource limits of the daemon: `serve --max-connections` bounds the NBD connections served
//! at once; one more is closed at accept, a freed slot is served again, and a bad value is a
//! usage error.

mod common;

use std::time::{Duration, Instant};

use common::nbd_client::NbdConn;
use common::{tzero_command, Daemon, Env};

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
