//! Consistency group verbs: `freezeflash` and `unfreezeflash` hold and
//! release write I/O to FlashCopy sources (writes are queued, never failed;
//! reads go on), so that an application's volumes can be copied at one
//! point in time. Each is one request for all its volumes.

use std::io::Write;

use clap::Args;

use super::common::{outln, Batch};
use crate::api_types::{Freeze, Unfreeze, DEFAULT_FREEZE_TIMEOUT_SECS};
use crate::client::Client;
use crate::output::print_json;

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
pub struct UnfreezeflashArgs {
    /// Source volumes whose writes are held.
    #[arg(required = true, value_name = "SRC")]
    pub volumes: Vec<String>,
}

pub(super) async fn freezeflash(
    client: &Client,
    batch: &mut Batch,
    a: FreezeflashArgs,
    json: bool,
) -> anyhow::Result<()> {
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
    Ok(())
}

pub(super) async fn unfreezeflash(
    client: &Client,
    batch: &mut Batch,
    a: UnfreezeflashArgs,
    json: bool,
) -> anyhow::Result<()> {
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
    Ok(())
}
