//! Revertible resync verbs: `setflashrevertible` makes a recording
//! relationship's next `resyncflash` undoable; `commitflash` makes that
//! resync permanent and `revertflash` rolls the target back before it.
//! By `--seqnum` the daemon settles all matching relationships in one call,
//! all or none; by pairs, one call per pair.

use std::io::Write;

use clap::Args;

use super::common::{outln, pair, Batch, Pair};
use super::flash::per_pair;
use crate::api_types::Flash;
use crate::client::Client;
use crate::output::{format_date, print_json};

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

pub(super) async fn setflashrevertible(
    client: &Client,
    batch: &mut Batch,
    a: PairsArgs,
    json: bool,
) -> anyhow::Result<()> {
    let revertible = async |p: &Pair| {
        client
            .flash_action(&p.source, &p.target, "revertible")
            .await
    };
    let say = |p: &Pair, _: &Flash| {
        format!("setflashrevertible: {p} is revertible: its next resyncflash can be committed (commitflash) or reverted (revertflash)")
    };
    per_pair(client, batch, &a.pairs, json, false, revertible, say).await
}

pub(super) async fn commitflash(
    client: &Client,
    batch: &mut Batch,
    a: SettleArgs,
    json: bool,
) -> anyhow::Result<()> {
    settle(client, batch, &a, "commit", json, |f| {
        format!(
            "commitflash: the point in time of {}:{} is committed",
            f.source, f.target
        )
    })
    .await
}

pub(super) async fn revertflash(
    client: &Client,
    batch: &mut Batch,
    a: SettleArgs,
    json: bool,
) -> anyhow::Result<()> {
    settle(client, batch, &a, "revert", json, |f| {
        format!(
            "revertflash: {} is back at its previous point in time ({})",
            f.target,
            format_date(f.synced_ms)
        )
    })
    .await
}

/// `commitflash` / `revertflash`: by sequence number (one call, all or
/// nothing) or pair by pair; then `say` for each relationship settled.
async fn settle(
    client: &Client,
    batch: &mut Batch,
    a: &SettleArgs,
    action: &str,
    json: bool,
    say: impl Fn(&Flash) -> String,
) -> anyhow::Result<()> {
    let done = match a.seqnum {
        Some(n) => batch
            .record(client.settle_seqnum(action, n).await)
            .unwrap_or_default(),
        None => {
            let settle = async |p: &Pair| client.flash_action(&p.source, &p.target, action).await;
            batch.each(&a.pairs, json, settle, |_, _| None).await?
        }
    };
    if json {
        print_json(&done)?;
    } else {
        for f in &done {
            outln!("{}", say(f));
        }
    }
    Ok(())
}
