//! The audit log: `DATA/audit.log`, one JSON object per admin action (time,
//! role, action, arguments, result), appended and `fdatasync`ed before the
//! action's reply leaves, so a reply the admin saw always has its record.
//!
//! - Append-only: the file is opened `O_APPEND` and never rewritten; when it
//!   would pass `max_bytes` it is renamed to `audit.log.1` (older ones shift
//!   up to `audit.log.KEEP`, the oldest is dropped) and a new one is started.
//! - Space is reserved ahead (`fallocate` with `KEEP_SIZE`, [`RESERVE`]), so
//!   records still fit when the file system fills up: the actions an admin
//!   needs to free space (rmflash, rmfbvol) stay possible and recorded.
//! - Fail closed: once a record cannot be written, admin actions are refused
//!   (503 `audit_unavailable`) until the log can be reopened; reads go on.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::FallocateFlags;
use serde_json::Value;

/// Bytes reserved past the end of the log for records yet to come.
pub const RESERVE: u64 = 1 << 20;
/// Default size at which the log is rotated.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// Rotated logs kept beside the live one.
pub const KEEP: u32 = 4;

/// The open log; `None` after a failure, until it is reopened.
#[derive(Debug)]
struct Open {
    file: File,
    len: u64,
    reserved_to: u64,
}

#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    max_bytes: u64,
    state: Mutex<Option<Open>>,
}

