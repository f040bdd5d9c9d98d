//! FlashCopy relationship verbs: `mkflash`, `lsflash`, `rmflash`,
//! `chflash`, `setflashrate`, `resyncflash`, `reverseflash`.
//!
//! Several pairs given to `mkflash` (or `--freeze`) are one consistency
//! group: one request, so one T0 for all or none. Every other verb sends
//! one request per pair, so one bad pair fails the command (exit 1) but not
//! the others.

use std::io::Write;

use clap::Args;

use super::common::{outln, pair, size, Batch, Pair};
use super::progress::wait_for_copies;
use crate::api_types::{
    Establish, EstablishGroup, Flash, FlashPair, FlashState, Resync, Reverse,
    DEFAULT_FREEZE_TIMEOUT_SECS,
};
use crate::client::{Client, ClientError};
use crate::output::{flash_table, print_json};
use crate::units::format_size;

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

impl MkflashArgs {
    /// The rule between flags that clap cannot express, as a usage message.
    pub(super) fn check(&self) -> Result<(), &'static str> {
        if self.record && !self.persist {
            return Err("mkflash --record needs --persist (change recording is kept only by a persistent relationship)");
        }
        Ok(())
    }
}

#[derive(Debug, Args)]
pub struct LsflashArgs {
    /// DSCLI's long listing (lsflash -l).
    #[arg(short = 'l', long = "long")]
    pub long: bool,
    /// Only relationships established with this sequence number.
    #[arg(long, value_name = "N")]
    pub seqnum: Option<u32>,
    /// List again every SECS seconds (default 2; fractions allowed) until
    /// Ctrl-C: a live table with a progress bar, copy rate and ETA per
    /// relationship on a terminal; with --json one JSON line per interval;
    /// otherwise a plain table per interval after a timestamp line. Put
    /// pairs before it (`lsflash a:b --watch`): a value after --watch is
    /// its interval.
    #[arg(
        long,
        value_name = "SECS",
        num_args = 0..=1,
        default_missing_value = "2",
        value_parser = super::watch::interval
    )]
    pub watch: Option<std::time::Duration>,
    /// With --watch: stop after N listings (for scripts).
    #[arg(long, value_name = "N", requires = "watch", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Only these relationships.
    #[arg(value_name = "SRC:TGT", value_parser = pair)]
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

pub(super) async fn mkflash(
    client: &Client,
    batch: &mut Batch,
    a: MkflashArgs,
    json: bool,
) -> anyhow::Result<()> {
    if a.pairs.len() > 1 || a.freeze {
        let made = establish_group(client, batch, &a, json).await?;
        return finish(client, &made, a.wait, json).await;
    }
    let establish = async |p: &Pair| {
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
        client.establish(&req).await
    };
    let say = |p: &Pair, f: &Flash| {
        let notes = establish_notes(std::slice::from_ref(f));
        format!("mkflash: FlashCopy pair {p} established{notes}")
    };
    per_pair(client, batch, &a.pairs, json, a.wait, establish, say).await
}

/// A verb that changes relationships pair by pair: one request per pair
/// (`call`), a line for each that succeeds (`say`), then [`finish`].
pub(super) async fn per_pair(
    client: &Client,
    batch: &mut Batch,
    pairs: &[Pair],
    json: bool,
    wait: bool,
    call: impl AsyncFnMut(&Pair) -> Result<Flash, ClientError>,
    say: impl Fn(&Pair, &Flash) -> String,
) -> anyhow::Result<()> {
    let done = batch
        .each(pairs, json, call, |p, f| Some(say(p, f)))
        .await?;
    finish(client, &done, wait, json).await
}

/// The end of a verb that changed relationships: `--wait` for their
/// copies, then `--json` prints them as they were changed.
async fn finish(client: &Client, rels: &[Flash], wait: bool, json: bool) -> anyhow::Result<()> {
    if wait && !rels.is_empty() {
        wait_for_copies(client, rels, json).await?;
    }
    if json {
        print_json(rels)?;
    }
    Ok(())
}

/// One call, one T0: the pairs are a consistency group, made all together
/// or not at all.
async fn establish_group(
    client: &Client,
    batch: &mut Batch,
    a: &MkflashArgs,
    json: bool,
) -> anyhow::Result<Vec<Flash>> {
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
    let Some(rels) = batch.record(client.establish_group(&req).await) else {
        return Ok(Vec::new());
    };
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
            let mut sources: Vec<&str> = a.pairs.iter().map(|p| p.source.as_str()).collect();
            sources.dedup();
            outln!(
                "mkflash: write I/O to {} is frozen (held, not failed) for up to {} s; release it with: tzero unfreezeflash {}",
                sources.join(", "),
                a.freeze_timeout,
                sources.join(" ")
            );
        }
    }
    Ok(rels)
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

