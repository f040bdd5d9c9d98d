//! Safeguarded Copy through the real daemon and real clients: scheduled backups of a
//! consistency group are exact points in time (a prefix of the writes, the same for every
//! volume of the group), keep N expires the oldest, nothing writes or removes a backup before
//! its retention, a full safeguarded capacity fails the backup and never the source, a
//! restore undoes a "ransomware" overwrite, and `kill -9` leaves every backup whole.

mod common;

use common::{have, qemu_io, run_ok, Daemon, Env};
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

const TRACK: usize = 64 * 1024;
/// Writes go round-robin over this many tracks.
const SLOTS: usize = 16;

fn pattern(k: usize) -> u8 {
    u8::try_from(k % 251 + 1).expect("below 252")
}

/// What a volume reads after the first `p` writes of the sequence: slot `k % SLOTS` holds
/// `pattern(k)` for the last such `k < p`.
fn image_after(p: usize) -> Vec<u8> {
    let mut img = vec![0u8; SLOTS * TRACK];
    for k in 0..p {
        let s = k % SLOTS;
        img[s * TRACK..(s + 1) * TRACK].fill(pattern(k));
    }
    img
}

/// The prefix of the writes an image shows, if it shows one.
fn prefix_of(img: &[u8], writes: usize) -> Option<usize> {
    (0..=writes)
        .rev()
        .find(|p| image_after(*p)[..] == img[..SLOTS * TRACK])
}

/// Reads a whole export into memory with nbdcopy.
fn read_export(d: &Daemon, env: &Env, export: &str) -> Vec<u8> {
    let file = env.path(&format!("{export}.img"));
    run_ok(Command::new("nbdcopy").arg(d.uri(export)).arg(&file), d);
    std::fs::read(&file).unwrap()
}

fn backups(d: &Daemon) -> Vec<Value> {
    match d.cli_json(&["lssgc"]) {
        Value::Array(v) => v,
        other => panic!("lssgc --json: {other}"),
    }
}

fn setup(d: &Daemon, vols: &[&str], cap: &str) {
    d.cli_ok(&["mkextpool", "--cap", "4GiB", "p"]);
    let mut mk = vec!["mkfbvol", "--cap", "1MiB"];
    mk.extend_from_slice(vols);
    d.cli_ok(&mk);
    let mut sg = vec!["mksafeguardedcap", "--cap", cap, "--extpool", "p"];
    sg.extend_from_slice(vols);
    d.cli_ok(&sg);
}

/// Write `k` of the sequence to every volume, in order, each acknowledged before the next.
fn write_step(d: &Daemon, vols: &[&str], k: usize) {
    let cmd = format!("write -P {} {} {}", pattern(k), (k % SLOTS) * TRACK, TRACK);
    for v in vols {
        qemu_io(d, v, &[&cmd]);
    }
}

/// Recovers every listed backup to a new volume and returns (backup, group, source, prefix).
fn recovered_prefixes(d: &Daemon, env: &Env, writes: usize) -> Vec<(u64, u64, String, usize)> {
    let mut out = Vec::new();
    for b in backups(d) {
        let id = b["id"].as_u64().unwrap();
        let name = format!("r{id}");
        d.cli_ok(&["recoversgc", "--backup", &id.to_string(), "--to", &name]);
        let img = read_export(d, env, &name);
        let p = prefix_of(&img, writes)
            .unwrap_or_else(|| panic!("backup {id} of {} is no prefix of the writes", b["source"]));
        out.push((
            id,
            b["group"].as_u64().unwrap(),
            b["source"].as_str().unwrap().to_owned(),
            p,
        ));
    }
    out
}

/// In a group, `a` was written before `b` at every step: a consistent cut has `a` at most one
/// write ahead of `b`, never behind.
fn check_groups(points: &[(u64, u64, String, usize)]) {
    let mut groups = std::collections::BTreeMap::<u64, Vec<&(u64, u64, String, usize)>>::new();
    for p in points {
        groups.entry(p.1).or_default().push(p);
    }
    for (g, members) in groups {
        let a = members.iter().find(|m| m.2 == "a").map(|m| m.3);
        let b = members.iter().find(|m| m.2 == "b").map(|m| m.3);
        let (Some(a), Some(b)) = (a, b) else {
            panic!("group {g} lacks a volume: {members:?}");
        };
        // Each step writes a's slot then b's (one write per step for both, counted once).
        assert!(
            a == b || a == b + 1,
            "group {g}: a at {a}, b at {b}: not one point in time"
        );
    }
}

