//! NBD over TLS and the API over HTTPS, with real clients: qemu-io and
//! qemu-img (GnuTLS, `tls-creds-x509` / `tls-creds-psk`), nbdinfo and
//! nbdcopy (libnbd, `nbds://` URIs), and the `tzero` CLI over `https://`.
//! Certificates and keys are made at test time with `openssl`.

mod common;

#[path = "../../tzero-nbd/tests/common/certs.rs"]
mod certs;

use std::path::Path;
use std::process::{Command, Output};

use common::{have, run_ok, tzero_command, Daemon, Env};

const MIB: usize = 1 << 20;

fn have_all(tools: &[&str]) -> bool {
    tools.iter().all(|t| have(t))
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// qemu-io over TLS: `object` is the `--object tls-creds-...,id=tls0` spec.
fn qemu_io_tls(d: &Daemon, object: &str, export: &str, cmds: &[&str]) -> Output {
    let mut cmd = Command::new("qemu-io");
    cmd.args(["--object", object, "--image-opts"]).arg(format!(
        "driver=nbd,host=127.0.0.1,port={},export={export},tls-creds=tls0",
        d.nbd_port
    ));
    for c in cmds {
        cmd.args(["-c", c]);
    }
    cmd.output().expect("run qemu-io")
}

/// [`qemu_io_tls`] that must succeed, every pattern verified.
fn qemu_io_tls_ok(d: &Daemon, object: &str, export: &str, cmds: &[&str]) {
    let out = qemu_io_tls(d, object, export, cmds);
    let all = text(&out);
    assert!(
        out.status.success() && !all.contains("verification failed") && !all.contains("failed:"),
        "qemu-io {export} {cmds:?}: {all}\ndaemon log:\n{}",
        d.log_text()
    );
}

fn nbdinfo(args: &[&str]) -> Output {
    Command::new("nbdinfo")
        .args(args)
        .output()
        .expect("run nbdinfo")
}

/// A file of `len` bytes that differ from block to block.
fn pattern_file(p: &Path, len: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..len)
        .map(|i| u8::try_from((i / 512 * 7 + i) % 251).expect("byte"))
        .collect();
    std::fs::write(p, &data).expect("write pattern");
    data
}

/// nbdcopy writes a file to `uri`, then copies it back; both must match.
fn nbdcopy_round_trip(d: &Daemon, env: &Env, uri: &str) {
    let src = env.path("in.img");
    let back = env.path("back.img");
    let data = pattern_file(&src, 8 * MIB);
    run_ok(Command::new("nbdcopy").arg(&src).arg(uri), d);
    run_ok(Command::new("nbdcopy").arg(uri).arg(&back), d);
    let got = std::fs::read(&back).expect("read back");
    assert_eq!(got.len(), 64 * MIB, "the whole volume is copied back");
    assert!(
        got[..data.len()] == data[..],
        "data read back over TLS differs"
    );
    assert!(got[data.len()..].iter().all(|&b| b == 0));
}

#[test]
fn x509_qemu_and_libnbd_clients_read_back_what_they_wrote() {
    if !have_all(&["openssl", "qemu-io", "qemu-img", "nbdinfo", "nbdcopy"]) {
        return;
    }
    let env = Env::new();
    let pki = env.path("pki");
    certs::make_x509(&pki);
    let client = env.path("client");
    certs::client_ca_dir(&pki, &client);
    let d = Daemon::start_with(
        &env,
        &[
            "--tls",
            "on",
            "--tls-cert",
            path(&pki.join("server-cert.pem")),
            "--tls-key",
            path(&pki.join("server-key.pem")),
        ],
    );
    d.cli_ok(&["mkfbvol", "--cap", "64MiB", "v", "w"]);
    let object = format!(
        "tls-creds-x509,id=tls0,dir={},endpoint=client",
        path(&client)
    );

    // qemu (GnuTLS) writes and reads back over TLS.
    qemu_io_tls_ok(
        &d,
        &object,
        "v",
        &["write -P 0xa5 0 4M", "write -P 0x5a 5M 1M", "flush"],
    );
    qemu_io_tls_ok(
        &d,
        &object,
        "v",
        &["read -P 0xa5 0 4M", "read -P 0 4M 1M", "read -P 0x5a 5M 1M"],
    );
    // qemu-img converts a local image onto an export over TLS.
    let img = env.path("src.img");
    let data = pattern_file(&img, 4 * MIB);
    run_ok(
        Command::new("qemu-img")
            .args([
                "convert",
                "-n",
                "-f",
                "raw",
                "--object",
                &object,
                "--target-image-opts",
            ])
            .arg(&img)
            .arg(format!(
                "driver=nbd,host=127.0.0.1,port={},export=w,tls-creds=tls0",
                d.nbd_port
            )),
        &d,
    );

    // libnbd: the export is listed and described over TLS.
    let uri = format!(
        "nbds://127.0.0.1:{}/w?tls-certificates={}",
        d.nbd_port,
        path(&client)
    );
    let info = run_ok(Command::new("nbdinfo").arg(&uri), &d);
    assert!(info.contains("with TLS"), "{info}");
    assert!(info.contains("export-size: 67108864"), "{info}");
    let back = env.path("w.img");
    run_ok(Command::new("nbdcopy").arg(&uri).arg(&back), &d);
    assert!(std::fs::read(&back).expect("w.img")[..data.len()] == data[..]);
    nbdcopy_round_trip(&d, &env, &uri);

    // `--tls on`: plaintext clients are still served.
    let plain = run_ok(Command::new("nbdinfo").arg(d.uri("v")), &d);
    assert!(plain.contains("without TLS"), "{plain}");
}

