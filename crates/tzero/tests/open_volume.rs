//! Deleting a volume that hosts have open: refused without `--force`, with nothing changed;
//! with `--force` the volume goes and its connections are closed after their requests in flight
//! are answered (a raw NBD connection sees the socket close; qemu-io, a real client, gets an
//! error and exits instead of hanging).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::nbd_client::NbdConn;
use common::{have, one_line_error, Daemon, Env};

#[test]
fn rmfbvol_of_an_open_volume_needs_force_and_disconnects() {
    let env = Env::new();
    let d = Daemon::start(&env);
    d.cli_ok(&["mkfbvol", "--cap", "4MiB", "v", "w"]);
    let mut conn = NbdConn::connect(d.nbd_port, "v").expect("connect");
    assert_eq!(conn.write(0, &[0x5a; 4096]).unwrap(), 0);
    assert_eq!(conn.flush().unwrap(), 0);

    // Refused, naming the connection; the volume and the connection are untouched.
    let out = d.cli(&["rmfbvol", "v"]);
    let (code, err) = one_line_error(&out);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("open by 1 host connection") && err.contains("--force"),
        "{err}"
    );
    assert!(d.cli_ok(&["lsfbvol"]).contains('v'));
    assert_eq!(conn.read(0, 4096).unwrap().unwrap(), vec![0x5a; 4096]);
    // A volume nobody has open goes without --force.
    d.cli_ok(&["rmfbvol", "w"]);

    // Forced: deleted, and the server closes the connection by itself.
    d.cli_ok(&["rmfbvol", "--force", "v"]);
    assert!(!d.cli_ok(&["lsfbvol"]).contains(" v "));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // The next request finds the socket closed (EOF or reset).
        let _ = tx.send(conn.read(0, 4096).is_err());
    });
    let closed = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the server closed the connection within 10 s");
    assert!(closed, "a request after the forced delete got an answer");
    assert!(d
        .log_text()
        .contains("disconnecting the volume's host connections"));

    // The daemon serves on.
    d.cli_ok(&["mkfbvol", "--cap", "4MiB", "v"]);
    let mut again = NbdConn::connect(d.nbd_port, "v").expect("connect");
    assert_eq!(again.read(0, 4096).unwrap().unwrap(), vec![0; 4096]);
}

/// qemu-io, interactive: after the forced delete its next command fails and it exits when its
/// input ends, rather than hanging on a connection nobody serves.
#[test]
fn qemu_io_is_disconnected_by_a_forced_delete() {
    if !have("qemu-io") {
        return;
    }
    let env = Env::new();
    let d = Daemon::start(&env);
    d.cli_ok(&["mkfbvol", "--cap", "4MiB", "q"]);
    let mut qemu = Command::new("qemu-io")
        .args(["-f", "raw", &d.uri("q")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-io");
    let mut stdin = qemu.stdin.take().expect("stdin");
    let stdout = qemu.stdout.take().expect("stdout");
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    writeln!(stdin, "write -P 0x11 0 64k").unwrap();
    stdin.flush().unwrap();
    // The write answered: the connection is open.
    let wrote = lines
        .recv_timeout(Duration::from_secs(30))
        .expect("qemu-io answered the write");
    assert!(wrote.contains("wrote 65536/65536"), "{wrote}");
    let out = d.cli(&["rmfbvol", "q"]);
    let (_, err) = one_line_error(&out);
    assert!(err.contains("open by 1 host connection"), "{err}");

    d.cli_ok(&["rmfbvol", "--force", "q"]);
    writeln!(stdin, "read -P 0x11 0 64k").unwrap();
    drop(stdin);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(qemu.wait_with_output());
    });
    let out = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("qemu-io exited")
        .expect("qemu-io output");
    let rest: Vec<String> = lines.try_iter().collect();
    let text = format!(
        "{}{}",
        rest.join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
    // qemu's NBD client sees the server close the connection: EIO for the read.
    assert!(
        text.contains("read failed") && !text.contains("read 65536/65536"),
        "the read after the delete must fail: {text}"
    );
}
