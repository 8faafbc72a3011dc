//! `GET /`: the health dashboard, server-rendered (minijinja, autoescaped), behind HTTP basic
//! auth, refreshing itself. Per tenant and marketplace: status, circuit, queue, dead jobs, last
//! error, open alerts and conflicts, and charts of the last day's calls, errors and latency.

use super::{db_failure, no_store, plain, Reason, Shared};
use crate::auth;
use crate::charts::{self, Chart, HOURS};
use crate::db::{self, DbError};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use deadpool_postgres::Object;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use tokio_postgres::Row;

pub const TEMPLATE: &str = "dashboard.html";
pub const TEMPLATE_SOURCE: &str = include_str!("../../templates/dashboard.html");

/// The templates, compiled once at start. Autoescaping follows the name: `.html` escapes
/// everything it prints.
pub fn templates() -> Result<minijinja::Environment<'static>, String> {
    let mut env = minijinja::Environment::new();
    env.add_template(TEMPLATE, TEMPLATE_SOURCE)
        .map_err(|e| format!("the dashboard template does not compile: {e}"))?;
    Ok(env)
}

#[derive(Serialize)]
struct Connection {
    id: i64,
    marketplace: String,
    status: String,
    circuit: String,
    queue_depth: i64,
    oldest_pending: Option<String>,
    dead: i64,
    last_error: Option<String>,
    last_error_at: Option<String>,
    last_success: Option<String>,
    open_alerts: usize,
    open_conflicts: usize,
    calls: i64,
    failures: i64,
    latency_avg_ms: Option<String>,
    calls_chart: Option<Chart>,
    errors_chart: Option<Chart>,
    latency_chart: Option<Chart>,
}

#[derive(Serialize)]
struct Tenant {
    name: String,
    connections: Vec<Connection>,
}

#[derive(Serialize)]
struct Alert {
    tenant: String,
    marketplace: String,
    kind: String,
    message: String,
    at: String,
}

#[derive(Serialize)]
struct Conflict {
    tenant: String,
    marketplace: String,
    product_id: String,
    external_id: String,
    egdc_stock: Option<i32>,
    remote_stock: i64,
    detected_at: String,
}

#[derive(Serialize)]
struct Page {
    tenants: Vec<Tenant>,
    alerts: Vec<Alert>,
    conflicts: Vec<Conflict>,
    connections: usize,
    queue_depth: i64,
    dead: i64,
    charts_unavailable: bool,
}

/// A row's column, or an "unexpected result" error (a schema the gateway does not know).
fn col<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, i: usize) -> Result<T, DbError> {
    row.try_get(i).map_err(|_| DbError::Internal("unexpected_result"))
}

async fn rows(client: &Object, sql: &str) -> Result<Vec<Row>, DbError> {
    let statement = client.prepare_cached(sql).await?;
    Ok(client.query(&statement, &[]).await?)
}

fn age(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Per connection, the last day's hourly calls, failures and summed latency.
type Hours = [Option<f64>; HOURS];

#[derive(Default)]
struct Day {
    calls: Hours,
    failures: Hours,
    latency_sum: Hours,
}

async fn health(client: &Object) -> Result<Option<HashMap<i64, Day>>, DbError> {
    let found = match rows(client, db::DASHBOARD_HEALTH).await {
        Ok(r) => r,
        // without SELECT on integ.health_buckets the page still shows, without its charts
        Err(DbError::Internal("permission_denied")) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut days: HashMap<i64, Day> = HashMap::new();
    for row in &found {
        let (id, start, now): (i64, i64, i64) = (col(row, 0)?, col(row, 1)?, col(row, 5)?);
        let Some(slot) = charts::slot(start, now) else { continue };
        let day = days.entry(id).or_default();
        day.calls[slot] = Some(col::<i64>(row, 2)? as f64);
        day.failures[slot] = Some(col::<i64>(row, 3)? as f64);
        day.latency_sum[slot] = Some(col::<f64>(row, 4)?);
    }
    Ok(Some(days))
}

async fn load(client: &Object) -> Result<Page, DbError> {
    let mut alerts_per: HashMap<i64, usize> = HashMap::new();
    let mut alerts = Vec::new();
    for row in rows(client, db::DASHBOARD_ALERTS).await? {
        if let Some(id) = col::<Option<i64>>(&row, 1)? {
            *alerts_per.entry(id).or_default() += 1;
        }
        alerts.push(Alert {
            tenant: col(&row, 2)?,
            marketplace: col(&row, 3)?,
            kind: col(&row, 4)?,
            message: col(&row, 5)?,
            at: col::<Option<String>>(&row, 6)?.unwrap_or_default(),
        });
    }
    let mut conflicts_per: HashMap<i64, usize> = HashMap::new();
    let mut conflicts = Vec::new();
    for row in rows(client, db::DASHBOARD_CONFLICTS).await? {
        *conflicts_per.entry(col(&row, 1)?).or_default() += 1;
        conflicts.push(Conflict {
            tenant: col(&row, 2)?,
            marketplace: col(&row, 3)?,
            product_id: col(&row, 4)?,
            external_id: col(&row, 5)?,
            egdc_stock: col(&row, 6)?,
            remote_stock: col(&row, 7)?,
            detected_at: col::<Option<String>>(&row, 8)?.unwrap_or_default(),
        });
    }
    let days = health(client).await?;
    let mut tenants: BTreeMap<String, Vec<Connection>> = BTreeMap::new();
    let (mut count, mut queue_depth, mut dead) = (0, 0, 0);
    for row in rows(client, db::DASHBOARD_STATUS).await? {
        let id: i64 = col(&row, 0)?;
        let day = days.as_ref().map(|d| d.get(&id));
        let total = |h: &Hours| h.iter().flatten().sum::<f64>();
        let (calls, failures, latency_sum) = match day.flatten() {
            Some(d) => (total(&d.calls), total(&d.failures), total(&d.latency_sum)),
            None => (0.0, 0.0, 0.0),
        };
        let chart = |pick: fn(&Day) -> Hours| day.map(|d| charts::bars(&d.map(pick).unwrap_or([None; HOURS])));
        let c = Connection {
            id,
            marketplace: col(&row, 2)?,
            status: col(&row, 3)?,
            circuit: col(&row, 4)?,
            queue_depth: col(&row, 5)?,
            oldest_pending: col::<Option<f64>>(&row, 6)?.map(age),
            dead: col(&row, 7)?,
            last_error: col(&row, 8)?,
            last_error_at: col(&row, 9)?,
            last_success: col(&row, 10)?,
            open_alerts: alerts_per.get(&id).copied().unwrap_or(0),
            open_conflicts: conflicts_per.get(&id).copied().unwrap_or(0),
            calls: calls as i64,
            failures: failures as i64,
            latency_avg_ms: (calls > 0.0).then(|| format!("{:.1}", latency_sum / calls)),
            calls_chart: chart(|d| d.calls),
            errors_chart: chart(|d| d.failures),
            latency_chart: chart(|d| {
                let mut avg = [None; HOURS];
                for (i, slot) in avg.iter_mut().enumerate() {
                    if let (Some(sum), Some(n)) = (d.latency_sum[i], d.calls[i]) {
                        *slot = (n > 0.0).then(|| sum / n);
                    }
                }
                avg
            }),
        };
        count += 1;
        queue_depth += c.queue_depth;
        dead += c.dead;
        tenants.entry(col(&row, 1)?).or_default().push(c);
    }
    Ok(Page {
        tenants: tenants
            .into_iter()
            .map(|(name, connections)| Tenant { name, connections })
            .collect(),
        alerts,
        conflicts,
        connections: count,
        queue_depth,
        dead,
        charts_unavailable: days.is_none(),
    })
}

fn unauthorized() -> Response {
    let mut r = plain(StatusCode::UNAUTHORIZED, "unauthorized", "unauthorized\n");
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"integration dashboard\", charset=\"UTF-8\""),
    );
    r
}

