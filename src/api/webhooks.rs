//! `integ.receive_webhook` (the application's endpoint hands over the raw delivery and replies
//! with the answer's `http_status`) and `integ.verify_webhook` (the pure check). Receiving only
//! verifies, de-duplicates and records, in milliseconds; the workers apply what was accepted.

use super::json_in::JsonIn;
use crate::credentials;
use crate::marketplaces::webhooks::{self, Envelope, Headers};
use crate::marketplaces::Marketplace;
use crate::shmem;
use crate::signing;
use crate::spi_util::{invalid, run_kept, OrRaise};
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};

#[pg_extern(immutable, parallel_safe)]
fn verify_webhook(marketplace: &str, headers: JsonIn, body: &[u8], secrets: JsonIn) -> bool {
    let m: Marketplace = marketplace.parse().unwrap_or_else(|e: String| invalid(e));
    let h = webhooks::lowercase_headers(&headers.0).unwrap_or_else(|e| invalid(e));
    webhooks::verify(m, &h, body, &secrets.0).unwrap_or_else(|e| invalid(format!("integ.verify_webhook: {e}")))
}

const STOCK_EDIT_SETTLE_S: f64 = 2.0;

/// One delivery's record and answer.
struct Delivery<'a> {
    marketplace: Marketplace,
    body: &'a [u8],
    sha: String,
    tenant_id: Option<String>,
    connection_id: Option<i64>,
    envelope: Envelope,
}

impl Delivery<'_> {
    fn record(&self, status: &str, http_status: i32, reason: Option<&str>, verified: bool) -> Option<i64> {
        let keep_body = status == "accepted";
        let state = if keep_body { "pending" } else { "ignored" };
        run_kept(
            "INSERT INTO integ.webhooks AS w (marketplace, tenant_id, connection_id, event_id, topic, status, verified,
                                              http_status, reason, body_size, body_sha256, body, state, next_attempt_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
                     now() + make_interval(secs => $14::float8))
             ON CONFLICT (marketplace, event_id) WHERE status = 'accepted' DO NOTHING
             RETURNING w.id",
            &[
                self.marketplace.as_str().into(),
                self.tenant_id.clone().into(),
                self.connection_id.into(),
                self.envelope.event_id.clone().into(),
                self.envelope.topic.clone().into(),
                status.into(),
                verified.into(),
                http_status.into(),
                reason.into(),
                (self.body.len().min(i32::MAX as usize) as i32).into(),
                self.sha.as_str().into(),
                (if keep_body { Some(self.body.to_vec()) } else { None }).into(),
                state.into(),
                self.settle_s().into(),
            ],
            |t| {
                if t.is_empty() {
                    Ok(None)
                } else {
                    t.first().get::<i64>(1)
                }
            },
        )
        .or_raise("recording a webhook")
    }

    /// A stock edit waits a moment before it is applied: a sale changes the marketplace's stock
    /// and sends its order at the same time, and the order must be applied first, or the edit
    /// would count the sale again.
    fn settle_s(&self) -> f64 {
        match self.envelope.topic.as_deref() {
            Some("inventory_levels/update" | "items") => STOCK_EDIT_SETTLE_S,
            _ => 0.0,
        }
    }

    fn answer(&self, status: &str, http_status: i32, reason: Option<&str>, id: Option<i64>) -> JsonB {
        let mut a = json!({"status": status, "http_status": http_status, "tenant_id": self.tenant_id,
                           "event_id": self.envelope.event_id, "topic": self.envelope.topic, "webhook_id": id});
        if let Some(r) = reason {
            a["reason"] = Value::String(r.to_string());
        }
        JsonB(a)
    }

    fn reject(&self, http_status: i32, reason: &str) -> JsonB {
        let id = self.record("rejected", http_status, Some(reason), false);
        self.answer("rejected", http_status, Some(reason), id)
    }
}

/// The secrets a connection's deliveries are checked with (see webhooks::verify).
fn secrets_for(m: Marketplace, connection_id: i64, settings: &Value) -> Option<Value> {
    let loaded = credentials::load(connection_id)?;
    let c = &loaded.creds;
    Some(match m {
        Marketplace::Shopify => {
            // a webhook secret of its own, else the app secret; the previous one while its
            // rotation window lasts (no end recorded: until it is removed)
            let now = crate::marketplaces::unix_now();
            let window_open = c
                .identifiers
                .get("previous_webhook_secret_until")
                .and_then(Value::as_i64)
                .is_none_or(|until| now < until);
            let current = c.secret("webhook_secret").or(c.secret("client_secret"));
            let previous = c.secret("previous_webhook_secret").filter(|_| window_open);
            let list: Vec<&str> = current.into_iter().chain(previous).collect();
            if list.is_empty() {
                return None;
            }
            json!({ "secrets": list })
        }
        Marketplace::TikTok => json!({"app_key": c.identifier("app_key")?, "app_secret": c.secret("app_secret")?}),
        Marketplace::Shein => json!({"appid": c.identifier("appid")?, "app_secret_key": c.secret("app_secret_key")?,
            "path": settings.get("webhook_path").and_then(Value::as_str).unwrap_or("/")}),
        Marketplace::MercadoLibre => json!({"client_id": c.identifier("client_id")?}),
    })
}

