//! Reconciliation: read each mapped listing's stock from the marketplace, compare it with what
//! EGDC's stock publishes there, and repair drift through the connection's conflict strategy
//! (`inbound::drift`). MercadoLibre's missed notifications are fetched and received again, so
//! events lost while we were down are applied. Run by `integ.reconcile` (a backend) and by the
//! first worker every `integ.reconcile_interval`, page by page within the rate limit.

use crate::inbound::drift::{self, Resolution};
use crate::inbound::price_drift::{self, Resolution as PriceResolution};
use crate::marketplaces::{Marketplace, PushRequest, RemoteRead};
use crate::push::{self, ListingRef};
use crate::shmem::limiter;
use crate::spi_util::{first, worker_transaction, OrRaise};
use crate::tokens::{self, TokenStatus};
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};

/// Where reconciliation runs: a backend (inside the caller's transaction) or a worker (each
/// step in its own transaction).
pub trait Side {
    fn db<R>(&self, f: impl FnOnce() -> R) -> Result<R, String>;
    fn token(&self, connection_id: i64) -> TokenStatus;
    fn agent(&self) -> &ureq::Agent;
}

pub struct InBackend<'a> {
    pub agent: &'a ureq::Agent,
    pub token_wait_ms: u64,
}

impl Side for InBackend<'_> {
    fn db<R>(&self, f: impl FnOnce() -> R) -> Result<R, String> {
        Ok(f())
    }
    fn token(&self, connection_id: i64) -> TokenStatus {
        tokens::backend_token(connection_id, None, self.token_wait_ms)
    }
    fn agent(&self) -> &ureq::Agent {
        self.agent
    }
}

pub struct InWorker<'a>(pub &'a ureq::Agent);

impl Side for InWorker<'_> {
    fn db<R>(&self, f: impl FnOnce() -> R) -> Result<R, String> {
        worker_transaction(f)
    }
    fn token(&self, connection_id: i64) -> TokenStatus {
        tokens::worker_token(self.0, connection_id, None)
    }
    fn agent(&self) -> &ureq::Agent {
        self.0
    }
}

#[derive(Debug, Default, Clone)]
pub struct Report {
    pub checked: i64,
    pub in_sync: i64,
    pub repaired: i64,
    pub conflicts: i64,
    /// EGDC's newer value is already on its way, or there is nothing to compare with.
    pub skipped: i64,
    pub errors: i64,
    pub missed_notifications: i64,
    /// Listings whose price was read, found as published, written again or adopted, or left
    /// for review.
    pub prices_checked: i64,
    pub prices_in_sync: i64,
    pub prices_repaired: i64,
    pub price_conflicts: i64,
    /// Requests made to read the marketplace (usage counts them).
    pub calls: i64,
    pub error_samples: Vec<String>,
}

impl Report {
    pub fn error(&mut self, n: i64, e: &str) {
        self.errors += n;
        if self.error_samples.len() < 5 {
            self.error_samples.push(crate::marketplaces::http::truncate(e, 300));
        }
    }

    pub fn add(&mut self, o: &Report) {
        self.checked += o.checked;
        self.in_sync += o.in_sync;
        self.repaired += o.repaired;
        self.conflicts += o.conflicts;
        self.skipped += o.skipped;
        self.errors += o.errors;
        self.missed_notifications += o.missed_notifications;
        self.prices_checked += o.prices_checked;
        self.prices_in_sync += o.prices_in_sync;
        self.prices_repaired += o.prices_repaired;
        self.price_conflicts += o.price_conflicts;
        self.calls += o.calls;
        for e in &o.error_samples {
            if self.error_samples.len() < 5 {
                self.error_samples.push(e.clone());
            }
        }
    }

    pub fn to_json(&self) -> Value {
        json!({"checked": self.checked, "in_sync": self.in_sync, "repaired": self.repaired,
               "conflicts": self.conflicts, "skipped": self.skipped, "errors": self.errors,
               "missed_notifications": self.missed_notifications, "prices_checked": self.prices_checked,
               "prices_in_sync": self.prices_in_sync, "prices_repaired": self.prices_repaired,
               "price_conflicts": self.price_conflicts, "calls": self.calls,
               "error_samples": self.error_samples})
    }
}

