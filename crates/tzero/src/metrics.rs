//! The daemon's Prometheus metrics: what `GET /metrics` reports (names, types and labels are
//! listed in README.md, "Metrics").
//!
//! Three sources, none of which costs the data path a lock or a map lookup:
//! - host I/O per volume: each NBD connection resolves its volume's [`VolumeIo`] once, when
//!   the export is opened (`nbd_export`), and then bumps only atomics per request;
//! - the engine's own counters and listings (`Engine::stats`, `volumes`, `relationships`),
//!   read at scrape time by [`Scrape`], a prometheus-client `Collector`: deleted volumes and
//!   relationships simply stop appearing, with no bookkeeping on create or delete;
//! - the NBD server's connection counters and the API's request counters (the API middleware
//!   in `api::metrics`).
//!
//! One [`Metrics`] serves the process ([`global`]), as a Prometheus default registry does: the
//! daemon runs one engine, and the NBD server and both API listeners must count into the same
//! place.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram as ApiHistogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tzero_engine::stats::{Histogram, HistogramSnapshot, LATENCY_BOUNDS};
use tzero_engine::{Engine, EngineStats, FlashInfo, FlashState, VolumeInfo};
use tzero_nbd::ConnStats;

/// The content type of what [`Metrics::render`] writes: the Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Host request kinds, each with its latency histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Read = 0,
    Write = 1,
    Flush = 2,
    Trim = 3,
    WriteZeroes = 4,
}

impl Op {
    pub const ALL: [Op; 5] = [Op::Read, Op::Write, Op::Flush, Op::Trim, Op::WriteZeroes];

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Write => "write",
            Op::Flush => "flush",
            Op::Trim => "trim",
            Op::WriteZeroes => "write_zeroes",
        }
    }
}

/// Host I/O counters of one volume, shared by every connection to it.
#[derive(Debug, Default)]
pub struct VolumeIo {
    /// Every request, failed ones too; its count is the number of requests.
    latency: [Histogram; 5],
    errors: [AtomicU64; 5],
    /// Bytes of successful reads and writes (`[read, write]`).
    bytes: [AtomicU64; 2],
}

impl VolumeIo {
    /// Records one request that began at `began`; `bytes` counts only if it succeeded.
    pub fn record(&self, op: Op, began: Instant, ok: bool, bytes: u64) {
        self.latency[op as usize].observe(began.elapsed());
        if !ok {
            self.errors[op as usize].fetch_add(1, Ordering::Relaxed);
        } else if matches!(op, Op::Read | Op::Write) {
            self.bytes[op as usize].fetch_add(bytes, Ordering::Relaxed);
        }
    }

    pub fn ops(&self, op: Op) -> u64 {
        self.latency[op as usize].count()
    }

    pub fn bytes(&self, op: Op) -> u64 {
        match op {
            Op::Read | Op::Write => self.bytes[op as usize].load(Ordering::Relaxed),
            _ => 0,
        }
    }
}

/// Labels of an API request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    /// The route template (`/v1/flash/{source}/{target}`), never the raw path; `unmatched`
    /// for a path no route knows.
    pub route: String,
    pub method: String,
    pub status: u16,
}

/// Labels of an API request's duration.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
    pub method: String,
}

type DurationFamily = Family<RouteLabels, ApiHistogram, fn() -> ApiHistogram>;

/// Everything the daemon counts outside the engine.
#[derive(Debug)]
pub struct Metrics {
    volumes: Mutex<HashMap<String, Arc<VolumeIo>>>,
    nbd: OnceLock<Arc<ConnStats>>,
    api_requests: Family<ApiLabels, Counter>,
    api_durations: DurationFamily,
}

