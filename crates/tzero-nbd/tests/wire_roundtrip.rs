//! Round-trip properties of every NBD wire type in `tzero_nbd::wire`.
//!
//! For each message: encoding then decoding gives the same value, and
//! decoding any proper prefix of the encoding asks for more bytes (never a
//! panic, never a value). Where the crate has only one side, the server's
//! decoders for client messages or its encoders for replies, this file has
//! the other, written from the NBD protocol document (doc/proto.md) rather
//! than from the crate, so the two meet only on the wire.
//!
//! The incremental decoders return `Ok(None)` for "more bytes"; the payload
//! parsers, which get a whole payload framed by its option header, return
//! `Err(WireError::Truncated)` for the same thing.

use proptest::prelude::*;
use tzero_nbd::wire::{self, ClientFlags, OptionHeader, Request, WireError};

// ---- client side, written from the spec ---------------------------------

/// The client's flags word.
fn enc_client_flags(f: ClientFlags) -> u32 {
    (u32::from(f.fixed_newstyle) * wire::FLAG_C_FIXED_NEWSTYLE)
        | (u32::from(f.no_zeroes) * wire::FLAG_C_NO_ZEROES)
}

/// An option request: IHAVEOPT, option, payload length, payload.
fn enc_option(option: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = wire::IHAVEOPT.to_be_bytes().to_vec();
    v.extend_from_slice(&option.to_be_bytes());
    v.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// A u32 length, then the string's bytes.
fn enc_string(v: &mut Vec<u8>, s: &str) {
    v.extend_from_slice(&u32::try_from(s.len()).unwrap().to_be_bytes());
    v.extend_from_slice(s.as_bytes());
}

/// `NBD_OPT_INFO`/`NBD_OPT_GO` payload: name, u16 count, u16 items.
fn enc_info(name: &str, items: &[u16]) -> Vec<u8> {
    let mut v = Vec::new();
    enc_string(&mut v, name);
    v.extend_from_slice(&u16::try_from(items.len()).unwrap().to_be_bytes());
    for i in items {
        v.extend_from_slice(&i.to_be_bytes());
    }
    v
}

/// `NBD_OPT_{LIST,SET}_META_CONTEXT` payload: export, u32 count, queries.
fn enc_meta(export: &str, queries: &[String]) -> Vec<u8> {
    let mut v = Vec::new();
    enc_string(&mut v, export);
    v.extend_from_slice(&u32::try_from(queries.len()).unwrap().to_be_bytes());
    for q in queries {
        enc_string(&mut v, q);
    }
    v
}

// ---- server side, written from the spec ---------------------------------

/// A reply as a client reads it off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    /// `NBD_REP_*`: the option it answers, its type, its data.
    Option {
        option: u32,
        reply: u32,
        data: Vec<u8>,
    },
    /// The reply to `NBD_OPT_EXPORT_NAME`.
    ExportName {
        size: u64,
        flags: u16,
    },
    Simple {
        error: u32,
        cookie: u64,
    },
    /// One structured reply chunk.
    Chunk {
        flags: u16,
        ty: u16,
        cookie: u64,
        payload: Vec<u8>,
    },
}

/// Bytes from the front of a buffer; `None` when they are not all there.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, at: 0 }
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let b = self.buf.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes(b.try_into().unwrap()))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_be_bytes(b.try_into().unwrap()))
    }
}

/// What the client expects next decides how it reads the bytes (the NBD
/// stream is not self-describing: the export-name reply has no magic).
#[derive(Debug, Clone, Copy)]
enum Expect {
    Option,
    ExportName {
        no_zeroes: bool,
    },
    /// Transmission: a simple reply or a structured chunk, by magic.
    Transmission,
}