#[test]
fn x509_untrusted_ca_is_refused() {
    if !have_all(&["openssl", "qemu-io", "nbdinfo"]) {
        return;
    }
    let env = Env::new();
    let pki = env.path("pki");
    certs::make_x509(&pki);
    // Another CA, which never signed the server's certificate.
    let rogue = env.path("rogue");
    certs::make_x509(&rogue);
    let client = env.path("client");
    certs::client_ca_dir(&rogue, &client);
    let d = Daemon::start_with(
        &env,
        &[
            "--tls",
            "require",
            "--tls-cert",
            path(&pki.join("server-cert.pem")),
            "--tls-key",
            path(&pki.join("server-key.pem")),
        ],
    );
    d.cli_ok(&["mkfbvol", "--cap", "8MiB", "v"]);
    let object = format!(
        "tls-creds-x509,id=tls0,dir={},endpoint=client",
        path(&client)
    );
    let out = qemu_io_tls(&d, &object, "v", &["read 0 4k"]);
    assert!(
        !out.status.success(),
        "qemu-io trusted a rogue CA: {}",
        text(&out)
    );
    let uri = format!(
        "nbds://127.0.0.1:{}/v?tls-certificates={}",
        d.nbd_port,
        path(&client)
    );
    let out = nbdinfo(&[&uri]);
    assert!(
        !out.status.success(),
        "nbdinfo trusted a rogue CA: {}",
        text(&out)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("export-size"));
}

#[test]
fn verify_peer_wants_a_client_certificate_from_the_ca() {
    if !have_all(&["openssl", "qemu-io", "nbdinfo"]) {
        return;
    }
    let env = Env::new();
    let pki = env.path("pki");
    certs::make_x509(&pki);
    let d = Daemon::start_with(
        &env,
        &[
            "--tls",
            "require",
            "--tls-cert",
            path(&pki.join("server-cert.pem")),
            "--tls-key",
            path(&pki.join("server-key.pem")),
            "--tls-client-ca",
            path(&pki.join("ca-cert.pem")),
        ],
    );
    d.cli_ok(&["mkfbvol", "--cap", "8MiB", "v"]);
    // `pki` holds client-cert.pem and client-key.pem: both clients present them.
    let object = format!("tls-creds-x509,id=tls0,dir={},endpoint=client", path(&pki));
    qemu_io_tls_ok(
        &d,
        &object,
        "v",
        &["write -P 0x77 0 64k", "read -P 0x77 0 64k"],
    );
    let uri = |dir: &Path| {
        format!(
            "nbds://127.0.0.1:{}/v?tls-certificates={}",
            d.nbd_port,
            path(dir)
        )
    };
    let out = nbdinfo(&[&uri(&pki)]);
    assert!(out.status.success(), "{}", text(&out));
    // Trusting the server is not enough: no client certificate, no export.
    let anonymous = env.path("anonymous");
    certs::client_ca_dir(&pki, &anonymous);
    let out = nbdinfo(&[&uri(&anonymous)]);
    assert!(
        !out.status.success(),
        "served without a client certificate: {}",
        text(&out)
    );
    let object = format!(
        "tls-creds-x509,id=tls0,dir={},endpoint=client",
        path(&anonymous)
    );
    let out = qemu_io_tls(&d, &object, "v", &["read 0 4k"]);
    assert!(!out.status.success(), "{}", text(&out));
    // A client certificate from another CA is refused too.
    let rogue = env.path("rogue");
    certs::make_x509(&rogue);
    std::fs::copy(pki.join("ca-cert.pem"), rogue.join("ca-cert.pem")).expect("copy ca");
    let out = nbdinfo(&[&uri(&rogue)]);
    assert!(
        !out.status.success(),
        "served a rogue client: {}",
        text(&out)
    );
}

