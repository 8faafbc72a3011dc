//! integ.sync_product (push now, synchronously) and the commit-time wake-up used by triggers.

use super::{check_tenant, connector_for, shown};
use crate::gucs::{self, Tuning};
use crate::marketplaces::{http, PushKind};
use crate::outbox::{self, Attempt, Outcome, Target};
use crate::shmem::limiter;
use crate::spi_util::{not_found, OrRaise};
use crate::tokens::{self, TokenStatus};
use crate::{push, shmem};
use pgrx::prelude::*;
use pgrx::{AnyNumeric, JsonB};
use serde_json::Value;
use std::sync::OnceLock;
use std::time::Duration;

/// Wakes the workers when the calling transaction commits (called by the stock trigger).
#[pg_extern(volatile, parallel_unsafe)]
fn wake_workers_at_commit() {
    shmem::wake_workers_at_commit();
}

pub(crate) struct ListingRow {
    pub(super) listing_id: i64,
    pub(super) connection_id: i64,
    pub(super) marketplace: String,
    pub(super) external_id: String,
    pub(super) settings: Value,
    pub(super) desired: Option<i32>,
    pub(super) remote: Option<i32>,
    pub(super) connection_status: String,
    pub(super) connection_settings: Value,
    /// Where EGDC's price dates from (None: no tracked price table has the product).
    pub(super) price_lsn: Option<i64>,
    pub(super) egdc_price: Option<String>,
    pub(super) price_currency: Option<String>,
    /// Held by `integ.hold` or `integ.revert`: `sync_product` pushes nothing to it.
    pub(super) held: bool,
}

impl ListingRow {
    /// The listing as `push::prepare` takes it.
    pub(super) fn listing_ref(&self) -> push::ListingRef<'_> {
        push::ListingRef {
            marketplace: &self.marketplace,
            connection_settings: &self.connection_settings,
            external_id: &self.external_id,
            listing_settings: &self.settings,
            last_known: self.remote,
        }
    }

    /// What a call made now, outside any job, is logged against.
    pub(super) fn target<'a>(&'a self, tenant_id: &'a str, product_id: &'a str) -> Target<'a> {
        Target {
            job_id: None,
            attempt: None,
            listing_id: self.listing_id,
            connection_id: self.connection_id,
            tenant_id,
            marketplace: &self.marketplace,
            product_id,
            external_id: &self.external_id,
            egdc_stock: self.desired,
            price: None,
            price_lsn: None,
        }
    }
}

/// How long a backend waits for a worker's token refresh.
pub(super) fn token_wait_ms(tuning: &Tuning) -> u64 {
    tuning.http_timeout_ms * 2 + 2_000
}

pub(super) fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| http::agent(Duration::from_millis(gucs::HTTP_TIMEOUT_MS.get().max(100) as u64), 4))
}

