//! One scrape: the readings `Metrics::render` takes from the engine, the NBD server and the
//! volumes' I/O counters, encoded as metric families by a prometheus-client `Collector`. Every
//! family is written from what is listed now, so a deleted volume or relationship is simply
//! absent.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use tzero_engine::stats::{Histogram, HistogramSnapshot};
use tzero_engine::{BackupInfo, EngineStats, FlashInfo, FlashState, VolumeInfo};

use super::{Op, VolumeIo};

/// One scrape's worth of readings; encodes them as metric families.
#[derive(Debug)]
pub(super) struct Scrape {
    pub stats: EngineStats,
    pub volumes: Vec<VolumeInfo>,
    pub rels: Vec<FlashInfo>,
    /// Safeguarded Copy backups, by source then point in time.
    pub backups: Vec<BackupInfo>,
    pub io: HashMap<String, Arc<VolumeIo>>,
    /// `(accepted, open)`; absent when no NBD server runs (router tests).
    pub nbd: Option<(u64, u64)>,
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

/// Writes one family: `samples` as counters or gauges.
fn family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: &[(Labels<'_>, u64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in samples {
        let mut s = m.encode_family(labels)?;
        match kind {
            MetricType::Counter => s.encode_counter::<NoLabelSet, u64, u64>(v, None)?,
            _ => s.encode_gauge(v)?,
        }
    }
    Ok(())
}

fn histograms(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Labels<'_>, HistogramSnapshot)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in samples {
        m.encode_family(labels)?.encode_histogram::<NoLabelSet>(
            h.sum_seconds,
            h.count,
            &h.buckets(),
            None,
        )?;
    }
    Ok(())
}

const STATES: [(FlashState, &str); 4] = [
    (FlashState::Copying, "copying"),
    (FlashState::NoCopy, "no_copy"),
    (FlashState::Copied, "copied"),
    (FlashState::Failed, "failed"),
];

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.volumes(&mut enc)?;
        self.relationships(&mut enc)?;
        self.safeguarded(&mut enc)?;
        self.daemon(&mut enc)
    }
}

impl Scrape {
    /// Per source with safeguarded capacity: its backups, their space, and whether the newest
    /// backup was flagged as an anomaly (the first sign of mass encryption).
    fn safeguarded(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use MetricType::{Counter, Gauge};
        let sources: Vec<&VolumeInfo> = self
            .volumes
            .iter()
            .filter(|v| v.safeguarded.is_some())
            .collect();
        let backups = &self.backups;
        let of = move |name: &str| -> Vec<&BackupInfo> {
            backups.iter().filter(|b| b.source == name).collect()
        };
        let per = |f: &dyn Fn(&VolumeInfo) -> u64| -> Vec<(Labels<'_>, u64)> {
            sources
                .iter()
                .map(|v| (vec![("volume", v.name.as_str())], f(v)))
                .collect()
        };
        let sg = |v: &VolumeInfo| v.safeguarded.clone().expect("filtered");
        family(
            e,
            "tzero_sgc_capacity_bytes",
            "Safeguarded capacity of the source",
            Gauge,
            &per(&|v| sg(v).capacity_bytes),
        )?;
        family(
            e,
            "tzero_sgc_used_bytes",
            "Space its Safeguarded Copy backups take",
            Gauge,
            &per(&|v| sg(v).used_bytes),
        )?;
        family(
            e,
            "tzero_sgc_backups",
            "Safeguarded Copy backups of the source",
            Gauge,
            &per(&|v| of(&v.name).len() as u64),
        )?;
        family(e, "tzero_sgc_anomaly", "1 when the newest backup's change is more than the anomaly factor times the median of the last 24", Gauge, &per(&|v| u64::from(of(&v.name).last().is_some_and(|b| b.anomaly))))?;
        family(
            e,
            "tzero_sgc_anomalies",
            "Backups of the source flagged as anomalies (still kept)",
            Counter,
            &per(&|v| of(&v.name).iter().filter(|b| b.anomaly).count() as u64),
        )?;
        family(
            e,
            "tzero_sgc_newest_backup_timestamp_seconds",
            "T0 of the newest backup",
            Gauge,
            &per(&|v| of(&v.name).last().map_or(0, |b| b.taken_ms / 1000)),
        )?;
        Ok(())
    }

