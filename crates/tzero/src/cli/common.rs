//! What every verb module shares: the `SRC:TGT` pair and the value parsers
//! clap runs on arguments, and [`Batch`], which runs a multi-item verb item
//! by item so that one failed item is reported and fails the command
//! (exit 1) without stopping the others.

use std::io::Write;

use crate::client::{parse_api_url, ClientError};
use crate::units::parse_size;

/// `println!` that fails (instead of panicking) when stdout is closed, e.g.
/// `tzero lsfbvol | head -1`.
macro_rules! outln {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*)?
    };
}
pub(crate) use outln;

/// A `SOURCE:TARGET` volume pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub source: String,
    pub target: String,
}

impl std::fmt::Display for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.source, self.target)
    }
}

/// Parses `SRC:TGT`: exactly one colon, both names non-empty. Names are
/// otherwise checked by the engine, which owns the naming rule.
pub fn pair(s: &str) -> Result<Pair, String> {
    let err = || format!("expected SOURCE:TARGET, got {s:?}");
    let (source, target) = s.split_once(':').ok_or_else(err)?;
    if source.is_empty() || target.is_empty() || target.contains(':') {
        return Err(err());
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err());
    }
    Ok(Pair {
        source: source.to_owned(),
        target: target.to_owned(),
    })
}

/// clap's value parser for sizes and rates: a bad size is a usage error.
pub(crate) fn size(s: &str) -> Result<u64, String> {
    parse_size(s).map_err(|e| e.to_string())
}

/// clap's value parser for `--api`: `host:port` for plain HTTP, kept as
/// `https://host:port` for TLS.
pub(crate) fn api_addr(s: &str) -> Result<String, String> {
    match parse_api_url(s).map_err(|e| e.to_string())? {
        (addr, false) => Ok(addr),
        (addr, true) => Ok(format!("https://{addr}")),
    }
}

/// Prints one failed operation.
pub(crate) fn report(e: &anyhow::Error) {
    eprintln!("tzero: error: {e:#}");
}

/// Runs each item of a multi-item verb, printing each failure as it
/// happens, and fails the command if any item failed.
pub(crate) struct Batch {
    failed: bool,
}

impl Batch {
    pub(crate) fn new() -> Self {
        Batch { failed: false }
    }

    pub(crate) fn record<T>(&mut self, r: Result<T, ClientError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                report(&anyhow::Error::new(e));
                self.failed = true;
                None
            }
        }
    }

    /// Runs `call` for each item, in order, recording failures; for people
    /// (not `--json`) prints `say`'s line, if any, for each item as it
    /// succeeds. Returns the results of the items that succeeded.
    pub(crate) async fn each<I, T>(
        &mut self,
        items: &[I],
        json: bool,
        mut call: impl AsyncFnMut(&I) -> Result<T, ClientError>,
        say: impl Fn(&I, &T) -> Option<String>,
    ) -> anyhow::Result<Vec<T>> {
        let mut done = Vec::new();
        for item in items {
            if let Some(v) = self.record(call(item).await) {
                if let Some(line) = say(item, &v).filter(|_| !json) {
                    outln!("{line}");
                }
                done.push(v);
            }
        }
        Ok(done)
    }

    pub(crate) fn exit(&self) -> std::process::ExitCode {
        if self.failed {
            std::process::ExitCode::from(1)
        } else {
            std::process::ExitCode::SUCCESS
        }
    }
}
