//! Prices in the outbox. A job brings its listing to EGDC's stock and price: at claim time the
//! worker works out what the channel must show (EGDC's price through the channel's price rules)
//! and whether that differs from what was last published; here it is recorded.

use super::{outcome_word, Attempt, ClaimedJob, Outcome, Target};
use crate::price_rules;
use crate::spi_util::{run_kept, OrRaise};
use pgrx::prelude::*;
use rust_decimal::Decimal;
use std::str::FromStr;

/// A listing's price state, as claimed.
#[derive(Clone, Debug, PartialEq)]
pub struct ListingPrice {
    /// Where EGDC's price dates from (`listings.desired_price_lsn`).
    pub lsn: i64,
    /// EGDC's price (None: the column is NULL).
    pub egdc: Option<Decimal>,
    pub currency: Option<String>,
    pub last_pushed: Option<Decimal>,
    /// The `lsn` whose price the rules refused already (dead-lettered once).
    pub refused_lsn: Option<i64>,
    /// EGDC's price when it is no finite number (`NaN`, `Infinity`): never published.
    pub not_a_number: Option<String>,
}

impl ListingPrice {
    /// From the listing's columns; None when no tracked price table has the product.
    pub fn read(
        lsn: Option<i64>,
        egdc: Option<String>,
        currency: Option<String>,
        last_pushed: Option<String>,
        refused_lsn: Option<i64>,
    ) -> Option<ListingPrice> {
        let decimal = |t: Option<String>| t.and_then(|t| Decimal::from_str(&t).ok());
        let not_a_number = egdc.clone().filter(|t| Decimal::from_str(t).is_err());
        Some(ListingPrice {
            lsn: lsn?,
            not_a_number,
            egdc: decimal(egdc),
            currency,
            last_pushed: decimal(last_pushed),
            refused_lsn,
        })
    }
}

/// What a job must do about its listing's price.
#[derive(Clone, Debug, PartialEq)]
pub enum Need {
    /// Nothing: not tracked, already published, or refused before.
    Nothing,
    Write {
        amount: Decimal,
        egdc: Decimal,
        lsn: i64,
        /// The channel's currency (`price_rules.currency`), else EGDC's.
        currency: Option<String>,
    },
    /// The channel's rules do not publish this price (NULL, negative, another currency).
    Refused { reason: String, lsn: i64 },
}

pub fn need(job: &ClaimedJob) -> Need {
    let Some(p) = &job.price else {
        return Need::Nothing;
    };
    if let Some(text) = &p.not_a_number {
        let shown: String = text.chars().take(32).collect();
        return refused(
            p,
            format!("EGDC's price {shown} is not a finite number: nothing is published"),
        );
    }
    let rules = match price_rules::effective(&job.connection_settings, &job.listing_settings) {
        Ok(r) => r,
        Err(e) => return refused(p, e),
    };
    match rules.apply(p.egdc, p.currency.as_deref()) {
        Ok(amount) if p.last_pushed == Some(amount) => Need::Nothing,
        Ok(amount) => Need::Write {
            amount,
            egdc: p.egdc.unwrap_or_default(),
            lsn: p.lsn,
            currency: rules.currency.clone().or_else(|| p.currency.clone()),
        },
        Err(why) => refused(p, why.to_string()),
    }
}

fn refused(p: &ListingPrice, reason: String) -> Need {
    if p.refused_lsn == Some(p.lsn) {
        Need::Nothing
    } else {
        Need::Refused { reason, lsn: p.lsn }
    }
}

/// The listing remembers that the rules refused its price from `lsn`, so that the same price is
/// not dead-lettered again at every stock change.
pub fn remember_refusal(listing_id: i64, lsn: i64) {
    Spi::run_with_args(
        "UPDATE integ.listings SET price_refused_lsn = $2 WHERE id = $1",
        &[listing_id.into(), lsn.into()],
    )
    .or_raise("recording a refused price");
}

