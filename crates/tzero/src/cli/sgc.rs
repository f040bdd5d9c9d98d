//! Safeguarded Copy verbs, in DSCLI's style: `mksafeguardedcap`, `mksgc`,
//! `lssgc`, `rmsgc`, `chsgc`, `recoversgc`, `diffsgc`, and `mksgcpolicy`,
//! `lssgcpolicy`, `chsgcpolicy`, `rmsgcpolicy`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};

use super::common::{outln, size, Batch};
use crate::client::Client;
use crate::output::{format_date, print_json, Table};
use crate::sgc::types::{
    Backup, ChangePolicy, CreatePolicy, OnFull, Policy, Recover, SetRetention, SetSafeguarded,
    TakeBackups,
};
use crate::units::format_size;

/// A duration: a whole number with a unit, `s`, `m`, `h`, `d` or `w` (`30s`, `10m`, `7d`);
/// a bare number is seconds.
pub(crate) fn duration_secs(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 30s, 10m, 2h, 7d"))?;
    let mult = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        other => {
            return Err(format!(
                "invalid duration unit {other:?} in {s:?}: use s, m, h, d or w"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("duration {s:?} is too long"))
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OnFullArg {
    /// The backup fails visibly.
    Fail,
    /// Drop the oldest backups whose retention is over.
    ExpireOldest,
}

impl From<OnFullArg> for OnFull {
    fn from(o: OnFullArg) -> Self {
        match o {
            OnFullArg::Fail => OnFull::Fail,
            OnFullArg::ExpireOldest => OnFull::ExpireOldest,
        }
    }
}

#[derive(Debug, Args)]
pub struct MksafeguardedcapArgs {
    /// Safeguarded capacity per volume, e.g. 10GiB (0 removes it, only without backups).
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub cap: u64,
    /// Extent pool the capacity is taken from.
    #[arg(long, value_name = "POOL")]
    pub extpool: String,
    #[arg(required = true, value_name = "VOL")]
    pub volumes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct MksgcArgs {
    /// Nothing may remove the backups for this long (e.g. 7d); default 0.
    #[arg(long, value_name = "DURATION", value_parser = duration_secs, default_value = "0")]
    pub retain: u64,
    /// What to do when the safeguarded capacity is full.
    #[arg(long, value_enum, default_value = "fail")]
    pub on_full: OnFullArg,
    /// Volumes: one backup each, all at one point in time.
    #[arg(required = true, value_name = "VOL")]
    pub volumes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LssgcArgs {
    /// More columns: stored tracks, change since the previous backup, anomaly, recoveries.
    #[arg(short = 'l', long)]
    pub long: bool,
    /// Only the backups of this volume or policy.
    #[arg(value_name = "VOL|POLICY")]
    pub filter: Option<String>,
}

#[derive(Debug, Args)]
pub struct RmsgcArgs {
    #[arg(required = true, value_name = "ID")]
    pub ids: Vec<u64>,
}

#[derive(Debug, Args)]
pub struct ChsgcArgs {
    /// The new retention, from now (e.g. 30d).
    #[arg(long, value_name = "DURATION", value_parser = duration_secs)]
    pub retain: u64,
    /// File holding the security token (DATA_DIR/security-token): needed to shorten.
    #[arg(long, value_name = "FILE")]
    pub security_token: Option<PathBuf>,
    #[arg(required = true, value_name = "ID")]
    pub ids: Vec<u64>,
}

#[derive(Debug, Args)]
pub struct RecoversgcArgs {
    /// The backup to recover.
    #[arg(long, value_name = "ID")]
    pub backup: u64,
    /// Create this new volume: a FlashCopy of the backup's point in time.
    #[arg(
        long,
        value_name = "NEWVOL",
        conflicts_with = "restore",
        required_unless_present = "restore"
    )]
    pub to: Option<String>,
    /// Roll this volume (the backup's source) back to the backup's point in time.
    #[arg(long, value_name = "VOL")]
    pub restore: Option<String>,
    /// With --to: copy in the background (COPY) instead of NOCOPY.
    #[arg(long)]
    pub copy: bool,
    /// With --restore: yes, overwrite the volume.
    #[arg(long)]
    pub confirm: bool,
}

#[derive(Debug, Args)]
pub struct DiffsgcArgs {
    /// One recovery point.
    #[arg(value_name = "A")]
    pub a: u64,
    /// The other; without it, the source as it is now.
    #[arg(value_name = "B")]
    pub b: Option<u64>,
}

#[derive(Debug, Args)]
pub struct MksgcpolicyArgs {
    /// Interval between backups (e.g. 10m).
    #[arg(long, value_name = "DURATION", value_parser = duration_secs)]
    pub every: u64,
    /// Backups kept per volume; older ones expire once their retention is over.
    #[arg(long, value_name = "N")]
    pub keep: u64,
    /// Retention of each backup [default: every × keep].
    #[arg(long, value_name = "DURATION", value_parser = duration_secs)]
    pub retain: Option<u64>,
    #[arg(long, value_enum, default_value = "fail")]
    pub on_full: OnFullArg,
    /// Flag a backup whose change exceeds K × the median of the last 24 [default: 5].
    #[arg(long, value_name = "K")]
    pub anomaly_factor: Option<f64>,
    #[arg(value_name = "NAME")]
    pub name: String,
    #[arg(required = true, value_name = "VOL")]
    pub volumes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LssgcpolicyArgs {
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ChsgcpolicyArgs {
    #[arg(long, value_name = "DURATION", value_parser = duration_secs)]
    pub every: Option<u64>,
    #[arg(long, value_name = "N")]
    pub keep: Option<u64>,
    #[arg(long, value_name = "DURATION", value_parser = duration_secs)]
    pub retain: Option<u64>,
    #[arg(long, value_enum)]
    pub on_full: Option<OnFullArg>,
    #[arg(long, value_name = "K")]
    pub anomaly_factor: Option<f64>,
    /// Replace the policy's volumes (comma-separated).
    #[arg(long, value_name = "VOL,...", value_delimiter = ',')]
    pub volumes: Option<Vec<String>>,
    /// File holding the security token: needed to shorten the retention.
    #[arg(long, value_name = "FILE")]
    pub security_token: Option<PathBuf>,
    #[arg(value_name = "NAME")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct RmsgcpolicyArgs {
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

fn read_token(path: &Option<PathBuf>) -> anyhow::Result<Option<String>> {
    path.as_ref()
        .map(|p| {
            std::fs::read_to_string(p)
                .map(|t| t.trim().to_owned())
                .with_context(|| format!("cannot read the security token from {}", p.display()))
        })
        .transpose()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(super) async fn mksafeguardedcap(
    client: &Client,
    batch: &mut Batch,
    a: MksafeguardedcapArgs,
    json: bool,
) -> anyhow::Result<()> {
    let req = SetSafeguarded {
        capacity_bytes: a.cap,
        pool: a.extpool.clone(),
    };
    let set = async |vol: &String| client.set_safeguarded(vol, &req).await;
    let done = batch
        .each(&a.volumes, json, set, |vol, c| {
            Some(format!(
                "mksafeguardedcap: volume {vol} has {} of safeguarded capacity in {}",
                format_size(c.capacity_bytes),
                a.extpool
            ))
        })
        .await?;
    if json {
        print_json(&done)?;
    }
    Ok(())
}

pub(super) async fn mksgc(
    client: &Client,
    batch: &mut Batch,
    a: MksgcArgs,
    json: bool,
) -> anyhow::Result<()> {
    let req = TakeBackups {
        volumes: a.volumes,
        retain_secs: a.retain,
        on_full: a.on_full.into(),
    };
    if let Some(list) = batch.record(client.take_backups(&req).await) {
        if json {
            print_json(&list)?;
        } else {
            for b in &list {
                outln!(
                    "mksgc: backup {} of {} taken (group {}, retained until {}){}",
                    b.id,
                    b.source,
                    b.group,
                    format_date(b.retain_until_ms),
                    if b.anomaly {
                        "; ANOMALY: far more change than usual"
                    } else {
                        ""
                    }
                );
            }
        }
    }
    Ok(())
}

pub(super) async fn lssgc(client: &Client, a: LssgcArgs, json: bool) -> anyhow::Result<()> {
    let mut list = client.backups().await?;
    if let Some(f) = &a.filter {
        list.retain(|b| b.source == *f || b.policy.as_deref() == Some(f));
    }
    if json {
        return Ok(print_json(&list)?);
    }
    write!(std::io::stdout().lock(), "{}", backup_table(&list, a.long))?;
    Ok(())
}

fn backup_table(list: &[Backup], long: bool) -> Table {
    let mut headers = vec![
        "ID", "Source", "Policy", "T0", "Group", "Size", "Expires", "State",
    ];
    if long {
        headers.extend([
            "StoredTracks",
            "ChangedTracks",
            "Changed",
            "Anomaly",
            "RecoveredTo",
        ]);
    }
    let mut t = Table::new(headers);
    for b in list {
        let mut row = vec![
            b.id.to_string(),
            b.source.clone(),
            b.policy.clone().unwrap_or_else(|| "-".into()),
            format_date(b.taken_ms),
            b.group.to_string(),
            format_size(b.size_bytes),
            format_date(b.retain_until_ms),
            match (&b.failure, b.state) {
                (Some(f), _) => format!("failed: {f}"),
                (None, crate::sgc::types::BackupState::Failed) => "failed".into(),
                (None, _) => "valid".into(),
            },
        ];
        if long {
            row.push(b.stored_tracks.to_string());
            row.push(
                b.changed_tracks
                    .map_or_else(|| "-".into(), |c| c.to_string()),
            );
            row.push(b.changed_bytes.map_or_else(|| "-".into(), format_size));
            row.push(if b.anomaly {
                "ANOMALY".into()
            } else {
                "-".into()
            });
            row.push(if b.recovered_to.is_empty() {
                "-".into()
            } else {
                b.recovered_to.join(",")
            });
        }
        t.row(row);
    }
    t
}

pub(super) async fn rmsgc(
    client: &Client,
    batch: &mut Batch,
    a: RmsgcArgs,
    json: bool,
) -> anyhow::Result<()> {
    let rm = async |id: &u64| {
        client
            .delete_backup(*id)
            .await
            .map(|()| serde_json::json!({ "id": id }))
    };
    let gone = batch
        .each(&a.ids, json, rm, |id, _| {
            Some(format!("rmsgc: backup {id} removed"))
        })
        .await?;
    if json {
        print_json(&gone)?;
    }
    Ok(())
}

pub(super) async fn chsgc(
    client: &Client,
    batch: &mut Batch,
    a: ChsgcArgs,
    json: bool,
) -> anyhow::Result<()> {
    let req = SetRetention {
        retain_until_ms: now_ms().saturating_add(a.retain.saturating_mul(1000)),
        security_token: read_token(&a.security_token)?,
    };
    let set = async |id: &u64| client.set_retention(*id, &req).await;
    let done = batch
        .each(&a.ids, json, set, |id, b| {
            Some(format!(
                "chsgc: backup {id} is retained until {}",
                format_date(b.retain_until_ms)
            ))
        })
        .await?;
    if json {
        print_json(&done)?;
    }
    Ok(())
}

pub(super) async fn recoversgc(
    client: &Client,
    batch: &mut Batch,
    a: RecoversgcArgs,
    json: bool,
) -> anyhow::Result<()> {
    let req = Recover {
        to: a.to,
        restore: a.restore,
        copy: a.copy,
        confirm: a.confirm,
    };
    if let Some(r) = batch.record(client.recover_backup(a.backup, &req).await) {
        if json {
            print_json(&[&r])?;
        } else if let Some(v) = &r.volume {
            outln!(
                "recoversgc: volume {v} holds backup {}'s point in time ({} {:.2} ms)",
                r.backup,
                if a.copy { "COPY," } else { "NOCOPY," },
                r.elapsed_ms
            );
        } else {
            outln!(
                "recoversgc: restored {} ({} tracks) from backup {} in {:.1} ms",
                format_size(r.restored_bytes.unwrap_or(0)),
                r.restored_tracks.unwrap_or(0),
                r.backup,
                r.elapsed_ms
            );
        }
    }
    Ok(())
}

pub(super) async fn diffsgc(client: &Client, a: DiffsgcArgs) -> anyhow::Result<()> {
    // JSON is the output: a list of {offset, length}.
    Ok(print_json(&client.diff_backups(a.a, a.b).await?)?)
}

pub(super) async fn mksgcpolicy(
    client: &Client,
    batch: &mut Batch,
    a: MksgcpolicyArgs,
    json: bool,
) -> anyhow::Result<()> {
    let req = CreatePolicy {
        name: a.name,
        volumes: a.volumes,
        every_secs: a.every,
        keep: a.keep,
        retain_secs: a.retain,
        on_full: a.on_full.into(),
        anomaly_factor: a.anomaly_factor,
    };
    if let Some(p) = batch.record(client.create_policy(&req).await) {
        if json {
            print_json(&[&p])?;
        } else {
            outln!(
                "mksgcpolicy: policy {} backs up {} every {} s, keeps {}, retains {} s",
                p.name,
                p.volumes.join(","),
                p.every_secs,
                p.keep,
                p.retain_secs
            );
        }
    }
    Ok(())
}

pub(super) async fn lssgcpolicy(
    client: &Client,
    a: LssgcpolicyArgs,
    json: bool,
) -> anyhow::Result<()> {
    let mut list = client.policies().await?;
    if !a.names.is_empty() {
        list.retain(|p| a.names.contains(&p.name));
    }
    if json {
        return Ok(print_json(&list)?);
    }
    write!(std::io::stdout().lock(), "{}", policy_table(&list))?;
    Ok(())
}

fn policy_table(list: &[Policy]) -> Table {
    let mut t = Table::new(vec![
        "Name",
        "Volumes",
        "Every",
        "Keep",
        "Retain",
        "OnFull",
        "Next",
        "Taken",
        "Failed",
        "Missed",
        "LastError",
    ]);
    for p in list {
        t.row(vec![
            p.name.clone(),
            p.volumes.join(","),
            format!("{}s", p.every_secs),
            p.keep.to_string(),
            format!("{}s", p.retain_secs),
            match p.on_full {
                OnFull::Fail => "fail".into(),
                OnFull::ExpireOldest => "expire-oldest".into(),
            },
            format_date(p.next_due_ms),
            p.taken.to_string(),
            p.failed.to_string(),
            p.missed.to_string(),
            p.last_error.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    t
}

pub(super) async fn chsgcpolicy(
    client: &Client,
    batch: &mut Batch,
    a: ChsgcpolicyArgs,
    json: bool,
) -> anyhow::Result<()> {
    let req = ChangePolicy {
        volumes: a.volumes,
        every_secs: a.every,
        keep: a.keep,
        retain_secs: a.retain,
        on_full: a.on_full.map(Into::into),
        anomaly_factor: a.anomaly_factor,
        security_token: read_token(&a.security_token)?,
    };
    if let Some(p) = batch.record(client.change_policy(&a.name, &req).await) {
        if json {
            print_json(&[&p])?;
        } else {
            outln!("chsgcpolicy: policy {} changed", p.name);
        }
    }
    Ok(())
}

pub(super) async fn rmsgcpolicy(
    client: &Client,
    batch: &mut Batch,
    a: RmsgcpolicyArgs,
    json: bool,
) -> anyhow::Result<()> {
    let rm = async |name: &String| {
        client
            .delete_policy(name)
            .await
            .map(|()| serde_json::json!({ "name": name }))
    };
    let gone = batch
        .each(&a.names, json, rm, |name, _| {
            Some(format!(
                "rmsgcpolicy: policy {name} removed (its backups stay until their retention ends)"
            ))
        })
        .await?;
    if json {
        print_json(&gone)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::duration_secs;

    #[test]
    fn durations() {
        assert_eq!(duration_secs("30"), Ok(30));
        assert_eq!(duration_secs("10m"), Ok(600));
        assert_eq!(duration_secs("7d"), Ok(604_800));
        assert!(duration_secs("10x").is_err());
        assert!(duration_secs("m").is_err());
        assert!(duration_secs("99999999999999999999w").is_err());
    }
}
