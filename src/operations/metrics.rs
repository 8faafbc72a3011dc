//! `integ.metrics()`: the Prometheus text exposition (version 0.0.4) of what `integ.health`,
//! `integ.usage` and `integ.status` show, for a `postgres_exporter` custom query or any
//! scraper. Counters come from the roll-up's since-install bucket (they never go down); gauges
//! are read now. Encoded by the `prometheus-client` crate.

use crate::operations::histogram::BOUNDS_MS;
use crate::spi_util::OrRaise;
use pgrx::prelude::*;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// One connection's figures.
#[derive(Debug, Default, Clone)]
struct Row {
    tenant: String,
    marketplace: String,
    status: String,
    successes: u64,
    failures: u64,
    throttled: u64,
    pushes: u64,
    dead_letters: u64,
    latency: Vec<i64>,
    latency_sum: f64,
    webhooks_processed: u64,
    webhook_ms: Vec<i64>,
    webhook_ms_sum: f64,
    webhooks_accepted: u64,
    webhooks_duplicate: u64,
    webhooks_rejected: u64,
    pending: i64,
    in_flight: i64,
    dead_jobs: i64,
    oldest_pending_s: f64,
    circuit_open: i64,
    alerts_open: i64,
    limiter_available: Option<i64>,
    limiter_requests: Option<i64>,
    limiter_throttled: Option<i64>,
}

#[derive(Debug, Default)]
struct Snapshot {
    rows: Vec<Row>,
    capture_unread_bytes: Option<i64>,
    capture_retained_bytes: Option<i64>,
}

// Label sets borrow the row's strings: at 10,000 connections an allocation per series was a
// good part of the encoding.
fn labels(r: &Row) -> [(&'static str, &str); 2] {
    [("tenant", &r.tenant), ("marketplace", &r.marketplace)]
}

fn with<'a>(r: &'a Row, key: &'static str, value: &'a str) -> [(&'static str, &'a str); 3] {
    [("tenant", &r.tenant), ("marketplace", &r.marketplace), (key, value)]
}

/// The latency bounds the exposition keeps (ms): the targets' (500 ms webhooks, 2 s calls) and
/// their neighbours. The roll-up's finer buckets merge into them; the histograms are most of the
/// text at 10,000 connections (twelve buckets were 1.6 times these six).
const EXPOSED_BOUNDS_MS: [f64; 5] = [100.0, 250.0, 500.0, 1000.0, 2000.0];

/// (upper bound, count) per exposed bucket as the encoder takes them (it adds the counts up),
/// and the total.
fn buckets(h: &[i64]) -> (Vec<(f64, u64)>, u64) {
    let mut out: Vec<(f64, u64)> = EXPOSED_BOUNDS_MS
        .iter()
        .chain(std::iter::once(&f64::INFINITY))
        .map(|b| (*b, 0))
        .collect();
    let mut total = 0u64;
    for (i, c) in h.iter().enumerate() {
        let c = (*c).max(0) as u64;
        total = total.saturating_add(c);
        let bound = BOUNDS_MS.get(i).copied().unwrap_or(f64::INFINITY);
        if let Some(slot) = out.iter_mut().find(|(b, _)| bound <= *b) {
            slot.1 = slot.1.saturating_add(c);
        }
    }
    (out, total)
}

