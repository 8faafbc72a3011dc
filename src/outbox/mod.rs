//! The outbox: claiming due jobs, recording what happened to them, reclaiming the jobs of dead
//! workers and purging finished ones. Every function runs SPI on the calling process's main
//! thread, inside the caller's transaction.

pub mod backoff;
pub mod price;

use crate::spi_util::{run_kept, OrRaise};
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::Value;

/// A job claimed by a worker, with everything needed to push it.
#[derive(Clone, Debug)]
pub struct ClaimedJob {
    pub job_id: i64,
    pub listing_id: i64,
    pub connection_id: i64,
    pub tenant_id: String,
    pub marketplace: String,
    pub attempts: i32,
    pub product_id: String,
    pub external_id: String,
    pub listing_settings: Value,
    /// What this channel is to show: EGDC's stock through the channel's stock rules.
    pub desired_stock: Option<i32>,
    /// EGDC's own stock, as read from the listing.
    pub egdc_stock: Option<i32>,
    pub remote_stock: Option<i32>,
    pub connection_settings: Value,
    /// The stock last pushed (a job made for a price sends the stock only if it differs).
    pub last_pushed_stock: Option<i32>,
    /// The job was made for a price change.
    pub price_only: bool,
    /// EGDC's price as the listing holds it; None when no tracked price table has the product.
    pub price: Option<price::ListingPrice>,
    /// The listing is held (`integ.hold`, `integ.revert`): nothing of EGDC's goes out, only the
    /// values a revert set (`desired_stock` is then the revert's stock).
    pub held: Option<Held>,
}

/// What a held listing may still be brought to: the values `integ.revert` found it had.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Held {
    pub stock: Option<i32>,
    pub price: Option<rust_decimal::Decimal>,
}

/// `p(connection_id, next_attempt_at)`: each connection with pending jobs and its earliest
/// one, found by skipping through the pending index (one probe per such connection, however
/// long its backlog). Idle, that is one probe: never one per connection, which at 10,000
/// connections was most of an idle worker's time.
macro_rules! pending_by_connection {
    () => {
        "WITH RECURSIVE p AS (
            (SELECT j.connection_id, j.next_attempt_at FROM integ.sync_jobs j
              WHERE j.state = 'pending' ORDER BY j.connection_id, j.next_attempt_at LIMIT 1)
            UNION ALL
            SELECT n.connection_id, n.next_attempt_at
              FROM p CROSS JOIN LATERAL (
                   SELECT j.connection_id, j.next_attempt_at FROM integ.sync_jobs j
                    WHERE j.state = 'pending' AND j.connection_id > p.connection_id
                    ORDER BY j.connection_id, j.next_attempt_at LIMIT 1) n)"
    };
}

/// Active connections that have due pending jobs: (id, marketplace, settings).
pub fn connections_with_due_work() -> Vec<(i64, String, Value)> {
    run_kept(
        concat!(
            pending_by_connection!(),
            " SELECT c.id, c.marketplace, c.settings FROM p JOIN integ.connections c ON c.id = p.connection_id
               WHERE c.status = 'active' AND p.next_attempt_at <= now()"
        ),
        &[],
        |rows| {
            let mut out = Vec::new();
            for r in rows {
                out.push((
                    r.get::<i64>(1)?.unwrap_or_default(),
                    r.get::<String>(2)?.unwrap_or_default(),
                    r.get::<JsonB>(3)?.map(|j| j.0).unwrap_or(Value::Null),
                ));
            }
            Ok(out)
        },
    )
    .or_raise("looking for due work")
}