struct Conn {
    marketplace: String,
    status: String,
    settings: Value,
}

/// (listing id, external id, listing settings, whether its price is tracked)
type Page = Vec<(i64, String, Value, bool)>;

/// A listing's read request and its connector, or why there is none.
type Prepared = Result<(&'static dyn crate::marketplaces::Connector, PushRequest), String>;

fn connection(connection_id: i64) -> Option<Conn> {
    let c = first::<JsonB>(
        "SELECT jsonb_build_array(c.marketplace, c.status, c.settings) FROM integ.connections c WHERE c.id = $1",
        &[connection_id.into()],
    )?;
    let a = c.0.as_array()?;
    Some(Conn {
        marketplace: a.first()?.as_str()?.to_string(),
        status: a.get(1)?.as_str()?.to_string(),
        settings: a.get(2).cloned().unwrap_or(Value::Null),
    })
}

fn load(connection_id: i64, after: i64, limit: i64) -> Option<(Conn, Page)> {
    let conn = connection(connection_id)?;
    let page = Spi::connect(|c| {
        let rows = c.select(
            "SELECT l.id, l.external_id, l.settings, (to_jsonb(l)->>'desired_price_lsn') IS NOT NULL FROM integ.listings l
              WHERE l.connection_id = $1 AND l.id > $2 ORDER BY l.id LIMIT $3",
            None,
            &[connection_id.into(), after.into(), limit.into()],
        )?;
        rows.map(|r| {
            Ok((
                r.get::<i64>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<JsonB>(3)?.map(|j| j.0).unwrap_or(Value::Null),
                r.get::<bool>(4)?.unwrap_or(false),
            ))
        })
        .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
    })
    .or_raise("reading listings to reconcile");
    Some((conn, page))
}

/// How a page takes its requests from the connection's rate limit.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    /// Waiting at most this many ns at a time (`integ.reconcile`: the caller asked for it).
    Wait(i64),
    /// Only what pushes leave, never waiting (the worker's schedule); the circuit's cooldown.
    Spare { cooldown_ns: i64 },
}

