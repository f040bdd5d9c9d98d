//! Accepting connections, per-connection limits and graceful shutdown.
//!
//! Shutdown is signalled through a `watch::Receiver<bool>`: once it reads
//! `true` the listener stops accepting, connections still negotiating are
//! closed, and connections in transmission stop reading new requests, answer
//! the ones in flight and close. [`NbdServer::serve`] returns when every
//! connection has ended, or after [`ServerConfig::shutdown_grace`], whichever
//! comes first.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn, Instrument};

use crate::device::ExportProvider;
use crate::error::ConnError;
use crate::handshake::{self, Outcome, TlsPhase};
use crate::tls::Tls;
use crate::transmission;

/// Read buffer of a connection (negotiation and transmission).
const READ_BUF: usize = 128 * 1024;

/// Tunables; the defaults suit a local daemon.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Connections served at once; further ones are closed at accept.
    pub max_connections: usize,
    /// Time a client has to finish the whole handshake.
    pub handshake_timeout: Duration,
    /// Longest a client may sit idle between requests; `None` waits forever
    /// (an idle block device is normal).
    pub idle_timeout: Option<Duration>,
    /// Once the first byte of a request arrived, time allowed for the rest
    /// of its header and payload.
    pub request_timeout: Duration,
    /// Requests in flight per connection before we stop reading.
    pub max_inflight_requests: usize,
    /// READ/WRITE payload bytes in flight per connection before we stop
    /// reading (never less than one maximal 32 MiB request).
    pub max_inflight_bytes: usize,
    /// Largest option payload we accept during negotiation.
    pub max_option_len: u32,
    /// Largest oversized option or rejected write payload we read and throw
    /// away to stay in sync; anything larger drops the connection.
    pub max_discard_len: u64,
    /// How long [`NbdServer::serve`] waits for connections after shutdown.
    pub shutdown_grace: Duration,
    /// TLS credentials and whether TLS is required; `None` answers
    /// `STARTTLS` with `NBD_REP_ERR_UNSUP`. The handshake timeout and the
    /// option limits cover the TLS handshake and the haggle inside it.
    pub tls: Option<Tls>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_connections: 256,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: None,
            request_timeout: Duration::from_secs(30),
            max_inflight_requests: 64,
            max_inflight_bytes: 128 * 1024 * 1024,
            max_option_len: 64 * 1024,
            max_discard_len: 64 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
            tls: None,
        }
    }
}

/// An NBD server over an [`ExportProvider`]. Cheap to clone.
#[derive(Clone)]
pub struct NbdServer {
    provider: Arc<dyn ExportProvider>,
    config: Arc<ServerConfig>,
    stats: Arc<ConnStats>,
}

/// Connections of [`NbdServer::serve`], for monitoring: plain atomics, bumped once per
/// connection.
#[derive(Debug, Default)]
pub struct ConnStats {
    accepted: AtomicU64,
    open: AtomicU64,
}

impl ConnStats {
    /// Connections accepted and served (not those closed at the connection limit).
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }
}

/// Counts one open connection until dropped (its task ends or is aborted).
struct OpenConn(Arc<ConnStats>);

impl OpenConn {
    fn new(stats: &Arc<ConnStats>) -> Self {
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        OpenConn(stats.clone())
    }
}

impl Drop for OpenConn {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Resolves once the shutdown flag is `true`. If the sender is dropped
/// without ever sending `true`, it never resolves.
pub(crate) async fn wait_shutdown(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl NbdServer {
    pub fn new(provider: Arc<dyn ExportProvider>, config: ServerConfig) -> Self {
        Self {
            provider,
            config: Arc::new(config),
            stats: Arc::default(),
        }
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The connection counters of [`NbdServer::serve`] (shared by every clone).
    pub fn stats(&self) -> Arc<ConnStats> {
        self.stats.clone()
    }

    /// Accepts TCP connections until shutdown, then waits (bounded) for the
    /// connections to finish. Accept errors are logged and retried, so this
    /// only returns once shut down.
    pub async fn serve(
        &self,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
    ) -> io::Result<()> {
        let limit = Arc::new(Semaphore::new(self.config.max_connections.max(1)));
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                biased;
                () = wait_shutdown(&mut shutdown) => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
                            warn!(%peer, "connection limit reached; closing");
                            continue;
                        };
                        let this = self.clone();
                        let sd = shutdown.clone();
                        // Every line logged for this connection carries the
                        // peer, and the export once negotiation names it.
                        let span = tracing::info_span!(
                            "nbd_conn", %peer, export = tracing::field::Empty
                        );
                        let open = OpenConn::new(&self.stats);
                        conns.spawn(async move {
                            let (_permit, _open) = (permit, open);
                            debug!("connected");
                            match this.serve_tcp(stream, sd).await {
                                Ok(()) => debug!("disconnected"),
                                Err(e) => info!(error = %e, "connection ended"),
                            }
                        }.instrument(span));
                    }
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        drop(listener);
        let drained = tokio::time::timeout(self.config.shutdown_grace, async {
            while conns.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(
                remaining = conns.len(),
                "shutdown grace expired; aborting connections"
            );
            conns.abort_all();
            while conns.join_next().await.is_some() {}
        }
        Ok(())
    }

    /// Serves one TCP connection (split without locking, `TCP_NODELAY`).
    pub async fn serve_tcp(
        &self,
        stream: TcpStream,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), ConnError> {
        // Replies are small and latency-bound; never wait for Nagle.
        stream.set_nodelay(true)?;
        self.run(stream, TcpStream::into_split, shutdown).await
    }

    /// Serves one connection over any byte stream (duplex pipes, unix
    /// sockets, ...). Returns when the client leaves or on shutdown.
    pub async fn serve_connection<S>(
        &self,
        stream: S,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), ConnError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        self.run(stream, tokio::io::split, shutdown).await
    }

    /// Negotiates (in plaintext, then inside TLS if the client asks), then
    /// runs transmission on the halves of the stream: `split` for a
    /// plaintext one, `tokio::io::split` for TLS (a TLS session's two
    /// directions share its state).
    async fn run<S, R, W>(
        &self,
        stream: S,
        split: impl FnOnce(S) -> (R, W),
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), ConnError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let cfg = &*self.config;
        let negotiated = tokio::select! {
            biased;
            () = wait_shutdown(&mut shutdown) => return Ok(()),
            res = tokio::time::timeout(cfg.handshake_timeout, self.negotiate(stream)) => {
                res.map_err(|_| ConnError::Timeout("handshake"))??
            }
        };
        match negotiated {
            Negotiation::Closed => Ok(()),
            Negotiation::Plain(neg, conn) => {
                record_export(&neg);
                let (r, w) = halves(conn, split);
                transmission::run(r, w, neg, cfg, shutdown).await
            }
            Negotiation::Tls(neg, conn) => {
                record_export(&neg);
                let (r, w) = halves(conn, tokio::io::split);
                transmission::run(r, w, neg, cfg, shutdown).await
            }
        }
    }