#[test]
fn scheduled_group_backups_are_exact_points_in_time_and_keep_n() {
    if !have("qemu-io") || !have("nbdcopy") {
        return;
    }
    let env = Env::new();
    let d = Daemon::start(&env);
    let vols = ["a", "b"];
    setup(&d, &vols, "64MiB");
    d.cli_ok(&[
        "mksgcpolicy",
        "--every",
        "1s",
        "--keep",
        "5",
        "--retain",
        "0s",
        "pol",
        "a",
        "b",
    ]);
    let began = Instant::now();
    let mut k = 0;
    while began.elapsed() < Duration::from_secs(8) {
        write_step(&d, &vols, k);
        k += 1;
    }
    // Let one more pass expire what is beyond keep, then stop the schedule.
    std::thread::sleep(Duration::from_millis(1500));
    let policy = d.cli_json(&["lssgcpolicy", "pol"]);
    d.cli_ok(&["rmsgcpolicy", "pol"]);
    let policy_backups = backups(&d);
    // On schedule: a backup never runs early, so its T0's offset from the last due time
    // (anchor + k × 1 s) is how late it was; well under the interval.
    let anchor = policy[0]["anchor_ms"].as_u64().unwrap();
    for b in &policy_backups {
        let late = (b["taken_ms"].as_u64().unwrap() - anchor) % 1000;
        assert!(late < 800, "backup {} was {late} ms late", b["id"]);
    }
    assert!(policy[0]["taken"].as_u64().unwrap() >= 6, "{policy}");
    for v in vols {
        let n = policy_backups.iter().filter(|b| b["source"] == v).count();
        assert_eq!(n, 5, "keep 5: {v} has {n} backups: {policy_backups:#?}");
    }
    // The prefix as b saw it: writes to a can be one ahead.
    let points = recovered_prefixes(&d, &env, k);
    check_groups(&points);
    // Backups were taken while writes went on: not all at one point.
    let distinct: std::collections::BTreeSet<usize> = points.iter().map(|p| p.3).collect();
    assert!(distinct.len() >= 3, "backups at too few points: {points:?}");
    // Each backup after the first reports the change since the previous one.
    assert!(policy_backups.iter().all(|b| b["policy"] == "pol"));
}

