//! SHEIN Open Platform: every call signed with `x-lt-*` headers (a fresh 5-character random key
//! and a millisecond timestamp per call), stock written with `change-inventory/v2` OVERWRITE and a
//! per-item `idempotencyKey`, up to 100 SKUs per call. `info.failedList` is read even when `code`
//! is `"0"`: each failed SKU carries SHEIN's own message, verbatim. Keys are permanent: there is
//! no token to refresh, and a refused signature means the supplier must authorize again.

use super::http::{self, elapsed_ms, Reply};
use super::{
    check_keys, Connector, Credentials, Marketplace, PushKind, PushRequest, PushResult, RefreshError, TokenGrant,
};
use marketplace_signing as signing;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub struct Shein;

pub const CHANGE_INVENTORY: &str = "/open-api/stock/change-inventory/v2";
pub const STOCK_QUERY: &str = "/open-api/stock/stock-query";
const MAX_SKUS: usize = 100;
const THROTTLED: &str = "832213";
const BAD_SIGNATURE: &str = "openapi00001";

fn now_ms() -> String {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
        .to_string()
}

fn valid_sku(s: &str) -> bool {
    !s.is_empty() && s.len() <= 100 && s.chars().all(|c| c.is_ascii_graphic())
}

/// A signed POST; the signature covers openKeyId, timestamp and the path (not the body).
pub(super) fn post(agent: &ureq::Agent, req: &PushRequest, path: &str, body: &Value) -> Result<Reply, String> {
    post_text(agent, req, path, &body.to_string())
}

/// `post` with a body written by hand (prices: exact decimals as JSON numbers).
pub(super) fn post_text(agent: &ureq::Agent, req: &PushRequest, path: &str, body: &str) -> Result<Reply, String> {
    let key_id = req.credentials.identifier("open_key_id").unwrap_or_default();
    let secret = req.credentials.secret("secret_key").unwrap_or_default();
    let ts = now_ms();
    let random_key = signing::shein_random_key(&mut rand::thread_rng());
    let mut r = agent
        .post(format!("{}{path}", req.base_url))
        .header("content-type", "application/json;charset=UTF-8")
        .header("x-lt-openKeyId", &key_id)
        .header("x-lt-timestamp", &ts)
        .header(
            "x-lt-signature",
            signing::shein(&key_id, secret, path, &ts, &random_key),
        );
    if let Some(appid) = req.credentials.identifier("appid") {
        r = r.header("x-lt-appid", appid);
    }
    http::read(r.send(body.as_bytes())).map_err(|e| e.0)
}

/// What a whole call's reply means when it is not a per-SKU answer.
pub(crate) fn call_failure(reply: &Reply) -> Option<PushKind> {
    if reply.status != 200 {
        return Some(http::classify_failure(reply));
    }
    let Some(v) = reply.json() else {
        return Some(PushKind::Retry {
            error: "SHEIN answered with a body that is not JSON".into(),
            retry_after: None,
        });
    };
    let code = v.get("code").and_then(Value::as_str).unwrap_or("");
    let msg = v.get("msg").and_then(Value::as_str).unwrap_or("");
    let error = http::truncate(&format!("SHEIN {code}: {msg}"), 500);
    match code {
        "0" => None,
        THROTTLED => Some(PushKind::Throttled {
            error,
            retry_after: reply.retry_after,
        }),
        BAD_SIGNATURE => Some(PushKind::Unauthorized { error }),
        _ => Some(PushKind::Permanent { error }),
    }
}

/// `info.failedList` as skuCode -> SHEIN's reason.
pub(crate) fn failed_skus(reply: &Reply) -> HashMap<String, String> {
    reply
        .json()
        .and_then(|v| v.pointer("/info/failedList").and_then(Value::as_array).cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|f| {
            let sku = f.get("skuCode").and_then(Value::as_str)?;
            let reason = f.get("reason").and_then(Value::as_str).unwrap_or("no reason given");
            Some((sku.to_string(), reason.to_string()))
        })
        .collect()
}

fn item(req: &PushRequest) -> Value {
    let mut it = json!({
        "idempotencyKey": req.idempotency_key,
        "skuCode": req.external_id,
        "invType": "VI",
        "changeType": "OVERWRITE",
        "changeQuantity": req.quantity.max(0),
        "changeReason": "integration: EGDC stock sync",
    });
    if let Some(w) = req.listing_settings.get("warehouse_code").and_then(Value::as_str) {
        it["warehouseCode"] = Value::String(w.to_string());
    }
    it
}