    /// The whole handshake: greeting, options, and after `STARTTLS` the TLS
    /// handshake and the options again.
    async fn negotiate<S>(&self, stream: S) -> Result<Negotiation<S>, ConnError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let cfg = &*self.config;
        let provider = &*self.provider;
        let mut conn = BufReader::with_capacity(READ_BUF, stream);
        let Some(no_zeroes) = handshake::greet(&mut conn).await? else {
            return Ok(Negotiation::Closed);
        };
        let phase = match &cfg.tls {
            None => TlsPhase::Unavailable,
            Some(t) if t.require => TlsPhase::Required,
            Some(_) => TlsPhase::Offered,
        };
        match handshake::negotiate(&mut conn, provider, cfg, no_zeroes, phase).await? {
            Outcome::Closed => return Ok(Negotiation::Closed),
            Outcome::Go(neg) => return Ok(Negotiation::Plain(neg, conn)),
            Outcome::StartTls => {}
        }
        let Some(tls) = &cfg.tls else {
            return Err(ConnError::Protocol("STARTTLS without credentials".into()));
        };
        // The client must wait for our ACK before its ClientHello; bytes
        // already here would be plaintext smuggled into the TLS session.
        if !conn.buffer().is_empty() {
            return Err(ConnError::Protocol("data after STARTTLS".into()));
        }
        let tls_stream = tls.accept(conn.into_inner()).await?;
        debug!("TLS established");
        let mut conn = BufReader::with_capacity(READ_BUF, tls_stream);
        let active = TlsPhase::Active;
        match handshake::negotiate(&mut conn, provider, cfg, no_zeroes, active).await? {
            Outcome::Closed => Ok(Negotiation::Closed),
            Outcome::Go(neg) => Ok(Negotiation::Tls(neg, conn)),
            Outcome::StartTls => Err(ConnError::Protocol("STARTTLS inside TLS".into())),
        }
    }
}

/// The result of [`NbdServer::negotiate`], with the buffered stream to go on
/// with.
enum Negotiation<S> {
    Closed,
    Plain(handshake::Negotiated, BufReader<S>),
    Tls(handshake::Negotiated, BufReader<crate::tls::TlsStream<S>>),
}

/// A buffered reader whose first bytes are those the negotiation had
/// already read past its last option (a client may pipeline its first
/// requests behind `NBD_OPT_GO`).
type Halve<R> = BufReader<tokio::io::Chain<std::io::Cursor<Vec<u8>>, R>>;

/// Fills the `nbd_conn` span's export field (a no-op when the caller opened
/// no such span).
fn record_export(neg: &handshake::Negotiated) {
    tracing::Span::current().record("export", neg.export.as_str());
}

/// Splits a negotiated stream, keeping what its buffer already holds.
fn halves<S, R, W>(conn: BufReader<S>, split: impl FnOnce(S) -> (R, W)) -> (Halve<R>, W)
where
    S: AsyncRead,
    R: AsyncRead,
{
    let leftover = conn.buffer().to_vec();
    let (r, w) = split(conn.into_inner());
    let r = std::io::Cursor::new(leftover).chain(r);
    (BufReader::with_capacity(READ_BUF, r), w)
}

/// Serves `listener` with the default configuration until `shutdown` is
/// `true`; see [`NbdServer::serve`].
pub async fn serve(
    listener: TcpListener,
    provider: Arc<dyn ExportProvider>,
    shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    NbdServer::new(provider, ServerConfig::default())
        .serve(listener, shutdown)
        .await
}

/// Serves one connection with the default configuration; see
/// [`NbdServer::serve_connection`].
pub async fn serve_connection<S>(
    stream: S,
    provider: Arc<dyn ExportProvider>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ConnError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    NbdServer::new(provider, ServerConfig::default())
        .serve_connection(stream, shutdown)
        .await
}