    fn volumes(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use MetricType::{Counter, Gauge};
        fn vol(v: &str) -> Labels<'_> {
            vec![("volume", v)]
        }
        let io: Vec<(&VolumeInfo, Option<&Arc<VolumeIo>>)> = self
            .volumes
            .iter()
            .map(|v| (v, self.io.get(&v.name)))
            .collect();
        let io_value = |op: Op, f: fn(&VolumeIo, Op) -> u64| -> Vec<(Labels<'_>, u64)> {
            io.iter()
                .map(|(v, io)| (vol(&v.name), io.map_or(0, |io| f(io, op))))
                .collect()
        };
        family(
            e,
            "tzero_volume_read_ops",
            "Host read requests",
            Counter,
            &io_value(Op::Read, VolumeIo::ops),
        )?;
        family(
            e,
            "tzero_volume_write_ops",
            "Host write requests",
            Counter,
            &io_value(Op::Write, VolumeIo::ops),
        )?;
        family(
            e,
            "tzero_volume_flush_ops",
            "Host flush requests",
            Counter,
            &io_value(Op::Flush, VolumeIo::ops),
        )?;
        family(
            e,
            "tzero_volume_read_bytes",
            "Bytes read by hosts (successful requests)",
            Counter,
            &io_value(Op::Read, VolumeIo::bytes),
        )?;
        family(
            e,
            "tzero_volume_write_bytes",
            "Bytes written by hosts (successful requests)",
            Counter,
            &io_value(Op::Write, VolumeIo::bytes),
        )?;
        let mut errors = Vec::new();
        let mut latency = Vec::new();
        for (v, io) in &io {
            for op in Op::ALL {
                let labels = vec![("volume", v.name.as_str()), ("op", op.as_str())];
                let (n, h) = match io {
                    Some(io) => (
                        io.errors[op as usize].load(Ordering::Relaxed),
                        io.latency[op as usize].snapshot(),
                    ),
                    None => (0, Histogram::new().snapshot()),
                };
                errors.push((labels.clone(), n));
                latency.push((labels, h));
            }
        }
        family(
            e,
            "tzero_volume_io_errors",
            "Host requests that failed, by kind",
            Counter,
            &errors,
        )?;
        histograms(
            e,
            "tzero_volume_io_latency_seconds",
            "Time to serve a host request, by kind (read, write, flush, trim, write_zeroes)",
            &latency,
        )?;
        let cached: Vec<(Labels<'_>, u64)> = self
            .stats
            .volume_cache_bytes
            .iter()
            .map(|(name, b)| (vol(name), *b))
            .collect();
        family(
            e,
            "tzero_volume_cache_bytes",
            "Bytes of host writes the volume holds in the write cache, waiting for copy-on-write",
            Gauge,
            &cached,
        )?;
        let flag = |f: fn(&VolumeInfo) -> bool| -> Vec<(Labels<'_>, u64)> {
            self.volumes
                .iter()
                .map(|v| (vol(&v.name), u64::from(f(v))))
                .collect()
        };
        family(
            e,
            "tzero_volume_frozen",
            "1 while a freeze holds the volume's writes",
            Gauge,
            &flag(|v| v.frozen),
        )?;
        family(
            e,
            "tzero_volume_write_inhibited",
            "1 while hosts may not write the volume (target write inhibit)",
            Gauge,
            &flag(|v| v.write_inhibited),
        )?;
        family(
            e,
            "tzero_volume_capacity_bytes",
            "Volume capacity",
            Gauge,
            &self
                .volumes
                .iter()
                .map(|v| (vol(&v.name), v.capacity_bytes))
                .collect::<Vec<_>>(),
        )?;
        Ok(())
    }

