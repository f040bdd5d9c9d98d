//! The fault rules and the control protocol's parser.
//!
//! A rule says: for operations of kind `op` on files whose name matches `glob`, fail with an
//! errno or sleep first, for the next `count` matches or until cleared. The first rule that
//! matches decides; a delay rule then lets the later rules decide the outcome too, so "every
//! fsync is slow" and "fsync of catalog.redb fails" can hold at once.
//!
//! Every injected failure or delay is counted, per rule and in total, so that a test can check
//! that its fault really fired (a fault test whose fault never reached the code under test
//! proves nothing).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The kind of operation a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `read`, and the input side of `copy_file_range`.
    Read,
    /// `write`, the output side of `copy_file_range`, and `fallocate` except punching holes
    /// (which frees space: a full disk never refuses it).
    Write,
    /// `fsync`/`fdatasync` of files and of directories.
    Fsync,
    /// Any of the above.
    Any,
}

impl Op {
    fn parse(s: &str) -> Result<Op, String> {
        match s {
            "read" => Ok(Op::Read),
            "write" => Ok(Op::Write),
            "fsync" => Ok(Op::Fsync),
            "any" => Ok(Op::Any),
            other => Err(format!("unknown op {other:?} (read, write, fsync, any)")),
        }
    }

    fn covers(self, op: Op) -> bool {
        self == Op::Any || self == op
    }
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The operation fails with this errno and does nothing.
    Fail(i32),
    /// The operation sleeps this long, then goes on.
    Delay(Duration),
}

/// One rule (see the module header).
#[derive(Debug)]
pub struct Rule {
    pub op: Op,
    pub glob: String,
    pub action: Action,
    /// Matches left; `None`: until cleared.
    pub remaining: Option<u64>,
    pub hits: u64,
}

/// The rules in force and the count of faults injected so far.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Mutex<Vec<Rule>>,
    injected: AtomicU64,
}

/// What an operation must do, decided by [`Faults::check`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub delay: Duration,
    pub errno: Option<i32>,
}

impl Faults {
    /// Decides the fate of one `op` on the file called `name` (its last path component).
    pub fn check(&self, op: Op, name: &str) -> Verdict {
        let mut verdict = Verdict::default();
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        for rule in rules.iter_mut() {
            if !rule.op.covers(op) || rule.remaining == Some(0) || !glob_match(&rule.glob, name) {
                continue;
            }
            if let Some(n) = rule.remaining.as_mut() {
                *n -= 1;
            }
            rule.hits += 1;
            self.injected.fetch_add(1, Ordering::Relaxed);
            match rule.action {
                Action::Delay(d) => verdict.delay += d,
                Action::Fail(errno) => {
                    verdict.errno = Some(errno);
                    break;
                }
            }
        }
        verdict
    }

    /// Runs one control command (the protocol is in the crate's header); returns the reply
    /// without its leading `ok`.
    pub fn command(&self, line: &str) -> Result<String, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        match words.as_slice() {
            ["fail", op, glob, errno, rest @ ..] => {
                let remaining = count(rest)?;
                rules.push(Rule {
                    op: Op::parse(op)?,
                    glob: (*glob).to_owned(),
                    action: Action::Fail(parse_errno(errno)?),
                    remaining,
                    hits: 0,
                });
                Ok(String::new())
            }
            ["delay", op, glob, ms, rest @ ..] => {
                let remaining = count(rest)?;
                let ms: u64 = ms.parse().map_err(|_| format!("bad milliseconds {ms:?}"))?;
                rules.push(Rule {
                    op: Op::parse(op)?,
                    glob: (*glob).to_owned(),
                    action: Action::Delay(Duration::from_millis(ms)),
                    remaining,
                    hits: 0,
                });
                Ok(String::new())
            }
            ["clear"] => {
                rules.clear();
                Ok(String::new())
            }
            ["hits"] => Ok(self.injected.load(Ordering::Relaxed).to_string()),
            ["list"] => Ok(rules
                .iter()
                .map(|r| {
                    format!(
                        "{:?} {} {:?} remaining={:?} hits={}",
                        r.op, r.glob, r.action, r.remaining, r.hits
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")),
            _ => Err(format!("unknown command {line:?}")),
        }
    }
}

fn count(rest: &[&str]) -> Result<Option<u64>, String> {
    match rest {
        [] => Ok(None),
        [n] => n.parse().map(Some).map_err(|_| format!("bad count {n:?}")),
        _ => Err("too many words".to_owned()),
    }
}

fn parse_errno(s: &str) -> Result<i32, String> {
    let e = match s {
        "EIO" => rustix::io::Errno::IO,
        "ENOSPC" => rustix::io::Errno::NOSPC,
        "EDQUOT" => rustix::io::Errno::DQUOT,
        "EROFS" => rustix::io::Errno::ROFS,
        "EPERM" => rustix::io::Errno::PERM,
        other => {
            return Err(format!(
                "unknown errno {other:?} (EIO, ENOSPC, EDQUOT, EROFS, EPERM)"
            ))
        }
    };
    Ok(e.raw_os_error())
}

/// `*` matches any run of characters, `?` any one; everything else itself.
pub fn glob_match(glob: &str, name: &str) -> bool {
    fn go(g: &[char], n: &[char]) -> bool {
        match (g.first(), n.first()) {
            (None, None) => true,
            (Some('*'), _) => go(&g[1..], n) || (!n.is_empty() && go(g, &n[1..])),
            (Some('?'), Some(_)) => go(&g[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&g[1..], &n[1..]),
            _ => false,
        }
    }
    let g: Vec<char> = glob.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&g, &n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*", "catalog.redb"));
        assert!(glob_match("vol-*.img", "vol-0000000000000002.img"));
        assert!(!glob_match("vol-*.img", "catalog.redb"));
        assert!(glob_match("catalog.re?b", "catalog.redb"));
        assert!(!glob_match("catalog", "catalog.redb"));
    }

    #[test]
    fn rules_count_down_and_delays_combine_with_failures() {
        let f = Faults::default();
        f.command("delay fsync * 200").expect("delay");
        f.command("fail fsync catalog.redb EIO 2").expect("fail");
        let v = f.check(Op::Fsync, "catalog.redb");
        assert_eq!(v.delay, Duration::from_millis(200));
        assert_eq!(v.errno, Some(rustix::io::Errno::IO.raw_os_error()));
        assert!(f.check(Op::Fsync, "catalog.redb").errno.is_some());
        // The count ran out: only the delay is left.
        assert_eq!(f.check(Op::Fsync, "catalog.redb").errno, None);
        assert_eq!(f.check(Op::Write, "catalog.redb"), Verdict::default());
        assert_eq!(
            f.command("hits").expect("hits"),
            "5",
            "3 delays, 2 failures"
        );
        f.command("clear").expect("clear");
        assert_eq!(f.check(Op::Fsync, "x"), Verdict::default());
        assert!(f.command("fail sync x EIO").is_err());
        assert!(f.command("fail read x EWHAT").is_err());
    }
}
