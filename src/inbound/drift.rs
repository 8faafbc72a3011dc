//! A listing's stock changed on the marketplace (a webhook said so, or reconciliation read it):
//! the connection's `conflict_strategy` decides what happens.
//!
//! - `egdc_wins` (default): EGDC's value is pushed back.
//! - `marketplace_wins`: EGDC takes the marketplace's change (the difference from what we knew it
//!   held), and the new stock flows to the other channels.
//! - `most_recent`: the later change wins: the marketplace's change time (when it says; else the
//!   moment we saw it) against EGDC's last change of the product.
//! - `manual`: a conflict is recorded in `integ.conflicts`; nothing changes until
//!   `integ.resolve_conflict`.
//!
//! Runs inside the caller's transaction (a worker's or the backend's).

use crate::rules;
use crate::spi_util::{first, OrRaise};
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::Value;

pub const STRATEGIES: [&str; 4] = ["egdc_wins", "marketplace_wins", "most_recent", "manual"];

/// A connection's strategy (validated by integ.connect; unknown values act as egdc_wins).
pub fn strategy(connection_settings: &Value) -> &str {
    connection_settings
        .get("conflict_strategy")
        .and_then(Value::as_str)
        .filter(|s| STRATEGIES.contains(s))
        .unwrap_or("egdc_wins")
}

pub fn validate(settings: &Value) -> Result<(), String> {
    match settings.get("conflict_strategy") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if STRATEGIES.contains(&s.as_str()) => Ok(()),
        Some(_) => Err(format!(
            "settings.conflict_strategy must be one of: {}",
            STRATEGIES.join(", ")
        )),
    }
}

/// A listing as drift resolution needs it.
pub struct Listing {
    pub id: i64,
    pub tenant_id: String,
    pub marketplace: String,
    pub product_id: String,
    pub external_id: String,
    /// EGDC's stock
    pub desired: Option<i32>,
    /// What we believe the marketplace holds.
    pub remote: Option<i32>,
    pub settings: Value,
    pub connection_settings: Value,
    /// Whether EGDC's newest value is still on its way (a pending or in-flight push).
    pub push_pending: bool,
    /// Whether deliveries from the marketplace wait to be applied on this connection (an
    /// order not yet applied explains a difference).
    pub inbound_pending: bool,
}

impl Listing {
    pub fn published(&self) -> Option<i32> {
        self.desired
            .map(|d| rules::effective(&self.connection_settings, &self.settings).apply(d))
    }
}

const LISTING_SQL: &str = "SELECT jsonb_build_array(l.id, l.tenant_id, l.marketplace, l.product_id, l.external_id,
            l.desired_stock, l.remote_stock, l.settings, c.settings,
            EXISTS (SELECT 1 FROM integ.sync_jobs j WHERE j.listing_id = l.id AND j.state IN ('pending', 'in_flight')),
            EXISTS (SELECT 1 FROM integ.webhooks w WHERE w.connection_id = l.connection_id
                       AND w.state IN ('pending', 'failed') AND w.status = 'accepted'))
       FROM integ.listings l JOIN integ.connections c ON c.id = l.connection_id";

fn listing_from(v: Value) -> Option<Listing> {
    let Value::Array(a) = v else { return None };
    let s = |i: usize| a.get(i).and_then(Value::as_str).unwrap_or("").to_string();
    let n = |i: usize| a.get(i).and_then(Value::as_i64).map(|x| x as i32);
    Some(Listing {
        id: a.first()?.as_i64()?,
        tenant_id: s(1),
        marketplace: s(2),
        product_id: s(3),
        external_id: s(4),
        desired: n(5),
        remote: n(6),
        settings: a.get(7).cloned().unwrap_or(Value::Null),
        connection_settings: a.get(8).cloned().unwrap_or(Value::Null),
        push_pending: a.get(9).and_then(Value::as_bool).unwrap_or(false),
        inbound_pending: a.get(10).and_then(Value::as_bool).unwrap_or(false),
    })
}

