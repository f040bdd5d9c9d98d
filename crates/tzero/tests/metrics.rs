//! `GET /metrics` against a real daemon: host I/O through qemu-io, a COPY and a NOCOPY
//! relationship with copy-on-write, freeze and write inhibit, API requests; scraped over the
//! unix socket and over TCP (token required), compared with what was done and with the JSON
//! API, and checked by `promtool check metrics` (the Prometheus project's own parser and
//! linter).

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{have, qemu_io, Daemon, Env};

const TRACK: u64 = 64 * 1024;
const MIB: u64 = 1 << 20;

/// A plain HTTP/1.0 exchange (so the answer is not chunked): status, headers, body.
struct Answer {
    status: u16,
    headers: String,
    body: String,
}

fn exchange(
    mut stream: impl Read + Write,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Answer {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\n{auth}\r\n"
    )
    .expect("send");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    Answer {
        status,
        headers: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

fn over_unix(d: &Daemon, method: &str, path: &str) -> Answer {
    let s = UnixStream::connect(d.data.join("tzero.sock")).expect("connect socket");
    exchange(s, method, path, None)
}

fn over_tcp(d: &Daemon, path: &str, token: Option<&str>) -> Answer {
    let s = TcpStream::connect(("127.0.0.1", d.api_port)).expect("connect API");
    exchange(s, "GET", path, token)
}

/// Scrapes over the unix socket; the samples by `name{labels}`.
fn scrape(d: &Daemon) -> (String, BTreeMap<String, f64>) {
    let a = over_unix(d, "GET", "/metrics");
    assert_eq!(a.status, 200, "{}", a.body);
    let samples = parse(&a.body);
    (a.body, samples)
}

fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (key, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad sample {l:?}"));
            let value = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value in {l:?}")),
            };
            (key.to_owned(), value)
        })
        .collect()
}

/// The value of one sample, which must be there.
fn get(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    *m.get(key).unwrap_or_else(|| {
        let near: Vec<&String> = m
            .keys()
            .filter(|k| k.starts_with(key.split('{').next().unwrap_or(key)))
            .collect();
        panic!("no sample {key}; samples of that name: {near:?}")
    })
}

fn rel_labels(src: &str, tgt: &str) -> String {
    format!("source=\"{src}\",target=\"{tgt}\",seqnum=\"0\"")
}