/// Decodes one reply: `Ok(None)` for more bytes, `Err` for a bad magic.
fn dec_reply(buf: &[u8], expect: Expect) -> Result<Option<(Reply, usize)>, String> {
    let mut r = Reader::new(buf);
    let reply = match expect {
        Expect::Option => {
            let Some(magic) = r.u64() else {
                return Ok(None);
            };
            if magic != wire::OPT_REPLY_MAGIC {
                return Err(format!("option reply magic {magic:#x}"));
            }
            let (Some(option), Some(reply), Some(len)) = (r.u32(), r.u32(), r.u32()) else {
                return Ok(None);
            };
            let Some(data) = r.take(usize::try_from(len).unwrap()) else {
                return Ok(None);
            };
            Reply::Option {
                option,
                reply,
                data: data.to_vec(),
            }
        }
        Expect::ExportName { no_zeroes } => {
            let (Some(size), Some(flags)) = (r.u64(), r.u16()) else {
                return Ok(None);
            };
            if !no_zeroes {
                match r.take(124) {
                    None => return Ok(None),
                    Some(z) if z.iter().any(|&b| b != 0) => return Err("non-zero padding".into()),
                    Some(_) => {}
                }
            }
            Reply::ExportName { size, flags }
        }
        Expect::Transmission => {
            let Some(magic) = r.u32() else {
                return Ok(None);
            };
            match magic {
                wire::SIMPLE_REPLY_MAGIC => {
                    let (Some(error), Some(cookie)) = (r.u32(), r.u64()) else {
                        return Ok(None);
                    };
                    Reply::Simple { error, cookie }
                }
                wire::STRUCTURED_REPLY_MAGIC => {
                    let (Some(flags), Some(ty), Some(cookie), Some(len)) =
                        (r.u16(), r.u16(), r.u64(), r.u32())
                    else {
                        return Ok(None);
                    };
                    let Some(payload) = r.take(usize::try_from(len).unwrap()) else {
                        return Ok(None);
                    };
                    Reply::Chunk {
                        flags,
                        ty,
                        cookie,
                        payload: payload.to_vec(),
                    }
                }
                m => return Err(format!("reply magic {m:#x}")),
            }
        }
    };
    Ok(Some((reply, r.at)))
}

/// The whole encoding decodes to `want` using every byte; every proper
/// prefix asks for more; with bytes after it, exactly its own are taken.
fn assert_reply_frames(bytes: &[u8], expect: Expect, want: &Reply) {
    assert_eq!(
        dec_reply(bytes, expect),
        Ok(Some((want.clone(), bytes.len())))
    );
    for n in 0..bytes.len() {
        assert_eq!(dec_reply(&bytes[..n], expect), Ok(None), "prefix {n}");
    }
    let mut more = bytes.to_vec();
    more.extend_from_slice(&[0xAA; 7]);
    assert_eq!(
        dec_reply(&more, expect),
        Ok(Some((want.clone(), bytes.len())))
    );
}

/// The NBD_REP_INFO data of one information item.
fn info_data(ty: u16, rest: &[u8]) -> Vec<u8> {
    let mut v = ty.to_be_bytes().to_vec();
    v.extend_from_slice(rest);
    v
}

/// What the encoders send of a string they bound: its longest prefix of at
/// most `max` bytes that ends on a char boundary.
fn bounded(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

// ---- strategies ---------------------------------------------------------

/// Strings NBD allows: UTF-8 without NUL, short ones mostly, and some near
/// the 4096-byte limit with multi-byte chars so bounding hits a boundary.
fn nbd_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[^\0]{0,24}",
        1 => "[aé€]{1360,1400}",
    ]
}

fn request() -> impl Strategy<Value = Request> {
    (
        any::<u16>(),
        any::<u16>(),
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
    )
        .prop_map(|(flags, command, cookie, offset, length)| Request {
            flags,
            command,
            cookie,
            offset,
            length,
        })
}

fn cases() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

