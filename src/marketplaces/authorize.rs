//! Connecting a seller, in plain Rust: each marketplace's authorize URL, the check of what its
//! callback carries, and the exchange for credentials in `integ.connect`'s shape.
//!
//! - MercadoLibre: code grant with PKCE (S256) and an exact redirect_uri.
//! - Shopify: the shop's install page with scopes; the callback's `hmac` (hex HMAC of the sorted
//!   query with the app secret) and `timestamp` (within 90 s) are verified; expiring offline
//!   tokens are asked for.
//! - TikTok Shop: the service's authorize page; code -> token/get, then the authorized shops give
//!   `shop_cipher` and `shop_id`.
//! - SHEIN: empower with the redirect URL in base64; `tempToken` -> get-by-token, whose
//!   `secretKey` is AES-decrypted with the app's appSecretKey.

use super::http::{self, truncate};
use super::{Credentials, Marketplace};
use marketplace_signing as signing;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// One of this installation's marketplace apps.
pub struct App {
    pub creds: Credentials,
    pub settings: Value,
}

impl App {
    fn setting(&self, k: &str) -> Option<&str> {
        self.settings.get(k).and_then(Value::as_str).filter(|s| !s.is_empty())
    }
    fn id(&self, k: &str) -> Result<String, String> {
        self.creds.identifier(k).ok_or_else(|| format!("the app has no {k}"))
    }
    fn secret(&self, k: &str) -> Result<&str, String> {
        self.creds.secret(k).ok_or_else(|| format!("the app has no {k}"))
    }
}

/// What an app must be registered with: (identifiers, secrets).
pub fn app_keys(m: Marketplace) -> (&'static [&'static str], &'static [&'static str]) {
    match m {
        Marketplace::MercadoLibre | Marketplace::Shopify => (&["client_id"], &["client_secret"]),
        Marketplace::TikTok => (&["app_key"], &["app_secret"]),
        Marketplace::Shein => (&["appid"], &["app_secret_key"]),
    }
}

/// An authorization in progress.
pub struct Pending<'a> {
    pub state: &'a str,
    pub redirect_uri: &'a str,
    pub options: &'a Value,
    /// PKCE (MercadoLibre).
    pub code_verifier: Option<&'a str>,
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay).
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Shopify shop domain, as the authorize URL and the callback must name it.
fn shop_of(options: &Value) -> Result<&str, String> {
    let shop = options
        .get("shop")
        .and_then(Value::as_str)
        .ok_or("shopify: options need \"shop\" (the shop's myshopify.com domain)")?;
    let valid = shop.ends_with(".myshopify.com")
        && shop.len() <= 255
        && shop
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !valid {
        return Err(format!(
            "shopify: \"{}\" is not a myshopify.com domain",
            truncate(shop, 80)
        ));
    }
    Ok(shop)
}

/// The page the seller is sent to.
pub fn authorize_url(m: Marketplace, app: &App, p: &Pending) -> Result<String, String> {
    let base = |default: &str| {
        p.options
            .get("auth_url")
            .and_then(Value::as_str)
            .or(app.setting("auth_url"))
            .unwrap_or(default)
            .trim_end_matches('/')
            .to_string()
    };
    Ok(match m {
        Marketplace::MercadoLibre => {
            let verifier = p.code_verifier.ok_or("mercadolibre: a PKCE verifier is required")?;
            format!(
                "{}/authorization?response_type=code&client_id={}&redirect_uri={}&state={}&code_challenge={}&code_challenge_method=S256",
                base("https://auth.mercadolibre.com.mx"),
                enc(&app.id("client_id")?),
                enc(p.redirect_uri),
                enc(p.state),
                signing::pkce_challenge(verifier)
            )
        }
        Marketplace::Shopify => {
            let shop = shop_of(p.options)?;
            let scopes = app.setting("scopes").unwrap_or("read_inventory,write_inventory");
            format!(
                "{}/admin/oauth/authorize?client_id={}&scope={}&redirect_uri={}&state={}",
                base(&format!("https://{shop}")),
                enc(&app.id("client_id")?),
                enc(scopes),
                enc(p.redirect_uri),
                enc(p.state)
            )
        }
        Marketplace::TikTok => {
            let service = app
                .setting("service_id")
                .map(str::to_string)
                .map_or_else(|| app.id("app_key"), Ok)?;
            format!(
                "{}/open/authorize?service_id={}&state={}",
                base("https://services.tiktokshop.com"),
                enc(&service),
                enc(p.state)
            )
        }
        Marketplace::Shein => format!(
            "{}/#/empower?appid={}&redirectUrl={}&state={}",
            base("https://openapi-sem.sheincorp.com"),
            enc(&app.id("appid")?),
            enc(&signing::base64(p.redirect_uri.as_bytes())),
            enc(p.state)
        ),
    })
}

