//! The server's metrics in the Prometheus text format (OpenMetrics 1.0), with the
//! Prometheus project's Rust client, [`prometheus_client`].
//!
//! [`ServerHandle::prometheus_text`](crate::ServerHandle::prometheus_text) is the
//! whole exposition, ready to serve on `/metrics` with [`CONTENT_TYPE`];
//! [`ServerHandle::prometheus_registry`](crate::ServerHandle::prometheus_registry) is
//! the same series as a [`Registry`] to encode beside an application's own
//! (`encode_registry` each, then `encode_eof` once).
//!
//! The values are a snapshot of the engine's counters ([`Metrics`]) taken on the hub
//! when asked, plus the handler latency histogram, which the driver measures around
//! each handler (middleware included) on the session's worker. The series, their
//! types and labels are listed in `docs/GUIDE.md` ("Metrics").

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use ws_session::Metrics;

pub use prometheus_client;

/// The HTTP `Content-Type` of [`ServerHandle::prometheus_text`](crate::ServerHandle::prometheus_text).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The prefix of every series.
pub const PREFIX: &str = "tether";

/// One label, as prometheus-client encodes it.
type Labels = Vec<(&'static str, String)>;

/// The bounds of the handler latency buckets: 100 µs × 2ⁿ, n = 0..17 (up to ~6.6 s).
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

/// Handler latency per event name (the names the application registered handlers
/// for: an event without a handler is never timed, so the label set stays bounded).
#[derive(Clone)]
pub(crate) struct HandlerLatency(Family<Labels, Histogram, fn() -> Histogram>);

impl Default for HandlerLatency {
    fn default() -> Self {
        Self(Family::new_with_constructor(latency_histogram))
    }
}

impl HandlerLatency {
    /// The histogram of `event`'s handler runs, in seconds (shared with the family).
    pub(crate) fn histogram(&self, event: &str) -> Histogram {
        self.0.get_or_create_owned(&vec![("event", event.to_owned())])
    }
}

/// A gauge set to `value`: for a registry built from a snapshot of plain counts, as
/// this module's and broker-redis's are.
pub fn gauge(value: u64) -> Gauge {
    let gauge = Gauge::default();
    gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
    gauge
}

/// A counter at `value` (see [`gauge`]).
pub fn counter(value: u64) -> Counter {
    let counter = Counter::default();
    counter.inc_by(value);
    counter
}

/// A gauge family with one label `key`, a member per `(label, value)`.
fn gauges(key: &'static str, values: &[(&str, u64)]) -> Family<Labels, Gauge> {
    let family = Family::<Labels, Gauge>::default();
    for &(label, value) in values {
        family
            .get_or_create(&vec![(key, label.to_owned())])
            .set(i64::try_from(value).unwrap_or(i64::MAX));
    }
    family
}

/// A counter family with one label `key`, a member per `(label, value)`.
fn counters(key: &'static str, values: &[(&str, u64)]) -> Family<Labels, Counter> {
    let family = Family::<Labels, Counter>::default();
    for &(label, value) in values {
        family.get_or_create(&vec![(key, label.to_owned())]).inc_by(value);
    }
    family
}

/// The registry of every series from `metrics`, `latency` and the count of
/// connections refused at `App::max_connections`.
pub(crate) fn registry(metrics: &Metrics, latency: &HandlerLatency, refused: u64) -> Registry {
    let mut r = Registry::with_prefix(PREFIX);
    r.register(
        "connections",
        "Open WebSocket connections",
        gauge(metrics.connections),
    );
    r.register(
        "sessions",
        "Sessions by state: live (attached to a connection) or suspended (waiting for a resume)",
        gauges(
            "state",
            &[
                ("live", metrics.sessions_live),
                ("suspended", metrics.sessions_suspended),
            ],
        ),
    );
    r.register("rooms", "Rooms with at least one member", gauge(metrics.rooms));
    r.register(
        "replay_messages",
        "Messages held in the sessions' replay buffers (sent, not yet acknowledged)",
        gauge(metrics.replay_messages),
    );
    r.register(
        "replay_bytes",
        "Encoded bytes held in the sessions' replay buffers",
        gauge(metrics.replay_bytes),
    );
    r.register(
        "connections_opened",
        "Connections opened",
        counter(metrics.connections_opened),
    );
    r.register(
        "connections_refused",
        "Connections refused (or dropped) at the server's connection limit, max_connections",
        counter(refused),
    );
    r.register(
        "sessions_created",
        "Sessions created",
        counter(metrics.sessions_created),
    );
    r.register(
        "sessions_expired",
        "Sessions expired (the resume window passed)",
        counter(metrics.sessions_expired),
    );
    r.register(
        "sessions_evicted",
        "Suspended sessions expired early: more were waiting than max_suspended_sessions",
        counter(metrics.sessions_evicted),
    );
    r.register(
        "messages",
        "WebSocket data messages, in (received) and out (one per recipient)",
        counters(
            "direction",
            &[("in", metrics.messages_in), ("out", metrics.messages_out)],
        ),
    );
    r.register(
        "bytes",
        "Bytes of data messages (payloads as framed by the envelope), in and out",
        counters(
            "direction",
            &[("in", metrics.bytes_in), ("out", metrics.bytes_out)],
        ),
    );
    r.register(
        "resumes_ok",
        "Resumes that succeeded",
        counter(metrics.resumes_ok),
    );
    let refused: Vec<(&str, u64)> = metrics
        .resumes_refused_by
        .iter()
        .map(|(reason, n)| (reason.as_str(), n))
        .collect();
    r.register(
        "resumes_refused",
        "Resumes refused, by the reason the client was given",
        counters("reason", &refused),
    );
    r.register(
        "slow_consumer_closes",
        "Connections closed as slow consumers (4110)",
        counter(metrics.slow_consumer_drops),
    );
    r.register(
        "auth_failures",
        "Credentials refused, and authentication timeouts",
        counter(metrics.auth_failures),
    );
    r.register(
        "rate_limited",
        "Inbound messages dropped by the rate limit",
        counter(metrics.rate_limited),
    );
    r.register(
        "protocol_errors",
        "sys.error events sent for protocol faults",
        counter(metrics.protocol_errors),
    );
    r.register(
        "handler_duration_seconds",
        "Time from a handler's start (middleware included) to its end, by event",
        latency.0.clone(),
    );
    r
}
