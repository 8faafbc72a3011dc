//! Capturing EGDC's stock changes: the row trigger `integ.track_stock` that
//! `integ.track_inventory` installs, and `integ.enqueue_stock` for set-based callers.
//!
//! The trigger runs inside every stock-changing transaction of the application, so its cost is
//! the application's. Two paths, one outcome:
//! - by message (while the capture slot exists): the trigger only emits a transactional
//!   logical message into the WAL; the capture worker reads it back after commit and applies
//!   it with `apply_changes`. Nothing is written in the application's transaction.
//! - by table (`integ.logical_capture` off, no slot yet, or a background worker's own change):
//!   the trigger runs one kept plan that writes the listings and their jobs.
//!
//! Both stamp `listings.desired_lsn`, so a message read late never overwrites a newer change.

pub mod message;
mod numeric_text;
pub mod price;
mod row;
pub mod wal;
mod walk;

use crate::shmem;
use crate::spi_util::{fail, run_kept, OrRaise};
use message::StockChange;
use pgrx::prelude::*;
use pgrx::{AnyNumeric, PgSqlErrorCode};
use std::borrow::Cow;
use std::cell::Cell;
use std::ffi::{c_char, CStr};

/// Records the new stock on every listing of (tenant, product) and makes sure each has one
/// pending job. Every name is qualified: this runs under the application's search_path. The
/// stamp is the WAL insert position now: any message committed before it is older.
const ENQUEUE: &str = "WITH l AS (
        UPDATE integ.listings
           SET desired_stock = $3, desired_at = pg_catalog.clock_timestamp(),
               desired_lsn = (pg_catalog.pg_current_wal_insert_lsn() OPERATOR(pg_catalog.-) '0/0'::pg_catalog.pg_lsn)::pg_catalog.int8
         WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND product_id OPERATOR(pg_catalog.=) $2
     RETURNING id, connection_id, tenant_id, marketplace),
     j AS (
        INSERT INTO integ.sync_jobs (listing_id, connection_id, tenant_id, marketplace)
        SELECT id, connection_id, tenant_id, marketplace FROM l
        ON CONFLICT (listing_id) WHERE state OPERATOR(pg_catalog.=) 'pending' DO NOTHING
     RETURNING 1)
     SELECT (SELECT pg_catalog.count(*) FROM l), (SELECT pg_catalog.count(*) FROM j)";

/// The capture worker's form of ENQUEUE: many changes at once, each applied only where the
/// listing holds an older one. Planned under `probes_only`: whichever plan PostgreSQL caches is
/// a per-change index probe (a generic plan made while the tables were small once hash-joined a
/// seq scan of the listings and scanned every pending job for each change: 0.5 s per 1,000).
const APPLY: &str = "WITH m AS (
        SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::int8[], $5::int8[])
                   AS m(tenant_id, product_id, stock, lsn, commit_us)),
     l AS (
        UPDATE integ.listings l
           SET desired_stock = m.stock, desired_lsn = m.lsn,
               desired_at = '2000-01-01 00:00:00+00'::timestamptz + m.commit_us * interval '1 microsecond'
          FROM m
         WHERE l.tenant_id = m.tenant_id AND l.product_id = m.product_id
           AND (l.desired_lsn IS NULL OR l.desired_lsn < m.lsn)
     RETURNING l.id, l.connection_id, l.tenant_id, l.marketplace),
     j AS (
        -- a listing whose job is still pending needs none: the job reads the listing when
        -- claimed. A job claimed meanwhile read it before this commits, and the worker checks
        -- the listing again after the push (see `outbox::record_pushed`). Only ON CONFLICT
        -- says whether the job is still pending: this statement's snapshot may be older than
        -- a claim and the push recorded after it, and then nothing would push this change.
        INSERT INTO integ.sync_jobs (listing_id, connection_id, tenant_id, marketplace)
        SELECT id, connection_id, tenant_id, marketplace FROM l
        ON CONFLICT (listing_id) WHERE state = 'pending' DO NOTHING
     RETURNING 1)
     SELECT (SELECT count(*) FROM l), (SELECT count(*) FROM j)";

/// For the rest of the current transaction (SET LOCAL), plans made are index probes: every
/// join of APPLY is one per change, and estimates from tables that were small when the plan
/// was made must not turn them into scans of every listing or every pending job.
pub(crate) fn probes_only() {
    for name in [
        c"enable_seqscan",
        c"enable_hashjoin",
        c"enable_mergejoin",
        c"enable_bitmapscan",
    ] {
        unsafe {
            pg_sys::set_config_option(
                name.as_ptr(),
                c"off".as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_LOCAL,
                true,
                pgrx::PgLogLevel::ERROR as i32,
                false,
            );
        }
    }
}

