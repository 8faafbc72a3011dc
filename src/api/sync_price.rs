//! `integ.sync_product`'s price part: EGDC's price of the product, through the channel's price
//! rules, written to one listing now (where a tracked price table has the product and the
//! marketplace takes prices). Recorded like a worker's price write: the listing's published
//! price, the sync log's `price` row with the price sent and EGDC's.

use super::sync::{agent, take_budget, token_wait_ms, ListingRow};
use crate::gucs::Tuning;
use crate::marketplaces::{self, PriceWrite, PushKind};
use crate::outbox::price::Written;
use crate::outbox::{self, Attempt, Outcome, PriceFacts, Target};
use crate::price_rules;
use crate::push;
use crate::tokens;
use pgrx::AnyNumeric;
use rust_decimal::Decimal;
use std::str::FromStr;

/// (price sent, status, error): all None when the product's price is not tracked.
pub(super) type PriceRow = (Option<AnyNumeric>, Option<String>, Option<String>);

fn numeric(d: Decimal) -> Option<AnyNumeric> {
    AnyNumeric::try_from(d.to_string().as_str()).ok()
}

pub(super) fn push_price(tenant_id: &str, product_id: &str, l: &ListingRow) -> PriceRow {
    let Some(lsn) = l.price_lsn else {
        return (None, None, None);
    };
    let row = |price: Option<Decimal>, status: &str, error: Option<String>| {
        (price.and_then(numeric), Some(status.to_string()), error)
    };
    let writes = l
        .marketplace
        .parse()
        .ok()
        .and_then(|m| marketplaces::connector(m).ok())
        .is_some_and(|c| c.writes_prices());
    if !writes {
        return row(
            None,
            "skipped",
            Some("prices are not written to this marketplace".into()),
        );
    }
    if l.connection_status != "active" {
        let e = format!("connection is {}", l.connection_status);
        return row(None, &l.connection_status, Some(e));
    }
    let egdc = l.egdc_price.as_deref().and_then(|t| Decimal::from_str(t).ok());
    let rules = match price_rules::effective(&l.connection_settings, &l.settings) {
        Ok(r) => r,
        Err(e) => return row(None, "refused", Some(e)),
    };
    let amount = match rules.apply(egdc, l.price_currency.as_deref()) {
        Ok(a) => a,
        Err(why) => return row(None, "refused", Some(why.to_string())),
    };
    let mut target = l.target(tenant_id, product_id);
    target.price = Some(PriceFacts {
        sent: Some(amount),
        egdc,
    });
    let failed = |t: &Target, status: &str, e: String, a: &Attempt| {
        outbox::log(t, "price", "failed", None, None, a, Some(&e));
        row(Some(amount), status, Some(e))
    };
    let wait_ms = token_wait_ms(&Tuning::read());
    let (token, credentials) = match tokens::backend_token(l.connection_id, None, wait_ms).ready_or_error() {
        Ok(t) => t,
        Err(e) => return failed(&target, "failed", e, &Attempt::default()),
    };
    let listing = l.listing_ref();
    let (connector, mut request) = match push::prepare(&listing, 0, token, credentials, String::new()) {
        Ok(p) => p,
        Err(e) => return failed(&target, "failed", e, &Attempt::default()),
    };
    request.price = Some(PriceWrite {
        amount,
        currency: rules.currency.clone().or_else(|| l.price_currency.clone()),
        with_stock: false,
    });
    if let Err(wait_ns) = take_budget(l) {
        let e = format!("rate limit: the next request is allowed in {} ms", wait_ns / 1_000_000);
        return failed(&target, "throttled", e, &Attempt::default());
    }
    let result = marketplaces::only_result(connector.push_prices(agent(), std::slice::from_ref(&request)));
    if let Some(learned) = &result.learned {
        outbox::learn(l.listing_id, learned);
    }
    let attempt = Attempt {
        http_status: result.http_status.map(i32::from),
        latency_ms: Some(result.latency_ms),
        learned: None,
        calls: i32::from(result.made_a_call()),
    };
    match result.kind {
        PushKind::Applied { .. } => {
            let w = Written {
                target,
                amount,
                stock: None,
                lsn,
            };
            let o = Outcome::Pushed {
                stock: l.desired.unwrap_or(0),
                remote: None,
            };
            outbox::price::record(&w, &o, &attempt);
            row(Some(amount), "success", None)
        }
        PushKind::Throttled { error, retry_after } => {
            crate::shmem::limiter::penalize(l.connection_id, retry_after);
            failed(&target, "throttled", error, &attempt)
        }
        PushKind::Retry { error, .. } | PushKind::Permanent { error } | PushKind::Unauthorized { error } => {
            failed(&target, "failed", error, &attempt)
        }
    }
}
