//! Alert rules, evaluated by the first worker after each roll-up: a connection's error rate,
//! its oldest pending job, its webhooks' processing time and how long its circuit has been
//! open, each against a setting (reload; 0 turns a rule off). An alert is raised once per
//! episode and resolves itself once its condition has been clear for a whole window
//! (`integ.apply_alert_verdicts`), so a condition hovering at its threshold neither raises nor
//! resolves at every evaluation.

use crate::gucs;
use crate::limits::Circuit;
use crate::shmem::limiter;
use crate::spi_util::OrRaise;
use pgrx::prelude::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The rules' settings as read now.
#[derive(Clone, Copy, Debug)]
pub struct Thresholds {
    pub error_rate_percent: f64,
    pub window_s: i64,
    pub min_calls: i64,
    pub backlog_age_s: i64,
    pub webhook_ms: f64,
    pub circuit_open_s: i64,
}

impl Thresholds {
    pub fn read() -> Thresholds {
        Thresholds {
            error_rate_percent: gucs::ALERT_ERROR_RATE.get().clamp(0.0, 100.0),
            window_s: i64::from(gucs::ALERT_WINDOW_S.get().max(1)),
            min_calls: i64::from(gucs::ALERT_MIN_CALLS.get().max(1)),
            backlog_age_s: i64::from(gucs::ALERT_BACKLOG_AGE_S.get().max(0)),
            webhook_ms: f64::from(gucs::ALERT_WEBHOOK_MS.get().max(0)),
            circuit_open_s: i64::from(gucs::ALERT_CIRCUIT_OPEN_S.get().max(0)),
        }
    }
}

/// What the rules look at for one connection (over the window, or now).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Facts {
    pub successes: i64,
    pub failures: i64,
    pub webhooks_processed: i64,
    pub webhook_ms_sum: f64,
    pub oldest_pending_s: Option<i64>,
    pub circuit_open_s: Option<i64>,
}

/// The rule kinds, as `integ.alerts.kind`.
pub const KINDS: [&str; 4] = ["error_rate", "backlog_age", "webhook_slow", "circuit_open"];

/// For each rule: whether its condition holds, and the message saying so.
pub fn judge(t: &Thresholds, f: &Facts) -> [(bool, String); 4] {
    let calls = f.successes.saturating_add(f.failures);
    let rate = if calls > 0 {
        100.0 * f.failures as f64 / calls as f64
    } else {
        0.0
    };
    let window = minutes(t.window_s);
    let mean = if f.webhooks_processed > 0 {
        f.webhook_ms_sum / f.webhooks_processed as f64
    } else {
        0.0
    };
    [
        (
            t.error_rate_percent > 0.0 && calls >= t.min_calls && rate > t.error_rate_percent,
            format!(
                "error rate {rate:.1}% over the last {window} ({} of {calls} calls failed; alert above {}%)",
                f.failures, t.error_rate_percent
            ),
        ),
        (
            t.backlog_age_s > 0 && f.oldest_pending_s.is_some_and(|s| s > t.backlog_age_s),
            format!(
                "the oldest pending job has waited {} (alert after {})",
                minutes(f.oldest_pending_s.unwrap_or(0)),
                minutes(t.backlog_age_s)
            ),
        ),
        (
            t.webhook_ms > 0.0 && f.webhooks_processed > 0 && mean > t.webhook_ms,
            format!(
                "webhooks took {mean:.0} ms on average from receipt to applied over the last {window} ({} processed; alert above {} ms)",
                f.webhooks_processed, t.webhook_ms
            ),
        ),
        (
            t.circuit_open_s > 0 && f.circuit_open_s.is_some_and(|s| s >= t.circuit_open_s),
            format!(
                "the circuit has been open for {}: the marketplace keeps failing (alert after {})",
                minutes(f.circuit_open_s.unwrap_or(0)),
                minutes(t.circuit_open_s)
            ),
        ),
    ]
}