/// The listing (locked) of a connection by the marketplace's id for it; Shopify items may be
/// stored as numbers or gids, and one item has a listing per location.
pub fn find(connection_id: i64, external_id: &str, location_id: Option<&str>) -> Option<Listing> {
    let row = first::<JsonB>(
        &format!(
            "{LISTING_SQL}
              WHERE l.connection_id = $1
                AND l.external_id IN ($2, 'gid://shopify/InventoryItem/' || $2)
                AND ($3::text IS NULL OR coalesce(l.settings ->> 'location_id', '') IN ($3, 'gid://shopify/Location/' || $3))
              ORDER BY l.id LIMIT 1 FOR UPDATE OF l"
        ),
        &[connection_id.into(), external_id.into(), location_id.into()],
    )?;
    listing_from(row.0)
}

pub fn by_id(listing_id: i64) -> Option<Listing> {
    let row = first::<JsonB>(
        &format!("{LISTING_SQL} WHERE l.id = $1 FOR UPDATE OF l"),
        &[listing_id.into()],
    )?;
    listing_from(row.0)
}

/// What was done about one remote value.
#[derive(Debug, PartialEq)]
pub enum Resolution {
    InSync,
    /// EGDC's value is being pushed back.
    Pushed,
    /// EGDC took the marketplace's change (by this delta).
    Took(i64),
    Conflict(i64),
    /// Nothing to compare with (EGDC's stock is unknown) or the change is older than ours.
    Ignored(String),
}

impl Resolution {
    pub fn note(&self) -> Option<String> {
        match self {
            Resolution::InSync => None,
            Resolution::Pushed => Some("remote change overwritten with EGDC's stock".into()),
            Resolution::Took(d) => Some(format!("EGDC took the marketplace's change ({d:+})")),
            Resolution::Conflict(id) => Some(format!("conflict {id} recorded for review")),
            Resolution::Ignored(why) => Some(why.clone()),
        }
    }
}

/// The marketplace holds `remote` for `l`. `changed_at` (RFC 3339) is when it says the change
/// happened; `source` is 'webhook' or 'reconcile'.
pub fn resolve(l: &Listing, remote: i64, changed_at: Option<&str>, source: &str) -> Resolution {
    // a number from outside that makes no sense is looked at by a person, never adopted
    let max = i64::from(crate::gucs::MAX_STOCK.get());
    if (0..=max).contains(&remote) {
        note_in_catalog(l.id, Some(remote), None);
    }
    if !(0..=max).contains(&remote) {
        let reason = format!("the marketplace's stock {remote} is outside 0..={max} (integ.max_stock): not adopted");
        let published = l.published();
        let known = l.remote.or(published);
        return Resolution::Conflict(record_conflict(
            l,
            remote,
            known,
            published,
            changed_at,
            source,
            Some(&reason),
        ));
    }
    // within 0..=integ.max_stock, which fits
    let remote = remote as i32;
    let Some(published) = l.published() else {
        set_remote(l.id, remote);
        return Resolution::Ignored("EGDC's stock for this listing is not known yet".into());
    };
    if let Some(at) = changed_at {
        // an edit from before our last write is already superseded by it
        let older = first::<bool>(
            "SELECT $2::timestamptz <= l.last_pushed_at FROM integ.listings l WHERE l.id = $1",
            &[l.id.into(), at.into()],
        )
        .unwrap_or(false);
        if older {
            return Resolution::Ignored("the change is older than our last write".into());
        }
    }
    let known = l.remote.unwrap_or(published);
    if source == "reconcile" && remote != published && l.inbound_pending {
        return Resolution::Ignored("deliveries from the marketplace are still to be applied".into());
    }
    if remote == published || (remote == known && l.push_pending) {
        // a reconciliation finds most listings as they were: no new row version for those
        if l.remote != Some(remote) {
            set_remote(l.id, remote);
        }
        return Resolution::InSync;
    }
    if remote == known {
        // nothing changed there: our own value never landed (a dead or lost push)
        enqueue_push(l.id);
        return Resolution::Pushed;
    }
    let mut decision = strategy(&l.connection_settings).to_string();
    if decision == "most_recent" {
        let marketplace_later = first::<bool>(
            "SELECT coalesce($2::timestamptz, now()) > coalesce(l.desired_at, '-infinity') FROM integ.listings l WHERE l.id = $1",
            &[l.id.into(), changed_at.into()],
        )
        .unwrap_or(true);
        decision = if marketplace_later && !l.push_pending {
            "marketplace_wins"
        } else {
            "egdc_wins"
        }
        .into();
    }
    match decision.as_str() {
        "manual" => Resolution::Conflict(record_conflict(
            l,
            remote.into(),
            Some(known),
            Some(published),
            changed_at,
            source,
            None,
        )),
        "marketplace_wins" => {
            let delta = (remote - known) as i64;
            set_remote(l.id, remote);
            take_remote_change(l, delta);
            Resolution::Took(delta)
        }
        _ => {
            set_remote(l.id, remote);
            enqueue_push(l.id);
            Resolution::Pushed
        }
    }
}