/// One page of a connection: up to `limit` listings after listing id `after`, within `budget`.
/// Returns the report and the last listing id handled when the page stopped early or more
/// listings may follow (None: the connection is done).
pub fn page<S: Side>(side: &S, connection_id: i64, after: i64, limit: i64, budget: Budget) -> (Report, Option<i64>) {
    let mut report = Report::default();
    let (conn, listings) = match side.db(|| load(connection_id, after, limit)) {
        Ok(Some(x)) => x,
        Ok(None) => return (report, None),
        Err(e) => {
            report.error(1, &e);
            return (report, None);
        }
    };
    if listings.is_empty() {
        return (report, None);
    }
    if conn.status != "active" {
        report.error(listings.len() as i64, &format!("the connection is {}", conn.status));
        return (report, None);
    }
    let (token, creds) = match side.token(connection_id).ready_or_error() {
        Ok(t) => t,
        Err(e) => {
            report.error(listings.len() as i64, &e);
            return (report, None);
        }
    };
    let quota = push::quota_for(&conn.marketplace, &conn.settings);
    let mut read: Vec<(i64, Result<RemoteRead, String>)> = Vec::new();
    let mut stopped_at = None;
    // each listing's request (or why there is none), then reads in the connector's batches
    let prepared: Vec<(i64, Prepared)> = listings
        .iter()
        .map(|(id, external_id, settings, price_tracked)| {
            let l = ListingRef {
                marketplace: &conn.marketplace,
                connection_settings: &conn.settings,
                external_id,
                listing_settings: settings,
                last_known: None,
            };
            let prepared = push::prepare(&l, 0, token.clone(), creds.clone(), String::new()).map(|(c, mut req)| {
                req.read_price = *price_tracked && c.reads_prices();
                (c, req)
            });
            (*id, prepared)
        })
        .collect();
    let batch = prepared
        .iter()
        .find_map(|(_, p)| p.as_ref().ok().map(|(c, _)| c.max_read_batch()))
        .unwrap_or(1)
        .max(1);
    'chunks: for chunk in prepared.chunks(batch) {
        let mut ids = Vec::new();
        let mut reqs = Vec::new();
        let mut connector = None;
        for (id, p) in chunk {
            match p {
                Ok((c, req)) => {
                    connector = Some(*c);
                    ids.push(*id);
                    reqs.push(req.clone());
                }
                Err(e) => read.push((*id, Err(e.clone()))),
            }
        }
        let Some(connector) = connector else { continue };
        for _ in 0..connector.read_calls(&reqs) {
            if !take_budget(connection_id, quota, budget) {
                stopped_at = Some(chunk.first().map_or(after, |c| c.0) - 1);
                break 'chunks;
            }
        }
        report.calls += connector.read_calls(&reqs) as i64;
        let results = connector.read_listings(side.agent(), &reqs);
        read.extend(ids.into_iter().zip(results));
    }
    let applied = side.db(|| {
        let mut r = Report::default();
        let ids: Vec<i64> = read.iter().map(|(id, _)| *id).collect();
        refresh_from_tables(&ids);
        for (id, result) in &read {
            r.checked += 1;
            let read = match result {
                Ok(read) => read,
                Err(e) => {
                    r.error(1, e);
                    continue;
                }
            };
            if let Some(price) = read.price {
                r.prices_checked += 1;
                match price_drift::resolve(*id, price) {
                    PriceResolution::InSync => r.prices_in_sync += 1,
                    PriceResolution::Pushed | PriceResolution::Took(_) => r.prices_repaired += 1,
                    PriceResolution::Conflict(_) => r.price_conflicts += 1,
                    PriceResolution::Ignored(_) => {}
                }
            }
            let Some(q) = read.stock else {
                r.skipped += 1;
                continue;
            };
            let Some(l) = drift::by_id(*id) else { continue };
            match drift::resolve(&l, q, None, "reconcile") {
                Resolution::InSync => r.in_sync += 1,
                Resolution::Pushed | Resolution::Took(_) => r.repaired += 1,
                Resolution::Conflict(_) => r.conflicts += 1,
                Resolution::Ignored(_) => r.skipped += 1,
            }
        }
        r
    });
    match applied {
        Ok(r) => report.add(&r),
        Err(e) => report.error(read.len() as i64, &e),
    }
    let next = stopped_at.or_else(|| (listings.len() as i64 >= limit).then(|| listings.last().map_or(after, |l| l.0)));
    (report, next)
}

/// Brings listings whose EGDC stock (`desired_stock`) differs from what the tracked tables hold
/// now back to the tables' value, with a job: a change the capture lost, or a listing written
/// by hand, is repaired like any drift. The listing's position (`desired_lsn`) stays, so a
/// captured change newer than this read still wins over it.
fn refresh_from_tables(listing_ids: &[i64]) {
    // (tenant, product, the table's stock, what the product's listings hold): only products
    // whose listings differ are written
    let products: Vec<(String, String, String, Vec<Option<i32>>)> = Spi::connect(|c| {
        c.select(
            "SELECT p.tenant_id, p.product_id, s.stock::text, p.desired
               FROM (SELECT tenant_id, product_id, array_agg(desired_stock) desired FROM integ.listings
                      WHERE id = ANY($1) GROUP BY tenant_id, product_id) p,
                    LATERAL integ.tracked_stock(p.tenant_id, p.product_id) s(stock)
              WHERE s.stock IS NOT NULL",
            None,
            &[listing_ids.to_vec().into()],
        )?
        .map(|r| {
            Ok((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<String>(3)?.unwrap_or_default(),
                r.get::<Vec<Option<i32>>>(4)?.unwrap_or_default(),
            ))
        })
        .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
    })
    .or_raise("reading EGDC's stock to reconcile");
    let mut jobs = 0;
    for (tenant, product, stock, desired) in products {
        let stock = crate::capture::normalize_stock(Some(&stock));
        if desired.iter().all(|d| *d == Some(stock)) {
            continue;
        }
        jobs += first::<i64>(
            "WITH l AS (
                UPDATE integ.listings SET desired_stock = $3, desired_at = clock_timestamp()
                 WHERE tenant_id = $1 AND product_id = $2 AND desired_stock IS DISTINCT FROM $3
             RETURNING id, connection_id, tenant_id, marketplace),
                  j AS (
                INSERT INTO integ.sync_jobs (listing_id, connection_id, tenant_id, marketplace)
                SELECT id, connection_id, tenant_id, marketplace FROM l
                ON CONFLICT (listing_id) WHERE state = 'pending' DO NOTHING
             RETURNING 1)
             SELECT count(*) FROM j",
            &[tenant.as_str().into(), product.as_str().into(), stock.into()],
        )
        .unwrap_or(0);
    }
    if jobs > 0 {
        crate::shmem::wake_workers_at_commit();
    }
}