/// A sample worth writing: 0 is left out (absent means 0; at 10,000 mostly idle connections the
/// zeros were half the text), except in `integ_connection_status`, which names every connection.
fn nonzero(v: u64) -> Option<u64> {
    (v != 0).then_some(v)
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        {
            let mut m = e.encode_descriptor(
                "integ_connection_status",
                "1 for each connection, labelled with its status (active, paused, needs_reauthorization, ...).",
                None,
                MetricType::Gauge,
            )?;
            for r in &self.rows {
                ConstGauge::new(1).encode(m.encode_family(&with(r, "status", &r.status))?)?;
            }
        }
        {
            let mut m = e.encode_descriptor(
                "integ_api_calls",
                "Marketplace API calls by outcome (failure: 5xx, network, refused; throttled: 429).",
                None,
                MetricType::Counter,
            )?;
            for r in &self.rows {
                for (outcome, v) in [
                    ("success", r.successes),
                    ("failure", r.failures),
                    ("throttled", r.throttled),
                ] {
                    if let Some(v) = nonzero(v) {
                        ConstCounter::new(v).encode(m.encode_family(&with(r, "outcome", outcome))?)?;
                    }
                }
            }
        }
        type Pick = fn(&Row) -> u64;
        let counters: [(&str, &str, Pick); 3] = [
            ("integ_pushes", "Listings written (stock or price).", |r| r.pushes),
            ("integ_dead_letters", "Jobs dead-lettered.", |r| r.dead_letters),
            ("integ_webhooks_processed", "Webhook deliveries applied.", |r| {
                r.webhooks_processed
            }),
        ];
        for (name, help, pick) in counters {
            let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
            for r in &self.rows {
                if let Some(v) = nonzero(pick(r)) {
                    ConstCounter::new(v).encode(m.encode_family(&labels(r))?)?;
                }
            }
        }
        {
            let mut m = e.encode_descriptor(
                "integ_webhooks_received",
                "Webhook deliveries received, by status.",
                None,
                MetricType::Counter,
            )?;
            for r in &self.rows {
                for (status, v) in [
                    ("accepted", r.webhooks_accepted),
                    ("duplicate", r.webhooks_duplicate),
                    ("rejected", r.webhooks_rejected),
                ] {
                    if let Some(v) = nonzero(v) {
                        ConstCounter::new(v).encode(m.encode_family(&with(r, "status", status))?)?;
                    }
                }
            }
        }
        type Hist = fn(&Row) -> (&[i64], f64);
        let histograms: [(&str, &str, Hist); 2] = [
            (
                "integ_api_latency_ms",
                "Marketplace API call latency in milliseconds.",
                |r| (&r.latency, r.latency_sum),
            ),
            (
                "integ_webhook_processing_ms",
                "Webhook processing time from receipt to applied, in milliseconds.",
                |r| (&r.webhook_ms, r.webhook_ms_sum),
            ),
        ];
        for (name, help, pick) in histograms {
            let mut m = e.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for r in &self.rows {
                let (h, sum) = pick(r);
                let (b, count) = buckets(h);
                if count == 0 {
                    continue; // nothing observed yet
                }
                m.encode_family(&labels(r))?
                    .encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &b, None)?;
            }
        }
        type Gauge = fn(&Row) -> Option<f64>;
        let gauges: [(&str, &str, Gauge); 7] = [
            ("integ_queue_pending", "Jobs waiting to be pushed.", |r| {
                Some(r.pending as f64)
            }),
            ("integ_queue_in_flight", "Jobs being pushed.", |r| {
                Some(r.in_flight as f64)
            }),
            ("integ_oldest_pending_seconds", "Age of the oldest pending job.", |r| {
                Some(r.oldest_pending_s)
            }),
            (
                "integ_dead_jobs",
                "Dead-lettered jobs waiting for integ.retry_dead.",
                |r| Some(r.dead_jobs as f64),
            ),
            (
                "integ_circuit_open",
                "1 while the connection's circuit is open or half-open.",
                |r| Some(r.circuit_open as f64),
            ),
            ("integ_alerts_open", "Alerts neither resolved nor acknowledged.", |r| {
                Some(r.alerts_open as f64)
            }),
            (
                "integ_limiter_available",
                "Requests the rate limit allows at once now.",
                |r| r.limiter_available.map(|v| v as f64),
            ),
        ];
        for (name, help, pick) in gauges {
            let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for r in &self.rows {
                let Some(v) = pick(r).filter(|v| *v != 0.0) else {
                    continue;
                };
                if v.fract() == 0.0 && v.abs() < 9e15 {
                    // counts print as integers
                    ConstGauge::new(v as i64).encode(m.encode_family(&labels(r))?)?
                } else {
                    ConstGauge::new(v).encode(m.encode_family(&labels(r))?)?
                }
            }
        }
        {
            let mut m = e.encode_descriptor(
                "integ_limiter_requests",
                "Requests the rate limiter let through, by outcome (since the server started).",
                None,
                MetricType::Counter,
            )?;
            for r in &self.rows {
                for (what, v) in [("sent", r.limiter_requests), ("throttled", r.limiter_throttled)] {
                    if let Some(v) = v.and_then(|v| nonzero(v.max(0) as u64)) {
                        ConstCounter::new(v).encode(m.encode_family(&with(r, "outcome", what))?)?;
                    }
                }
            }
        }
        for (name, help, v) in [
            (
                "integ_capture_unread_bytes",
                "WAL written since the capture's last apply.",
                self.capture_unread_bytes,
            ),
            (
                "integ_capture_retained_bytes",
                "WAL the capture slot retains.",
                self.capture_retained_bytes,
            ),
        ] {
            if let Some(v) = v {
                let m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
                ConstGauge::new(v).encode(m)?;
            }
        }
        Ok(())
    }
}

