//! Prices in the outbox. A job brings its listing to EGDC's stock and price: at claim time the
//! worker works out what the channel must show (EGDC's price through the channel's price rules)
//! and whether that differs from what was last published; here it is recorded.

use super::{outcome_word, Attempt, ClaimedJob, Outcome, Target};
use crate::price_rules;
use crate::spi_util::OrRaise;
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
    let job_id = w.target.job_id;
    let requeued = Spi::get_one_with_args::<i64>(
        "WITH l AS (
            UPDATE integ.listings l
               SET last_pushed_price = $2::numeric, last_pushed_price_at = now(), remote_price = $2::numeric,
                   last_pushed_stock = coalesce($3, l.last_pushed_stock),
                   last_pushed_at = CASE WHEN $3 IS NULL THEN l.last_pushed_at ELSE now() END,
                   remote_stock = CASE WHEN $3 IS NULL THEN l.remote_stock ELSE coalesce($4, $3) END
             WHERE l.id = $1
         RETURNING l.id, l.connection_id, l.tenant_id, l.marketplace,
                   l.desired_price_lsn IS DISTINCT FROM $5 AS price_moved,
                   $3 IS NOT NULL AND l.desired_stock IS DISTINCT FROM $7 AS stock_moved),
         requeued AS (
            INSERT INTO integ.sync_jobs (listing_id, connection_id, tenant_id, marketplace, price_only)
            SELECT id, connection_id, tenant_id, marketplace, NOT stock_moved FROM l WHERE price_moved OR stock_moved
            ON CONFLICT (listing_id) WHERE state = 'pending' DO NOTHING
         RETURNING 1),
         done AS (
            UPDATE integ.sync_jobs s
               SET state = 'done', pushed_stock = coalesce($3, s.pushed_stock), last_http_status = $6,
                   last_error = NULL, lease_until = NULL, updated_at = now()
             WHERE s.id = $8
         RETURNING 1)
         SELECT (SELECT count(*) FROM requeued) + 0 * (SELECT count(*) FROM done)",
        &[
            w.target.listing_id.into(),
            w.amount.to_string().into(),
            w.stock.into(),
            (*remote).into(),
            w.lsn.into(),
            a.http_status.into(),
            w.target.egdc_stock.into(),
            job_id.into(),
        ],
    )
    .or_raise("recording a price write")
    .unwrap_or(0);
    let mismatch = match (w.stock, remote) {
        (Some(s), Some(r)) if *r != s => Some(format!("mismatch: sent {s}, marketplace reports {r}")),
        _ => None,
    };
    super::log(
        &w.target,
        "price",
        outcome_word(o),
        w.stock,
        *remote,
        a,
        mismatch.as_deref(),
    );
    requeued > 0
}
