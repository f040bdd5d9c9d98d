//! `tzero serve`: wires the engine, the NBD server and the HTTP API together
//! and owns the daemon's life cycle.
//!
//! Invariants:
//! - at most one daemon per data directory: an exclusive `flock` on
//!   `DIR/tzero.lock`, held for the life of the process (the kernel drops it
//!   if we die, so a crash never leaves a stale lock);
//! - API tokens are kept as digests in `DIR/tokens/` (`crate::tokens`); the
//!   admin token is written once, mode 0600, to `DIR/api-token` for the
//!   local CLI; every admin action is recorded in `DIR/audit.log`
//!   (`crate::audit`) before it is answered;
//! - on SIGTERM/SIGINT the listeners stop first, in-flight requests finish,
//!   and only then does `Engine::shutdown` destage and sync, so nothing a
//!   client was told is written can be lost by a clean stop.

use std::fs::{File, OpenOptions};
use std::future::IntoFuture;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tzero_engine::{Engine, EngineConfig};

use crate::api;
use crate::api::logging::{logged, Caller};
use crate::audit::AuditLog;
use crate::cli::TlsMode;
use crate::nbd_export::EngineExports;
use crate::tls_listener::TlsListener;
use crate::tokens::TokenStore;
use axum::Extension;

/// How long a stopping daemon waits for open API and NBD connections.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// What `tzero serve` was asked to do.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub data: PathBuf,
    /// `host:port` of the TCP API.
    pub api_addr: String,
    /// `host:port` of the NBD server.
    pub nbd_addr: String,
    /// Engine write cache size; the engine's default when `None`.
    pub cache_bytes: Option<u64>,
    /// How log lines on stderr are written.
    pub log_format: LogFormat,
    /// Most NBD connections served at once.
    pub max_connections: usize,
    /// Size at which `DATA/audit.log` is rotated.
    pub audit_max_bytes: u64,
    /// NBD over TLS.
    pub nbd_tls: NbdTls,
    /// Certificate chain and key of the TCP API's HTTPS; plain HTTP if `None`.
    pub api_tls: Option<(PathBuf, PathBuf)>,
    /// Where the engine keeps volumes and the catalog.
    pub backend: Backend,
}

/// `serve --backend`.
#[derive(Debug, Clone, Default)]
pub enum Backend {
    /// Sparse files and `catalog.redb` in the data directory.
    #[default]
    File,
    /// RBD images (volumes and the catalog) in a Ceph pool.
    Ceph {
        conf: PathBuf,
        pool: String,
        prefix: String,
        /// This node's name in the owner record (default: `tzero@NBD_ADDR`).
        node: Option<String>,
        /// How long the pool lease lasts unrenewed (see `crate::cluster`).
        lease: Duration,
    },
}

impl Backend {
    /// Opens the engine on this backend. On Ceph this first waits to own the pool (serving as
    /// a standby meanwhile) and fences the previous owner; the lease is returned with the
    /// engine, kept alive by its threads until the process ends.
    fn open_engine(
        &self,
        cfg: &ServeConfig,
        engine_cfg: EngineConfig,
        rt: &tokio::runtime::Runtime,
    ) -> anyhow::Result<(Engine, Option<Arc<crate::cluster::Lease>>)> {
        match self {
            Backend::File => Engine::open_dir(&cfg.data, engine_cfg)
                .map(|e| (e, None))
                .with_context(|| format!("cannot open the engine in {}", cfg.data.display())),
            Backend::Ceph {
                conf,
                pool,
                prefix,
                node,
                lease,
            } => {
                use tzero_engine::storage::rbd::{RbdOptions, RbdStorage, CLIENT_OPTIONS};
                let cluster = tzero_rados::Cluster::connect(conf, None, CLIENT_OPTIONS)
                    .with_context(|| {
                        format!("cannot connect to the Ceph cluster of {}", conf.display())
                    })?;
                let rados_pool = cluster
                    .pool(pool)
                    .with_context(|| format!("cannot open Ceph pool {pool:?}"))?;
                let cluster_cfg = crate::cluster::ClusterConfig {
                    node: node
                        .clone()
                        .unwrap_or_else(|| format!("tzero@{}", cfg.nbd_addr)),
                    prefix: prefix.clone(),
                    nbd_addr: cfg.nbd_addr.clone(),
                    api_addr: cfg.api_addr.clone(),
                    lease: *lease,
                };
                let (held, previous) = crate::cluster::become_owner(&cluster_cfg, &rados_pool, rt)?;
                let options = RbdOptions {
                    prefix: prefix.clone(),
                    // We hold the lease and have fenced the previous owner: its image locks
                    // are stale.
                    break_locks: true,
                    fenced: previous.map(|p| p.addrs).into_iter().collect(),
                    ..Default::default()
                };
                let storage = RbdStorage::new(rados_pool, options);
                let opening = std::time::Instant::now();
                let engine = Engine::open(Arc::new(storage), engine_cfg)
                    .with_context(|| format!("cannot open the engine on Ceph pool {pool:?}"))?;
                tracing::info!(
                    pool,
                    conf = %conf.display(),
                    opened_in_ms = u64::try_from(opening.elapsed().as_millis()).unwrap_or(u64::MAX),
                    "backend: ceph (RBD images)"
                );
                Ok((engine, Some(held)))
            }
        }
    }
}

