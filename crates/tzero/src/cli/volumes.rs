//! Volume verbs: `mkfbvol`, `lsfbvol`, `rmfbvol`. Each name is its own
//! request, so one bad name fails the command (exit 1) but not the others.

use std::io::Write;

use clap::Args;

use super::common::{size, Batch};
use crate::api_types::{CreateVolume, Volume};
use crate::client::Client;
use crate::output::{print_json, volume_table};
use crate::units::format_size;

/// DSCLI's storage allocation methods (`-sam`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sam {
    /// Fully allocated: the whole capacity is taken from the pool at creation.
    Standard,
    /// Extent space-efficient (thin): pool space only for tracks written or copied.
    Ese,
}

#[derive(Debug, Args)]
pub struct MkfbvolArgs {
    /// Capacity of each volume, e.g. 10GiB (binary units: K, M, G, T, P).
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
    /// Withdraw the volumes' FlashCopy relationships first, and disconnect the
    /// hosts that have them open over NBD.
    #[arg(long)]
    pub force: bool,
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

pub(super) async fn mkfbvol(
    client: &Client,
    batch: &mut Batch,
    a: MkfbvolArgs,
    json: bool,
) -> anyhow::Result<()> {
    let create = async |name: &String| {
        let req = CreateVolume {
            name: name.clone(),
            capacity_bytes: a.cap,
            track_size: a.track_size,
            pool: a.extpool.clone(),
            space_efficient: a.sam == Some(Sam::Ese),
        };
        client.create_volume(&req).await
    };
    let made = batch
        .each(&a.names, json, create, |_, v: &Volume| {
            let place = match &v.pool {
                Some(p) => format!(", {} in extent pool {p}", v.provisioning.sam()),
                None => String::new(),
            };
            Some(format!(
                "mkfbvol: volume {} created ({}, track size {}{place})",
                v.name,
                format_size(v.capacity_bytes),
                format_size(v.track_size)
            ))
        })
        .await?;
    if json {
        print_json(&made)?;
    }
    Ok(())
}

pub(super) async fn lsfbvol(
    client: &Client,
    batch: &mut Batch,
    a: LsfbvolArgs,
    json: bool,
) -> anyhow::Result<()> {
    let vols = if a.names.is_empty() {
        client.volumes().await?
    } else {
        let get = async |name: &String| client.volume(name).await;
        batch.each(&a.names, json, get, |_, _| None).await?
    };
    if json {
        print_json(&vols)?;
    } else {
        write!(std::io::stdout().lock(), "{}", volume_table(&vols, a.long))?;
    }
    Ok(())
}

pub(super) async fn rmfbvol(
    client: &Client,
    batch: &mut Batch,
    a: RmfbvolArgs,
    json: bool,
) -> anyhow::Result<()> {
    let delete = async |name: &String| {
        let r = client.delete_volume(name, a.force).await;
        r.map(|()| serde_json::json!({ "name": name }))
    };
    let gone = batch
        .each(&a.names, json, delete, |name, _| {
            Some(format!("rmfbvol: volume {name} deleted"))
        })
        .await?;
    if json {
        print_json(&gone)?;
    }
    Ok(())
}
