//! NBD over TLS: the credentials a server offers after `NBD_OPT_STARTTLS`, and
//! the encrypted stream the option haggle restarts on.
//!
//! Two kinds of credentials, as qemu and nbdkit have them:
//! - X.509: a certificate chain and its key (PEM), through rustls; optionally a
//!   CA whose certificates clients must present (`verify-peer`);
//! - pre-shared keys: a `keys.psk` file of `username:hexkey` lines, through
//!   OpenSSL (rustls has no external PSK), with TLS 1.3 and TLS 1.2 PSK
//!   suites that GnuTLS clients (qemu, libnbd) offer.
//!
//! Everything is loaded and checked when the server starts ([`Tls::x509`],
//! [`Tls::psk`]), so a bad file is a start-up error, never a failed client.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use openssl::ssl::{SslContext, SslMethod, SslOptions, SslVersion};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Longest PSK key we accept (OpenSSL's own limit, `PSK_MAX_PSK_LEN`).
const MAX_PSK_LEN: usize = 512;
/// Longest PSK identity (OpenSSL's `PSK_MAX_IDENTITY_LEN`).
const MAX_IDENTITY_LEN: usize = 128;

/// Why TLS credentials could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} holds no PEM certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} is not a PEM certificate file", path.display())]
    BadCertificate {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)", path.display())]
    BadKey {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("the certificate and key cannot be used together")]
    Rustls(#[source] rustls::Error),
    #[error("the client CA {} cannot verify clients", path.display())]
    ClientCa {
        path: PathBuf,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    #[error("{}: line {line}: expected USERNAME:HEXKEY ({why})", path.display())]
    PskLine {
        path: PathBuf,
        line: usize,
        why: &'static str,
    },
    #[error("{} holds no key", path.display())]
    PskEmpty { path: PathBuf },
    #[error("OpenSSL refused the PSK settings")]
    OpenSsl(#[source] openssl::error::ErrorStack),
}

/// The credentials and policy of a TLS-capable server.
#[derive(Clone)]
pub struct Tls {
    /// Refuse every option but `STARTTLS` and `ABORT` before TLS (the spec's
    /// FORCEDTLS); otherwise plaintext clients are served too.
    pub require: bool,
    acceptor: Acceptor,
}

#[derive(Clone)]
enum Acceptor {
    X509(tokio_rustls::TlsAcceptor),
    Psk(SslContext),
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.acceptor {
            Acceptor::X509(_) => "x509",
            Acceptor::Psk(_) => "psk",
        };
        f.debug_struct("Tls")
            .field("require", &self.require)
            .field("credentials", &kind)
            .finish()
    }
}

/// Reads a PEM certificate chain (leaf first).
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::BadCertificate {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Reads a PEM private key.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|source| TlsError::BadKey {
        path: path.to_owned(),
        source,
    })
}

/// The rustls crypto provider every TLS endpoint of ours uses (ring).
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses a `keys.psk` file: `username:hexkey` per line; blank lines and
/// lines starting with `#` are skipped.
pub fn parse_psk_file(path: &Path, text: &str) -> Result<HashMap<String, Vec<u8>>, TlsError> {
    let mut keys = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why| TlsError::PskLine {
            path: path.to_owned(),
            line: i + 1,
            why,
        };
        let (user, hex) = line.split_once(':').ok_or_else(|| bad("no ':'"))?;
        if user.is_empty() || user.len() > MAX_IDENTITY_LEN {
            return Err(bad("username empty or longer than 128 bytes"));
        }
        let key = decode_hex(hex.trim()).ok_or_else(|| bad("key is not hexadecimal"))?;
        if key.is_empty() || key.len() > MAX_PSK_LEN {
            return Err(bad("key empty or longer than 512 bytes"));
        }
        keys.insert(user.to_owned(), key);
    }
    if keys.is_empty() {
        return Err(TlsError::PskEmpty {
            path: path.to_owned(),
        });
    }
    Ok(keys)
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let pairs = s.as_bytes().chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return None;
    }
    let digit = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    pairs
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

impl Tls {
    /// X.509 credentials: `cert` (PEM chain, leaf first) and `key`; with
    /// `client_ca`, clients must present a certificate it signed.
    pub fn x509(
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
        require: bool,
    ) -> Result<Self, TlsError> {
        let chain = load_certificates(cert)?;
        let key = load_private_key(key)?;
        let provider = crypto_provider();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Rustls)?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in load_certificates(ca)? {
                    roots.add(c).map_err(TlsError::Rustls)?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|source| TlsError::ClientCa {
                    path: ca.to_owned(),
                    source,
                })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(chain, key)
            .map_err(TlsError::Rustls)?;
        Ok(Tls {
            require,
            acceptor: Acceptor::X509(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
        })
    }