    fn relationships(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use MetricType::{Counter, Gauge};
        let seqnums: Vec<String> = self.rels.iter().map(|r| r.seqnum.to_string()).collect();
        let pair = |i: usize| -> Labels<'_> {
            let r = &self.rels[i];
            vec![
                ("source", r.source.as_str()),
                ("target", r.target.as_str()),
                ("seqnum", seqnums[i].as_str()),
            ]
        };
        let per_rel = |f: fn(&FlashInfo) -> u64| -> Vec<(Labels<'_>, u64)> {
            (0..self.rels.len())
                .map(|i| (pair(i), f(&self.rels[i])))
                .collect()
        };
        family(
            e,
            "tzero_flash_out_of_sync_tracks",
            "Tracks the target does not hold yet (read through to the source)",
            Gauge,
            &per_rel(|r| r.out_of_sync_tracks),
        )?;
        family(
            e,
            "tzero_flash_tracks",
            "Tracks of the relationship",
            Gauge,
            &per_rel(|r| r.total_tracks),
        )?;
        family(
            e,
            "tzero_flash_track_size_bytes",
            "Track size: the unit of copy",
            Gauge,
            &per_rel(|r| r.track_size),
        )?;
        family(e, "tzero_flash_copied_bytes", "Bytes the background copy wrote to the target (since the daemon started or the relationship was established)", Counter, &per_rel(|r| r.copied_bytes))?;
        family(
            e,
            "tzero_flash_copy_rate_bytes_per_second",
            "Background copy rate setting; 0 is unlimited",
            Gauge,
            &per_rel(|r| r.copy_rate),
        )?;
        family(e, "tzero_flash_cow_tracks", "Tracks copied to the target by copy-on-write, before a host write replaced their T0 data", Counter, &per_rel(|r| r.cow_tracks))?;
        family(
            e,
            "tzero_flash_cow_bytes",
            "Bytes copied to the target by copy-on-write",
            Counter,
            &per_rel(|r| r.cow_bytes),
        )?;
        let mut states = Vec::new();
        for i in 0..self.rels.len() {
            for (state, name) in STATES {
                let mut labels = pair(i);
                labels.push(("state", name));
                states.push((labels, u64::from(self.rels[i].state == state)));
            }
        }
        family(
            e,
            "tzero_flash_state",
            "1 for the state the relationship is in, 0 for the others",
            Gauge,
            &states,
        )?;
        let failed: Vec<(Labels<'_>, u64)> = (0..self.rels.len())
            .map(|i| {
                let r = &self.rels[i];
                let mut labels = pair(i);
                labels.push(("reason", r.failure.as_deref().unwrap_or("")));
                (labels, u64::from(r.state == FlashState::Failed))
            })
            .collect();
        family(
            e,
            "tzero_flash_failed",
            "1 when the relationship failed, with the reason; 0 (reason empty) otherwise",
            Gauge,
            &failed,
        )?;
        Ok(())
    }

    fn daemon(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use MetricType::{Counter, Gauge};
        let one = |v: u64| vec![(Labels::new(), v)];
        family(
            e,
            "tzero_cache_bytes",
            "Bytes the write cache holds",
            Gauge,
            &one(self.stats.cache_bytes),
        )?;
        family(
            e,
            "tzero_cache_limit_bytes",
            "Bytes the write cache may hold before host writes wait",
            Gauge,
            &one(self.stats.cache_limit),
        )?;
        let b = &self.stats.destage_batches;
        family(
            e,
            "tzero_destage_batches",
            "Destage batches run (copy-on-write, sync, commit, write)",
            Counter,
            &one(b.count),
        )?;
        histograms(
            e,
            "tzero_destage_batch_duration_seconds",
            "Time a destage batch took",
            &[(Labels::new(), b.clone())],
        )?;
        let c = &self.stats.catalog_commits;
        family(
            e,
            "tzero_catalog_commits",
            "Catalog transactions committed",
            Counter,
            &one(c.count),
        )?;
        histograms(
            e,
            "tzero_catalog_commit_duration_seconds",
            "Time a catalog commit took (one sync)",
            &[(Labels::new(), c.clone())],
        )?;
        if let Some((accepted, open)) = self.nbd {
            family(
                e,
                "tzero_nbd_connections",
                "NBD connections open",
                Gauge,
                &one(open),
            )?;
            family(
                e,
                "tzero_nbd_connections_accepted",
                "NBD connections accepted",
                Counter,
                &one(accepted),
            )?;
        }
        Ok(())
    }
}
