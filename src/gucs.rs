//! Every setting of the extension, in one place.

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;

pub static DATABASE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"postgres"));
pub static KEY_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static WORKERS: GucSetting<i32> = GucSetting::<i32>::new(1);
pub static HTTP_CONCURRENCY: GucSetting<i32> = GucSetting::<i32>::new(32);
pub static MAX_ATTEMPTS: GucSetting<i32> = GucSetting::<i32>::new(10);
pub static MAX_ORDER_QUANTITY: GucSetting<i32> = GucSetting::<i32>::new(10_000);
pub static MAX_STOCK: GucSetting<i32> = GucSetting::<i32>::new(10_000_000);
pub static BACKOFF_BASE_MS: GucSetting<i32> = GucSetting::<i32>::new(1_000);
pub static BACKOFF_MAX_MS: GucSetting<i32> = GucSetting::<i32>::new(300_000);
pub static HTTP_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(10_000);
pub static POLL_INTERVAL_MS: GucSetting<i32> = GucSetting::<i32>::new(1_000);
pub static MAX_LIMITERS: GucSetting<i32> = GucSetting::<i32>::new(10_000);
pub static CIRCUIT_FAILURES: GucSetting<i32> = GucSetting::<i32>::new(5);
pub static CIRCUIT_COOLDOWN_MS: GucSetting<i32> = GucSetting::<i32>::new(30_000);
pub static RATE_LIMIT_MERCADOLIBRE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"200/min"));
pub static RATE_LIMIT_SHOPIFY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"4/s:40"));
pub static RATE_LIMIT_TIKTOK: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"1000/hour"));
pub static RATE_LIMIT_SHEIN: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"100/min"));
pub static DONE_RETENTION_S: GucSetting<i32> = GucSetting::<i32>::new(3_600);
pub static WEBHOOK_MAX_BYTES: GucSetting<i32> = GucSetting::<i32>::new(1_048_576);
pub static TENANT_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static ALLOWED_HOSTS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static WEBHOOK_BASE_URL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static WEBHOOK_RETENTION_S: GucSetting<i32> = GucSetting::<i32>::new(7 * 86_400);
pub static SYNC_LOG_RETENTION_S: GucSetting<i32> = GucSetting::<i32>::new(30 * 86_400);
pub static ALERT_ERROR_RATE: GucSetting<f64> = GucSetting::<f64>::new(5.0);
pub static ALERT_WINDOW_S: GucSetting<i32> = GucSetting::<i32>::new(300);
pub static ALERT_MIN_CALLS: GucSetting<i32> = GucSetting::<i32>::new(20);
pub static ALERT_BACKLOG_AGE_S: GucSetting<i32> = GucSetting::<i32>::new(3_600);
pub static ALERT_WEBHOOK_MS: GucSetting<i32> = GucSetting::<i32>::new(500);
pub static ALERT_CIRCUIT_OPEN_S: GucSetting<i32> = GucSetting::<i32>::new(600);
pub static REFRESH_AHEAD_S: GucSetting<i32> = GucSetting::<i32>::new(600);
pub static RECONCILE_INTERVAL_S: GucSetting<i32> = GucSetting::<i32>::new(3_600);
pub static LOGICAL_CAPTURE: GucSetting<bool> = GucSetting::<bool>::new(true);
pub static CAPTURE_CPU_PERCENT: GucSetting<i32> = GucSetting::<i32>::new(2);
pub static CAPTURE_MAX_DELAY_MS: GucSetting<i32> = GucSetting::<i32>::new(5_000);

/// Deliveries are kept at least this long: the window in which a duplicate is recognised.
pub const MIN_WEBHOOK_RETENTION_S: i32 = 86_400;

/// The most workers `integ.workers` may ask for (the size of the latch table).
pub const MAX_WORKERS: usize = 16;

/// Defines the settings. Postmaster-level ones can only be defined while the library is being
/// preloaded; a backend loading it later reads them as plain placeholders (see `key_file`).
pub fn define(preloading: bool) {
    if preloading {
        define_postmaster();
    }
    define_runtime();
}