/// Claims due jobs round-robin: at most `cap` from each listed connection (never more than
/// `per_connection_max`), oldest first, at most one in flight per listing. A tenant with a huge
/// backlog therefore cannot crowd out another tenant's single change.
pub fn claim(caps: &[(i64, i32)], per_connection_max: i64, lease_ms: i64) -> Vec<ClaimedJob> {
    if caps.is_empty() {
        return Vec::new();
    }
    let ids: Vec<i64> = caps.iter().map(|c| c.0).collect();
    let limits: Vec<i32> = caps.iter().map(|c| c.1).collect();
    run_kept(
        // Every join is driven by ids (= ANY, LATERAL ... LIMIT 1) so that the kept generic plan
        // stays a handful of index probes however large the tables grow.
        "WITH q AS (SELECT q.cid, q.cap FROM unnest($1::bigint[], $2::int[]) AS q(cid, cap)
                      JOIN integ.connections c ON c.id = q.cid AND c.status = 'active'),
             cand AS (
                SELECT d.id, q.cap, row_number() OVER (PARTITION BY q.cid ORDER BY d.next_attempt_at, d.id) AS rn
                  FROM q CROSS JOIN LATERAL (
                        SELECT j.id, j.next_attempt_at FROM integ.sync_jobs j
                         WHERE j.connection_id = q.cid AND j.state = 'pending' AND j.next_attempt_at <= now()
                           -- a scalar subquery, not NOT EXISTS: it stays a per-row index probe,
                           -- where an anti-join may scan every in-flight job for each candidate
                           AND (SELECT f.id FROM integ.sync_jobs f
                                 WHERE f.listing_id = j.listing_id AND f.state = 'in_flight' LIMIT 1) IS NULL
                         ORDER BY j.next_attempt_at
                         LIMIT $3
                           FOR UPDATE OF j SKIP LOCKED) d),
             claimed AS (
                UPDATE integ.sync_jobs s
                   SET state = 'in_flight', attempts = s.attempts + 1, claimed_by = pg_backend_pid(),
                       lease_until = now() + make_interval(secs => $4 / 1000.0), updated_at = now()
                 WHERE s.id = ANY (ARRAY(SELECT id FROM cand WHERE rn <= cap))
             RETURNING s.id, s.listing_id, s.connection_id, s.tenant_id, s.marketplace, s.attempts, s.price_only)
             SELECT s.id, s.listing_id, s.connection_id, s.tenant_id, s.marketplace, s.attempts,
                    l.product_id, l.external_id, l.settings, l.desired_stock, l.remote_stock, c.settings,
                    l.last_pushed_stock, s.price_only, l.desired_price_lsn, l.desired_price::text, l.price_currency,
                    l.last_pushed_price::text, l.price_refused_lsn, l.held_since IS NOT NULL, l.revert_stock,
                    l.revert_price::text
               FROM claimed s
              CROSS JOIN LATERAL (SELECT * FROM integ.listings l WHERE l.id = s.listing_id LIMIT 1) l
              CROSS JOIN LATERAL (SELECT settings FROM integ.connections c WHERE c.id = s.connection_id LIMIT 1) c",
        &[
            ids.into(),
            limits.into(),
            per_connection_max.into(),
            (lease_ms as f64).into(),
        ],
        |rows| {
            let mut jobs = Vec::with_capacity(rows.len());
            for r in rows {
                jobs.push(ClaimedJob {
                    job_id: r.get(1)?.unwrap_or_default(),
                    listing_id: r.get(2)?.unwrap_or_default(),
                    connection_id: r.get(3)?.unwrap_or_default(),
                    tenant_id: r.get(4)?.unwrap_or_default(),
                    marketplace: r.get(5)?.unwrap_or_default(),
                    attempts: r.get(6)?.unwrap_or_default(),
                    product_id: r.get(7)?.unwrap_or_default(),
                    external_id: r.get(8)?.unwrap_or_default(),
                    listing_settings: r.get::<JsonB>(9)?.map(|j| j.0).unwrap_or(Value::Null),
                    desired_stock: r.get(10)?,
                    egdc_stock: r.get(10)?,
                    remote_stock: r.get(11)?,
                    connection_settings: r.get::<JsonB>(12)?.map(|j| j.0).unwrap_or(Value::Null),
                    last_pushed_stock: r.get(13)?,
                    price_only: r.get(14)?.unwrap_or(false),
                    price: price::ListingPrice::read(
                        r.get(15)?,
                        r.get::<String>(16)?,
                        r.get::<String>(17)?,
                        r.get::<String>(18)?,
                        r.get(19)?,
                    ),
                    held: match r.get::<bool>(20)? {
                        Some(true) => Some(Held {
                            stock: r.get(21)?,
                            price: r
                                .get::<String>(22)?
                                .and_then(|t| rust_decimal::Decimal::from_str_exact(&t).ok()),
                        }),
                        _ => None,
                    },
                });
            }
            // what each channel is shown: EGDC's stock through its stock rules (a held listing:
            // the stock a revert put back, as it was)
            for j in &mut jobs {
                let rules = crate::rules::effective(&j.connection_settings, &j.listing_settings);
                j.desired_stock = match &j.held {
                    Some(h) => h.stock,
                    None => j.egdc_stock.map(|s| rules.apply(s)),
                };
            }
            Ok(jobs)
        },
    )
    .or_raise("claiming jobs")
}

