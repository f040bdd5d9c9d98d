//! Parsing tests of the whole command line: flags, values and usage errors
//! of every verb, checked without a daemon.

use std::path::PathBuf;

use clap::Parser;

use super::volumes::Sam;
use super::*;
use crate::api_types::DEFAULT_FREEZE_TIMEOUT_SECS;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("tzero").chain(args.iter().copied()))
}

/// Parses `args`, which must succeed as `$verb`, and yields its arguments.
macro_rules! parsed {
    ($verb:path, $args:expr) => {
        match parse($args)
            .map_err(|e| e.to_string())
            .expect("parses")
            .command
        {
            $verb(a) => a,
            other => panic!("parsed as {other:?}"),
        }
    };
}

#[test]
fn verify_cli() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
}

#[test]
fn pairs() {
    assert_eq!(
        pair("a:b"),
        Ok(Pair {
            source: "a".into(),
            target: "b".into()
        })
    );
    for bad in ["ab", ":b", "a:", "a:b:c", "a :b", ""] {
        assert!(pair(bad).is_err(), "{bad}");
    }
}

#[test]
fn global_flags_before_or_after_verb() {
    let c = parse(&["--json", "--data", "/d", "lsfbvol"]).map_err(|e| e.to_string());
    let c = c.expect("parses");
    assert!(c.global.json);
    assert_eq!(c.global.data, PathBuf::from("/d"));
    let c = parse(&["lsflash", "-l", "--json", "--api", "http://127.0.0.1:1"]);
    let c = c.map_err(|e| e.to_string()).expect("parses");
    assert!(c.global.json);
    assert_eq!(c.global.api.as_deref(), Some("127.0.0.1:1"));
}

#[test]
fn sizes_and_rates() {
    let a = parsed!(
        Command::Mkfbvol,
        &["mkfbvol", "--cap", "10GiB", "--track-size", "64k", "a", "b"]
    );
    assert_eq!(a.cap, 10 << 30);
    assert_eq!(a.track_size, Some(64 << 10));
    assert_eq!(a.names, ["a", "b"]);
    let a = parsed!(
        Command::Mkflash,
        &["mkflash", "--nocp", "--rate", "64MiB", "a:b"]
    );
    assert!(a.nocp);
    assert_eq!(a.rate, 64 << 20);
}

#[test]
fn usage_errors() {
    for args in [
        &["mkfbvol", "--cap", "10 GB", "a"][..],
        &["mkfbvol", "--cap", "10GiB"],
        &["mkflash", "a-b"],
        &["rmflash", "a:"],
        &["lsfbvol", "--api", "ftp://x:1"],
        &["chflash", "a:b"],
        &["resyncflash", "a:b"],
        &["resyncflash", "--record", "a:b"],
        &["reverseflash"],
        &["rmflash", "--cp"],
    ] {
        assert!(parse(args).is_err(), "{args:?}");
    }
    // https:// is kept as such: the client then speaks TLS.
    let c = parse(&["lsfbvol", "--api", "HTTPS://x:1/"]).map_err(|e| e.to_string());
    assert_eq!(
        c.expect("parses").global.api.as_deref(),
        Some("https://x:1")
    );
    // Checked after parsing: --record needs --persist.
    let c = parse(&["mkflash", "--record", "a:b"]).map_err(|e| e.to_string());
    assert!(c.expect("parses").check().is_err());
    let c = parse(&["mkflash", "--record", "--persist", "a:b"]);
    let c = c.map_err(|e| e.to_string()).expect("parses");
    assert!(c.check().is_ok());
}

#[test]
fn ds8000_verbs_parse() {
    let a = parsed!(
        Command::Mkflash,
        &[
            "mkflash",
            "--freeze",
            "--freeze-timeout",
            "5",
            "--tgtinhibit",
            "--seqnum",
            "9",
            "a:b",
            "c:d",
        ]
    );
    assert!(a.freeze && a.tgtinhibit);
    assert_eq!((a.freeze_timeout, a.seqnum, a.pairs.len()), (5, 9, 2));
    let a = parsed!(Command::Mkflash, &["mkflash", "a:b"]);
    assert!(!a.freeze && !a.tgtinhibit);
    assert_eq!(a.freeze_timeout, DEFAULT_FREEZE_TIMEOUT_SECS);
    // A volume in extent pool p with storage allocation method `sam`.
    let pooled = |sam| {
        [
            "mkfbvol",
            "--cap",
            "1GiB",
            "--extpool",
            "p",
            "--sam",
            sam,
            "v",
        ]
    };
    let a = parsed!(Command::Mkfbvol, &pooled("ese"));
    assert_eq!(a.extpool.as_deref(), Some("p"));
    assert_eq!(a.sam, Some(Sam::Ese));
    for ok in [
        &["commitflash", "--seqnum", "3"][..],
        &["revertflash", "a:b", "c:d"],
        &["setflashrevertible", "a:b"],
        &["freezeflash", "--timeout", "3", "a"],
        &["unfreezeflash", "a", "b"],
        &["rmflash", "--resettgtinhibit", "a:b"],
        &["mkextpool", "--cap", "1GiB", "p"],
        &["lsextpool"],
        &["rmextpool", "p"],
        &["lsflash", "-l", "--seqnum", "4"],
    ] {
        assert!(parse(ok).is_ok(), "{ok:?}");
    }
    for bad in [
        &["mkfbvol", "--cap", "1GiB", "--sam", "ese", "v"][..],
        &pooled("thin"),
        &["mkflash", "--freeze-timeout", "3", "a:b"],
        &["commitflash"],
        &["revertflash", "--seqnum", "1", "a:b"],
        &["unfreezeflash"],
        &["rmflash", "--cp", "--resettgtinhibit", "a:b"],
        &["mkextpool", "p"],
        &["setflashrevertible"],
    ] {
        assert!(parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn new_verbs_parse() {
    let a = parsed!(
        Command::Reverseflash,
        &["reverseflash", "--fast", "--wait", "a:b", "c:d"]
    );
    assert!(a.fast && a.wait);
    assert_eq!(a.pairs.len(), 2);
    let a = parsed!(
        Command::Resyncflash,
        &["resyncflash", "--record", "--persist", "a:b"]
    );
    assert!(a.record && a.persist && !a.wait);
    let a = parsed!(Command::Rmflash, &["rmflash", "--cp", "a:b"]);
    assert!(a.cp);
}