/// The rules refused the price of a job that still writes the stock: one dead-letter row in the
/// sync log for the price; the job goes on.
pub fn record_refusal(t: &Target, reason: &str, lsn: i64) {
    remember_refusal(t.listing_id, lsn);
    super::log(t, "price", "dead", None, None, &Attempt::default(), Some(reason));
}

/// Listings whose stock was just written and whose price is still to go (the marketplace takes
/// them in separate calls): each gets a job for its price. True when any was made.
pub fn follow(listing_ids: &[i64]) -> bool {
    if listing_ids.is_empty() {
        return false;
    }
    Spi::get_one_with_args::<i64>(
        "WITH j AS (
            INSERT INTO integ.sync_jobs (listing_id, connection_id, tenant_id, marketplace, price_only)
            SELECT id, connection_id, tenant_id, marketplace, true FROM integ.listings WHERE id = ANY ($1)
            ON CONFLICT (listing_id) WHERE state = 'pending' DO NOTHING
         RETURNING 1)
         SELECT count(*) FROM j",
        &[listing_ids.to_vec().into()],
    )
    .or_raise("queueing price writes")
    .unwrap_or(0)
        > 0
}

/// A price write that went out (with the stock, when `stock` is Some).
pub struct Written<'a> {
    pub target: Target<'a>,
    pub amount: Decimal,
    pub stock: Option<i32>,
    /// The `desired_price_lsn` the amount came from.
    pub lsn: i64,
}

/// Records a price write's outcome; returns true when new work was enqueued. A write that
/// succeeded updates the listing (and its stock, when it went too) and finishes the job; the
/// listing gets a new job when EGDC's price or stock moved on meanwhile. Any other outcome is
/// the outbox's usual one (retry, dead letter), logged as a price operation.
pub fn record(w: &Written, o: &Outcome, a: &Attempt) -> bool {
    let Outcome::Pushed { remote, .. } = o else {
        return super::record(&w.target, o, a);
    };
    record_written(&[(w, *remote, a)])
}