/// Takes one request from the connection's limiter within `budget`.
fn take_budget(connection_id: i64, quota: crate::limits::Quota, budget: Budget) -> bool {
    let max_wait_ns = match budget {
        Budget::Wait(ns) => ns,
        Budget::Spare { cooldown_ns } => return limiter::acquire_spare(connection_id, quota, cooldown_ns).is_ok(),
    };
    loop {
        match limiter::acquire(connection_id, quota) {
            Ok(()) => return true,
            Err(wait) if wait <= max_wait_ns => {
                unsafe { pg_sys::pg_usleep((wait / 1_000).max(1)) };
                pgrx::check_for_interrupts!();
            }
            Err(_) => return false,
        }
    }
}

/// MercadoLibre keeps the notifications it could not deliver: receive them again (duplicates
/// of what did arrive are recognised); the workers apply the rest. Returns how many were new.
pub fn missed_notifications<S: Side>(side: &S, connection_id: i64, report: &mut Report) {
    let conn = match side.db(|| connection(connection_id)) {
        Ok(Some(c)) => c,
        _ => return,
    };
    if conn.marketplace != Marketplace::MercadoLibre.as_str() || conn.status != "active" {
        return;
    }
    let (token, creds) = match side.token(connection_id).ready_or_error() {
        Ok(t) => t,
        Err(e) => {
            report.error(1, &format!("missed notifications: {e}"));
            return;
        }
    };
    let l = ListingRef {
        marketplace: &conn.marketplace,
        connection_settings: &conn.settings,
        external_id: "",
        listing_settings: &Value::Null,
        last_known: None,
    };
    let messages = match push::prepare(&l, 0, token, creds, String::new()).and_then(|(connector, req)| {
        report.calls += 1;
        connector.missed_notifications(side.agent(), &req)
    }) {
        Ok(m) => m,
        Err(e) => {
            report.error(1, &format!("missed notifications: {e}"));
            return;
        }
    };
    let received = side.db(|| {
        let mut new = 0;
        for m in &messages {
            let answer = first::<JsonB>(
                "SELECT integ.receive_webhook('mercadolibre', '{}'::jsonb, convert_to($1, 'UTF8'))",
                &[m.to_string().into()],
            );
            if answer.is_some_and(|a| a.0.get("status").and_then(Value::as_str) == Some("accepted")) {
                new += 1;
            }
        }
        new
    });
    match received {
        Ok(n) => report.missed_notifications += n,
        Err(e) => report.error(1, &e),
    }
}

/// Records a reconciliation run of a connection in the sync log.
pub fn log(connection_id: i64, report: &Report) {
    Spi::run_with_args(
        "INSERT INTO integ.sync_log (tenant_id, marketplace, connection_id, operation, outcome, error, calls)
         SELECT c.tenant_id, c.marketplace, c.id, 'reconcile', CASE WHEN $2 > 0 THEN 'failed' ELSE 'success' END, $3, $4
           FROM integ.connections c WHERE c.id = $1",
        &[
            connection_id.into(),
            report.errors.into(),
            report.to_json().to_string().into(),
            (report.calls.min(i64::from(i32::MAX)) as i32).into(),
        ],
    )
    .or_raise("logging a reconciliation");
    // every reconciliation checks the webhook subscriptions too (the first worker does it)
    Spi::run_with_args(
        "UPDATE integ.connections SET subscriptions_due_at = now()
          WHERE id = $1 AND (subscriptions_due_at IS NULL OR subscriptions_due_at > now())",
        &[connection_id.into()],
    )
    .or_raise("marking the webhook subscriptions for a check");
}
