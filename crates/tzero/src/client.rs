//! A small HTTP/1.1 client for the daemon's API, over the unix socket, TCP,
//! or TCP with TLS (`https://`, rustls; the CA from `--api-ca`, else the
//! system's bundle).
//!
//! One connection per request keeps it simple and is plenty for a CLI; hyper's
//! low-level `client::conn` is used directly because axum already brings hyper
//! in, where a full client library would double the build. API failures come
//! back as [`ClientError::Api`] carrying the server's stable error code.

use std::path::PathBuf;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{header, Method, Request};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api_types::{
    CreatePool, CreateVolume, ErrorBody, Establish, EstablishGroup, Flash, Freeze, Pool, Resync,
    Reverse, RotatedToken, SetRate, TargetInhibit, TokenRole, Unfreeze, Volume,
};

/// How long to wait for a TCP connection before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the daemon's API is.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// The unix socket in the data directory; needs no token.
    Unix(PathBuf),
    /// `host:port` over TCP, with the bearer token if one is known.
    Tcp { addr: String, token: Option<String> },
    /// `host:port` over TLS; the server's certificate must chain to `ca`
    /// (PEM), or to the system's CA bundle when `None`.
    Https {
        addr: String,
        token: Option<String>,
        ca: Option<PathBuf>,
    },
}

/// The system's CA bundle (Debian's `ca-certificates`), used for `https://`
/// without `--api-ca`.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "{}", p.display()),
            Endpoint::Tcp { addr, .. } => write!(f, "http://{addr}"),
            Endpoint::Https { addr, .. } => write!(f, "https://{addr}"),
        }
    }
}

