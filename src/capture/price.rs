//! Capturing EGDC's price changes: the row trigger `integ.track_price` that `integ.track_prices`
//! installs, and `integ.enqueue_price` for set-based callers. The trigger writes the product's
//! listings and their jobs in the changing transaction (the stock trigger's table path), as the
//! extension's owner: a price is money, read exactly as the column's numeric text.

use super::numeric_text::numeric_text;
use super::{message, row, UserSwitch};
use crate::shmem;
use crate::spi_util::{fail, run_kept, OrRaise};
use pgrx::prelude::*;
use pgrx::{AnyNumeric, PgSqlErrorCode};
use std::borrow::Cow;
use std::ffi::CStr;

/// Records EGDC's new price (and currency) on every listing of (tenant, product) whose price it
/// changes, and makes sure each has a pending job (a new one says it is for the price). Every
/// name is qualified: this runs under the application's search_path.
const ENQUEUE_PRICE: &str = "WITH l AS (
        UPDATE integ.listings
           SET desired_price = $3::pg_catalog.numeric, price_currency = $4, desired_price_at = pg_catalog.clock_timestamp(),
               desired_price_lsn = (pg_catalog.pg_current_wal_insert_lsn() OPERATOR(pg_catalog.-) '0/0'::pg_catalog.pg_lsn)::pg_catalog.int8
         WHERE tenant_id OPERATOR(pg_catalog.=) $1 AND product_id OPERATOR(pg_catalog.=) $2
           AND (desired_price_lsn IS NULL
                OR desired_price IS DISTINCT FROM $3::pg_catalog.numeric OR price_currency IS DISTINCT FROM $4)
     RETURNING id, connection_id, tenant_id, marketplace),
     j AS (
        INSERT INTO integ.sync_jobs (listing_id, connection_id, tenant_id, marketplace, price_only)
        SELECT id, connection_id, tenant_id, marketplace, true FROM l
        ON CONFLICT (listing_id) WHERE state OPERATOR(pg_catalog.=) 'pending' DO NOTHING
     RETURNING 1)
     SELECT (SELECT pg_catalog.count(*) FROM l), (SELECT pg_catalog.count(*) FROM j)";

/// The capture worker's form of ENQUEUE_PRICE: many changes at once, each applied only where
/// the listing holds an older one (by WAL position, as for stock).
const APPLY_PRICES: &str = "WITH m AS (
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[])
                   AS m(tenant_id, product_id, price, currency, lsn, commit_us)),
     l AS (
        UPDATE integ.listings l
           SET desired_price = m.price::numeric, price_currency = m.currency, desired_price_lsn = m.lsn,
               desired_price_at = '2000-01-01 00:00:00+00'::timestamptz + m.commit_us * interval '1 microsecond'
          FROM m
         WHERE l.tenant_id = m.tenant_id AND l.product_id = m.product_id
           AND (l.desired_price_lsn IS NULL OR l.desired_price_lsn < m.lsn)
     RETURNING l.id, l.connection_id, l.tenant_id, l.marketplace),
     j AS (
        INSERT INTO integ.sync_jobs (listing_id, connection_id, tenant_id, marketplace, price_only)
        -- only ON CONFLICT, never this statement's snapshot, says a job is still pending (see APPLY)
        SELECT id, connection_id, tenant_id, marketplace, true FROM l
        ON CONFLICT (listing_id) WHERE state = 'pending' DO NOTHING
     RETURNING 1)
     SELECT (SELECT count(*) FROM l), (SELECT count(*) FROM j)";

/// Applies price changes read back from the WAL (latest per product); returns (listings
/// updated, jobs created). Raises on failure, like `apply_changes`.
pub fn apply_prices(changes: &[message::PriceChange]) -> (i64, i64) {
    let col = |f: &dyn Fn(&message::PriceChange) -> Option<String>| changes.iter().map(f).collect::<Vec<_>>();
    let tenants = col(&|c| Some(c.tenant.clone()));
    let products = col(&|c| Some(c.product.clone()));
    let prices = col(&|c| c.price.clone());
    let currencies = col(&|c| c.currency.clone());
    let lsns: Vec<i64> = changes
        .iter()
        .map(|c| c.commit_lsn.min(i64::MAX as u64) as i64)
        .collect();
    let times: Vec<i64> = changes.iter().map(|c| c.commit_time_us).collect();
    super::probes_only();
    run_kept(
        APPLY_PRICES,
        &[
            tenants.into(),
            products.into(),
            prices.into(),
            currencies.into(),
            lsns.into(),
            times.into(),
        ],
        |t| {
            let row = t.first();
            Ok((row.get::<i64>(1)?.unwrap_or(0), row.get::<i64>(2)?.unwrap_or(0)))
        },
    )
    .or_raise("applying captured price changes")
}

