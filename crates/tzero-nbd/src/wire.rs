//! NBD wire format: protocol constants, pure parsers for what the client
//! sends and encoders for what the server sends.
//!
//! Everything here works on byte slices and never touches a socket, so it can
//! be unit-tested and fuzzed in isolation. Parsers validate every length
//! against the bytes actually present before using it, so nothing is ever
//! allocated with a size chosen by the client.

use thiserror::Error;

// ---- magics -------------------------------------------------------------

/// `NBDMAGIC`, first 8 bytes the server sends.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`, second greeting word and the magic of every option request.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Magic of every option reply during fixed newstyle negotiation.
pub const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Magic of every transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Magic of a structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

// ---- handshake flags ----------------------------------------------------

/// Server handshake flag: fixed newstyle supported.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// Server handshake flag: may omit the 124 zero bytes after EXPORT_NAME.
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flag: client speaks fixed newstyle.
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
/// Client flag: client does not want the 124 zero bytes.
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;
/// Every client flag this server understands; any other bit is fatal.
pub const KNOWN_CLIENT_FLAGS: u32 = FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES;

// ---- transmission flags -------------------------------------------------

pub const TFLAG_HAS_FLAGS: u16 = 1 << 0;
pub const TFLAG_READ_ONLY: u16 = 1 << 1;
pub const TFLAG_SEND_FLUSH: u16 = 1 << 2;
pub const TFLAG_SEND_FUA: u16 = 1 << 3;
pub const TFLAG_ROTATIONAL: u16 = 1 << 4;
pub const TFLAG_SEND_TRIM: u16 = 1 << 5;
pub const TFLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub const TFLAG_SEND_DF: u16 = 1 << 7;
pub const TFLAG_CAN_MULTI_CONN: u16 = 1 << 8;
pub const TFLAG_SEND_RESIZE: u16 = 1 << 9;
pub const TFLAG_SEND_CACHE: u16 = 1 << 10;
pub const TFLAG_SEND_FAST_ZERO: u16 = 1 << 11;

// ---- options ------------------------------------------------------------

pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_PEEK_EXPORT: u32 = 4;
pub const OPT_STARTTLS: u32 = 5;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const OPT_LIST_META_CONTEXT: u32 = 9;
pub const OPT_SET_META_CONTEXT: u32 = 10;
pub const OPT_EXTENDED_HEADERS: u32 = 11;

// ---- option replies -----------------------------------------------------

pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_META_CONTEXT: u32 = 4;
pub const REP_ERR_UNSUP: u32 = 0x8000_0001;
pub const REP_ERR_POLICY: u32 = 0x8000_0002;
pub const REP_ERR_INVALID: u32 = 0x8000_0003;
pub const REP_ERR_PLATFORM: u32 = 0x8000_0004;
pub const REP_ERR_TLS_REQD: u32 = 0x8000_0005;
pub const REP_ERR_UNKNOWN: u32 = 0x8000_0006;
pub const REP_ERR_SHUTDOWN: u32 = 0x8000_0007;
pub const REP_ERR_BLOCK_SIZE_REQD: u32 = 0x8000_0008;
pub const REP_ERR_TOO_BIG: u32 = 0x8000_0009;

// ---- NBD_INFO types -----------------------------------------------------

pub const INFO_EXPORT: u16 = 0;
pub const INFO_NAME: u16 = 1;
pub const INFO_DESCRIPTION: u16 = 2;
pub const INFO_BLOCK_SIZE: u16 = 3;

// ---- commands and command flags -----------------------------------------

pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_CACHE: u16 = 5;
pub const CMD_WRITE_ZEROES: u16 = 6;
pub const CMD_BLOCK_STATUS: u16 = 7;

pub const CMD_FLAG_FUA: u16 = 1 << 0;
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
pub const CMD_FLAG_DF: u16 = 1 << 2;
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;
pub const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;

// ---- structured replies -------------------------------------------------

pub const REPLY_FLAG_DONE: u16 = 1 << 0;
pub const REPLY_TYPE_NONE: u16 = 0;
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
pub const REPLY_TYPE_ERROR: u16 = 0x8001;
pub const REPLY_TYPE_ERROR_OFFSET: u16 = 0x8002;

/// `base:allocation` state bits.
pub const STATE_HOLE: u32 = 1 << 0;
pub const STATE_ZERO: u32 = 1 << 1;

