//! Webhook subscriptions: the first worker keeps every active connection subscribed to the
//! topics the extension applies, at `integ.webhook_base_url`/webhooks/<marketplace>. A
//! connection is checked when it falls due (`subscriptions_due_at`: set by connecting,
//! authorizing, every reconciliation, a change of the base URL, and a failed check's retry):
//! one list call, then a create or update for each topic missing or pointing elsewhere, from the
//! connection's spare budget (pushes come first). MercadoLibre and SHEIN configure notifications
//! in their consoles: their rows say what to enter there.

use crate::marketplaces::subscriptions::{self, RemoteSubscription, Step, SubscriptionError};
use crate::marketplaces::{self, Connector, Marketplace, PushRequest};
use crate::push;
use crate::shmem::limiter;
use crate::spi_util::{first, worker_transaction, OrRaise};
use crate::tokens::{self, TokenStatus};
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Connections settled without calls per statement.
const SETTLE_BATCH: i64 = 1_000;
/// How often to look for due connections while there are none.
const IDLE_LOOK: Duration = Duration::from_secs(1);
/// A check that could not finish (network, 5xx) is tried again after this.
const RETRY: Duration = Duration::from_secs(60);
/// A check refused for good (an address the marketplace will not take) is tried again after this.
const RETRY_REFUSED: Duration = Duration::from_secs(3_600);

/// The topics the README asks to configure in the consoles of marketplaces without an API for it.
fn console_topics(m: Marketplace) -> &'static [&'static str] {
    match m {
        Marketplace::MercadoLibre => &["orders_v2", "items"],
        Marketplace::Shein => &["ORDER_STATUS"],
        _ => &[],
    }
}

#[derive(Default)]
pub struct Subscriber {
    next_look: Option<Instant>,
    /// The base URL the rows were last compared with (None: not yet, since start).
    seen_base: Option<Result<Option<String>, String>>,
    /// Connections waiting for spare budget: until when.
    paused: HashMap<i64, Instant>,
}

struct Due {
    id: i64,
    tenant: String,
    marketplace: Marketplace,
    settings: Value,
    /// The lease taken on `subscriptions_due_at`, as text: the check clears only its own lease.
    lease: String,
}

/// One topic's row as a check leaves it.
struct Row {
    topic: String,
    state: &'static str,
    remote_id: Option<String>,
    error: Option<String>,
}

/// How a check ended: when it falls due again (None: at the next reconciliation), the sync-log
/// outcome and error.
struct Ended {
    again: Option<Duration>,
    outcome: &'static str,
    error: Option<String>,
}

impl Subscriber {
    /// Checks at most one due connection; true when it made calls.
    pub fn turn(&mut self, agent: &ureq::Agent, cooldown_ns: i64) -> bool {
        let now = Instant::now();
        if self.next_look.is_some_and(|t| now < t) {
            return false;
        }
        let base = crate::gucs::webhook_base_url();
        if self.seen_base.as_ref() != Some(&base) {
            if let Err(e) = worker_transaction(|| due_where_address_differs(base.as_ref().ok().cloned().flatten())) {
                warning!("integration: marking webhook subscriptions for a new base URL failed: {e}");
            }
            self.seen_base = Some(base.clone());
        }
        // connections that need no call (no address to subscribe, or a console to configure
        // by hand) are settled a thousand at a time
        match worker_transaction(|| settle_without_calls(&base)) {
            Ok(n) if n >= SETTLE_BATCH => return false,
            Ok(_) => {}
            Err(e) => warning!("integration: settling webhook subscriptions failed: {e}"),
        }
        let Ok(Some(base)) = base else {
            self.next_look = Some(now + IDLE_LOOK);
            return false;
        };
        self.paused.retain(|_, until| *until > now);
        let paused: Vec<i64> = self.paused.keys().copied().collect();
        let due = match worker_transaction(|| next_due(&paused)) {
            Ok(Some(d)) => d,
            Ok(None) => {
                self.next_look = Some(now + IDLE_LOOK);
                return false;
            }
            Err(e) => {
                warning!("integration: looking for webhook subscriptions to check failed: {e}");
                self.next_look = Some(now + IDLE_LOOK);
                return false;
            }
        };
        let Ok(connector) = marketplaces::connector(due.marketplace) else {
            return false;
        };
        let address = format!("{base}/webhooks/{}", due.marketplace);
        let quota = push::quota_for(due.marketplace.as_str(), &due.settings);
        if let Err(wait) = limiter::acquire_spare(due.id, quota, cooldown_ns) {
            let wait = Duration::from_nanos(wait.clamp(1_000_000, 1_000_000_000) as u64);
            self.paused.insert(due.id, now + wait);
            release(&due, wait);
            return false;
        }
        let (rows, ended, calls) = self.check(agent, connector, &due, &address, quota, cooldown_ns);
        if let Err(e) = worker_transaction(|| store(&due, &address, &rows, &ended, calls, now)) {
            warning!("integration: storing webhook subscriptions failed: {e}");
        }
        calls > 0
    }

