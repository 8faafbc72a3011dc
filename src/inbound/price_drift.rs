//! Price drift: reconciliation read a listing's price on the marketplace and it is not the one
//! we published there. The connection's `conflict_strategy` decides, as for stock: `egdc_wins`
//! writes EGDC's price again; `marketplace_wins` (and `most_recent`, unless EGDC's price changed
//! after our last write) makes the marketplace's price EGDC's, through the tracked price table,
//! so every other channel follows; `manual` leaves it for a person. A marketplace price is
//! adopted only when the channel's price rules map the adopted EGDC price back to it exactly
//! (a markup and an amount added are undone; a rounding that cannot be undone is a conflict).
//! Conflicts are sync-log rows (operation `price`, outcome `mismatch`) naming both prices.

use crate::price_rules::{self, PriceRules};
use crate::spi_util::{first, OrRaise};
use pgrx::prelude::*;
use pgrx::JsonB;
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::Value;
use std::str::FromStr;

#[derive(Debug, PartialEq)]
pub enum Resolution {
    InSync,
    /// EGDC's price is written again.
    Pushed,
    /// EGDC's price took the marketplace's (this EGDC price).
    Took(Decimal),
    /// Left for a person: the reason.
    Conflict(String),
    Ignored(&'static str),
}

struct Listing {
    tenant: String,
    product: String,
    connection_settings: Value,
    listing_settings: Value,
    last_pushed: Option<Decimal>,
    currency: Option<String>,
    /// A job for the listing is pending or in flight: EGDC's value is on its way.
    job_pending: bool,
    /// EGDC's price changed after our last price write.
    egdc_newer: bool,
}

fn load(listing_id: i64) -> Option<Listing> {
    let row = first::<JsonB>(
        "SELECT jsonb_build_array(l.tenant_id, l.product_id, c.settings, l.settings, l.last_pushed_price::text,
                                  l.price_currency,
                                  EXISTS (SELECT 1 FROM integ.sync_jobs j WHERE j.listing_id = l.id
                                             AND j.state IN ('pending', 'in_flight')),
                                  coalesce(l.desired_price_at > l.last_pushed_price_at, false))
           FROM integ.listings l JOIN integ.connections c ON c.id = l.connection_id WHERE l.id = $1",
        &[listing_id.into()],
    )?;
    let a = row.0.as_array()?.clone();
    let text = |i: usize| a.get(i).and_then(Value::as_str).map(str::to_string);
    Some(Listing {
        tenant: text(0)?,
        product: text(1)?,
        connection_settings: a.get(2).cloned().unwrap_or(Value::Null),
        listing_settings: a.get(3).cloned().unwrap_or(Value::Null),
        last_pushed: text(4).and_then(|t| Decimal::from_str(&t).ok()),
        currency: text(5),
        job_pending: a.get(6).and_then(Value::as_bool).unwrap_or(false),
        egdc_newer: a.get(7).and_then(Value::as_bool).unwrap_or(false),
    })
}

/// The marketplace shows `remote` as the price of listing `listing_id`.
pub fn resolve(listing_id: i64, remote: Decimal) -> Resolution {
    let Some(l) = load(listing_id) else {
        return Resolution::Ignored("the listing is gone");
    };
    Spi::run_with_args(
        "UPDATE integ.listings SET remote_price = $2::numeric WHERE id = $1",
        &[listing_id.into(), remote.to_string().into()],
    )
    .or_raise("recording a listing's remote price");
    crate::inbound::drift::note_in_catalog(listing_id, None, Some(remote));
    let Some(published) = l.last_pushed else {
        return Resolution::Ignored("no price was published to this listing yet");
    };
    if remote == published {
        return Resolution::InSync;
    }
    if l.job_pending {
        return Resolution::Ignored("EGDC's price is on its way");
    }
    let strategy = crate::inbound::drift::strategy(&l.connection_settings).to_string();
    let adopt = match strategy.as_str() {
        "marketplace_wins" => true,
        "most_recent" => !l.egdc_newer,
        "manual" => {
            return conflict(
                listing_id,
                remote,
                published,
                "conflict_strategy manual: left for review".into(),
            )
        }
        _ => false,
    };
    if !adopt {
        write_again(listing_id);
        return Resolution::Pushed;
    }
    let rules = match price_rules::effective(&l.connection_settings, &l.listing_settings) {
        Ok(r) => r,
        Err(e) => return conflict(listing_id, remote, published, e),
    };
    let Some(egdc) = undo_rules(&rules, remote, l.currency.as_deref()) else {
        let why = "the channel's price rules cannot give it from any EGDC price (rounding or min/max): not adopted";
        return conflict(listing_id, remote, published, why.into());
    };
    if !adopt_egdc_price(&l.tenant, &l.product, egdc) {
        let why = "no tracked price table has the product: not adopted";
        return conflict(listing_id, remote, published, why.into());
    }
    // what the listing shows is what EGDC's new price publishes there: no write back
    Spi::run_with_args(
        "UPDATE integ.listings SET last_pushed_price = $2::numeric, last_pushed_price_at = now() WHERE id = $1",
        &[listing_id.into(), remote.to_string().into()],
    )
    .or_raise("recording an adopted price");
    Resolution::Took(egdc)
}