impl Connector for Shein {
    fn own_setting_keys(&self) -> &'static [&'static str] {
        &["webhook_path", "site", "shop_mode"]
    }

    /// The path SHEIN's callback signatures cover: an absolute path, nothing more. `site` (such
    /// as `shein-mx`) and `shop_mode` are what price writes need.
    fn check_own_settings(&self, settings: &serde_json::Map<String, Value>) -> Result<(), String> {
        super::shein_prices::check_settings(settings)?;
        match settings.get("webhook_path") {
            None | Some(Value::Null) => Ok(()),
            Some(Value::String(p))
                if p.starts_with('/')
                    && p.len() <= 255
                    && !p.contains(|c: char| c.is_whitespace() || c.is_control() || c == '?' || c == '#') =>
            {
                Ok(())
            }
            Some(_) => Err("settings.webhook_path must be an absolute path such as \"/hooks/shein\" (no query)".into()),
        }
    }

    fn marketplace(&self) -> Marketplace {
        Marketplace::Shein
    }

    fn default_base_url(&self) -> &'static str {
        "https://openapi.sheincorp.com"
    }

    /// `{"open_key_id", "secret_key" (decrypted), "appid"?, "supplier_id"?}`
    fn split_credentials(&self, input: &Value) -> Result<Credentials, String> {
        let obj = input.as_object().ok_or("shein credentials must be a JSON object")?;
        check_keys(
            obj,
            &["open_key_id", "secret_key", "appid", "supplier_id", "app_secret_key"],
            "shein credentials",
        )?;
        let text = |k: &str| match obj.get(k) {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) if k == "supplier_id" => Ok(Some(n.to_string())),
            Some(_) => Err(format!("shein credentials: \"{k}\" must be a non-empty string")),
        };
        let key_id = text("open_key_id")?.ok_or("shein credentials: \"open_key_id\" is required")?;
        let secret = text("secret_key")?.ok_or("shein credentials: \"secret_key\" is required")?;
        let mut identifiers = Map::new();
        identifiers.insert("open_key_id".into(), Value::String(key_id));
        for k in ["appid", "supplier_id"] {
            if let Some(v) = text(k)? {
                identifiers.insert(k.into(), Value::String(v));
            }
        }
        let mut secrets = Map::new();
        secrets.insert("secret_key".into(), Value::String(secret));
        // the app's own key: event callbacks are signed and encrypted with it
        if let Some(app_key) = text("app_secret_key")? {
            secrets.insert("app_secret_key".into(), Value::String(app_key));
        }
        Ok(Credentials {
            identifiers,
            secrets,
            expires_in: None,
        })
    }

    /// The external id is the SKU code; settings may name the `warehouse_code`.
    fn check_listing(&self, external_id: &str, settings: &Value) -> Result<(), String> {
        if !valid_sku(external_id) {
            return Err(format!(
                "invalid shein SKU code \"{}\": 1 to 100 printable characters, no spaces",
                external_id.chars().take(64).collect::<String>()
            ));
        }
        let obj = settings.as_object().ok_or("listing settings must be a JSON object")?;
        check_keys(
            obj,
            &["warehouse_code", "spu_name", "skc_name"],
            "shein listing settings",
        )?;
        match obj.get("warehouse_code") {
            None | Some(Value::String(_)) => {}
            Some(_) => return Err("shein listing settings: \"warehouse_code\" must be a string".into()),
        }
        // a managed shop's supply cost is written by SPU and SKC (the catalog import fills them)
        for key in ["spu_name", "skc_name"] {
            match obj.get(key) {
                None => {}
                Some(Value::String(v)) if valid_sku(v) => {}
                Some(_) => {
                    return Err(format!(
                    "shein listing settings: \"{key}\" must be SHEIN's name (1 to 100 printable characters, no spaces)"
                ))
                }
            }
        }
        Ok(())
    }

    fn price_call_group(&self, connection_settings: &Value, listing_settings: &Value) -> String {
        super::shein_prices::call_group(connection_settings, listing_settings)
    }

    fn writes_prices(&self) -> bool {
        true
    }

    fn max_price_batch(&self) -> usize {
        super::shein_prices::MAX_PRICES
    }

    fn push_prices(&self, agent: &ureq::Agent, reqs: &[PushRequest]) -> Vec<PushResult> {
        super::shein_prices::push(agent, reqs)
    }

    fn catalog_page(
        &self,
        http: &ureq::Agent,
        req: &PushRequest,
        cursor: Option<&str>,
    ) -> Result<super::catalog::CatalogPage, super::catalog::CatalogError> {
        super::shein_catalog::page(http, req, cursor)
    }

    fn push_stock(&self, agent: &ureq::Agent, req: &PushRequest) -> PushResult {
        super::only_result(self.push_batch(agent, std::slice::from_ref(req)))
    }

    fn max_batch(&self) -> usize {
        MAX_SKUS
    }

    fn push_batch(&self, agent: &ureq::Agent, reqs: &[PushRequest]) -> Vec<PushResult> {
        let start = Instant::now();
        let Some(first) = reqs.first() else { return Vec::new() };
        let body =
            json!({"updateSkuInventoryQuantityRequests": reqs.iter().take(MAX_SKUS).map(item).collect::<Vec<_>>()});
        let all = |kind: PushKind, status: Option<u16>| {
            reqs.iter()
                .map(|_| PushResult {
                    kind: kind.clone(),
                    http_status: status,
                    latency_ms: elapsed_ms(start),
                    learned: None,
                })
                .collect()
        };
        let reply = match post(agent, first, CHANGE_INVENTORY, &body) {
            Ok(r) => r,
            Err(e) => {
                return all(
                    PushKind::Retry {
                        error: e,
                        retry_after: None,
                    },
                    None,
                )
            }
        };
        if let Some(kind) = call_failure(&reply) {
            return all(kind, Some(reply.status));
        }
        let failed = failed_skus(&reply);
        reqs.iter()
            .enumerate()
            .map(|(i, r)| {
                let kind = match failed.get(&r.external_id) {
                    _ if i >= MAX_SKUS => PushKind::Retry {
                        error: "more SKUs than one call carries".into(),
                        retry_after: None,
                    },
                    Some(reason) => PushKind::Permanent {
                        error: http::truncate(&format!("SHEIN refused SKU {}: {reason}", r.external_id), 500),
                    },
                    None => PushKind::Applied { remote: None },
                };
                PushResult {
                    kind,
                    http_status: Some(reply.status),
                    latency_ms: elapsed_ms(start),
                    learned: None,
                }
            })
            .collect()
    }

    fn read_stock(&self, agent: &ureq::Agent, req: &PushRequest) -> Result<Option<i64>, String> {
        let reply = post(
            agent,
            req,
            STOCK_QUERY,
            &json!({"skuCodeList": [req.external_id], "invType": "VI"}),
        )?;
        if let Some(kind) = call_failure(&reply) {
            return Err(kind.error().unwrap_or("unexpected reply").to_string());
        }
        let v = reply.json().unwrap_or(Value::Null);
        let found = v
            .get("info")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|i| i.get("goodsInventory").and_then(Value::as_array).into_iter().flatten())
            .flat_map(|g| g.get("skuList").and_then(Value::as_array).into_iter().flatten())
            .find(|s| s.get("skuCode").and_then(Value::as_str) == Some(req.external_id.as_str()))
            .and_then(|s| s.get("totalUsableInventory").and_then(Value::as_i64));
        Ok(found)
    }

    fn refreshes_tokens(&self) -> bool {
        false
    }

    fn refresh(&self, _: &ureq::Agent, _: &str, _: &Credentials) -> Result<TokenGrant, RefreshError> {
        Err(RefreshError::InvalidGrant(
            "SHEIN refused this supplier's keys; they cannot be refreshed, authorize the supplier again".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> Reply {
        Reply::new(status, body)
    }

    #[test]
    fn envelope_codes_map_to_decisions() {
        assert_eq!(
            call_failure(&reply(200, r#"{"code":"0","info":{"failedList":[]}}"#)),
            None
        );
        assert!(matches!(
            call_failure(&reply(200, r#"{"code":"832213","msg":"请求过于频繁"}"#)),
            Some(PushKind::Throttled { .. })
        ));
        match call_failure(&reply(
            200,
            r#"{"code":"openapi00001","msg":"签名错误:生成的签名不正确"}"#,
        )) {
            Some(PushKind::Unauthorized { error }) => {
                assert_eq!(error, "SHEIN openapi00001: 签名错误:生成的签名不正确")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            call_failure(&reply(200, r#"{"code":"400","msg":"x"}"#)),
            Some(PushKind::Permanent { .. })
        ));
        assert!(matches!(
            call_failure(&reply(429, "")),
            Some(PushKind::Throttled { .. })
        ));
        assert!(matches!(call_failure(&reply(503, "")), Some(PushKind::Retry { .. })));
        assert!(matches!(
            call_failure(&reply(200, "<html>")),
            Some(PushKind::Retry { .. })
        ));
        let f = failed_skus(&reply(
            200,
            r#"{"code":"0","info":{"failedList":[{"skuCode":"A","reason":"SKU不存在"}]}}"#,
        ));
        assert_eq!(f.get("A").map(String::as_str), Some("SKU不存在"));
    }

    #[test]
    fn credentials_and_listings_are_checked() {
        let c = Shein
            .split_credentials(&json!({"open_key_id": "K", "secret_key": "S", "supplier_id": 7}))
            .unwrap();
        assert_eq!(c.identifier("supplier_id").as_deref(), Some("7"));
        assert_eq!(c.secret("secret_key"), Some("S"));
        assert!(c.identifiers.get("secret_key").is_none());
        assert!(Shein.split_credentials(&json!({"open_key_id": "K"})).is_err());
        assert!(Shein
            .split_credentials(&json!({"open_key_id": "K", "secret_key": "S", "x": 1}))
            .is_err());
        assert!(Shein.check_listing("SKU-1", &json!({"warehouse_code": "WH"})).is_ok());
        assert!(Shein.check_listing("has space", &json!({})).is_err());
        assert!(Shein.check_listing("SKU", &json!({"warehouse_code": 5})).is_err());
        assert!(Shein
            .check_listing(
                "SKU",
                &json!({"warehouse_code": "WH", "spu_name": "M1", "skc_name": "sM1"})
            )
            .is_ok());
        assert!(Shein.check_listing("SKU", &json!({"spu_name": "a b"})).is_err());
        assert!(Shein.check_listing("SKU", &json!({"skc_name": 5})).is_err());
    }
}
