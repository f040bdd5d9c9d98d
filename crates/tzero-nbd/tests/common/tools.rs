//! The real client tools the integration tests drive (qemu-io, qemu-img,
//! nbdinfo, nbdcopy, nbdkit, fio, and openssl for test certificates), and what a missing one means: under CI
//! (`CI=true`, where `.ci/run` installs them all) the test fails, naming the
//! package to install, since a skipped interoperability test would pass
//! while proving nothing; elsewhere the test is skipped, loudly.
//!
//! Shared by both crates' test harnesses (`tzero` includes this file by
//! path) so that the rule lives in one place.

use std::process::{Command, Stdio};

/// The Debian package that ships `tool`.
fn package(tool: &str) -> &str {
    match tool {
        "qemu-io" | "qemu-img" => "qemu-utils",
        "nbdinfo" | "nbdcopy" => "libnbd-bin",
        "promtool" => "prometheus",
        other => other,
    }
}

/// True when the test runs under CI, where every real client must be there.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// True if `tool --version` (`openssl version`) runs. If not: panics under
/// CI; otherwise says loudly that the test is skipped and returns false.
pub fn have(tool: &str) -> bool {
    let version = if tool == "openssl" {
        "version"
    } else {
        "--version"
    };
    let runs = Command::new(tool)
        .arg(version)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if runs {
        return true;
    }
    let missing = format!(
        "`{tool}` is not installed (apt-get install {})",
        package(tool)
    );
    assert!(
        !in_ci(),
        "{missing}: under CI=true a missing real client fails the test"
    );
    eprintln!("!!!!!!!! SKIPPED: {missing}; under CI=true this test would fail !!!!!!!!");
    false
}
