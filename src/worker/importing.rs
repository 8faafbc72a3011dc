//! Catalog imports (`integ.import_catalog`): the first worker makes one catalog call of one
//! running import per turn of its loop, only from the connection's spare budget (pushes come
//! first), and stores what it read with the import's new cursor in one transaction, so an
//! import stopped by a crash goes on from its last stored step. An expired cursor starts the listing pass again;
//! when a pass ends, listings it did not see are marked `gone`. A marketplace that budgets by
//! cost (Shopify) can ask an import to pause; only that connection's import waits.

use crate::marketplaces::catalog::{CatalogError, CatalogPage, RemoteListing};
use crate::marketplaces::{self, Marketplace};
use crate::push;
use crate::shmem::limiter;
use crate::spi_util::{first, worker_transaction, OrRaise};
use crate::tokens::{self, TokenStatus};
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How often to look for running imports while there are none.
const IDLE_LOOK: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Importer {
    next_look: Option<Instant>,
    /// Imports waiting for their connection's cost budget to refill, by connection: until when.
    paused: HashMap<i64, Instant>,
}

struct Running {
    id: i64,
    connection_id: i64,
    marketplace: String,
    settings: Value,
    cursor: Option<String>,
    failures: i32,
}

impl Importer {
    /// How long until the next look is due (the worker waits no longer than that).
    pub fn due_in(&self) -> Option<Duration> {
        let now = Instant::now();
        self.next_look
            .into_iter()
            .chain(self.paused.values().copied())
            .min()
            .map(|t| t.saturating_duration_since(now))
    }

    /// One page of the running import that waited longest, if its connection has the budget;
    /// true when a page was read (more may follow at once).
    pub fn turn(&mut self, agent: &ureq::Agent, max_attempts: i32, cooldown_ns: i64) -> bool {
        if self.next_look.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        self.page(agent, max_attempts, cooldown_ns)
    }

    fn page(&mut self, agent: &ureq::Agent, max_attempts: i32, cooldown_ns: i64) -> bool {
        let now = Instant::now();
        self.paused.retain(|_, until| *until > now);
        let paused: Vec<i64> = self.paused.keys().copied().collect();
        let running = match worker_transaction(|| next_running(&paused)) {
            Ok(Some(r)) => r,
            Ok(None) => {
                let soonest = self.paused.values().min().copied();
                self.next_look = Some(soonest.unwrap_or(now + IDLE_LOOK).min(now + IDLE_LOOK));
                return false;
            }
            Err(e) => {
                warning!("integration: looking for catalog imports failed: {e}");
                self.next_look = Some(Instant::now() + IDLE_LOOK);
                return false;
            }
        };
        let Some(connector) = running
            .marketplace
            .parse::<Marketplace>()
            .ok()
            .and_then(|m| marketplaces::connector(m).ok())
        else {
            finish(running.id, "failed", Some("unknown marketplace"));
            return false;
        };
        // one call from the spare budget, or wait for a later turn: pushes come first
        let quota = push::quota_for(&running.marketplace, &running.settings);
        if let Err(wait) = limiter::acquire_spare(running.connection_id, quota, cooldown_ns) {
            let ns = wait.clamp(1_000_000, 1_000_000_000) as u64;
            self.paused
                .insert(running.connection_id, Instant::now() + Duration::from_nanos(ns));
            return false;
        }
        let (token, credentials, generation) = match tokens::worker_token(agent, running.connection_id, None) {
            TokenStatus::Ready {
                access_token,
                credentials,
                generation,
            } => (access_token, credentials, generation),
            TokenStatus::NeedsReauthorization(e) => {
                finish(
                    running.id,
                    "failed",
                    Some(&format!("the connection needs re-authorization: {e}")),
                );
                return false;
            }
            TokenStatus::Unavailable(e) => {
                failed_page(&running, &format!("no token: {e}"), max_attempts);
                return false;
            }
        };
        let req = match push::connection_request(&running.marketplace, &running.settings, token, credentials) {
            Ok((_, req)) => req,
            Err(e) => {
                finish(running.id, "failed", Some(&e));
                return false;
            }
        };
        match connector.catalog_page(agent, &req, running.cursor.as_deref()) {
            Ok(page) => {
                if let Err(e) = worker_transaction(|| store(&running, &page)) {
                    failed_page(&running, &format!("storing a page: {e}"), max_attempts);
                }
                if let Some(d) = page.pause {
                    self.paused.insert(running.connection_id, Instant::now() + d);
                }
            }
            Err(CatalogError::Wait(d)) => {
                count_call(running.id);
                self.paused.insert(running.connection_id, Instant::now() + d);
            }
            Err(CatalogError::CursorExpired(why)) => restart_pass(&running, &why),
            Err(CatalogError::Throttled { retry_after, .. }) => {
                limiter::penalize(running.connection_id, retry_after);
            }
            Err(CatalogError::Unauthorized(e)) => {
                // refreshed now; a grant that is dead fails the import (and alerts, as always)
                if let TokenStatus::NeedsReauthorization(why) =
                    tokens::worker_token(agent, running.connection_id, Some(generation))
                {
                    finish(
                        running.id,
                        "failed",
                        Some(&format!("the connection needs re-authorization: {why}")),
                    );
                } else {
                    failed_page(&running, &e, max_attempts);
                }
            }
            Err(CatalogError::Transient(e)) => failed_page(&running, &e, max_attempts),
            Err(CatalogError::Failed(e)) => finish(running.id, "failed", Some(&e)),
            Err(CatalogError::Unsupported) => finish(
                running.id,
                "failed",
                Some(&format!(
                    "importing the {} catalog is not supported yet",
                    running.marketplace
                )),
            ),
        }
        true
    }
}