/// Successful price writes, set-based (one statement for a whole batch): each listing's
/// published price (and stock, when it went too), its job done, a new job where EGDC's price or
/// stock moved on meanwhile, one sync-log row each. `remote`: the stock the marketplace reports.
pub fn record_written(batch: &[(&Written, Option<i32>, &Attempt)]) -> bool {
    if batch.is_empty() {
        return false;
    }
    let jobs: Vec<Option<i64>> = batch.iter().map(|(w, ..)| w.target.job_id).collect();
    let listings: Vec<i64> = batch.iter().map(|(w, ..)| w.target.listing_id).collect();
    let amounts: Vec<String> = batch.iter().map(|(w, ..)| w.amount.to_string()).collect();
    let stocks: Vec<Option<i32>> = batch.iter().map(|(w, ..)| w.stock).collect();
    let remotes: Vec<Option<i32>> = batch.iter().map(|(_, r, _)| *r).collect();
    let lsns: Vec<i64> = batch.iter().map(|(w, ..)| w.lsn).collect();
    let statuses: Vec<Option<i32>> = batch.iter().map(|(.., a)| a.http_status).collect();
    let latencies: Vec<Option<f64>> = batch.iter().map(|(.., a)| a.latency_ms).collect();
    let attempts: Vec<Option<i32>> = batch.iter().map(|(w, ..)| w.target.attempt).collect();
    let calls: Vec<i32> = batch.iter().map(|(.., a)| a.calls).collect();
    let egdc: Vec<Option<i32>> = batch.iter().map(|(w, ..)| w.target.egdc_stock).collect();
    let egdc_prices: Vec<Option<String>> = batch
        .iter()
        .map(|(w, ..)| w.target.price.as_ref().and_then(|p| p.egdc).map(|d| d.to_string()))
        .collect();
    let outcomes: Vec<String> = batch
        .iter()
        .map(|(w, r, _)| match w.stock {
            Some(stock) => outcome_word(&Outcome::Pushed { stock, remote: *r }).to_string(),
            None => "success".to_string(),
        })
        .collect();
    let errors: Vec<Option<String>> = batch
        .iter()
        .map(|(w, r, _)| match (w.stock, r) {
            (Some(s), Some(r)) if *r != s => Some(format!("mismatch: sent {s}, marketplace reports {r}")),
            _ => None,
        })
        .collect();
    run_kept(
        "WITH r AS (
            SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[]::numeric[], $4::int[], $5::int[], $6::bigint[],
                                 $7::int[], $8::float8[], $9::int[], $10::int[], $11::text[]::numeric[], $12::text[],
                                 $13::text[], $14::int[])
                       AS r(job_id, listing_id, amount, stock, remote, lsn, http_status, latency_ms, attempt, egdc,
                            egdc_price, outcome, error, calls)),
         l AS (
            UPDATE integ.listings l
               SET last_pushed_price = r.amount, last_pushed_price_at = now(), remote_price = r.amount,
                   last_pushed_stock = coalesce(r.stock, l.last_pushed_stock),
                   last_pushed_at = CASE WHEN r.stock IS NULL THEN l.last_pushed_at ELSE now() END,
                   remote_stock = CASE WHEN r.stock IS NULL THEN l.remote_stock ELSE coalesce(r.remote, r.stock) END
              FROM r WHERE l.id = ANY ($2) AND l.id = r.listing_id
         RETURNING l.id, l.connection_id, l.tenant_id, l.marketplace, l.product_id, l.external_id,
                   l.desired_price_lsn IS DISTINCT FROM r.lsn AS price_moved,
                   r.stock IS NOT NULL AND l.desired_stock IS DISTINCT FROM r.egdc AS stock_moved, r.*),
         requeued AS (
            INSERT INTO integ.sync_jobs (listing_id, connection_id, tenant_id, marketplace, price_only)
            SELECT id, connection_id, tenant_id, marketplace, NOT stock_moved FROM l WHERE price_moved OR stock_moved
            ON CONFLICT (listing_id) WHERE state = 'pending' DO NOTHING
         RETURNING 1),
         done AS (
            UPDATE integ.sync_jobs s
               SET state = 'done', pushed_stock = coalesce(r.stock, s.pushed_stock), last_http_status = r.http_status,
                   last_error = NULL, lease_until = NULL, updated_at = now()
              FROM r WHERE s.id = ANY ($1) AND s.id = r.job_id
         RETURNING 1),
         logged AS (
            INSERT INTO integ.sync_log (tenant_id, marketplace, connection_id, listing_id, job_id, product_id,
                                        external_id, operation, outcome, stock, remote_stock, http_status,
                                        latency_ms, attempt, error, egdc_stock, price, egdc_price, calls)
            SELECT tenant_id, marketplace, connection_id, id, job_id, product_id, external_id, 'price', outcome,
                   stock, remote, http_status, latency_ms, attempt, error, egdc, amount, egdc_price, calls
              FROM l
         RETURNING 1),
         noted AS (
            -- at most once a second per connection, as record_pushed: workers recording into the
            -- same connection rows at every batch wait on each other's row locks
            UPDATE integ.connections c SET last_success_at = now()
             WHERE c.id = ANY (ARRAY(SELECT DISTINCT connection_id FROM l))
               AND (c.last_success_at IS NULL OR c.last_success_at < now() - interval '1 second')
         RETURNING 1)
         SELECT (SELECT count(*) FROM requeued), (SELECT count(*) FROM done), (SELECT count(*) FROM logged),
                (SELECT count(*) FROM noted)",
        &[
            jobs.into(),
            listings.into(),
            amounts.into(),
            stocks.into(),
            remotes.into(),
            lsns.into(),
            statuses.into(),
            latencies.into(),
            attempts.into(),
            egdc.into(),
            egdc_prices.into(),
            outcomes.into(),
            errors.into(),
            calls.into(),
        ],
        |t| t.first().get::<i64>(1),
    )
    .or_raise("recording price writes")
    .unwrap_or(0)
        > 0
}