// ---- client messages: our encoder, the crate's decoder ------------------

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn client_flags_round_trip(fixed_newstyle: bool, no_zeroes: bool, unknown in 2u32..32) {
        let f = ClientFlags { fixed_newstyle, no_zeroes };
        prop_assert_eq!(wire::parse_client_flags(enc_client_flags(f)), Some(f));
        // Any bit the spec does not define is refused, whatever else is set.
        prop_assert_eq!(wire::parse_client_flags(enc_client_flags(f) | 1 << unknown), None);
    }

    #[test]
    fn option_round_trips_and_prefixes_ask_for_more(
        option: u32,
        payload in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let bytes = enc_option(option, &payload);
        let want = OptionHeader { option, length: u32::try_from(payload.len()).unwrap() };
        prop_assert_eq!(
            wire::decode_option(&bytes),
            Ok(Some((want, &payload[..], bytes.len())))
        );
        let header: &[u8; wire::OPTION_HEADER_LEN] = bytes.first_chunk().unwrap();
        prop_assert_eq!(wire::parse_option_header(header), Ok(want));
        for n in 0..bytes.len() {
            prop_assert_eq!(wire::decode_option(&bytes[..n]), Ok(None), "prefix {}", n);
        }
        // The next option's bytes are left alone.
        let mut two = bytes.clone();
        two.extend_from_slice(&enc_option(wire::OPT_ABORT, &[]));
        prop_assert_eq!(
            wire::decode_option(&two),
            Ok(Some((want, &payload[..], bytes.len())))
        );
    }

    #[test]
    fn export_name_round_trips(name in nbd_string()) {
        // EXPORT_NAME's payload is the bare name; its option header frames it.
        let name = bounded(&name, wire::MAX_STRING_LEN);
        let bytes = enc_option(wire::OPT_EXPORT_NAME, name.as_bytes());
        let (h, payload, _) = wire::decode_option(&bytes).unwrap().unwrap();
        prop_assert_eq!(h.option, wire::OPT_EXPORT_NAME);
        prop_assert_eq!(wire::parse_export_name(payload), Ok(name));
    }

    #[test]
    fn info_request_round_trips_and_prefixes_are_truncated(
        name in nbd_string(),
        items in proptest::collection::vec(any::<u16>(), 0..8),
    ) {
        let name = bounded(&name, wire::MAX_STRING_LEN);
        let bytes = enc_info(name, &items);
        let got = wire::parse_info_request(&bytes).unwrap();
        prop_assert_eq!(got.name, name);
        prop_assert_eq!(&got.requests, &items);
        for n in 0..bytes.len() {
            prop_assert_eq!(wire::parse_info_request(&bytes[..n]), Err(WireError::Truncated), "prefix {}", n);
        }
    }

    #[test]
    fn meta_context_request_round_trips_and_prefixes_are_truncated(
        export in nbd_string(),
        queries in proptest::collection::vec("[^\0]{0,20}", 0..5),
    ) {
        let export = bounded(&export, wire::MAX_STRING_LEN);
        let bytes = enc_meta(export, &queries);
        let got = wire::parse_meta_context_request(&bytes).unwrap();
        prop_assert_eq!(got.export, export);
        prop_assert_eq!(got.queries, queries.iter().map(String::as_str).collect::<Vec<_>>());
        for n in 0..bytes.len() {
            prop_assert_eq!(
                wire::parse_meta_context_request(&bytes[..n]),
                Err(WireError::Truncated),
                "prefix {}", n
            );
        }
    }

    #[test]
    fn request_round_trips_and_prefixes_ask_for_more(r in request(), rest in proptest::collection::vec(any::<u8>(), 0..40)) {
        let bytes = wire::encode_request(&r);
        prop_assert_eq!(wire::parse_request(&bytes), Ok(r));
        prop_assert_eq!(wire::decode_request(&bytes), Ok(Some((r, wire::REQUEST_HEADER_LEN))));
        for n in 0..bytes.len() {
            prop_assert_eq!(wire::decode_request(&bytes[..n]), Ok(None), "prefix {}", n);
        }
        // A write's payload (or the next request) after it is not taken.
        let mut more = bytes.to_vec();
        more.extend_from_slice(&rest);
        prop_assert_eq!(wire::decode_request(&more), Ok(Some((r, wire::REQUEST_HEADER_LEN))));
    }
}