/// The EGDC price the rules publish as `remote` (markup and amount added undone, two decimals),
/// if there is one.
pub fn undo_rules(rules: &PriceRules, remote: Decimal, currency: Option<&str>) -> Option<Decimal> {
    let hundred = Decimal::from(100);
    let mut p = remote.checked_sub(rules.add.unwrap_or_default())?;
    if let Some(m) = rules.markup_percent {
        p = p.checked_mul(hundred)?.checked_div(hundred + m)?;
    }
    let p = p.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    (rules.apply(Some(p), currency).ok()? == remote).then_some(p)
}

/// EGDC's price of the product becomes `price` in the first tracked price table that has it
/// (its trigger then publishes the price to every channel).
fn adopt_egdc_price(tenant: &str, product: &str, price: Decimal) -> bool {
    let statements: Vec<String> = Spi::connect(|c| {
        c.select(
            "SELECT format('WITH u AS (UPDATE %s SET %I = $3::numeric WHERE %I::text = $1 AND %I::text = $2 RETURNING 1)
                            SELECT count(*) FROM u',
                           t.relid::regclass, t.price_column, t.tenant_column, t.product_column)
               FROM integ.tracked_price_tables t JOIN pg_class r ON r.oid = t.relid ORDER BY t.created_at",
            None,
            &[],
        )?
        .map(|r| r.get::<String>(1).map(Option::unwrap_or_default))
        .collect::<Result<Vec<_>, _>>()
    })
    .or_raise("finding the tracked price tables");
    statements
        .iter()
        .any(|sql| first::<i64>(sql, &[tenant.into(), product.into(), price.to_string().into()]).unwrap_or(0) > 0)
}

/// EGDC's price is written again: the listing forgets what it last published and gets a job.
fn write_again(listing_id: i64) {
    Spi::run_with_args(
        "WITH l AS (UPDATE integ.listings SET last_pushed_price = NULL WHERE id = $1
                    RETURNING id, connection_id, tenant_id, marketplace)
         INSERT INTO integ.sync_jobs (listing_id, connection_id, tenant_id, marketplace, price_only)
         SELECT id, connection_id, tenant_id, marketplace, true FROM l
         ON CONFLICT (listing_id) WHERE state = 'pending' DO NOTHING",
        &[listing_id.into()],
    )
    .or_raise("queueing a price write");
    crate::shmem::wake_workers_at_commit();
}

fn conflict(listing_id: i64, remote: Decimal, published: Decimal, why: String) -> Resolution {
    let text = format!("the marketplace shows the price {remote}, we published {published}: {why}");
    Spi::run_with_args(
        "INSERT INTO integ.sync_log (tenant_id, marketplace, connection_id, listing_id, product_id, external_id,
                                     operation, outcome, error, price, egdc_price)
         SELECT l.tenant_id, l.marketplace, l.connection_id, l.id, l.product_id, l.external_id,
                'price', 'mismatch', $2, $3::numeric, l.desired_price
           FROM integ.listings l WHERE l.id = $1",
        &[listing_id.into(), text.as_str().into(), remote.to_string().into()],
    )
    .or_raise("logging a price conflict");
    Resolution::Conflict(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(v: Value) -> PriceRules {
        price_rules::effective(&json!({ "price_rules": v }), &json!({})).expect("rules")
    }

    #[test]
    fn a_marketplace_price_is_adopted_only_when_the_rules_give_it_back() {
        let d = |s: &str| Decimal::from_str(s).unwrap();
        assert_eq!(undo_rules(&rules(json!({})), d("90.00"), None), Some(d("90.00")));
        // the markup first, then the amount added: 100 → 112 → 117
        let r = rules(json!({"markup_percent": 12, "add": 5}));
        assert_eq!(r.apply(Some(d("100")), None).ok(), Some(d("117.00")));
        assert_eq!(undo_rules(&r, d("117.00"), None), Some(d("100.00")));
        // ends_99 cannot give 110.00 from any price
        assert_eq!(undo_rules(&rules(json!({"round": "ends_99"})), d("110.00"), None), None);
        // but gives 109.99 from 109.99
        assert_eq!(
            undo_rules(&rules(json!({"round": "ends_99"})), d("109.99"), None),
            Some(d("109.99"))
        );
        // a currency the rules refuse
        assert_eq!(
            undo_rules(&rules(json!({"currency": "USD"})), d("5"), Some("MXN")),
            None
        );
    }
}