/// What happened to one push (or one synchronous push without a job).
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Sent `stock`; the marketplace reports `remote` (a difference is a mismatch).
    Pushed { stock: i32, remote: Option<i32> },
    /// Not sent: the listing already holds it (or no EGDC stock is known).
    Skipped { stock: Option<i32>, reason: String },
    /// Failed; try again after `delay_ms`. `burn` says whether it costs an attempt.
    Retry {
        stock: i32,
        error: String,
        delay_ms: i64,
        burn: bool,
    },
    /// Failed for good.
    Dead { stock: i32, error: String },
    /// Not sent: its connection's rate limit or circuit says wait. Costs no attempt and is not
    /// an attempt in the log.
    Deferred { delay_ms: i64 },
}

/// The facts of an attempt that go to the sync log.
#[derive(Clone, Debug, Default)]
pub struct Attempt {
    pub http_status: Option<i32>,
    pub latency_ms: Option<f64>,
    /// Listing settings the call found out (`PushResult::learned`), kept by [`learn`].
    pub learned: Option<serde_json::Map<String, serde_json::Value>>,
    /// API requests the attempt made (0 for every job of a batch but its first).
    pub calls: i32,
}

/// The listing keeps what a call found out about it (merged into its settings; a null value
/// removes the key), whatever the call's outcome.
pub fn learn(listing_id: i64, learned: &serde_json::Map<String, serde_json::Value>) {
    Spi::run_with_args(
        "UPDATE integ.listings l
            SET settings = (SELECT coalesce(jsonb_object_agg(key, value), '{}')
                              FROM jsonb_each(l.settings || $2) WHERE value <> 'null'::jsonb)
          WHERE l.id = $1",
        &[
            listing_id.into(),
            pgrx::JsonB(serde_json::Value::Object(learned.clone())).into(),
        ],
    )
    .or_raise("keeping what a call found out about a listing");
}

/// Identifies the listing an outcome belongs to.
#[derive(Clone)]
pub struct Target<'a> {
    pub job_id: Option<i64>,
    pub attempt: Option<i32>,
    pub listing_id: i64,
    pub connection_id: i64,
    pub tenant_id: &'a str,
    pub marketplace: &'a str,
    pub product_id: &'a str,
    pub external_id: &'a str,
    /// EGDC's stock the attempt was computed from (the log shows it next to what was sent).
    pub egdc_stock: Option<i32>,
    /// Set for a price operation: the price sent and EGDC's it came from.
    pub price: Option<PriceFacts>,
    /// A job's: the `desired_price_lsn` it was claimed with (None: no price then). A price that
    /// moved on while the job was in flight found it claimed and made no job of its own.
    pub price_lsn: Option<i64>,
}

/// What the sync log shows of a price operation.
#[derive(Clone, Copy, Debug, Default)]
pub struct PriceFacts {
    pub sent: Option<rust_decimal::Decimal>,
    pub egdc: Option<rust_decimal::Decimal>,
}

/// The log's outcome word for an outcome.
pub fn outcome_word(o: &Outcome) -> &'static str {
    match o {
        Outcome::Pushed { stock, remote } if remote.is_some_and(|r| r != *stock) => "mismatch",
        Outcome::Pushed { .. } => "success",
        Outcome::Skipped { .. } => "skipped",
        Outcome::Retry { .. } => "retry",
        Outcome::Dead { .. } => "dead",
        Outcome::Deferred { .. } => "deferred",
    }
}

