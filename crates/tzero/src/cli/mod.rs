//! The command line: DSCLI verbs (`mkfbvol`, `lsflash -l`, ...) over the API.
//!
//! This module holds the top-level clap definition, the global flags and the
//! dispatch; each resource's verbs (their arguments and handlers) live in
//! their own module: [`volumes`], [`pools`], [`flash`], [`groups`],
//! [`revert`]; `progress` draws `--wait`'s bars and `watch` runs
//! `lsflash --watch`.
//!
//! Everything the CLI can check by itself (sizes, `SRC:TGT` syntax, URLs) is
//! checked while parsing, before any request is sent, so a typo never
//! half-applies a command. Exit codes: 0 success, 1 an operation failed
//! (each failure printed as one `tzero: error: ...` line), 2 usage error.

mod common;
pub mod flash;
pub mod groups;
pub mod pools;
mod progress;
pub mod revert;
pub mod sgc;
pub mod token;
pub mod volumes;
mod watch;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::client::{Client, Endpoint};
use crate::serve::LogFormat;
use common::{api_addr, size, Batch};
pub use common::{pair, Pair};
use flash::{
    ChflashArgs, LsflashArgs, MkflashArgs, ResyncflashArgs, ReverseflashArgs, RmflashArgs,
    SetflashrateArgs,
};
use groups::{FreezeflashArgs, UnfreezeflashArgs};
use pools::{LsextpoolArgs, MkextpoolArgs, RmextpoolArgs};
use revert::{PairsArgs, SettleArgs};
use sgc::{
    ChsgcArgs, ChsgcpolicyArgs, DiffsgcArgs, LssgcArgs, LssgcpolicyArgs, MksafeguardedcapArgs,
    MksgcArgs, MksgcpolicyArgs, RecoversgcArgs, RmsgcArgs, RmsgcpolicyArgs,
};
use token::TokenArgs;
use volumes::{LsfbvolArgs, MkfbvolArgs, RmfbvolArgs};

/// Default TCP address of the API.
pub const DEFAULT_API_ADDR: &str = "127.0.0.1:10810";
/// Default NBD listen address (10809 is NBD's IANA port).
pub const DEFAULT_NBD_ADDR: &str = "127.0.0.1:10809";

#[derive(Debug, Parser)]
#[command(
    name = "tzero",
    version,
    about = "FlashCopy (point-in-time copy) volumes served over NBD, managed with DSCLI verbs",
    long_about = "FlashCopy (point-in-time copy) volumes served over NBD, managed with DSCLI verbs.\n\n\
        `tzero serve` runs the daemon; every other command talks to it, through the unix socket \
        DATA/tzero.sock by default or over TCP with --api URL --token TOKEN."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags accepted before or after the verb.
