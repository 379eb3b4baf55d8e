//! Counters for `/metrics`, in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the query latency histogram.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 120.0];

#[derive(Default)]
pub struct Metrics {
    connections_total: AtomicU64,
    connections_active: AtomicI64,
    connections_refused: AtomicU64,
    queries_total: AtomicU64,
    query_errors_total: AtomicU64,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_sum_micros: AtomicU64,
    http_requests_total: AtomicU64,
    http_response_bytes_total: AtomicU64,
    plans_reused_total: AtomicU64,
}

impl Metrics {
    pub fn connection_opened(&self) {
        self.connections_total.fetch_add(1, Ordering::Relaxed);
        self.connections_active.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_closed(&self) {
        self.connections_active.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
    }

    pub fn query_done(&self, elapsed: Duration, failed: bool) {
        self.queries_total.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.query_errors_total.fetch_add(1, Ordering::Relaxed);
        }
        let secs = elapsed.as_secs_f64();
        for (bound, count) in BUCKETS.iter().zip(&self.latency_buckets) {
            if secs <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn plan_reused(&self) {
        self.plans_reused_total.fetch_add(1, Ordering::Relaxed);
    }

    pub fn http_response(&self, bytes: usize) {
        self.http_requests_total.fetch_add(1, Ordering::Relaxed);
        self.http_response_bytes_total
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "sluice_connections_total",
            "counter",
            "Postgres connections accepted.",
            get(&self.connections_total).to_string(),
        );
        metric(
            "sluice_connections_active",
            "gauge",
            "Postgres connections open now.",
            self.connections_active.load(Ordering::Relaxed).to_string(),
        );
        metric(
            "sluice_connections_refused_total",
            "counter",
            "Connections refused at the connection limit.",
            get(&self.connections_refused).to_string(),
        );
        metric(
            "sluice_queries_total",
            "counter",
            "Statements run (Postgres and HTTP).",
            get(&self.queries_total).to_string(),
        );
        metric(
            "sluice_query_errors_total",
            "counter",
            "Statements that failed.",
            get(&self.query_errors_total).to_string(),
        );
        metric(
            "sluice_http_requests_total",
            "counter",
            "HTTP requests answered.",
            get(&self.http_requests_total).to_string(),
        );
        metric(
            "sluice_http_response_bytes_total",
            "counter",
            "Bytes of HTTP response bodies sent.",
            get(&self.http_response_bytes_total).to_string(),
        );
        metric(
            "sluice_plans_reused_total",
            "counter",
            "Queries that ran the plan their connection made for an earlier query of the same shape.",
            get(&self.plans_reused_total).to_string(),
        );
        let name = "sluice_query_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to run a statement.\n# TYPE {name} histogram"
        );
        for (bound, count) in BUCKETS.iter().zip(&self.latency_buckets) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", get(count));
        }
        let total = get(&self.queries_total);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            get(&self.latency_sum_micros) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {total}");
        out
    }
}