/// Shopify's callback: `hmac` over the other parameters with the app secret (constant time),
/// issued within 90 s of `now`, for the shop the authorization was started for.
pub fn verify_shopify_callback(
    app: &App,
    p: &Pending,
    callback: &BTreeMap<String, String>,
    now: i64,
) -> Result<(), String> {
    let given = callback.get("hmac").ok_or("the callback has no hmac")?;
    let signed: BTreeMap<String, String> = callback
        .iter()
        .filter(|(k, _)| k.as_str() != "hmac" && k.as_str() != "signature")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let want = signing::shopify_oauth(app.secret("client_secret")?, &signed);
    if !signing::constant_time_eq(want.as_bytes(), given.to_ascii_lowercase().as_bytes()) {
        return Err("the callback's hmac does not verify".into());
    }
    let ts: i64 = callback
        .get("timestamp")
        .and_then(|t| t.parse().ok())
        .ok_or("the callback has no timestamp")?;
    if now.saturating_sub(ts).saturating_abs() > 90 {
        return Err("the callback's timestamp is more than 90 seconds away".into());
    }
    if callback.get("shop").map(String::as_str) != Some(shop_of(p.options)?) {
        return Err("the callback names another shop".into());
    }
    Ok(())
}

fn need<'a>(callback: &'a BTreeMap<String, String>, k: &str) -> Result<&'a str, String> {
    callback
        .get(k)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("the callback has no {k}"))
}

fn answer(r: Result<http::Reply, http::TransportError>, who: &str) -> Result<Value, String> {
    // the request carried the app's secret: no transport detail goes into the message
    let reply = r.map_err(|_| format!("{who} unreachable"))?;
    let v = reply.json().unwrap_or(Value::Null);
    if reply.status != 200 {
        return Err(format!("{who}: HTTP {}: {}", reply.status, http::error_text(&reply)));
    }
    Ok(v)
}

