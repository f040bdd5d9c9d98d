//! Entry points for the libFuzzer targets in `/fuzz` (run by `scripts/fuzz.sh`).
//!
//! Each function takes arbitrary bytes and must never panic, hang or
//! allocate without bound; they are public so the fuzz crate (outside the
//! workspace) can call them.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::mem::{MemDevice, MemProvider};
use crate::request::{check_request, SessionCaps};
use crate::server::{NbdServer, ServerConfig};
use crate::tls::Tls;
use crate::wire;

/// Feeds `data` to every option-phase parser.
pub fn option_parsers(data: &[u8]) {
    if let Some(h) = data.get(..wire::OPTION_HEADER_LEN) {
        let mut hdr = [0u8; wire::OPTION_HEADER_LEN];
        hdr.copy_from_slice(h);
        let _ = wire::parse_option_header(&hdr);
    }
    if let Some(raw) = data.get(..4) {
        let _ = wire::parse_client_flags(u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]));
    }
    if let Ok(Some((h, payload, used))) = wire::decode_option(data) {
        assert_eq!(usize::try_from(h.length).ok(), Some(payload.len()));
        assert_eq!(used, wire::OPTION_HEADER_LEN + payload.len());
    }
    let _ = wire::parse_export_name(data);
    if let Ok(r) = wire::parse_info_request(data) {
        assert!(r.name.len() <= wire::MAX_STRING_LEN);
        assert!(r.requests.len() * 2 < data.len());
    }
    if let Ok(r) = wire::parse_meta_context_request(data) {
        assert!(r.queries.len() * 4 < data.len());
    }
}

/// Parses `data` as request headers and validates each against a few
/// session shapes.
pub fn request_parser(data: &[u8]) {
    let caps = [
        SessionCaps {
            size: 1 << 20,
            read_only: false,
            structured: true,
            base_allocation: Some(1),
        },
        SessionCaps {
            size: 0,
            read_only: true,
            structured: false,
            base_allocation: None,
        },
        SessionCaps {
            size: u64::MAX,
            read_only: false,
            structured: false,
            base_allocation: None,
        },
    ];
    for chunk in data.chunks(wire::REQUEST_HEADER_LEN) {
        match wire::decode_request(chunk) {
            Ok(Some((req, used))) => {
                assert_eq!(used, wire::REQUEST_HEADER_LEN);
                assert_eq!(wire::encode_request(&req)[..], chunk[..]);
                for c in &caps {
                    let _ = check_request(&req, c, 1 << 20);
                }
            }
            // Only the last, short chunk may ask for more bytes.
            Ok(None) => assert!(chunk.len() < wire::REQUEST_HEADER_LEN),
            Err(_) => {}
        }
    }
}

/// Plays `data` as the client side of a whole session (handshake and
/// transmission) against an in-memory export named `"fuzz"`. To let the
/// fuzzer reach the transmission phase without guessing magics, a prefix is
/// prepended unless `data` starts with `'R'` (raw mode): the greeting reply
/// flags, `STRUCTURED_REPLY`, `SET_META_CONTEXT base:allocation` and `GO`.
/// `'T'` is raw mode against a server that requires TLS (PSK credentials):
/// `TLS_REQD` for everything, and after `STARTTLS` a handshake with whatever
/// bytes follow.
pub fn session(data: &[u8]) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let (input, tls) = match data.split_first() {
        Some((b'R', rest)) => (rest.to_vec(), false),
        Some((b'T', rest)) => (rest.to_vec(), true),
        _ => {
            let mut v = negotiation_prefix("fuzz");
            v.extend_from_slice(data);
            (v, false)
        }
    };
    rt.block_on(async move {
        let provider = Arc::new(MemProvider::new());
        provider.insert(
            "fuzz",
            Arc::new(MemDevice::new(64 * 1024, 4096)),
            Some("fuzz export"),
        );
        let cfg = ServerConfig {
            handshake_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(2),
            max_discard_len: 1 << 20,
            tls: tls
                .then(|| {
                    let keys = [("fuzz".to_owned(), vec![0x42; 32])].into_iter().collect();
                    Tls::psk_keys(keys, true).ok()
                })
                .flatten(),
            ..ServerConfig::default()
        };
        let server = NbdServer::new(provider, cfg);
        let (client, srv) = tokio::io::duplex(1 << 16);
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let server_task = tokio::spawn(async move {
            let _ = server.serve_connection(srv, rx).await;
        });
        let (mut cr, mut cw) = tokio::io::split(client);
        // Drain replies concurrently so the server never blocks on us.
        let drain = tokio::spawn(async move {
            let mut sink = vec![0u8; 1 << 16];
            while let Ok(n) = cr.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        });
        let _ = cw.write_all(&input).await;
        let _ = cw.shutdown().await;
        drop(cw);
        let _ = tokio::time::timeout(Duration::from_secs(5), server_task).await;
        drain.abort();
    });
}

/// The client bytes that negotiate structured replies and
/// `base:allocation`, then `GO` to `export`.
pub fn negotiation_prefix(export: &str) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&(wire::FLAG_C_FIXED_NEWSTYLE | wire::FLAG_C_NO_ZEROES).to_be_bytes());
    let mut opt = |o: u32, payload: &[u8]| {
        v.extend_from_slice(&wire::IHAVEOPT.to_be_bytes());
        v.extend_from_slice(&o.to_be_bytes());
        v.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(0).to_be_bytes());
        v.extend_from_slice(payload);
    };
    opt(wire::OPT_STRUCTURED_REPLY, &[]);
    let name = export.as_bytes();
    let name_len = u32::try_from(name.len()).unwrap_or(0).to_be_bytes();
    let mut meta = Vec::new();
    meta.extend_from_slice(&name_len);
    meta.extend_from_slice(name);
    meta.extend_from_slice(&1u32.to_be_bytes());
    let q = wire::BASE_ALLOCATION.as_bytes();
    meta.extend_from_slice(&u32::try_from(q.len()).unwrap_or(0).to_be_bytes());
    meta.extend_from_slice(q);
    opt(wire::OPT_SET_META_CONTEXT, &meta);
    let mut go = Vec::new();
    go.extend_from_slice(&name_len);
    go.extend_from_slice(name);
    go.extend_from_slice(&0u16.to_be_bytes());
    opt(wire::OPT_GO, &go);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_points_survive_garbage() {
        let junk: Vec<u8> = (0..600u32)
            .map(|i| u8::try_from((i * 7 + 3) % 256).unwrap())
            .collect();
        option_parsers(&junk);
        request_parser(&junk);
        session(&junk);
        session(b"R");
        // Require-TLS: an option before TLS, then STARTTLS and garbage.
        let mut t = b"T".to_vec();
        t.extend_from_slice(&(wire::FLAG_C_FIXED_NEWSTYLE).to_be_bytes());
        for (option, rest) in [(wire::OPT_LIST, &b""[..]), (wire::OPT_STARTTLS, &junk[..])] {
            t.extend_from_slice(&wire::IHAVEOPT.to_be_bytes());
            t.extend_from_slice(&option.to_be_bytes());
            t.extend_from_slice(&0u32.to_be_bytes());
            t.extend_from_slice(rest);
        }
        session(&t);
        session(&[]);
        // A well-formed read after the prefix.
        let req = wire::encode_request(&wire::Request {
            flags: 0,
            command: wire::CMD_READ,
            cookie: 1,
            offset: 0,
            length: 4096,
        });
        session(&req);
        option_parsers(&[]);
        request_parser(&req);
    }
}