// ---- server replies: the crate's encoder, our decoder -------------------

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn option_reply_round_trips(option: u32, reply: u32, data in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut out = Vec::new();
        wire::encode_option_reply(&mut out, option, reply, &data);
        assert_reply_frames(&out, Expect::Option, &Reply::Option { option, reply, data });
    }

    #[test]
    fn rep_server_round_trips(option: u32, name in nbd_string()) {
        let mut out = Vec::new();
        wire::encode_rep_server(&mut out, option, &name);
        let mut data = Vec::new();
        enc_string(&mut data, bounded(&name, wire::MAX_STRING_LEN));
        assert_reply_frames(&out, Expect::Option, &Reply::Option { option, reply: wire::REP_SERVER, data });
    }

    #[test]
    fn rep_meta_context_round_trips(option: u32, id: u32, name in "[^\0]{0,40}") {
        let mut out = Vec::new();
        wire::encode_rep_meta_context(&mut out, option, id, &name);
        let mut data = id.to_be_bytes().to_vec();
        data.extend_from_slice(name.as_bytes());
        assert_reply_frames(&out, Expect::Option, &Reply::Option { option, reply: wire::REP_META_CONTEXT, data });
    }

    #[test]
    fn info_replies_round_trip(option: u32, size: u64, flags: u16, ty: u16, s in nbd_string(), min: u32, pref: u32, max: u32) {
        let mut out = Vec::new();
        wire::encode_info_export(&mut out, option, size, flags);
        let mut rest = size.to_be_bytes().to_vec();
        rest.extend_from_slice(&flags.to_be_bytes());
        let data = info_data(wire::INFO_EXPORT, &rest);
        assert_reply_frames(&out, Expect::Option, &Reply::Option { option, reply: wire::REP_INFO, data });

        let mut out = Vec::new();
        wire::encode_info_string(&mut out, option, ty, &s);
        let data = info_data(ty, bounded(&s, wire::MAX_STRING_LEN).as_bytes());
        assert_reply_frames(&out, Expect::Option, &Reply::Option { option, reply: wire::REP_INFO, data });

        let mut out = Vec::new();
        wire::encode_info_block_size(&mut out, option, min, pref, max);
        let rest: Vec<u8> = [min, pref, max].iter().flat_map(|v| v.to_be_bytes()).collect();
        let data = info_data(wire::INFO_BLOCK_SIZE, &rest);
        assert_reply_frames(&out, Expect::Option, &Reply::Option { option, reply: wire::REP_INFO, data });
    }

    #[test]
    fn export_name_reply_round_trips(size: u64, flags: u16, no_zeroes: bool) {
        let mut out = Vec::new();
        wire::encode_export_name_reply(&mut out, size, flags, no_zeroes);
        assert_reply_frames(&out, Expect::ExportName { no_zeroes }, &Reply::ExportName { size, flags });
    }

    #[test]
    fn simple_reply_round_trips(error: u32, cookie: u64) {
        let mut out = Vec::new();
        wire::encode_simple_reply(&mut out, error, cookie);
        assert_reply_frames(&out, Expect::Transmission, &Reply::Simple { error, cookie });
        // The in-place form writes the same header in front of a payload.
        let mut buf = vec![0u8; wire::SIMPLE_REPLY_LEN + 3];
        wire::put_simple_reply(&mut buf, error, cookie);
        prop_assert_eq!(&buf[..wire::SIMPLE_REPLY_LEN], &out[..]);
    }

    #[test]
    fn structured_chunks_round_trip(
        flags: u16, ty: u16, cookie: u64,
        payload in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        // A data chunk: the header as encoded, then the payload it counts.
        let mut out = Vec::new();
        wire::encode_structured_header(&mut out, flags, ty, cookie, u32::try_from(payload.len()).unwrap());
        out.extend_from_slice(&payload);
        assert_reply_frames(&out, Expect::Transmission, &Reply::Chunk { flags, ty, cookie, payload: payload.clone() });
        let mut buf = vec![0u8; wire::STRUCTURED_HEADER_LEN];
        wire::put_structured_header(&mut buf, flags, ty, cookie, u32::try_from(payload.len()).unwrap());
        prop_assert_eq!(&buf[..], &out[..wire::STRUCTURED_HEADER_LEN]);

        let mut out = Vec::new();
        wire::encode_structured_done(&mut out, cookie);
        let done = Reply::Chunk { flags: wire::REPLY_FLAG_DONE, ty: wire::REPLY_TYPE_NONE, cookie, payload: vec![] };
        assert_reply_frames(&out, Expect::Transmission, &done);
    }

    #[test]
    fn structured_error_round_trips(cookie: u64, error: u32, msg in prop_oneof!["[^\0]{0,40}", "[aé€]{340,400}"]) {
        let mut out = Vec::new();
        wire::encode_structured_error(&mut out, cookie, error, &msg);
        // Payload: error, u16 message length, message (bounded to 1 KiB).
        let sent = bounded(&msg, 1024);
        let mut payload = error.to_be_bytes().to_vec();
        payload.extend_from_slice(&u16::try_from(sent.len()).unwrap().to_be_bytes());
        payload.extend_from_slice(sent.as_bytes());
        let want = Reply::Chunk { flags: wire::REPLY_FLAG_DONE, ty: wire::REPLY_TYPE_ERROR, cookie, payload };
        assert_reply_frames(&out, Expect::Transmission, &want);
    }

    #[test]
    fn block_status_round_trips(
        cookie: u64, context: u32,
        descs in proptest::collection::vec((1u32.., any::<u32>()), 0..16),
    ) {
        let mut out = Vec::new();
        wire::encode_block_status(&mut out, cookie, context, &descs);
        // Payload: context id, then (length, flags) descriptors.
        let mut payload = context.to_be_bytes().to_vec();
        for (l, f) in &descs {
            payload.extend_from_slice(&l.to_be_bytes());
            payload.extend_from_slice(&f.to_be_bytes());
        }
        let want = Reply::Chunk { flags: wire::REPLY_FLAG_DONE, ty: wire::REPLY_TYPE_BLOCK_STATUS, cookie, payload };
        assert_reply_frames(&out, Expect::Transmission, &want);
    }
}