    /// The calls of one check: the rows it leaves, how it ended, the calls it made.
    fn check(
        &mut self,
        agent: &ureq::Agent,
        connector: &'static dyn Connector,
        due: &Due,
        address: &str,
        quota: crate::limits::Quota,
        cooldown_ns: i64,
    ) -> (Vec<Row>, Ended, i32) {
        // a check that fails before any change leaves every topic failed (known ids kept)
        let all_failed = |error: &Option<String>| -> Vec<Row> {
            let error = error.as_deref().unwrap_or("unknown error");
            connector
                .webhook_topics()
                .iter()
                .map(|t| failed_row(t.to_string(), None, error))
                .collect()
        };
        let (req, generation) = match request(agent, due) {
            Ok(r) => r,
            Err(ended) => return (all_failed(&ended.error), ended, 0),
        };
        let mut calls = 1;
        let remote = match connector.list_subscriptions(agent, &req) {
            Ok(r) => r,
            Err(e) => {
                let ended = self.failed(agent, due, generation, e);
                return (all_failed(&ended.error), ended, calls);
            }
        };
        let mut rows = Vec::new();
        let mut ended = done();
        for step in subscriptions::plan(connector.webhook_topics(), address, &remote) {
            let (topic, remote_id) = match step {
                Step::Keep(s) => {
                    rows.push(subscribed(s));
                    continue;
                }
                Step::Create { topic } => (topic, None),
                Step::Update { topic, remote_id } => (topic, remote_id),
            };
            // each change is one more call from the spare budget
            if limiter::acquire_spare(due.id, quota, cooldown_ns).is_err() {
                ended = Ended {
                    again: Some(Duration::from_secs(1)),
                    outcome: "retry",
                    error: Some("waiting for the rate limit".into()),
                };
                rows.push(failed_row(topic, remote_id, "waiting for the rate limit"));
                continue;
            }
            calls += 1;
            match connector.subscribe(agent, &req, &topic, address, remote_id.as_deref()) {
                Ok(s) => rows.push(subscribed(s)),
                Err(e) => {
                    let text = error_text(&e);
                    rows.push(failed_row(topic, remote_id, &text));
                    ended = self.failed(agent, due, generation, e);
                }
            }
        }
        (rows, ended, calls)
    }

    /// What a failed call means for the check (a refused token is refreshed for the next try).
    fn failed(&mut self, agent: &ureq::Agent, due: &Due, generation: i64, e: SubscriptionError) -> Ended {
        let error = Some(error_text(&e));
        match e {
            SubscriptionError::Unauthorized(_) => {
                // a dead grant turns the connection to needs_reauthorization (and alerts)
                let _ = tokens::worker_token(agent, due.id, Some(generation));
                Ended {
                    again: Some(Duration::from_secs(5)),
                    outcome: "retry",
                    error,
                }
            }
            SubscriptionError::Throttled { retry_after, .. } => {
                limiter::penalize(due.id, retry_after);
                Ended {
                    again: Some(
                        retry_after
                            .unwrap_or(Duration::from_secs(1))
                            .max(Duration::from_secs(1)),
                    ),
                    outcome: "retry",
                    error,
                }
            }
            SubscriptionError::Transient(_) => Ended {
                again: Some(RETRY),
                outcome: "retry",
                error,
            },
            SubscriptionError::Failed(_) | SubscriptionError::Unsupported => Ended {
                again: Some(RETRY_REFUSED),
                outcome: "failed",
                error,
            },
        }
    }
}

fn done() -> Ended {
    Ended {
        again: None,
        outcome: "success",
        error: None,
    }
}

fn subscribed(s: RemoteSubscription) -> Row {
    Row {
        topic: s.topic,
        state: "subscribed",
        remote_id: s.remote_id,
        error: None,
    }
}

fn failed_row(topic: String, remote_id: Option<String>, error: &str) -> Row {
    Row {
        topic,
        state: "failed",
        remote_id,
        error: Some(error.to_string()),
    }
}

fn error_text(e: &SubscriptionError) -> String {
    let text = match e {
        SubscriptionError::Unsupported => "the marketplace has no subscription API".to_string(),
        SubscriptionError::Unauthorized(t) | SubscriptionError::Transient(t) | SubscriptionError::Failed(t) => {
            t.clone()
        }
        SubscriptionError::Throttled { error, .. } => error.clone(),
    };
    marketplaces::http::truncate(&text, 500)
}

