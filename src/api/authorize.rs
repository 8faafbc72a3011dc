//! Connecting a seller through the marketplace's own authorization flow, from SQL:
//! `integ.register_app` (once per marketplace), `integ.authorize_url` (where to send the
//! seller), `integ.complete_authorization` (the callback's query, as received). The state is an
//! unguessable 256-bit value kept only as its SHA-256, single use, valid 10 minutes.

use super::connections::upsert;
use super::json_in::JsonIn;
use super::sync::agent;
use super::{access, check_tenant, connector_for, shown};
use crate::marketplaces::authorize::{self, App, Pending};
use crate::marketplaces::{self, check_keys, Credentials, Marketplace};
use crate::signing;
use crate::spi_util::{fail, first, invalid, OrRaise};
use crate::{credentials, gucs};
use pgrx::prelude::*;
use pgrx::{JsonB, PgSqlErrorCode};
use rand::RngCore;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

const STATE_LIFETIME: &str = "10 minutes";

#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn register_app(marketplace: &str, credentials: JsonIn, settings: default!(JsonIn, "'{}'")) {
    access::require_operator("integ.register_app");
    let (m, connector) = connector_for(marketplace);
    let (ids, secrets) = authorize::app_keys(m);
    let obj = credentials
        .0
        .as_object()
        .unwrap_or_else(|| invalid("credentials must be a JSON object"));
    let allowed: Vec<&str> = ids.iter().chain(secrets.iter()).copied().collect();
    check_keys(obj, &allowed, &format!("{m} app credentials")).unwrap_or_else(|e| invalid(e));
    let text = |k: &str| match obj.get(k) {
        Some(Value::String(s)) if !s.is_empty() => Value::String(s.clone()),
        Some(Value::Number(n)) => Value::String(n.to_string()),
        _ => invalid(format!("{m} app credentials: \"{k}\" is required")),
    };
    let identifiers: Map<String, Value> = ids.iter().map(|k| (k.to_string(), text(k))).collect();
    let secret_map: Map<String, Value> = secrets.iter().map(|k| (k.to_string(), text(k))).collect();
    let s = settings
        .0
        .as_object()
        .unwrap_or_else(|| invalid("settings must be a JSON object"));
    check_keys(
        s,
        &["base_url", "auth_url", "scopes", "service_id"],
        &format!("{m} app settings"),
    )
    .unwrap_or_else(|e| invalid(e));
    check_app_settings(s).unwrap_or_else(|e| invalid(format!("{m} app settings: {e}")));
    marketplaces::base_url(connector, &settings.0, &gucs::allowed_hosts()).unwrap_or_else(|e| invalid(e));
    credentials::require_master_key();
    let sealed = credentials::encrypt(&secret_map);
    Spi::run_with_args(
        "INSERT INTO integ.apps AS a (marketplace, identifiers, secrets, settings, key_version) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (marketplace) DO UPDATE
            SET identifiers = EXCLUDED.identifiers, secrets = EXCLUDED.secrets, settings = EXCLUDED.settings,
                key_version = EXCLUDED.key_version, updated_at = now()",
        &[
            m.as_str().into(),
            JsonB(Value::Object(identifiers)).into(),
            sealed.clone().into(),
            settings.into(),
            (crate::keys::split(&sealed).0 as i32).into(),
        ],
    )
    .or_raise("storing the app");
}

fn load_app(m: Marketplace) -> App {
    let row = Spi::connect(|c| {
        let t = c.select(
            "SELECT identifiers, secrets, settings FROM integ.apps WHERE marketplace = $1",
            None,
            &[m.as_str().into()],
        )?;
        if t.is_empty() {
            return Ok::<_, pgrx::spi::SpiError>(None);
        }
        let t = t.first();
        Ok(Some((
            t.get::<JsonB>(1)?.map(|j| j.0),
            t.get::<Vec<u8>>(2)?,
            t.get::<JsonB>(3)?.map(|j| j.0),
        )))
    })
    .or_raise("reading the app");
    let Some((ids, sealed, settings)) = row else {
        crate::spi_util::not_found(format!("no {m} app is registered: call integ.register_app first"));
    };
    App {
        creds: Credentials {
            identifiers: ids.and_then(|v| v.as_object().cloned()).unwrap_or_default(),
            secrets: credentials::decrypt(sealed.unwrap_or_default()),
            expires_in: None,
        },
        settings: settings.unwrap_or(Value::Null),
    }
}

fn random_token(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn check_redirect(uri: &str) {
    let ok = (uri.starts_with("https://") || uri.starts_with("http://"))
        && uri.len() <= 2_000
        && !uri.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        invalid("redirect_uri must be an http(s) URL without spaces, at most 2000 characters");
    }
}

/// The values of an app's settings (their keys are checked by the caller; base_url by
/// `marketplaces::base_url`).
fn check_app_settings(s: &Map<String, Value>) -> Result<(), String> {
    for key in ["scopes", "service_id"] {
        match s.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::String(v)) if !v.trim().is_empty() && v.len() <= 1_000 => {}
            Some(_) => return Err(format!("\"{key}\" must be a non-empty string")),
        }
    }
    match s.get("auth_url") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(u)) if u.starts_with("https://") || u.starts_with("http://") => Ok(()),
        Some(_) => Err("\"auth_url\" must be an http(s) URL".into()),
    }
}

