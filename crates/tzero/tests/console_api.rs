//! The console's side of the daemon, over real TCP against the real binary: the bitmap summary
//! route (`GET /v1/flash/{source}/{target}/bitmap`) checked against copy-on-write done by
//! qemu-io, its refusals and clamps, and the static console assets served without the token
//! while the API still demands it.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{qemu_io, Daemon, Env};
use hyper::Method;
use serde_json::Value;
use tzero::client::{Client, Endpoint, RawResponse};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn json(r: &RawResponse) -> Value {
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&r.body)))
}

/// `(status, body)` of a GET with the token.
fn get(d: &Daemon, path: &str) -> (u16, Value) {
    let c = Client::new(Endpoint::Tcp {
        addr: format!("127.0.0.1:{}", d.api_port),
        token: Some(d.token()),
    });
    let r = rt()
        .block_on(c.raw(Method::GET, path, None))
        .expect("request");
    (r.status, json(&r))
}

fn buckets(v: &Value) -> Vec<u64> {
    v["buckets"]
        .as_array()
        .unwrap_or_else(|| panic!("no buckets: {v}"))
        .iter()
        .map(|b| b.as_u64().expect("a count"))
        .collect()
}

/// One plain HTTP/1.1 GET without any token; returns the status line, the headers (lower-case)
/// and the body.
fn plain_get(d: &Daemon, path: &str) -> (String, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", d.api_port)).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut all = String::new();
    s.read_to_string(&mut all).expect("read");
    let (head, body) = all.split_once("\r\n\r\n").expect("a header block");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_owned(), headers.to_lowercase(), body.to_owned())
}

#[test]
fn bitmap_route_follows_copy_on_write() {
    let env = Env::new();
    let d = Daemon::start(&env);
    // 64 MiB at 64 KiB: 1024 tracks.
    d.cli_ok(&["mkfbvol", "--cap", "64MiB", "src", "tgt"]);
    d.cli_ok(&["mkflash", "--nocp", "src:tgt"]);

    let (status, v) = get(&d, "/v1/flash/src/tgt/bitmap?buckets=64");
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["total_tracks"].as_u64(), v["track_size"].as_u64()),
        (Some(1024), Some(65536))
    );
    assert_eq!(buckets(&v), vec![0; 64], "nothing copied yet");

    // Host writes to the source copy T0 to the target first: tracks 0..16 and 512.
    qemu_io(&d, "src", &["write -P 0xaa 0 1M", "write -P 0xbb 32M 64k"]);
    let (_, v) = get(&d, "/v1/flash/src/tgt/bitmap?buckets=64");
    let mut want = vec![0u64; 64];
    want[0] = 16;
    want[32] = 1;
    assert_eq!(buckets(&v), want, "{v}");
    assert_eq!(v["copied_tracks"], 17);
    let rel = &d.flashes()[0];
    assert_eq!(rel["out_of_sync_tracks"], 1024 - 17, "{rel}");

    // Uneven buckets: 1024 tracks in 3 are 341, 341, 342 tracks; track 512 is in the second.
    let (_, v) = get(&d, "/v1/flash/src/tgt/bitmap?buckets=3");
    assert_eq!(buckets(&v), vec![16, 1, 0]);

    // No buckets named: 1024, here one per track. More buckets than tracks: one per track.
    let (_, v) = get(&d, "/v1/flash/src/tgt/bitmap");
    let per_track = buckets(&v);
    assert_eq!(per_track.len(), 1024);
    assert!(per_track[..16].iter().all(|&b| b == 1) && per_track[512] == 1);
    assert_eq!(per_track.iter().sum::<u64>(), 17);
    let (_, v) = get(&d, "/v1/flash/src/tgt/bitmap?buckets=1000000");
    assert_eq!(buckets(&v), per_track);

    // Bad buckets: 400 `invalid_query`, whatever the spelling.
    for q in [
        "buckets=0",
        "buckets=abc",
        "buckets=-1",
        "buckets=",
        "buckets=1.5",
        "bogus=1",
    ] {
        let (status, v) = get(&d, &format!("/v1/flash/src/tgt/bitmap?{q}"));
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (400, Some("invalid_query")),
            "{q}: {v}"
        );
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    let (status, v) = get(&d, "/v1/flash/src/nosuch/bitmap?buckets=4");
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("volume_not_found"))
    );
    d.cli_ok(&["mkfbvol", "--cap", "64MiB", "lone"]);
    let (status, v) = get(&d, "/v1/flash/src/lone/bitmap?buckets=4");
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("relationship_not_found"))
    );

    // The bearer token is still required for the route.
    let (status, _, body) = plain_get(&d, "/v1/flash/src/tgt/bitmap?buckets=4");
    assert!(status.contains(" 401 "), "{status}");
    assert!(body.contains("unauthorized"), "{body}");
}

#[test]
fn bitmap_buckets_are_clamped() {
    let env = Env::new();
    let d = Daemon::start(&env);
    // 512 MiB at 4 KiB: 131072 tracks, more than the cap of 65536 buckets.
    d.cli_ok(&[
        "mkfbvol",
        "--cap",
        "512MiB",
        "--track-size",
        "4KiB",
        "big",
        "copy",
    ]);
    d.cli_ok(&["mkflash", "--nocp", "big:copy"]);
    qemu_io(&d, "big", &["write -P 0x11 0 8k"]);
    let (status, v) = get(&d, "/v1/flash/big/copy/bitmap?buckets=100000");
    assert_eq!(status, 200, "{v}");
    let b = buckets(&v);
    assert_eq!(b.len(), 65536, "clamped to the cap");
    assert_eq!(v["total_tracks"], 131_072);
    assert_eq!((b[0], b[1], v["copied_tracks"].as_u64()), (2, 0, Some(2)));
}

#[test]
fn console_assets_need_no_token() {
    let env = Env::new();
    let d = Daemon::start(&env);
    let (status, headers, body) = plain_get(&d, "/");
    assert!(status.contains(" 200 "), "{status}");
    assert!(headers.contains("content-type: text/html"), "{headers}");
    assert!(
        headers.contains("content-security-policy: default-src 'none'"),
        "{headers}"
    );
    assert!(
        body.contains("/console/console.js") && body.contains("<canvas"),
        "{body}"
    );
    for (path, kind, needle) in [
        ("/console/console.js", "text/javascript", "/bitmap?buckets="),
        ("/console/console.css", "text/css", "--copied"),
    ] {
        let (status, headers, body) = plain_get(&d, path);
        assert!(status.contains(" 200 "), "{path}: {status}");
        assert!(
            headers.contains(&format!("content-type: {kind}")),
            "{path}: {headers}"
        );
        assert!(body.contains(needle), "{path}");
    }
    // Only the assets: the API and unknown paths still want the token.
    for path in ["/v1/volumes", "/console/other.js"] {
        let (status, _, body) = plain_get(&d, path);
        assert!(status.contains(" 401 "), "{path}: {status} {body}");
    }
    let (status, v) = get(&d, "/v1/openapi.json");
    assert_eq!(status, 200);
    let op = &v["paths"]["/v1/flash/{source}/{target}/bitmap"]["get"];
    assert_eq!(op["operationId"], "flashBitmap", "{op}");
    assert!(op["responses"]["400"]["description"]
        .as_str()
        .is_some_and(|d| d.contains("`invalid_query`")));
    assert_eq!(
        op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/FlashBitmap"
    );
}