/// Applies changes read back from the WAL (latest per product); returns (listings updated,
/// jobs created). Raises on failure: the caller's transaction then rolls back and the slot is
/// not moved, so the changes are read again.
pub fn apply_changes(changes: &[StockChange]) -> (i64, i64) {
    let tenants: Vec<&str> = changes.iter().map(|c| c.tenant.as_str()).collect();
    let products: Vec<&str> = changes.iter().map(|c| c.product.as_str()).collect();
    let stocks: Vec<i32> = changes.iter().map(|c| c.stock).collect();
    let lsns: Vec<i64> = changes
        .iter()
        .map(|c| c.commit_lsn.min(i64::MAX as u64) as i64)
        .collect();
    let times: Vec<i64> = changes.iter().map(|c| c.commit_time_us).collect();
    probes_only();
    run_kept(
        APPLY,
        &[
            tenants.into(),
            products.into(),
            stocks.into(),
            lsns.into(),
            times.into(),
        ],
        |t| {
            let row = t.first();
            Ok((row.get::<i64>(1)?.unwrap_or(0), row.get::<i64>(2)?.unwrap_or(0)))
        },
    )
    .or_raise("applying captured stock changes")
}

/// Sets EGDC's stock of (tenant, product) on its listings and enqueues them; returns how many
/// listings the product has. Runs with the caller's privileges.
pub fn enqueue(tenant: &str, product: &str, stock: i32) -> i64 {
    let (listings, created) = run_kept(ENQUEUE, &[tenant.into(), product.into(), stock.into()], |t| {
        let row = t.first();
        Ok((row.get::<i64>(1)?.unwrap_or(0), row.get::<i64>(2)?.unwrap_or(0)))
    })
    .or_raise("enqueueing a stock change");
    if created > 0 {
        shmem::wake_workers_at_commit();
    }
    listings
}

/// A stock column's text (any numeric type) as the quantity to publish: negative, missing or
/// not-a-number is 0, fractions round down, and the top is what the marketplaces accept.
pub fn normalize_stock(text: Option<&str>) -> i32 {
    let Some(s) = text.map(str::trim) else { return 0 };
    if !s.contains(['e', 'E', 'n', 'N', 'i', 'I']) {
        // plain decimal: the integer part, exactly (no float rounding of long fractions)
        let whole = s.split('.').next().unwrap_or("");
        if whole.starts_with('-') {
            return 0;
        }
        return match whole.trim_start_matches('+').parse::<u128>() {
            Ok(v) => v.min(i32::MAX as u128) as i32,
            Err(_) if !whole.is_empty() && whole.trim_start_matches('+').bytes().all(|b| b.is_ascii_digit()) => {
                i32::MAX
            }
            Err(_) => 0,
        };
    }
    match s.parse::<f64>() {
        Ok(v) if v.is_nan() || v <= 0.0 => 0,
        Ok(v) => v.floor().min(i32::MAX as f64) as i32,
        Err(_) => 0,
    }
}

/// `integ.enqueue_stock(tenant, product, stock)`: what the trigger does for one product, for
/// set-based callers (`track_inventory`, `seed_listing_stock`). Not granted to PUBLIC.
#[pg_extern(volatile, parallel_unsafe)]
fn enqueue_stock(p_tenant: Option<&str>, p_product: Option<&str>, p_stock: Option<AnyNumeric>) -> i32 {
    let (Some(tenant), Some(product)) = (p_tenant, p_product) else {
        return 0;
    };
    let stock = normalize_stock(p_stock.map(|n| n.to_string()).as_deref());
    enqueue(tenant, product, stock) as i32
}

thread_local! {
    /// (oid of schema integ, its owner), looked up once per backend and schema.
    static OWNER: Cell<(pg_sys::Oid, pg_sys::Oid)> = const { Cell::new((pg_sys::Oid::INVALID, pg_sys::Oid::INVALID)) };
}

