//! The HTTP API over TCP against a real daemon: bearer-token auth, the JSON
//! error shape for bad bodies and unknown volumes, and the OpenAPI document.

mod common;

use common::{Daemon, Env};
use serde_json::Value;
use tzero::client::{Client, Endpoint, RawResponse};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn tcp(d: &Daemon, token: Option<&str>) -> Client {
    Client::new(Endpoint::Tcp {
        addr: format!("127.0.0.1:{}", d.api_port),
        token: token.map(str::to_owned),
    })
}

fn json(r: &RawResponse) -> Value {
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&r.body)))
}

/// Requires the error shape and returns the code.
fn error_code(r: &RawResponse) -> String {
    let v = json(r);
    assert!(v["error"]["message"].is_string(), "{v}");
    v["error"]["code"].as_str().expect("code").to_owned()
}

#[test]
fn api_over_tcp() {
    let env = Env::new();
    let d = Daemon::start(&env);
    let token = d.token();
    assert_eq!(token.len(), 64);
    let rt = rt();
    use hyper::Method;

    // Auth: missing and wrong tokens are 401 with the JSON error shape.
    for client in [
        tcp(&d, None),
        tcp(&d, Some("0123")),
        tcp(&d, Some(&"f".repeat(64))),
    ] {
        let r = rt
            .block_on(client.raw(Method::GET, "/v1/volumes", None))
            .expect("request");
        assert_eq!(r.status, 401);
        assert_eq!(error_code(&r), "unauthorized");
        let r = rt
            .block_on(client.raw(
                Method::POST,
                "/v1/volumes",
                Some(br#"{"name":"x","capacity_bytes":1048576}"#.to_vec()),
            ))
            .expect("request");
        assert_eq!(r.status, 401);
    }

    let c = tcp(&d, Some(&token));
    // Bad bodies: 4xx with the JSON error shape.
    for (body, status) in [
        (&b"{not json"[..], 400),
        (br#"{"name":"x"}"#, 422),
        (br#"{"name":"x","capacity_bytes":-1}"#, 422),
        (br#"{"name":"x","capacity_bytes":1048576,"bogus":1}"#, 422),
    ] {
        let r = rt
            .block_on(c.raw(Method::POST, "/v1/volumes", Some(body.to_vec())))
            .expect("request");
        assert_eq!(r.status, status, "{}", String::from_utf8_lossy(body));
        error_code(&r);
    }
    // Whole numbers written as doubles are whole numbers (JSON Schema says so).
    let r = rt
        .block_on(c.raw(
            Method::POST,
            "/v1/volumes",
            Some(br#"{"name":"dbl","capacity_bytes":1048576.0,"track_size":65536.0}"#.to_vec()),
        ))
        .expect("request");
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    // A body over 1 MiB is refused before it is read, with its own code; the daemon goes on.
    let mut huge = br#"{"name":"big","capacity_bytes":1048576,"pool":""#.to_vec();
    huge.extend(std::iter::repeat_n(b'x', 2 << 20));
    huge.extend(br#""}"#);
    let r = rt
        .block_on(c.raw(Method::POST, "/v1/volumes", Some(huge)))
        .expect("request");
    assert_eq!(r.status, 413);
    assert_eq!(error_code(&r), "body_too_large");
    let r = rt
        .block_on(c.raw(Method::DELETE, "/v1/volumes/dbl", None))
        .expect("request");
    assert!(r.status < 300, "{}", r.status);
    let r = rt
        .block_on(c.raw(Method::PUT, "/v1/flash/a/b/rate", Some(b"[]".to_vec())))
        .expect("request");
    assert!((400..500).contains(&r.status));
    error_code(&r);
    let r = rt
        .block_on(c.raw(Method::DELETE, "/v1/volumes/x?force=maybe", None))
        .expect("request");
    assert_eq!(r.status, 400);
    assert_eq!(error_code(&r), "invalid_query");

    // Unknown things are 404s with stable codes.
    let r = rt
        .block_on(c.raw(Method::GET, "/v1/volumes/nosuch", None))
        .expect("request");
    assert_eq!(r.status, 404);
    assert_eq!(error_code(&r), "volume_not_found");
    let r = rt
        .block_on(c.raw(Method::GET, "/v1/flash/a/b", None))
        .expect("request");
    assert_eq!(r.status, 404);
    let code = error_code(&r);
    assert!(
        code == "volume_not_found" || code == "relationship_not_found",
        "{code}"
    );
    // An explicit track size of 0 is refused (schemathesis found it taken as
    // the default); an absent one is the default.
    let r = rt
        .block_on(c.raw(
            Method::POST,
            "/v1/volumes",
            Some(br#"{"name":"t0","capacity_bytes":1048576,"track_size":0}"#.to_vec()),
        ))
        .expect("request");
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (400, "invalid_track_size")
    );
    let r = rt
        .block_on(c.raw(Method::GET, "/v1/volumes/t0", None))
        .expect("request");
    assert_eq!(r.status, 404, "the refused volume was not made");
    let r = rt
        .block_on(c.raw(Method::GET, "/v2/whatever", None))
        .expect("request");
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (404, "route_not_found")
    );

    // Success with the token, through the typed client.
    let v = rt
        .block_on(c.create_volume(&tzero::api_types::CreateVolume {
            name: "vol".into(),
            capacity_bytes: 16 << 20,
            track_size: None,
            pool: None,
            space_efficient: false,
        }))
        .expect("create");
    assert_eq!(v.track_size, 65536);
    let dup = rt.block_on(c.create_volume(&tzero::api_types::CreateVolume {
        name: "vol".into(),
        capacity_bytes: 16 << 20,
        track_size: None,
        pool: None,
        space_efficient: false,
    }));
    match dup {
        Err(e) => assert_eq!(e.code(), Some("volume_exists")),
        Ok(v) => panic!("duplicate created: {v:?}"),
    }
    let vols = rt.block_on(c.volumes()).expect("list");
    assert_eq!(vols.len(), 1);
    rt.block_on(c.create_volume(&tzero::api_types::CreateVolume {
        name: "tgt".into(),
        capacity_bytes: 16 << 20,
        track_size: None,
        pool: None,
        space_efficient: false,
    }))
    .expect("create tgt");
    let r = rt
        .block_on(c.raw(Method::GET, "/v1/flash/tgt/vol", None))
        .expect("request");
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (404, "relationship_not_found")
    );
    // Defaults of POST /v1/flash: background copy on, not persistent.
    let r = rt
        .block_on(c.raw(
            Method::POST,
            "/v1/flash",
            Some(br#"{"source":"vol","target":"tgt","copy_rate":1048576}"#.to_vec()),
        ))
        .expect("establish");
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let f = json(&r);
    assert_eq!(f["background_copy"], true);
    assert_eq!(f["persistent"], false);
    let r = rt
        .block_on(c.raw(Method::DELETE, "/v1/volumes/vol", None))
        .expect("request");
    assert_eq!((r.status, error_code(&r).as_str()), (409, "volume_in_use"));
    let r = rt
        .block_on(c.raw(Method::DELETE, "/v1/volumes/vol?force=true", None))
        .expect("request");
    assert_eq!(r.status, 204);

    // The OpenAPI document describes every route.
    let r = rt
        .block_on(c.raw(Method::GET, "/v1/openapi.json", None))
        .expect("request");
    assert_eq!(r.status, 200);
    let doc = json(&r);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    for path in [
        "/v1/volumes",
        "/v1/volumes/{name}",
        "/v1/flash",
        "/v1/flash/{source}/{target}",
        "/v1/flash/{source}/{target}/copy",
        "/v1/flash/{source}/{target}/rate",
        "/v1/flash/{source}/{target}/resync",
        "/v1/flash/{source}/{target}/reverse",
    ] {
        assert!(doc["paths"][path].is_object(), "openapi lacks {path}");
    }

    // The CLI over TCP: --api with --token, and a wrong token is one error line.
    let out = d.cli_ok(&[
        "--api",
        &d.api_url(),
        "--token",
        &token,
        "lsfbvol",
        "--json",
    ]);
    assert!(out.contains("\"tgt\""), "{out}");
    let out = d.cli(&["--api", &d.api_url(), "--token", "nope", "lsfbvol"]);
    let (code, err) = common::one_line_error(&out);
    assert_eq!(code, 1);
    assert!(err.contains("token"), "{err}");
}

/// The issue-4 routes: establish with recording, resync, reverse,
/// withdraw after copy, and refusals as 409 with the rule's own code.
#[test]
fn api_resync_reverse_and_withdraw_after_copy() {
    let env = Env::new();
    let d = Daemon::start(&env);
    let c = tcp(&d, Some(&d.token()));
    let rt = rt();
    use hyper::Method;
    let call = |m: Method, path: &str, body: Option<&str>| {
        rt.block_on(c.raw(m, path, body.map(|b| b.as_bytes().to_vec())))
            .expect("request")
    };
    for name in ["s", "t", "u", "v"] {
        let body = format!(r#"{{"name":"{name}","capacity_bytes":1048576,"track_size":4096}}"#);
        assert_eq!(call(Method::POST, "/v1/volumes", Some(&body)).status, 201);
    }

    // recording defaults to false; a resync of such a pair is refused.
    let r = call(
        Method::POST,
        "/v1/flash",
        Some(r#"{"source":"s","target":"u","background_copy":false}"#),
    );
    assert_eq!(r.status, 201);
    let f = json(&r);
    assert_eq!(
        (
            &f["recording"],
            &f["changed_tracks"],
            &f["withdraw_pending"]
        ),
        (&Value::Bool(false), &Value::from(0), &Value::Bool(false)),
        "{f}"
    );
    let r = call(Method::POST, "/v1/flash/s/u/resync", None);
    assert_eq!((r.status, error_code(&r).as_str()), (409, "not_recording"));
    // A cycle is refused with its own code.
    let r = call(
        Method::POST,
        "/v1/flash",
        Some(r#"{"source":"u","target":"s","background_copy":false}"#),
    );
    assert_eq!((r.status, error_code(&r).as_str()), (409, "cycle"));
    assert!(json(&r)["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("cycle")));

    // DELETE ?cp=true: 202 with withdraw_pending; the pair then goes away.
    let r = call(Method::DELETE, "/v1/flash/s/u?cp=true", None);
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let f = json(&r);
    assert_eq!(f["withdraw_pending"], true, "{f}");
    assert_eq!(f["background_copy"], true, "{f}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while call(Method::GET, "/v1/flash/s/u", None).status != 404 {
        assert!(std::time::Instant::now() < deadline, "s:u not withdrawn");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let r = call(Method::DELETE, "/v1/flash/s/u?cp=maybe", None);
    assert_eq!((r.status, error_code(&r).as_str()), (400, "invalid_query"));

    // Recording pair at a crawl: reverse without fast is refused while the
    // copy is incomplete; resync takes defaults from an empty body.
    let r = call(
        Method::POST,
        "/v1/flash",
        Some(r#"{"source":"s","target":"t","persistent":true,"recording":true,"copy_rate":4096}"#),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(json(&r)["recording"], true);
    let r = call(Method::POST, "/v1/flash/s/t/reverse", Some("{}"));
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (409, "copy_incomplete")
    );
    let r = call(Method::POST, "/v1/flash/s/t/reverse", Some(r#"{"fast":1}"#));
    assert_eq!(r.status, 422);
    let r = call(Method::POST, "/v1/flash/s/t/resync", None);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let f = json(&r);
    assert_eq!(
        (&f["recording"], &f["persistent"]),
        (&Value::Bool(true), &Value::Bool(true))
    );
    let r = call(
        Method::PUT,
        "/v1/flash/s/t/rate",
        Some(r#"{"copy_rate":0}"#),
    );
    assert_eq!(r.status, 200);

    // Fast reverse is allowed at any time; the pair is then t:s.
    let r = call(
        Method::POST,
        "/v1/flash/s/t/reverse",
        Some(r#"{"fast":true}"#),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let f = json(&r);
    assert_eq!(
        (&f["source"], &f["target"]),
        (&Value::from("t"), &Value::from("s"))
    );
    assert_eq!(call(Method::GET, "/v1/flash/s/t", None).status, 404);
    let r = call(Method::POST, "/v1/flash/x/y/reverse", None);
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (404, "volume_not_found")
    );

    let doc = json(&call(Method::GET, "/v1/openapi.json", None));
    for path in [
        "/v1/flash/{source}/{target}/resync",
        "/v1/flash/{source}/{target}/reverse",
    ] {
        assert!(
            doc["paths"][path]["post"].is_object(),
            "openapi lacks {path}"
        );
    }
    assert!(doc["paths"]["/v1/flash/{source}/{target}"]["delete"]["responses"]["202"].is_object());
    let codes = doc["components"]["schemas"]["ErrorCode"]["enum"].to_string();
    for code in ["not_recording", "cycle", "copy_incomplete"] {
        assert!(codes.contains(code), "{codes}");
    }
    let flash = doc["components"]["schemas"]["Flash"]["required"].to_string();
    for field in ["recording", "changed_tracks", "withdraw_pending"] {
        assert!(flash.contains(field), "{flash}");
    }
}
