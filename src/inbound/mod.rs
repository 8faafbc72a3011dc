//! Applying accepted webhooks, in the workers. Each delivery is read (`marketplaces::events`);
//! a pointer (MercadoLibre, TikTok Shop) is followed with the connection's token, over HTTP,
//! outside any transaction and within the connection's rate limit; then the order or stock edit
//! is applied in one transaction with the delivery marked done. A failure is retried with
//! backoff and dead after `integ.max_attempts`; a delivery nobody can understand is dead at once.

pub mod drift;
pub mod orders;
pub mod price_drift;
mod privacy;
pub mod reduce;

/// Moves EGDC's stock of a product by `delta` in the tracked table that has it (its trigger
/// then sends the new stock to every channel); false when no tracked table has the product.
pub fn adjust_egdc_stock(tenant: &str, product: &str, delta: i64) -> bool {
    first::<bool>(
        "SELECT integ.adjust_stock($1, $2, $3::numeric)",
        &[tenant.into(), product.into(), delta.into()],
    )
    .unwrap_or(false)
}

use crate::credentials;
use crate::marketplaces::events::{self, Event};
use crate::marketplaces::{Credentials, Marketplace};
use crate::push::{self, ListingRef};
use crate::shmem::limiter;
use crate::spi_util::{first, worker_transaction, OrRaise};
use crate::tokens::{self, TokenStatus};
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::Value;

/// One accepted delivery to apply.
struct Delivery {
    id: i64,
    marketplace: Marketplace,
    connection_id: i64,
    topic: Option<String>,
    body: Vec<u8>,
    attempts: i32,
}

enum Failure {
    /// The delivery itself is bad: dead now.
    Permanent(String),
    /// Try again after the usual backoff.
    Retry(String),
    /// Wait this long (rate limit, token refresh), costing no attempt.
    Wait(i64, String),
}

/// Applies up to `limit` due deliveries; returns how many were applied.
pub fn apply_pending(agent: &ureq::Agent, limit: i64, max_attempts: i32) -> Result<usize, String> {
    let due = worker_transaction(|| due_deliveries(limit))?;
    let mut applied = 0;
    for d in due {
        match process(agent, &d) {
            Ok(true) => applied += 1,
            Ok(false) => {}
            Err((f, calls)) => worker_transaction(|| record_failure(&d, f, calls, max_attempts))?,
        }
    }
    Ok(applied)
}

