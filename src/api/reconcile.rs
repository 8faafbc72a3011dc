//! `integ.reconcile` (compare every mapped listing with the marketplace now and repair drift)
//! and `integ.resolve_conflict` (a person's decision on a conflict the `manual` strategy kept).

use super::sync::{agent, token_wait_ms};
use super::{check_tenant, connector_for, shown};
use crate::gucs::Tuning;
use crate::inbound::drift;
use crate::reconcile::{self, Budget, InBackend, Report};
use crate::spi_util::{invalid, not_found, OrRaise};
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};

/// How long one wait for the rate limit may be before reconciliation stops for now.
const MAX_BUDGET_WAIT_NS: i64 = 30_000_000_000;

#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn reconcile(tenant_id: Option<&str>, marketplace: default!(Option<&str>, "NULL")) -> JsonB {
    let tenant_id = crate::spi_util::required(tenant_id, "tenant_id");
    check_tenant(tenant_id);
    let market = marketplace.map(|m| connector_for(m).0.as_str());
    let connections: Vec<(i64, String)> = Spi::connect(|c| {
        let rows = c.select(
            "SELECT c.id, c.marketplace FROM integ.connections c
              WHERE c.tenant_id = $1 AND ($2::text IS NULL OR c.marketplace = $2) ORDER BY c.marketplace",
            None,
            &[tenant_id.into(), market.into()],
        )?;
        rows.map(|r| {
            Ok((
                r.get::<i64>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
            ))
        })
        .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
    })
    .or_raise("reading connections");
    if connections.is_empty() {
        not_found(format!(
            "tenant \"{}\" has no {}connection",
            shown(tenant_id),
            market.map(|m| format!("{m} ")).unwrap_or_default()
        ));
    }
    let side = InBackend {
        agent: agent(),
        token_wait_ms: token_wait_ms(&Tuning::read()),
    };
    let mut total = Report::default();
    let mut each = serde_json::Map::new();
    for (id, m) in connections {
        let mut r = Report::default();
        reconcile::missed_notifications(&side, id, &mut r);
        let mut after = 0;
        loop {
            let (page, next) = reconcile::page(&side, id, after, 100, Budget::Wait(MAX_BUDGET_WAIT_NS));
            r.add(&page);
            match next {
                Some(n) if n > after => after = n,
                Some(_) => {
                    r.error(0, "stopped: the rate limit allows no more requests for now");
                    break;
                }
                None => break,
            }
        }
        reconcile::log(id, &r);
        total.add(&r);
        each.insert(m, r.to_json());
    }
    let mut out = total.to_json();
    out["connections"] = Value::Object(each);
    JsonB(out)
}

#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn resolve_conflict(id: i64, resolution: &str) -> JsonB {
    if !["egdc_wins", "marketplace_wins", "dismiss"].contains(&resolution) {
        invalid(format!(
            "unknown resolution \"{}\" (expected one of: egdc_wins, marketplace_wins, dismiss)",
            shown(resolution)
        ));
    }
    let row = crate::spi_util::first::<JsonB>(
        "SELECT jsonb_build_array(c.listing_id, c.remote_stock, c.known_remote, c.status, c.tenant_id)
           FROM integ.conflicts c WHERE c.id = $1 FOR UPDATE",
        &[id.into()],
    );
    let Some(JsonB(Value::Array(a))) = row else {
        not_found(format!("no conflict {id}"));
    };
    super::access::require_access(a.get(4).and_then(Value::as_str).unwrap_or(""));
    if a.get(3).and_then(Value::as_str) != Some("open") {
        invalid(format!("conflict {id} is already resolved"));
    }
    let listing_id = a.first().and_then(Value::as_i64).unwrap_or_default();
    let remote = a.get(1).and_then(Value::as_i64).unwrap_or_default();
    let known = a.get(2).and_then(Value::as_i64).unwrap_or(remote);
    let Some(l) = drift::by_id(listing_id) else {
        not_found(format!("the listing of conflict {id} is gone"));
    };
    let max = i64::from(crate::gucs::MAX_STOCK.get());
    if resolution == "marketplace_wins" && !(0..=max).contains(&remote) {
        invalid(format!(
            "conflict {id}: the marketplace's stock {remote} is outside 0..={max} (integ.max_stock) and cannot be adopted; resolve it with egdc_wins or dismiss"
        ));
    }
    let done = match resolution {
        "egdc_wins" => {
            // what the marketplace said, if it is a stock at all (else nothing is known)
            if let Some(r) = i32::try_from(remote).ok().filter(|r| *r >= 0) {
                drift::set_remote(listing_id, r);
            }
            drift::enqueue_push(listing_id);
            json!({"pushed": l.published()})
        }
        "marketplace_wins" => {
            // within 0..=integ.max_stock (checked above), which fits
            drift::set_remote(listing_id, remote as i32);
            drift::take_remote_change(&l, remote - known);
            json!({"egdc_change": remote - known})
        }
        _ => json!({}),
    };
    Spi::run_with_args(
        "UPDATE integ.conflicts SET status = 'resolved', resolution = $2, resolved_at = now(), resolved_by = session_user
          WHERE id = $1",
        &[id.into(), resolution.into()],
    )
    .or_raise("resolving the conflict");
    let mut out = json!({"id": id, "resolution": resolution});
    if let (Some(o), Value::Object(d)) = (out.as_object_mut(), done) {
        o.extend(d);
    }
    JsonB(out)
}