#[derive(Debug, Args)]
pub struct Global {
    /// Data directory: where `serve` keeps volumes, and where other commands
    /// find its socket (DIR/tzero.sock).
    #[arg(
        long,
        global = true,
        env = "TZERO_DATA",
        default_value = "./tzero-data",
        value_name = "DIR"
    )]
    pub data: PathBuf,
    /// For `serve`: the API's TCP listen address [default: 127.0.0.1:10810].
    /// For other commands: the daemon's URL (http://HOST:PORT, or
    /// https://HOST:PORT when it serves --api-tls-cert), used instead of the
    /// unix socket.
    #[arg(long, global = true, env = "TZERO_API", value_name = "URL", value_parser = api_addr)]
    pub api: Option<String>,
    /// API token for --api (default: read from DIR/api-token when readable).
    #[arg(
        long,
        global = true,
        env = "TZERO_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// For an https:// --api: the CA certificate (PEM) the daemon's
    /// certificate must chain to [default: the system's CA bundle].
    #[arg(long, global = true, env = "TZERO_API_CA", value_name = "FILE")]
    pub api_ca: Option<PathBuf>,
    /// Print JSON (arrays of API objects) instead of tables and messages.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: NBD server, HTTP API and the FlashCopy engine.
    Serve(ServeArgs),
    /// Create fixed-block volumes.
    Mkfbvol(MkfbvolArgs),
    /// List volumes.
    Lsfbvol(LsfbvolArgs),
    /// Delete volumes.
    Rmfbvol(RmfbvolArgs),
    /// Establish FlashCopy relationships (T0 is now).
    Mkflash(MkflashArgs),
    /// List FlashCopy relationships.
    Lsflash(LsflashArgs),
    /// Withdraw FlashCopy relationships, now or (--cp) when their
    /// background copy completes; --resettgtinhibit instead lifts target
    /// write inhibit and keeps the relationships.
    Rmflash(RmflashArgs),
    /// Change a FlashCopy relationship: `--cp` starts the background copy of
    /// a NOCOPY relationship.
    Chflash(ChflashArgs),
    /// Set the background copy rate of FlashCopy relationships.
    Setflashrate(SetflashrateArgs),
    /// Incremental FlashCopy: a new T0 for relationships made with
    /// --record, copying only the tracks changed on either volume since.
    Resyncflash(ResyncflashArgs),
    /// Reverse restore: the source gets the target's point-in-time data
    /// back; the relationship is then TGT:SRC.
    Reverseflash(ReverseflashArgs),
    /// Release write I/O held by `mkflash --freeze` or `freezeflash`.
    Unfreezeflash(UnfreezeflashArgs),
    /// Hold write I/O to FlashCopy sources (queued, never failed; reads go
    /// on) until unfreezeflash or the timeout.
    Freezeflash(FreezeflashArgs),
    /// Make incremental relationships revertible: their next resyncflash
    /// can be undone (revertflash) or made permanent (commitflash).
    Setflashrevertible(PairsArgs),
    /// Make the point in time of a revertible resync permanent.
    Commitflash(SettleArgs),
    /// Roll targets back to the point in time before their revertible resync.
    Revertflash(SettleArgs),
    /// Create an extent pool: space for standard and space-efficient volumes.
    Mkextpool(MkextpoolArgs),
    /// List extent pools with their capacity, used and free space.
    Lsextpool(LsextpoolArgs),
    /// Delete empty extent pools.
    Rmextpool(RmextpoolArgs),
    /// API tokens: `token rotate admin|monitor`.
    Token(TokenArgs),
    /// Safeguarded Copy: give volumes backup capacity from an extent pool.
    Mksafeguardedcap(MksafeguardedcapArgs),
    /// Safeguarded Copy: take a backup of volumes now (one point in time).
    Mksgc(MksgcArgs),
    /// Safeguarded Copy: list backups.
    Lssgc(LssgcArgs),
    /// Safeguarded Copy: remove backups whose retention is over.
    Rmsgc(RmsgcArgs),
    /// Safeguarded Copy: change backups' retention (shortening needs the security token).
    Chsgc(ChsgcArgs),
    /// Safeguarded Copy: recover a backup to a new volume, or restore its source.
    Recoversgc(RecoversgcArgs),
    /// Safeguarded Copy: the changed extents between two recovery points (JSON).
    Diffsgc(DiffsgcArgs),
    /// Safeguarded Copy: a schedule of backups.
    Mksgcpolicy(MksgcpolicyArgs),
    /// Safeguarded Copy: list schedules.
    Lssgcpolicy(LssgcpolicyArgs),
    /// Safeguarded Copy: change a schedule.
    Chsgcpolicy(ChsgcpolicyArgs),
    /// Safeguarded Copy: remove schedules (their backups stay until retention ends).
    Rmsgcpolicy(RmsgcpolicyArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// NBD listen address.
    #[arg(long, default_value = DEFAULT_NBD_ADDR, value_name = "ADDR")]
    pub nbd: String,
    /// Write cache size (e.g. 256MiB).
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub cache: Option<u64>,
    /// Log lines on stderr: `text` for people, `json` for log collectors
    /// (one JSON object per line; admin actions have target `tzero::admin`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    pub log_format: LogFormat,
    /// Most NBD connections served at once; more are closed at accept (a
    /// handshake that stalls past 10 s is closed too, so idle sockets cannot
    /// hold the slots).
    #[arg(long, default_value_t = 256, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_connections: u32,
    /// Size at which the audit log (DIR/audit.log, one JSON line per admin
    /// action) is rotated to audit.log.1; four rotated logs are kept.
    #[arg(long, default_value = "64MiB", value_name = "SIZE", value_parser = size)]
    pub audit_max: u64,
    /// NBD over TLS (NBD_OPT_STARTTLS): `off`, `on` (plaintext clients are
    /// served too) or `require` (nothing but STARTTLS before TLS). Needs
    /// --tls-cert and --tls-key, or --tls-psk.
    #[arg(long, value_enum, default_value_t = TlsMode::Off, value_name = "MODE")]
    pub tls: TlsMode,
    /// The NBD server's X.509 certificate chain (PEM, leaf first).
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        conflicts_with = "tls_psk"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// With --tls-cert: NBD clients must present a certificate signed by
    /// this CA (PEM), as qemu's `verify-peer=on`.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Pre-shared keys instead of certificates: a file of USERNAME:HEXKEY
    /// lines, as nbdkit's --tls-psk and qemu's tls-creds-psk (keys.psk).
    #[arg(long, value_name = "FILE")]
    pub tls_psk: Option<PathBuf>,
    /// Serve the TCP API over HTTPS with this certificate chain (PEM); the
    /// unix socket stays plain.
    #[arg(long, value_name = "FILE", requires = "api_tls_key")]
    pub api_tls_cert: Option<PathBuf>,
    /// The private key of --api-tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "api_tls_cert")]
    pub api_tls_key: Option<PathBuf>,
    /// Where volumes, their copies and the catalog live: `file` (sparse files
    /// in DIR) or `ceph` (RBD images in --pool of the cluster in --ceph-conf;
    /// DIR then keeps only the tokens, the audit log and the socket).
    #[arg(long, value_enum, default_value_t = BackendKind::File, value_name = "KIND")]
    pub backend: BackendKind,
    /// With --backend ceph: the cluster's ceph.conf.
    #[arg(long, value_name = "FILE", default_value = "/etc/ceph/ceph.conf")]
    pub ceph_conf: PathBuf,
    /// With --backend ceph: the RADOS pool (RBD-enabled) of the images.
    #[arg(long, value_name = "NAME", default_value = "tzero")]
    pub pool: String,
    /// With --backend ceph: prepended to every image and object name, so that
    /// several tzero sites can share a pool.
    #[arg(long, value_name = "PREFIX", default_value = "tzero.")]
    pub ceph_prefix: String,
    /// With --backend ceph: this node's name among the nodes sharing the pool
    /// (default `tzero@NBD_ADDR`).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// With --backend ceph: how long the pool's owner lease lasts without
    /// renewal; a standby takes over this long after the owner stops.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = lease_duration)]
    pub lease: std::time::Duration,
}

