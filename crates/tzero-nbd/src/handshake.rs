//! Fixed-newstyle negotiation: greeting, client flags and option haggling up
//! to `NBD_OPT_GO` / `NBD_OPT_EXPORT_NAME`, or to `NBD_OPT_STARTTLS`, after
//! which the server runs the TLS handshake and the haggle starts again, with
//! fresh state, inside TLS ([`TlsPhase`]).
//!
//! Option payloads are read only after their length has been checked against
//! the configured limit; oversized ones are skipped (bounded) and answered
//! with `NBD_REP_ERR_TOO_BIG`. Unknown options, including `EXTENDED_HEADERS`,
//! get `NBD_REP_ERR_UNSUP` and negotiation continues. While TLS is required
//! and not yet up, every option but `STARTTLS` and `ABORT` gets
//! `NBD_REP_ERR_TLS_REQD` (nothing about the exports is told), and
//! `EXPORT_NAME`, which cannot be refused, closes the connection.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tracing::debug;

use crate::device::{advertised_preferred, BlockDevice, ExportProvider};
use crate::error::ConnError;
use crate::request::SessionCaps;
use crate::server::ServerConfig;
use crate::wire::{self, WireError};

/// Context id we hand out for `base:allocation`.
pub const BASE_ALLOCATION_ID: u32 = 1;

/// The result of a successful negotiation.
pub(crate) struct Negotiated {
    pub device: Arc<dyn BlockDevice>,
    pub export: String,
    pub caps: SessionCaps,
}

/// How negotiation ended.
pub(crate) enum Outcome {
    /// Enter transmission.
    Go(Negotiated),
    /// The client aborted (`NBD_OPT_ABORT`) or hung up cleanly.
    Closed,
    /// `STARTTLS` was acknowledged: the TLS handshake comes next.
    StartTls,
}

/// Where a connection stands with TLS, which decides how options are met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsPhase {
    /// The server has no credentials: `STARTTLS` is unsupported.
    Unavailable,
    /// Plaintext, TLS on offer (`--tls on`).
    Offered,
    /// Plaintext, TLS required before anything else (`--tls require`).
    Required,
    /// Inside TLS.
    Active,
}

/// Transmission flags for an export, given what was negotiated.
pub fn transmission_flags(read_only: bool, structured: bool) -> u16 {
    let mut f = wire::TFLAG_HAS_FLAGS
        | wire::TFLAG_SEND_FLUSH
        | wire::TFLAG_SEND_FUA
        | wire::TFLAG_SEND_TRIM
        | wire::TFLAG_SEND_WRITE_ZEROES
        | wire::TFLAG_SEND_FAST_ZERO
        | wire::TFLAG_SEND_CACHE
        | wire::TFLAG_CAN_MULTI_CONN;
    if structured {
        // DF must stay clear without structured replies.
        f |= wire::TFLAG_SEND_DF;
    }
    if read_only {
        f |= wire::TFLAG_READ_ONLY;
    }
    f
}

/// Per-connection negotiation state.
struct State {
    structured: bool,
    no_zeroes: bool,
    /// Export the last SET_META_CONTEXT referred to, if it selected
    /// `base:allocation`.
    meta_export: Option<String>,
}