#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn authorize_url(tenant_id: &str, marketplace: &str, redirect_uri: &str, options: default!(JsonIn, "'{}'")) -> String {
    check_tenant(tenant_id);
    let (m, connector) = connector_for(marketplace);
    check_redirect(redirect_uri);
    let opts = options
        .0
        .as_object()
        .unwrap_or_else(|| invalid("options must be a JSON object"));
    check_keys(opts, &["shop", "auth_url", "settings"], "authorize options").unwrap_or_else(|e| invalid(e));
    if opts.get("settings").is_some_and(|s| !s.is_object()) {
        invalid("options.settings (the connection's settings) must be a JSON object");
    }
    if let Some(settings) = opts.get("settings") {
        // refused now, not when the seller comes back from the marketplace
        super::connections::check_settings(connector, settings, &gucs::allowed_hosts())
            .unwrap_or_else(|e| invalid(format!("authorize options: {e}")));
    }
    let app = load_app(m);
    let state = random_token(32);
    let verifier = (m == Marketplace::MercadoLibre).then(|| random_token(48));
    let pending = Pending {
        state: &state,
        redirect_uri,
        options: &options.0,
        code_verifier: verifier.as_deref(),
    };
    let url = authorize::authorize_url(m, &app, &pending).unwrap_or_else(|e| invalid(e));
    let sealed_verifier = verifier.map(|v| {
        let mut map = Map::new();
        map.insert("code_verifier".into(), Value::String(v));
        credentials::encrypt(&map)
    });
    Spi::run("DELETE FROM integ.authorizations WHERE expires_at < now() - interval '1 day'")
        .or_raise("forgetting old authorizations");
    Spi::run_with_args(
        &format!(
            "INSERT INTO integ.authorizations (state_sha256, tenant_id, marketplace, redirect_uri, options, code_verifier, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, now() + interval '{STATE_LIFETIME}')"
        ),
        &[
            signing::sha256_hex(state.as_bytes()).into(),
            tenant_id.into(),
            m.as_str().into(),
            redirect_uri.into(),
            options.into(),
            sealed_verifier.into(),
        ],
    )
    .or_raise("recording the authorization");
    url
}

fn refuse(msg: &str) -> ! {
    fail(PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION, msg)
}

#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn complete_authorization(marketplace: &str, callback: JsonIn) -> i64 {
    let (m, connector) = connector_for(marketplace);
    let obj = callback
        .0
        .as_object()
        .unwrap_or_else(|| invalid("callback must be a JSON object of the callback's query parameters"));
    let query: BTreeMap<String, String> = obj
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) => (k.clone(), s.clone()),
            Value::Number(n) => (k.clone(), n.to_string()),
            _ => invalid(format!("callback parameter \"{}\" must be text", shown(k))),
        })
        .collect();
    let state = query
        .get("state")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| refuse("the callback has no state"));
    let hash = signing::sha256_hex(state.as_bytes());
    let row = first::<JsonB>(
        "SELECT jsonb_build_array(a.tenant_id, a.redirect_uri, a.options, a.code_verifier IS NOT NULL,
                                  a.used_at IS NOT NULL, a.expires_at < now())
           FROM integ.authorizations a WHERE a.state_sha256 = $1 AND a.marketplace = $2 FOR UPDATE",
        &[hash.as_str().into(), m.as_str().into()],
    );
    let Some(JsonB(Value::Array(a))) = row else {
        refuse("unknown authorization state: start again with integ.authorize_url");
    };
    let flag = |i: usize| a.get(i).and_then(Value::as_bool).unwrap_or(false);
    if flag(4) {
        refuse("this authorization state was already used");
    }
    if flag(5) {
        refuse("this authorization state has expired (10 minutes): start again with integ.authorize_url");
    }
    let tenant = a.first().and_then(Value::as_str).unwrap_or("").to_string();
    check_tenant(&tenant);
    let redirect_uri = a.get(1).and_then(Value::as_str).unwrap_or("").to_string();
    let options = a.get(2).cloned().unwrap_or(Value::Null);
    let verifier = flag(3).then(|| {
        let sealed = first::<Vec<u8>>(
            "SELECT code_verifier FROM integ.authorizations WHERE state_sha256 = $1",
            &[hash.as_str().into()],
        )
        .unwrap_or_default();
        credentials::decrypt(sealed)
            .get("code_verifier")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    });
    let app = load_app(m);
    let pending = Pending {
        state,
        redirect_uri: &redirect_uri,
        options: &options,
        code_verifier: verifier.as_deref(),
    };
    if m == Marketplace::Shopify {
        authorize::verify_shopify_callback(&app, &pending, &query, marketplaces::unix_now())
            .unwrap_or_else(|e| refuse(&e));
    }
    // the connection's settings: what authorize_url was given, else the app's API base
    let mut settings = options
        .get("settings")
        .cloned()
        .unwrap_or_else(|| Value::Object(Map::new()));
    if let (Some(s), Some(base)) = (settings.as_object_mut(), app.settings.get("base_url")) {
        s.entry("base_url").or_insert_with(|| base.clone());
    }
    let api_base = marketplaces::base_url(connector, &settings, &gucs::allowed_hosts()).unwrap_or_else(|e| invalid(e));
    let creds = authorize::exchange(m, agent(), &app, &pending, &query, &api_base)
        .unwrap_or_else(|e| refuse(&format!("the {m} code exchange failed: {e}")));
    let id = upsert(&tenant, m.as_str(), &creds, &settings);
    Spi::run_with_args(
        "UPDATE integ.authorizations SET used_at = now(), connection_id = $2 WHERE state_sha256 = $1",
        &[hash.as_str().into(), id.into()],
    )
    .or_raise("completing the authorization");
    id
}