// ---- error numbers (protocol values, not the host's errno) ---------------

pub const EPERM: u32 = 1;
pub const EIO: u32 = 5;
pub const ENOMEM: u32 = 12;
pub const EINVAL: u32 = 22;
pub const ENOSPC: u32 = 28;
pub const EOVERFLOW: u32 = 75;
pub const ENOTSUP: u32 = 95;
pub const ESHUTDOWN: u32 = 108;

// ---- sizes --------------------------------------------------------------

/// Size of the option request header (magic, option, length).
pub const OPTION_HEADER_LEN: usize = 16;
/// Size of a transmission request header.
pub const REQUEST_HEADER_LEN: usize = 28;
/// Size of a simple reply header.
pub const SIMPLE_REPLY_LEN: usize = 16;
/// Size of a structured reply chunk header.
pub const STRUCTURED_HEADER_LEN: usize = 20;
/// Maximum length of a string (export name, query) the spec allows.
pub const MAX_STRING_LEN: usize = 4096;
/// Largest READ/WRITE payload this server accepts, advertised as the
/// maximum block size.
pub const MAX_PAYLOAD: u32 = 32 * 1024 * 1024;
/// Minimum block size we advertise.
pub const MIN_BLOCK: u32 = 512;
/// The only metadata context we implement.
pub const BASE_ALLOCATION: &str = "base:allocation";

/// A violation of the wire format by the client.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    #[error("bad magic {0:#x}")]
    BadMagic(u64),
    #[error("truncated message")]
    Truncated,
    #[error("trailing bytes after message")]
    Trailing,
    #[error("string is not valid UTF-8 or contains NUL")]
    BadString,
    #[error("string longer than {MAX_STRING_LEN} bytes")]
    StringTooLong,
}

/// A tiny forward-only cursor over a byte slice; every read checks bounds.
struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A u32 length followed by that many bytes of string.
    fn string(&mut self) -> Result<&'a str, WireError> {
        let len = self.u32()?;
        let len = usize::try_from(len).map_err(|_| WireError::Truncated)?;
        if len > MAX_STRING_LEN {
            return Err(WireError::StringTooLong);
        }
        to_str(self.take(len)?)
    }

    fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn finish(&self) -> Result<(), WireError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(WireError::Trailing)
        }
    }
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

fn be_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// Strings on the wire are UTF-8 without NUL.
fn to_str(b: &[u8]) -> Result<&str, WireError> {
    let s = std::str::from_utf8(b).map_err(|_| WireError::BadString)?;
    if s.contains('\0') {
        return Err(WireError::BadString);
    }
    Ok(s)
}

// ---- handshake ----------------------------------------------------------

/// The greeting the server sends as soon as a client connects.
pub fn encode_greeting() -> [u8; 18] {
    let mut out = [0u8; 18];
    out[..8].copy_from_slice(&NBDMAGIC.to_be_bytes());
    out[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    out[16..].copy_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    out
}

/// Client flags after validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientFlags {
    pub fixed_newstyle: bool,
    pub no_zeroes: bool,
}

/// Parses the client's 32-bit flags; unknown bits are a protocol violation
/// after which the spec requires us to drop the connection.
pub fn parse_client_flags(raw: u32) -> Option<ClientFlags> {
    if raw & !KNOWN_CLIENT_FLAGS != 0 {
        return None;
    }
    Some(ClientFlags {
        fixed_newstyle: raw & FLAG_C_FIXED_NEWSTYLE != 0,
        no_zeroes: raw & FLAG_C_NO_ZEROES != 0,
    })
}

/// An option request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    pub option: u32,
    pub length: u32,
}

/// Parses an option header, checking the `IHAVEOPT` magic.
pub fn parse_option_header(b: &[u8; OPTION_HEADER_LEN]) -> Result<OptionHeader, WireError> {
    let magic = be_u64(&b[0..8]);
    if magic != IHAVEOPT {
        return Err(WireError::BadMagic(magic));
    }
    Ok(OptionHeader {
        option: be_u32(&b[8..12]),
        length: be_u32(&b[12..16]),
    })
}

/// Payload of `NBD_OPT_EXPORT_NAME`: the whole payload is the name.
pub fn parse_export_name(payload: &[u8]) -> Result<&str, WireError> {
    if payload.len() > MAX_STRING_LEN {
        return Err(WireError::StringTooLong);
    }
    to_str(payload)
}