/// Reads exactly `buf.len()` bytes, turning a clean EOF into `None`.
async fn read_or_eof<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    buf: &mut [u8],
) -> Result<Option<()>, ConnError> {
    match r.read_exact(buf).await {
        Ok(_) => Ok(Some(())),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Reads and drops `n` bytes.
pub(crate) async fn discard<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    n: u64,
) -> Result<(), ConnError> {
    let copied = tokio::io::copy(&mut (&mut *r).take(n), &mut tokio::io::sink()).await?;
    if copied < n {
        return Err(ConnError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(())
}

async fn send<W: AsyncWrite + Unpin>(w: &mut W, out: &mut Vec<u8>) -> Result<(), ConnError> {
    w.write_all(out).await?;
    w.flush().await?;
    out.clear();
    Ok(())
}

/// Sends the greeting and reads the client's flags; `None` if the client
/// left at once. Returns whether the client asked for `NO_ZEROES`.
pub(crate) async fn greet<S>(conn: &mut BufReader<S>) -> Result<Option<bool>, ConnError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    conn.write_all(&wire::encode_greeting()).await?;
    conn.flush().await?;
    let mut raw = [0u8; 4];
    if read_or_eof(conn, &mut raw).await?.is_none() {
        // e.g. an oldstyle client that hung up on our newstyle greeting
        return Ok(None);
    }
    let flags = wire::parse_client_flags(u32::from_be_bytes(raw))
        .ok_or_else(|| ConnError::Protocol("unknown client flags".into()))?;
    Ok(Some(flags.no_zeroes))
}

/// Haggles options until the client picks an export, asks for TLS or
/// leaves. Called again inside TLS, with fresh state: nothing negotiated in
/// plaintext carries over.
pub(crate) async fn negotiate<S>(
    conn: &mut BufReader<S>,
    provider: &dyn ExportProvider,
    cfg: &ServerConfig,
    no_zeroes: bool,
    tls: TlsPhase,
) -> Result<Outcome, ConnError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut st = State {
        structured: false,
        no_zeroes,
        meta_export: None,
    };

    let mut out = Vec::with_capacity(256);
    let mut payload = Vec::new();
    loop {
        let mut hdr = [0u8; wire::OPTION_HEADER_LEN];
        if read_or_eof(conn, &mut hdr).await?.is_none() {
            return Ok(Outcome::Closed);
        }
        let h = wire::parse_option_header(&hdr).map_err(|e| ConnError::Protocol(e.to_string()))?;
        debug!(option = h.option, length = h.length, "option");

        if h.length > cfg.max_option_len {
            if h.option == wire::OPT_EXPORT_NAME {
                // EXPORT_NAME cannot be answered with an error.
                return Err(ConnError::Protocol("oversized export name".into()));
            }
            let skippable = u64::from(h.length) <= cfg.max_discard_len;
            if skippable {
                discard(conn, u64::from(h.length)).await?;
            }
            wire::encode_option_reply(
                &mut out,
                h.option,
                wire::REP_ERR_TOO_BIG,
                b"option too large",
            );
            send(conn, &mut out).await?;
            if !skippable {
                return Err(ConnError::Protocol("oversized option".into()));
            }
            continue;
        }

        // Bounded by max_option_len above.
        let len = usize::try_from(h.length).map_err(|_| ConnError::Protocol("length".into()))?;
        payload.resize(len, 0);
        conn.read_exact(&mut payload).await?;

        if tls == TlsPhase::Required
            && h.option != wire::OPT_STARTTLS
            && h.option != wire::OPT_ABORT
        {
            if h.option == wire::OPT_EXPORT_NAME {
                // It cannot be refused with an error: the spec says close.
                return Err(ConnError::Protocol("EXPORT_NAME before TLS".into()));
            }
            wire::encode_option_reply(&mut out, h.option, wire::REP_ERR_TLS_REQD, b"TLS required");
            send(conn, &mut out).await?;
            continue;
        }

        match h.option {
            wire::OPT_EXPORT_NAME => {
                let name = wire::parse_export_name(&payload)
                    .map_err(|e| ConnError::Protocol(format!("export name: {e}")))?;
                let device = match provider.open(name) {
                    Ok(device) => device,
                    // The spec requires terminating the session here.
                    Err(why) => return Err(ConnError::Protocol(why)),
                };
                let neg = finish(&st, name, device);
                let flags = transmission_flags(neg.caps.read_only, st.structured);
                wire::encode_export_name_reply(&mut out, neg.caps.size, flags, st.no_zeroes);
                send(conn, &mut out).await?;
                return Ok(Outcome::Go(neg));
            }
            wire::OPT_ABORT => {
                wire::encode_option_reply(&mut out, h.option, wire::REP_ACK, &[]);
                // The client may already have gone; that is fine.
                let _ = send(conn, &mut out).await;
                return Ok(Outcome::Closed);
            }
            wire::OPT_LIST => {
                if payload.is_empty() {
                    for name in provider.list() {
                        wire::encode_rep_server(&mut out, h.option, &name);
                    }
                    wire::encode_option_reply(&mut out, h.option, wire::REP_ACK, &[]);
                } else {
                    invalid(&mut out, h.option, "LIST takes no data");
                }
            }
            wire::OPT_STRUCTURED_REPLY => {
                if payload.is_empty() {
                    st.structured = true;
                    wire::encode_option_reply(&mut out, h.option, wire::REP_ACK, &[]);
                } else {
                    invalid(&mut out, h.option, "STRUCTURED_REPLY takes no data");
                }
            }
            wire::OPT_INFO | wire::OPT_GO => match wire::parse_info_request(&payload) {
                Err(e) => invalid(&mut out, h.option, &e.to_string()),
                Ok(req) => match provider.open(req.name) {
                    // The reason (a missing export, or e.g. an engine that refuses all I/O)
                    // reaches the client's error message.
                    Err(why) => {
                        wire::encode_option_reply(
                            &mut out,
                            h.option,
                            wire::REP_ERR_UNKNOWN,
                            why.as_bytes(),
                        );
                    }
                    Ok(device) => {
                        let neg = finish(&st, req.name, device);
                        let flags = transmission_flags(neg.caps.read_only, st.structured);
                        let pref = advertised_preferred(neg.device.preferred_block_size());
                        wire::encode_info_export(&mut out, h.option, neg.caps.size, flags);
                        if req.wants(wire::INFO_NAME) {
                            wire::encode_info_string(&mut out, h.option, wire::INFO_NAME, req.name);
                        }
                        if req.wants(wire::INFO_DESCRIPTION) {
                            if let Some(d) = provider.describe(req.name) {
                                wire::encode_info_string(
                                    &mut out,
                                    h.option,
                                    wire::INFO_DESCRIPTION,
                                    &d,
                                );
                            }
                        }
                        wire::encode_info_block_size(
                            &mut out,
                            h.option,
                            wire::MIN_BLOCK,
                            pref,
                            wire::MAX_PAYLOAD,
                        );
                        wire::encode_option_reply(&mut out, h.option, wire::REP_ACK, &[]);
                        if h.option == wire::OPT_GO {
                            send(conn, &mut out).await?;
                            return Ok(Outcome::Go(neg));
                        }
                    }
                },
            },
            wire::OPT_LIST_META_CONTEXT | wire::OPT_SET_META_CONTEXT => {
                meta_context(&mut st, provider, h.option, &payload, &mut out);
            }
            wire::OPT_STARTTLS => match tls {
                _ if !payload.is_empty() => invalid(&mut out, h.option, "STARTTLS takes no data"),
                TlsPhase::Active => invalid(&mut out, h.option, "TLS is already negotiated"),
                TlsPhase::Unavailable => wire::encode_option_reply(
                    &mut out,
                    h.option,
                    wire::REP_ERR_UNSUP,
                    b"TLS not configured on this server",
                ),
                TlsPhase::Offered | TlsPhase::Required => {
                    wire::encode_option_reply(&mut out, h.option, wire::REP_ACK, &[]);
                    send(conn, &mut out).await?;
                    return Ok(Outcome::StartTls);
                }
            },
            _ => {
                // EXTENDED_HEADERS, PEEK_EXPORT and anything new.
                wire::encode_option_reply(
                    &mut out,
                    h.option,
                    wire::REP_ERR_UNSUP,
                    b"option not supported",
                );
            }
        }
        send(conn, &mut out).await?;
    }
}

fn invalid(out: &mut Vec<u8>, option: u32, msg: &str) {
    wire::encode_option_reply(out, option, wire::REP_ERR_INVALID, msg.as_bytes());
}

/// Builds the session for `name` from the negotiation state.
fn finish(st: &State, name: &str, device: Arc<dyn BlockDevice>) -> Negotiated {
    let base_allocation = match &st.meta_export {
        Some(e) if e == name && st.structured => Some(BASE_ALLOCATION_ID),
        _ => None,
    };
    let caps = SessionCaps {
        size: device.size(),
        read_only: device.read_only(),
        structured: st.structured,
        base_allocation,
    };
    Negotiated {
        device,
        export: name.to_owned(),
        caps,
    }
}

/// Handles LIST_META_CONTEXT and SET_META_CONTEXT.
fn meta_context(
    st: &mut State,
    provider: &dyn ExportProvider,
    option: u32,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    let set = option == wire::OPT_SET_META_CONTEXT;
    if set {
        // SET replaces the previous selection even when it fails.
        st.meta_export = None;
        if !st.structured {
            invalid(out, option, "structured replies not negotiated");
            return;
        }
    }
    let req = match wire::parse_meta_context_request(payload) {
        Ok(r) => r,
        Err(WireError::StringTooLong) => {
            wire::encode_option_reply(out, option, wire::REP_ERR_TOO_BIG, b"string too long");
            return;
        }
        Err(e) => {
            invalid(out, option, &e.to_string());
            return;
        }
    };
    if let Err(why) = provider.open(req.export) {
        wire::encode_option_reply(out, option, wire::REP_ERR_UNKNOWN, why.as_bytes());
        return;
    }
    if req.queries.iter().any(|q| !q.contains(':')) {
        invalid(out, option, "query lacks a namespace");
        return;
    }
    let selected = if set {
        req.queries.contains(&wire::BASE_ALLOCATION)
    } else {
        // LIST: no queries means "everything"; "base:" is the wildcard.
        req.queries.is_empty()
            || req
                .queries
                .iter()
                .any(|q| *q == "base:" || *q == wire::BASE_ALLOCATION)
    };
    if selected {
        let id = if set { BASE_ALLOCATION_ID } else { 0 };
        wire::encode_rep_meta_context(out, option, id, wire::BASE_ALLOCATION);
        if set {
            st.meta_export = Some(req.export.to_owned());
        }
    }
    wire::encode_option_reply(out, option, wire::REP_ACK, &[]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags() {
        let f = transmission_flags(false, false);
        assert_eq!(f & wire::TFLAG_SEND_DF, 0);
        assert_eq!(f & wire::TFLAG_READ_ONLY, 0);
        assert_ne!(f & wire::TFLAG_CAN_MULTI_CONN, 0);
        let f = transmission_flags(true, true);
        assert_ne!(f & wire::TFLAG_SEND_DF, 0);
        assert_ne!(f & wire::TFLAG_READ_ONLY, 0);
        assert_ne!(f & wire::TFLAG_HAS_FLAGS, 0);
    }
}