/// Runs `promtool check metrics` on `text`; panics with its findings unless it exits 0.
fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}\n--- scraped text:\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls a scrape until `ok` holds (the destager and the NBD server act asynchronously).
fn wait_for(
    d: &Daemon,
    what: &str,
    ok: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (text, m) = scrape(d);
        if ok(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not seen in 30 s:\n{text}\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn flash_json(d: &Daemon, src: &str, tgt: &str) -> serde_json::Value {
    d.flashes()
        .into_iter()
        .find(|f| f["source"] == src && f["target"] == tgt)
        .unwrap_or_else(|| panic!("no relationship {src}:{tgt}"))
}

#[test]
fn metrics_reflect_io_relationships_and_api() {
    if !have("qemu-io") || !have("promtool") {
        return;
    }
    let env = Env::new();
    let d = Daemon::start(&env);
    d.cli_ok(&["mkfbvol", "--cap", "16MiB", "src", "tc", "tn", "ti"]);

    // Host I/O before any relationship: 1 MiB written, read back, flushed.
    qemu_io(
        &d,
        "src",
        &["write -P 0xaa 0 1M", "read -P 0xaa 0 1M", "flush"],
    );

    // A NOCOPY and a slow COPY (one 64 KiB track a second: it stays "copying" while the test
    // looks), then 1 MiB more on the source: 16 tracks whose T0 must be copied first.
    d.cli_ok(&["mkflash", "--nocp", "src:tn"]);
    d.cli_ok(&["mkflash", "--persist", "--rate", "65536", "src:tc"]);
    d.cli_ok(&["mkflash", "--nocp", "--tgtinhibit", "src:ti"]);
    qemu_io(&d, "src", &["write -P 0xbb 4M 1M", "flush"]);
    d.cli_ok(&["freezeflash", "src"]);

    let cow_total = |m: &BTreeMap<String, f64>| -> f64 {
        ["tn", "tc", "ti"]
            .iter()
            .map(|t| {
                m.get(&format!(
                    "tzero_flash_cow_tracks_total{{{}}}",
                    rel_labels("src", t)
                ))
                .copied()
                .unwrap_or(0.0)
            })
            .sum()
    };
    let m = wait_for(
        &d,
        "copy-on-write of 16 tracks and no open NBD connection",
        |m| cow_total(m) >= 16.0 && m.get("tzero_nbd_connections") == Some(&0.0),
    );

    // Host I/O of src: exactly what qemu-io moved; every op in the latency histogram.
    let vol = |v: &str| format!("volume=\"{v}\"");
    assert_eq!(
        get(
            &m,
            &format!("tzero_volume_write_bytes_total{{{}}}", vol("src"))
        ),
        (2 * MIB) as f64
    );
    assert!(
        get(
            &m,
            &format!("tzero_volume_write_ops_total{{{}}}", vol("src"))
        ) >= 2.0
    );
    assert!(
        get(
            &m,
            &format!("tzero_volume_read_bytes_total{{{}}}", vol("src"))
        ) >= MIB as f64
    );
    assert!(
        get(
            &m,
            &format!("tzero_volume_read_ops_total{{{}}}", vol("src"))
        ) >= 1.0
    );
    assert!(
        get(
            &m,
            &format!("tzero_volume_flush_ops_total{{{}}}", vol("src"))
        ) >= 2.0
    );
    assert_eq!(
        get(
            &m,
            &format!(
                "tzero_volume_io_latency_seconds_count{{{},op=\"write\"}}",
                vol("src")
            )
        ),
        get(
            &m,
            &format!("tzero_volume_write_ops_total{{{}}}", vol("src"))
        )
    );
    assert_eq!(
        get(
            &m,
            &format!(
                "tzero_volume_io_latency_seconds_bucket{{{},op=\"write\",le=\"+Inf\"}}",
                vol("src")
            )
        ),
        get(
            &m,
            &format!(
                "tzero_volume_io_latency_seconds_count{{{},op=\"write\"}}",
                vol("src")
            )
        )
    );
    assert_eq!(
        get(
            &m,
            &format!("tzero_volume_write_ops_total{{{}}}", vol("tc"))
        ),
        0.0
    );
    assert_eq!(
        get(
            &m,
            &format!(
                "tzero_volume_io_errors_total{{{},op=\"write\"}}",
                vol("src")
            )
        ),
        0.0
    );
    assert_eq!(
        get(&m, &format!("tzero_volume_frozen{{{}}}", vol("src"))),
        1.0
    );
    assert_eq!(
        get(&m, &format!("tzero_volume_frozen{{{}}}", vol("tc"))),
        0.0
    );
    assert_eq!(
        get(
            &m,
            &format!("tzero_volume_write_inhibited{{{}}}", vol("ti"))
        ),
        1.0
    );
    assert_eq!(
        get(
            &m,
            &format!("tzero_volume_write_inhibited{{{}}}", vol("tn"))
        ),
        0.0
    );
    assert!(m.contains_key(&format!("tzero_volume_cache_bytes{{{}}}", vol("src"))));

    // Relationships: state gauges, tracks, rate, copy-on-write (one copy serves all targets
    // still reading a track from the source, so the 16 tracks are counted once in all).
    let tc = rel_labels("src", "tc");
    let tn = rel_labels("src", "tn");
    for (labels, state) in [(&tc, "copying"), (&tn, "no_copy")] {
        for s in ["copying", "no_copy", "copied", "failed"] {
            let want = if s == state { 1.0 } else { 0.0 };
            assert_eq!(
                get(&m, &format!("tzero_flash_state{{{labels},state=\"{s}\"}}")),
                want,
                "{labels} {s}"
            );
        }
    }
    assert_eq!(
        get(&m, &format!("tzero_flash_failed{{{tc},reason=\"\"}}")),
        0.0
    );
    assert_eq!(get(&m, &format!("tzero_flash_tracks{{{tc}}}")), 256.0);
    assert_eq!(
        get(
            &m,
            &format!("tzero_flash_copy_rate_bytes_per_second{{{tc}}}")
        ),
        65536.0
    );
    assert_eq!(
        get(
            &m,
            &format!("tzero_flash_copy_rate_bytes_per_second{{{tn}}}")
        ),
        0.0
    );
    assert!(get(&m, &format!("tzero_flash_out_of_sync_tracks{{{tc}}}")) > 0.0);
    assert_eq!(cow_total(&m), 16.0, "each overwritten track copied once");
    for t in ["tn", "tc", "ti"] {
        let l = rel_labels("src", t);
        let (tracks, bytes) = (
            get(&m, &format!("tzero_flash_cow_tracks_total{{{l}}}")),
            get(&m, &format!("tzero_flash_cow_bytes_total{{{l}}}")),
        );
        assert_eq!(bytes, tracks * TRACK as f64, "{t}");
        let json = flash_json(&d, "src", t);
        assert_eq!(json["cow_tracks"].as_f64(), Some(tracks), "{json}");
        assert_eq!(json["cow_bytes"].as_f64(), Some(bytes), "{json}");
    }

    // The daemon: cache, destage, catalog, NBD.
    assert_eq!(get(&m, "tzero_cache_limit_bytes"), (256 * MIB) as f64);
    assert!(get(&m, "tzero_destage_batches_total") >= 1.0);
    assert_eq!(
        get(&m, "tzero_destage_batches_total"),
        get(&m, "tzero_destage_batch_duration_seconds_count")
    );
    assert!(
        get(&m, "tzero_catalog_commits_total") >= 8.0,
        "4 volumes, 3 relationships, bits"
    );
    assert_eq!(
        get(&m, "tzero_catalog_commits_total"),
        get(&m, "tzero_catalog_commit_duration_seconds_count")
    );
    assert!(get(&m, "tzero_nbd_connections_accepted_total") >= 2.0);

    // API requests by route template, never by raw path.
    assert_eq!(over_unix(&d, "GET", "/v1/volumes/src").status, 200);
    assert_eq!(over_unix(&d, "GET", "/v1/volumes/nope").status, 404);
    assert_eq!(over_unix(&d, "GET", "/v1/no/such/route").status, 404);
    let (text, m) = scrape(&d);
    let api = |route: &str, method: &str, status: u16| {
        let key = format!(
            "tzero_api_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}}"
        );
        m.get(&key).copied().unwrap_or(0.0)
    };
    assert!(api("/v1/volumes/{name}", "GET", 200) >= 1.0, "{text}");
    assert!(api("/v1/volumes/{name}", "GET", 404) >= 1.0, "{text}");
    assert!(api("unmatched", "GET", 404) >= 1.0, "{text}");
    let established: f64 = [
        ("/v1/flash", 201),
        ("/v1/flash/group", 200),
        ("/v1/flash/group", 201),
    ]
    .iter()
    .map(|(r, s)| api(r, "POST", *s))
    .sum();
    assert!(established >= 3.0, "{text}");
    assert!(api("/metrics", "GET", 200) >= 1.0, "{text}");
    assert!(
        !text.contains("/v1/volumes/src") && !text.contains("/v1/no/such"),
        "{text}"
    );
    promtool_check(&text);

    // TCP: the token is required, as for the rest of the API.
    let token = d.token();
    for bad in [None, Some("0123"), Some(&*"f".repeat(64))] {
        let a = over_tcp(&d, "/metrics", bad);
        assert_eq!(a.status, 401, "{bad:?}");
        assert!(a.body.contains("\"unauthorized\""), "{}", a.body);
    }
    let a = over_tcp(&d, "/metrics", Some(&token));
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        a.headers
            .contains("content-type: text/plain; version=0.0.4"),
        "{}",
        a.headers
    );
    assert!(
        a.body.contains("# TYPE tzero_flash_state gauge"),
        "{}",
        a.body
    );
    promtool_check(&a.body);

    // The copy completes at full speed: copied state, every byte accounted for.
    d.cli_ok(&["unfreezeflash", "src"]);
    d.cli_ok(&["setflashrate", "--rate", "0", "src:tc"]);
    d.wait_copied("src", "tc", Duration::from_secs(60));
    let (_, m) = scrape(&d);
    assert_eq!(
        get(&m, &format!("tzero_flash_state{{{tc},state=\"copied\"}}")),
        1.0
    );
    assert_eq!(
        get(&m, &format!("tzero_flash_state{{{tc},state=\"copying\"}}")),
        0.0
    );
    assert_eq!(
        get(&m, &format!("tzero_flash_out_of_sync_tracks{{{tc}}}")),
        0.0
    );
    let copied = get(&m, &format!("tzero_flash_copied_bytes_total{{{tc}}}"));
    let cow_tc = get(&m, &format!("tzero_flash_cow_bytes_total{{{tc}}}"));
    // The tracks not copied by copy-on-write were copied in the background (holes counted
    // as their length, so the sum is the volume's size).
    assert_eq!(
        copied + cow_tc,
        (16 * MIB) as f64,
        "copied {copied} + cow {cow_tc}"
    );
    assert_eq!(
        flash_json(&d, "src", "tc")["copied_bytes"].as_f64(),
        Some(copied)
    );
    assert_eq!(
        get(&m, &format!("tzero_volume_frozen{{{}}}", vol("src"))),
        0.0
    );

    // Deleted volumes and relationships leave the output.
    d.cli_ok(&["rmflash", "src:tn"]);
    d.cli_ok(&["rmfbvol", "tn"]);
    let (text, _) = scrape(&d);
    assert!(!text.contains("\"tn\""), "{text}");
    assert!(text.contains("volume=\"tc\""), "{text}");
    promtool_check(&text);
}