#[test]
fn backups_cannot_be_written_or_removed_before_their_retention() {
    if !have("nbdinfo") {
        return;
    }
    let env = Env::new();
    let d = Daemon::start(&env);
    setup(&d, &["a"], "64MiB");
    let taken = d.cli_json(&["mksgc", "--retain", "1h", "a"]);
    let id = taken[0]["id"].as_u64().unwrap().to_string();
    let hidden = format!(".sgc-{id}");
    // No NBD export, and none listed.
    let out = Command::new("nbdinfo")
        .arg(d.uri(&hidden))
        .output()
        .unwrap();
    assert!(!out.status.success(), "a backup is exported over NBD");
    let list = run_ok(Command::new("nbdinfo").arg("--list").arg(d.uri("")), &d);
    assert!(!list.contains(".sgc-"), "{list}");
    // No API route writes it.
    let curl = |method: &str, path: &str| -> String {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", method])
            .arg("--unix-socket")
            .arg(env.data().join("tzero.sock"))
            .arg(format!("http://localhost{path}"))
            .args(["-H", "content-type: application/json", "-d", "{}"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(curl("PUT", &format!("/v1/sgc/backups/{id}")), "405");
    assert_eq!(curl("POST", &format!("/v1/sgc/backups/{id}")), "405");
    assert_eq!(curl("DELETE", &format!("/v1/volumes/{hidden}")), "409");
    // CLI paths: each refused with a clear error.
    for (args, code) in [
        (vec!["rmsgc", id.as_str()], "immutable until"),
        (vec!["rmfbvol", "--force", "a"], "Safeguarded Copy backup"),
        (vec!["rmextpool", "p"], "safeguarded capacity"),
        (
            vec!["mksafeguardedcap", "--cap", "0", "--extpool", "p", "a"],
            "not shrink",
        ),
        (
            vec!["chsgc", "--retain", "0s", id.as_str()],
            "security token",
        ),
        (
            vec!["rmflash", &format!("a:{hidden}")],
            "Safeguarded Copy backup",
        ),
        (
            vec!["mkflash", &format!("a:{hidden}")],
            "Safeguarded Copy backup",
        ),
    ] {
        let out = d.cli(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was not refused");
        assert!(err.contains(code), "{args:?}: {err}");
    }
    // Every refused attempt is in the audit log.
    let audit = std::fs::read_to_string(env.data().join("audit.log")).unwrap();
    for code in [
        "backup_retained",
        "has_backups",
        "pool_in_use",
        "safeguarded_in_use",
        "security_token_required",
    ] {
        assert!(audit.contains(code), "audit log lacks {code}:\n{audit}");
    }
    // The security token is never written to the log, and with it the retention can shrink.
    let token_file = env.data().join("security-token");
    let token = std::fs::read_to_string(&token_file).unwrap();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&token_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    d.cli_ok(&[
        "chsgc",
        "--retain",
        "0s",
        "--security-token",
        token_file.to_str().unwrap(),
        &id,
    ]);
    let audit = std::fs::read_to_string(env.data().join("audit.log")).unwrap();
    assert!(
        !audit.contains(token.trim()),
        "the security token leaked into the audit log"
    );
    d.cli_ok(&["rmsgc", &id]);
    d.cli_ok(&["rmfbvol", "a"]);
}

#[test]
fn full_capacity_fails_the_backup_and_restore_undoes_ransomware() {
    if !have("qemu-io") {
        return;
    }
    let env = Env::new();
    let d = Daemon::start(&env);
    setup(&d, &["a"], "128KiB");
    qemu_io(&d, "a", &["write -P 0x11 0 1M", "flush"]);
    let first = d.cli_json(&["mksgc", "a"])[0]["id"].as_u64().unwrap();
    // "Ransomware" overwrites the volume: the backup's copies pass the 2 tracks of capacity.
    qemu_io(&d, "a", &["write -P 0xee 0 1M", "flush"]);
    let out = d.cli(&["mksgc", "a"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("safeguarded capacity of \"a\" is full"));
    // The source goes on, and lsfbvol -l shows the capacity used.
    qemu_io(&d, "a", &["write -P 0xef 0 64k", "read -P 0xef 0 64k"]);
    let vols = d.cli_json(&["lsfbvol"]);
    let sg = &vols[0]["safeguarded"];
    assert_eq!(sg["capacity_bytes"], 128 * 1024);
    assert!(sg["used_bytes"].as_u64().unwrap() >= 1024 * 1024, "{sg}");
    let long = d.cli_ok(&["lsfbvol", "-l"]);
    assert!(long.contains("SGCap") && long.contains("in p"), "{long}");
    // The anomaly: a flagged change needs history; here the change shows in lssgc -l.
    let l = d.cli_ok(&["lssgc", "-l", "a"]);
    assert!(l.contains(&first.to_string()), "{l}");
    // diffsgc against now: the whole volume changed.
    let diff: Value = serde_json::from_str(&d.cli_ok(&["diffsgc", &first.to_string()])).unwrap();
    assert_eq!(diff, serde_json::json!([{"offset": 0, "length": 1048576}]));
    // The capacity and the backups are on /metrics, and promtool accepts the page.
    let metrics = Command::new("curl")
        .args(["-s", "--unix-socket"])
        .arg(env.data().join("tzero.sock"))
        .arg("http://localhost/metrics")
        .output()
        .unwrap();
    let page = String::from_utf8_lossy(&metrics.stdout).into_owned();
    for line in [
        "tzero_sgc_capacity_bytes{volume=\"a\"} 131072",
        "tzero_sgc_backups{volume=\"a\"} 1",
        "tzero_sgc_anomaly{volume=\"a\"} 0",
    ] {
        assert!(page.contains(line), "/metrics lacks {line}:\n{page}");
    }
    if have("promtool") {
        let mut check = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        check
            .stdin
            .take()
            .unwrap()
            .write_all(page.as_bytes())
            .unwrap();
        let out = check.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Restore the source to the backup: the overwrite is gone.
    let refused = d.cli(&[
        "recoversgc",
        "--backup",
        &first.to_string(),
        "--restore",
        "a",
    ]);
    assert!(!refused.status.success(), "a restore without --confirm");
    d.cli_ok(&[
        "recoversgc",
        "--backup",
        &first.to_string(),
        "--restore",
        "a",
        "--confirm",
    ]);
    qemu_io(&d, "a", &["read -P 0x11 0 1M"]);
}

#[test]
fn kill9_during_scheduled_backups_leaves_every_backup_whole() {
    if !have("qemu-io") || !have("nbdcopy") {
        return;
    }
    let env = Env::new();
    let mut d = Daemon::start(&env);
    let vols = ["a", "b"];
    setup(&d, &vols, "64MiB");
    d.cli_ok(&[
        "mksgcpolicy",
        "--every",
        "1s",
        "--keep",
        "20",
        "--retain",
        "1h",
        "pol",
        "a",
        "b",
    ]);
    let mut k = 0;
    for round in 0..3u64 {
        let began = Instant::now();
        // A kill at a moment that moves through the second, to land in and out of backups.
        let run_for = Duration::from_millis(1500 + 370 * round);
        while began.elapsed() < run_for {
            write_step(&d, &vols, k);
            k += 1;
        }
        d.kill9();
        d = Daemon::start(&env);
        // A recovery cut by a kill: the volume is whole or absent.
        if round == 1 {
            if let Some(b) = backups(&d).first() {
                let id = b["id"].as_u64().unwrap().to_string();
                let mut child = common::tzero_command()
                    .arg("--data")
                    .arg(env.data())
                    .args(["recoversgc", "--backup", &id, "--to", "cut"])
                    .spawn()
                    .unwrap();
                std::thread::sleep(Duration::from_millis(3));
                d.kill9();
                let _ = child.wait();
                d = Daemon::start(&env);
                let vols = d.cli_json(&["lsfbvol"]);
                if vols.as_array().unwrap().iter().any(|v| v["name"] == "cut") {
                    let img = read_export(&d, &env, "cut");
                    assert!(
                        prefix_of(&img, k).is_some(),
                        "the recovered volume is half there"
                    );
                    d.cli_ok(&["rmflash", &format!(".sgc-{id}:cut")]);
                    d.cli_ok(&["rmfbvol", "cut"]);
                }
            }
        }
    }
    let policy = d.cli_json(&["lssgcpolicy"]);
    assert!(policy[0]["taken"].as_u64().unwrap() >= 1, "{policy}");
    d.cli_ok(&["rmsgcpolicy", "pol"]);
    let points = recovered_prefixes(&d, &env, k);
    assert!(points.len() >= 4, "{points:?}");
    check_groups(&points);
}

#[test]
fn backups_missed_while_the_daemon_was_down_are_reported_not_run_in_a_burst() {
    let env = Env::new();
    let mut d = Daemon::start(&env);
    setup(&d, &["a"], "64MiB");
    d.cli_ok(&[
        "mksgcpolicy",
        "--every",
        "1s",
        "--keep",
        "100",
        "--retain",
        "0s",
        "pol",
        "a",
    ]);
    std::thread::sleep(Duration::from_millis(2500));
    d.kill9();
    let before = d.cli(&["lssgc"]);
    assert!(!before.status.success(), "the daemon is down");
    std::thread::sleep(Duration::from_secs(4));
    d = Daemon::start(&env);
    let first = backups(&d).len();
    std::thread::sleep(Duration::from_millis(1500));
    let policy = d.cli_json(&["lssgcpolicy", "pol"]);
    let after = backups(&d).len();
    // About four due times passed while it was down: counted as missed, none taken late...
    let missed = policy[0]["missed"].as_u64().unwrap();
    assert!(missed >= 3, "{policy}");
    // ...and no burst: one backup a second, from the restart on.
    assert!(
        after - first <= 2,
        "{first} then {after} backups: a burst after the restart"
    );
    assert!(after > first, "the schedule did not resume: {policy}");
}