/// Pushes EGDC's current stock (and price, where tracked) of a product to its listings now, on
/// this backend, and returns one row per listing. Token refreshes are done by a worker (so they
/// commit on their own).
#[allow(clippy::type_complexity)] // the SQL result row, spelled out for pgrx
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn sync_product(
    tenant_id: Option<&str>,
    product_id: Option<&str>,
    marketplace: default!(Option<&str>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(marketplace, String),
        name!(external_id, String),
        name!(status, String),
        name!(stock, Option<i32>),
        name!(http_status, Option<i32>),
        name!(error, Option<String>),
        name!(price, Option<AnyNumeric>),
        name!(price_status, Option<String>),
        name!(price_error, Option<String>),
    ),
> {
    let tenant_id = crate::spi_util::required(tenant_id, "tenant_id");
    let product_id = crate::spi_util::required(product_id, "product_id");
    let listings = mapped_listings(tenant_id, product_id, marketplace);
    let tuning = Tuning::read();
    let rows: Vec<_> = listings
        .into_iter()
        .map(|l| {
            if l.held {
                let why = "the listing is held (integ.hold or integ.revert): integ.release it first";
                let (m, e) = (l.marketplace.clone(), l.external_id.clone());
                let held = || Some("held".to_string());
                return (
                    m,
                    e,
                    "held".into(),
                    l.desired,
                    None,
                    Some(why.into()),
                    None,
                    held(),
                    Some(why.into()),
                );
            }
            let (m, e, status, stock, http, error) = push_one(tenant_id, product_id, &l, &tuning);
            let (price, price_status, price_error) = super::sync_price::push_price(tenant_id, product_id, &l);
            (m, e, status, stock, http, error, price, price_status, price_error)
        })
        .collect();
    TableIterator::new(rows)
}

/// The listings of a tenant's product (on one marketplace, or all), or a clear error naming
/// what is unknown.
pub(super) fn mapped_listings(tenant_id: &str, product_id: &str, marketplace: Option<&str>) -> Vec<ListingRow> {
    check_tenant(tenant_id);
    let market = marketplace.map(|m| connector_for(m).0.as_str());
    let listings = load_listings(tenant_id, product_id, market);
    if listings.is_empty() {
        let has_tenant = Spi::get_one_with_args::<bool>(
            "SELECT EXISTS (SELECT 1 FROM integ.connections WHERE tenant_id = $1)",
            &[tenant_id.into()],
        )
        .or_raise("looking up the tenant")
        .unwrap_or(false);
        if !has_tenant {
            not_found(format!("unknown tenant \"{}\": it has no connection", shown(tenant_id)));
        }
        not_found(format!(
            "product \"{}\" of tenant \"{}\" is not mapped to any listing{}",
            shown(product_id),
            shown(tenant_id),
            market.map(|m| format!(" on {m}")).unwrap_or_default()
        ));
    }
    listings
}

fn load_listings(tenant_id: &str, product_id: &str, market: Option<&str>) -> Vec<ListingRow> {
    Spi::connect(|c| {
        let rows = c.select(
            "SELECT l.id, l.connection_id, l.marketplace, l.external_id, l.settings, l.desired_stock,
                    c.status, c.settings, l.remote_stock,
                    -- read by name: the library also answers on a 0.1.0 schema until ALTER EXTENSION UPDATE
                    (to_jsonb(l)->>'desired_price_lsn')::bigint, to_jsonb(l)->>'desired_price', to_jsonb(l)->>'price_currency',
                    (to_jsonb(l)->>'held_since') IS NOT NULL
               FROM integ.listings l JOIN integ.connections c ON c.id = l.connection_id
              WHERE l.tenant_id = $1 AND l.product_id = $2 AND ($3::text IS NULL OR l.marketplace = $3)
              ORDER BY l.marketplace",
            None,
            &[tenant_id.into(), product_id.into(), market.into()],
        )?;
        let mut out = Vec::new();
        for r in rows {
            out.push(ListingRow {
                listing_id: r.get(1)?.unwrap_or_default(),
                connection_id: r.get(2)?.unwrap_or_default(),
                marketplace: r.get(3)?.unwrap_or_default(),
                external_id: r.get(4)?.unwrap_or_default(),
                settings: r.get::<JsonB>(5)?.map(|j| j.0).unwrap_or(Value::Null),
                desired: r.get(6)?,
                connection_status: r.get(7)?.unwrap_or_default(),
                connection_settings: r.get::<JsonB>(8)?.map(|j| j.0).unwrap_or(Value::Null),
                remote: r.get(9)?,
                price_lsn: r.get(10)?,
                egdc_price: r.get(11)?,
                price_currency: r.get(12)?,
                held: r.get(13)?.unwrap_or(false),
            });
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .or_raise("reading listings")
}

type Row = (String, String, String, Option<i32>, Option<i32>, Option<String>);

fn push_one(tenant_id: &str, product_id: &str, l: &ListingRow, tuning: &Tuning) -> Row {
    let row = |status: &str, stock: Option<i32>, http: Option<i32>, err: Option<String>| {
        (
            l.marketplace.clone(),
            l.external_id.clone(),
            status.to_string(),
            stock,
            http,
            err,
        )
    };
    if l.connection_status != "active" {
        return row(
            &l.connection_status,
            l.desired,
            None,
            Some(format!("connection is {}", l.connection_status)),
        );
    }
    let Some(egdc) = l.desired else {
        return row(
            "skipped",
            None,
            None,
            Some("no EGDC stock known for this product yet".into()),
        );
    };
    // what this channel is shown: EGDC's stock through its stock rules
    let stock = crate::rules::effective(&l.connection_settings, &l.settings).apply(egdc);
    let target = l.target(tenant_id, product_id);
    // Failures before any request was sent: logged, reported, nothing else changes.
    let failed = |e: String| {
        outbox::log(
            &target,
            "push",
            "failed",
            Some(stock),
            None,
            &Attempt::default(),
            Some(&e),
        );
        row("failed", Some(stock), None, Some(e))
    };
    let wait_ms = token_wait_ms(tuning);
    let mut stale = None;
    for _ in 0..2 {
        let (token, generation, credentials) = match tokens::backend_token(l.connection_id, stale, wait_ms) {
            TokenStatus::Ready {
                access_token,
                generation,
                credentials,
            } => (access_token, generation, credentials),
            TokenStatus::NeedsReauthorization(e) | TokenStatus::Unavailable(e) => return failed(e),
        };
        let listing = l.listing_ref();
        // no job: the key is unique to this call (a retry by the caller is a new write)
        let key = format!("integ-sync-{}-{}", l.listing_id, limiter::now_ns());
        let (connector, request) = match push::prepare(&listing, stock, token, credentials, key) {
            Ok(p) => p,
            Err(e) => return failed(e),
        };
        // The same per-connection budget as the workers: a short wait is taken here, a long
        // one is reported.
        if let Err(wait_ns) = take_budget(l) {
            let e = format!("rate limit: the next request is allowed in {} ms", wait_ns / 1_000_000);
            return row("throttled", Some(stock), None, Some(e));
        }
        let result = connector.push_stock(agent(), &request);
        let attempt = Attempt {
            http_status: result.http_status.map(i32::from),
            latency_ms: Some(result.latency_ms),
            learned: None,
            calls: i32::from(result.made_a_call()),
        };
        match result.kind {
            PushKind::Unauthorized { .. } if stale.is_none() => {
                stale = Some(generation);
                continue;
            }
            PushKind::Applied { remote } => {
                let o = Outcome::Pushed {
                    stock,
                    remote: remote.map(|r| r.clamp(0, i32::MAX as i64) as i32),
                };
                outbox::record(&target, &o, &attempt);
                let word = outbox::outcome_word(&o);
                let err = (word == "mismatch").then(|| format!("marketplace reports {}", remote.unwrap_or_default()));
                if let Some(e) = &err {
                    outbox::note_connection(l.connection_id, Some(e));
                }
                return row(word, Some(stock), attempt.http_status, err);
            }
            PushKind::Throttled { error, retry_after } => {
                limiter::penalize(l.connection_id, retry_after);
                outbox::log(&target, "push", "failed", Some(stock), None, &attempt, Some(&error));
                return row("throttled", Some(stock), attempt.http_status, Some(error));
            }
            PushKind::Retry { error, .. } | PushKind::Permanent { error } | PushKind::Unauthorized { error } => {
                outbox::log(&target, "push", "failed", Some(stock), None, &attempt, Some(&error));
                outbox::note_connection(l.connection_id, Some(&error));
                return row("failed", Some(stock), attempt.http_status, Some(error));
            }
        }
    }
    row(
        "failed",
        Some(stock),
        None,
        Some("unauthorized after a token refresh".into()),
    )
}

/// Waits up to 2 s in total for the connection's rate limit; Err(ns) when it would be longer.
pub(super) fn take_budget(l: &ListingRow) -> Result<(), i64> {
    let quota = push::quota_for(&l.marketplace, &l.connection_settings);
    let mut waited_ns = 0;
    loop {
        match limiter::acquire(l.connection_id, quota) {
            Ok(()) => return Ok(()),
            Err(wait) if waited_ns + wait <= 2_000_000_000 => {
                waited_ns += wait;
                unsafe { pg_sys::pg_usleep((wait / 1_000).max(1)) };
                pgrx::check_for_interrupts!();
            }
            Err(wait) => return Err(wait),
        }
    }
}