/// The owner of the extension's schema, who owns the outbox tables.
fn extension_owner() -> pg_sys::Oid {
    let nsp = unsafe { pg_sys::get_namespace_oid(c"integ".as_ptr(), true) };
    let (cached_nsp, cached_owner) = OWNER.with(Cell::get);
    if nsp == cached_nsp && cached_owner != pg_sys::Oid::INVALID {
        return cached_owner;
    }
    if nsp == pg_sys::Oid::INVALID {
        fail(
            PgSqlErrorCode::ERRCODE_INVALID_SCHEMA_NAME,
            "integration: schema integ is missing",
        );
    }
    let owner = run_kept(
        "SELECT nspowner FROM pg_catalog.pg_namespace WHERE oid OPERATOR(pg_catalog.=) $1",
        &[nsp.into()],
        |t| t.first().get::<pg_sys::Oid>(1),
    )
    .or_raise("looking up the extension owner")
    .unwrap_or(pg_sys::Oid::INVALID);
    OWNER.with(|c| c.set((nsp, owner)));
    owner
}

/// Restores the session user when dropped (also during an error's unwinding; an aborted
/// transaction restores it too).
pub(crate) struct UserSwitch {
    user: pg_sys::Oid,
    context: i32,
}

impl UserSwitch {
    /// Acts as the extension's owner, the way PostgreSQL's own RI triggers act as the table's
    /// owner: the application needs no privilege on the outbox tables.
    pub(crate) fn to_owner() -> Self {
        let owner = extension_owner();
        let mut user = pg_sys::Oid::INVALID;
        let mut context = 0;
        unsafe {
            pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
            pg_sys::SetUserIdAndSecContext(
                owner,
                context | (pg_sys::SECURITY_LOCAL_USERID_CHANGE | pg_sys::SECURITY_NOFORCE_RLS) as i32,
            );
        }
        UserSwitch { user, context }
    }
}

impl Drop for UserSwitch {
    fn drop(&mut self) {
        unsafe { pg_sys::SetUserIdAndSecContext(self.user, self.context) };
    }
}

/// The stock column as the quantity to publish (`normalize_stock`); integers are read from the
/// datum, other types through their text.
unsafe fn column_stock(
    tuple: *mut pg_sys::HeapTupleData,
    desc: pg_sys::TupleDesc,
    attnum: i32,
    value: Option<pg_sys::Datum>,
) -> i32 {
    let typ = row::column_type(desc, attnum);
    if typ != pg_sys::INT2OID && typ != pg_sys::INT4OID && typ != pg_sys::INT8OID {
        let text = row::column_output(tuple, desc, attnum);
        return normalize_stock(text.as_deref().and_then(|b| std::str::from_utf8(b).ok()));
    }
    let Some(datum) = value else {
        return 0;
    };
    let v = match typ {
        pg_sys::INT2OID => datum.value() as i16 as i64,
        pg_sys::INT4OID => datum.value() as i32 as i64,
        _ => datum.value() as i64,
    };
    v.clamp(0, i32::MAX as i64) as i32
}

/// (tenant, product, stock) of a tuple; the stock only when asked for (an old tuple's is not
/// needed).
type Key<'t> = (Option<Cow<'t, [u8]>>, Option<Cow<'t, [u8]>>, i32);

unsafe fn key_of<'t>(
    tuple: *mut pg_sys::HeapTupleData,
    desc: pg_sys::TupleDesc,
    cols: &row::Columns,
    values: &row::Values,
    with_stock: bool,
) -> Key<'t> {
    let col = |i: usize| cols.get(i).unwrap_or(0);
    (
        row::key_bytes(tuple, desc, col(0), values[0]),
        row::key_bytes(tuple, desc, col(1), values[1]),
        if with_stock {
            column_stock(tuple, desc, col(2), values[2])
        } else {
            0
        },
    )
}