/// Exchanges the callback for credentials (`integ.connect`'s shape). `api_base` is the
/// connection's base URL (the marketplace's, or the sandbox's).
pub fn exchange(
    m: Marketplace,
    agent: &ureq::Agent,
    app: &App,
    p: &Pending,
    callback: &BTreeMap<String, String>,
    api_base: &str,
) -> Result<Value, String> {
    match m {
        Marketplace::MercadoLibre => {
            let (id, secret) = (app.id("client_id")?, app.secret("client_secret")?);
            let form = [
                ("grant_type", "authorization_code"),
                ("client_id", id.as_str()),
                ("client_secret", secret),
                ("code", need(callback, "code")?),
                ("redirect_uri", p.redirect_uri),
                ("code_verifier", p.code_verifier.unwrap_or("")),
            ];
            let v = answer(
                http::read(agent.post(format!("{api_base}/oauth/token")).send_form(form)),
                "MercadoLibre token endpoint",
            )?;
            Ok(
                json!({"client_id": id, "client_secret": secret, "access_token": v["access_token"],
                      "refresh_token": v["refresh_token"], "expires_in": v["expires_in"], "user_id": v["user_id"]}),
            )
        }
        Marketplace::Shopify => {
            let (id, secret) = (app.id("client_id")?, app.secret("client_secret")?);
            let shop = shop_of(p.options)?;
            let base = api_base.replace("{shop}", shop);
            let body =
                json!({"client_id": id, "client_secret": secret, "code": need(callback, "code")?, "expiring": "1"});
            let v = answer(
                http::read(
                    agent
                        .post(format!("{base}/admin/oauth/access_token"))
                        .header("content-type", "application/json")
                        .send(body.to_string().as_bytes()),
                ),
                "Shopify token endpoint",
            )?;
            Ok(
                json!({"shop": shop, "access_token": v["access_token"], "refresh_token": v["refresh_token"],
                      "expires_in": v["expires_in"], "client_id": id, "client_secret": secret}),
            )
        }
        Marketplace::TikTok => {
            let (key, secret) = (app.id("app_key")?, app.secret("app_secret")?);
            let token_base = if api_base == super::tiktok::DEFAULT_BASE {
                super::tiktok::AUTH_BASE
            } else {
                api_base
            };
            let v = answer(
                http::read(
                    agent
                        .get(format!("{token_base}/api/v2/token/get"))
                        .query("app_key", &key)
                        .query("app_secret", secret)
                        .query("auth_code", need(callback, "code")?)
                        .query("grant_type", "authorized_code")
                        .call(),
                ),
                "TikTok Shop token endpoint",
            )?;
            if v.get("code").and_then(Value::as_i64) != Some(0) {
                return Err(format!(
                    "TikTok Shop token endpoint: {} {}",
                    v.get("code").cloned().unwrap_or(Value::Null),
                    truncate(v.get("message").and_then(Value::as_str).unwrap_or(""), 200)
                ));
            }
            let d = &v["data"];
            let mut creds: Map<String, Value> = Map::new();
            creds.insert("app_key".into(), json!(key));
            creds.insert("app_secret".into(), json!(secret));
            for k in ["access_token", "refresh_token", "access_token_expire_in", "open_id"] {
                creds.insert(k.into(), d[k].clone());
            }
            let shop = super::tiktok::authorized_shop(agent, api_base, &Value::Object(creds.clone()))?;
            creds.insert("shop_cipher".into(), json!(shop.0));
            creds.insert("shop_id".into(), json!(shop.1));
            Ok(Value::Object(creds))
        }
        Marketplace::Shein => {
            let (appid, app_secret) = (app.id("appid")?, app.secret("app_secret_key")?);
            if callback.get("appid").is_some_and(|a| *a != appid) {
                return Err("the callback names another app".into());
            }
            let body = json!({"tempToken": need(callback, "tempToken")?});
            let v = answer(
                http::read(
                    agent
                        .post(format!("{api_base}/open-api/auth/get-by-token"))
                        .header("content-type", "application/json;charset=UTF-8")
                        .send(body.to_string().as_bytes()),
                ),
                "SHEIN get-by-token",
            )?;
            if v.get("code").and_then(Value::as_str) != Some("0") {
                return Err(format!(
                    "SHEIN get-by-token: {} {}",
                    v.get("code").cloned().unwrap_or(Value::Null),
                    truncate(v.get("msg").and_then(Value::as_str).unwrap_or(""), 200)
                ));
            }
            let info = &v["info"];
            let encrypted = info
                .get("secretKey")
                .and_then(Value::as_str)
                .ok_or("SHEIN sent no secretKey")?;
            let secret_key =
                signing::shein_decrypt(app_secret, encrypted).map_err(|e| format!("SHEIN secretKey: {e}"))?;
            Ok(
                json!({"open_key_id": info["openKeyId"], "secret_key": secret_key, "appid": appid,
                      "supplier_id": info["supplierId"], "app_secret_key": app_secret}),
            )
        }
    }
}