/// Sets EGDC's price of (tenant, product) on its listings and enqueues them; returns how many
/// listings changed. `price` is the column's numeric text (None: NULL).
pub fn enqueue(tenant: &str, product: &str, price: Option<&str>, currency: Option<&str>) -> i64 {
    let (listings, created) = run_kept(
        ENQUEUE_PRICE,
        &[tenant.into(), product.into(), price.into(), currency.into()],
        |t| {
            let row = t.first();
            Ok((row.get::<i64>(1)?.unwrap_or(0), row.get::<i64>(2)?.unwrap_or(0)))
        },
    )
    .or_raise("enqueueing a price change");
    if created > 0 {
        shmem::wake_workers_at_commit();
    }
    listings
}

/// `integ.enqueue_price(tenant, product, price, currency)`: what the trigger does for one
/// product, for set-based callers (`track_prices`, `seed_listing_price`). Not granted to PUBLIC.
#[pg_extern(volatile, parallel_unsafe)]
fn enqueue_price(
    p_tenant: Option<&str>,
    p_product: Option<&str>,
    p_price: Option<AnyNumeric>,
    p_currency: Option<&str>,
) -> i32 {
    let (Some(tenant), Some(product)) = (p_tenant, p_product) else {
        return 0;
    };
    let price = p_price.map(|n| n.to_string());
    enqueue(tenant, product, price.as_deref(), p_currency.filter(|c| !c.is_empty())) as i32
}

/// (tenant, product, price text, currency) of one change, as the trigger hands it on.
type Change<'a> = (&'a [u8], &'a [u8], Option<&'a str>, Option<&'a str>);

/// (tenant, product, price text, currency) of a tuple.
type PriceKey<'t> = (
    Option<Cow<'t, [u8]>>,
    Option<Cow<'t, [u8]>>,
    Option<String>,
    Option<String>,
);

unsafe fn key_of<'t>(
    tuple: *mut pg_sys::HeapTupleData,
    desc: pg_sys::TupleDesc,
    cols: &row::Columns,
    values: &row::Values,
) -> PriceKey<'t> {
    let col = |i: usize| cols.get(i).unwrap_or(0);
    let currency = cols.get(3).and_then(|c| row::key_bytes(tuple, desc, c, values[3]));
    (
        row::key_bytes(tuple, desc, col(0), values[0]),
        row::key_bytes(tuple, desc, col(1), values[1]),
        price_text(tuple, desc, col(2), values[2]),
        currency
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .filter(|c| !c.is_empty()),
    )
}

/// The price column as text, None when NULL: numeric and integers formatted here from the
/// datum (the column's type is one of those, `track_prices` checks), so no output function is
/// called per row.
unsafe fn price_text(
    tuple: *mut pg_sys::HeapTupleData,
    desc: pg_sys::TupleDesc,
    attnum: i32,
    value: Option<pg_sys::Datum>,
) -> Option<String> {
    match row::column_type(desc, attnum) {
        pg_sys::NUMERICOID => {
            let v = value?.cast_mut_ptr::<pg_sys::varlena>();
            let stored = !(pgrx::varlena::varatt_is_4b_c(v) || pgrx::varlena::varatt_is_1b_e(v));
            let read = stored.then(|| {
                let (data, len) = (pgrx::varlena::vardata_any(v), pgrx::varlena::varsize_any_exhdr(v));
                numeric_text(std::slice::from_raw_parts(data.cast::<u8>(), len))
            });
            // a value stored compressed or out of line goes through numeric_out (which
            // detoasts it; NULL never reaches it: it would dereference it)
            read.flatten().or_else(|| {
                let out = pgrx::direct_function_call::<&CStr>(pg_sys::numeric_out, &[value])?;
                out.to_str().ok().map(str::to_string)
            })
        }
        pg_sys::INT2OID => value.map(|d| (d.value() as i16).to_string()),
        pg_sys::INT4OID => value.map(|d| (d.value() as i32).to_string()),
        pg_sys::INT8OID => value.map(|d| (d.value() as i64).to_string()),
        _ => row::column_output(tuple, desc, attnum).map(|b| String::from_utf8_lossy(&b).trim().to_string()),
    }
}