/// Failures of an API call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("cannot connect to the tzero daemon at {endpoint} (is `tzero serve` running?)")]
    Connect {
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot use the CA certificates {}", path.display())]
    Ca {
        path: PathBuf,
        #[source]
        source: tzero_nbd::TlsError,
    },
    #[error(
        "TLS handshake with the tzero daemon at {endpoint} failed \
         (is its certificate signed by the CA given with --api-ca?)"
    )]
    Tls {
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP exchange with the tzero daemon failed")]
    Http(#[source] hyper::Error),
    /// The daemon answered with an error; `message` is its own.
    #[error("{message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("unexpected response from the tzero daemon (HTTP {status})")]
    Decode {
        status: u16,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot encode the request")]
    Encode(#[source] serde_json::Error),
    #[error("invalid API URL {0:?}: expected http://HOST:PORT or https://HOST:PORT")]
    Url(String),
}

impl ClientError {
    /// The server's error code, if the daemon answered with an error.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// Turns `http://host:port[/]` (or a bare `host:port`) into `host:port`.
/// Only plain HTTP; see [`parse_api_url`] for `https://`.
pub fn parse_api_addr(url: &str) -> Result<String, ClientError> {
    match parse_api_url(url)? {
        (addr, false) => Ok(addr),
        (_, true) => Err(ClientError::Url(url.to_owned())),
    }
}

/// Turns `http[s]://host:port[/]` (or a bare `host:port`, plain HTTP) into
/// `host:port` and whether TLS is spoken. Other schemes are refused rather
/// than sent somewhere unexpected.
pub fn parse_api_url(url: &str) -> Result<(String, bool), ClientError> {
    let bad = || ClientError::Url(url.to_owned());
    let (rest, https) = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (rest, false),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => (rest, true),
        Some(_) => return Err(bad()),
        None => (url, false),
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty()
        || authority.contains(['/', '?', '#', '@'])
        || authority.chars().any(char::is_whitespace)
    {
        return Err(bad());
    }
    // A port is required after the last ':' (and after ']' for IPv6).
    let port = authority
        .rsplit_once(':')
        .filter(|(host, _)| !host.is_empty() && !host.ends_with('['))
        .map(|(_, port)| port)
        .ok_or_else(bad)?;
    if port.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok((authority.to_owned(), https))
}

/// The rustls client settings for `https://`: roots from `ca` or the system
/// bundle, no client certificate.
fn tls_client_config(ca: Option<&std::path::Path>) -> Result<rustls::ClientConfig, ClientError> {
    let path = ca.unwrap_or(std::path::Path::new(SYSTEM_CA_BUNDLE));
    let ca_error = |source| ClientError::Ca {
        path: path.to_owned(),
        source,
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs = tzero_nbd::tls::load_certificates(path).map_err(ca_error)?;
    if ca.is_some() {
        for c in certs {
            roots
                .add(c)
                .map_err(|e| ca_error(tzero_nbd::TlsError::Rustls(e)))?;
        }
    } else {
        // A system bundle may hold a certificate rustls cannot parse; skip it.
        roots.add_parsable_certificates(certs);
    }
    let config = rustls::ClientConfig::builder_with_provider(tzero_nbd::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ca_error(tzero_nbd::TlsError::Rustls(e)))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// The name the server's certificate must carry: the host of `host:port`
/// (an IP address or a DNS name).
fn server_name(addr: &str) -> Option<rustls::pki_types::ServerName<'static>> {
    let (host, _) = addr.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    rustls::pki_types::ServerName::try_from(host.to_owned()).ok()
}

/// Percent-encodes one path segment, so a name with odd characters reaches
/// the server as that name (and is refused there) instead of a new path.
pub(crate) fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A raw response, for callers (tests) that want to see the status and body.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Client of the `/v1` API.
#[derive(Debug, Clone)]
pub struct Client {
    endpoint: Endpoint,
}

impl Client {
    pub fn new(endpoint: Endpoint) -> Self {
        Client { endpoint }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Sends one request and returns the status and the whole body.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<RawResponse, ClientError> {
        let mut req = Request::builder().method(method).uri(path);
        let has_body = body.is_some();
        if has_body {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        req = match &self.endpoint {
            Endpoint::Unix(_) => req.header(header::HOST, "localhost"),
            Endpoint::Tcp { addr, token } | Endpoint::Https { addr, token, .. } => {
                let req = req.header(header::HOST, addr.as_str());
                match token {
                    Some(t) => req.header(header::AUTHORIZATION, format!("Bearer {t}")),
                    None => req,
                }
            }
        };
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|_| ClientError::Url(path.to_owned()))?;
        let resp = match &self.endpoint {
            Endpoint::Unix(p) => {
                let stream = tokio::net::UnixStream::connect(p)
                    .await
                    .map_err(|e| self.connect_error(e))?;
                exchange(TokioIo::new(stream), req).await?
            }
            Endpoint::Tcp { addr, .. } => {
                let stream = self.connect_tcp(addr).await?;
                exchange(TokioIo::new(stream), req).await?
            }
            Endpoint::Https { addr, ca, .. } => {
                let config = tls_client_config(ca.as_deref())?;
                let name = server_name(addr).ok_or_else(|| ClientError::Url(addr.clone()))?;
                let stream = self.connect_tcp(addr).await?;
                let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
                let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, stream))
                    .await
                    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
                    .map_err(|source| ClientError::Tls {
                        endpoint: self.endpoint.to_string(),
                        source,
                    })?;
                exchange(TokioIo::new(tls), req).await?
            }
        };
        Ok(resp)
    }

    async fn connect_tcp(&self, addr: &str) -> Result<tokio::net::TcpStream, ClientError> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| self.connect_error(std::io::ErrorKind::TimedOut.into()))?
            .map_err(|e| self.connect_error(e))?;
        // Requests are tiny; don't let Nagle delay them.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    fn connect_error(&self, source: std::io::Error) -> ClientError {
        ClientError::Connect {
            endpoint: self.endpoint.to_string(),
            source,
        }
    }

    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let resp = self.checked(method, path, body).await?;
        serde_json::from_slice(&resp.body).map_err(|source| ClientError::Decode {
            status: resp.status,
            source,
        })
    }

    /// Sends a request and turns an error status into [`ClientError::Api`].
    pub(crate) async fn checked(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<RawResponse, ClientError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(ClientError::Encode)?;
        let resp = self.raw(method, path, body).await?;
        if (200..300).contains(&resp.status) {
            return Ok(resp);
        }
        match serde_json::from_slice::<ErrorBody>(&resp.body) {
            Ok(e) => Err(ClientError::Api {
                status: resp.status,
                code: e.error.code,
                message: e.error.message,
            }),
            Err(source) => Err(ClientError::Decode {
                status: resp.status,
                source,
            }),
        }
    }

    pub async fn volumes(&self) -> Result<Vec<Volume>, ClientError> {
        self.call(Method::GET, "/v1/volumes", None::<&()>).await
    }

    pub async fn volume(&self, name: &str) -> Result<Volume, ClientError> {
        let path = format!("/v1/volumes/{}", segment(name));
        self.call(Method::GET, &path, None::<&()>).await
    }

    pub async fn create_volume(&self, req: &CreateVolume) -> Result<Volume, ClientError> {
        self.call(Method::POST, "/v1/volumes", Some(req)).await
    }

    pub async fn delete_volume(&self, name: &str, force: bool) -> Result<(), ClientError> {
        let path = format!("/v1/volumes/{}?force={force}", segment(name));
        self.checked(Method::DELETE, &path, None::<&()>).await?;
        Ok(())
    }

    pub async fn flashes(&self) -> Result<Vec<Flash>, ClientError> {
        self.call(Method::GET, "/v1/flash", None::<&()>).await
    }

    /// The relationships established with sequence number `seqnum`.
    pub async fn flashes_with_seqnum(&self, seqnum: u32) -> Result<Vec<Flash>, ClientError> {
        let path = format!("/v1/flash?seqnum={seqnum}");
        self.call(Method::GET, &path, None::<&()>).await
    }

    /// A consistency group: every pair at one T0, optionally frozen.
    pub async fn establish_group(&self, req: &EstablishGroup) -> Result<Vec<Flash>, ClientError> {
        self.call(Method::POST, "/v1/flash/group", Some(req)).await
    }

    /// Holds host writes to sources (`freezeflash`).
    pub async fn freeze(&self, req: &Freeze) -> Result<Vec<Volume>, ClientError> {
        self.call(Method::POST, "/v1/freeze", Some(req)).await
    }

    /// Releases held writes (`unfreezeflash`).
    pub async fn unfreeze(&self, req: &Unfreeze) -> Result<Vec<Volume>, ClientError> {
        self.call(Method::POST, "/v1/unfreeze", Some(req)).await
    }

    pub async fn set_target_inhibit(
        &self,
        source: &str,
        target: &str,
        inhibit: bool,
    ) -> Result<Flash, ClientError> {
        let path = format!(
            "/v1/flash/{}/{}/target-inhibit",
            segment(source),
            segment(target)
        );
        self.call(Method::PUT, &path, Some(&TargetInhibit { inhibit }))
            .await
    }

    /// `setflashrevertible`, `commitflash`, `revertflash` on one pair:
    /// `action` is `revertible`, `commit` or `revert`.
    pub async fn flash_action(
        &self,
        source: &str,
        target: &str,
        action: &str,
    ) -> Result<Flash, ClientError> {
        let path = format!(
            "/v1/flash/{}/{}/{}",
            segment(source),
            segment(target),
            segment(action)
        );
        self.call(Method::POST, &path, None::<&()>).await
    }

    /// `commitflash --seqnum N` / `revertflash --seqnum N`: `action` is
    /// `commit` or `revert`.
    pub async fn settle_seqnum(
        &self,
        action: &str,
        seqnum: u32,
    ) -> Result<Vec<Flash>, ClientError> {
        let path = format!("/v1/flash/{}?seqnum={seqnum}", segment(action));
        self.call(Method::POST, &path, None::<&()>).await
    }

    pub async fn rotate_token(&self, role: TokenRole) -> Result<RotatedToken, ClientError> {
        let role = match role {
            TokenRole::Admin => "admin",
            TokenRole::Monitor => "monitor",
            TokenRole::Security => "security",
        };
        self.call(Method::POST, &format!("/v1/tokens/{role}"), None::<&()>)
            .await
    }

    pub async fn pools(&self) -> Result<Vec<Pool>, ClientError> {
        self.call(Method::GET, "/v1/pools", None::<&()>).await
    }

    pub async fn pool(&self, name: &str) -> Result<Pool, ClientError> {
        let path = format!("/v1/pools/{}", segment(name));
        self.call(Method::GET, &path, None::<&()>).await
    }

    pub async fn create_pool(&self, req: &CreatePool) -> Result<Pool, ClientError> {
        self.call(Method::POST, "/v1/pools", Some(req)).await
    }

    pub async fn delete_pool(&self, name: &str) -> Result<(), ClientError> {
        let path = format!("/v1/pools/{}", segment(name));
        self.checked(Method::DELETE, &path, None::<&()>).await?;
        Ok(())
    }

    pub async fn flash(&self, source: &str, target: &str) -> Result<Flash, ClientError> {
        let path = format!("/v1/flash/{}/{}", segment(source), segment(target));
        self.call(Method::GET, &path, None::<&()>).await
    }

    pub async fn establish(&self, req: &Establish) -> Result<Flash, ClientError> {
        self.call(Method::POST, "/v1/flash", Some(req)).await
    }

    pub async fn withdraw(&self, source: &str, target: &str) -> Result<(), ClientError> {
        let path = format!("/v1/flash/{}/{}", segment(source), segment(target));
        self.checked(Method::DELETE, &path, None::<&()>).await?;
        Ok(())
    }

    /// `rmflash --cp`: turns the background copy on and withdraws the
    /// relationship when it completes (at once if it already has).
    pub async fn withdraw_after_copy(
        &self,
        source: &str,
        target: &str,
    ) -> Result<Flash, ClientError> {
        let path = format!("/v1/flash/{}/{}?cp=true", segment(source), segment(target));
        self.call(Method::DELETE, &path, None::<&()>).await
    }

    /// `resyncflash`: a new T0, copying only the changed tracks.
    pub async fn resync(
        &self,
        source: &str,
        target: &str,
        req: &Resync,
    ) -> Result<Flash, ClientError> {
        let path = format!("/v1/flash/{}/{}/resync", segment(source), segment(target));
        self.call(Method::POST, &path, Some(req)).await
    }

    /// `reverseflash`: returns the reversed relationship, `target:source`.
    pub async fn reverse(
        &self,
        source: &str,
        target: &str,
        req: &Reverse,
    ) -> Result<Flash, ClientError> {
        let path = format!("/v1/flash/{}/{}/reverse", segment(source), segment(target));
        self.call(Method::POST, &path, Some(req)).await
    }

    pub async fn start_copy(&self, source: &str, target: &str) -> Result<Flash, ClientError> {
        let path = format!("/v1/flash/{}/{}/copy", segment(source), segment(target));
        self.call(Method::POST, &path, None::<&()>).await
    }

    pub async fn set_rate(
        &self,
        source: &str,
        target: &str,
        copy_rate: u64,
    ) -> Result<Flash, ClientError> {
        let path = format!("/v1/flash/{}/{}/rate", segment(source), segment(target));
        self.call(Method::PUT, &path, Some(&SetRate { copy_rate }))
            .await
    }
}

/// One HTTP/1.1 exchange on a fresh connection.
async fn exchange<S>(io: S, req: Request<Full<Bytes>>) -> Result<RawResponse, ClientError>
where
    S: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(ClientError::Http)?;
    let driver = tokio::spawn(async move {
        // Errors surface through send_request; the driver just has to run.
        let _ = conn.await;
    });
    let resp = sender.send_request(req).await.map_err(ClientError::Http)?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(ClientError::Http)?
        .to_bytes();
    driver.abort();
    Ok(RawResponse {
        status: status.as_u16(),
        body: body.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_urls() {
        assert_eq!(
            parse_api_addr("http://127.0.0.1:10810").ok().as_deref(),
            Some("127.0.0.1:10810")
        );
        assert_eq!(
            parse_api_addr("http://localhost:1/").ok().as_deref(),
            Some("localhost:1")
        );
        assert_eq!(
            parse_api_addr("127.0.0.1:10810").ok().as_deref(),
            Some("127.0.0.1:10810")
        );
        assert_eq!(
            parse_api_addr("HTTP://[::1]:80").ok().as_deref(),
            Some("[::1]:80")
        );
        for bad in [
            "https://a:1",
            "http://a",
            "http://a:",
            "http://a:x",
            "http://a:1/v1",
            "",
            "http://",
            "a:99999",
            ":80",
        ] {
            assert!(parse_api_addr(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_api_url("https://localhost:8443/").ok(),
            Some(("localhost:8443".to_owned(), true))
        );
        assert!(parse_api_url("ftp://a:1").is_err());
        assert_eq!(
            server_name("[::1]:80").map(|n| n.to_str().into_owned()),
            Some("::1".to_owned())
        );
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(segment("vol-1.a_b"), "vol-1.a_b");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
        assert_eq!(segment("é"), "%C3%A9");
    }
}