/// A duration for a message: "45 s", "5 min", "1 h 2 min".
fn minutes(s: i64) -> String {
    match s {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s / 60),
        s => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// The worker's memory of circuits seen not closed (open or half-open, which alternate while
/// the marketplace keeps failing): rebuilt from the limiter after a restart.
#[derive(Default)]
pub struct Evaluator {
    circuit_since: HashMap<i64, Instant>,
    /// When the last evaluation started and how long it took.
    last: Option<(Instant, Duration)>,
}

/// The share of the worker's time the rules may take at most (a look every 100 times its cost).
const MAX_SHARE: u32 = 100;

impl Evaluator {
    /// Whether a look is due: at most one per 2 s, and at most 1/100 of the time.
    pub fn due(&self) -> bool {
        self.last
            .is_none_or(|(at, cost)| at.elapsed() >= (cost * MAX_SHARE).max(Duration::from_secs(2)))
    }

    /// Evaluates every rule for every connection with something to judge and records the
    /// verdicts (call in a transaction).
    pub fn evaluate(&mut self) {
        let started = Instant::now();
        self.judge_all();
        self.last = Some((started, started.elapsed()));
    }

    fn judge_all(&mut self) {
        let t = Thresholds::read();
        crate::installation::check();
        let installation = crate::installation::id();
        let now = Instant::now();
        let not_closed: Vec<i64> = limiter::snapshot()
            .into_iter()
            .filter(|s| s.installation == installation && Circuit::from_u8(s.circuit_state) != Circuit::Closed)
            .map(|s| s.connection_id)
            .collect();
        self.circuit_since.retain(|id, _| not_closed.contains(id));
        for id in &not_closed {
            self.circuit_since.entry(*id).or_insert(now);
        }
        let open_for = |id: i64| {
            self.circuit_since
                .get(&id)
                .map(|since| now.saturating_duration_since(*since).as_secs() as i64)
        };
        let mut v = Verdicts::default();
        for (id, tenant, market, mut facts, open) in conditions(&t, &not_closed) {
            facts.circuit_open_s = open_for(id);
            for (kind, (bad, message)) in KINDS.iter().zip(judge(&t, &facts)) {
                if bad || open.iter().any(|k| k == kind) {
                    v.push(id, &tenant, &market, kind, bad, message);
                }
            }
        }
        v.apply(t.window_s);
    }
}

/// (connection, tenant, marketplace, facts, kinds of its open rule alerts) for every connection
/// with calls or webhooks in the window, pending jobs, an open rule alert or a circuit not closed.
fn conditions(t: &Thresholds, not_closed: &[i64]) -> Vec<(i64, String, String, Facts, Vec<String>)> {
    Spi::connect(|c| {
        let rows = c.select(
            "WITH e AS (
                SELECT h.connection_id, sum(h.successes) AS ok, sum(h.failures) AS bad,
                       sum(h.webhooks_processed) AS wh, sum(h.webhook_ms_sum) AS wh_ms
                  FROM integ.health_buckets h
                 WHERE h.width_s = CASE WHEN $1 <= 900 THEN 10 ELSE 60 END
                   AND h.start >= now() - make_interval(secs => $1)
                 GROUP BY h.connection_id),
             b AS (
                SELECT j.connection_id, extract(epoch FROM now() - min(j.created_at))::bigint AS oldest
                  FROM integ.sync_jobs j
                 WHERE j.state = 'pending' AND j.next_attempt_at < 'infinity'  -- held: no backlog
                 GROUP BY j.connection_id),
             o AS (
                SELECT a.connection_id, array_agg(a.kind) AS kinds FROM integ.alerts a
                 WHERE a.resolved_at IS NULL AND a.kind = ANY ($2) GROUP BY a.connection_id)
             SELECT c.id, c.tenant_id, c.marketplace, coalesce(e.ok, 0)::bigint, coalesce(e.bad, 0)::bigint,
                    coalesce(e.wh, 0)::bigint, coalesce(e.wh_ms, 0)::float8, b.oldest, coalesce(o.kinds, '{}')
               FROM integ.connections c
               LEFT JOIN e ON e.connection_id = c.id
               LEFT JOIN b ON b.connection_id = c.id
               LEFT JOIN o ON o.connection_id = c.id
              WHERE e.connection_id IS NOT NULL OR b.connection_id IS NOT NULL OR o.connection_id IS NOT NULL
                 OR c.id = ANY ($3)",
            None,
            &[
                (t.window_s as f64).into(),
                KINDS.to_vec().into(),
                not_closed.to_vec().into(),
            ],
        )?;
        let mut out = Vec::new();
        for r in rows {
            out.push((
                r.get::<i64>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<String>(3)?.unwrap_or_default(),
                Facts {
                    successes: r.get(4)?.unwrap_or(0),
                    failures: r.get(5)?.unwrap_or(0),
                    webhooks_processed: r.get(6)?.unwrap_or(0),
                    webhook_ms_sum: r.get(7)?.unwrap_or(0.0),
                    oldest_pending_s: r.get(8)?,
                    circuit_open_s: None,
                },
                r.get::<Vec<String>>(9)?.unwrap_or_default(),
            ));
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .or_raise("reading what the alert rules judge")
}

#[derive(Default)]
struct Verdicts {
    ids: Vec<i64>,
    tenants: Vec<String>,
    markets: Vec<String>,
    kinds: Vec<String>,
    bad: Vec<bool>,
    messages: Vec<String>,
}

impl Verdicts {
    fn push(&mut self, id: i64, tenant: &str, market: &str, kind: &str, bad: bool, message: String) {
        self.ids.push(id);
        self.tenants.push(tenant.into());
        self.markets.push(market.into());
        self.kinds.push(kind.into());
        self.bad.push(bad);
        self.messages.push(message);
    }

    fn apply(self, window_s: i64) {
        if self.ids.is_empty() {
            return;
        }
        Spi::run_with_args(
            "SELECT integ.apply_alert_verdicts($1, $2, $3, $4, $5, $6, make_interval(secs => $7))",
            &[
                self.ids.into(),
                self.tenants.into(),
                self.markets.into(),
                self.kinds.into(),
                self.bad.into(),
                self.messages.into(),
                (window_s as f64).into(),
            ],
        )
        .or_raise("recording alert verdicts");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Thresholds {
        Thresholds {
            error_rate_percent: 5.0,
            window_s: 300,
            min_calls: 20,
            backlog_age_s: 3600,
            webhook_ms: 500.0,
            circuit_open_s: 600,
        }
    }

    #[test]
    fn each_rule_holds_only_past_its_threshold() {
        let bad = |f: &Facts| judge(&t(), f).map(|(b, _)| b);
        let f = |ok, failed| Facts {
            successes: ok,
            failures: failed,
            ..Facts::default()
        };
        assert!(bad(&f(90, 10))[0]);
        assert!(!bad(&f(95, 5))[0], "at the threshold: no alert");
        assert!(!bad(&f(96, 4))[0]);
        assert!(!bad(&f(9, 10))[0], "fewer than the minimum calls");
        let old = Facts {
            oldest_pending_s: Some(3601),
            ..Facts::default()
        };
        assert_eq!(bad(&old), [false, true, false, false]);
        let slow = Facts {
            webhooks_processed: 4,
            webhook_ms_sum: 2_400.0,
            ..Facts::default()
        };
        assert_eq!(bad(&slow), [false, false, true, false]);
        let open = Facts {
            circuit_open_s: Some(600),
            ..Facts::default()
        };
        assert_eq!(bad(&open), [false, false, false, true]);
        let off = Thresholds {
            error_rate_percent: 0.0,
            backlog_age_s: 0,
            webhook_ms: 0.0,
            circuit_open_s: 0,
            ..t()
        };
        let all = Facts {
            oldest_pending_s: Some(1 << 40),
            circuit_open_s: Some(1 << 40),
            webhooks_processed: 1,
            webhook_ms_sum: 1e12,
            ..f(0, 1000)
        };
        assert_eq!(judge(&off, &all).map(|(b, _)| b), [false; 4], "0 turns a rule off");
        let (_, message) = &judge(&t(), &f(90, 10))[0];
        assert_eq!(
            message,
            "error rate 10.0% over the last 5 min (10 of 100 calls failed; alert above 5%)"
        );
        assert_eq!(minutes(3720), "1 h 2 min");
    }
}