/// The connection's request (token and credentials) and the token's generation.
fn request(agent: &ureq::Agent, due: &Due) -> Result<(PushRequest, i64), Ended> {
    let retry = |e: String| Ended {
        again: Some(RETRY),
        outcome: "retry",
        error: Some(e),
    };
    let (token, credentials, generation) = match tokens::worker_token(agent, due.id, None) {
        TokenStatus::Ready {
            access_token,
            credentials,
            generation,
        } => (access_token, credentials, generation),
        // the connection stops being active; it falls due again when it is authorized
        TokenStatus::NeedsReauthorization(e) => {
            return Err(retry(format!("the connection needs re-authorization: {e}")))
        }
        TokenStatus::Unavailable(e) => return Err(retry(format!("no token: {e}"))),
    };
    push::connection_request(due.marketplace.as_str(), &due.settings, token, credentials)
        .map(|(_, req)| (req, generation))
        .map_err(|e| Ended {
            again: Some(RETRY_REFUSED),
            outcome: "failed",
            error: Some(e),
        })
}

/// Takes a lease on the active connection due longest (a crashed check is retried in 5 minutes).
fn next_due(paused: &[i64]) -> Option<Due> {
    let row = first::<JsonB>(
        "UPDATE integ.connections c SET subscriptions_due_at = now() + interval '5 minutes'
          WHERE c.id = (SELECT x.id FROM integ.connections x
                         WHERE x.subscriptions_due_at <= now() AND x.status = 'active' AND x.id <> ALL ($1)
                           AND x.marketplace IN ('shopify', 'tiktok')
                         ORDER BY x.subscriptions_due_at, x.id LIMIT 1 FOR UPDATE SKIP LOCKED)
         RETURNING jsonb_build_array(c.id, c.tenant_id, c.marketplace, c.settings, c.subscriptions_due_at::text)",
        &[paused.to_vec().into()],
    )?;
    let JsonB(Value::Array(a)) = row else { return None };
    Some(Due {
        id: a.first().and_then(Value::as_i64)?,
        tenant: a.get(1).and_then(Value::as_str)?.to_string(),
        marketplace: a.get(2).and_then(Value::as_str)?.parse().ok()?,
        settings: a.get(3).cloned().unwrap_or(Value::Null),
        lease: a.get(4).and_then(Value::as_str)?.to_string(),
    })
}

/// Settles due connections that need no call: every one while the base URL is unset or
/// invalid (`skipped` / `failed` rows), else those whose marketplace is configured in its
/// console (`manual` rows with the address to enter). Returns how many it settled.
fn settle_without_calls(base: &Result<Option<String>, String>) -> i64 {
    let (state, error, address_base) = match base {
        Ok(None) => ("skipped", Some("integ.webhook_base_url is not set".to_string()), None),
        Err(e) => ("failed", Some(e.clone()), None),
        Ok(Some(b)) => ("manual", None, Some(b.clone())),
    };
    let topics: serde_json::Map<String, Value> = Marketplace::ALL
        .into_iter()
        .map(|m| {
            let api = marketplaces::connector(m).map(|c| c.webhook_topics()).unwrap_or(&[]);
            let names = if api.is_empty() { console_topics(m) } else { api };
            (m.as_str().to_string(), json!(names))
        })
        .collect();
    first::<i64>(
        "WITH due AS (
            SELECT c.id, c.marketplace FROM integ.connections c
             WHERE c.subscriptions_due_at <= now() AND c.status = 'active'
               AND ($3::text IS NULL OR c.marketplace NOT IN ('shopify', 'tiktok'))
             ORDER BY c.subscriptions_due_at, c.id LIMIT $5 FOR UPDATE SKIP LOCKED),
          wanted AS (
            SELECT d.id, t.topic, $3 || '/webhooks/' || d.marketplace AS address
              FROM due d, jsonb_array_elements_text($4 -> d.marketplace) t(topic)),
          gone AS (
            DELETE FROM integ.webhook_subscriptions s USING due d
             WHERE s.connection_id = d.id AND NOT EXISTS (SELECT 1 FROM wanted w WHERE w.id = d.id AND w.topic = s.topic)),
          kept AS (
            INSERT INTO integ.webhook_subscriptions AS s (connection_id, topic, address, state, remote_id, checked_at, error)
            SELECT w.id, w.topic, w.address, $1, NULL, now(), $2 FROM wanted w
            ON CONFLICT (connection_id, topic) DO UPDATE
               SET address = EXCLUDED.address, state = EXCLUDED.state, remote_id = NULL, checked_at = now(),
                   error = EXCLUDED.error),
          settled AS (
            UPDATE integ.connections c SET subscriptions_due_at = NULL FROM due d WHERE c.id = d.id RETURNING 1)
         SELECT count(*) FROM settled",
        &[
            state.into(),
            error.into(),
            address_base.into(),
            JsonB(Value::Object(topics)).into(),
            SETTLE_BATCH.into(),
        ],
    )
    .unwrap_or(0)
}

