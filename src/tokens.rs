//! Access tokens: use them while valid, refresh them once, in a worker, under a per-connection
//! advisory lock, storing the rotated pair in a committed transaction before anyone uses it.

use crate::credentials::{self, Loaded};
use crate::marketplaces::{self, Marketplace, RefreshError};
use crate::outbox::{self, Attempt, Target};
use crate::spi_util::{worker_transaction, OrRaise};
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::Value;
use std::time::Instant;

/// Advisory lock class for token refreshes (with the connection id as the second key).
const REFRESH_LOCK_CLASS: i32 = 0x1_7E6;

#[derive(Clone, Debug)]
pub enum TokenStatus {
    Ready {
        access_token: String,
        generation: i64,
        /// Everything the connector signs with (identifiers and secrets).
        credentials: crate::marketplaces::Credentials,
    },
    /// The grant is dead: the connection now needs re-authorization.
    NeedsReauthorization(String),
    /// Could not get a token now; try later.
    Unavailable(String),
}

impl TokenStatus {
    /// The token and credentials, or why there are none.
    pub fn ready_or_error(self) -> Result<(String, crate::marketplaces::Credentials), String> {
        match self {
            TokenStatus::Ready {
                access_token,
                credentials,
                ..
            } => Ok((access_token, credentials)),
            TokenStatus::NeedsReauthorization(e) | TokenStatus::Unavailable(e) => Err(e),
        }
    }
}

/// The loaded token, when usable and not the one a 401 was seen with.
fn usable(l: &Loaded, stale_generation: Option<i64>) -> Option<TokenStatus> {
    if stale_generation == Some(l.generation) {
        None
    } else {
        ready(l)
    }
}

/// The loaded token as ready to use, when it is usable.
pub fn ready(l: &Loaded) -> Option<TokenStatus> {
    l.usable().then(|| TokenStatus::Ready {
        access_token: l.access_token().unwrap_or_default().to_string(),
        generation: l.generation,
        credentials: l.creds.clone(),
    })
}

/// Worker side: a usable token for the connection, refreshing when it is missing, expiring, or
/// `stale_generation` (the generation a 401 was seen with) is still the current one.
pub fn worker_token(agent: &ureq::Agent, connection_id: i64, stale_generation: Option<i64>) -> TokenStatus {
    let loaded = match worker_transaction(|| credentials::load(connection_id)) {
        Ok(Some(l)) => l,
        Ok(None) => return TokenStatus::NeedsReauthorization("connection has no credentials".into()),
        Err(e) => return TokenStatus::Unavailable(e),
    };
    usable(&loaded, stale_generation).unwrap_or_else(|| refresh(agent, connection_id, loaded.generation))
}

/// Refreshes unless another process already did since `seen_generation`. Runs in its own
/// transaction; returns the token now current.
pub fn refresh(agent: &ureq::Agent, connection_id: i64, seen_generation: i64) -> TokenStatus {
    let result = worker_transaction(|| {
        Spi::run_with_args(
            "SELECT pg_advisory_xact_lock($1, $2::int4)",
            &[REFRESH_LOCK_CLASS.into(), connection_id.into()],
        )
        .or_raise("locking the connection for refresh");
        let Some(current) = credentials::load(connection_id) else {
            return TokenStatus::NeedsReauthorization("connection has no credentials".into());
        };
        if current.generation != seen_generation {
            if let Some(t) = ready(&current) {
                return t; // someone else refreshed while we waited for the lock
            }
        }
        let Some((tenant, market, settings)) = connection_row(connection_id) else {
            return TokenStatus::NeedsReauthorization("connection no longer exists".into());
        };
        let parsed: Result<Marketplace, String> = market.parse();
        let connector = match parsed.and_then(marketplaces::connector) {
            Ok(c) => c,
            Err(e) => return TokenStatus::NeedsReauthorization(e),
        };
        let base = match marketplaces::base_url(connector, &settings, &crate::gucs::allowed_hosts()) {
            Ok(b) => b,
            Err(e) => return TokenStatus::NeedsReauthorization(e),
        };
        let start = Instant::now();
        let grant = connector.refresh(agent, &base, &current.creds);
        let attempt = Attempt {
            http_status: None,
            latency_ms: Some(start.elapsed().as_secs_f64() * 1000.0),
            learned: None,
            calls: 1,
        };
        let target = Target {
            job_id: None,
            attempt: None,
            listing_id: 0,
            connection_id,
            tenant_id: &tenant,
            marketplace: &market,
            product_id: "",
            external_id: "",
            egdc_stock: None,
            price: None,
            price_lsn: None,
        };
        match grant {
            Ok(g) => {
                let creds = credentials::store_refreshed(connection_id, current.creds.clone(), &g);
                outbox::log(&target, "refresh", "success", None, None, &attempt, None);
                TokenStatus::Ready {
                    access_token: g.access_token,
                    generation: current.generation + 1,
                    credentials: creds,
                }
            }
            Err(RefreshError::InvalidGrant(msg)) => {
                let msg = format!("token refresh refused, re-authorization needed: {msg}");
                outbox::log(&target, "refresh", "failed", None, None, &attempt, Some(&msg));
                crate::alerts::needs_reauthorization(connection_id, &tenant, &market, &msg);
                TokenStatus::NeedsReauthorization(msg)
            }
            Err(RefreshError::Transient(msg)) => {
                let msg = format!("token refresh failed: {msg}");
                outbox::log(&target, "refresh", "retry", None, None, &attempt, Some(&msg));
                outbox::note_connection(connection_id, Some(&msg));
                TokenStatus::Unavailable(msg)
            }
        }
    });
    result.unwrap_or_else(TokenStatus::Unavailable)
}