/// Records an outcome: listing, job, log; re-enqueues the listing when EGDC's stock moved on
/// while the push was in flight. Returns true when new work was enqueued. A push is recorded by
/// `record_pushed`, the same statement the workers' batches use.
pub fn record(t: &Target, o: &Outcome, a: &Attempt) -> bool {
    if let Outcome::Pushed { stock, remote } = o {
        return record_pushed(&[PushedJob {
            target: t.clone(),
            stock: *stock,
            remote: *remote,
            attempt: a.clone(),
        }]);
    }
    let word = outcome_word(o);
    let (stock, remote, error) = match o {
        Outcome::Skipped { stock, reason } => (*stock, *stock, Some(reason.clone())),
        Outcome::Retry { stock, error, .. } | Outcome::Dead { stock, error } => {
            (Some(*stock), None, Some(error.clone()))
        }
        Outcome::Pushed { .. } | Outcome::Deferred { .. } => (None, None, None),
    };
    if !matches!(o, Outcome::Deferred { .. }) {
        let operation = if t.price.is_some() { "price" } else { "push" };
        log(t, operation, word, stock, remote, a, error.as_deref());
    }
    let mut requeued = false;
    let Some(job_id) = t.job_id else { return requeued };
    match o {
        Outcome::Skipped { .. } | Outcome::Dead { .. } => {
            // pushed nothing: a newer stock that found this job pending gets its own attempt
            let (state, pushed) = match o {
                Outcome::Skipped { .. } => ("done", stock),
                _ => ("dead", None),
            };
            let check = t.egdc_stock.or(stock);
            Spi::run_with_args(
                "UPDATE integ.sync_jobs SET state = $2, pushed_stock = coalesce($3, pushed_stock), last_http_status = $4,
                        last_error = $5, lease_until = NULL, updated_at = now(), recheck = $6, recheck_stock = $7,
                        recheck_price_lsn = $8
                  WHERE id = $1",
                &[
                    job_id.into(),
                    state.into(),
                    pushed.into(),
                    a.http_status.into(),
                    error.into(),
                    in_worker().into(),
                    check.into(),
                    t.price_lsn.into(),
                ],
            )
            .or_raise("recording a job that pushed nothing");
            requeued |= recheck(t.listing_id, check);
        }
        Outcome::Retry {
            error, delay_ms, burn, ..
        } => {
            forget_published(t.listing_id, t.price.is_some());
            let attempts = if *burn {
                t.attempt.unwrap_or(1)
            } else {
                t.attempt.unwrap_or(1) - 1
            };
            reschedule(job_id, t.listing_id, attempts, *delay_ms, Some(error), a.http_status);
        }
        Outcome::Deferred { delay_ms } => {
            reschedule(job_id, t.listing_id, t.attempt.unwrap_or(1) - 1, *delay_ms, None, None);
        }
        Outcome::Pushed { .. } => {} // recorded above
    }
    requeued
}

/// After an attempt with no answer saying it worked: the write may have landed all the same (a
/// timeout or a dropped answer after the marketplace applied it), so what the listing shows is
/// unknown, and the next attempt writes EGDC's value even when it equals the one known before.
/// (Skipping it as "already there" left a listing at the timed-out value: the 30-minute soak.)
fn forget_published(listing_id: i64, price: bool) {
    Spi::run_with_args(
        "UPDATE integ.listings SET remote_stock = NULL,
                last_pushed_price = CASE WHEN $2 THEN NULL ELSE last_pushed_price END
          WHERE id = $1 AND (remote_stock IS NOT NULL OR ($2 AND last_pushed_price IS NOT NULL))",
        &[listing_id.into(), price.into()],
    )
    .or_raise("forgetting what a failed write left unknown");
}

/// A successful push, as the batch recorder needs it.
pub struct PushedJob<'a> {
    pub target: Target<'a>,
    pub stock: i32,
    pub remote: Option<i32>,
    pub attempt: Attempt,
}