/// `serve --tls MODE` and its credentials, checked by [`NbdTls::load`].
#[derive(Debug, Clone, Default)]
pub struct NbdTls {
    pub mode: TlsMode,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
    pub psk: Option<PathBuf>,
}

impl NbdTls {
    /// Loads the credentials the mode asks for; `None` for `off`.
    pub fn load(&self) -> anyhow::Result<Option<tzero_nbd::Tls>> {
        let require = match self.mode {
            TlsMode::Off => {
                if self.cert.is_some() || self.psk.is_some() {
                    bail!("--tls-cert/--tls-psk given but --tls is off (use --tls on or --tls require)");
                }
                return Ok(None);
            }
            TlsMode::On => false,
            TlsMode::Require => true,
        };
        let tls = match (&self.cert, &self.key, &self.psk) {
            (Some(cert), Some(key), None) => {
                tzero_nbd::Tls::x509(cert, key, self.client_ca.as_deref(), require)
                    .context("cannot load the NBD TLS certificate")?
            }
            (None, None, Some(psk)) => tzero_nbd::Tls::psk(psk, require)
                .context("cannot load the NBD TLS pre-shared keys")?,
            _ => bail!("--tls on/require needs --tls-cert and --tls-key, or --tls-psk"),
        };
        Ok(Some(tls))
    }
}