/// Gives a lease back: due again after `wait`.
fn release(due: &Due, wait: Duration) {
    let r = worker_transaction(|| {
        Spi::run_with_args(
            "UPDATE integ.connections SET subscriptions_due_at = now() + make_interval(secs => $3)
              WHERE id = $1 AND subscriptions_due_at::text = $2",
            &[due.id.into(), due.lease.as_str().into(), wait.as_secs_f64().into()],
        )
        .or_raise("releasing a subscription check")
    });
    if let Err(e) = r {
        warning!("integration: {e}");
    }
}

/// Every connection whose rows name another address than the base URL gives falls due.
fn due_where_address_differs(base: Option<String>) {
    Spi::run_with_args(
        "UPDATE integ.connections c SET subscriptions_due_at = now()
          WHERE c.subscriptions_due_at IS NULL
            AND EXISTS (SELECT 1 FROM integ.webhook_subscriptions s
                         WHERE s.connection_id = c.id AND s.address IS DISTINCT FROM $1 || '/webhooks/' || c.marketplace)",
        &[base.into()],
    )
    .or_raise("marking subscriptions for a new base URL");
}

/// Stores the rows of a check, logs it, raises an alert
/// when a subscription was refused, and sets when the connection falls due again.
fn store(due: &Due, address: &str, rows: &[Row], ended: &Ended, calls: i32, started: Instant) {
    if !rows.is_empty() {
        let rows_json: Vec<Value> = rows
            .iter()
            .map(|r| json!({"topic": r.topic, "state": r.state, "remote_id": r.remote_id, "error": r.error}))
            .collect();
        Spi::run_with_args(
            "WITH r AS (SELECT * FROM jsonb_to_recordset($2) AS x(topic text, state text, remote_id text, error text)),
                  gone AS (DELETE FROM integ.webhook_subscriptions s
                            WHERE s.connection_id = $1 AND s.topic NOT IN (SELECT topic FROM r))
             INSERT INTO integ.webhook_subscriptions AS s (connection_id, topic, address, state, remote_id, checked_at, error)
             SELECT $1, r.topic, $3, r.state, r.remote_id, now(), r.error FROM r
             ON CONFLICT (connection_id, topic) DO UPDATE
                SET address = EXCLUDED.address, state = EXCLUDED.state, checked_at = now(), error = EXCLUDED.error,
                    remote_id = coalesce(EXCLUDED.remote_id, CASE WHEN EXCLUDED.state = 'failed' THEN s.remote_id END)",
            &[due.id.into(), JsonB(Value::Array(rows_json)).into(), address.into()],
        )
        .or_raise("storing webhook subscriptions");
    }
    if calls > 0 || ended.outcome != "success" {
        Spi::run_with_args(
            "INSERT INTO integ.sync_log (tenant_id, marketplace, connection_id, operation, outcome, latency_ms, calls, error)
             VALUES ($1, $2, $3, 'subscribe', $4, $5, $6, $7)",
            &[
                due.tenant.as_str().into(),
                due.marketplace.as_str().into(),
                due.id.into(),
                ended.outcome.into(),
                (started.elapsed().as_secs_f64() * 1000.0).into(),
                calls.into(),
                ended.error.clone().into(),
            ],
        )
        .or_raise("logging a subscription check");
    }
    if ended.outcome == "failed" {
        let open = first::<i64>(
            "SELECT id FROM integ.alerts WHERE connection_id = $1 AND kind = 'webhook_subscription'
                AND acknowledged_at IS NULL AND resolved_at IS NULL LIMIT 1",
            &[due.id.into()],
        );
        if open.is_none() {
            let message = format!(
                "webhook subscriptions could not be made: {}",
                ended.error.as_deref().unwrap_or("unknown error")
            );
            crate::alerts::raise(&crate::alerts::Alert {
                tenant_id: &due.tenant,
                marketplace: due.marketplace.as_str(),
                connection_id: Some(due.id),
                kind: "webhook_subscription",
                message: &message,
            });
        }
    }
    Spi::run_with_args(
        "UPDATE integ.connections
            SET subscriptions_due_at = CASE WHEN $3::float8 IS NULL THEN NULL ELSE now() + make_interval(secs => $3) END
          WHERE id = $1 AND subscriptions_due_at::text = $2",
        &[
            due.id.into(),
            due.lease.as_str().into(),
            ended.again.map(|d| d.as_secs_f64()).into(),
        ],
    )
    .or_raise("scheduling the next subscription check");
}
