//! Alerts: what an operator must act on (a connection that needs re-authorization, ...). Each is
//! a row in `integ.alerts` and a `NOTIFY integ_alerts` with the same JSON payload, sent when the
//! transaction that raised it commits. Nothing fails silently.

use crate::spi_util::{first, OrRaise};
use pgrx::prelude::*;
use serde_json::json;

pub struct Alert<'a> {
    pub tenant_id: &'a str,
    pub marketplace: &'a str,
    pub connection_id: Option<i64>,
    /// e.g. `needs_reauthorization`
    pub kind: &'a str,
    /// Secret-free.
    pub message: &'a str,
}

/// Records the alert and notifies listeners at commit; returns its id.
pub fn raise(a: &Alert) -> i64 {
    let id = first::<i64>(
        "INSERT INTO integ.alerts (tenant_id, marketplace, connection_id, kind, message)
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
        &[
            a.tenant_id.into(),
            a.marketplace.into(),
            a.connection_id.into(),
            a.kind.into(),
            a.message.into(),
        ],
    )
    .unwrap_or_default();
    let payload = json!({"id": id, "tenant_id": a.tenant_id, "marketplace": a.marketplace,
                         "connection_id": a.connection_id, "kind": a.kind, "message": a.message});
    // NOTIFY payloads are limited to 8000 bytes; the row has the whole message
    let text = crate::marketplaces::http::truncate(&payload.to_string(), 7_900);
    Spi::run_with_args("SELECT pg_notify('integ_alerts', $1)", &[text.into()]).or_raise("notifying integ_alerts");
    id
}

/// The connection lost its authorization: `needs_reauthorization` (its jobs wait without
/// burning attempts) and one alert, only on the transition, however many processes or
/// deliveries notice it. Returns whether this call made the transition.
pub fn needs_reauthorization(connection_id: i64, tenant_id: &str, marketplace: &str, message: &str) -> bool {
    let newly = first::<i64>(
        "UPDATE integ.connections SET status = 'needs_reauthorization', last_error = $2,
                last_error_at = now(), updated_at = now()
          WHERE id = $1 AND status <> 'needs_reauthorization' RETURNING id",
        &[connection_id.into(), message.into()],
    )
    .is_some();
    if newly {
        raise(&Alert {
            tenant_id,
            marketplace,
            connection_id: Some(connection_id),
            kind: "needs_reauthorization",
            message,
        });
        pgrx::warning!("integration: connection {connection_id} ({tenant_id}/{marketplace}) needs re-authorization");
    }
    newly
}
