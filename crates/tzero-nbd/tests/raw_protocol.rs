//! Raw-socket tests: well-formed and malformed traffic, written byte by
//! byte from the spec. After every abuse a fresh well-behaved client must
//! still be served.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tzero_nbd::wire::{self, *};
use tzero_nbd::ServerConfig;

/// Size of the "disk" export as a request length.
const DISK32: u32 = 4 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_bad_option_magic_disconnects() {
    let h = start().await;
    let mut c = Client::fixed(h.addr).await;
    c.s.write_all(&[0xde; 16]).await.unwrap();
    assert!(c.closed_by_server().await);
    assert_healthy(h.addr).await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_unknown_client_flags_disconnects() {
    let h = start().await;
    let mut c = Client::greet(h.addr, 0x10).await;
    assert!(c.closed_by_server().await);
    assert_healthy(h.addr).await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_truncated_and_oldstyle_clients() {
    let h = start().await;
    // Half the client flags, then hang up.
    let mut c = Client::connect(h.addr).await;
    let mut g = [0u8; 18];
    c.s.read_exact(&mut g).await.unwrap();
    c.s.write_all(&[0, 0]).await.unwrap();
    drop(c);
    // An oldstyle client sees IHAVEOPT where it expects its magic and
    // leaves without saying anything.
    let mut c = Client::connect(h.addr).await;
    c.s.read_exact(&mut g).await.unwrap();
    drop(c);
    // Truncated option header.
    let mut c = Client::fixed(h.addr).await;
    c.s.write_all(&IHAVEOPT.to_be_bytes()[..5]).await.unwrap();
    drop(c);
    // Truncated option payload.
    let mut c = Client::fixed(h.addr).await;
    let mut v = IHAVEOPT.to_be_bytes().to_vec();
    v.extend_from_slice(&OPT_GO.to_be_bytes());
    v.extend_from_slice(&100u32.to_be_bytes());
    v.extend_from_slice(&[0; 10]);
    c.s.write_all(&v).await.unwrap();
    drop(c);
    assert_healthy(h.addr).await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_unknown_options_are_unsupported_and_client_continues() {
    let h = start().await;
    let mut c = Client::fixed(h.addr).await;
    for opt in [
        OPT_STARTTLS,
        OPT_EXTENDED_HEADERS,
        OPT_PEEK_EXPORT,
        99,
        0xffff_ffff,
    ] {
        let r = c.opt(opt, &[]).await;
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].reply, REP_ERR_UNSUP, "option {opt}");
    }
    // Malformed payloads of known options are INVALID, not fatal.
    assert_eq!(c.opt(OPT_LIST, &[1]).await[0].reply, REP_ERR_INVALID);
    assert_eq!(
        c.opt(OPT_STRUCTURED_REPLY, &[1]).await[0].reply,
        REP_ERR_INVALID
    );
    assert_eq!(
        c.opt(OPT_GO, &[0, 0, 0, 9, b'x']).await[0].reply,
        REP_ERR_INVALID
    );
    // SET_META_CONTEXT before STRUCTURED_REPLY is invalid.
    let p = Client::meta_payload("disk", &["base:allocation"]);
    assert_eq!(
        c.opt(OPT_SET_META_CONTEXT, &p).await[0].reply,
        REP_ERR_INVALID
    );
    let (size, _) = c.go("disk").await;
    assert_eq!(size, 4 * MIB as u64);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_oversized_options() {
    let cfg = ServerConfig {
        max_discard_len: 2 * MIB as u64,
        ..ServerConfig::default()
    };
    let h = start_with(cfg, MIB).await;
    // Over the 64 KiB limit but skippable: TOO_BIG and the session goes on.
    let mut c = Client::fixed(h.addr).await;
    let r = c.opt(OPT_GO, &vec![0u8; MIB]).await;
    assert_eq!(r[0].reply, REP_ERR_TOO_BIG);
    c.go("disk").await;
    // Absurd length: TOO_BIG, then the server hangs up.
    let mut c = Client::fixed(h.addr).await;
    let mut v = IHAVEOPT.to_be_bytes().to_vec();
    v.extend_from_slice(&OPT_INFO.to_be_bytes());
    v.extend_from_slice(&u32::MAX.to_be_bytes());
    c.s.write_all(&v).await.unwrap();
    let r = c.opt_reply().await;
    assert_eq!(r.reply, REP_ERR_TOO_BIG);
    assert!(c.closed_by_server().await);
    // Oversized EXPORT_NAME cannot be answered: disconnect.
    let mut c = Client::fixed(h.addr).await;
    let mut v = IHAVEOPT.to_be_bytes().to_vec();
    v.extend_from_slice(&OPT_EXPORT_NAME.to_be_bytes());
    v.extend_from_slice(&(1u32 << 20).to_be_bytes());
    c.s.write_all(&v).await.unwrap();
    assert!(c.closed_by_server().await);
    assert_healthy(h.addr).await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_list_info_and_unknown_export() {
    let h = start().await;
    let mut c = Client::fixed(h.addr).await;
    let r = c.opt(OPT_LIST, &[]).await;
    let names: Vec<String> = r
        .iter()
        .filter(|r| r.reply == REP_SERVER)
        .map(|r| String::from_utf8(r.data[4..].to_vec()).unwrap())
        .collect();
    assert_eq!(names, vec!["big", "disk", "ro"]);
    assert_eq!(r.last().unwrap().reply, REP_ACK);

    let p = Client::info_payload("nope", &[]);
    assert_eq!(c.opt(OPT_INFO, &p).await[0].reply, REP_ERR_UNKNOWN);
    assert_eq!(c.opt(OPT_GO, &p).await[0].reply, REP_ERR_UNKNOWN);

    let p = Client::info_payload("disk", &[INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE, 77]);
    let r = c.opt(OPT_INFO, &p).await;
    assert_eq!(r.last().unwrap().reply, REP_ACK);
    let info = |ty: u16| {
        r.iter()
            .find(|r| r.reply == REP_INFO && r.data[..2] == ty.to_be_bytes())
            .map(|r| r.data[2..].to_vec())
    };
    assert_eq!(info(INFO_NAME).unwrap(), b"disk");
    assert_eq!(info(INFO_DESCRIPTION).unwrap(), b"test disk");
    let bs = info(INFO_BLOCK_SIZE).unwrap();
    assert_eq!(bs[..4], 512u32.to_be_bytes());
    assert_eq!(bs[4..8], 65536u32.to_be_bytes());
    assert_eq!(bs[8..12], (32u32 << 20).to_be_bytes());
    let export = info(INFO_EXPORT).unwrap();
    let flags = u16::from_be_bytes([export[8], export[9]]);
    for f in [
        TFLAG_HAS_FLAGS,
        TFLAG_SEND_FLUSH,
        TFLAG_SEND_FUA,
        TFLAG_SEND_TRIM,
        TFLAG_SEND_WRITE_ZEROES,
        TFLAG_SEND_FAST_ZERO,
        TFLAG_SEND_CACHE,
        TFLAG_CAN_MULTI_CONN,
    ] {
        assert_ne!(flags & f, 0, "flag {f:#x}");
    }
    assert_eq!(flags & (TFLAG_READ_ONLY | TFLAG_SEND_DF), 0);

    // LIST_META_CONTEXT: all, "base:" wildcard, unknown namespace.
    for (q, expect) in [
        (vec![], true),
        (vec!["base:"], true),
        (vec!["x-foo:bar"], false),
    ] {
        let r = c
            .opt(OPT_LIST_META_CONTEXT, &Client::meta_payload("disk", &q))
            .await;
        let has = r
            .iter()
            .any(|r| r.reply == REP_META_CONTEXT && &r.data[4..] == b"base:allocation");
        assert_eq!(has, expect, "query {q:?}");
        assert_eq!(r.last().unwrap().reply, REP_ACK);
    }
    // ABORT gets an ACK and the connection closes.
    assert_eq!(c.opt(OPT_ABORT, &[]).await[0].reply, REP_ACK);
    assert!(c.closed_by_server().await);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_name_honours_no_zeroes() {
    let h = start().await;
    for (flags, expect_len) in [
        (FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES, 10),
        (FLAG_C_FIXED_NEWSTYLE, 134),
    ] {
        let mut c = Client::greet(h.addr, flags).await;
        c.send_opt(OPT_EXPORT_NAME, b"disk").await;
        let mut reply = vec![0u8; expect_len];
        c.s.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply[..8], (4 * MIB as u64).to_be_bytes());
        // The next bytes we read must be our read's reply, proving there
        // was no extra padding.
        assert_eq!(c.read_simple(0, 512).await.len(), 512);
    }
    // Unknown export via EXPORT_NAME: the server must hang up.
    let mut c = Client::fixed(h.addr).await;
    c.send_opt(OPT_EXPORT_NAME, b"missing").await;
    assert!(c.closed_by_server().await);
    assert_healthy(h.addr).await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_request_magic_disconnects() {
    let h = start().await;
    let (mut c, _, _) = Client::open(h.addr, "disk", false).await;
    c.s.write_all(&[0x11; 28]).await.unwrap();
    assert!(c.closed_by_server().await);
    assert_healthy(h.addr).await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_get_errors_and_stream_stays_in_sync() {
    let h = start().await;
    let (mut c, size, _) = Client::open(h.addr, "disk", false).await;
    // unknown command
    c.request(42, 0, 1, 0, 0, &[]).await;
    assert_eq!(c.simple().await, (EINVAL, 1));
    // flags not valid for the command, and DF without structured replies
    c.request(CMD_READ, CMD_FLAG_NO_HOLE, 2, 0, 512, &[]).await;
    assert_eq!(c.simple().await, (EINVAL, 2));
    c.request(CMD_READ, CMD_FLAG_DF, 3, 0, 512, &[]).await;
    assert_eq!(c.simple().await, (EINVAL, 3));
    c.request(CMD_WRITE, CMD_FLAG_REQ_ONE, 4, 0, 8, &[9; 8])
        .await;
    assert_eq!(c.simple().await, (EINVAL, 4));
    // out of range / overflow
    c.request(CMD_READ, 0, 5, size - 511, 512, &[]).await;
    assert_eq!(c.simple().await, (EINVAL, 5));
    c.request(CMD_READ, 0, 6, u64::MAX - 10, 512, &[]).await;
    assert_eq!(c.simple().await, (EINVAL, 6));
    c.request(CMD_WRITE, 0, 7, size, 16, &[1; 16]).await;
    assert_eq!(c.simple().await, (ENOSPC, 7));
    c.request(CMD_TRIM, 0, 8, size, 512, &[]).await;
    assert_eq!(c.simple().await, (EINVAL, 8));
    c.request(CMD_WRITE_ZEROES, 0, 9, size, 512, &[]).await;
    assert_eq!(c.simple().await, (ENOSPC, 9));
    // BLOCK_STATUS without a negotiated context
    c.request(CMD_BLOCK_STATUS, 0, 10, 0, 512, &[]).await;
    assert_eq!(c.simple().await, (EINVAL, 10));
    // lengths over 32 MiB: the write payload is skipped, then we continue
    let big = (32 << 20) + 512;
    c.request(CMD_READ, 0, 11, 0, big, &[]).await;
    assert_eq!(c.simple().await, (EINVAL, 11));
    c.request(CMD_WRITE, 0, 12, 0, big, &vec![0xee; big as usize])
        .await;
    assert_eq!(c.simple().await, (EINVAL, 12));
    // zero-length requests are harmless no-ops
    c.request(CMD_WRITE, 0, 13, 0, 0, &[]).await;
    assert_eq!(c.simple().await, (0, 13));
    c.request(CMD_TRIM, 0, 14, size, 0, &[]).await;
    assert_eq!(c.simple().await, (0, 14));
    c.request(CMD_READ, 0, 15, 0, 0, &[]).await;
    assert_eq!(c.simple().await, (0, 15));
    // nothing above corrupted the export
    assert!(c.read_simple(0, 4096).await.iter().all(|&b| b == 0));
    c.request(CMD_DISC, 0, 16, 0, 0, &[]).await;
    assert!(c.closed_by_server().await);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insane_write_length_disconnects() {
    let h = start().await;
    let (mut c, _, _) = Client::open(h.addr, "disk", false).await;
    c.request(CMD_WRITE, 0, 1, 0, u32::MAX, &[0; 64]).await;
    assert!(c.closed_by_server().await);
    assert_healthy(h.addr).await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_closing_mid_write_payload() {
    let h = start().await;
    for _ in 0..3 {
        let (mut c, _, _) = Client::open(h.addr, "disk", false).await;
        c.request(CMD_WRITE, 0, 1, 0, 65536, &[7; 1000]).await;
        drop(c);
    }
    // and mid-header
    let (mut c, _, _) = Client::open(h.addr, "disk", false).await;
    c.s.write_all(&REQUEST_MAGIC.to_be_bytes()).await.unwrap();
    drop(c);
    assert_healthy(h.addr).await;
    // The partial write never reached the device.
    assert!(h.dev("disk").snapshot()[..1000].iter().all(|&b| b != 7));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_time_out_without_blocking_others() {
    let cfg = ServerConfig {
        handshake_timeout: Duration::from_millis(300),
        request_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let h = start_with(cfg, MIB).await;
    // Stalls during the handshake.
    let mut stalled_hs = Client::fixed(h.addr).await;
    // Stalls halfway through a write payload.
    let (mut stalled_rq, _, _) = Client::open(h.addr, "disk", false).await;
    stalled_rq
        .request(CMD_WRITE, 0, 1, 0, 4096, &[1; 100])
        .await;
    // Others are served meanwhile.
    assert_healthy(h.addr).await;
    assert!(stalled_hs.closed_by_server().await);
    assert!(stalled_rq.closed_by_server().await);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_export() {
    let h = start().await;
    let (mut c, size, flags) = Client::open(h.addr, "ro", false).await;
    assert_eq!(size, MIB as u64);
    assert_ne!(flags & TFLAG_READ_ONLY, 0);
    c.request(CMD_WRITE, 0, 1, 0, 512, &[1; 512]).await;
    assert_eq!(c.simple().await, (EPERM, 1));
    c.request(CMD_TRIM, 0, 2, 0, 512, &[]).await;
    assert_eq!(c.simple().await, (EPERM, 2));
    c.request(CMD_WRITE_ZEROES, 0, 3, 0, 512, &[]).await;
    assert_eq!(c.simple().await, (EPERM, 3));
    assert_eq!(c.read_simple(0, 512).await, vec![0; 512]);

    // A device that turns read-only after connect rejects writes itself.
    let (mut c, _, flags) = Client::open(h.addr, "disk", false).await;
    assert_eq!(flags & TFLAG_READ_ONLY, 0);
    h.dev("disk").set_read_only(true);
    c.request(CMD_WRITE, 0, 4, 0, 512, &[1; 512]).await;
    assert_eq!(c.simple().await, (EPERM, 4));
    h.dev("disk").set_read_only(false);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_reads_block_status_and_commands() {
    let h = start().await;
    let (mut c, _, flags) = Client::open(h.addr, "disk", true).await;
    assert_ne!(flags & TFLAG_SEND_DF, 0);
    let data: Vec<u8> = (0..8192u32)
        .map(|i| u8::try_from(i % 251).unwrap())
        .collect();
    c.request(CMD_WRITE, CMD_FLAG_FUA, 1, 65536, 8192, &data)
        .await;
    assert_eq!(c.any_reply().await.1, 0);
    assert!(h.dev("disk").fua_count() >= 1);

    // READ with DF: exactly one OFFSET_DATA chunk, flagged DONE.
    c.request(CMD_READ, CMD_FLAG_DF, 2, 65536 + 100, 5000, &[])
        .await;
    let ch = c.chunk().await;
    assert_eq!(
        (ch.cookie, ch.ty, ch.flags),
        (2, REPLY_TYPE_OFFSET_DATA, REPLY_FLAG_DONE)
    );
    assert_eq!(ch.payload[..8], (65536u64 + 100).to_be_bytes());
    assert_eq!(&ch.payload[8..], &data[100..5100]);

    // Out-of-range read gets a structured error chunk.
    c.request(CMD_READ, 0, 3, 4 * MIB as u64, 1, &[]).await;
    let ch = c.chunk().await;
    assert_eq!(
        (ch.cookie, ch.ty, ch.flags),
        (3, REPLY_TYPE_ERROR, REPLY_FLAG_DONE)
    );
    assert_eq!(ch.payload[..4], EINVAL.to_be_bytes());

    // BLOCK_STATUS: hole, data, hole.
    c.request(CMD_BLOCK_STATUS, 0, 4, 0, DISK32, &[]).await;
    let ch = c.chunk().await;
    assert_eq!((ch.cookie, ch.ty), (4, REPLY_TYPE_BLOCK_STATUS));
    assert_eq!(ch.payload[..4], 1u32.to_be_bytes());
    let descs: Vec<(u32, u32)> = ch.payload[4..]
        .chunks(8)
        .map(|d| {
            (
                u32::from_be_bytes(d[..4].try_into().unwrap()),
                u32::from_be_bytes(d[4..].try_into().unwrap()),
            )
        })
        .collect();
    assert_eq!(
        descs,
        vec![
            (65536, STATE_HOLE | STATE_ZERO),
            (8192, 0),
            (DISK32 - 65536 - 8192, STATE_HOLE | STATE_ZERO)
        ]
    );
    // REQ_ONE: a single descriptor
    c.request(CMD_BLOCK_STATUS, CMD_FLAG_REQ_ONE, 5, 0, DISK32, &[])
        .await;
    assert_eq!(c.chunk().await.payload.len(), 4 + 8);

    // WRITE_ZEROES (punching, NO_HOLE, FAST_ZERO), TRIM, CACHE, FLUSH.
    for (cookie, cmd, fl, off) in [
        (6, CMD_WRITE_ZEROES, 0, 65536),
        (7, CMD_WRITE_ZEROES, CMD_FLAG_NO_HOLE | CMD_FLAG_FUA, 0),
        (8, CMD_WRITE_ZEROES, CMD_FLAG_FAST_ZERO, 1 << 20),
        (9, CMD_TRIM, 0, 2 << 20),
        (10, CMD_CACHE, 0, 0),
        (11, CMD_FLUSH, 0, 0),
    ] {
        let len = if cmd == CMD_FLUSH { 0 } else { 4096 };
        c.request(cmd, fl, cookie, off, len, &[]).await;
        let (ck, err, _) = c.any_reply().await;
        assert_eq!((ck, err), (cookie, 0), "command {cmd}");
    }
    assert!(h.dev("disk").flush_count() >= 1);
    let snap = h.dev("disk").snapshot();
    assert!(snap[65536..65536 + 4096].iter().all(|&b| b == 0));
    assert_eq!(&snap[65536 + 4096..65536 + 8192], &data[4096..]);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_all_answered() {
    let h = start().await;
    let (c, _, _) = Client::open(h.addr, "disk", false).await;
    let n = 200u64;
    // Send everything before reading anything; more than the in-flight
    // limit so backpressure kicks in.
    let mut batch = Vec::new();
    for i in 0..n {
        let payload = vec![u8::try_from(i % 256).unwrap(); 4096];
        batch.extend_from_slice(&encode_request(&Request {
            flags: 0,
            command: CMD_WRITE,
            cookie: 1000 + i,
            offset: i * 4096,
            length: 4096,
        }));
        batch.extend_from_slice(&payload);
    }
    let (mut rd, mut wr) = c.s.into_split();
    let writer = tokio::spawn(async move {
        wr.write_all(&batch).await.unwrap();
        wr
    });
    let mut seen = std::collections::HashSet::new();
    for _ in 0..n {
        let mut hdr = [0u8; 16];
        rd.read_exact(&mut hdr).await.unwrap();
        assert_eq!(hdr[4..8], [0; 4]);
        seen.insert(u64::from_be_bytes(hdr[8..16].try_into().unwrap()));
    }
    assert_eq!(seen.len(), usize::try_from(n).unwrap());
    let wr = writer.await.unwrap();
    let mut c = Client {
        s: rd.reunite(wr).unwrap(),
    };
    for i in [0u64, 57, 199] {
        let got = c.read_simple(i * 4096, 4096).await;
        assert!(got.iter().all(|&b| u64::from(b) == i % 256));
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_finishes_in_flight_requests() {
    let h = start().await;
    let (mut c, _, _) = Client::open(h.addr, "disk", false).await;
    let mut batch = Vec::new();
    for i in 0..16u64 {
        batch.extend_from_slice(&encode_request(&Request {
            flags: 0,
            command: CMD_WRITE,
            cookie: i,
            offset: i * 65536,
            length: 65536,
        }));
        batch.extend_from_slice(&[0xc3; 65536]);
    }
    batch.extend_from_slice(&encode_request(&Request {
        flags: 0,
        command: CMD_DISC,
        cookie: 99,
        offset: 0,
        length: 0,
    }));
    c.s.write_all(&batch).await.unwrap();
    for _ in 0..16 {
        assert_eq!(c.simple().await.0, 0);
    }
    assert!(c.closed_by_server().await);
    assert!(h.dev("disk").snapshot()[..16 * 65536]
        .iter()
        .all(|&b| b == 0xc3));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_connections_and_returns() {
    let h = start().await;
    let (mut c, _, _) = Client::open(h.addr, "disk", false).await;
    let mut idle_hs = Client::fixed(h.addr).await;
    c.request(CMD_WRITE, 0, 1, 0, 512, &[3; 512]).await;
    assert_eq!(c.simple().await, (0, 1));
    let addr = h.addr;
    let start = std::time::Instant::now();
    h.shutdown().await;
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(c.closed_by_server().await);
    assert!(idle_hs.closed_by_server().await);
    // The listener is gone.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit() {
    let cfg = ServerConfig {
        max_connections: 1,
        ..ServerConfig::default()
    };
    let h = start_with(cfg, MIB).await;
    let (mut first, _, _) = Client::open(h.addr, "disk", false).await;
    let mut second = Client::connect(h.addr).await;
    assert!(second.closed_by_server().await);
    first.request(CMD_DISC, 0, 1, 0, 0, &[]).await;
    assert!(first.closed_by_server().await);
    // The slot is released once the first connection is gone
    // (assert_healthy waits, with a deadline, to be admitted).
    assert_healthy(h.addr).await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_connection_over_duplex_stream() {
    use std::sync::Arc;
    use tzero_nbd::mem::{MemDevice, MemProvider};
    let provider = Arc::new(MemProvider::new());
    provider.insert("d", Arc::new(MemDevice::new(MIB, 4096)), None);
    let (client, server) = tokio::io::duplex(1 << 16);
    let (_stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(tzero_nbd::serve_connection(server, provider, rx));
    let (mut r, mut w) = tokio::io::split(client);
    let mut g = [0u8; 18];
    r.read_exact(&mut g).await.unwrap();
    let mut v = wire::FLAG_C_FIXED_NEWSTYLE.to_be_bytes().to_vec();
    v.extend_from_slice(&IHAVEOPT.to_be_bytes());
    v.extend_from_slice(&OPT_EXPORT_NAME.to_be_bytes());
    v.extend_from_slice(&1u32.to_be_bytes());
    v.push(b'd');
    v.extend_from_slice(&encode_request(&Request {
        flags: 0,
        command: CMD_DISC,
        cookie: 0,
        offset: 0,
        length: 0,
    }));
    w.write_all(&v).await.unwrap();
    let mut reply = [0u8; 134];
    r.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply[..8], (MIB as u64).to_be_bytes());
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_stops_reading_replies_is_dropped() {
    // One connection at a time: a new client is admitted only once the
    // stalled one is dropped, which makes the drop visible without reading
    // (reading would drain the replies and unstall the server).
    let cfg = ServerConfig {
        request_timeout: Duration::from_millis(300),
        max_connections: 1,
        ..ServerConfig::default()
    };
    let h = start_with(cfg, 16 * MIB).await;
    let (mut c, _, _) = Client::open(h.addr, "big", false).await;
    let mut batch = Vec::new();
    for i in 0..200u64 {
        batch.extend_from_slice(&encode_request(&Request {
            flags: 0,
            command: CMD_READ,
            cookie: i,
            offset: (i % 16) << 20,
            length: 1 << 20,
        }));
    }
    c.s.write_all(&batch).await.unwrap();
    // Never read: the server's writes stall and it must give up on us.
    // assert_healthy polls until it is admitted, i.e. until we are dropped.
    assert_healthy(h.addr).await;
    assert!(c.closed_by_server().await);
    h.shutdown().await;
}