    /// Pre-shared keys from a `keys.psk` file (`username:hexkey` lines, the
    /// format of nbdkit's `--tls-psk` and qemu's `tls-creds-psk`).
    pub fn psk(file: &Path, require: bool) -> Result<Self, TlsError> {
        let text = std::fs::read_to_string(file).map_err(|source| TlsError::Read {
            path: file.to_owned(),
            source,
        })?;
        Self::psk_keys(parse_psk_file(file, &text)?, require)
    }

    /// Pre-shared keys by username (what [`Tls::psk`] reads from its file).
    pub fn psk_keys(keys: HashMap<String, Vec<u8>>, require: bool) -> Result<Self, TlsError> {
        let mut b = SslContext::builder(SslMethod::tls_server()).map_err(TlsError::OpenSsl)?;
        b.set_min_proto_version(Some(SslVersion::TLS1_2))
            .map_err(TlsError::OpenSsl)?;
        // TLS 1.2: PSK suites only (there is no certificate), forward-secret
        // ones first. TLS 1.3 takes its default suites; OpenSSL runs the
        // callback below for TLS 1.3 external PSKs too (with SHA-256, as
        // GnuTLS uses).
        b.set_cipher_list(
            "ECDHE-PSK-CHACHA20-POLY1305:DHE-PSK-AES256-GCM-SHA384:DHE-PSK-AES128-GCM-SHA256:\
             ECDHE-PSK-AES256-CBC-SHA384:ECDHE-PSK-AES128-CBC-SHA256:PSK-AES256-GCM-SHA384:\
             PSK-AES128-GCM-SHA256",
        )
        .map_err(TlsError::OpenSsl)?;
        // Tickets would let a client resume without the key's proof.
        b.set_options(SslOptions::NO_TICKET);
        b.set_psk_server_callback(move |_ssl, identity, out| {
            let key = identity
                .and_then(|id| std::str::from_utf8(id).ok())
                .and_then(|id| keys.get(id));
            match key {
                Some(k) if k.len() <= out.len() => {
                    out[..k.len()].copy_from_slice(k);
                    Ok(k.len())
                }
                // 0: unknown identity, the handshake fails.
                _ => Ok(0),
            }
        });
        Ok(Tls {
            require,
            acceptor: Acceptor::Psk(b.build()),
        })
    }

    /// Runs the server side of the TLS handshake over `stream`.
    pub(crate) async fn accept<S>(&self, stream: S) -> io::Result<TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match &self.acceptor {
            Acceptor::X509(a) => Ok(TlsStream::Rustls(Box::new(a.accept(stream).await?))),
            Acceptor::Psk(ctx) => {
                let ssl = openssl::ssl::Ssl::new(ctx).map_err(io::Error::other)?;
                let mut s = tokio_openssl::SslStream::new(ssl, stream).map_err(io::Error::other)?;
                Pin::new(&mut s).accept().await.map_err(|e| {
                    let msg = match e.ssl_error() {
                        Some(stack) => format!("TLS handshake failed: {stack}"),
                        None => format!("TLS handshake failed: {e}"),
                    };
                    io::Error::new(io::ErrorKind::PermissionDenied, msg)
                })?;
                Ok(TlsStream::OpenSsl(Box::new(s)))
            }
        }
    }
}

/// A connection after `STARTTLS`: whichever library holds its credentials.
pub enum TlsStream<S> {
    Rustls(Box<tokio_rustls::server::TlsStream<S>>),
    OpenSsl(Box<tokio_openssl::SslStream<S>>),
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TlsStream::Rustls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            TlsStream::OpenSsl(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            TlsStream::Rustls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            TlsStream::OpenSsl(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TlsStream::Rustls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            TlsStream::OpenSsl(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TlsStream::Rustls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            TlsStream::OpenSsl(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psk_file_lines() {
        let p = Path::new("keys.psk");
        let keys = parse_psk_file(p, "# comment\n\nqemu:00ff10\nalice:ABCD\r\n").expect("parse");
        assert_eq!(keys["qemu"], vec![0x00, 0xff, 0x10]);
        assert_eq!(keys["alice"], vec![0xab, 0xcd]);
        for bad in ["qemu", "qemu:0g", "qemu:abc", ":00", "qemu:"] {
            let e = parse_psk_file(p, bad).expect_err(bad).to_string();
            assert!(e.contains("line 1"), "{bad}: {e}");
        }
        assert!(matches!(
            parse_psk_file(p, "\n# only\n"),
            Err(TlsError::PskEmpty { .. })
        ));
    }
}
