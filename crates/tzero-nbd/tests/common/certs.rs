//! Test credentials made at test time with the `openssl` command: a CA, a
//! server certificate it signed (for `localhost` and `127.0.0.1`, usable by
//! a client too), laid out as qemu's `tls-creds-x509` wants a directory
//! (`ca-cert.pem`, `server-cert.pem`, `server-key.pem`, `client-cert.pem`,
//! `client-key.pem`), and PSK files as nbdkit's and qemu's `keys.psk`.
//!
//! Shared by both crates' TLS tests (`tzero` includes this file by path).

use std::path::Path;
use std::process::Command;

const CONFIG: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = tzero test
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes a CA and a leaf certificate signed by it in `dir` (created): the
/// files qemu's `tls-creds-x509` reads for either endpoint.
pub fn make_x509(dir: &Path) {
    std::fs::create_dir_all(dir).expect("cert dir");
    std::fs::write(dir.join("openssl.cnf"), CONFIG).expect("openssl.cnf");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca-cert.pem",
        "-days",
        "2",
        "-config",
        "openssl.cnf",
        "-extensions",
        "ca",
    ]);
    openssl(dir, &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server-key.pem",
        "-out",
        "server.csr",
        "-config",
        "openssl.cnf",
    ]);
    openssl(dir, &csr);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca-cert.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-out",
            "server-cert.pem",
            "-days",
            "2",
            "-extfile",
            "openssl.cnf",
            "-extensions",
            "leaf",
        ],
    );
    // The same leaf serves as the client's certificate (extendedKeyUsage
    // allows both), for servers that verify peers.
    std::fs::copy(dir.join("server-cert.pem"), dir.join("client-cert.pem")).expect("copy");
    std::fs::copy(dir.join("server-key.pem"), dir.join("client-key.pem")).expect("copy");
}

/// Writes `dir/keys.psk` with one `username:hexkey` line and a random
/// 256-bit key; returns the file's path.
pub fn make_psk(dir: &Path, username: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).expect("psk dir");
    let out = Command::new("openssl")
        .args(["rand", "-hex", "32"])
        .output()
        .expect("openssl rand");
    assert!(out.status.success(), "openssl rand failed");
    let key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let path = dir.join("keys.psk");
    std::fs::write(&path, format!("{username}:{key}\n")).expect("keys.psk");
    path
}

/// A directory holding only `ca-cert.pem` from `from`: what a client needs
/// to trust the server.
pub fn client_ca_dir(from: &Path, dir: &Path) {
    std::fs::create_dir_all(dir).expect("client dir");
    std::fs::copy(from.join("ca-cert.pem"), dir.join("ca-cert.pem")).expect("copy ca");
}