/// The catalog cache (`integ.remote_listings`) keeps what the marketplace just said it holds for
/// the listing's unit (its stock, its price), so reading it saves a call. Shopify ids may be
/// stored as gids or numbers.
pub(crate) fn note_in_catalog(listing_id: i64, stock: Option<i64>, price: Option<rust_decimal::Decimal>) {
    Spi::run_with_args(
        "UPDATE integ.remote_listings rl
            SET remote_stock = coalesce($2, rl.remote_stock), price = coalesce($3::numeric, rl.price),
                seen_at = now(), gone_at = NULL
           FROM integ.listings l
          WHERE l.id = $1 AND rl.connection_id = l.connection_id
            AND rl.external_id = regexp_replace(l.external_id, '^gid://shopify/InventoryItem/', '')
            AND rl.variation = coalesce(l.settings ->> 'variation_id', '')
            AND regexp_replace(coalesce(rl.settings ->> 'location_id', ''), '^gid://shopify/Location/', '')
              = regexp_replace(coalesce(l.settings ->> 'location_id', ''), '^gid://shopify/Location/', '')",
        &[listing_id.into(), stock.into(), price.map(|p| p.to_string()).into()],
    )
    .or_raise("recording what the marketplace holds in the catalog");
}

/// Records what the marketplace holds for the listing.
pub fn set_remote(listing_id: i64, remote: i32) {
    Spi::run_with_args(
        "UPDATE integ.listings SET remote_stock = $2 WHERE id = $1",
        &[listing_id.into(), remote.into()],
    )
    .or_raise("recording the marketplace's stock");
}

/// EGDC's stock moves by the marketplace's change; its trigger sends the result everywhere.
pub fn take_remote_change(l: &Listing, delta: i64) {
    if !super::adjust_egdc_stock(&l.tenant_id, &l.product_id, delta) {
        pgrx::warning!(
            "integration: product {} of tenant {} is in no tracked table; the marketplace's change was not applied",
            l.product_id,
            l.tenant_id
        );
    }
}

/// Queues a push of EGDC's value to the listing (one pending job per listing at most; a pending
/// job made for a price would send the stock only if it moved, so it now sends it too).
pub fn enqueue_push(listing_id: i64) {
    Spi::run_with_args(
        "INSERT INTO integ.sync_jobs (listing_id, connection_id, tenant_id, marketplace)
         SELECT l.id, l.connection_id, l.tenant_id, l.marketplace FROM integ.listings l WHERE l.id = $1
         ON CONFLICT (listing_id) WHERE state = 'pending' DO UPDATE SET price_only = false",
        &[listing_id.into()],
    )
    .or_raise("queueing a push");
    crate::shmem::wake_workers_at_commit();
}

fn record_conflict(
    l: &Listing,
    remote: i64,
    known: Option<i32>,
    published: Option<i32>,
    changed_at: Option<&str>,
    source: &str,
    reason: Option<&str>,
) -> i64 {
    first::<i64>(
        "INSERT INTO integ.conflicts AS c (tenant_id, marketplace, connection_id, listing_id, product_id, external_id,
                                          egdc_stock, published_stock, remote_stock, known_remote, source, remote_changed_at,
                                          reason)
         SELECT l.tenant_id, l.marketplace, l.connection_id, l.id, l.product_id, l.external_id,
                l.desired_stock, $2, $3, $4, $5, $6::timestamptz, $7
           FROM integ.listings l WHERE l.id = $1
         ON CONFLICT (listing_id) WHERE status = 'open' DO UPDATE
            SET remote_stock = EXCLUDED.remote_stock, egdc_stock = EXCLUDED.egdc_stock,
                published_stock = EXCLUDED.published_stock, source = EXCLUDED.source,
                remote_changed_at = EXCLUDED.remote_changed_at, reason = EXCLUDED.reason, detected_at = now()
         RETURNING c.id",
        &[
            l.id.into(),
            published.into(),
            remote.into(),
            known.into(),
            source.into(),
            changed_at.into(),
            reason.into(),
        ],
    )
    .unwrap_or_default()
}
