//! The command line: DSCLI verbs (`mkfbvol`, `lsflash -l`, ...) over the API.
//!
//! Everything the CLI can check by itself (sizes, `SRC:TGT` syntax, URLs) is
//! checked while parsing, before any request is sent, so a typo never
//! half-applies a command. Exit codes: 0 success, 1 an operation failed
//! (each failure printed as one `tzero: error: ...` line), 2 usage error.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::api_types::{
    CreatePool, CreateVolume, Establish, EstablishGroup, Flash, FlashPair, FlashState, Freeze,
    Resync, Reverse, Unfreeze, Volume, DEFAULT_FREEZE_TIMEOUT_SECS,
};
use crate::client::{parse_api_addr, Client, ClientError, Endpoint};
use crate::output::{flash_table, pool_table, print_json, volume_table};
use crate::units::{format_size, parse_size};

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
    /// For other commands: the daemon's URL (http://HOST:PORT), used instead
    /// of the unix socket.
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
}

#[derive(Debug, Args)]
pub struct UnfreezeflashArgs {
    /// Source volumes whose writes are held.
    #[arg(required = true, value_name = "SRC")]
    pub volumes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct FreezeflashArgs {
    /// Release the held writes by themselves after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_FREEZE_TIMEOUT_SECS)]
    pub timeout: u64,
    /// Source volumes to freeze.
    #[arg(required = true, value_name = "SRC")]
    pub volumes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PairsArgs {
    #[arg(required = true, value_name = "SRC:TGT", value_parser = pair)]
    pub pairs: Vec<Pair>,
}

#[derive(Debug, Args)]
pub struct SettleArgs {
    /// Every relationship established with this sequence number
    /// (mkflash --seqnum); all must be revertible, or none is changed.
    #[arg(
        long,
        value_name = "N",
        required_unless_present = "pairs",
        conflicts_with = "pairs"
    )]
    pub seqnum: Option<u32>,
    #[arg(value_name = "SRC:TGT", value_parser = pair)]
    pub pairs: Vec<Pair>,
}