fn define_postmaster() {
    GucRegistry::define_string_guc(
        c"integ.database",
        c"Database the integration workers serve.",
        c"The database where CREATE EXTENSION integration was run.",
        &DATABASE,
        GucContext::Postmaster,
        GucFlags::empty(),
    );
    GucRegistry::define_string_guc(
        c"integ.key_file",
        c"File holding the credential master key.",
        c"Read once at server start; the key itself is never visible to SQL.",
        &KEY_FILE,
        GucContext::Postmaster,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_int_guc(
        c"integ.workers",
        c"Number of background workers pushing the outbox.",
        c"",
        &WORKERS,
        0,
        MAX_WORKERS as i32,
        GucContext::Postmaster,
        GucFlags::empty(),
    );
    GucRegistry::define_int_guc(
        c"integ.max_limiters",
        c"Rate limiters (one per connection) the shared table holds.",
        c"Connections beyond it are not limited locally; see docs/settings.md.",
        &MAX_LIMITERS,
        16,
        1_000_000,
        GucContext::Postmaster,
        GucFlags::empty(),
    );
}

fn define_runtime() {
    GucRegistry::define_string_guc(
        c"integ.tenant_id",
        c"The tenant this session acts for (row-level security and the functions' tenant checks).",
        c"Roles that are not integ_operator members see and change only this tenant's rows.",
        &TENANT_ID,
        GucContext::Userset,
        GucFlags::empty(),
    );
    GucRegistry::define_int_guc(
        c"integ.max_order_quantity",
        c"Most units one order line may take; a delivery with a larger line is dead, nothing of it applied.",
        c"",
        &MAX_ORDER_QUANTITY,
        1,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::empty(),
    );
    GucRegistry::define_int_guc(
        c"integ.max_stock",
        c"Largest stock a marketplace may report; a value outside 0 to this is a conflict to review, never adopted.",
        c"",
        &MAX_STOCK,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::empty(),
    );
    GucRegistry::define_int_guc(
        c"integ.webhook_max_bytes",
        c"Largest webhook body integ.receive_webhook accepts; larger ones are refused with 413.",
        c"",
        &WEBHOOK_MAX_BYTES,
        1_024,
        64 * 1_048_576,
        GucContext::Sighup,
        GucFlags::UNIT_BYTE,
    );
    GucRegistry::define_int_guc(
        c"integ.circuit_failures",
        c"Consecutive failures (5xx, timeouts, network) that open a connection's circuit.",
        c"",
        &CIRCUIT_FAILURES,
        1,
        10_000,
        GucContext::Sighup,
        GucFlags::empty(),
    );
    GucRegistry::define_int_guc(
        c"integ.circuit_cooldown",
        c"How long an open circuit waits before letting one probe through.",
        c"",
        &CIRCUIT_COOLDOWN_MS,
        10,
        86_400_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    for (name, setting) in [
        (c"integ.rate_limit_mercadolibre", &RATE_LIMIT_MERCADOLIBRE),
        (c"integ.rate_limit_shopify", &RATE_LIMIT_SHOPIFY),
        (c"integ.rate_limit_tiktok", &RATE_LIMIT_TIKTOK),
        (c"integ.rate_limit_shein", &RATE_LIMIT_SHEIN),
    ] {
        GucRegistry::define_string_guc(
            name,
            c"Per-tenant request budget on this marketplace: requests/period[:burst].",
            c"For example 200/min or 4/s:40. A connection's settings.rate_limit overrides it.",
            setting,
            GucContext::Sighup,
            GucFlags::empty(),
        );
    }
    GucRegistry::define_int_guc(
        c"integ.http_concurrency",
        c"HTTP requests each worker keeps in flight at once.",
        c"",
        &HTTP_CONCURRENCY,
        1,
        1024,
        GucContext::Sighup,
        GucFlags::empty(),
    );
    GucRegistry::define_int_guc(
        c"integ.max_attempts",
        c"Attempts before a failing job is dead-lettered.",
        c"",
        &MAX_ATTEMPTS,
        1,
        1000,
        GucContext::Sighup,
        GucFlags::empty(),
    );
    GucRegistry::define_int_guc(
        c"integ.backoff_base",
        c"First retry delay; doubles each attempt, with full jitter.",
        c"",
        &BACKOFF_BASE_MS,
        1,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"integ.backoff_max",
        c"Longest retry delay.",
        c"",
        &BACKOFF_MAX_MS,
        1,
        86_400_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"integ.http_timeout",
        c"Timeout of one marketplace HTTP request, connect included.",
        c"",
        &HTTP_TIMEOUT_MS,
        100,
        600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"integ.poll_interval",
        c"How often an idle worker looks for due jobs without being woken.",
        c"Workers are woken at commit; this is the fallback and the retry-timer granularity cap.",
        &POLL_INTERVAL_MS,
        10,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"integ.done_retention",
        c"How long finished jobs stay in integ.sync_jobs before workers purge them.",
        c"The sync log keeps every attempt regardless.",
        &DONE_RETENTION_S,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_string_guc(
        c"integ.allowed_hosts",
        c"Hosts a connection's base_url may point at besides the marketplaces' own (comma-separated host or host:port).",
        c"Empty: only the real marketplace hosts. Keeps a tenant setting from turning the workers into a proxy to internal addresses.",
        &ALLOWED_HOSTS,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"integ.webhook_base_url",
        c"Where the gateway receives webhooks (e.g. https://hooks.example.com): connections are subscribed at <this>/webhooks/<marketplace>.",
        c"Empty: no subscription is made and integ.status says so. A change re-subscribes every connection.",
        &WEBHOOK_BASE_URL,
        GucContext::Sighup,
        GucFlags::empty(),
    );
    GucRegistry::define_int_guc(
        c"integ.webhook_retention",
        c"How long received webhooks stay in integ.webhooks (at least 1 day).",
        c"Duplicates are recognised for as long as the first delivery is kept. Deliveries still to be applied are never purged.",
        &WEBHOOK_RETENTION_S,
        MIN_WEBHOOK_RETENTION_S,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"integ.sync_log_retention",
        c"How long rows stay in integ.sync_log (at least 1 minute).",
        c"Only rows already counted in integ.usage and integ.health are deleted, so pruning changes no figure.",
        &SYNC_LOG_RETENTION_S,
        60,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_float_guc(
        c"integ.alert_error_rate",
        c"A connection whose failed calls pass this percent of its calls over integ.alert_window raises an alert (0: never).",
        c"Only once integ.alert_min_calls calls were made in the window. 429s are not failures.",
        &ALERT_ERROR_RATE,
        0.0,
        100.0,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"integ.alert_window",
        c"The window the alert rules judge rates and means over, and how long a condition must stay clear before its alert resolves.",
        c"",
        &ALERT_WINDOW_S,
        10,
        86_400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"integ.alert_min_calls",
        c"Calls a connection must have made in integ.alert_window before its error rate can raise an alert.",
        c"",
        &ALERT_MIN_CALLS,
        1,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"integ.alert_backlog_age",
        c"A connection whose oldest pending job has waited longer raises an alert (0: never).",
        c"",
        &ALERT_BACKLOG_AGE_S,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"integ.alert_webhook_ms",
        c"A connection whose webhooks take longer on average from receipt to applied over integ.alert_window raises an alert (0: never).",
        c"",
        &ALERT_WEBHOOK_MS,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"integ.alert_circuit_open",
        c"A connection whose circuit has stayed open (or half-open) this long raises an alert (0: never).",
        c"",
        &ALERT_CIRCUIT_OPEN_S,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"integ.refresh_ahead",
        c"How long before an access token expires the workers refresh it (0: only when a call needs it).",
        c"",
        &REFRESH_AHEAD_S,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_bool_guc(
        c"integ.logical_capture",
        c"Capture stock changes as WAL messages that the capture worker applies after commit.",
        c"The trigger then writes nothing in the application's transaction but one WAL record. Off: the trigger writes the outbox itself. Uses the physical replication slot integ_capture (wal_level replica or above).",
        &LOGICAL_CAPTURE,
        GucContext::Sighup,
        GucFlags::empty(),
    );
    GucRegistry::define_int_guc(
        c"integ.capture_cpu_percent",
        c"Share of one core the capture worker takes at most under heavy sustained writing (consecutive reads of 16 or more changes).",
        c"Reads are spaced so that reading and applying (CPU time) take at most this share; a busier stream waits longer between reads (up to integ.capture_max_delay) and its repeated changes of one product are applied once. A lighter stream is read every 5 ms; a backlog of more than 100,000 changes is read without pause.",
        &CAPTURE_CPU_PERCENT,
        1,
        100,
        GucContext::Sighup,
        GucFlags::empty(),
    );
    GucRegistry::define_int_guc(
        c"integ.capture_max_delay",
        c"Longest wait between two reads of the capture worker under heavy sustained writing.",
        c"Bounds how long integ.capture_cpu_percent may hold a change back; a lone change is read at once.",
        &CAPTURE_MAX_DELAY_MS,
        10,
        60_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"integ.reconcile_interval",
        c"How often workers reconcile each connection's listings with the marketplace (0: never).",
        c"Reads every mapped listing's remote stock within the rate limit and repairs drift through the connection's conflict_strategy; also polls MercadoLibre's missed notifications.",
        &RECONCILE_INTERVAL_S,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
}

/// A snapshot of the settings a worker hands to its HTTP threads (GUCs cannot be read there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    pub http_concurrency: usize,
    pub max_attempts: i32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub http_timeout_ms: u64,
    pub poll_interval_ms: u64,
    pub done_retention_s: i64,
    pub webhook_retention_s: i64,
    pub reconcile_interval_s: i64,
    pub refresh_ahead_s: i64,
    pub circuit_failures: u32,
    pub circuit_cooldown_ns: i64,
}

impl Tuning {
    pub fn read() -> Tuning {
        Tuning {
            http_concurrency: HTTP_CONCURRENCY.get().max(1) as usize,
            max_attempts: MAX_ATTEMPTS.get().max(1),
            backoff_base_ms: BACKOFF_BASE_MS.get().max(1) as u64,
            backoff_max_ms: BACKOFF_MAX_MS.get().max(1) as u64,
            http_timeout_ms: HTTP_TIMEOUT_MS.get().max(100) as u64,
            poll_interval_ms: POLL_INTERVAL_MS.get().max(10) as u64,
            done_retention_s: DONE_RETENTION_S.get().max(0) as i64,
            webhook_retention_s: WEBHOOK_RETENTION_S.get().max(MIN_WEBHOOK_RETENTION_S) as i64,
            reconcile_interval_s: RECONCILE_INTERVAL_S.get().max(0) as i64,
            refresh_ahead_s: REFRESH_AHEAD_S.get().max(0) as i64,
            circuit_failures: CIRCUIT_FAILURES.get().max(1) as u32,
            circuit_cooldown_ns: CIRCUIT_COOLDOWN_MS.get().max(10) as i64 * 1_000_000,
        }
    }
}

pub fn database() -> String {
    DATABASE
        .get()
        .and_then(|s| s.into_string().ok())
        .unwrap_or_else(|| "postgres".to_string())
}

/// The key file path: the GUC when preloaded, otherwise the placeholder from postgresql.conf.
pub fn key_file() -> Option<String> {
    let defined = KEY_FILE.get().and_then(|p| p.into_string().ok());
    defined.or_else(|| unsafe {
        let v = pgrx::pg_sys::GetConfigOption(c"integ.key_file".as_ptr(), true, false);
        (!v.is_null()).then(|| std::ffi::CStr::from_ptr(v).to_string_lossy().into_owned())
    })
}

/// The per-tenant quota of a marketplace from its GUC (None when unset or invalid).
pub fn marketplace_rate_limit(marketplace: &str) -> Option<String> {
    let g = match marketplace {
        "mercadolibre" => &RATE_LIMIT_MERCADOLIBRE,
        "shopify" => &RATE_LIMIT_SHOPIFY,
        "tiktok" => &RATE_LIMIT_TIKTOK,
        "shein" => &RATE_LIMIT_SHEIN,
        _ => return None,
    };
    g.get()
        .and_then(|s| s.into_string().ok())
        .filter(|s| !s.trim().is_empty())
}

/// `integ.allowed_hosts` as a list (lowercased, trimmed). Main thread only.
pub fn allowed_hosts() -> Vec<String> {
    ALLOWED_HOSTS
        .get()
        .and_then(|c| c.into_string().ok())
        .map(|s| {
            s.split(',')
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// `integ.webhook_base_url`, checked: Ok(None) when unset, Err when it is not an absolute
/// http(s) URL without query or fragment. Main thread only.
pub fn webhook_base_url() -> Result<Option<String>, String> {
    let raw = WEBHOOK_BASE_URL
        .get()
        .and_then(|c| c.into_string().ok())
        .unwrap_or_default();
    check_webhook_base_url(&raw)
}

pub fn check_webhook_base_url(raw: &str) -> Result<Option<String>, String> {
    let url = raw.trim().trim_end_matches('/');
    if url.is_empty() {
        return Ok(None);
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("integ.webhook_base_url must start with https:// (or http://)")?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || url.contains(['?', '#', ' ', '@', '\\']) || url.chars().any(char::is_control) {
        return Err("integ.webhook_base_url must be an absolute URL without query, fragment or credentials".into());
    }
    Ok(Some(url.to_string()))
}

#[cfg(test)]
mod webhook_base_url_tests {
    use super::check_webhook_base_url as check;

    #[test]
    fn the_webhook_base_url_is_an_absolute_url_or_unset() {
        assert_eq!(check(""), Ok(None));
        assert_eq!(check("  "), Ok(None));
        assert_eq!(
            check("https://hooks.example.com/"),
            Ok(Some("https://hooks.example.com".into()))
        );
        assert_eq!(
            check("http://127.0.0.1:8080/edge"),
            Ok(Some("http://127.0.0.1:8080/edge".into()))
        );
        for bad in [
            "hooks.example.com",
            "ftp://x",
            "https://",
            "https://a/b?x=1",
            "https://a/#f",
            "https://u:p@a",
            "https://a b",
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }
}