fn connection_row(connection_id: i64) -> Option<(String, String, Value)> {
    Spi::connect(|c| {
        let t = c.select(
            "SELECT tenant_id, marketplace, settings FROM integ.connections WHERE id = $1",
            None,
            &[connection_id.into()],
        )?;
        if t.is_empty() {
            return Ok::<_, pgrx::spi::SpiError>(None);
        }
        let t = t.first();
        Ok(Some((
            t.get::<String>(1)?.unwrap_or_default(),
            t.get::<String>(2)?.unwrap_or_default(),
            t.get::<JsonB>(3)?.map(|j| j.0).unwrap_or(Value::Null),
        )))
    })
    .or_raise("reading the connection")
}

/// Serves refresh requests posted by backends through shared memory.
pub fn serve_requests(agent: &ureq::Agent) {
    for (connection_id, generation) in crate::shmem::pending_refresh_requests() {
        let _ = refresh(agent, connection_id, generation);
        crate::shmem::finish_refresh_request(connection_id);
    }
}

/// Backend side: a usable token, asking a worker to refresh when needed and waiting for it
/// (the refresh must commit independently of the caller's transaction).
pub fn backend_token(connection_id: i64, stale_generation: Option<i64>, wait_ms: u64) -> TokenStatus {
    let Some(loaded) = credentials::load(connection_id) else {
        return TokenStatus::NeedsReauthorization("connection has no credentials".into());
    };
    if let Some(t) = usable(&loaded, stale_generation) {
        return t;
    }
    if !crate::shmem::workers_running() || !crate::shmem::request_refresh(connection_id, loaded.generation) {
        return TokenStatus::Unavailable(
            "the access token must be refreshed and no integration worker is running to do it (is integration in shared_preload_libraries?)".into(),
        );
    }
    let deadline = Instant::now() + std::time::Duration::from_millis(wait_ms);
    while crate::shmem::refresh_pending(connection_id) && Instant::now() < deadline {
        unsafe {
            pg_sys::pg_usleep(5_000);
        }
        pgrx::check_for_interrupts!();
    }
    match credentials::load(connection_id).and_then(|a| usable(&a, stale_generation)) {
        Some(t) => t,
        None => {
            let status: Option<String> = crate::spi_util::first(
                "SELECT status FROM integ.connections WHERE id = $1",
                &[connection_id.into()],
            );
            if status.as_deref() == Some("needs_reauthorization") {
                TokenStatus::NeedsReauthorization("the connection needs re-authorization".into())
            } else {
                TokenStatus::Unavailable("the access token could not be refreshed in time".into())
            }
        }
    }
}

/// Connections whose access token expires within `ahead_s`: (connection id, generation).
fn expiring(ahead_s: i64) -> Vec<(i64, i64)> {
    Spi::connect(|c| {
        c.select(
            "SELECT k.connection_id, k.generation FROM integ.credential_store k
               JOIN integ.connections c ON c.id = k.connection_id
              WHERE c.status = 'active' AND k.access_expires_at < now() + make_interval(secs => $1)
              ORDER BY k.access_expires_at LIMIT 100",
            None,
            &[(ahead_s as f64).into()],
        )?
        .map(|r| {
            Ok((
                r.get::<i64>(1)?.unwrap_or_default(),
                r.get::<i64>(2)?.unwrap_or_default(),
            ))
        })
        .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
    })
    .or_raise("looking for expiring tokens")
}

/// Refreshes every token that expires within `ahead_s`, before any push needs it. Each refresh
/// takes the connection's lock and is skipped if another process refreshed since we looked.
/// Returns how many were refreshed.
pub fn refresh_expiring(agent: &ureq::Agent, ahead_s: i64) -> usize {
    let due = match worker_transaction(|| expiring(ahead_s)) {
        Ok(d) => d,
        Err(e) => {
            pgrx::warning!("integration: looking for expiring tokens failed: {e}");
            return 0;
        }
    };
    due.into_iter()
        .filter(|(id, generation)| matches!(refresh(agent, *id, *generation), TokenStatus::Ready { generation: g, .. } if g > *generation))
        .count()
}