pub(super) async fn lsflash(
    client: &Client,
    batch: &mut Batch,
    a: LsflashArgs,
    json: bool,
) -> anyhow::Result<()> {
    if let Some(interval) = a.watch {
        let w = super::watch::Watch {
            long: a.long,
            seqnum: a.seqnum,
            pairs: &a.pairs,
            interval,
            count: a.count,
        };
        return super::watch::watch(client, w, json).await;
    }
    let rels = if a.pairs.is_empty() {
        match a.seqnum {
            Some(n) => client.flashes_with_seqnum(n).await?,
            None => client.flashes().await?,
        }
    } else {
        let get = async |p: &Pair| client.flash(&p.source, &p.target).await;
        let mut rels = batch.each(&a.pairs, json, get, |_, _| None).await?;
        rels.retain(|f| a.seqnum.is_none_or(|n| f.seqnum == n));
        rels
    };
    if json {
        print_json(&rels)?;
    } else {
        write!(std::io::stdout().lock(), "{}", flash_table(&rels, a.long))?;
    }
    Ok(())
}

/// `rmflash` has three meanings: lift target write inhibit
/// (`--resettgtinhibit`), withdraw when copied (`--cp`), or withdraw now.
pub(super) async fn rmflash(
    client: &Client,
    batch: &mut Batch,
    a: RmflashArgs,
    json: bool,
) -> anyhow::Result<()> {
    if a.resettgtinhibit {
        let reset = async |p: &Pair| client.set_target_inhibit(&p.source, &p.target, false).await;
        let say = |p: &Pair, _: &Flash| {
            format!(
                "rmflash: target write inhibit of {p} lifted; the relationship stays ({} is writable)",
                p.target
            )
        };
        per_pair(client, batch, &a.pairs, json, false, reset, say).await
    } else if a.cp {
        let withdraw = async |p: &Pair| client.withdraw_after_copy(&p.source, &p.target).await;
        let say = |p: &Pair, f: &Flash| {
            if f.state == FlashState::Copied {
                format!("rmflash: FlashCopy pair {p} withdrawn (its copy was complete)")
            } else {
                format!(
                    "rmflash: FlashCopy pair {p} will be withdrawn when its background copy completes ({} tracks to go)",
                    f.out_of_sync_tracks
                )
            }
        };
        per_pair(client, batch, &a.pairs, json, false, withdraw, say).await
    } else {
        withdraw(client, batch, &a.pairs, json).await
    }
}

/// Withdraws now; the message comes before the warning about a target left
/// undefined, so both are printed here rather than by [`Batch::each`].
async fn withdraw(
    client: &Client,
    batch: &mut Batch,
    pairs: &[Pair],
    json: bool,
) -> anyhow::Result<()> {
    let mut gone = Vec::new();
    for p in pairs {
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
    Ok(())
}

pub(super) async fn chflash(
    client: &Client,
    batch: &mut Batch,
    a: ChflashArgs,
    json: bool,
) -> anyhow::Result<()> {
    // `--cp` is required by clap; it is the only change there is.
    debug_assert!(a.cp);
    let start = async |p: &Pair| client.start_copy(&p.source, &p.target).await;
    per_pair(client, batch, &a.pairs, json, a.wait, start, |p, _| {
        format!("chflash: background copy of {p} started")
    })
    .await
}

pub(super) async fn setflashrate(
    client: &Client,
    batch: &mut Batch,
    a: SetflashrateArgs,
    json: bool,
) -> anyhow::Result<()> {
    let rate = if a.rate == 0 {
        "unlimited".to_owned()
    } else {
        format!("{}/s", format_size(a.rate))
    };
    let set = async |p: &Pair| client.set_rate(&p.source, &p.target, a.rate).await;
    per_pair(client, batch, &a.pairs, json, false, set, |p, _| {
        format!("setflashrate: copy rate of {p} set to {rate}")
    })
    .await
}

pub(super) async fn resyncflash(
    client: &Client,
    batch: &mut Batch,
    a: ResyncflashArgs,
    json: bool,
) -> anyhow::Result<()> {
    let req = Resync {
        recording: a.record,
        persistent: a.persist,
        background_copy: None,
    };
    let resync = async |p: &Pair| client.resync(&p.source, &p.target, &req).await;
    per_pair(client, batch, &a.pairs, json, a.wait, resync, |p, f| {
        format!(
            "resyncflash: FlashCopy pair {p} resynced ({} changed tracks to copy)",
            f.out_of_sync_tracks
        )
    })
    .await
}

pub(super) async fn reverseflash(
    client: &Client,
    batch: &mut Batch,
    a: ReverseflashArgs,
    json: bool,
) -> anyhow::Result<()> {
    let req = Reverse { fast: a.fast };
    let reverse = async |p: &Pair| client.reverse(&p.source, &p.target, &req).await;
    per_pair(client, batch, &a.pairs, json, a.wait, reverse, |p, f| {
        format!(
            "reverseflash: FlashCopy pair {p} reversed: it is now {}:{} ({} tracks to restore)",
            f.source, f.target, f.out_of_sync_tracks
        )
    })
    .await
}