#[test]
fn require_mode_refuses_plaintext_and_shows_no_export() {
    if !have_all(&["openssl", "qemu-io", "nbdinfo"]) {
        return;
    }
    let env = Env::new();
    let psk = certs::make_psk(&env.path("psk"), "qemu");
    let d = Daemon::start_with(&env, &["--tls", "require", "--tls-psk", path(&psk)]);
    d.cli_ok(&["mkfbvol", "--cap", "8MiB", "secret-volume"]);

    let base = format!("nbd://127.0.0.1:{}/", d.nbd_port);
    let out = nbdinfo(&["--list", &base]);
    assert!(
        !out.status.success(),
        "plaintext --list served: {}",
        text(&out)
    );
    assert!(!text(&out).contains("secret-volume"), "{}", text(&out));
    let out = nbdinfo(&[&d.uri("secret-volume")]);
    assert!(
        !out.status.success(),
        "plaintext export served: {}",
        text(&out)
    );
    assert!(!text(&out).contains("export-size"), "{}", text(&out));
    // qemu without TLS (NBD_OPT_GO, then EXPORT_NAME as a fallback).
    let out = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "read 0 4k"])
        .arg(d.uri("secret-volume"))
        .output()
        .expect("qemu-io");
    assert!(
        !out.status.success(),
        "qemu-io served in plaintext: {}",
        text(&out)
    );

    // With the key, the export is there.
    let uri = format!(
        "nbds://qemu@127.0.0.1:{}/?tls-psk-file={}",
        d.nbd_port,
        path(&psk)
    );
    let out = nbdinfo(&["--list", &uri]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("secret-volume"), "{}", text(&out));
}

#[test]
fn psk_qemu_and_libnbd_clients_and_a_wrong_key_refused() {
    if !have_all(&["openssl", "qemu-io", "nbdinfo", "nbdcopy"]) {
        return;
    }
    let env = Env::new();
    let psk_dir = env.path("psk");
    let psk = certs::make_psk(&psk_dir, "qemu");
    let d = Daemon::start_with(&env, &["--tls", "require", "--tls-psk", path(&psk)]);
    d.cli_ok(&["mkfbvol", "--cap", "64MiB", "v"]);

    // qemu's default PSK username is `qemu`; its keys.psk is in `dir`.
    let object = format!(
        "tls-creds-psk,id=tls0,dir={},username=qemu,endpoint=client",
        path(&psk_dir)
    );
    qemu_io_tls_ok(&d, &object, "v", &["write -P 0x3c 1M 3M", "flush"]);
    qemu_io_tls_ok(&d, &object, "v", &["read -P 0 0 1M", "read -P 0x3c 1M 3M"]);

    let uri = format!(
        "nbds://qemu@127.0.0.1:{}/v?tls-psk-file={}",
        d.nbd_port,
        path(&psk)
    );
    let info = run_ok(Command::new("nbdinfo").arg(&uri), &d);
    assert!(info.contains("with TLS"), "{info}");
    nbdcopy_round_trip(&d, &env, &uri);

    // The same username with another key, and a username the server does
    // not know: both refused, by libnbd and by qemu.
    let wrong_dir = env.path("wrong");
    let wrong = certs::make_psk(&wrong_dir, "qemu");
    let stranger = certs::make_psk(&env.path("stranger"), "stranger");
    for (user, file) in [("qemu", &wrong), ("stranger", &stranger)] {
        let uri = format!(
            "nbds://{user}@127.0.0.1:{}/v?tls-psk-file={}",
            d.nbd_port,
            path(file)
        );
        let out = nbdinfo(&[&uri]);
        assert!(
            !out.status.success(),
            "{user}: wrong key accepted: {}",
            text(&out)
        );
    }
    let object = format!(
        "tls-creds-psk,id=tls0,dir={},username=qemu,endpoint=client",
        path(&wrong_dir)
    );
    let out = qemu_io_tls(&d, &object, "v", &["read 0 4k"]);
    assert!(
        !out.status.success(),
        "qemu-io with a wrong key: {}",
        text(&out)
    );
    assert!(
        d.log_text().contains("TLS handshake failed"),
        "the daemon logs the refused handshake:\n{}",
        d.log_text()
    );
}

/// `tzero serve ARGS` that must fail at start-up: a non-zero exit and one
/// clear `tzero: error:` line naming `expect`, never a panic.
fn serve_refused(env: &Env, args: &[&str], expect: &str) {
    let out = tzero_command()
        .args(["serve", "--data"])
        .arg(env.data())
        .args(["--nbd", "127.0.0.1:0", "--api", "127.0.0.1:0"])
        .args(args)
        .output()
        .expect("run tzero serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "serve {args:?} started");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("tzero: error:") && last.contains(expect),
        "serve {args:?}: expected an error naming {expect:?}, got:\n{stderr}"
    );
}