/// The statement recording successful pushes: `$listing` adds to what is read of each listing,
/// `$requeue` makes the jobs of listings that moved on.
macro_rules! record_pushed_sql {
    ($listing:literal, $requeue:literal, $calls:literal) => {
        concat!(
            "WITH r AS (
            SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::int[], $4::int[], $5::int[], $6::float8[],
                                 $7::int[], $8::text[], $9::text[], $10::int[], $11::int8[], $12::int[])
                       AS r(job_id, listing_id, stock, remote, http_status, latency_ms, attempt, outcome, error, egdc,
                            price_lsn, calls)),
         l AS (
            UPDATE integ.listings l
               SET last_pushed_stock = r.stock, last_pushed_at = now(), remote_stock = coalesce(r.remote, r.stock)
              FROM r WHERE l.id = ANY ($2) AND l.id = r.listing_id
         RETURNING l.id, l.connection_id, l.tenant_id, l.marketplace, l.product_id, l.external_id,
                   l.desired_stock IS DISTINCT FROM r.egdc AS stock_moved, ", $listing, " r.*),
         requeued AS (
            INSERT INTO integ.sync_jobs ", $requeue, "
            ON CONFLICT (listing_id) WHERE state = 'pending' DO NOTHING
         RETURNING 1),
         done AS (
            UPDATE integ.sync_jobs s
               SET state = 'done', pushed_stock = r.stock, last_http_status = r.http_status, last_error = r.error,
                   lease_until = NULL, updated_at = now()
              FROM r WHERE s.id = ANY ($1) AND s.id = r.job_id
         RETURNING 1),
         logged AS (
            INSERT INTO integ.sync_log (tenant_id, marketplace, connection_id, listing_id, job_id, product_id,
                                        external_id, operation, outcome, stock, remote_stock, http_status,
                                        latency_ms, attempt, error, egdc_stock", $calls, ")
            SELECT tenant_id, marketplace, connection_id, id, job_id, product_id, external_id, 'push', outcome,
                   stock, remote, http_status, latency_ms, attempt, error, egdc", $calls, "
              FROM l
         RETURNING 1),
         noted AS (
            -- at most once a second per connection: every worker records into the same few
            -- connection rows, and a write per batch made them wait on each other's row locks
            UPDATE integ.connections c SET last_success_at = now()
             WHERE c.id = ANY (ARRAY(SELECT DISTINCT connection_id FROM l))
               AND (c.last_success_at IS NULL OR c.last_success_at < now() - interval '1 second')
         RETURNING 1)
         SELECT (SELECT count(*) FROM requeued), (SELECT count(*) FROM done), (SELECT count(*) FROM logged),
                (SELECT count(*) FROM noted)"
        )
    };
}
/// A worker's jobs: a price change that found the job claimed (in flight) made no job of its
/// own, so a listing whose price moved on since the claim gets one for its price.
const RECORD_JOBS_PUSHED: &str = record_pushed_sql!(
    "l.desired_price_lsn IS DISTINCT FROM r.price_lsn AS price_moved,",
    "(listing_id, connection_id, tenant_id, marketplace, price_only)
     SELECT id, connection_id, tenant_id, marketplace, NOT stock_moved FROM l WHERE stock_moved OR price_moved",
    ", calls"
);
/// A backend's `sync_product` (no job).
const RECORD_PUSHED: &str = record_pushed_sql!(
    "",
    "(listing_id, connection_id, tenant_id, marketplace)
     SELECT id, connection_id, tenant_id, marketplace FROM l WHERE stock_moved",
    ", calls"
);
/// Records many successful pushes in one statement: listings, jobs, log rows and the
/// connections' last success. A listing whose EGDC stock moved on while its push was in
/// flight gets a new pending job (the listing update waits for a writer still holding the row,
/// then sees its value). Returns true when such work was enqueued.
pub fn record_pushed(batch: &[PushedJob]) -> bool {
    if batch.is_empty() {
        return false;
    }
    let col = |f: &dyn Fn(&PushedJob) -> Option<i64>| batch.iter().map(f).collect::<Vec<Option<i64>>>();
    let jobs = col(&|p| p.target.job_id);
    let listings = col(&|p| Some(p.target.listing_id));
    let stocks: Vec<i32> = batch.iter().map(|p| p.stock).collect();
    let remotes: Vec<Option<i32>> = batch.iter().map(|p| p.remote).collect();
    let statuses: Vec<Option<i32>> = batch.iter().map(|p| p.attempt.http_status).collect();
    let latencies: Vec<Option<f64>> = batch.iter().map(|p| p.attempt.latency_ms).collect();
    let attempts: Vec<Option<i32>> = batch.iter().map(|p| p.target.attempt).collect();
    let outcomes: Vec<String> = batch
        .iter()
        .map(|p| {
            let o = Outcome::Pushed {
                stock: p.stock,
                remote: p.remote,
            };
            outcome_word(&o).to_string()
        })
        .collect();
    let egdc: Vec<Option<i32>> = batch.iter().map(|p| p.target.egdc_stock.or(Some(p.stock))).collect();
    let price_lsns = col(&|p| p.target.price_lsn);
    let calls: Vec<i32> = batch.iter().map(|p| p.attempt.calls).collect();
    let errors: Vec<Option<String>> = batch
        .iter()
        .map(|p| {
            p.remote
                .filter(|r| *r != p.stock)
                .map(|r| format!("mismatch: sent {}, marketplace reports {r}", p.stock))
        })
        .collect();
    let sql = if batch.iter().all(|p| p.target.job_id.is_some()) {
        RECORD_JOBS_PUSHED
    } else {
        RECORD_PUSHED
    };
    run_kept(
        sql,
        &[
            jobs.into(),
            listings.into(),
            stocks.into(),
            remotes.into(),
            statuses.into(),
            latencies.into(),
            attempts.into(),
            outcomes.into(),
            errors.into(),
            egdc.into(),
            price_lsns.into(),
            calls.into(),
        ],
        |t| t.first().get::<i64>(1),
    )
    .or_raise("recording pushes")
    .unwrap_or(0)
        > 0
}