fn due_deliveries(limit: i64) -> Vec<Delivery> {
    Spi::connect_mut(|c| {
        // a lease: another worker skips these until they are applied, failed, or (if this
        // worker dies) the lease runs out
        let rows = c.update(
            "UPDATE integ.webhooks w SET next_attempt_at = now() + interval '30 seconds'
              WHERE w.id IN (SELECT d.id FROM integ.webhooks d
                              WHERE d.state IN ('pending', 'failed') AND d.status = 'accepted'
                                AND d.next_attempt_at <= now() AND d.connection_id IS NOT NULL
                              ORDER BY d.next_attempt_at, d.id LIMIT $1 FOR UPDATE SKIP LOCKED)
          RETURNING w.id, w.marketplace, w.connection_id, w.topic, w.body, w.attempts",
            None,
            &[limit.into()],
        )?;
        let mut out = Vec::new();
        for r in rows {
            let Some(marketplace) = r.get::<String>(2)?.and_then(|m| m.parse().ok()) else {
                continue;
            };
            out.push(Delivery {
                id: r.get(1)?.unwrap_or_default(),
                marketplace,
                connection_id: r.get(3)?.unwrap_or_default(),
                topic: r.get(4)?,
                body: r.get::<Vec<u8>>(5)?.unwrap_or_default(),
                attempts: r.get(6)?.unwrap_or(0),
            });
        }
        out.sort_by_key(|d: &Delivery| d.id);
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .or_raise("looking for webhooks to apply")
}

/// Records a failed attempt at a delivery (`calls`: the requests it made) on the delivery and
/// in the sync log.
fn record_failure(d: &Delivery, f: Failure, calls: i32, max_attempts: i32) {
    let (error, permanent, wait_ms, burns) = match f {
        Failure::Permanent(e) => (e, true, 0, true),
        Failure::Retry(e) => {
            let backoff = 500i64.saturating_mul(1 << d.attempts.clamp(0, 10)).min(300_000);
            (e, false, backoff, true)
        }
        Failure::Wait(ns, e) => (e, false, (ns / 1_000_000).max(1), false),
    };
    Spi::run_with_args(
        "UPDATE integ.webhooks
            SET attempts = attempts + $5::int, error = $2,
                next_attempt_at = now() + make_interval(secs => $4::float8 / 1000),
                state = CASE WHEN $3 OR attempts + $5::int >= $6 THEN 'dead' ELSE 'failed' END
          WHERE id = $1 AND state IN ('pending', 'failed')",
        &[
            d.id.into(),
            crate::marketplaces::http::truncate(&error, 500).into(),
            permanent.into(),
            (wait_ms as f64).into(),
            (burns as i32).into(),
            max_attempts.into(),
        ],
    )
    .or_raise("recording a webhook failure");
    log_delivery(d.id, None, calls);
}

/// A connection's settings, tenant and credentials.
struct Connection {
    id: i64,
    tenant: String,
    settings: Value,
    creds: Credentials,
}

fn connection(id: i64) -> Result<Option<Connection>, String> {
    worker_transaction(|| {
        let row = first::<JsonB>(
            "SELECT jsonb_build_array(c.tenant_id, c.settings) FROM integ.connections c WHERE c.id = $1",
            &[id.into()],
        );
        let Some(JsonB(Value::Array(a))) = row else {
            return None;
        };
        Some(Connection {
            id,
            tenant: a.first().and_then(Value::as_str).unwrap_or("").to_string(),
            settings: a.get(1).cloned().unwrap_or(Value::Null),
            creds: credentials::load(id).map(|l| l.creds).unwrap_or_default(),
        })
    })
}

/// SHEIN notifies per app: the event names the supplier, whose connection it belongs to.
fn supplier_connection(app_connection: &Connection, supplier: &str) -> Result<Option<i64>, String> {
    let appid = app_connection.creds.identifier("appid").unwrap_or_default();
    worker_transaction(|| {
        first::<i64>(
            "SELECT k.connection_id FROM integ.credential_store k
              WHERE k.marketplace = 'shein' AND k.identifiers ->> 'appid' = $1 AND k.identifiers ->> 'supplier_id' = $2
              ORDER BY k.connection_id LIMIT 1",
            &[appid.as_str().into(), supplier.into()],
        )
    })
}

/// Applies one delivery; an error comes with the requests made before it.
fn process(agent: &ureq::Agent, d: &Delivery) -> Result<bool, (Failure, i32)> {
    let no_call = |f: Failure| (f, 0);
    let retry = Failure::Retry;
    let mut conn = connection(d.connection_id)
        .map_err(retry)
        .and_then(|c| c.ok_or_else(|| Failure::Permanent("the connection is gone".into())))
        .map_err(no_call)?;
    let mut event = events::parse(d.marketplace, d.topic.as_deref(), &d.body, &conn.creds)
        .map_err(Failure::Permanent)
        .map_err(no_call)?;
    if let Event::ForSupplier(supplier, inner) = event {
        let id = supplier_connection(&conn, &supplier)
            .map_err(Failure::Retry)
            .and_then(|c| {
                c.ok_or_else(|| Failure::Permanent(format!("no {} connection for supplier {supplier}", d.marketplace)))
            })
            .map_err(no_call)?;
        conn = connection(id)
            .map_err(Failure::Retry)
            .and_then(|c| c.ok_or_else(|| Failure::Permanent("the connection is gone".into())))
            .map_err(no_call)?;
        event = *inner;
    }
    // a pointer (an order or item id) costs one request to read what it points at
    let calls = i32::from(matches!(event, Event::FetchOrder(_) | Event::FetchStock(_)));
    let event = follow(agent, d.marketplace, &conn, event).map_err(|f| (f, calls))?;
    if let Event::Order(o) = &event {
        orders::check_quantities(o, crate::gucs::MAX_ORDER_QUANTITY.get().into())
            .map_err(|e| (Failure::Permanent(e), calls))?;
    }
    worker_transaction(|| apply(d, &conn, &event, calls)).map_err(|e| {
        // the same arithmetic fails the same way every time
        if e.contains(orders::STOCK_OUT_OF_RANGE) {
            (Failure::Permanent(e), calls)
        } else {
            (Failure::Retry(e), calls)
        }
    })
}

/// Reads what a pointer points at, with the connection's token and within its rate limit.
fn follow(agent: &ureq::Agent, m: Marketplace, conn: &Connection, event: Event) -> Result<Event, Failure> {
    let (order_id, item) = match &event {
        Event::FetchOrder(id) => (Some(id.clone()), None),
        Event::FetchStock(item) => (None, Some(item.clone())),
        _ => return Ok(event),
    };
    // the listing a stock pointer is about (its settings say how to read it)
    let listing = match &item {
        Some(item) => {
            let found = worker_transaction(|| {
                first::<JsonB>(
                    "SELECT jsonb_build_array(l.settings) FROM integ.listings l
                      WHERE l.connection_id = $1 AND l.external_id = $2 ORDER BY l.id LIMIT 1",
                    &[conn.id.into(), item.as_str().into()],
                )
            })
            .map_err(Failure::Retry)?;
            match found {
                Some(JsonB(Value::Array(a))) => Some(a.first().cloned().unwrap_or(Value::Null)),
                _ => return Ok(Event::Ignored(format!("no listing for {m} item {item}"))),
            }
        }
        None => None,
    };
    let quota = push::quota_for(m.as_str(), &conn.settings);
    if let Err(wait) = limiter::acquire(conn.id, quota) {
        return Err(Failure::Wait(wait, "waiting for the rate limit".into()));
    }
    let (token, creds) = match tokens::worker_token(agent, conn.id, None) {
        TokenStatus::Ready {
            access_token,
            credentials,
            ..
        } => (access_token, credentials),
        TokenStatus::NeedsReauthorization(e) => {
            return Err(Failure::Wait(
                60_000_000_000,
                format!("connection needs re-authorization: {e}"),
            ))
        }
        TokenStatus::Unavailable(e) => return Err(Failure::Retry(e)),
    };
    let settings = listing.clone().unwrap_or(Value::Null);
    let external = item.clone().unwrap_or_default();
    let l = ListingRef {
        marketplace: m.as_str(),
        connection_settings: &conn.settings,
        external_id: &external,
        listing_settings: &settings,
        last_known: None,
    };
    let (connector, req) = push::prepare(&l, 0, token, creds, String::new()).map_err(Failure::Permanent)?;
    if let Some(id) = order_id {
        return connector
            .read_order(agent, &req, &id)
            .map(Event::Order)
            .map_err(|e| Failure::Retry(format!("reading order {id}: {e}")));
    }
    match connector.read_stock(agent, &req) {
        Ok(Some(q)) => Ok(Event::StockEdit {
            external_id: external,
            location_id: None,
            quantity: q,
            changed_at: None,
        }),
        Ok(None) => Ok(Event::Ignored(format!("{m} does not say what item {external} holds"))),
        Err(e) => Err(Failure::Retry(format!("reading item {external}: {e}"))),
    }
}

/// Applies the event and marks the delivery done, in the caller's transaction. Ok(false): it
/// was already applied (or is being applied) by someone else.
fn apply(d: &Delivery, conn: &Connection, event: &Event, calls: i32) -> bool {
    let mine = first::<i64>(
        "SELECT w.id FROM integ.webhooks w WHERE w.id = $1 AND w.state IN ('pending', 'failed') FOR UPDATE SKIP LOCKED",
        &[d.id.into()],
    );
    if mine.is_none() {
        return false;
    }
    let note = match event {
        Event::Order(o) => {
            let target = orders::Target {
                connection_id: conn.id,
                tenant: &conn.tenant,
                marketplace: d.marketplace.as_str(),
                webhook_id: Some(d.id),
            };
            let notes = orders::apply(&target, o);
            (!notes.is_empty()).then(|| notes.join("; "))
        }
        Event::StockEdit {
            external_id,
            location_id,
            quantity,
            changed_at,
        } => match drift::find(conn.id, external_id, location_id.as_deref()) {
            Some(l) => drift::resolve(&l, *quantity, changed_at.as_deref(), "webhook").note(),
            None => Some(format!("no listing for {} {external_id}", d.marketplace)),
        },
        Event::Alert {
            kind,
            message,
            deauthorized,
        } => {
            let market = d.marketplace.as_str();
            if *deauthorized {
                crate::alerts::needs_reauthorization(conn.id, &conn.tenant, market, message);
            } else {
                crate::alerts::raise(&crate::alerts::Alert {
                    tenant_id: &conn.tenant,
                    marketplace: market,
                    connection_id: Some(conn.id),
                    kind,
                    message,
                });
            }
            Some(format!("alert: {kind}"))
        }
        Event::Privacy(r) => Some(privacy::apply(conn.id, &conn.tenant, &conn.creds, d.id, r)),
        Event::Ignored(why) => Some(why.clone()),
        Event::FetchOrder(_) | Event::FetchStock(_) | Event::ForSupplier(..) => Some("not followed".into()),
    };
    // only what processing read is kept (shop/redact has removed the connection itself)
    let reduced = reduce::reduce(d.marketplace, d.topic.as_deref(), &d.body, &conn.creds);
    Spi::run_with_args(
        "UPDATE integ.webhooks SET state = 'done', processed_at = now(), attempts = attempts + 1, error = $2,
                tenant_id = $3, body = $5, body_reduced = true,
                connection_id = (SELECT c.id FROM integ.connections c WHERE c.id = $4)
          WHERE id = $1",
        &[
            d.id.into(),
            note.into(),
            conn.tenant.as_str().into(),
            conn.id.into(),
            reduced.into(),
        ],
    )
    .or_raise("completing a webhook");
    log_delivery(d.id, Some(matches!(event, Event::Order(_))), calls);
    true
}

/// One sync-log row per attempt at a delivery: `order` for an order applied, `webhook` for any
/// other, with the time since its receipt (applied) and the requests it made; a failed attempt
/// (`order` None) is logged with the delivery's state (retry or dead) and error.
fn log_delivery(webhook_id: i64, order: Option<bool>, calls: i32) {
    Spi::run_with_args(
        "INSERT INTO integ.sync_log (tenant_id, marketplace, connection_id, operation, outcome, latency_ms, calls, error)
         SELECT w.tenant_id, w.marketplace, w.connection_id, CASE WHEN $2 THEN 'order' ELSE 'webhook' END,
                CASE w.state WHEN 'done' THEN 'success' WHEN 'dead' THEN 'dead' ELSE 'retry' END,
                CASE WHEN w.state = 'done' THEN extract(epoch FROM clock_timestamp() - w.received_at) * 1000 END,
                $3, CASE WHEN w.state = 'done' THEN NULL ELSE w.error END
           FROM integ.webhooks w
          WHERE w.id = $1 AND w.tenant_id IS NOT NULL",
        &[webhook_id.into(), order.unwrap_or(false).into(), calls.into()],
    )
    .or_raise("logging a webhook's processing");
}

/// Deletes deliveries older than the retention that need nothing more; returns how many.
pub fn purge(retention_s: i64) -> i64 {
    first::<i64>(
        "WITH d AS (
            DELETE FROM integ.webhooks WHERE id IN (
                SELECT id FROM integ.webhooks
                 WHERE received_at < now() - make_interval(secs => $1) AND state NOT IN ('pending', 'failed')
                   -- counted in usage and health first
                   AND id <= (SELECT watermark FROM integ.rollup_state WHERE source = 'webhooks')
                   AND NOT EXISTS (SELECT 1 FROM integ.rollup_gaps g WHERE g.source = 'webhooks' AND g.id = webhooks.id)
                 LIMIT 10000)
         RETURNING 1)
         SELECT count(*) FROM d",
        &[(retention_s as f64).into()],
    )
    .unwrap_or(0)
}