/// `--lease`: `5s`, `1500ms`, between 1 s and 10 min.
fn lease_duration(s: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = match s.strip_suffix("ms") {
        Some(n) => (n, 1u64),
        None => (s.strip_suffix('s').unwrap_or(s), 1000),
    };
    let ms = number
        .trim()
        .parse::<u64>()
        .map_err(|_| format!("{s:?} is not a duration like 5s or 1500ms"))?
        .checked_mul(unit)
        .ok_or_else(|| format!("{s:?} is too long"))?;
    if !(1000..=600_000).contains(&ms) {
        return Err(format!("{s:?}: a lease lasts between 1s and 600s"));
    }
    Ok(std::time::Duration::from_millis(ms))
}

/// `serve --backend`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    #[default]
    File,
    Ceph,
}

/// `serve --tls`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsMode {
    #[default]
    Off,
    On,
    Require,
}

/// Parses the process's command line, including the checks between flags
/// that clap cannot express (see [`Cli::check`]).
pub fn parse() -> Result<Cli, clap::Error> {
    Cli::try_parse()?.check()
}

impl Cli {
    /// Cross-flag rules, reported as usage errors before any request.
    pub fn check(self) -> Result<Cli, clap::Error> {
        use clap::CommandFactory;
        if let Command::Mkflash(a) = &self.command {
            a.check().map_err(|msg| {
                Cli::command().error(clap::error::ErrorKind::MissingRequiredArgument, msg)
            })?;
        }
        Ok(self)
    }
}

/// Prints a clap error as one `tzero: error:` line (help and version print
/// normally) and returns its exit code.
pub fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
        }
        _ => {
            let rendered = e.render().to_string();
            // The first paragraph, on one line: clap lists missing
            // arguments on indented lines after "...not provided:".
            let line = rendered
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ");
            let line = if line.is_empty() {
                "invalid usage"
            } else {
                &line
            };
            let line = line.strip_prefix("error: ").unwrap_or(line);
            eprintln!("tzero: error: {line} (see 'tzero --help')");
            ExitCode::from(2)
        }
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            crate::serve::run(crate::serve::ServeConfig {
                data: cli.global.data,
                api_addr: cli.global.api.map_or_else(
                    || DEFAULT_API_ADDR.to_owned(),
                    |a| a.trim_start_matches("https://").to_owned(),
                ),
                nbd_addr: args.nbd,
                cache_bytes: args.cache,
                log_format: args.log_format,
                max_connections: args.max_connections as usize,
                audit_max_bytes: args.audit_max,
                nbd_tls: crate::serve::NbdTls {
                    mode: args.tls,
                    cert: args.tls_cert,
                    key: args.tls_key,
                    client_ca: args.tls_client_ca,
                    psk: args.tls_psk,
                },
                api_tls: args.api_tls_cert.zip(args.api_tls_key),
                backend: match args.backend {
                    BackendKind::File => crate::serve::Backend::File,
                    BackendKind::Ceph => crate::serve::Backend::Ceph {
                        conf: args.ceph_conf,
                        pool: args.pool,
                        prefix: args.ceph_prefix,
                        node: args.node,
                        lease: args.lease,
                    },
                },
            })?;
            Ok(ExitCode::SUCCESS)
        }
        command => {
            let client = Client::new(endpoint(&cli.global));
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let json = cli.global.json;
            rt.block_on(run_client(&client, command, &cli.global.data, json))
        }
    }
}

