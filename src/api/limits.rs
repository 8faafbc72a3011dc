//! The limiter and circuit state in shared memory, as rows (behind the views integ.rate_limits
//! and integ.status).

use crate::limits::{self, Circuit};
use crate::shmem::limiter;
use pgrx::prelude::*;

#[allow(clippy::type_complexity)] // the SQL result row, spelled out for pgrx
#[pg_extern(volatile, parallel_safe)]
fn limiter_state() -> TableIterator<
    'static,
    (
        name!(connection_id, i64),
        name!(requests_per_second, f64),
        name!(effective_per_second, f64),
        name!(burst, i64),
        name!(available, i64),
        name!(next_allowed_in_ms, f64),
        name!(paused_for_ms, f64),
        name!(requests, i64),
        name!(throttled, i64),
        name!(remote_throttled, i64),
        name!(circuit, String),
        name!(consecutive_failures, i32),
    ),
> {
    let now = limiter::now_ns();
    // operators see every connection; a tenant-scoped session only its own
    let visible: Option<Vec<i64>> = (!super::access::caller_is_operator()).then(|| {
        super::access::session_tenant()
            .map(|t| {
                Spi::connect(|c| {
                    c.select(
                        "SELECT id FROM integ.connections WHERE tenant_id = $1",
                        None,
                        &[t.as_str().into()],
                    )?
                    .map(|r| r.get::<i64>(1).map(Option::unwrap_or_default))
                    .collect::<Result<Vec<_>, _>>()
                })
                .unwrap_or_default()
            })
            .unwrap_or_default()
    });
    crate::installation::check();
    let installation = crate::installation::id();
    let rows: Vec<_> = limiter::snapshot()
        .into_iter()
        .filter(|s| s.installation == installation)
        .filter(|s| visible.as_ref().is_none_or(|v| v.contains(&s.connection_id)))
        .map(|s| {
            let q = s.effective_quota(now);
            let available = limits::available(s.tat_ns, now, q);
            let next_ns = limits::wait_for_one(s.tat_ns, now, q);
            (
                s.connection_id,
                s.quota().per_second(),
                q.per_second(),
                q.burst,
                available,
                next_ns as f64 / 1e6,
                (s.blocked_until_ns - now).max(0) as f64 / 1e6,
                s.requests as i64,
                s.throttled as i64,
                s.remote_throttled as i64,
                Circuit::from_u8(s.circuit_state).as_str().to_string(),
                s.failures as i32,
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// (capacity, used, refused) of the shared limiter table.
#[pg_extern(volatile, parallel_safe)]
fn limiter_usage() -> TableIterator<'static, (name!(capacity, i64), name!(used, i64), name!(overflowed, i64))> {
    let (c, u, o) = limiter::usage();
    TableIterator::once((c as i64, u as i64, o as i64))
}