/// Jobs of held listings go back to the queue due never: `integ.release` makes them due. A
/// job finding another pending one for its listing folds into it.
pub fn park(job_ids: &[i64]) {
    if job_ids.is_empty() {
        return;
    }
    Spi::run_with_args(
        "WITH j AS (SELECT s.id, s.listing_id FROM integ.sync_jobs s WHERE s.id = ANY ($1)),
              folded AS (
                UPDATE integ.sync_jobs p SET next_attempt_at = 'infinity'
                  FROM j WHERE p.listing_id = j.listing_id AND p.state = 'pending'
                RETURNING j.id)
         UPDATE integ.sync_jobs s
            SET state = CASE WHEN s.id IN (SELECT id FROM folded) THEN 'done' ELSE 'pending' END,
                next_attempt_at = 'infinity', attempts = greatest(s.attempts - 1, 0), lease_until = NULL,
                last_error = 'held (integ.hold): waits for integ.release', updated_at = now()
          WHERE s.id = ANY ($1)",
        &[job_ids.to_vec().into()],
    )
    .or_raise("parking the jobs of held listings");
}

/// Puts a job back in the queue after `delay_ms`. If a newer pending job exists for the listing,
/// folds into it (keeping the later due time and the attempt count) instead of creating a
/// second pending job. `error` None keeps the job's last error.
fn reschedule(
    job_id: i64,
    listing_id: i64,
    attempts: i32,
    delay_ms: i64,
    error: Option<&str>,
    http_status: Option<i32>,
) {
    Spi::run_with_args(
        "WITH p AS (
            UPDATE integ.sync_jobs p
               SET attempts = greatest(p.attempts, $5),
                   next_attempt_at = greatest(p.next_attempt_at, now() + make_interval(secs => $4 / 1000.0)),
                   last_error = coalesce($2, p.last_error), last_http_status = coalesce($3, p.last_http_status)
             WHERE p.listing_id = $6 AND p.state = 'pending'
         RETURNING p.id)
         UPDATE integ.sync_jobs s
            SET state = CASE WHEN EXISTS (SELECT 1 FROM p) THEN 'done' ELSE 'pending' END,
                attempts = $5,
                next_attempt_at = now() + make_interval(secs => $4 / 1000.0),
                last_error = coalesce($2, s.last_error), last_http_status = coalesce($3, s.last_http_status),
                lease_until = NULL, claimed_by = NULL, updated_at = now()
          WHERE s.id = $1",
        &[
            job_id.into(),
            error.into(),
            http_status.into(),
            (delay_ms as f64).into(),
            attempts.into(),
            listing_id.into(),
        ],
    )
    .or_raise("rescheduling a job");
}

thread_local! {
    /// Jobs flagged `recheck` may be waiting (see `recheck`). Starts true: a worker looks once
    /// at start for flags a stopped or crashed worker left. Main thread of a worker only.
    static RECHECKS_DUE: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

fn in_worker() -> bool {
    unsafe { pg_sys::IsBackgroundWorker }
}

/// Flagged jobs looked at per statement (written into `RECHECK_FLAGGED` as a literal: the kept
/// generic plan sized a `LIMIT $1` at a tenth of the table and hash-joined all of it, a second
/// per thousand flags with a million jobs).
const RECHECK_BATCH: i64 = 1000;

/// The flagged jobs' listings, enqueued where EGDC's stock or price moved on from the job's (a
/// job for the price alone when only the price did); listings a writer still holds are skipped (their flag stays for the next turn); a flag is cleared in the
/// transaction that looked.
const RECHECK_FLAGGED: &str = "WITH f AS (
            SELECT j.id, j.listing_id, j.recheck_stock AS stock, j.recheck_price_lsn AS price_lsn
              FROM integ.sync_jobs j
             WHERE j.recheck ORDER BY j.id LIMIT 1000 FOR UPDATE OF j SKIP LOCKED),
          l AS (SELECT l.id, l.connection_id, l.tenant_id, l.marketplace,
                       l.desired_stock IS NOT NULL AND l.desired_stock IS DISTINCT FROM f.stock AS stock_moved,
                       l.desired_price_lsn IS DISTINCT FROM f.price_lsn AS price_moved
                  FROM f JOIN integ.listings l ON l.id = f.listing_id FOR SHARE OF l SKIP LOCKED),
          r AS (
            INSERT INTO integ.sync_jobs (listing_id, connection_id, tenant_id, marketplace, price_only)
            SELECT id, connection_id, tenant_id, marketplace, NOT stock_moved FROM l WHERE stock_moved OR price_moved
            ON CONFLICT (listing_id) WHERE state = 'pending' DO NOTHING
         RETURNING 1),
          cleared AS (
            UPDATE integ.sync_jobs s SET recheck = false, recheck_stock = NULL, recheck_price_lsn = NULL
              FROM f
             WHERE s.id = f.id
               AND (f.listing_id IN (SELECT id FROM l)
                    OR NOT EXISTS (SELECT 1 FROM integ.listings x WHERE x.id = f.listing_id))
         RETURNING 1)
     SELECT (SELECT count(*) FROM r), (SELECT count(*) FROM f), (SELECT count(*) FROM cleared)";