/// The greeting has no inputs: one fixed message, checked once.
#[test]
fn greeting_decodes_and_prefixes_ask_for_more() {
    let g = wire::encode_greeting();
    // NBDMAGIC, IHAVEOPT, then the handshake flags.
    let dec = |b: &[u8]| -> Option<(u64, u64, u16)> {
        let mut r = Reader::new(b);
        Some((r.u64()?, r.u64()?, r.u16()?))
    };
    assert_eq!(
        dec(&g),
        Some((
            wire::NBDMAGIC,
            wire::IHAVEOPT,
            wire::FLAG_FIXED_NEWSTYLE | wire::FLAG_NO_ZEROES
        ))
    );
    for n in 0..g.len() {
        assert_eq!(dec(&g[..n]), None, "prefix {n}");
    }
}

/// A full header with a bad magic is refused, not taken for "more bytes".
#[test]
fn bad_magics_are_errors_once_the_header_is_there() {
    let mut opt = enc_option(wire::OPT_GO, &[]);
    opt[0] ^= 1;
    assert!(matches!(
        wire::decode_option(&opt),
        Err(WireError::BadMagic(_))
    ));
    let mut req = wire::encode_request(&Request {
        flags: 0,
        command: wire::CMD_READ,
        cookie: 1,
        offset: 0,
        length: 512,
    });
    req[3] ^= 1;
    assert!(matches!(
        wire::decode_request(&req),
        Err(WireError::BadMagic(_))
    ));
    // The largest length is only a promise of more bytes: no panic, no
    // allocation, no value.
    let mut huge = enc_option(wire::OPT_GO, &[1, 2, 3]);
    huge[12..16].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(wire::decode_option(&huge), Ok(None));
}