pub async fn page(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let Some(password) = &state.config.dashboard_password else {
        return plain(StatusCode::NOT_FOUND, "dashboard_disabled", "not found\n");
    };
    if !auth::basic_ok(&headers, &state.config.dashboard_user, password) {
        return unauthorized();
    }
    let client = match db::client(&state.pool).await {
        Ok(c) => c,
        Err(e) => return db_failure(&e),
    };
    let page = match load(&client).await {
        Ok(p) => p,
        Err(e) => return db_failure(&e),
    };
    let html = state.templates.get_template(TEMPLATE).and_then(|t| t.render(&page));
    match html {
        Ok(html) => {
            let mut r = (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                    // nothing but the page itself: no script, no outside resource
                    (
                        header::CONTENT_SECURITY_POLICY,
                        "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
                    ),
                    (header::X_FRAME_OPTIONS, "DENY"),
                ],
                html,
            )
                .into_response();
            r.extensions_mut().insert(Reason("dashboard"));
            no_store(r)
        }
        Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "template_error", "internal error\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection(id: i64, last_error: Option<&str>, chart: Option<Chart>) -> Connection {
        Connection {
            id,
            marketplace: "shopify".into(),
            status: "active".into(),
            circuit: "closed".into(),
            queue_depth: 3,
            oldest_pending: Some("2m 05s".into()),
            dead: 1,
            last_error: last_error.map(str::to_string),
            last_error_at: None,
            last_success: None,
            open_alerts: 0,
            open_conflicts: 2,
            calls: 10,
            failures: 1,
            latency_avg_ms: Some("3.5".into()),
            calls_chart: chart,
            errors_chart: None,
            latency_chart: None,
        }
    }

    #[test]
    fn the_page_escapes_what_it_shows_and_draws_charts() {
        let mut hours = [None; HOURS];
        hours[3] = Some(4.0);
        let page = Page {
            tenants: vec![Tenant {
                name: "<b>acme</b>".into(),
                connections: vec![connection(
                    7,
                    Some("\"><script>x()</script>"),
                    Some(charts::bars(&hours)),
                )],
            }],
            alerts: vec![],
            conflicts: vec![],
            connections: 1,
            queue_depth: 3,
            dead: 1,
            charts_unavailable: false,
        };
        let html = templates()
            .unwrap()
            .get_template(TEMPLATE)
            .unwrap()
            .render(&page)
            .unwrap();
        assert!(html.contains("&lt;b&gt;acme&lt;&#x2f;b&gt;"), "{html}");
        assert!(!html.contains("<script>") && !html.contains("<b>acme"));
        assert!(html.contains("<meta http-equiv=\"refresh\" content=\"30\">"));
        assert!(html.contains(r#"id="conn-7-queue" class="num">3<"#), "{html}");
        assert!(html.contains(r#"id="conn-7-conflicts" class="num warn">2<"#), "{html}");
        assert_eq!(html.matches("<svg").count(), 1, "one chart with data");
        assert_eq!(html.matches("<rect").count(), 1, "one bar");
    }

    #[test]
    fn ages_read_in_the_largest_units() {
        assert_eq!(age(5.2), "5s");
        assert_eq!(age(125.0), "2m 05s");
        assert_eq!(age(7_300.0), "2h 01m");
        assert_eq!(age(90_000.0), "1d 01h");
        assert_eq!(age(-1.0), "0s");
    }
}