/// After a job that pushed nothing (skipped, dead): has EGDC's stock moved on from `stock` (or,
/// for a worker's job, its price from the one it was claimed with)? A
/// transaction still writing a new stock into the listing (the application's, or the
/// capture's apply) found this job pending and so enqueued nothing, and a plain read does not
/// see its stock yet. In a worker the job was flagged `recheck` in the statement that recorded
/// it; the worker looks after that transaction has committed (`recheck_flagged`), skipping
/// listings a writer still holds (looked at again next turn). It never waits for the writer:
/// waiting while holding the job deadlocked with the writer's `ON CONFLICT`, and waiting while
/// holding other listings' locks can too. A backend (`sync_product`) checks at once with a
/// plain read. Returns true when work was enqueued now.
fn recheck(listing_id: i64, stock: Option<i32>) -> bool {
    if in_worker() {
        rechecks_due();
        return false;
    }
    Spi::get_one_with_args::<i64>(
        "WITH r AS (
            INSERT INTO integ.sync_jobs (listing_id, connection_id, tenant_id, marketplace)
            SELECT id, connection_id, tenant_id, marketplace FROM integ.listings
             WHERE id = $1 AND desired_stock IS NOT NULL AND desired_stock IS DISTINCT FROM $2
            ON CONFLICT (listing_id) WHERE state = 'pending' DO NOTHING
         RETURNING 1)
         SELECT count(*) FROM r",
        &[listing_id.into(), stock.into()],
    )
    .or_raise("re-enqueueing")
    .unwrap_or(0)
        > 0
}

/// Whether flagged jobs may be waiting for this worker's look.
pub fn rechecks_pending() -> bool {
    RECHECKS_DUE.with(|d| d.get())
}

/// Asks for a look at the flagged jobs on the next turn (after a failure, or periodically for
/// flags another worker left).
pub fn rechecks_due() {
    RECHECKS_DUE.with(|d| d.set(true));
}

/// Looks at flagged jobs' listings in one statement (call in a transaction of its own);
/// returns whether work was enqueued. Flags left (listings still held, or more than one
/// statement's worth) keep the look due.
pub fn recheck_flagged() -> bool {
    RECHECKS_DUE.with(|d| d.set(false));
    let (requeued, looked, cleared) = run_kept(RECHECK_FLAGGED, &[], |t| {
        let row = t.first();
        Ok((
            row.get::<i64>(1)?.unwrap_or(0),
            row.get::<i64>(2)?.unwrap_or(0),
            row.get::<i64>(3)?.unwrap_or(0),
        ))
    })
    .or_raise("checking listings whose job pushed nothing");
    if cleared < looked || looked >= RECHECK_BATCH {
        rechecks_due();
    }
    requeued > 0
}