/// Payload of `NBD_OPT_INFO` / `NBD_OPT_GO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoRequest<'a> {
    pub name: &'a str,
    /// Requested `NBD_INFO_*` items, as sent (unknown ones included).
    pub requests: Vec<u16>,
}

impl InfoRequest<'_> {
    /// Whether the client explicitly asked for information item `ty`.
    pub fn wants(&self, ty: u16) -> bool {
        self.requests.contains(&ty)
    }
}

/// Parses the `NBD_OPT_INFO`/`NBD_OPT_GO` payload: name, count, items.
pub fn parse_info_request(payload: &[u8]) -> Result<InfoRequest<'_>, WireError> {
    let mut c = Cursor::new(payload);
    let name = c.string()?;
    let n = usize::from(c.u16()?);
    // Check the count against the bytes present before allocating.
    if c.remaining() != n * 2 {
        return Err(if c.remaining() < n * 2 {
            WireError::Truncated
        } else {
            WireError::Trailing
        });
    }
    let mut requests = Vec::with_capacity(n);
    for _ in 0..n {
        requests.push(c.u16()?);
    }
    c.finish()?;
    Ok(InfoRequest { name, requests })
}

/// Payload of `NBD_OPT_LIST_META_CONTEXT` / `NBD_OPT_SET_META_CONTEXT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaContextRequest<'a> {
    pub export: &'a str,
    pub queries: Vec<&'a str>,
}

/// Parses the meta-context payload: export name, query count, queries.
pub fn parse_meta_context_request(payload: &[u8]) -> Result<MetaContextRequest<'_>, WireError> {
    let mut c = Cursor::new(payload);
    let export = c.string()?;
    let n = c.u32()?;
    // Each query needs at least its 4-byte length, so a count larger than
    // remaining/4 cannot be honest; reject it before looping.
    let n = usize::try_from(n).map_err(|_| WireError::Truncated)?;
    if n > c.remaining() / 4 {
        return Err(WireError::Truncated);
    }
    let mut queries = Vec::with_capacity(n);
    for _ in 0..n {
        queries.push(c.string()?);
    }
    c.finish()?;
    Ok(MetaContextRequest { export, queries })
}

/// Appends one option reply (header plus data) to `out`.
pub fn encode_option_reply(out: &mut Vec<u8>, option: u32, reply: u32, data: &[u8]) {
    // Callers only ever pass data we generated ourselves (bounded names,
    // fixed-size infos); saturate rather than panic if that ever changes.
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&OPT_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&reply.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(data);
}

/// Appends an option reply whose data is a u32-length-prefixed string
/// (`NBD_REP_SERVER`) or an id followed by a string (`NBD_REP_META_CONTEXT`).
pub fn encode_rep_server(out: &mut Vec<u8>, option: u32, name: &str) {
    let name = truncate_str(name, MAX_STRING_LEN);
    let mut data = Vec::with_capacity(4 + name.len());
    data.extend_from_slice(&u32::try_from(name.len()).unwrap_or(0).to_be_bytes());
    data.extend_from_slice(name.as_bytes());
    encode_option_reply(out, option, REP_SERVER, &data);
}

/// Appends an `NBD_REP_META_CONTEXT` reply.
pub fn encode_rep_meta_context(out: &mut Vec<u8>, option: u32, id: u32, name: &str) {
    let mut data = Vec::with_capacity(4 + name.len());
    data.extend_from_slice(&id.to_be_bytes());
    data.extend_from_slice(name.as_bytes());
    encode_option_reply(out, option, REP_META_CONTEXT, &data);
}

/// Appends `NBD_REP_INFO` / `NBD_INFO_EXPORT`.
pub fn encode_info_export(out: &mut Vec<u8>, option: u32, size: u64, flags: u16) {
    let mut data = [0u8; 12];
    data[..2].copy_from_slice(&INFO_EXPORT.to_be_bytes());
    data[2..10].copy_from_slice(&size.to_be_bytes());
    data[10..].copy_from_slice(&flags.to_be_bytes());
    encode_option_reply(out, option, REP_INFO, &data);
}

/// Appends `NBD_REP_INFO` carrying a string (`NBD_INFO_NAME` or
/// `NBD_INFO_DESCRIPTION`).
pub fn encode_info_string(out: &mut Vec<u8>, option: u32, ty: u16, s: &str) {
    let s = truncate_str(s, MAX_STRING_LEN);
    let mut data = Vec::with_capacity(2 + s.len());
    data.extend_from_slice(&ty.to_be_bytes());
    data.extend_from_slice(s.as_bytes());
    encode_option_reply(out, option, REP_INFO, &data);
}

