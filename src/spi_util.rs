//! Small helpers around SPI and errors, shared by the SQL API, the outbox and the workers.

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

/// Raise a SQL error with a code. Messages never carry secrets.
#[allow(unreachable_code)]
pub fn fail(code: PgSqlErrorCode, msg: impl AsRef<str>) -> ! {
    let msg: String = msg.as_ref().to_string();
    ereport!(ERROR, code, msg);
}

pub fn invalid(msg: impl AsRef<str>) -> ! {
    fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, msg)
}

/// A required argument of a function that also takes optional ones (pgrx would answer a NULL
/// with an internal error): NULL is a clear error naming the argument.
pub fn required<'a>(value: Option<&'a str>, name: &str) -> &'a str {
    value.unwrap_or_else(|| {
        fail(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("{name} must not be NULL"),
        )
    })
}

pub fn not_found(msg: impl AsRef<str>) -> ! {
    fail(PgSqlErrorCode::ERRCODE_NO_DATA_FOUND, msg)
}

/// Turn an SPI error into a SQL error (an internal fault: our own queries failed).
pub trait OrRaise<T> {
    fn or_raise(self, what: &str) -> T;
}

impl<T> OrRaise<T> for Result<T, pgrx::spi::SpiError> {
    fn or_raise(self, what: &str) -> T {
        match self {
            Ok(v) => v,
            Err(e) => fail(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                format!("integration: {what}: {e}"),
            ),
        }
    }
}

/// Run `body` in its own transaction inside a background worker. An ERROR raised inside is
/// caught, the transaction rolled back, and the message returned, so one bad job or tenant can
/// never crash-loop the worker.
pub fn worker_transaction<R>(body: impl FnOnce() -> R) -> Result<R, String> {
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    // Unwind safety: on error the transaction is aborted and nothing the body touched is reused.
    let result = PgTryBuilder::new(std::panic::AssertUnwindSafe(move || Ok(body())))
        .catch_others(|e| Err(caught_message(&e)))
        .execute();
    unsafe {
        match result {
            Ok(_) => {
                pg_sys::PopActiveSnapshot();
                pg_sys::CommitTransactionCommand();
            }
            Err(_) => pg_sys::AbortCurrentTransaction(),
        }
    }
    result
}

pub(crate) fn caught_message(e: &pg_sys::panic::CaughtError) -> String {
    use pg_sys::panic::CaughtError;
    match e {
        CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => r.message().to_string(),
        CaughtError::RustPanic { ereport, .. } => ereport.message().to_string(),
    }
}

/// The first column of the first row, or None when there is no row (Spi::get_one treats an
/// empty result as an error).
pub fn first<T: pgrx::FromDatum + pgrx::IntoDatum>(sql: &str, args: &[pgrx::datum::DatumWithOid]) -> Option<T> {
    Spi::connect_mut(|c| {
        let t = c.update(sql, Some(1), args)?;
        if t.is_empty() {
            return Ok(None);
        }
        t.first().get::<T>(1)
    })
    .or_raise("running a query")
}

thread_local! {
    /// Plans prepared once per process and kept for its lifetime (leaked on purpose: there is
    /// one per distinct statement). The plan cache re-plans them after DDL or an extension
    /// re-install, and reports an error if a statement no longer makes sense.
    static KEPT_PLANS: std::cell::RefCell<std::collections::HashMap<&'static str, &'static pgrx::spi::OwnedPreparedStatement>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// Runs `sql` with a kept plan (prepared on first use with the argument types of `args`) and
/// hands the result to `read`. For the hot paths: the stock trigger and the workers' batches,
/// which would otherwise parse and plan the same statement thousands of times a second.
///
/// `sql` must schema-qualify everything (operators included: `OPERATOR(pg_catalog.=)`) when it
/// may run under a caller's search_path.
pub fn run_kept<R>(
    sql: &'static str,
    args: &[pgrx::datum::DatumWithOid],
    read: impl FnOnce(pgrx::spi::SpiTupleTable<'_>) -> Result<R, pgrx::spi::SpiError>,
) -> Result<R, pgrx::spi::SpiError> {
    Spi::connect_mut(|client| {
        let plan = kept_plan(sql, args, |types| Ok(client.prepare_mut(sql, types)?.keep()))?;
        let table = client.update(plan, None, args)?;
        read(table)
    })
}

/// `run_kept` through SPI's read-only path, which assigns no transaction id: for the capture
/// worker's slot functions, one called after every read.
pub fn select_kept<R>(
    sql: &'static str,
    args: &[pgrx::datum::DatumWithOid],
    read: impl FnOnce(pgrx::spi::SpiTupleTable<'_>) -> Result<R, pgrx::spi::SpiError>,
) -> Result<R, pgrx::spi::SpiError> {
    Spi::connect(|client| {
        let plan = kept_plan(sql, args, |types| Ok(client.prepare(sql, types)?.keep()))?;
        let table = client.select(plan, None, args)?;
        read(table)
    })
}

/// The kept plan of `sql`, prepared by `prepare` (given the argument types of `args`) on first use.
fn kept_plan(
    sql: &'static str,
    args: &[pgrx::datum::DatumWithOid],
    prepare: impl FnOnce(&[pgrx::PgOid]) -> Result<pgrx::spi::OwnedPreparedStatement, pgrx::spi::SpiError>,
) -> Result<&'static pgrx::spi::OwnedPreparedStatement, pgrx::spi::SpiError> {
    if let Some(p) = KEPT_PLANS.with(|p| p.borrow().get(sql).copied()) {
        return Ok(p);
    }
    let types: Vec<pgrx::PgOid> = args.iter().map(|a| pgrx::PgOid::from(a.oid())).collect();
    let p: &'static pgrx::spi::OwnedPreparedStatement = Box::leak(Box::new(prepare(&types)?));
    KEPT_PLANS.with(|m| m.borrow_mut().insert(sql, p));
    Ok(p)
}
