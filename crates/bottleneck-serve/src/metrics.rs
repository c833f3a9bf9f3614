//! `GET /metrics`: request counts by route and status, a latency histogram by route, items
//! scored and flagged, and the depth of the inference queue, in Prometheus text format
//! (prometheus-client).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

/// The service's metrics and the registry that prints them.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram>,
    /// Images or rows scored.
    pub scored: Counter,
    /// Of those, flagged as anomalous.
    pub anomalies: Counter,
    /// Jobs waiting for a worker.
    pub queued: Gauge,
    /// Requests being answered (upload, queue and inference included).
    pub in_flight: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("bottleneck");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            // 0.5 ms to ~16 s.
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        let scored = Counter::default();
        let anomalies = Counter::default();
        let queued = Gauge::default();
        let in_flight = Gauge::default();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time from request to answer",
            latency.clone(),
        );
        registry.register("scored_items", "Images or rows scored", scored.clone());
        registry.register(
            "anomalies",
            "Images or rows flagged as anomalous",
            anomalies.clone(),
        );
        registry.register(
            "queue_depth",
            "Requests waiting for a worker",
            queued.clone(),
        );
        registry.register(
            "http_requests_in_flight",
            "Requests being answered",
            in_flight.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            scored,
            anomalies,
            queued,
            in_flight,
        }
    }
}

impl Metrics {
    /// Every metric in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