/// Appends `NBD_REP_INFO` / `NBD_INFO_BLOCK_SIZE`.
pub fn encode_info_block_size(out: &mut Vec<u8>, option: u32, min: u32, pref: u32, max: u32) {
    let mut data = [0u8; 14];
    data[..2].copy_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    data[2..6].copy_from_slice(&min.to_be_bytes());
    data[6..10].copy_from_slice(&pref.to_be_bytes());
    data[10..].copy_from_slice(&max.to_be_bytes());
    encode_option_reply(out, option, REP_INFO, &data);
}

/// The reply to `NBD_OPT_EXPORT_NAME`: size, flags, and (unless the client
/// negotiated `NO_ZEROES`) 124 bytes of zero padding.
pub fn encode_export_name_reply(out: &mut Vec<u8>, size: u64, flags: u16, no_zeroes: bool) {
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    if !no_zeroes {
        out.extend_from_slice(&[0u8; 124]);
    }
}

/// Cuts `s` to at most `max` bytes on a char boundary.
fn truncate_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

// ---- transmission -------------------------------------------------------

/// A transmission request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub flags: u16,
    pub command: u16,
    pub cookie: u64,
    pub offset: u64,
    pub length: u32,
}

/// Parses a request header; a bad magic means the stream is out of sync
/// and the connection must be dropped.
pub fn parse_request(b: &[u8; REQUEST_HEADER_LEN]) -> Result<Request, WireError> {
    let magic = be_u32(&b[0..4]);
    if magic != REQUEST_MAGIC {
        return Err(WireError::BadMagic(u64::from(magic)));
    }
    Ok(Request {
        flags: be_u16(&b[4..6]),
        command: be_u16(&b[6..8]),
        cookie: be_u64(&b[8..16]),
        offset: be_u64(&b[16..24]),
        length: be_u32(&b[24..28]),
    })
}

