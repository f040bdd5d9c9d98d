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
    Ok(())
}
