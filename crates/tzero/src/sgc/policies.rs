//! Safeguarded Copy schedules (`mksgcpolicy`): kept in `DATA/sgc-policies.json` (replaced whole:
//! written, synced, renamed, directory synced), and run by one scheduler thread.
//!
//! Due times are `anchor + k × every`, computed, never accumulated, so they do not drift. A due
//! time the scheduler reaches more than [`grace`] late (the daemon was down, or a backup ran
//! long) is counted as missed, logged and skipped: a restart never runs a burst of backups. A
//! due time is recorded as handled before its backup is taken, so a crash during a backup never
//! takes it twice; the engine makes the backup itself whole or absent.
//!
//! After each pass the oldest backups of each policy's volumes beyond `keep` expire, once their
//! retention is over.

use super::types::{ChangePolicy, CreatePolicy, OnFull, Policy};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;
use tzero_engine::{BackupOptions, Engine};

const POLICY_FILE: &str = "sgc-policies.json";
/// Most backups a policy may keep per volume (the engine's limit per source).
const MAX_KEEP: u64 = tzero_engine::MAX_BACKUPS_PER_SOURCE as u64;

/// How late a due time may be handled: half the interval, at most 2 s.
fn grace(every_ms: u64) -> u64 {
    (every_ms / 2).min(2000)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Why a policy request was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("no Safeguarded Copy policy {0:?}")]
    NotFound(String),
    #[error("Safeguarded Copy policy {0:?} already exists")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
    #[error("shortening a retention needs the security token (DATA_DIR/security-token): pass it with --security-token FILE")]
    SecurityTokenRequired,
    #[error("cannot save the policies")]
    Save(#[source] anyhow::Error),
}

/// A policy as the file keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Record {
    name: String,
    volumes: Vec<String>,
    every_secs: u64,
    keep: u64,
    retain_secs: u64,
    on_full: OnFull,
    anomaly_factor: f64,
    anchor_ms: u64,
    last_due_ms: u64,
    taken: u64,
    failed: u64,
    missed: u64,
    last_error: Option<String>,
}

impl Record {
    fn every_ms(&self) -> u64 {
        self.every_secs * 1000
    }

    /// The first due time after the last one handled.
    fn next_due(&self) -> u64 {
        if self.last_due_ms < self.anchor_ms {
            return self.anchor_ms;
        }
        let k = (self.last_due_ms - self.anchor_ms) / self.every_ms() + 1;
        self.anchor_ms + k * self.every_ms()
    }

    /// The latest due time at or before `now`.
    fn latest_due(&self, now: u64) -> u64 {
        self.anchor_ms + (now - self.anchor_ms) / self.every_ms() * self.every_ms()
    }

    fn view(&self) -> Policy {
        Policy {
            name: self.name.clone(),
            volumes: self.volumes.clone(),
            every_secs: self.every_secs,
            keep: self.keep,
            retain_secs: self.retain_secs,
            on_full: self.on_full,
            anomaly_factor: self.anomaly_factor,
            anchor_ms: self.anchor_ms,
            last_due_ms: self.last_due_ms,
            next_due_ms: self.next_due(),
            taken: self.taken,
            failed: self.failed,
            missed: self.missed,
            last_error: self.last_error.clone(),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    policies: Vec<Record>,
}

/// The schedules and their scheduler.
#[derive(Debug)]
pub struct Policies {
    path: PathBuf,
    dir: PathBuf,
    engine: Engine,
    list: Mutex<Vec<Record>>,
    wake: Condvar,
    stop: AtomicBool,
}

impl Policies {
    pub fn open(data: &Path, engine: Engine) -> anyhow::Result<Arc<Policies>> {
        let path = data.join(POLICY_FILE);
        let list = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice::<File>(&bytes)
                    .with_context(|| format!("{} is corrupt", path.display()))?
                    .policies
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        Ok(Arc::new(Policies {
            path,
            dir: data.to_path_buf(),
            engine,
            list: Mutex::new(list),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        }))
    }

    /// The list; a panic elsewhere while it was held leaves it as it was, still usable.
    fn lock(&self) -> MutexGuard<'_, Vec<Record>> {
        self.list
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn save(&self, list: &[Record]) -> anyhow::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(&File {
            policies: list.to_vec(),
        })?;
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)
                .with_context(|| format!("cannot create {}", tmp.display()))?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        Ok(())
    }

    pub fn list(&self) -> Vec<Policy> {
        self.lock().iter().map(Record::view).collect()
    }

    pub fn get(&self, name: &str) -> Result<Policy, PolicyError> {
        self.lock()
            .iter()
            .find(|p| p.name == name)
            .map(Record::view)
            .ok_or_else(|| PolicyError::NotFound(name.to_string()))
    }