/// Writes one sync-log row. `error` must already be secret-free.
pub fn log(
    t: &Target,
    operation: &str,
    outcome: &str,
    stock: Option<i32>,
    remote: Option<i32>,
    a: &Attempt,
    error: Option<&str>,
) {
    Spi::run_with_args(
        "INSERT INTO integ.sync_log (tenant_id, marketplace, connection_id, listing_id, job_id, product_id,
                                     external_id, operation, outcome, stock, remote_stock, http_status,
                                     latency_ms, attempt, error, egdc_stock, price, egdc_price, calls)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17::numeric, $18::numeric,
                 $19)",
        &[
            t.tenant_id.into(),
            t.marketplace.into(),
            t.connection_id.into(),
            (if t.listing_id > 0 { Some(t.listing_id) } else { None }).into(),
            t.job_id.into(),
            (if t.product_id.is_empty() {
                None
            } else {
                Some(t.product_id)
            })
            .into(),
            (if t.external_id.is_empty() {
                None
            } else {
                Some(t.external_id)
            })
            .into(),
            operation.into(),
            outcome.into(),
            stock.into(),
            remote.into(),
            a.http_status.into(),
            a.latency_ms.into(),
            t.attempt.into(),
            error.into(),
            t.egdc_stock.into(),
            t.price.and_then(|p| p.sent).map(|d| d.to_string()).into(),
            t.price.and_then(|p| p.egdc).map(|d| d.to_string()).into(),
            a.calls.into(),
        ],
    )
    .or_raise("writing the sync log");
}

/// Notes a connection's latest success or error for `integ.status`.
pub fn note_connection(connection_id: i64, error: Option<&str>) {
    match error {
        None => Spi::run_with_args(
            "UPDATE integ.connections SET last_success_at = now() WHERE id = $1",
            &[connection_id.into()],
        ),
        Some(e) => Spi::run_with_args(
            "UPDATE integ.connections SET last_error = $2, last_error_at = now() WHERE id = $1",
            &[connection_id.into(), e.into()],
        ),
    }
    .or_raise("updating connection status");
}

/// Jobs left in flight by a worker that died (its lease ran out or its process is gone) go
/// back to pending, or fold into a newer pending job of the same listing.
pub fn reclaim_abandoned() -> i64 {
    Spi::get_one::<i64>(
        "WITH lost AS (
            SELECT j.id, j.listing_id FROM integ.sync_jobs j
             WHERE j.state = 'in_flight'
               AND (j.lease_until < now()
                    OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a WHERE a.pid = j.claimed_by))
               FOR UPDATE SKIP LOCKED),
         fixed AS (
            UPDATE integ.sync_jobs s
               SET state = CASE WHEN EXISTS (SELECT 1 FROM integ.sync_jobs p
                                              WHERE p.listing_id = lost.listing_id AND p.state = 'pending')
                                THEN 'done' ELSE 'pending' END,
                   lease_until = NULL, claimed_by = NULL, next_attempt_at = now(), updated_at = now(),
                   last_error = 'reclaimed after its worker stopped'
              FROM lost WHERE s.id = lost.id
         RETURNING 1)
         SELECT count(*) FROM fixed",
    )
    .or_raise("reclaiming jobs")
    .unwrap_or(0)
}

/// Deletes finished jobs older than the retention (the sync log keeps the history).
pub fn purge_done(retention_s: i64) -> i64 {
    Spi::get_one_with_args::<i64>(
        "WITH d AS (
            DELETE FROM integ.sync_jobs WHERE id IN (
                SELECT id FROM integ.sync_jobs
                 WHERE state = 'done' AND NOT recheck AND updated_at < now() - make_interval(secs => $1)
                 LIMIT 10000)
         RETURNING 1)
         SELECT count(*) FROM d",
        &[(retention_s as f64).into()],
    )
    .or_raise("purging finished jobs")
    .unwrap_or(0)
}

/// Milliseconds until the next pending job of an active connection not in `excluded` becomes
/// due (0: now). One index probe per connection.
pub fn next_due_in_ms(excluded: &[i64]) -> Option<i64> {
    // min() over no rows is NULL, and must stay NULL ("nothing due"): greatest(0, NULL) is 0,
    // which once made idle workers spin.
    // held jobs wait at 'infinity': they are never due (and infinity - now() is an error)
    run_kept(
        concat!(
            pending_by_connection!(),
            " SELECT (extract(epoch FROM min(p.next_attempt_at) - now()) * 1000)::float8
                FROM p JOIN integ.connections c ON c.id = p.connection_id
               WHERE c.status = 'active' AND c.id <> ALL($1) AND p.next_attempt_at < 'infinity'"
        ),
        &[excluded.to_vec().into()],
        |t| t.first().get::<f64>(1),
    )
    .or_raise("looking for due jobs")
    .map(|ms| ms.max(0.0).ceil() as i64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_recheck_statement_takes_the_batch_it_is_counted_against() {
        assert!(super::RECHECK_FLAGGED.contains(&format!("LIMIT {} FOR UPDATE", super::RECHECK_BATCH)));
    }
}