#[derive(Debug, Args)]
pub struct MkextpoolArgs {
    /// Capacity of the pool, e.g. 100GiB.
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub cap: u64,
    /// Name of the pool.
    #[arg(value_name = "NAME")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct LsextpoolArgs {
    /// Only these pools.
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmextpoolArgs {
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

/// DSCLI's storage allocation methods (`-sam`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sam {
    /// Fully allocated: the whole capacity is taken from the pool at creation.
    Standard,
    /// Extent space-efficient (thin): pool space only for tracks written or copied.
    Ese,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// NBD listen address.
    #[arg(long, default_value = DEFAULT_NBD_ADDR, value_name = "ADDR")]
    pub nbd: String,
    /// Write cache size (e.g. 256MiB).
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub cache: Option<u64>,
}

#[derive(Debug, Args)]
pub struct MkfbvolArgs {
    /// Capacity of each volume, e.g. 10GiB (binary units: K, M, G, T).
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub cap: u64,
    /// Track size: the unit of copy, a power of two from 4KiB to 1MiB.
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub track_size: Option<u64>,
    /// Extent pool to allocate from; without it a volume is a sparse file.
    #[arg(long, value_name = "NAME")]
    pub extpool: Option<String>,
    /// Storage allocation method in the pool [default: standard].
    #[arg(long, value_enum, value_name = "METHOD", requires = "extpool")]
    pub sam: Option<Sam>,
    /// Names of the volumes to create.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LsfbvolArgs {
    /// Also show allocated bytes, FlashCopy roles and data state.
    #[arg(short = 'l', long = "long")]
    pub long: bool,
    /// Only these volumes.
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmfbvolArgs {
    /// Withdraw the volumes' FlashCopy relationships first.
    #[arg(long)]
    pub force: bool,
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct MkflashArgs {
    /// No background copy: tracks reach the target only when the source is
    /// written (DSCLI -nocp).
    #[arg(long)]
    pub nocp: bool,
    /// Keep the relationship after the background copy completes.
    #[arg(long)]
    pub persist: bool,
    /// Background copy rate limit in bytes per second (e.g. 64MiB); 0 = unlimited.
    #[arg(long, value_name = "BYTES_PER_S", value_parser = size, default_value = "0")]
    pub rate: u64,
    /// Record changes on both volumes so the pair can be resynced
    /// (resyncflash) or reversed incrementally; needs --persist, as in DSCLI.
    #[arg(long)]
    pub record: bool,
    /// Wait until the background copy completes, showing progress on a terminal.
    #[arg(long)]
    pub wait: bool,
    /// Hold write I/O to the sources after T0 (queued, never failed; reads go
    /// on) until `unfreezeflash` or --freeze-timeout.
    #[arg(long)]
    pub freeze: bool,
    /// Seconds after which frozen writes resume by themselves.
    #[arg(long, value_name = "SECS", requires = "freeze", default_value_t = DEFAULT_FREEZE_TIMEOUT_SECS)]
    pub freeze_timeout: u64,
    /// Target write inhibit: hosts may not write the targets (they are
    /// exported read-only) until `rmflash --resettgtinhibit`.
    #[arg(long)]
    pub tgtinhibit: bool,
    /// Sequence number, to select the relationships later (lsflash,
    /// commitflash, revertflash --seqnum).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seqnum: u32,
    /// Relationships as SOURCE:TARGET. Several pairs are one consistency
    /// group: one T0 for all, ordered against host writes on every source.
    #[arg(required = true, value_name = "SRC:TGT", value_parser = pair)]
    pub pairs: Vec<Pair>,
}

#[derive(Debug, Args)]
pub struct RmflashArgs {
    /// Turn the background copy on and withdraw each relationship when its
    /// copy completes, so the target is left a full point-in-time copy.
    /// Without it an incomplete copy leaves the target's contents undefined.
    #[arg(long, conflicts_with = "resettgtinhibit")]
    pub cp: bool,
    /// Lift target write inhibit WITHOUT withdrawing: the relationship
    /// stays, its targets become writable again.
    #[arg(long)]
    pub resettgtinhibit: bool,
    #[arg(required = true, value_name = "SRC:TGT", value_parser = pair)]
    pub pairs: Vec<Pair>,
}

#[derive(Debug, Args)]
pub struct ResyncflashArgs {
    /// Keep recording changes (required, as in DSCLI: without it the next
    /// resync would have to copy everything).
    #[arg(long, required = true)]
    pub record: bool,
    /// Keep the relationship after the copy completes (required with --record).
    #[arg(long, required = true)]
    pub persist: bool,
    /// Wait until the changed tracks are copied.
    #[arg(long)]
    pub wait: bool,
    #[arg(required = true, value_name = "SRC:TGT", value_parser = pair)]
    pub pairs: Vec<Pair>,
}

#[derive(Debug, Args)]
pub struct ReverseflashArgs {
    /// Fast reverse restore: allowed before the background copy completes;
    /// the target's contents are then undefined.
    #[arg(long)]
    pub fast: bool,
    /// Wait until the source is fully restored.
    #[arg(long)]
    pub wait: bool,
    /// Relationships to reverse, as SOURCE:TARGET (they become TARGET:SOURCE).
    #[arg(required = true, value_name = "SRC:TGT", value_parser = pair)]
    pub pairs: Vec<Pair>,
}

#[derive(Debug, Args)]
pub struct LsflashArgs {
    /// DSCLI's long listing (lsflash -l).
    #[arg(short = 'l', long = "long")]
    pub long: bool,
    /// Only relationships established with this sequence number.
    #[arg(long, value_name = "N")]
    pub seqnum: Option<u32>,
    /// Only these relationships.
    #[arg(value_name = "SRC:TGT", value_parser = pair)]
    pub pairs: Vec<Pair>,
}

#[derive(Debug, Args)]
pub struct ChflashArgs {
    /// Start the background copy of a NOCOPY relationship (NOCOPY → COPY).
    #[arg(long, required = true)]
    pub cp: bool,
    /// Wait until the background copy completes.
    #[arg(long)]
    pub wait: bool,
    #[arg(required = true, value_name = "SRC:TGT", value_parser = pair)]
    pub pairs: Vec<Pair>,
}

#[derive(Debug, Args)]
pub struct SetflashrateArgs {
    /// New rate limit in bytes per second (e.g. 64MiB); 0 = unlimited.
    #[arg(long, required = true, value_name = "BYTES_PER_S", value_parser = size)]
    pub rate: u64,
    #[arg(required = true, value_name = "SRC:TGT", value_parser = pair)]
    pub pairs: Vec<Pair>,
}

/// A `SOURCE:TARGET` volume pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub source: String,
    pub target: String,
}

impl std::fmt::Display for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.source, self.target)
    }
}