/// The trigger: arguments name the tenant, product and price columns, and optionally the
/// currency column. A row deleted (or moved to another product) takes the old product's price
/// away: its listings get a NULL price, which is never published.
#[pg_trigger]
fn track_price<'a>(trigger: &'a PgTrigger<'a>) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, String> {
    let data = trigger.trigger_data();
    let def = trigger.trigger();
    if data.tg_event & pg_sys::TRIGGER_EVENT_ROW == 0 {
        return Err("integ.track_price must be a FOR EACH ROW trigger".into());
    }
    let nargs = def.tgnargs as usize;
    if !(3..=row::MAX_COLUMNS).contains(&nargs) || def.tgargs.is_null() {
        return Err(
            "integ.track_price needs the tenant, product and price columns (and optionally the currency column)".into(),
        );
    }
    let (old, new) = unsafe {
        let desc = (*data.tg_relation).rd_att;
        let cols = row::column_numbers(desc, def).unwrap_or_else(|shown| {
            fail(
                PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
                format!("integ.track_price: column \"{shown}\" no longer exists; run integ.track_prices again"),
            )
        });
        match data.tg_event & pg_sys::TRIGGER_EVENT_OPMASK {
            pg_sys::TRIGGER_EVENT_INSERT => {
                let tuple = data.tg_trigtuple;
                (None, Some(key_of(tuple, desc, &cols, &row::read(tuple, desc, &cols))))
            }
            pg_sys::TRIGGER_EVENT_DELETE => {
                let tuple = data.tg_trigtuple;
                (Some(key_of(tuple, desc, &cols, &row::read(tuple, desc, &cols))), None)
            }
            pg_sys::TRIGGER_EVENT_UPDATE => {
                // the usual update changes only the price: the old key is then not needed
                let (old, new) = (data.tg_trigtuple, data.tg_newtuple);
                let (values, same) = row::read_update(old, new, desc, &cols);
                let same_key = same[0] && same[1];
                if same_key && same[2..cols.len()].iter().all(|s| *s) {
                    return Ok(None);
                }
                (
                    (!same_key).then(|| key_of(old, desc, &cols, &row::read(old, desc, &cols))),
                    Some(key_of(new, desc, &cols, &values)),
                )
            }
            _ => return Ok(None),
        }
    };
    let mut changes: Vec<Change> = Vec::with_capacity(2);
    if let Some((Some(tenant), Some(product), _, _)) = &old {
        let moved = match &new {
            None => true,
            Some((t, p, _, _)) => t.as_deref() != Some(&**tenant) || p.as_deref() != Some(&**product),
        };
        if moved {
            changes.push((tenant, product, None, None));
        }
    }
    if let Some((Some(tenant), Some(product), price, currency)) = &new {
        changes.push((tenant, product, price.as_deref(), currency.as_deref()));
    }
    if changes.is_empty() {
        return Ok(None);
    }
    // the stock's path: by WAL message while the capture slot exists (a stock and a price
    // changed together are then applied together), else written here
    let payloads: Vec<Vec<u8>> = changes
        .iter()
        .map(|(t, p, price, c)| message::encode_price(t, p, *price, *c))
        .collect();
    if super::send_by_message(message::PRICE_PREFIX, &payloads) {
        return Ok(None);
    }
    let _as_owner = UserSwitch::to_owner();
    for (tenant, product, price, currency) in changes {
        enqueue(
            &String::from_utf8_lossy(tenant),
            &String::from_utf8_lossy(product),
            price,
            currency,
        );
    }
    Ok(None)
}
