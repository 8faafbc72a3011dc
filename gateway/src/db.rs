//! The PostgreSQL pool and the only SQL the gateway runs: fixed statements with bind
//! parameters, so no request can make it run anything else.

use crate::config::Config;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

/// Is the role we connect as a superuser? (The gateway refuses to run as one.)
pub const IS_SUPERUSER: &str = "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user";
/// The largest webhook body the extension accepts (bytes; no row without the extension preloaded).
pub const WEBHOOK_MAX_BYTES: &str =
    "SELECT setting::bigint FROM pg_catalog.pg_settings WHERE name = 'integ.webhook_max_bytes'";
pub const RECEIVE_WEBHOOK: &str = "SELECT integ.receive_webhook($1::text, $2::jsonb, $3::bytea)";
pub const AUTHORIZE_URL: &str = "SELECT integ.authorize_url($1::text, $2::text, $3::text, $4::jsonb)";
pub const COMPLETE_AUTHORIZATION: &str = "SELECT integ.complete_authorization($1::text, $2::jsonb)";
pub const METRICS: &str = "SELECT integ.metrics()";
/// Background workers of the extension, whether the capture runs, and how far behind it is
/// (a SECURITY DEFINER function: the gateway needs no right to read other sessions).
pub const READINESS: &str = "SELECT workers, capture_running, capture_unread_bytes FROM integ.readiness()";
pub const DASHBOARD_STATUS: &str = "SELECT connection_id, tenant_id, marketplace, status, circuit, queue_depth,
                                           extract(epoch FROM oldest_pending_age)::float8, dead, last_error,
                                           to_char(last_error_at, 'YYYY-MM-DD HH24:MI:SS TZ'),
                                           to_char(last_success, 'YYYY-MM-DD HH24:MI:SS TZ')
                                      FROM integ.status ORDER BY tenant_id, marketplace, connection_id";
pub const DASHBOARD_ALERTS: &str = "SELECT id, connection_id, tenant_id, marketplace, kind, message,
                                           to_char(at, 'YYYY-MM-DD HH24:MI:SS TZ')
                                      FROM integ.alerts WHERE resolved_at IS NULL AND acknowledged_at IS NULL
                                     ORDER BY at DESC, id DESC LIMIT 200";
pub const DASHBOARD_CONFLICTS: &str = "SELECT id, connection_id, tenant_id, marketplace, product_id, external_id,
                                              egdc_stock, remote_stock, to_char(detected_at, 'YYYY-MM-DD HH24:MI:SS TZ')
                                         FROM integ.conflicts WHERE status = 'open'
                                        ORDER BY detected_at DESC, id DESC LIMIT 200";
/// Hour buckets of the last day: calls, failures, summed latency (ms).
pub const DASHBOARD_HEALTH: &str =
    "SELECT connection_id, floor(extract(epoch FROM start))::bigint, calls, failures, latency_ms_sum,
                                           floor(extract(epoch FROM now()))::bigint
                                      FROM integ.health_buckets
                                     WHERE width_s = 3600 AND start > now() - interval '24 hours'
                                     ORDER BY connection_id, start";

pub fn pool(config: &Config) -> Result<Pool, String> {
    let mut pg: tokio_postgres::Config = config
        .dsn
        .parse()
        .map_err(|e| format!("--dsn is not a valid connection string: {e}"))?;
    // statement_timeout on every session: a stuck call answers 503 before Shopify gives up (5 s)
    let options = format!(
        "{} -c statement_timeout={}",
        pg.get_options().unwrap_or(""),
        config.statement_timeout_ms
    );
    pg.options(options.trim());
    if pg.get_application_name().is_none() {
        pg.application_name("integ-gateway");
    }
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(config.pool_wait());
    }
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(config.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(config.pool_wait()))
        .create_timeout(Some(config.pool_wait()))
        .recycle_timeout(Some(config.pool_wait()))
        .build()
        .map_err(|e| format!("cannot build the connection pool: {e}"))
}

/// Why a database call did not answer, as the HTTP edge sees it.
#[derive(Debug)]
pub enum DbError {
    /// The database is down, restarting, overloaded or too slow: retry later (503).
    Unavailable(&'static str),
    /// The extension refused the input (a data exception, an authorization refused, no such
    /// thing): the caller's fault (4xx). The SQLSTATE and message, for deciding the answer; never
    /// shown or logged as they are.
    Refused { code: String, message: String },
    /// Anything else: the gateway's own misconfiguration (a missing grant) or a bug (500).
    Internal(&'static str),
}

impl From<PoolError> for DbError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Backend(e) => e.into(),
            PoolError::Timeout(_) => DbError::Unavailable("pool_timeout"),
            _ => DbError::Unavailable("pool_closed"),
        }
    }
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        let Some(db) = e.as_db_error() else {
            // no answer from the server: it is gone, or the connection broke
            return DbError::Unavailable("db_unavailable");
        };
        let code = db.code();
        let class = &code.code()[..2];
        if *code == SqlState::QUERY_CANCELED {
            return DbError::Unavailable("statement_timeout");
        }
        match class {
            // connection exception, insufficient resources, operator intervention (shutdown,
            // crash recovery), system error, serialization failure or deadlock
            "08" | "53" | "57" | "58" | "40" => DbError::Unavailable("db_unavailable"),
            // data exception, no data, invalid authorization, raised by the extension's checks
            "22" | "02" | "28" | "P0" => DbError::Refused {
                code: code.code().to_string(),
                message: db.message().to_string(),
            },
            "42" if *code == SqlState::INSUFFICIENT_PRIVILEGE => DbError::Internal("permission_denied"),
            "42" if *code == SqlState::UNDEFINED_FUNCTION || *code == SqlState::UNDEFINED_TABLE => {
                DbError::Internal("extension_missing")
            }
            _ => DbError::Internal("db_error"),
        }
    }
}

impl DbError {
    /// A fixed, secret-free code for the log line.
    pub fn code(&self) -> &'static str {
        match self {
            DbError::Unavailable(c) | DbError::Internal(c) => c,
            DbError::Refused { .. } => "refused",
        }
    }
}

pub async fn client(pool: &Pool) -> Result<Object, DbError> {
    Ok(pool.get().await?)
}

/// Runs one of the fixed statements and returns its single value.
pub async fn one<T>(pool: &Pool, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> Result<T, DbError>
where
    T: for<'a> tokio_postgres::types::FromSql<'a>,
{
    let client = client(pool).await?;
    let statement = client.prepare_cached(sql).await?;
    let row = client.query_one(&statement, params).await?;
    row.try_get(0).map_err(|_| DbError::Internal("unexpected_result"))
}
