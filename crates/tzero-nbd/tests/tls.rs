//! NBD_OPT_STARTTLS on the wire, written from the spec: what a client sees
//! before TLS in `require` and `on` modes, the haggle restarted inside TLS
//! (a rustls client here; GnuTLS clients are in `crates/tzero/tests/tls.rs`),
//! and the handshake limits holding over TLS.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tzero_nbd::wire::*;
use tzero_nbd::{ServerConfig, Tls};

fn x509(dir: &Path, require: bool) -> Tls {
    certs::make_x509(dir);
    Tls::x509(
        &dir.join("server-cert.pem"),
        &dir.join("server-key.pem"),
        None,
        require,
    )
    .expect("load test credentials")
}

async fn server(dir: &Path, require: bool, tweak: impl FnOnce(&mut ServerConfig)) -> Harness {
    let mut cfg = ServerConfig {
        tls: Some(x509(dir, require)),
        ..ServerConfig::default()
    };
    tweak(&mut cfg);
    start_with(cfg, MIB).await
}

/// A rustls client trusting the test CA in `dir`, over `c`'s socket.
async fn upgrade(dir: &Path, c: Client) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in tzero_nbd::tls::load_certificates(&dir.join("ca-cert.pem")).expect("ca") {
        roots.add(cert).expect("add ca");
    }
    let config = rustls::ClientConfig::builder_with_provider(tzero_nbd::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, c.s)
        .await
        .expect("TLS handshake")
}

/// Sends one option and collects its replies up to the final one: (reply
/// type, data) each.
async fn opt<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    option: u32,
    payload: &[u8],
) -> Vec<(u32, Vec<u8>)> {
    let mut v = IHAVEOPT.to_be_bytes().to_vec();
    v.extend_from_slice(&option.to_be_bytes());
    v.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    v.extend_from_slice(payload);
    s.write_all(&v).await.expect("send option");
    let mut out = Vec::new();
    loop {
        let mut h = [0u8; 20];
        s.read_exact(&mut h).await.expect("option reply");
        assert_eq!(&h[..8], &OPT_REPLY_MAGIC.to_be_bytes());
        assert_eq!(u32::from_be_bytes(h[8..12].try_into().unwrap()), option);
        let reply = u32::from_be_bytes(h[12..16].try_into().unwrap());
        let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
        let mut data = vec![0u8; len as usize];
        s.read_exact(&mut data).await.expect("reply data");
        let fin = reply == REP_ACK || reply & 0x8000_0000 != 0;
        out.push((reply, data));
        if fin {
            return out;
        }
    }
}