#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn receive_webhook(marketplace: &str, headers: JsonIn, body: &[u8]) -> JsonB {
    let m: Marketplace = marketplace.parse().unwrap_or_else(|e: String| invalid(e));
    let mut d = Delivery {
        marketplace: m,
        body,
        sha: signing::sha256_hex(body),
        tenant_id: None,
        connection_id: None,
        envelope: Envelope::default(),
    };
    let max = crate::gucs::WEBHOOK_MAX_BYTES.get().max(1_024) as usize;
    if body.len() > max {
        return d.reject(
            413,
            &format!("body of {} bytes is over integ.webhook_max_bytes ({max})", body.len()),
        );
    }
    let h: Headers = match webhooks::lowercase_headers(&headers.0) {
        Ok(h) => h,
        Err(e) => return d.reject(400, &e),
    };
    d.envelope = match webhooks::envelope(m, &h, body) {
        Ok(e) => e,
        Err(e) => return d.reject(400, &format!("malformed delivery: {e}")),
    };
    let Some((key, value)) = d.envelope.account.clone() else {
        return d.reject(400, "malformed delivery: no account");
    };
    let found = run_kept(
        "SELECT jsonb_build_array(c.id, c.tenant_id, c.settings) FROM integ.connections c
           JOIN integ.credential_store k ON k.connection_id = c.id
          WHERE c.marketplace = $1 AND k.identifiers ->> $2 = $3
          ORDER BY c.id LIMIT 1",
        &[m.as_str().into(), key.into(), value.as_str().into()],
        |t| {
            if t.is_empty() {
                Ok(None)
            } else {
                t.first().get::<JsonB>(1)
            }
        },
    )
    .or_raise("finding the delivery's connection");
    let Some(JsonB(Value::Array(row))) = found else {
        let shown = crate::marketplaces::http::truncate(&value, 80);
        return d.reject(404, &format!("no {m} connection for {key} {shown}"));
    };
    d.connection_id = row.first().and_then(Value::as_i64);
    d.tenant_id = row.get(1).and_then(Value::as_str).map(str::to_string);
    let settings = row.get(2).cloned().unwrap_or(Value::Null);
    let Some(secrets) = d.connection_id.and_then(|id| secrets_for(m, id, &settings)) else {
        return d.reject(401, "the connection has no secret to verify this delivery with");
    };
    match webhooks::verify(m, &h, body, &secrets) {
        Ok(true) => {}
        Ok(false) if m == Marketplace::MercadoLibre => {
            return d.reject(404, "application_id does not match the connection's application")
        }
        Ok(false) => return d.reject(401, "the signature does not verify"),
        Err(e) => return d.reject(401, &e),
    }
    // MercadoLibre notifications are unsigned: the resource is fetched before anything changes
    let verified = m != Marketplace::MercadoLibre;
    match d.record("accepted", 200, None, verified) {
        Some(id) => {
            shmem::wake_workers_at_commit();
            d.answer("accepted", 200, None, Some(id))
        }
        None => {
            let id = d.record("duplicate", 200, Some("already received"), verified);
            d.answer("duplicate", 200, None, id)
        }
    }
}

/// Rotates a Shopify connection's webhook secret: the new one verifies from now on, the one it
/// replaces (its own, or the app secret) for `overlap` more (Shopify may keep signing with the
/// old secret for up to an hour).
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn rotate_webhook_secret(
    tenant_id: &str,
    marketplace: &str,
    new_secret: &str,
    overlap: default!(pgrx::datum::Interval, "'1 hour'"),
) {
    super::check_tenant(tenant_id);
    super::access::require_operator("integ.rotate_webhook_secret");
    let (m, _) = super::connector_for(marketplace);
    if m != Marketplace::Shopify {
        invalid(format!(
            "{m} signs its webhooks with the app's own secret: change it with integ.connect (and integ.register_app)"
        ));
    }
    if new_secret.len() < 8 {
        invalid("new_secret must be at least 8 characters");
    }
    let Some(id) = crate::spi_util::first::<i64>(
        "SELECT id FROM integ.connections WHERE tenant_id = $1 AND marketplace = $2",
        &[tenant_id.into(), m.as_str().into()],
    ) else {
        crate::spi_util::not_found(format!("tenant \"{}\" has no {m} connection", super::shown(tenant_id)));
    };
    let overlap_s = crate::spi_util::first::<f64>("SELECT extract(epoch FROM $1::interval)::float8", &[overlap.into()])
        .unwrap_or(3_600.0)
        .max(0.0);
    let Some(loaded) = credentials::load(id) else {
        crate::spi_util::not_found("the connection has no credentials");
    };
    let mut creds = loaded.creds;
    // the token's expiry stays what it was
    creds.expires_in = loaded.expires_in_s.map(|s| s.floor() as i64);
    if let Some(old) = creds
        .secret("webhook_secret")
        .or(creds.secret("client_secret"))
        .map(str::to_string)
    {
        creds
            .secrets
            .insert("previous_webhook_secret".into(), Value::String(old));
    }
    creds
        .secrets
        .insert("webhook_secret".into(), Value::String(new_secret.to_string()));
    let until = crate::marketplaces::unix_now() + overlap_s.ceil() as i64;
    creds
        .identifiers
        .insert("previous_webhook_secret_until".into(), json!(until));
    credentials::store(id, tenant_id, m.as_str(), &creds);
}
