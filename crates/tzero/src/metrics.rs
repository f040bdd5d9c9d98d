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

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram as ApiHistogram;
use prometheus_client::registry::Registry;
use tzero_engine::stats::{Histogram, LATENCY_BOUNDS};
use tzero_engine::Engine;
use tzero_nbd::ConnStats;

mod scrape;
use scrape::Scrape;

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
            backups: engine.backups(),
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
