//! Shared harness of the integration tests: starts the real `tzero` binary
//! on free loopback ports with a temporary data directory, and runs the real
//! clients (the `tzero` CLI, qemu-io, qemu-img, nbdinfo, nbdcopy, fio)
//! against it.
//!
//! Every helper panics with the daemon's log attached, so a failure in CI
//! shows what the daemon saw.

#![allow(dead_code)] // each test binary uses a different subset

pub mod nbd_client;
// The missing-tool rule is shared with tzero-nbd's harness.
#[path = "../../../tzero-nbd/tests/common/tools.rs"]
mod tools;

#[allow(unused_imports)] // not every test binary drives real clients
pub use tools::have;

use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub const TZERO: &str = env!("CARGO_BIN_EXE_tzero");

/// A free loopback port: bind port 0, note the port, release it.
/// The `tzero` binary with none of the caller's `TZERO_*` settings, so that a test
/// says everything it means on the command line.
pub fn tzero_command() -> Command {
    let mut cmd = Command::new(TZERO);
    cmd.env_remove("TZERO_DATA")
        .env_remove("TZERO_API")
        .env_remove("TZERO_TOKEN")
        .env_remove("TZERO_API_CA");
    cmd
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// A test's scratch space: `root/data` is the daemon's data directory.
pub struct Env {
    pub root: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            root: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn data(&self) -> PathBuf {
        self.root.path().join("data")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }
}

/// A running daemon.
pub struct Daemon {
    pub data: PathBuf,
    pub nbd_port: u16,
    pub api_port: u16,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    /// Starts a daemon on fresh ports and waits until it answers.
    pub fn start(env: &Env) -> Daemon {
        Daemon::start_with(env, &[])
    }

    /// [`Daemon::start`] with more `serve` arguments (`--log-format json`).
    pub fn start_with(env: &Env, serve_args: &[&str]) -> Daemon {
        // Another test may grab a port between our probe and the daemon's
        // bind; try a few times.
        for attempt in 0..5 {
            let (nbd, api) = (free_port(), free_port());
            match Daemon::try_start_with(env, nbd, api, serve_args) {
                Ok(d) => return d,
                Err(log) if attempt < 4 => eprintln!("daemon start failed, retrying:\n{log}"),
                Err(log) => panic!("daemon did not start:\n{log}"),
            }
        }
        unreachable!()
    }

    /// Starts a daemon on given ports (a restart keeps its ports).
    pub fn try_start(env: &Env, nbd_port: u16, api_port: u16) -> Result<Daemon, String> {
        Daemon::try_start_with(env, nbd_port, api_port, &[])
    }

    /// [`Daemon::try_start`] with more `serve` arguments.
    pub fn try_start_with(
        env: &Env,
        nbd_port: u16,
        api_port: u16,
        serve_args: &[&str],
    ) -> Result<Daemon, String> {
        Daemon::try_start_in(env, &env.data(), nbd_port, api_port, serve_args)
    }

    /// Starts a daemon on fresh ports with its data directory at `data` rather than
    /// `env.data()` (the fault tests restart on the backing directory of their FUSE mount).
    pub fn start_in(env: &Env, data: &Path) -> Daemon {
        for attempt in 0..5 {
            let (nbd, api) = (free_port(), free_port());
            match Daemon::try_start_in(env, data, nbd, api, &[]) {
                Ok(d) => return d,
                Err(log) if attempt < 4 => eprintln!("daemon start failed, retrying:\n{log}"),
                Err(log) => panic!("daemon did not start:\n{log}"),
            }
        }
        unreachable!()
    }

    /// [`Daemon::try_start_with`] on the data directory `data`.
    pub fn try_start_in(
        env: &Env,
        data: &Path,
        nbd_port: u16,
        api_port: u16,
        serve_args: &[&str],
    ) -> Result<Daemon, String> {
        let data = data.to_path_buf();
        let log = env.path(&format!("daemon-{nbd_port}.log"));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = tzero_command()
            .args(["serve", "--data"])
            .arg(&data)
            .args(["--nbd", &format!("127.0.0.1:{nbd_port}")])
            .args(["--api", &format!("127.0.0.1:{api_port}")])
            .args(serve_args)
            .env("RUST_LOG", "info,tzero=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn tzero serve");
        let mut d = Daemon {
            data,
            nbd_port,
            api_port,
            log,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = d.try_wait() {
                return Err(format!("daemon exited with {status}:\n{}", d.log_text()));
            }
            let unix = UnixStream::connect(d.data.join("tzero.sock")).is_ok();
            let tcp = TcpStream::connect(("127.0.0.1", api_port)).is_ok();
            if unix && tcp {
                return Ok(d);
            }
            if Instant::now() > deadline {
                d.kill9();
                return Err(format!("daemon not ready after 30 s:\n{}", d.log_text()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn uri(&self, export: &str) -> String {
        format!("nbd://127.0.0.1:{}/{export}", self.nbd_port)
    }

    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data.join("api-token"))
            .expect("api-token")
            .trim()
            .to_owned()
    }

    /// Runs `tzero --data DIR ARGS...` (over the unix socket).
    pub fn cli(&self, args: &[&str]) -> Output {
        tzero_command()
            .arg("--data")
            .arg(&self.data)
            .args(args)
            .output()
            .expect("run tzero")
    }

    /// Runs the CLI and requires success; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "tzero {args:?} failed: {}\nstdout: {}\ndaemon log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout),
            self.log_text()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs the CLI with `--json` and parses stdout.
    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.cli_ok(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad JSON from {args:?}: {e}\n{out}"))
    }

    /// The relationships, as the CLI shows them in JSON.
    pub fn flashes(&self) -> Vec<serde_json::Value> {
        match self.cli_json(&["lsflash"]) {
            serde_json::Value::Array(v) => v,
            other => panic!("lsflash --json is not an array: {other}"),
        }
    }

    /// Waits until relationship `src:tgt` is gone or copied.
    pub fn wait_copied(&self, src: &str, tgt: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let rel = self
                .flashes()
                .into_iter()
                .find(|f| f["source"] == src && f["target"] == tgt);
            match rel {
                None => return,
                Some(f) if f["state"] == "copied" => return,
                Some(f) => {
                    assert_ne!(f["state"], "failed", "relationship failed: {f}");
                    assert!(
                        Instant::now() < deadline,
                        "copy {src}:{tgt} not done after {timeout:?}: {f}\n{}",
                        self.log_text()
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid() {
            let ok = Command::new("kill")
                .args([sig, &pid.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill {sig} {pid} failed");
        }
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("-TERM");
        self.wait(Duration::from_secs(60))
    }

    /// SIGKILL and wait: a crash.
    pub fn kill9(&mut self) {
        self.signal("-KILL");
        let _ = self.wait(Duration::from_secs(30));
    }

    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not exit after {timeout:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs a client tool and requires success; returns stdout.
pub fn run_ok(cmd: &mut Command, daemon: &Daemon) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {stdout}\nstderr: {stderr}\ndaemon log:\n{}",
        out.status,
        daemon.log_text()
    );
    stdout
}

/// Runs qemu-io commands against an export; any failed command (including
/// a `read -P` pattern mismatch) fails the test.
pub fn qemu_io(daemon: &Daemon, export: &str, cmds: &[&str]) -> String {
    let mut cmd = Command::new("qemu-io");
    cmd.args(["-f", "raw"]).arg(daemon.uri(export));
    for c in cmds {
        cmd.args(["-c", c]);
    }
    let out = run_ok(&mut cmd, daemon);
    assert!(
        !out.contains("verification failed") && !out.contains("failed:"),
        "qemu-io {export} {cmds:?}:\n{out}"
    );
    out
}

/// Splits a CLI failure into (exit code, stderr) and checks that stderr is
/// exactly one `tzero: error:` line.
pub fn one_line_error(out: &Output) -> (i32, String) {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "expected failure, got success: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one error line, got:\n{stderr}");
    assert!(
        lines[0].starts_with("tzero: error: "),
        "bad error line: {stderr}"
    );
    (out.status.code().unwrap_or(-1), stderr)
}

pub fn data_dir(d: &Daemon) -> &Path {
    &d.data
}