fn counts(v: Option<Vec<Option<i64>>>) -> Vec<i64> {
    v.unwrap_or_default().into_iter().map(|c| c.unwrap_or(0)).collect()
}

fn read() -> Snapshot {
    let rows = Spi::connect(|c| {
        let rows = c.select(
            // fixed-width columns first and none NULL: a NULL, or a variable-width column before
            // it, makes fetching each column walk the row from its start
            "SELECT coalesce(t.successes, 0), coalesce(t.failures, 0), coalesce(t.throttled, 0), coalesce(t.pushes, 0),
                    coalesce(t.dead, 0), coalesce(t.latency_ms_sum, 0), coalesce(t.webhooks_processed, 0),
                    coalesce(t.webhook_ms_sum, 0), coalesce(t.webhooks_accepted, 0), coalesce(t.webhooks_duplicate, 0),
                    coalesce(t.webhooks_rejected, 0), coalesce(p.pending, 0), coalesce(f.in_flight, 0), coalesce(d.dead, 0),
                    coalesce(extract(epoch FROM now() - p.oldest), 0)::float8,
                    (c.status = 'paused' OR coalesce(l.circuit, 'closed') <> 'closed')::int,
                    coalesce(a.open, 0), coalesce(l.available, -1), coalesce(l.requests, -1), coalesce(l.throttled, -1),
                    c.tenant_id, c.marketplace, c.status, coalesce(t.latency_ms, '{}'), coalesce(t.webhook_ms, '{}')
               FROM integ.connections c
               LEFT JOIN integ.health_buckets t ON t.connection_id = c.id AND t.width_s = 0
               -- the queue as integ.status counts it, read set-wise from the partial indexes
               -- (integ.status probes each connection: right for one tenant, slow for all)
               LEFT JOIN (SELECT j.connection_id, count(*) AS pending, min(j.created_at) AS oldest
                            FROM integ.sync_jobs j WHERE j.state = 'pending' GROUP BY 1) p ON p.connection_id = c.id
               LEFT JOIN (SELECT j.connection_id, count(*) AS in_flight
                            FROM integ.sync_jobs j WHERE j.state = 'in_flight' GROUP BY 1) f ON f.connection_id = c.id
               LEFT JOIN (SELECT j.connection_id, count(*) AS dead
                            FROM integ.sync_jobs j WHERE j.state = 'dead' GROUP BY 1) d ON d.connection_id = c.id
               LEFT JOIN integ.limiter_state() l ON l.connection_id = c.id
               LEFT JOIN (SELECT a.connection_id, count(*) AS open FROM integ.alerts a
                           WHERE a.resolved_at IS NULL AND a.acknowledged_at IS NULL GROUP BY 1) a ON a.connection_id = c.id
              WHERE integ.tenant_visible(c.tenant_id)",
            None,
            &[],
        )?;
        let mut out = Vec::new();
        let n = |v: Option<i64>| v.unwrap_or(0).max(0) as u64;
        // -1: no limiter yet (the statement has no NULLs)
        let known = |v: Option<i64>| v.filter(|v| *v >= 0);
        // sums to the microsecond: the float's last digits were a tenth of the text
        let milli = |v: Option<f64>| (v.unwrap_or(0.0) * 1000.0).round() / 1000.0;
        for r in rows {
            out.push(Row {
                successes: n(r.get(1)?),
                failures: n(r.get(2)?),
                throttled: n(r.get(3)?),
                pushes: n(r.get(4)?),
                dead_letters: n(r.get(5)?),
                latency_sum: milli(r.get(6)?),
                webhooks_processed: n(r.get(7)?),
                webhook_ms_sum: milli(r.get(8)?),
                webhooks_accepted: n(r.get(9)?),
                webhooks_duplicate: n(r.get(10)?),
                webhooks_rejected: n(r.get(11)?),
                pending: r.get(12)?.unwrap_or(0),
                in_flight: r.get(13)?.unwrap_or(0),
                dead_jobs: r.get(14)?.unwrap_or(0),
                oldest_pending_s: r.get(15)?.unwrap_or(0.0),
                circuit_open: i64::from(r.get::<i32>(16)?.unwrap_or(0)),
                alerts_open: r.get(17)?.unwrap_or(0),
                limiter_available: known(r.get(18)?),
                limiter_requests: known(r.get(19)?),
                limiter_throttled: known(r.get(20)?),
                tenant: r.get(21)?.unwrap_or_default(),
                marketplace: r.get(22)?.unwrap_or_default(),
                status: r.get(23)?.unwrap_or_default(),
                latency: counts(r.get(24)?),
                webhook_ms: counts(r.get(25)?),
            });
        }
        // sorted here: cheaper than in the statement
        out.sort_unstable_by(|a: &Row, b: &Row| (&a.tenant, &a.marketplace).cmp(&(&b.tenant, &b.marketplace)));
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .or_raise("reading the metrics");
    let (unread, retained) = Spi::connect(|c| {
        let t = c.select("SELECT unread_bytes, retained_bytes FROM integ.capture", None, &[])?;
        let row = t.first();
        Ok::<_, pgrx::spi::SpiError>((row.get::<i64>(1)?, row.get::<i64>(2)?))
    })
    .unwrap_or((None, None));
    Snapshot {
        rows,
        capture_unread_bytes: unread,
        capture_retained_bytes: retained,
    }
}

fn encode(s: Snapshot) -> Result<String, std::fmt::Error> {
    // about 1 KB per busy connection: sized once rather than doubled a dozen times
    let mut out = String::with_capacity(4096 + s.rows.len() * 1200);
    let mut registry = Registry::default();
    registry.register_collector(Box::new(s));
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}

/// `integ.metrics()`: every connection the caller may see, in the Prometheus text format.
#[pg_extern(stable, parallel_safe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn metrics() -> String {
    encode(read()).unwrap_or_else(|_| pgrx::error!("integ.metrics: the exposition could not be written"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_is_prometheus_text_with_escaped_labels() {
        let mut h = vec![0i64; BOUNDS_MS.len() + 1];
        h[0] = 3;
        h[3] = 1;
        let s = Snapshot {
            rows: vec![Row {
                tenant: "a\"b\\c\nd".into(),
                marketplace: "shopify".into(),
                status: "active".into(),
                successes: 4,
                latency: h,
                latency_sum: 61.5,
                pending: 2,
                ..Row::default()
            }],
            capture_unread_bytes: Some(10),
            capture_retained_bytes: None,
        };
        let text = encode(s).expect("encoded");
        assert!(text.contains("# TYPE integ_api_calls_total counter\n"), "{text}");
        assert!(
            text.contains(
                "integ_api_calls_total{tenant=\"a\\\"b\\\\c\\nd\",marketplace=\"shopify\",outcome=\"success\"} 4\n"
            ),
            "{text}"
        );
        // the exposed buckets: 1 ms and 40 ms both fall in le="100"; none of the finer ones shows
        assert!(
            text.contains(
                "integ_api_latency_ms_bucket{tenant=\"a\\\"b\\\\c\\nd\",marketplace=\"shopify\",le=\"100\"} 4\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(",le=\"2000\"} 4\n") && text.contains(",le=\"+Inf\"} 4\n") && !text.contains("le=\"5\""),
            "{text}"
        );
        // zeros are left out, but every connection is named with its status
        assert!(
            !text.contains("outcome=\"failure\"") && !text.contains("integ_queue_in_flight{"),
            "{text}"
        );
        assert!(
            text.contains(
                "integ_connection_status{tenant=\"a\\\"b\\\\c\\nd\",marketplace=\"shopify\",status=\"active\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("integ_api_latency_ms_sum{tenant=\"a\\\"b\\\\c\\nd\",marketplace=\"shopify\"} 61.5\n"),
            "{text}"
        );
        assert!(
            text.contains("integ_queue_pending{tenant=\"a\\\"b\\\\c\\nd\",marketplace=\"shopify\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("integ_capture_unread_bytes 10\n") && !text.contains("retained"),
            "{text}"
        );
    }
}
