//! Extent pool verbs: `mkextpool`, `lsextpool`, `rmextpool`. A pool is the
//! space that standard and space-efficient volumes are allocated from.

use std::io::Write;

use clap::Args;

use super::common::{outln, size, Batch};
use crate::api_types::CreatePool;
use crate::client::Client;
use crate::output::{pool_table, print_json};
use crate::units::format_size;

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

pub(super) async fn mkextpool(
    client: &Client,
    batch: &mut Batch,
    a: MkextpoolArgs,
    json: bool,
) -> anyhow::Result<()> {
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
    Ok(())
}

pub(super) async fn lsextpool(
    client: &Client,
    batch: &mut Batch,
    a: LsextpoolArgs,
    json: bool,
) -> anyhow::Result<()> {
    let pools = if a.names.is_empty() {
        client.pools().await?
    } else {
        let get = async |name: &String| client.pool(name).await;
        batch.each(&a.names, json, get, |_, _| None).await?
    };
    if json {
        print_json(&pools)?;
    } else {
        write!(std::io::stdout().lock(), "{}", pool_table(&pools))?;
    }
    Ok(())
}

pub(super) async fn rmextpool(
    client: &Client,
    batch: &mut Batch,
    a: RmextpoolArgs,
    json: bool,
) -> anyhow::Result<()> {
    let delete = async |name: &String| {
        let r = client.delete_pool(name).await;
        r.map(|()| serde_json::json!({ "name": name }))
    };
    let gone = batch
        .each(&a.names, json, delete, |name, _| {
            Some(format!("rmextpool: extent pool {name} deleted"))
        })
        .await?;
    if json {
        print_json(&gone)?;
    }
    Ok(())
}