/// Parses `SRC:TGT`: exactly one colon, both names non-empty. Names are
/// otherwise checked by the engine, which owns the naming rule.
pub fn pair(s: &str) -> Result<Pair, String> {
    let err = || format!("expected SOURCE:TARGET, got {s:?}");
    let (source, target) = s.split_once(':').ok_or_else(err)?;
    if source.is_empty() || target.is_empty() || target.contains(':') {
        return Err(err());
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err());
    }
    Ok(Pair {
        source: source.to_owned(),
        target: target.to_owned(),
    })
}

fn size(s: &str) -> Result<u64, String> {
    parse_size(s).map_err(|e| e.to_string())
}

fn api_addr(s: &str) -> Result<String, String> {
    parse_api_addr(s).map_err(|e| e.to_string())
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
            if a.record && !a.persist {
                return Err(Cli::command().error(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    "mkflash --record needs --persist (change recording is kept only by a persistent relationship)",
                ));
            }
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

/// `println!` that fails (instead of panicking) when stdout is closed, e.g.
/// `tzero lsfbvol | head -1`.
macro_rules! outln {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*)?
    };
}

/// Prints one failed operation.
fn report(e: &anyhow::Error) {
    eprintln!("tzero: error: {e:#}");
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            crate::serve::run(crate::serve::ServeConfig {
                data: cli.global.data,
                api_addr: cli
                    .global
                    .api
                    .unwrap_or_else(|| DEFAULT_API_ADDR.to_owned()),
                nbd_addr: args.nbd,
                cache_bytes: args.cache,
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
            rt.block_on(run_client(&client, command, json))
        }
    }
}

/// The unix socket unless `--api` names a TCP address; the token comes from
/// `--token`/`TZERO_TOKEN` or, on the daemon's own host, its token file.
fn endpoint(g: &Global) -> Endpoint {
    match &g.api {
        None => Endpoint::Unix(g.data.join("tzero.sock")),
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

/// Runs each item of a multi-item verb, printing each failure as it
/// happens, and fails the command if any item failed.
struct Batch {
    failed: bool,
}

impl Batch {
    fn new() -> Self {
        Batch { failed: false }
    }

    fn record<T>(&mut self, r: Result<T, ClientError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                report(&anyhow::Error::new(e));
                self.failed = true;
                None
            }
        }
    }

    fn exit(&self) -> ExitCode {
        if self.failed {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        }
    }
}

