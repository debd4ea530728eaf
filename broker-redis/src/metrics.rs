//! The broker's and the session store's counters in the Prometheus text format, beside
//! the server's own (`ServerHandle::prometheus_registry`): what reached Redis, what
//! waits for it, and what was lost or refused, so that an outage is seen on a
//! dashboard and not only in the logs. The series are listed in `docs/GUIDE.md`
//! ("Metrics").
//!
//! Each registry is a snapshot of a status taken when asked, as the server's is:
//! encode it with [`encode_registry`](prometheus_client::encoding::text::encode_registry)
//! next to the server's, then [`encode_eof`](prometheus_client::encoding::text::encode_eof)
//! once.

use ws_driver::prometheus::prometheus_client;
use ws_driver::prometheus::{counter, gauge, PREFIX};

use prometheus_client::registry::Registry;

use crate::{BrokerStatus, StoreStatus};

impl BrokerStatus {
    /// This status as `tether_broker_*` series.
    pub fn prometheus_registry(&self) -> Registry {
        let mut r = Registry::with_prefix(format!("{PREFIX}_broker"));
        r.register(
            "connected",
            "1 while both connections to Redis are up",
            gauge(u64::from(self.connected)),
        );
        r.register("connects", "Connections to Redis made", counter(self.connects));
        r.register(
            "published",
            "Publications Redis accepted",
            counter(self.published),
        );
        r.register(
            "received",
            "Publications received from other processes' nodes",
            counter(self.received),
        );
        r.register(
            "buffered",
            "Publications waiting for Redis",
            gauge(self.buffered as u64),
        );
        r.register(
            "dropped",
            "Publications dropped because the outage buffer was full",
            counter(self.dropped),
        );
        r.register(
            "refused",
            "Publications Redis answered with an error, delivered on this process's nodes only",
            counter(self.refused),
        );
        r
    }
}

impl StoreStatus {
    /// This status as `tether_store_*` series.
    pub fn prometheus_registry(&self) -> Registry {
        let mut r = Registry::with_prefix(format!("{PREFIX}_store"));
        r.register(
            "connected",
            "1 while the last command to Redis succeeded",
            gauge(u64::from(self.connected)),
        );
        r.register(
            "entries_written",
            "Journal entries Redis took",
            counter(self.entries_written),
        );
        r.register(
            "write_retries",
            "Journal appends that failed and were tried again",
            counter(self.write_retries),
        );
        r.register(
            "entries_buffered",
            "Journal entries waiting for Redis",
            gauge(self.entries_buffered as u64),
        );
        r.register(
            "entries_lost",
            "Journal entries dropped because the buffer was full",
            counter(self.entries_lost),
        );
        r.register(
            "load_failures",
            "Session loads that failed (the resume was refused)",
            counter(self.load_failures),
        );
        r.register(
            "claims",
            "Sessions claimed from another node",
            counter(self.claims),
        );
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode_registry;

    fn text(registry: &Registry) -> String {
        let mut out = String::new();
        encode_registry(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn every_field_is_a_series_with_its_value() {
        let status = BrokerStatus {
            connected: true,
            connects: 2,
            published: 30,
            received: 40,
            buffered: 5,
            dropped: 6,
            refused: 7,
            ..BrokerStatus::default()
        };
        let out = text(&status.prometheus_registry());
        for line in [
            "tether_broker_connected 1",
            "tether_broker_connects_total 2",
            "tether_broker_published_total 30",
            "tether_broker_received_total 40",
            "tether_broker_buffered 5",
            "tether_broker_dropped_total 6",
            "tether_broker_refused_total 7",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing in\n{out}");
        }
        let status = StoreStatus {
            entries_written: 11,
            write_retries: 12,
            entries_buffered: 13,
            entries_lost: 14,
            load_failures: 15,
            claims: 16,
            ..StoreStatus::default()
        };
        let out = text(&status.prometheus_registry());
        for line in [
            "tether_store_connected 0",
            "tether_store_entries_written_total 11",
            "tether_store_write_retries_total 12",
            "tether_store_entries_buffered 13",
            "tether_store_entries_lost_total 14",
            "tether_store_load_failures_total 15",
            "tether_store_claims_total 16",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing in\n{out}");
        }
    }
}