fn last(r: &[(u32, Vec<u8>)]) -> u32 {
    r.last().expect("a reply").0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_mode_answers_tls_reqd_then_haggles_inside_tls() {
    if !have("openssl") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let h = server(dir.path(), true, |_| {}).await;
    let mut c = Client::fixed(h.addr).await;
    // Nothing is told before TLS: not the exports, not whether one exists.
    for (option, payload) in [
        (OPT_LIST, vec![]),
        (OPT_GO, Client::info_payload("disk", &[])),
        (OPT_INFO, Client::info_payload("nope", &[])),
        (OPT_STRUCTURED_REPLY, vec![]),
        (
            OPT_LIST_META_CONTEXT,
            Client::meta_payload("disk", &["base:"]),
        ),
        (99, vec![]),
    ] {
        let r = opt(&mut c.s, option, &payload).await;
        assert_eq!(r.len(), 1, "option {option}");
        assert_eq!(r[0].0, REP_ERR_TLS_REQD, "option {option}");
    }
    assert_eq!(
        last(&opt(&mut c.s, OPT_STARTTLS, &[1]).await),
        REP_ERR_INVALID
    );
    assert_eq!(last(&opt(&mut c.s, OPT_STARTTLS, &[]).await), REP_ACK);

    let mut t = upgrade(dir.path(), c).await;
    let list = opt(&mut t, OPT_LIST, &[]).await;
    assert_eq!(last(&list), REP_ACK);
    assert_eq!(list.iter().filter(|r| r.0 == REP_SERVER).count(), 3);
    // A second STARTTLS inside TLS is an error, and the session goes on.
    assert_eq!(last(&opt(&mut t, OPT_STARTTLS, &[]).await), REP_ERR_INVALID);
    // The option limit holds inside TLS too.
    let big = vec![0u8; 65 * 1024];
    assert_eq!(last(&opt(&mut t, OPT_LIST, &big).await), REP_ERR_TOO_BIG);
    let go = opt(&mut t, OPT_GO, &Client::info_payload("disk", &[])).await;
    assert_eq!(last(&go), REP_ACK);

    // Transmission over TLS: write, read back.
    let data = vec![0xc3u8; 8192];
    let header = |command, cookie| {
        encode_request(&Request {
            flags: 0,
            command,
            cookie,
            offset: 4096,
            length: 8192,
        })
    };
    let mut req = header(CMD_WRITE, 5).to_vec();
    req.extend_from_slice(&data);
    req.extend_from_slice(&header(CMD_READ, 6));
    t.write_all(&req).await.expect("requests");
    let mut reply = [0u8; 16];
    t.read_exact(&mut reply).await.expect("write reply");
    assert_eq!(&reply[..4], &SIMPLE_REPLY_MAGIC.to_be_bytes());
    assert_eq!(&reply[4..8], &[0; 4], "write error");
    t.read_exact(&mut reply).await.expect("read reply");
    assert_eq!(&reply[4..8], &[0; 4], "read error");
    let mut back = vec![0u8; 8192];
    t.read_exact(&mut back).await.expect("read data");
    assert_eq!(back, data);
    assert_eq!(&h.dev("disk").snapshot()[4096..4096 + 8192], &data[..]);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_mode_closes_on_export_name_before_tls() {
    if !have("openssl") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let h = server(dir.path(), true, |_| {}).await;
    let mut c = Client::fixed(h.addr).await;
    c.send_opt(OPT_EXPORT_NAME, b"disk").await;
    assert!(c.closed_by_server().await);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_mode_serves_plaintext_and_tls() {
    if !have("openssl") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let h = server(dir.path(), false, |_| {}).await;
    let mut c = Client::fixed(h.addr).await;
    // What was negotiated in plaintext does not survive STARTTLS.
    assert_eq!(
        last(&opt(&mut c.s, OPT_STRUCTURED_REPLY, &[]).await),
        REP_ACK
    );
    assert_eq!(last(&opt(&mut c.s, OPT_LIST, &[]).await), REP_ACK);
    assert_eq!(last(&opt(&mut c.s, OPT_STARTTLS, &[]).await), REP_ACK);
    let mut t = upgrade(dir.path(), c).await;
    let meta = Client::meta_payload("disk", &["base:allocation"]);
    assert_eq!(
        last(&opt(&mut t, OPT_SET_META_CONTEXT, &meta).await),
        REP_ERR_INVALID,
        "STRUCTURED_REPLY from before TLS must be forgotten"
    );
    drop(t);
    // Plaintext clients are served as ever.
    assert_healthy(h.addr).await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_tls_handshake_times_out() {
    if !have("openssl") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let h = server(dir.path(), false, |cfg| {
        cfg.handshake_timeout = Duration::from_millis(300);
    })
    .await;
    let mut c = Client::fixed(h.addr).await;
    assert_eq!(last(&opt(&mut c.s, OPT_STARTTLS, &[]).await), REP_ACK);
    // No ClientHello: the server gives up within the handshake timeout.
    let t0 = tokio::time::Instant::now();
    assert!(c.closed_by_server().await);
    assert!(t0.elapsed() < Duration::from_secs(5));
    // A ClientHello that stops halfway, and garbage instead of TLS.
    let mut c = Client::fixed(h.addr).await;
    assert_eq!(last(&opt(&mut c.s, OPT_STARTTLS, &[]).await), REP_ACK);
    c.s.write_all(&[0x16, 3, 1, 0, 200, 1])
        .await
        .expect("partial hello");
    assert!(c.closed_by_server().await);
    let mut c = Client::fixed(h.addr).await;
    assert_eq!(last(&opt(&mut c.s, OPT_STARTTLS, &[]).await), REP_ACK);
    c.s.write_all(&[0xde; 64]).await.expect("garbage");
    assert!(c.closed_by_server().await);
    assert_healthy(h.addr).await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limit_counts_tls_sessions() {
    if !have("openssl") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let h = server(dir.path(), true, |cfg| cfg.max_connections = 1).await;
    let mut c = Client::fixed(h.addr).await;
    assert_eq!(last(&opt(&mut c.s, OPT_STARTTLS, &[]).await), REP_ACK);
    let mut t = upgrade(dir.path(), c).await;
    assert_eq!(last(&opt(&mut t, OPT_LIST, &[]).await), REP_ACK);
    // The one slot is held by the TLS session: a second client is closed
    // before the greeting.
    let flags = FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES;
    assert!(Client::try_greet(h.addr, flags).await.is_none());
    // Once it leaves, the slot is free again.
    assert_eq!(last(&opt(&mut t, OPT_ABORT, &[]).await), REP_ACK);
    drop(t);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while Client::try_greet(h.addr, flags).await.is_none() {
        assert!(tokio::time::Instant::now() < deadline, "slot not freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_credentials_starttls_is_unsupported() {
    let h = start().await;
    let mut c = Client::fixed(h.addr).await;
    assert_eq!(last(&opt(&mut c.s, OPT_STARTTLS, &[]).await), REP_ERR_UNSUP);
    assert_eq!(c.go("disk").await.0, 4 * MIB as u64);
    h.shutdown().await;
}