async fn run_client(client: &Client, command: Command, json: bool) -> anyhow::Result<ExitCode> {
    let mut batch = Batch::new();
    match command {
        // `run` starts the daemon itself and never gets here with `serve`.
        Command::Serve(_) => anyhow::bail!("serve is not a client command"),
        Command::Mkfbvol(a) => {
            let mut made: Vec<Volume> = Vec::new();
            for name in &a.names {
                let req = CreateVolume {
                    name: name.clone(),
                    capacity_bytes: a.cap,
                    track_size: a.track_size,
                    pool: a.extpool.clone(),
                    space_efficient: a.sam == Some(Sam::Ese),
                };
                if let Some(v) = batch.record(client.create_volume(&req).await) {
                    if !json {
                        let place = match &v.pool {
                            Some(p) => format!(", {} in extent pool {p}", v.provisioning.sam()),
                            None => String::new(),
                        };
                        outln!(
                            "mkfbvol: volume {} created ({}, track size {}{place})",
                            v.name,
                            format_size(v.capacity_bytes),
                            format_size(v.track_size)
                        );
                    }
                    made.push(v);
                }
            }
            if json {
                print_json(&made)?;
            }
        }
        Command::Lsfbvol(a) => {
            let vols = if a.names.is_empty() {
                client.volumes().await?
            } else {
                let mut vols = Vec::new();
                for name in &a.names {
                    if let Some(v) = batch.record(client.volume(name).await) {
                        vols.push(v);
                    }
                }
                vols
            };
            if json {
                print_json(&vols)?;
            } else {
                write!(
                    std::io::stdout().lock(),
                    "{}",
                    volume_table(&vols, a.long).render()
                )?;
            }
        }
        Command::Rmfbvol(a) => {
            let mut gone = Vec::new();
            for name in &a.names {
                if batch
                    .record(client.delete_volume(name, a.force).await)
                    .is_some()
                {
                    if !json {
                        outln!("rmfbvol: volume {name} deleted");
                    }
                    gone.push(serde_json::json!({ "name": name }));
                }
            }
            if json {
                print_json(&gone)?;
            }
        }
        Command::Mkflash(a) => {
            let mut made = Vec::new();
            if a.pairs.len() > 1 || a.freeze {
                // One call, one T0: the pairs are a consistency group, made
                // all together or not at all.
                let req = EstablishGroup {
                    pairs: a
                        .pairs
                        .iter()
                        .map(|p| FlashPair {
                            source: p.source.clone(),
                            target: p.target.clone(),
                        })
                        .collect(),
                    background_copy: !a.nocp,
                    persistent: a.persist,
                    copy_rate: a.rate,
                    recording: a.record,
                    target_inhibit: a.tgtinhibit,
                    seqnum: a.seqnum,
                    freeze: a.freeze,
                    freeze_timeout_secs: a.freeze_timeout,
                };
                if let Some(rels) = batch.record(client.establish_group(&req).await) {
                    if !json {
                        let ids: Vec<String> = a.pairs.iter().map(ToString::to_string).collect();
                        let what = if ids.len() > 1 {
                            "consistency group"
                        } else {
                            "FlashCopy pair"
                        };
                        outln!(
                            "mkflash: {what} {} established at one T0{}",
                            ids.join(" "),
                            establish_notes(&rels)
                        );
                        if a.freeze {
                            let mut sources: Vec<&str> =
                                a.pairs.iter().map(|p| p.source.as_str()).collect();
                            sources.dedup();
                            outln!(
                                "mkflash: write I/O to {} is frozen (held, not failed) for up to {} s; release it with: tzero unfreezeflash {}",
                                sources.join(", "),
                                a.freeze_timeout,
                                sources.join(" ")
                            );
                        }
                    }
                    made = rels;
                }
            } else {
                for p in &a.pairs {
                    let req = Establish {
                        source: p.source.clone(),
                        target: p.target.clone(),
                        background_copy: !a.nocp,
                        persistent: a.persist,
                        copy_rate: a.rate,
                        recording: a.record,
                        target_inhibit: a.tgtinhibit,
                        seqnum: a.seqnum,
                    };
                    if let Some(f) = batch.record(client.establish(&req).await) {
                        if !json {
                            outln!(
                                "mkflash: FlashCopy pair {p} established{}",
                                establish_notes(std::slice::from_ref(&f))
                            );
                        }
                        made.push(f);
                    }
                }
            }
            if a.wait && !made.is_empty() {
                wait_for_copies(client, &made, json).await?;
            }
            if json {
                print_json(&made)?;
            }
        }
        Command::Lsflash(a) => {
            let rels = if a.pairs.is_empty() {
                match a.seqnum {
                    Some(n) => client.flashes_with_seqnum(n).await?,
                    None => client.flashes().await?,
                }
            } else {
                let mut rels = Vec::new();
                for p in &a.pairs {
                    if let Some(f) = batch.record(client.flash(&p.source, &p.target).await) {
                        if a.seqnum.is_none_or(|n| f.seqnum == n) {
                            rels.push(f);
                        }
                    }
                }
                rels
            };
            if json {
                print_json(&rels)?;
            } else {
                write!(
                    std::io::stdout().lock(),
                    "{}",
                    flash_table(&rels, a.long).render()
                )?;
            }
        }
        Command::Rmflash(a) if a.resettgtinhibit => {
            let mut changed = Vec::new();
            for p in &a.pairs {
                let r = client.set_target_inhibit(&p.source, &p.target, false).await;
                if let Some(f) = batch.record(r) {
                    if !json {
                        outln!(
                            "rmflash: target write inhibit of {p} lifted; the relationship stays ({} is writable)",
                            p.target
                        );
                    }
                    changed.push(f);
                }
            }
            if json {
                print_json(&changed)?;
            }
        }
        Command::Rmflash(a) if a.cp => {
            let mut pending = Vec::new();
            for p in &a.pairs {
                let r = client.withdraw_after_copy(&p.source, &p.target).await;
                if let Some(f) = batch.record(r) {
                    if !json {
                        if f.state == FlashState::Copied {
                            outln!("rmflash: FlashCopy pair {p} withdrawn (its copy was complete)");
                        } else {
                            outln!(
                                "rmflash: FlashCopy pair {p} will be withdrawn when its background copy completes ({} tracks to go)",
                                f.out_of_sync_tracks
                            );
                        }
                    }
                    pending.push(f);
                }
            }
            if json {
                print_json(&pending)?;
            }
        }
        Command::Rmflash(a) => {
            let mut gone = Vec::new();
            for p in &a.pairs {
                if batch
                    .record(client.withdraw(&p.source, &p.target).await)
                    .is_some()
                {
                    if !json {
                        outln!("rmflash: FlashCopy pair {p} withdrawn");
                    }
                    // The daemon marks a target whose copy was cut short;
                    // say so, since its data is now a mix of T0 and older.
                    let undefined = client
                        .volume(&p.target)
                        .await
                        .is_ok_and(|v| v.contents_undefined);
                    if undefined {
                        eprintln!(
                            "tzero: warning: the copy of {p} was incomplete: the contents of {} are now undefined",
                            p.target
                        );
                    }
                    gone.push(serde_json::json!({
                        "source": p.source,
                        "target": p.target,
                        "contents_undefined": undefined,
                    }));
                }
            }
            if json {
                print_json(&gone)?;
            }
        }
        Command::Resyncflash(a) => {
            let req = Resync {
                recording: a.record,
                persistent: a.persist,
                background_copy: None,
            };
            let mut done = Vec::new();
            for p in &a.pairs {
                if let Some(f) = batch.record(client.resync(&p.source, &p.target, &req).await) {
                    if !json {
                        outln!(
                            "resyncflash: FlashCopy pair {p} resynced ({} changed tracks to copy)",
                            f.out_of_sync_tracks
                        );
                    }
                    done.push(f);
                }
            }
            if a.wait && !done.is_empty() {
                wait_for_copies(client, &done, json).await?;
            }
            if json {
                print_json(&done)?;
            }
        }
        Command::Reverseflash(a) => {
            let req = Reverse { fast: a.fast };
            let mut done = Vec::new();
            for p in &a.pairs {
                if let Some(f) = batch.record(client.reverse(&p.source, &p.target, &req).await) {
                    if !json {
                        outln!(
                            "reverseflash: FlashCopy pair {p} reversed: it is now {}:{} ({} tracks to restore)",
                            f.source,
                            f.target,
                            f.out_of_sync_tracks
                        );
                    }
                    done.push(f);
                }
            }
            if a.wait && !done.is_empty() {
                wait_for_copies(client, &done, json).await?;
            }
            if json {
                print_json(&done)?;
            }
        }
        Command::Chflash(a) => {
            // `--cp` is required by clap; it is the only change there is.
            debug_assert!(a.cp);
            let mut changed = Vec::new();
            for p in &a.pairs {
                if let Some(f) = batch.record(client.start_copy(&p.source, &p.target).await) {
                    if !json {
                        outln!("chflash: background copy of {p} started");
                    }
                    changed.push(f);
                }
            }
            if a.wait && !changed.is_empty() {
                wait_for_copies(client, &changed, json).await?;
            }
            if json {
                print_json(&changed)?;
            }
        }
        Command::Setflashrate(a) => {
            let mut changed = Vec::new();
            for p in &a.pairs {
                if let Some(f) = batch.record(client.set_rate(&p.source, &p.target, a.rate).await) {
                    if !json {
                        let rate = if a.rate == 0 {
                            "unlimited".to_owned()
                        } else {
                            format!("{}/s", format_size(a.rate))
                        };
                        outln!("setflashrate: copy rate of {p} set to {rate}");
                    }
                    changed.push(f);
                }
            }
            if json {
                print_json(&changed)?;
            }
        }
        Command::Freezeflash(a) => {
            let req = Freeze {
                volumes: a.volumes.clone(),
                timeout_secs: a.timeout,
            };
            if let Some(vols) = batch.record(client.freeze(&req).await) {
                if json {
                    print_json(&vols)?;
                } else {
                    outln!(
                        "freezeflash: write I/O to {} is frozen (held, not failed) for up to {} s; release it with: tzero unfreezeflash {}",
                        a.volumes.join(", "),
                        a.timeout,
                        a.volumes.join(" ")
                    );
                }
            }
        }
        Command::Unfreezeflash(a) => {
            let req = Unfreeze {
                volumes: a.volumes.clone(),
            };
            if let Some(vols) = batch.record(client.unfreeze(&req).await) {
                if json {
                    print_json(&vols)?;
                } else {
                    outln!(
                        "unfreezeflash: write I/O to {} released",
                        a.volumes.join(", ")
                    );
                }
            }
        }
        Command::Setflashrevertible(a) => {
            let mut changed = Vec::new();
            for p in &a.pairs {
                let r = client
                    .flash_action(&p.source, &p.target, "revertible")
                    .await;
                if let Some(f) = batch.record(r) {
                    if !json {
                        outln!("setflashrevertible: {p} is revertible: its next resyncflash can be committed (commitflash) or reverted (revertflash)");
                    }
                    changed.push(f);
                }
            }
            if json {
                print_json(&changed)?;
            }
        }
        Command::Commitflash(a) => {
            let done = settle(client, &mut batch, &a, "commit").await;
            if json {
                print_json(&done)?;
            } else {
                for f in &done {
                    outln!(
                        "commitflash: the point in time of {}:{} is committed",
                        f.source,
                        f.target
                    );
                }
            }
        }
        Command::Revertflash(a) => {
            let done = settle(client, &mut batch, &a, "revert").await;
            if json {
                print_json(&done)?;
            } else {
                for f in &done {
                    outln!(
                        "revertflash: {} is back at its previous point in time ({})",
                        f.target,
                        crate::output::format_date(f.synced_ms)
                    );
                }
            }
        }
        Command::Mkextpool(a) => {
            let req = CreatePool {
                name: a.name.clone(),
                capacity_bytes: a.cap,
            };
            if let Some(p) = batch.record(client.create_pool(&req).await) {
                if json {
                    print_json(&[&p])?;
                } else {
                    outln!(
                        "mkextpool: extent pool {} created ({})",
                        p.name,
                        format_size(p.capacity_bytes)
                    );
                }
            }
        }
        Command::Lsextpool(a) => {
            let pools = if a.names.is_empty() {
                client.pools().await?
            } else {
                let mut pools = Vec::new();
                for name in &a.names {
                    if let Some(p) = batch.record(client.pool(name).await) {
                        pools.push(p);
                    }
                }
                pools
            };
            if json {
                print_json(&pools)?;
            } else {
                write!(std::io::stdout().lock(), "{}", pool_table(&pools).render())?;
            }
        }
        Command::Rmextpool(a) => {
            let mut gone = Vec::new();
            for name in &a.names {
                if batch.record(client.delete_pool(name).await).is_some() {
                    if !json {
                        outln!("rmextpool: extent pool {name} deleted");
                    }
                    gone.push(serde_json::json!({ "name": name }));
                }
            }
            if json {
                print_json(&gone)?;
            }
        }
    }
    Ok(batch.exit())
}