    fn check_volumes(&self, volumes: &[String]) -> Result<(), PolicyError> {
        if volumes.is_empty() {
            return Err(PolicyError::Invalid(
                "a policy needs at least one volume".into(),
            ));
        }
        for v in volumes {
            match self.engine.safeguarded(v) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(PolicyError::Invalid(format!(
                    "volume {v:?} has no safeguarded capacity; give it some with mksafeguardedcap"
                )))
                }
                Err(_) => return Err(PolicyError::Invalid(format!("volume {v:?} not found"))),
            }
        }
        Ok(())
    }

    pub fn create(&self, req: CreatePolicy) -> Result<Policy, PolicyError> {
        let name_ok = (1..=64).contains(&req.name.len())
            && !req.name.starts_with(['.', '-'])
            && req
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !name_ok {
            return Err(PolicyError::Invalid(format!(
                "invalid policy name {:?}: use 1-64 characters from [A-Za-z0-9._-], not starting with '.' or '-'",
                req.name
            )));
        }
        check_numbers(req.every_secs, req.keep, req.anomaly_factor)?;
        self.check_volumes(&req.volumes)?;
        let retain_secs = req
            .retain_secs
            .unwrap_or_else(|| req.every_secs.saturating_mul(req.keep));
        let mut list = self.lock();
        if list.iter().any(|p| p.name == req.name) {
            return Err(PolicyError::Exists(req.name));
        }
        let record = Record {
            name: req.name,
            volumes: req.volumes,
            every_secs: req.every_secs,
            keep: req.keep,
            retain_secs,
            on_full: req.on_full,
            anomaly_factor: req
                .anomaly_factor
                .unwrap_or(tzero_engine::safeguarded::DEFAULT_ANOMALY_FACTOR),
            // The first backup is due now.
            anchor_ms: now_ms(),
            last_due_ms: 0,
            taken: 0,
            failed: 0,
            missed: 0,
            last_error: None,
        };
        let mut next = list.clone();
        next.push(record.clone());
        self.save(&next).map_err(PolicyError::Save)?;
        *list = next;
        self.wake.notify_all();
        tracing::info!(policy = %record.name, every_secs = record.every_secs, keep = record.keep, "Safeguarded Copy policy created");
        Ok(record.view())
    }

    /// Changes a policy; shortening its retention needs `security_ok`.
    pub fn change(
        &self,
        name: &str,
        req: ChangePolicy,
        security_ok: bool,
    ) -> Result<Policy, PolicyError> {
        if let Some(v) = &req.volumes {
            self.check_volumes(v)?;
        }
        let mut list = self.lock();
        let mut next = list.clone();
        let p = next
            .iter_mut()
            .find(|p| p.name == name)
            .ok_or_else(|| PolicyError::NotFound(name.to_string()))?;
        if let Some(r) = req.retain_secs {
            if r < p.retain_secs && !security_ok {
                return Err(PolicyError::SecurityTokenRequired);
            }
            p.retain_secs = r;
        }
        check_numbers(
            req.every_secs.unwrap_or(p.every_secs),
            req.keep.unwrap_or(p.keep),
            req.anomaly_factor,
        )?;
        if let Some(v) = req.volumes {
            p.volumes = v;
        }
        if let Some(e) = req.every_secs {
            if e != p.every_secs {
                // A new rhythm starts one new interval from now.
                p.every_secs = e;
                p.anchor_ms = now_ms() + e * 1000;
                p.last_due_ms = 0;
            }
        }
        if let Some(k) = req.keep {
            p.keep = k;
        }
        if let Some(o) = req.on_full {
            p.on_full = o;
        }
        if let Some(f) = req.anomaly_factor {
            p.anomaly_factor = f;
        }
        let view = p.view();
        self.save(&next).map_err(PolicyError::Save)?;
        *list = next;
        self.wake.notify_all();
        Ok(view)
    }

    /// Removes a schedule; its backups stay until their retention ends (then `rmsgc`).
    pub fn remove(&self, name: &str) -> Result<(), PolicyError> {
        let mut list = self.lock();
        let next: Vec<Record> = list.iter().filter(|p| p.name != name).cloned().collect();
        if next.len() == list.len() {
            return Err(PolicyError::NotFound(name.to_string()));
        }
        self.save(&next).map_err(PolicyError::Save)?;
        *list = next;
        Ok(())
    }

    /// Starts the scheduler thread; [`Policies::stop`] ends it.
    pub fn start(self: &Arc<Self>) -> std::io::Result<std::thread::JoinHandle<()>> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("tzero-sgc".into())
            .spawn(move || me.run())
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        let _guard = self.lock();
        self.wake.notify_all();
    }

    fn run(&self) {
        while !self.stop.load(Ordering::Acquire) {
            let wake_at = self.pass();
            let list = self.lock();
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            let wait = wake_at.saturating_sub(now_ms()).clamp(1, 1000);
            let _ = self.wake.wait_timeout(list, Duration::from_millis(wait));
        }
    }

    /// Takes what is due, expires what is over; returns when to look again.
    fn pass(&self) -> u64 {
        let now = now_ms();
        let mut due = Vec::new();
        let mut wake_at = now + 1000;
        {
            let mut list = self.lock();
            let mut changed = false;
            for p in list.iter_mut() {
                let next = p.next_due();
                if next <= now {
                    let latest = p.latest_due(now);
                    let skipped = (latest - next) / p.every_ms();
                    let late = now - latest;
                    let mut missed = skipped;
                    if late > grace(p.every_ms()) {
                        missed += 1;
                    } else {
                        due.push((
                            p.name.clone(),
                            p.volumes.clone(),
                            p.retain_secs,
                            p.on_full,
                            p.anomaly_factor,
                        ));
                    }
                    if missed > 0 {
                        tracing::warn!(policy = %p.name, missed, "Safeguarded Copy backups missed (the daemon was down or busy at their time); skipped, not run late");
                        p.missed += missed;
                    }
                    p.last_due_ms = latest;
                    changed = true;
                }
                wake_at = wake_at.min(p.next_due());
            }
            if changed {
                if let Err(e) = self.save(&list) {
                    tracing::error!(error = %e, "cannot save the Safeguarded Copy policies");
                }
            }
        }
        for (name, volumes, retain_secs, on_full, anomaly_factor) in due {
            let opts = BackupOptions {
                policy: Some(name.clone()),
                retain_ms: retain_secs.saturating_mul(1000),
                on_full: on_full.into(),
                anomaly_factor,
            };
            let result = self.engine.take_backups(&volumes, &opts);
            let mut list = self.lock();
            if let Some(p) = list.iter_mut().find(|p| p.name == name) {
                match &result {
                    Ok(_) => {
                        p.taken += 1;
                        p.last_error = None;
                    }
                    Err(e) => {
                        tracing::error!(policy = %name, error = %e, "scheduled Safeguarded Copy backup failed");
                        p.failed += 1;
                        p.last_error = Some(e.to_string());
                    }
                }
            }
            if let Err(e) = self.save(&list) {
                tracing::error!(error = %e, "cannot save the Safeguarded Copy policies");
            }
        }
        self.expire();
        wake_at
    }

    /// Per policy and volume: the oldest of its backups beyond `keep`, once retention is over.
    fn expire(&self) {
        let policies: Vec<(String, u64)> = self
            .lock()
            .iter()
            .map(|p| (p.name.clone(), p.keep))
            .collect();
        if policies.is_empty() {
            return;
        }
        let now = now_ms();
        let backups = self.engine.backups();
        for (name, keep) in policies {
            let mut by_source: std::collections::BTreeMap<&str, Vec<_>> = Default::default();
            for b in backups
                .iter()
                .filter(|b| b.policy.as_deref() == Some(&name))
            {
                by_source.entry(&b.source).or_default().push(b);
            }
            for list in by_source.values() {
                let excess = list
                    .len()
                    .saturating_sub(usize::try_from(keep).unwrap_or(usize::MAX));
                for b in &list[..excess] {
                    if b.retain_until_ms > now {
                        continue;
                    }
                    match self.engine.expire_backup(b.id) {
                        Ok(()) => {
                            tracing::info!(policy = %name, backup = b.id, "expired beyond keep")
                        }
                        Err(e) => {
                            tracing::warn!(policy = %name, backup = b.id, error = %e, "cannot expire backup")
                        }
                    }
                }
            }
        }
    }
}

fn check_numbers(every: u64, keep: u64, factor: Option<f64>) -> Result<(), PolicyError> {
    if every == 0 || every > 366 * 86_400 {
        return Err(PolicyError::Invalid(
            "--every must be from 1 s to 366 days".into(),
        ));
    }
    if keep == 0 || keep > MAX_KEEP {
        return Err(PolicyError::Invalid(format!(
            "--keep must be from 1 to {MAX_KEEP}"
        )));
    }
    if factor.is_some_and(|f| !f.is_finite() || f <= 0.0 || f > 1e6) {
        return Err(PolicyError::Invalid(
            "--anomaly-factor must be a positive number".into(),
        ));
    }
    Ok(())
}