/// The running import whose connection is active and that advanced least recently.
fn next_running(paused: &[i64]) -> Option<Running> {
    let row = first::<JsonB>(
        "SELECT jsonb_build_array(i.id, i.connection_id, i.marketplace, c.settings, i.cursor, i.failures)
           FROM integ.catalog_imports i JOIN integ.connections c ON c.id = i.connection_id
          WHERE i.state = 'running' AND c.status = 'active' AND i.connection_id <> ALL ($1)
          ORDER BY i.updated_at, i.id LIMIT 1",
        &[paused.to_vec().into()],
    )?;
    let a = row.0.as_array()?.clone();
    Some(Running {
        id: a.first()?.as_i64()?,
        connection_id: a.get(1)?.as_i64()?,
        marketplace: a.get(2)?.as_str()?.to_string(),
        settings: a.get(3).cloned().unwrap_or(Value::Null),
        cursor: a.get(4).and_then(Value::as_str).map(str::to_string),
        failures: a.get(5).and_then(Value::as_i64).unwrap_or(0) as i32,
    })
}

/// The page's listings (the last of two with one key wins) as JSON rows for the upsert.
fn rows(listings: &[RemoteListing]) -> Value {
    let mut seen = std::collections::HashMap::new();
    for l in listings {
        seen.insert((l.external_id.as_str(), l.variation.as_str()), l);
    }
    Value::Array(
        seen.into_values()
            .map(|l| {
                json!({"external_id": l.external_id, "variation": l.variation, "settings": l.settings,
                       "seller_sku": l.seller_sku, "title": l.title, "price": l.price.map(|p| p.to_string()),
                       "currency": l.currency, "remote_stock": l.stock, "status": l.status, "url": l.url, "raw": l.raw})
            })
            .collect(),
    )
}