/// Encodes a request header (used by tests and fuzzers acting as client).
pub fn encode_request(r: &Request) -> [u8; REQUEST_HEADER_LEN] {
    let mut out = [0u8; REQUEST_HEADER_LEN];
    out[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    out[4..6].copy_from_slice(&r.flags.to_be_bytes());
    out[6..8].copy_from_slice(&r.command.to_be_bytes());
    out[8..16].copy_from_slice(&r.cookie.to_be_bytes());
    out[16..24].copy_from_slice(&r.offset.to_be_bytes());
    out[24..28].copy_from_slice(&r.length.to_be_bytes());
    out
}

/// Writes a simple reply header into the first 16 bytes of `out`.
/// Callers reserve that prefix in a data buffer so header and payload go
/// out in one write.
pub fn put_simple_reply(out: &mut [u8], error: u32, cookie: u64) {
    out[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    out[4..8].copy_from_slice(&error.to_be_bytes());
    out[8..16].copy_from_slice(&cookie.to_be_bytes());
}

/// Appends a complete simple reply without payload.
pub fn encode_simple_reply(out: &mut Vec<u8>, error: u32, cookie: u64) {
    let mut h = [0u8; SIMPLE_REPLY_LEN];
    put_simple_reply(&mut h, error, cookie);
    out.extend_from_slice(&h);
}

/// Writes a structured reply chunk header into the first 20 bytes of `out`.
pub fn put_structured_header(out: &mut [u8], flags: u16, ty: u16, cookie: u64, length: u32) {
    out[0..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    out[4..6].copy_from_slice(&flags.to_be_bytes());
    out[6..8].copy_from_slice(&ty.to_be_bytes());
    out[8..16].copy_from_slice(&cookie.to_be_bytes());
    out[16..20].copy_from_slice(&length.to_be_bytes());
}

/// Appends a structured chunk header.
pub fn encode_structured_header(out: &mut Vec<u8>, flags: u16, ty: u16, cookie: u64, len: u32) {
    let mut h = [0u8; STRUCTURED_HEADER_LEN];
    put_structured_header(&mut h, flags, ty, cookie, len);
    out.extend_from_slice(&h);
}

/// Appends a final `NBD_REPLY_TYPE_ERROR` chunk with a short message.
pub fn encode_structured_error(out: &mut Vec<u8>, cookie: u64, error: u32, msg: &str) {
    let msg = truncate_str(msg, 1024);
    let mlen = u16::try_from(msg.len()).unwrap_or(0);
    let msg = &msg[..usize::from(mlen)];
    encode_structured_header(
        out,
        REPLY_FLAG_DONE,
        REPLY_TYPE_ERROR,
        cookie,
        6 + u32::from(mlen),
    );
    out.extend_from_slice(&error.to_be_bytes());
    out.extend_from_slice(&mlen.to_be_bytes());
    out.extend_from_slice(msg.as_bytes());
}

/// Appends a final `NBD_REPLY_TYPE_NONE` chunk.
pub fn encode_structured_done(out: &mut Vec<u8>, cookie: u64) {
    encode_structured_header(out, REPLY_FLAG_DONE, REPLY_TYPE_NONE, cookie, 0);
}

/// Appends a final `NBD_REPLY_TYPE_BLOCK_STATUS` chunk for one context.
pub fn encode_block_status(out: &mut Vec<u8>, cookie: u64, context: u32, descs: &[(u32, u32)]) {
    let len = 4 + descs.len() * 8;
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    encode_structured_header(out, REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, cookie, len);
    out.extend_from_slice(&context.to_be_bytes());
    for (length, flags) in descs {
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(&flags.to_be_bytes());
    }
}

// ---- incremental decoding ----------------------------------------------

// The server reads fixed-size headers with `read_exact`, so it never holds a
// partial message. These decode from the front of a byte buffer instead,
// `Ok(None)` meaning "more bytes needed", for callers that hold a stream in
// memory (the fuzzers, the wire property tests, a client). A header is
// judged only once all of it is there: a prefix is never an error.

/// One option request decoded from the front of a buffer: its header, its
/// payload (borrowed from the buffer) and the bytes taken.
pub type DecodedOption<'a> = (OptionHeader, &'a [u8], usize);

/// Decodes one option request, header and then `length` bytes of payload,
/// from the front of `buf`: the header, the payload and the bytes taken.
pub fn decode_option(buf: &[u8]) -> Result<Option<DecodedOption<'_>>, WireError> {
    let Some(h) = buf.first_chunk::<OPTION_HEADER_LEN>() else {
        return Ok(None);
    };
    let hdr = parse_option_header(h)?;
    // A length past the address space can never be satisfied.
    let end = usize::try_from(hdr.length)
        .ok()
        .and_then(|l| l.checked_add(OPTION_HEADER_LEN))
        .ok_or(WireError::Truncated)?;
    Ok(buf.get(OPTION_HEADER_LEN..end).map(|p| (hdr, p, end)))
}

/// Decodes one request header from the front of `buf` (a write's payload,
/// `length` bytes, follows it and is not included).
pub fn decode_request(buf: &[u8]) -> Result<Option<(Request, usize)>, WireError> {
    let Some(h) = buf.first_chunk::<REQUEST_HEADER_LEN>() else {
        return Ok(None);
    };
    Ok(Some((parse_request(h)?, REQUEST_HEADER_LEN)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opt_header(magic: u64, opt: u32, len: u32) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&magic.to_be_bytes());
        b[8..12].copy_from_slice(&opt.to_be_bytes());
        b[12..].copy_from_slice(&len.to_be_bytes());
        b
    }

    #[test]
    fn greeting_layout() {
        let g = encode_greeting();
        assert_eq!(&g[..8], b"NBDMAGIC");
        assert_eq!(&g[8..16], b"IHAVEOPT");
        assert_eq!(&g[16..], &[0, 3]);
    }

    #[test]
    fn client_flags() {
        assert_eq!(
            parse_client_flags(3),
            Some(ClientFlags {
                fixed_newstyle: true,
                no_zeroes: true
            })
        );
        assert_eq!(
            parse_client_flags(0),
            Some(ClientFlags {
                fixed_newstyle: false,
                no_zeroes: false
            })
        );
        assert_eq!(parse_client_flags(4), None);
        assert_eq!(parse_client_flags(0x8000_0001), None);
    }

    #[test]
    fn option_header_ok_and_bad_magic() {
        let h = parse_option_header(&opt_header(IHAVEOPT, OPT_GO, 42)).unwrap();
        assert_eq!(
            h,
            OptionHeader {
                option: OPT_GO,
                length: 42
            }
        );
        assert_eq!(
            parse_option_header(&opt_header(NBDMAGIC, OPT_GO, 0)),
            Err(WireError::BadMagic(NBDMAGIC))
        );
    }

    fn info_payload(name: &[u8], declared_len: u32, items: &[u16], count: u16) -> Vec<u8> {
        let mut p = declared_len.to_be_bytes().to_vec();
        p.extend_from_slice(name);
        p.extend_from_slice(&count.to_be_bytes());
        for i in items {
            p.extend_from_slice(&i.to_be_bytes());
        }
        p
    }

    #[test]
    fn info_request_parses() {
        let p = info_payload(b"vol1", 4, &[INFO_NAME, INFO_BLOCK_SIZE], 2);
        let r = parse_info_request(&p).unwrap();
        assert_eq!(r.name, "vol1");
        assert!(r.wants(INFO_BLOCK_SIZE));
        assert!(!r.wants(INFO_DESCRIPTION));
        // empty name, no items
        let p = info_payload(b"", 0, &[], 0);
        assert_eq!(parse_info_request(&p).unwrap().name, "");
    }

    #[test]
    fn info_request_rejects_bad_lengths() {
        // name length beyond payload
        let p = info_payload(b"vol1", 400, &[], 0);
        assert_eq!(parse_info_request(&p), Err(WireError::Truncated));
        // count larger than items present
        let p = info_payload(b"vol1", 4, &[1], 5);
        assert_eq!(parse_info_request(&p), Err(WireError::Truncated));
        // trailing junk
        let mut p = info_payload(b"vol1", 4, &[1], 1);
        p.push(0);
        assert_eq!(parse_info_request(&p), Err(WireError::Trailing));
        // missing count
        assert_eq!(parse_info_request(&[0, 0, 0, 0]), Err(WireError::Truncated));
        // huge name length must not allocate or panic
        let p = info_payload(b"", u32::MAX, &[], 0);
        assert_eq!(parse_info_request(&p), Err(WireError::StringTooLong));
        // invalid UTF-8 and NUL
        let p = info_payload(&[0xff, 0xfe], 2, &[], 0);
        assert_eq!(parse_info_request(&p), Err(WireError::BadString));
        let p = info_payload(b"a\0", 2, &[], 0);
        assert_eq!(parse_info_request(&p), Err(WireError::BadString));
    }

    fn meta_payload(export: &str, queries: &[&str], count: u32) -> Vec<u8> {
        let mut p = u32::try_from(export.len()).unwrap().to_be_bytes().to_vec();
        p.extend_from_slice(export.as_bytes());
        p.extend_from_slice(&count.to_be_bytes());
        for q in queries {
            p.extend_from_slice(&u32::try_from(q.len()).unwrap().to_be_bytes());
            p.extend_from_slice(q.as_bytes());
        }
        p
    }

    #[test]
    fn meta_context_parses() {
        let p = meta_payload("v", &["base:allocation", "qemu:dirty"], 2);
        let r = parse_meta_context_request(&p).unwrap();
        assert_eq!(r.export, "v");
        assert_eq!(r.queries, vec!["base:allocation", "qemu:dirty"]);
        let p = meta_payload("v", &[], 0);
        assert!(parse_meta_context_request(&p).unwrap().queries.is_empty());
    }

    #[test]
    fn meta_context_rejects_lies() {
        // Count far larger than the payload could hold: rejected before
        // any allocation.
        let p = meta_payload("v", &["base:"], u32::MAX);
        assert_eq!(parse_meta_context_request(&p), Err(WireError::Truncated));
        let p = meta_payload("v", &["base:"], 2);
        assert_eq!(parse_meta_context_request(&p), Err(WireError::Truncated));
        let mut p = meta_payload("v", &["base:"], 1);
        p.extend_from_slice(&[1, 2, 3]);
        assert_eq!(parse_meta_context_request(&p), Err(WireError::Trailing));
        assert_eq!(parse_meta_context_request(&[]), Err(WireError::Truncated));
    }

    #[test]
    fn export_name() {
        assert_eq!(parse_export_name(b"abc"), Ok("abc"));
        assert_eq!(parse_export_name(b""), Ok(""));
        assert_eq!(parse_export_name(&[0xc3]), Err(WireError::BadString));
        assert_eq!(
            parse_export_name(&vec![b'a'; MAX_STRING_LEN + 1]),
            Err(WireError::StringTooLong)
        );
    }

    #[test]
    fn request_roundtrip_and_bad_magic() {
        let r = Request {
            flags: CMD_FLAG_FUA,
            command: CMD_WRITE,
            cookie: 0x0102_0304_0506_0708,
            offset: 1 << 40,
            length: 4096,
        };
        let b = encode_request(&r);
        assert_eq!(parse_request(&b), Ok(r));
        let mut bad = b;
        bad[0] ^= 1;
        assert!(matches!(parse_request(&bad), Err(WireError::BadMagic(_))));
    }

    #[test]
    fn option_reply_encoding() {
        let mut out = Vec::new();
        encode_option_reply(&mut out, OPT_LIST, REP_ACK, &[]);
        assert_eq!(out.len(), 20);
        assert_eq!(&out[..8], &OPT_REPLY_MAGIC.to_be_bytes());
        assert_eq!(&out[8..12], &OPT_LIST.to_be_bytes());
        assert_eq!(&out[12..16], &REP_ACK.to_be_bytes());
        assert_eq!(&out[16..20], &[0, 0, 0, 0]);

        out.clear();
        encode_rep_server(&mut out, OPT_LIST, "disk");
        assert_eq!(&out[16..20], &8u32.to_be_bytes());
        assert_eq!(&out[20..24], &4u32.to_be_bytes());
        assert_eq!(&out[24..], b"disk");

        out.clear();
        encode_info_export(&mut out, OPT_GO, 1 << 30, 0x1234);
        assert_eq!(&out[16..20], &12u32.to_be_bytes());
        assert_eq!(&out[20..22], &INFO_EXPORT.to_be_bytes());
        assert_eq!(&out[22..30], &(1u64 << 30).to_be_bytes());
        assert_eq!(&out[30..32], &0x1234u16.to_be_bytes());

        out.clear();
        encode_info_block_size(&mut out, OPT_GO, 512, 65536, MAX_PAYLOAD);
        assert_eq!(&out[16..20], &14u32.to_be_bytes());
        assert_eq!(&out[26..30], &65536u32.to_be_bytes());

        out.clear();
        encode_export_name_reply(&mut out, 10, 1, false);
        assert_eq!(out.len(), 8 + 2 + 124);
        out.clear();
        encode_export_name_reply(&mut out, 10, 1, true);
        assert_eq!(out.len(), 10);
    }

    #[test]
    fn transmission_reply_encoding() {
        let mut out = Vec::new();
        encode_simple_reply(&mut out, EINVAL, 7);
        assert_eq!(&out[..4], &SIMPLE_REPLY_MAGIC.to_be_bytes());
        assert_eq!(&out[4..8], &EINVAL.to_be_bytes());
        assert_eq!(&out[8..16], &7u64.to_be_bytes());

        out.clear();
        encode_structured_error(&mut out, 9, EIO, "boom");
        assert_eq!(&out[..4], &STRUCTURED_REPLY_MAGIC.to_be_bytes());
        assert_eq!(&out[4..6], &REPLY_FLAG_DONE.to_be_bytes());
        assert_eq!(&out[6..8], &REPLY_TYPE_ERROR.to_be_bytes());
        assert_eq!(&out[16..20], &10u32.to_be_bytes());
        assert_eq!(&out[20..24], &EIO.to_be_bytes());
        assert_eq!(&out[24..26], &4u16.to_be_bytes());
        assert_eq!(&out[26..], b"boom");

        out.clear();
        encode_block_status(&mut out, 1, 5, &[(4096, STATE_HOLE | STATE_ZERO), (512, 0)]);
        assert_eq!(&out[16..20], &20u32.to_be_bytes());
        assert_eq!(&out[20..24], &5u32.to_be_bytes());
        assert_eq!(&out[24..28], &4096u32.to_be_bytes());
        assert_eq!(&out[28..32], &3u32.to_be_bytes());
        assert_eq!(out.len(), 20 + 20);

        out.clear();
        encode_structured_done(&mut out, 3);
        assert_eq!(out.len(), 20);
        assert_eq!(&out[6..8], &REPLY_TYPE_NONE.to_be_bytes());
    }

    #[test]
    fn truncate_on_char_boundary() {
        assert_eq!(truncate_str("héllo", 2), "h");
        assert_eq!(truncate_str("abc", 10), "abc");
    }
}