/// The unix socket unless `--api` names a TCP address; the token comes from
/// `--token`/`TZERO_TOKEN` or, on the daemon's own host, its token file.
fn endpoint(g: &Global) -> Endpoint {
    match &g.api {
        None => Endpoint::Unix(g.data.join("tzero.sock")),
        Some(url) if url.starts_with("https://") => Endpoint::Https {
            addr: url.trim_start_matches("https://").to_owned(),
            token: g.token.clone().or_else(|| read_token_file(&g.data)),
            ca: g.api_ca.clone(),
        },
        Some(addr) => Endpoint::Tcp {
            addr: addr.clone(),
            token: g.token.clone().or_else(|| read_token_file(&g.data)),
        },
    }
}

fn read_token_file(data: &Path) -> Option<String> {
    let t = std::fs::read_to_string(data.join("api-token")).ok()?;
    let t = t.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

/// One handler per verb; each prints its own items' failures through the
/// batch, which decides the exit code.
async fn run_client(
    client: &Client,
    command: Command,
    data: &Path,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let batch = &mut Batch::new();
    match command {
        // `run` starts the daemon itself and never gets here with `serve`.
        Command::Serve(_) => anyhow::bail!("serve is not a client command"),
        Command::Mkfbvol(a) => volumes::mkfbvol(client, batch, a, json).await?,
        Command::Lsfbvol(a) => volumes::lsfbvol(client, batch, a, json).await?,
        Command::Rmfbvol(a) => volumes::rmfbvol(client, batch, a, json).await?,
        Command::Mkflash(a) => flash::mkflash(client, batch, a, json).await?,
        Command::Lsflash(a) => flash::lsflash(client, batch, a, json).await?,
        Command::Rmflash(a) => flash::rmflash(client, batch, a, json).await?,
        Command::Chflash(a) => flash::chflash(client, batch, a, json).await?,
        Command::Setflashrate(a) => flash::setflashrate(client, batch, a, json).await?,
        Command::Resyncflash(a) => flash::resyncflash(client, batch, a, json).await?,
        Command::Reverseflash(a) => flash::reverseflash(client, batch, a, json).await?,
        Command::Freezeflash(a) => groups::freezeflash(client, batch, a, json).await?,
        Command::Unfreezeflash(a) => groups::unfreezeflash(client, batch, a, json).await?,
        Command::Setflashrevertible(a) => {
            revert::setflashrevertible(client, batch, a, json).await?
        }
        Command::Commitflash(a) => revert::commitflash(client, batch, a, json).await?,
        Command::Revertflash(a) => revert::revertflash(client, batch, a, json).await?,
        Command::Mkextpool(a) => pools::mkextpool(client, batch, a, json).await?,
        Command::Lsextpool(a) => pools::lsextpool(client, batch, a, json).await?,
        Command::Rmextpool(a) => pools::rmextpool(client, batch, a, json).await?,
        Command::Token(a) => token::token(client, batch, a, data, json).await?,
        Command::Mksafeguardedcap(a) => sgc::mksafeguardedcap(client, batch, a, json).await?,
        Command::Mksgc(a) => sgc::mksgc(client, batch, a, json).await?,
        Command::Lssgc(a) => sgc::lssgc(client, a, json).await?,
        Command::Rmsgc(a) => sgc::rmsgc(client, batch, a, json).await?,
        Command::Chsgc(a) => sgc::chsgc(client, batch, a, json).await?,
        Command::Recoversgc(a) => sgc::recoversgc(client, batch, a, json).await?,
        Command::Diffsgc(a) => sgc::diffsgc(client, a).await?,
        Command::Mksgcpolicy(a) => sgc::mksgcpolicy(client, batch, a, json).await?,
        Command::Lssgcpolicy(a) => sgc::lssgcpolicy(client, a, json).await?,
        Command::Chsgcpolicy(a) => sgc::chsgcpolicy(client, batch, a, json).await?,
        Command::Rmsgcpolicy(a) => sgc::rmsgcpolicy(client, batch, a, json).await?,
    }
    Ok(batch.exit())
}

#[cfg(test)]
mod tests;