/// Stores a page and moves the import on; the last page of a pass finishes it. Nothing is
/// stored for an import cancelled meanwhile.
fn store(r: &Running, page: &CatalogPage) {
    let still_running = first::<i64>(
        "SELECT id FROM integ.catalog_imports WHERE id = $1 AND state = 'running' FOR UPDATE",
        &[r.id.into()],
    );
    if still_running.is_none() {
        return;
    }
    Spi::run_with_args(
        "INSERT INTO integ.remote_listings AS rl (connection_id, tenant_id, marketplace, external_id, variation, settings,
                seller_sku, title, price, currency, remote_stock, status, url, raw, seen_at, gone_at)
         SELECT c.id, c.tenant_id, c.marketplace, x.external_id, coalesce(x.variation, ''), coalesce(x.settings, '{}'),
                x.seller_sku, x.title, x.price::numeric, x.currency, x.remote_stock, x.status, x.url, x.raw, now(), NULL
           FROM integ.connections c,
                jsonb_to_recordset($2) AS x(external_id text, variation text, settings jsonb, seller_sku text, title text,
                                            price text, currency text, remote_stock bigint, status text, url text, raw jsonb)
          WHERE c.id = $1
         ON CONFLICT (connection_id, external_id, variation) DO UPDATE
            SET settings = EXCLUDED.settings, seller_sku = EXCLUDED.seller_sku, title = EXCLUDED.title,
                price = EXCLUDED.price, currency = EXCLUDED.currency, remote_stock = EXCLUDED.remote_stock,
                status = EXCLUDED.status, url = EXCLUDED.url, raw = EXCLUDED.raw, seen_at = now(), gone_at = NULL",
        &[r.connection_id.into(), JsonB(rows(&page.listings)).into()],
    )
    .or_raise("storing remote listings");
    Spi::run_with_args(
        "UPDATE integ.catalog_imports
            SET cursor = $2, pages = pages + 1, api_calls = api_calls + $3, listings_seen = listings_seen + $4,
                discovered = discovered + $5, total = coalesce($6, total), failures = 0, updated_at = now()
          WHERE id = $1",
        &[
            r.id.into(),
            page.next.clone().into(),
            (page.calls as i64).into(),
            (page.listings.len() as i64).into(),
            page.discovered.into(),
            page.total.into(),
        ],
    )
    .or_raise("moving a catalog import on");
    if page.next.is_none() {
        // the pass is over: what it did not see since the import started is gone
        Spi::run_with_args(
            "UPDATE integ.remote_listings rl SET gone_at = now()
               FROM integ.catalog_imports i
              WHERE i.id = $1 AND rl.connection_id = i.connection_id AND rl.gone_at IS NULL AND rl.seen_at < i.started_at",
            &[r.id.into()],
        )
        .or_raise("marking listings gone");
        Spi::run_with_args(
            "UPDATE integ.catalog_imports SET state = 'done', finished_at = now(), updated_at = now() WHERE id = $1",
            &[r.id.into()],
        )
        .or_raise("finishing a catalog import");
    }
}

/// The cursor expired: the pass starts again (listings already seen are seen again, and counted
/// once: `listings_seen` counts the current pass).
fn restart_pass(r: &Running, why: &str) {
    log!(
        "integration: catalog import {} starts its listing pass again: {why}",
        r.id
    );
    let _ = worker_transaction(|| {
        Spi::run_with_args(
            "UPDATE integ.catalog_imports
                SET cursor = NULL, passes = passes + 1, discovered = 0, listings_seen = 0, api_calls = api_calls + 1, updated_at = now()
              WHERE id = $1 AND state = 'running'",
            &[r.id.into()],
        )
    });
}

/// A call that read nothing (the import waits for its budget).
fn count_call(id: i64) {
    let _ = worker_transaction(|| {
        Spi::run_with_args(
            "UPDATE integ.catalog_imports SET api_calls = api_calls + 1, updated_at = now() WHERE id = $1 AND state = 'running'",
            &[id.into()],
        )
    });
}

/// A page that failed for now: tried again next turn, the import failing after `max_attempts`.
fn failed_page(r: &Running, error: &str, max_attempts: i32) {
    if r.failures + 1 >= max_attempts {
        finish(r.id, "failed", Some(error));
        return;
    }
    let _ = worker_transaction(|| {
        Spi::run_with_args(
            "UPDATE integ.catalog_imports SET failures = failures + 1, api_calls = api_calls + 1, error = $2, updated_at = now()
              WHERE id = $1 AND state = 'running'",
            &[r.id.into(), crate::marketplaces::http::truncate(error, 500).into()],
        )
    });
}

fn finish(id: i64, state: &str, error: Option<&str>) {
    let error = error.map(|e| crate::marketplaces::http::truncate(e, 500));
    let _ = worker_transaction(|| {
        Spi::run_with_args(
            "UPDATE integ.catalog_imports SET state = $2, error = coalesce($3, error), finished_at = now(), updated_at = now()
              WHERE id = $1 AND state = 'running'",
            &[id.into(), state.into(), error.into()],
        )
    });
}