/// `serve --log-format`: text for people, JSON (one object per line) for
/// log collectors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(cfg: ServeConfig) -> anyhow::Result<()> {
    init_logging(cfg.log_format);
    // Credentials first: a bad file is refused before anything is touched.
    let nbd_tls = cfg.nbd_tls.load()?;
    let api_tls = match &cfg.api_tls {
        None => None,
        Some((cert, key)) => Some(
            crate::tls_listener::server_config(cert, key)
                .context("cannot load the API TLS certificate")?,
        ),
    };
    std::fs::create_dir_all(&cfg.data)
        .with_context(|| format!("cannot create data directory {}", cfg.data.display()))?;
    let _lock = DataDirLock::acquire(&cfg.data)?;
    let tokens = Arc::new(TokenStore::open(&cfg.data)?);
    let audit = Arc::new(
        AuditLog::open(&cfg.data, cfg.audit_max_bytes)
            .with_context(|| format!("cannot open the audit log in {}", cfg.data.display()))?,
    );
    raise_open_file_limit();

    let mut engine_cfg = EngineConfig::default();
    if let Some(bytes) = cfg.cache_bytes {
        engine_cfg.cache_bytes = bytes;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tzero")
        .build()
        .context("cannot start the async runtime")?;
    let (engine, lease) = cfg.backend.open_engine(&cfg, engine_cfg, &rt)?;
    let served = rt.block_on(serve(&cfg, engine.clone(), tokens, audit, nbd_tls, api_tls));
    // Let any blocking engine calls still queued finish before the engine stops.
    rt.shutdown_timeout(DRAIN_TIMEOUT);

    tracing::info!("shutting down the engine (destage and sync)");
    let stopped = engine
        .shutdown()
        .map_err(|e| anyhow::anyhow!(api::error_chain(&e)))
        .context("engine shutdown failed");
    let _ = std::fs::remove_file(cfg.data.join("tzero.sock"));
    // Only after the engine has destaged and synced: a standby may take over at once.
    if let (Some(lease), Ok(())) = (&lease, &stopped) {
        lease.release();
    }
    served?;
    stopped?;
    tracing::info!("tzero stopped cleanly");
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests running `run` twice) is harmless: keep the first.
    let _ = match format {
        LogFormat::Text => fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        // A line logged inside a request or an NBD connection carries
        // that span's fields under `span`.
        LogFormat::Json => fmt
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

/// Binds everything, serves until a signal, then drains.
async fn serve(
    cfg: &ServeConfig,
    engine: Engine,
    tokens: Arc<TokenStore>,
    audit: Arc<AuditLog>,
    nbd_tls: Option<tzero_nbd::Tls>,
    api_tls: Option<Arc<rustls::ServerConfig>>,
) -> anyhow::Result<()> {
    let nbd_listener = TcpListener::bind(&cfg.nbd_addr)
        .await
        .with_context(|| format!("cannot listen for NBD on {}", cfg.nbd_addr))?;
    let api_listener = TcpListener::bind(&cfg.api_addr)
        .await
        .with_context(|| format!("cannot listen for the API on {}", cfg.api_addr))?;
    let sock_path = cfg.data.join("tzero.sock");
    // We hold the data-directory lock, so a socket file left here belongs to
    // a daemon that died: remove it.
    match std::fs::remove_file(&sock_path) {
        Ok(()) => tracing::info!("removed stale socket {}", sock_path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", sock_path.display())),
    }
    let unix_listener = UnixListener::bind(&sock_path)
        .with_context(|| format!("cannot listen on {}", sock_path.display()))?;
    // The socket needs no token, so only the owner may connect.
    std::fs::set_permissions(&sock_path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", sock_path.display()))?;

    let mut signals = Signals::new()?;
    let (stop_tx, stop_rx) = watch::channel(false);

    // The audit layer is outermost, so the token check's refusals are
    // logged too, and each router names its callers.
    // Safeguarded Copy's schedules run beside the API, which manages them.
    let policies = crate::sgc::policies::Policies::open(&cfg.data, engine.clone())?;
    let scheduler = policies
        .start()
        .context("cannot start the Safeguarded Copy scheduler")?;
    let tcp_app = logged(
        api::router_with_token(engine.clone(), tokens.clone()).layer(Extension(policies.clone())),
        Caller::Token,
        audit.clone(),
    );
    let unix_app = logged(
        api::router(engine.clone(), tokens).layer(Extension(policies.clone())),
        Caller::Socket,
        audit.clone(),
    );
    let nbd_audit = audit;
    let api_scheme = if api_tls.is_some() { "https" } else { "http" };
    let tcp_api = match api_tls {
        None => tokio::spawn(
            axum::serve(api_listener, tcp_app)
                .with_graceful_shutdown(stopped(stop_rx.clone()))
                .into_future(),
        ),
        Some(tls) => tokio::spawn(
            axum::serve(TlsListener::new(api_listener, tls), tcp_app)
                .with_graceful_shutdown(stopped(stop_rx.clone()))
                .into_future(),
        ),
    };
    let unix_api = tokio::spawn(
        axum::serve(unix_listener, unix_app)
            .with_graceful_shutdown(stopped(stop_rx.clone()))
            .into_future(),
    );
    let provider = Arc::new(EngineExports::new(engine).with_audit(nbd_audit));
    let nbd_config = tzero_nbd::ServerConfig {
        max_connections: cfg.max_connections,
        tls: nbd_tls,
        ..tzero_nbd::ServerConfig::default()
    };
    let nbd_server = tzero_nbd::NbdServer::new(provider, nbd_config);
    crate::metrics::global().set_nbd(nbd_server.stats());
    let nbd_stop = stop_rx.clone();
    let mut nbd = tokio::spawn(async move { nbd_server.serve(nbd_listener, nbd_stop).await });

    tracing::info!(
        nbd = %cfg.nbd_addr,
        nbd_tls = ?cfg.nbd_tls.mode,
        api = %format!("{api_scheme}://{}", cfg.api_addr),
        socket = %sock_path.display(),
        pid = std::process::id(),
        "tzero ready"
    );

    let early_nbd_exit = tokio::select! {
        sig = signals.recv() => {
            tracing::info!("received {sig}: stopping");
            None
        }
        r = &mut nbd => Some(r),
    };
    let _ = stop_tx.send(true);
    policies.stop();
    let _ = scheduler.join();

    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        let nbd_result = match early_nbd_exit {
            Some(r) => r,
            None => nbd.await,
        };
        (nbd_result, tcp_api.await, unix_api.await)
    })
    .await;
    let Ok((nbd_result, tcp_result, unix_result)) = drained else {
        bail!("connections still open after {DRAIN_TIMEOUT:?}; stopping anyway");
    };
    match nbd_result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e).context("NBD server failed"),
        Err(e) => bail!("NBD server task failed: {e}"),
    }
    for (what, r) in [("TCP API", tcp_result), ("unix-socket API", unix_result)] {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e).with_context(|| format!("{what} server failed")),
            Err(e) => bail!("{what} task failed: {e}"),
        }
    }
    Ok(())
}

/// Resolves when the stop flag is raised (or its sender is gone).
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// SIGTERM and SIGINT.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// The exclusive lock on a data directory; released when dropped or when
/// the process dies.
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock or explains who holds it.
    pub fn acquire(dir: &Path) -> anyhow::Result<Self> {
        use rustix::fs::{flock, FlockOperation};
        let path = dir.join("tzero.lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path)
            .with_context(|| format!("cannot open lock file {}", path.display()))?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let pid = holder.trim();
                let pid = if pid.is_empty() { "unknown" } else { pid };
                bail!(
                    "data directory {} is in use by another tzero daemon (pid {pid})",
                    dir.display()
                );
            }
            Err(e) => {
                return Err(std::io::Error::from(e))
                    .with_context(|| format!("cannot lock {}", path.display()))
            }
        }
        // Record our pid for the message above; the lock, not the pid, is
        // what excludes other daemons.
        file.set_len(0)
            .and_then(|()| file.write_all(format!("{}\n", std::process::id()).as_bytes()))
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(DataDirLock { _file: file })
    }
}

/// Raises the soft limit on open files to the hard one: each NBD
/// connection and each volume holds descriptors, and the usual soft limit
/// (1024) would refuse clients long before `--max-connections`.
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!("cannot raise the open-file limit: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_with_pid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _held = DataDirLock::acquire(dir.path()).expect("first");
        let err = match DataDirLock::acquire(dir.path()) {
            Ok(_) => panic!("second lock succeeded"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("is in use by another tzero daemon"), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
    }
}