fn api_histogram() -> ApiHistogram {
    ApiHistogram::new(LATENCY_BOUNDS)
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Metrics {
            volumes: Mutex::new(HashMap::new()),
            nbd: OnceLock::new(),
            api_requests: Family::default(),
            api_durations: Family::new_with_constructor(api_histogram),
        }
    }

    /// The I/O counters of `volume`, for a connection that just opened it.
    pub fn volume_io(&self, volume: &str) -> Arc<VolumeIo> {
        let mut map = self.volumes.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(volume.to_owned()).or_default().clone()
    }

    /// Where the NBD server counts its connections (set once, at start).
    pub fn set_nbd(&self, stats: Arc<ConnStats>) {
        let _ = self.nbd.set(stats);
    }

    /// Counts one API request.
    pub fn api_request(&self, route: &str, method: &str, status: u16, began: Instant) {
        let (route, method) = (route.to_owned(), method.to_owned());
        self.api_durations
            .get_or_create(&RouteLabels {
                route: route.clone(),
                method: method.clone(),
            })
            .observe(began.elapsed().as_secs_f64());
        self.api_requests
            .get_or_create(&ApiLabels {
                route,
                method,
                status,
            })
            .inc();
    }

    /// Reads everything now (blocking engine calls: run it off the reactor) and writes the
    /// text exposition.
    pub fn render(&self, engine: &Engine) -> String {
        let volumes = engine.volumes();
        let io = {
            let mut map = self.volumes.lock().unwrap_or_else(|p| p.into_inner());
            // A deleted volume's counters go once no connection holds them (the output shows
            // only listed volumes anyway). Counters still held are kept: they may belong to a
            // volume created and opened since `volumes` was read.
            map.retain(|name, io| {
                Arc::strong_count(io) > 1 || volumes.iter().any(|v| &v.name == name)
            });
            map.iter().map(|(n, io)| (n.clone(), io.clone())).collect()
        };
        let scrape = Scrape {
            stats: engine.stats(),
            volumes,
            rels: engine.relationships(),
            io,
            nbd: self.nbd.get().map(|s| (s.accepted(), s.open())),
        };
        let mut registry = Registry::default();
        registry.register_collector(Box::new(scrape));
        registry.register(
            "tzero_api_requests",
            "API requests answered, by route template, method and status code",
            self.api_requests.clone(),
        );
        registry.register(
            "tzero_api_request_duration_seconds",
            "Time to answer an API request, by route template and method",
            self.api_durations.clone(),
        );
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// One scrape's worth of readings; encodes them as metric families.
#[derive(Debug)]
struct Scrape {
    stats: EngineStats,
    volumes: Vec<VolumeInfo>,
    rels: Vec<FlashInfo>,
    io: HashMap<String, Arc<VolumeIo>>,
    /// `(accepted, open)`; absent when no NBD server runs (router tests).
    nbd: Option<(u64, u64)>,
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
        use MetricType::{Counter, Gauge};
        let e = &mut enc;
        // Volumes.
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

        // Relationships.
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

        // The daemon.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_io_counts_ops_bytes_and_errors() {
        let io = VolumeIo::default();
        let t = Instant::now();
        io.record(Op::Write, t, true, 4096);
        io.record(Op::Write, t, false, 4096);
        io.record(Op::Read, t, true, 512);
        io.record(Op::Trim, t, true, 1 << 20);
        assert_eq!(io.ops(Op::Write), 2);
        assert_eq!(io.bytes(Op::Write), 4096, "failed writes move no bytes");
        assert_eq!(io.bytes(Op::Read), 512);
        assert_eq!(io.bytes(Op::Trim), 0, "only reads and writes count bytes");
        assert_eq!(io.errors[Op::Write as usize].load(Ordering::Relaxed), 1);
    }

    #[test]
    fn render_lists_volumes_and_forgets_deleted_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Engine::open_dir(dir.path(), Default::default()).expect("engine");
        engine.create_volume("v1", 1 << 20, 65536).expect("volume");
        let m = Metrics::new();
        m.volume_io("v1")
            .record(Op::Read, Instant::now(), true, 4096);
        m.volume_io("gone")
            .record(Op::Read, Instant::now(), true, 1);
        m.api_request("/v1/volumes", "GET", 200, Instant::now());
        let text = m.render(&engine);
        assert!(
            text.contains("tzero_volume_read_ops_total{volume=\"v1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("tzero_volume_read_bytes_total{volume=\"v1\"} 4096\n"),
            "{text}"
        );
        assert!(!text.contains("gone"), "{text}");
        assert!(
            text.contains(
                "tzero_api_requests_total{route=\"/v1/volumes\",method=\"GET\",status=\"200\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "tzero_volume_io_latency_seconds_bucket{volume=\"v1\",op=\"read\",le=\"+Inf\"} 1\n"
            ),
            "{text}"
        );
        assert!(m.volumes.lock().expect("map").get("gone").is_none());
        engine.shutdown().expect("shutdown");
    }
}