impl AuditLog {
    /// Opens (or creates) `DATA/audit.log`.
    pub fn open(data: &Path, max_bytes: u64) -> std::io::Result<AuditLog> {
        let path = data.join("audit.log");
        let open = open_log(&path)?;
        Ok(AuditLog {
            path,
            max_bytes: max_bytes.max(4096),
            state: Mutex::new(Some(open)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether records can be written; a log that failed is reopened here,
    /// so a disk that recovers lifts the refusal without a restart.
    pub fn ready(&self) -> Result<(), String> {
        let mut state = self.state.lock().expect("audit lock");
        if state.is_some() {
            return Ok(());
        }
        // Opening is not proof enough: a disk that opens files but fails every fsync would
        // let each action through with a record that is never durable. The reopened log must
        // sync before actions are accepted again.
        match open_log(&self.path).and_then(|open| open.file.sync_data().map(|()| open)) {
            Ok(open) => {
                *state = Some(open);
                tracing::info!(path = %self.path.display(), "audit log reopened");
                Ok(())
            }
            Err(e) => Err(self.unavailable(&e)),
        }
    }

    /// Appends `record` as one line and makes it durable. Blocking.
    pub fn append(&self, record: &Value) -> Result<(), String> {
        let mut line = record.to_string().into_bytes();
        line.push(b'\n');
        let mut state = self.state.lock().expect("audit lock");
        let result = (|| {
            let open = match state.as_mut() {
                Some(o) => o,
                None => state.insert(open_log(&self.path)?),
            };
            if open.len > 0 && open.len + line.len() as u64 > self.max_bytes {
                *state = None;
                rotate(&self.path)?;
                *state = Some(open_log(&self.path)?);
            }
            let open = state.as_mut().expect("just opened");
            open.file.write_all(&line)?;
            open.file.sync_data()?;
            open.len += line.len() as u64;
            if open.len + RESERVE / 4 > open.reserved_to {
                // Best effort: a full disk keeps what is left of the reserve.
                if reserve(&open.file, open.len).is_ok() {
                    open.reserved_to = open.len + RESERVE;
                }
            }
            Ok::<(), std::io::Error>(())
        })();
        result.map_err(|e| {
            *state = None;
            let msg = self.unavailable(&e);
            tracing::error!("{msg}");
            msg
        })
    }

    fn unavailable(&self, e: &std::io::Error) -> String {
        format!(
            "the audit log {} cannot be written ({e}); admin actions are refused until it can",
            self.path.display()
        )
    }
}

fn open_log(path: &Path) -> std::io::Result<Open> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    let len = file.metadata()?.len();
    // A new file's directory entry must survive a crash like its records.
    if len == 0 {
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
    }
    let reserved_to = match reserve(&file, len) {
        Ok(()) => len + RESERVE,
        Err(_) => len,
    };
    Ok(Open {
        file,
        len,
        reserved_to,
    })
}

/// Reserves [`RESERVE`] bytes past `len` without changing the file's size.
fn reserve(file: &File, len: u64) -> std::io::Result<()> {
    rustix::fs::fallocate(file.as_fd(), FallocateFlags::KEEP_SIZE, len, RESERVE)
        .map_err(std::io::Error::from)
}

/// `audit.log` → `audit.log.1`, `.1` → `.2`, …, dropping `.KEEP`.
fn rotate(path: &Path) -> std::io::Result<()> {
    let numbered = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
    for n in (1..KEEP).rev() {
        match std::fs::rename(numbered(n), numbered(n + 1)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    std::fs::rename(path, numbered(1))?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn lines(path: &Path) -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect()
    }

    #[test]
    fn records_are_appended_one_per_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::open(dir.path(), DEFAULT_MAX_BYTES).expect("open");
        log.append(&json!({"action": "a", "n": 1})).expect("append");
        log.append(&json!({"action": "b", "n": 2})).expect("append");
        drop(log);
        // Reopening appends; nothing is rewritten.
        let log = AuditLog::open(dir.path(), DEFAULT_MAX_BYTES).expect("reopen");
        log.append(&json!({"action": "c", "n": 3})).expect("append");
        let got = lines(&dir.path().join("audit.log"));
        let actions: Vec<&str> = got.iter().map(|v| v["action"].as_str().unwrap()).collect();
        assert_eq!(actions, ["a", "b", "c"]);
        // The reserve does not show in the size (a reader sees only records).
        let len = std::fs::metadata(dir.path().join("audit.log"))
            .unwrap()
            .len();
        let text = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
        assert_eq!(len, text.len() as u64);
    }

    #[test]
    fn rotation_by_size_keeps_the_newest_logs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::open(dir.path(), 4096).expect("open");
        let pad = "x".repeat(1000);
        for n in 0..40 {
            log.append(&json!({"n": n, "pad": pad})).expect("append");
        }
        let live = lines(&dir.path().join("audit.log"));
        assert!(!live.is_empty());
        assert_eq!(live.last().unwrap()["n"], 39);
        for n in 1..=KEEP {
            let rotated = dir.path().join(format!("audit.log.{n}"));
            let len = std::fs::metadata(&rotated).expect("rotated log").len();
            assert!(len <= 4096, "audit.log.{n} is {len} bytes");
        }
        assert!(!dir.path().join(format!("audit.log.{}", KEEP + 1)).exists());
        // Rotated files hold older records than the live one, in order.
        let older = lines(&dir.path().join("audit.log.1"));
        assert_eq!(
            older.last().unwrap()["n"].as_u64().unwrap() + 1,
            live[0]["n"].as_u64().unwrap()
        );
    }

    #[test]
    fn a_failed_log_refuses_until_it_can_be_reopened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("d");
        std::fs::create_dir(&sub).unwrap();
        let log = AuditLog::open(&sub, DEFAULT_MAX_BYTES).expect("open");
        // Simulate the failure path: the log is dropped as after an error,
        // and its directory is gone, so it cannot be reopened.
        *log.state.lock().unwrap() = None;
        std::fs::remove_dir_all(&sub).unwrap();
        let err = log.ready().expect_err("no directory");
        assert!(err.contains("admin actions are refused"), "{err}");
        assert!(log.append(&json!({})).is_err());
        std::fs::create_dir(&sub).unwrap();
        log.ready().expect("reopened");
        log.append(&json!({"after": true})).expect("append");
        assert_eq!(lines(&sub.join("audit.log")).len(), 1);
    }
}
