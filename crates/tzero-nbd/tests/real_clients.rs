//! Interoperability with real NBD clients: nbdinfo, nbdcopy (libnbd) and
//! qemu-io. A missing binary fails the test under `CI=true` (CI installs
//! libnbd-bin and qemu-utils); elsewhere the test prints SKIPPED and returns.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nbdinfo_json_shows_size_block_sizes_and_flags() {
    if !have("nbdinfo") {
        return;
    }
    let h = start().await;
    let (ok, out, err) = run("nbdinfo", &["--json", &h.uri("disk")]).await;
    assert!(ok, "nbdinfo failed: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("nbdinfo JSON");
    let e = &v["exports"][0];
    assert_eq!(e["export-size"], 4 * MIB as u64);
    assert_eq!(e["block_size_minimum"], 512);
    assert_eq!(e["block_size_preferred"], 65536);
    assert_eq!(e["block_size_maximum"], 32 * MIB as u64);
    assert_eq!(e["description"], "test disk");
    assert_eq!(e["is_read_only"], false);
    for f in [
        "can_flush",
        "can_fua",
        "can_trim",
        "can_zero",
        "can_fast_zero",
        "can_cache",
        "can_df",
        "can_multi_conn",
    ] {
        assert_eq!(e[f], true, "{f} in {e}");
    }
    let contexts = e["contexts"].as_array().expect("contexts");
    assert!(
        contexts.iter().any(|c| c == "base:allocation"),
        "{contexts:?}"
    );
    assert_eq!(v["protocol"], "newstyle-fixed");

    let (ok, out, err) = run("nbdinfo", &["--json", &h.uri("ro")]).await;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["exports"][0]["is_read_only"], true);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nbdinfo_list_shows_every_export() {
    if !have("nbdinfo") {
        return;
    }
    let h = start().await;
    let uri = format!("nbd://127.0.0.1:{}", h.port());
    let (ok, out, err) = run("nbdinfo", &["--list", "--json", &uri]).await;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut names: Vec<&str> = v["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["export-name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["big", "disk", "ro"]);
    // The plain-text form too.
    let (ok, out, _) = run("nbdinfo", &["--list", &uri]).await;
    assert!(ok);
    assert!(
        out.contains("export=\"disk\"") || out.contains("disk"),
        "{out}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nbdinfo_map_shows_extents() {
    if !have("nbdinfo") {
        return;
    }
    let h = start().await;
    tzero_nbd::BlockDevice::write(&*h.dev("disk"), 1 << 20, &[1u8; 65536], false).unwrap();
    let (ok, out, err) = run("nbdinfo", &["--map", "--json", &h.uri("disk")]).await;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("map JSON");
    let extents: Vec<(u64, u64, u64)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["offset"].as_u64().unwrap(),
                e["length"].as_u64().unwrap(),
                e["type"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        extents,
        vec![
            (0, 1 << 20, 3),
            (1 << 20, 65536, 0),
            ((1 << 20) + 65536, 3 * MIB as u64 - 65536, 3)
        ]
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_io_read_write_zero_discard_flush() {
    if !have("qemu-io") {
        return;
    }
    let h = start().await;
    let uri = h.uri("disk");
    let (ok, out, err) = run(
        "qemu-io",
        &[
            "-f",
            "raw",
            &uri,
            "-c",
            "write -P 0xab 0 64k",
            "-c",
            "read -P 0xab 0 64k",
            "-c",
            "write -P 0xcd 64k 64k",
            "-c",
            "write -z 64k 64k",
            "-c",
            "read -P 0 64k 64k",
            "-c",
            "write -P 0xef 128k 64k",
            "-c",
            "discard 128k 64k",
            "-c",
            "write -P 1 513 1000",
            "-c",
            "read -P 1 513 1000",
            "-c",
            "read -P 0xab 0 513",
            "-c",
            "read -P 0xab 1513 63023",
            "-c",
            "flush",
        ],
    )
    .await;
    assert!(ok, "qemu-io failed:\n{out}\n{err}");
    assert!(!out.contains("Pattern verification failed"), "{out}");
    assert!(!out.to_lowercase().contains("error"), "{out}\n{err}");
    let snap = h.dev("disk").snapshot();
    assert!(snap[..513].iter().all(|&b| b == 0xab));
    assert!(snap[513..1513].iter().all(|&b| b == 1));
    assert!(snap[1513..65536].iter().all(|&b| b == 0xab));
    assert!(snap[65536..131072].iter().all(|&b| b == 0));
    assert!(h.dev("disk").flush_count() >= 1);

    // Reading back in a second session sees the same data.
    let (ok, out, err) = run(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-r",
            &uri,
            "-c",
            "read -P 1 513 1000",
            "-c",
            "read -P 0 64k 64k",
        ],
    )
    .await;
    assert!(ok && !out.contains("verification failed"), "{out}\n{err}");
    h.shutdown().await;
}

fn pattern(len: usize) -> Vec<u8> {
    // Deterministic, non-repeating-ish content with some zero runs so the
    // copy exercises sparse paths as well.
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|i| {
            if (i / (256 * 1024)) % 3 == 1 {
                0
            } else {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x.to_le_bytes()[0]
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nbdcopy_in_and_out_with_multi_conn() {
    if !have("nbdcopy") {
        return;
    }
    let h = start().await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.img");
    let dst = dir.path().join("dst.img");
    let data = pattern(16 * MIB);
    std::fs::write(&src, &data).unwrap();
    let uri = h.uri("big");

    let (ok, out, err) = run(
        "nbdcopy",
        &[
            "--connections=4",
            "--requests=16",
            src.to_str().unwrap(),
            &uri,
        ],
    )
    .await;
    assert!(ok, "nbdcopy in failed: {out}{err}");
    assert!(
        h.dev("big").snapshot() == data,
        "device differs after nbdcopy in"
    );

    let (ok, out, err) = run("nbdcopy", &["--connections=4", &uri, dst.to_str().unwrap()]).await;
    assert!(ok, "nbdcopy out failed: {out}{err}");
    let copied = std::fs::read(&dst).unwrap();
    assert_eq!(copied.len(), data.len());
    assert!(copied == data, "file differs after nbdcopy out");
    h.shutdown().await;
}