/// ", with change recording, target write inhibited, seqnum N" as it applies.
fn establish_notes(rels: &[Flash]) -> String {
    let mut notes = Vec::new();
    if rels.iter().any(|f| f.recording) {
        notes.push("change recording".to_owned());
    }
    if rels.iter().any(|f| f.target_write_inhibit) {
        notes.push("target write inhibited".to_owned());
    }
    if let Some(f) = rels.iter().find(|f| f.seqnum != 0) {
        notes.push(format!("sequence number {}", f.seqnum));
    }
    if notes.is_empty() {
        String::new()
    } else {
        format!(" (with {})", notes.join(", "))
    }
}

/// `commitflash` / `revertflash`: by sequence number (one call, all or
/// nothing) or pair by pair.
async fn settle(client: &Client, batch: &mut Batch, a: &SettleArgs, action: &str) -> Vec<Flash> {
    match a.seqnum {
        Some(n) => batch
            .record(client.settle_seqnum(action, n).await)
            .unwrap_or_default(),
        None => {
            let mut done = Vec::new();
            for p in &a.pairs {
                let r = client.flash_action(&p.source, &p.target, action).await;
                if let Some(f) = batch.record(r) {
                    done.push(f);
                }
            }
            done
        }
    }
}

/// How often `--wait` polls the daemon.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Waits until every relationship has finished its background copy: it is
/// gone (non-persistent ones end when copied) or in state `copied`. A
/// NOCOPY relationship has nothing to wait for. Shows one progress bar over
/// all of them when stderr is a terminal and the output is not JSON.
async fn wait_for_copies(client: &Client, rels: &[Flash], json: bool) -> anyhow::Result<()> {
    let total_tracks: u64 = rels.iter().map(|f| f.total_tracks).sum();
    let total_bytes: u64 = rels
        .iter()
        .map(|f| f.total_tracks.saturating_mul(f.track_size))
        .sum();
    let bar = if !json && std::io::stderr().is_terminal() {
        // Position in bytes so indicatif's rate and ETA are in bytes; the
        // message carries the DSCLI unit, tracks.
        let bar = ProgressBar::new(total_bytes);
        let style = ProgressStyle::with_template(
            "{prefix} [{wide_bar}] {msg}  {binary_bytes_per_sec}  ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix("copying");
        Some(bar)
    } else {
        None
    };
    loop {
        let mut left_tracks = 0u64;
        let mut left_bytes = 0u64;
        for f in rels {
            match client.flash(&f.source, &f.target).await {
                Ok(now) => match now.state {
                    FlashState::Copying => {
                        left_tracks += now.out_of_sync_tracks;
                        left_bytes += now.out_of_sync_tracks.saturating_mul(now.track_size);
                    }
                    FlashState::Copied | FlashState::NoCopy => {}
                    FlashState::Failed => {
                        if let Some(bar) = &bar {
                            bar.abandon();
                        }
                        anyhow::bail!(
                            "FlashCopy pair {}:{} failed: {}",
                            f.source,
                            f.target,
                            now.failure.as_deref().unwrap_or("no reason given")
                        );
                    }
                },
                Err(e) if e.code() == Some("relationship_not_found") => {}
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(bar) = &bar {
            bar.set_position(total_bytes.saturating_sub(left_bytes));
            bar.set_message(format!(
                "{}/{total_tracks} tracks",
                total_tracks.saturating_sub(left_tracks)
            ));
        }
        if left_tracks == 0 {
            break;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    if let Some(bar) = &bar {
        bar.finish();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tzero").chain(args.iter().copied()))
    }

    #[test]
    fn verify_cli() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn pairs() {
        assert_eq!(
            pair("a:b"),
            Ok(Pair {
                source: "a".into(),
                target: "b".into()
            })
        );
        for bad in ["ab", ":b", "a:", "a:b:c", "a :b", ""] {
            assert!(pair(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn global_flags_before_or_after_verb() {
        let c = parse(&["--json", "--data", "/d", "lsfbvol"]).map_err(|e| e.to_string());
        let c = c.expect("parses");
        assert!(c.global.json);
        assert_eq!(c.global.data, PathBuf::from("/d"));
        let c = parse(&["lsflash", "-l", "--json", "--api", "http://127.0.0.1:1"]);
        let c = c.map_err(|e| e.to_string()).expect("parses");
        assert!(c.global.json);
        assert_eq!(c.global.api.as_deref(), Some("127.0.0.1:1"));
    }

    #[test]
    fn sizes_and_rates() {
        let c = parse(&["mkfbvol", "--cap", "10GiB", "--track-size", "64k", "a", "b"]);
        match c.map_err(|e| e.to_string()).expect("parses").command {
            Command::Mkfbvol(a) => {
                assert_eq!(a.cap, 10 << 30);
                assert_eq!(a.track_size, Some(64 << 10));
                assert_eq!(a.names, ["a", "b"]);
            }
            other => panic!("parsed as {other:?}"),
        }
        let c = parse(&["mkflash", "--nocp", "--rate", "64MiB", "a:b"]);
        match c.map_err(|e| e.to_string()).expect("parses").command {
            Command::Mkflash(a) => {
                assert!(a.nocp);
                assert_eq!(a.rate, 64 << 20);
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn usage_errors() {
        for args in [
            &["mkfbvol", "--cap", "10 GB", "a"][..],
            &["mkfbvol", "--cap", "10GiB"],
            &["mkflash", "a-b"],
            &["rmflash", "a:"],
            &["lsfbvol", "--api", "https://x:1"],
            &["chflash", "a:b"],
            &["resyncflash", "a:b"],
            &["resyncflash", "--record", "a:b"],
            &["reverseflash"],
            &["rmflash", "--cp"],
        ] {
            assert!(parse(args).is_err(), "{args:?}");
        }
        // Checked after parsing: --record needs --persist.
        let c = parse(&["mkflash", "--record", "a:b"]).map_err(|e| e.to_string());
        assert!(c.expect("parses").check().is_err());
        let c = parse(&["mkflash", "--record", "--persist", "a:b"]);
        let c = c.map_err(|e| e.to_string()).expect("parses");
        assert!(c.check().is_ok());
    }

    #[test]
    fn ds8000_verbs_parse() {
        let c = parse(&[
            "mkflash",
            "--freeze",
            "--freeze-timeout",
            "5",
            "--tgtinhibit",
            "--seqnum",
            "9",
            "a:b",
            "c:d",
        ]);
        match c.map_err(|e| e.to_string()).expect("parses").command {
            Command::Mkflash(a) => {
                assert!(a.freeze && a.tgtinhibit);
                assert_eq!((a.freeze_timeout, a.seqnum, a.pairs.len()), (5, 9, 2));
            }
            other => panic!("parsed as {other:?}"),
        }
        let c = parse(&["mkflash", "a:b"]).map_err(|e| e.to_string());
        match c.expect("parses").command {
            Command::Mkflash(a) => {
                assert!(!a.freeze && !a.tgtinhibit);
                assert_eq!(a.freeze_timeout, DEFAULT_FREEZE_TIMEOUT_SECS);
            }
            other => panic!("parsed as {other:?}"),
        }
        let c = parse(&[
            "mkfbvol",
            "--cap",
            "1GiB",
            "--extpool",
            "p",
            "--sam",
            "ese",
            "v",
        ]);
        match c.map_err(|e| e.to_string()).expect("parses").command {
            Command::Mkfbvol(a) => {
                assert_eq!(a.extpool.as_deref(), Some("p"));
                assert_eq!(a.sam, Some(Sam::Ese));
            }
            other => panic!("parsed as {other:?}"),
        }
        for ok in [
            &["commitflash", "--seqnum", "3"][..],
            &["revertflash", "a:b", "c:d"],
            &["setflashrevertible", "a:b"],
            &["freezeflash", "--timeout", "3", "a"],
            &["unfreezeflash", "a", "b"],
            &["rmflash", "--resettgtinhibit", "a:b"],
            &["mkextpool", "--cap", "1GiB", "p"],
            &["lsextpool"],
            &["rmextpool", "p"],
            &["lsflash", "-l", "--seqnum", "4"],
        ] {
            assert!(parse(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            &["mkfbvol", "--cap", "1GiB", "--sam", "ese", "v"][..],
            &[
                "mkfbvol",
                "--cap",
                "1GiB",
                "--extpool",
                "p",
                "--sam",
                "thin",
                "v",
            ],
            &["mkflash", "--freeze-timeout", "3", "a:b"],
            &["commitflash"],
            &["revertflash", "--seqnum", "1", "a:b"],
            &["unfreezeflash"],
            &["rmflash", "--cp", "--resettgtinhibit", "a:b"],
            &["mkextpool", "p"],
            &["setflashrevertible"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn new_verbs_parse() {
        let c = parse(&["reverseflash", "--fast", "--wait", "a:b", "c:d"]);
        match c.map_err(|e| e.to_string()).expect("parses").command {
            Command::Reverseflash(a) => {
                assert!(a.fast && a.wait);
                assert_eq!(a.pairs.len(), 2);
            }
            other => panic!("parsed as {other:?}"),
        }
        let c = parse(&["resyncflash", "--record", "--persist", "a:b"]);
        match c.map_err(|e| e.to_string()).expect("parses").command {
            Command::Resyncflash(a) => assert!(a.record && a.persist && !a.wait),
            other => panic!("parsed as {other:?}"),
        }
        let c = parse(&["rmflash", "--cp", "a:b"]);
        match c.map_err(|e| e.to_string()).expect("parses").command {
            Command::Rmflash(a) => assert!(a.cp),
            other => panic!("parsed as {other:?}"),
        }
    }
}