#[test]
fn bad_credentials_are_refused_at_start_up() {
    if !have("openssl") {
        return;
    }
    let env = Env::new();
    let pki = env.path("pki");
    certs::make_x509(&pki);
    let (cert, key) = (pki.join("server-cert.pem"), pki.join("server-key.pem"));
    let missing = env.path("nope.pem");
    serve_refused(
        &env,
        &[
            "--tls",
            "on",
            "--tls-cert",
            path(&missing),
            "--tls-key",
            path(&key),
        ],
        "nope.pem",
    );
    // A key where the certificate should be, and the reverse.
    serve_refused(
        &env,
        &[
            "--tls",
            "on",
            "--tls-cert",
            path(&key),
            "--tls-key",
            path(&key),
        ],
        "no PEM certificate",
    );
    serve_refused(
        &env,
        &[
            "--tls",
            "on",
            "--tls-cert",
            path(&cert),
            "--tls-key",
            path(&cert),
        ],
        "private key",
    );
    // Another certificate's key.
    let other = env.path("other");
    certs::make_x509(&other);
    serve_refused(
        &env,
        &[
            "--tls",
            "require",
            "--tls-cert",
            path(&cert),
            "--tls-key",
            path(&other.join("server-key.pem")),
        ],
        "cannot load the NBD TLS certificate",
    );
    let bad_psk = env.path("bad.psk");
    std::fs::write(&bad_psk, "qemu:not-hex\n").expect("bad.psk");
    serve_refused(
        &env,
        &["--tls", "on", "--tls-psk", path(&bad_psk)],
        "line 1",
    );
    serve_refused(&env, &["--tls", "require"], "--tls-psk");
    serve_refused(
        &env,
        &["--tls-cert", path(&cert), "--tls-key", path(&key)],
        "--tls is off",
    );
    serve_refused(
        &env,
        &[
            "--api-tls-cert",
            path(&missing),
            "--api-tls-key",
            path(&key),
        ],
        "nope.pem",
    );
}

#[test]
fn cli_verbs_over_https_need_the_ca() {
    if !have("openssl") {
        return;
    }
    let env = Env::new();
    let pki = env.path("pki");
    certs::make_x509(&pki);
    let d = Daemon::start_with(
        &env,
        &[
            "--api-tls-cert",
            path(&pki.join("server-cert.pem")),
            "--api-tls-key",
            path(&pki.join("server-key.pem")),
        ],
    );
    let ca = pki.join("ca-cert.pem");
    let https = format!("https://127.0.0.1:{}", d.api_port);
    let token = d.token();
    let cli = |extra: &[&str], args: &[&str]| {
        tzero_command()
            .args(["--api", &https, "--token", &token])
            .args(extra)
            .args(args)
            .output()
            .expect("run tzero")
    };
    let with_ca = ["--api-ca", path(&ca)];
    let out = cli(&with_ca, &["mkfbvol", "--cap", "1MiB", "over-https"]);
    assert!(out.status.success(), "{}\n{}", text(&out), d.log_text());
    let out = cli(&with_ca, &["--json", "lsfbvol"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("over-https"));
    // The host name in the URL must be in the certificate too.
    let out = tzero_command()
        .args(["--api", &format!("https://localhost:{}", d.api_port)])
        .args(["--token", &token, "--api-ca", path(&ca), "lsfbvol"])
        .output()
        .expect("run tzero");
    assert!(out.status.success(), "{}", text(&out));

    // Without the CA (the system bundle does not know it): one clear line.
    let out = cli(&[], &["lsfbvol"]);
    let (code, err) = common::one_line_error(&out);
    assert_eq!(code, 1);
    assert!(
        err.contains("TLS handshake") && err.contains("--api-ca"),
        "{err}"
    );
    // Another CA: refused the same way.
    let rogue = env.path("rogue");
    certs::make_x509(&rogue);
    let out = cli(
        &["--api-ca", path(&rogue.join("ca-cert.pem"))],
        &["lsfbvol"],
    );
    let (_, err) = common::one_line_error(&out);
    assert!(
        err.contains("UnknownIssuer") || err.contains("certificate"),
        "{err}"
    );
    // Plain HTTP to the HTTPS listener does not get an answer.
    let out = tzero_command()
        .args(["--api", &d.api_url(), "--token", &token, "lsfbvol"])
        .output()
        .expect("run tzero");
    assert!(!out.status.success(), "{}", text(&out));
    // The unix socket stays plain.
    assert!(d.cli_ok(&["lsfbvol"]).contains("over-https"));
}