/// The trigger: arguments name the tenant, product and stock columns. A change of tenant or
/// product moves the stock: the old key goes to 0.
#[pg_trigger]
fn track_stock<'a>(trigger: &'a PgTrigger<'a>) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, String> {
    let data = trigger.trigger_data();
    let def = trigger.trigger();
    if data.tg_event & pg_sys::TRIGGER_EVENT_ROW == 0 {
        return Err("integ.track_stock must be a FOR EACH ROW trigger".into());
    }
    if def.tgnargs != 3 || def.tgargs.is_null() {
        return Err("integ.track_stock needs three arguments: tenant, product and stock columns".into());
    }
    let (old, new) = unsafe {
        let desc = (*data.tg_relation).rd_att;
        let cols = row::column_numbers(desc, def).unwrap_or_else(|shown| {
            fail(
                PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
                format!("integ.track_stock: column \"{shown}\" no longer exists; run integ.track_inventory again"),
            )
        });
        match data.tg_event & pg_sys::TRIGGER_EVENT_OPMASK {
            pg_sys::TRIGGER_EVENT_INSERT => {
                let tuple = data.tg_trigtuple;
                (
                    None,
                    Some(key_of(tuple, desc, &cols, &row::read(tuple, desc, &cols), true)),
                )
            }
            pg_sys::TRIGGER_EVENT_DELETE => {
                let tuple = data.tg_trigtuple;
                (
                    Some(key_of(tuple, desc, &cols, &row::read(tuple, desc, &cols), false)),
                    None,
                )
            }
            pg_sys::TRIGGER_EVENT_UPDATE => {
                // the usual update changes only the stock: the old key is then not needed
                let (old, new) = (data.tg_trigtuple, data.tg_newtuple);
                let (values, same) = row::read_update(old, new, desc, &cols);
                let same_key = same[0] && same[1];
                if same_key && same[2] {
                    return Ok(None);
                }
                (
                    (!same_key).then(|| key_of(old, desc, &cols, &row::read(old, desc, &cols), false)),
                    Some(key_of(new, desc, &cols, &values, true)),
                )
            }
            _ => return Ok(None),
        }
    };
    let mut changes: Vec<(&[u8], &[u8], i32)> = Vec::with_capacity(2);
    if let Some((Some(tenant), Some(product), _)) = &old {
        let moved = match &new {
            None => true,
            Some((t, p, _)) => t.as_deref() != Some(&**tenant) || p.as_deref() != Some(&**product),
        };
        if moved {
            changes.push((tenant, product, 0));
        }
    }
    if let Some((Some(tenant), Some(product), stock)) = &new {
        changes.push((tenant, product, *stock));
    }
    if changes.is_empty() {
        return Ok(None);
    }
    let payloads: Vec<Vec<u8>> = changes.iter().map(|(t, p, s)| message::encode(t, p, *s)).collect();
    if send_by_message(message::PREFIX, &payloads) {
        return Ok(None);
    }
    let _as_owner = UserSwitch::to_owner();
    for (tenant, product, stock) in changes {
        enqueue(
            &String::from_utf8_lossy(tenant),
            &String::from_utf8_lossy(product),
            stock,
        );
    }
    Ok(None)
}

unsafe extern "C-unwind" {
    /// replication/message.h (PostgreSQL 15's four-argument form); called through
    /// `pg_guard_ffi_boundary` so an ERROR it raises unwinds as a Rust panic.
    fn LogLogicalMessage(prefix: *const c_char, message: *const c_char, size: usize, transactional: bool) -> u64;
    /// access/xact.h; likewise called only inside a guarded call.
    fn GetCurrentTransactionId() -> pg_sys::TransactionId;
}

/// Sends a trigger's changes by message when they go that way: each of `payloads` becomes a
/// transactional logical message with our `prefix`, read back by the capture worker, and the
/// capture is woken at commit. False (nothing sent) when they go by table.
///
/// The transaction's id is assigned before the flag is read: the capture worker, retiring the
/// slot, clears the flag and then waits for every transaction id assigned before, so a
/// transaction that saw the flag set is always read. Background workers (orders applied by
/// our own workers) keep the table path: their change is visible in the listings the moment
/// they commit. One guarded call for all of it: a trigger runs on every tracked row.
pub(crate) fn send_by_message(prefix: &CStr, payloads: &[Vec<u8>]) -> bool {
    if !shmem::capture_by_message() || unsafe { pg_sys::IsBackgroundWorker } {
        return false;
    }
    let sent = unsafe {
        pg_sys::ffi::pg_guard_ffi_boundary(|| {
            GetCurrentTransactionId();
            if !shmem::capture_by_message() {
                return false;
            }
            for payload in payloads {
                LogLogicalMessage(prefix.as_ptr(), payload.as_ptr().cast(), payload.len(), true);
            }
            true
        })
    };
    if sent {
        shmem::wake_capture_at_commit();
    }
    sent
}

#[cfg(test)]
mod tests {
    use super::normalize_stock;

    #[test]
    fn stock_text_becomes_a_publishable_quantity() {
        let cases: &[(Option<&str>, i32)] = &[
            (None, 0),
            (Some("7"), 7),
            (Some("12.999999999999999999999"), 12),
            (Some("-3"), 0),
            (Some("-0.5"), 0),
            (Some("0.9"), 0),
            (Some("99999999999999999999999999999999999999999"), i32::MAX),
            (Some("2147483648"), i32::MAX),
            (Some("1e3"), 1000),
            (Some("1.5E+2"), 150),
            (Some("NaN"), 0),
            (Some("Infinity"), i32::MAX),
            (Some("-Infinity"), 0),
            (Some(" 5 "), 5),
            (Some("abc"), 0),
            (Some(""), 0),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_stock(*input), *want, "{input:?}");
        }
    }
}
