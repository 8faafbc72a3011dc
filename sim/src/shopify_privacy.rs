//! A Shopify shop's personal data and the end of an install: the buyer and shipping address
//! orders carry, `app/uninstalled` (then every token of the shop dies and its API subscriptions
//! go, until the merchant installs again), and the mandatory compliance webhooks
//! `customers/data_request`, `customers/redact` and `shop/redact` with Shopify's documented
//! bodies, sent to the app-level URL only (see shopify_webhooks.rs).

use crate::shopify::Shopify;
use crate::shopify_webhooks::COMPLIANCE;
use crate::state::State;
use crate::webhooks;
use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;

pub fn admin_router() -> Router<Arc<State>> {
    Router::new()
        .route("/shops/{shop}/uninstall", post(admin_uninstall))
        .route("/privacy", post(admin_privacy))
}

fn bad(msg: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": msg}))).into_response()
}

/// A shop's numeric id, stable for its domain (webhook bodies name shops by it).
pub fn shop_id(shop: &str) -> u64 {
    // FNV-1a: the same shop gets the same id across installs and resets
    let h = shop.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    10_000_000_000 + h % 90_000_000_000
}

/// The buyer of an order: generated from `id`, the fields of `given` (an object) over it.
pub fn customer(id: u64, given: Option<&Value>) -> Value {
    let mut c = json!({"id": id, "email": format!("buyer{id}@example.com"), "first_name": "Ana",
                       "last_name": format!("Buyer{}", id % 10_000), "phone": format!("+5255{:08}", id % 100_000_000)});
    if let (Some(o), Some(given)) = (c.as_object_mut(), given.and_then(Value::as_object)) {
        for (k, v) in given {
            o.insert(k.clone(), v.clone());
        }
    }
    c
}

/// The shipping address of an order to that buyer.
pub fn shipping_address(customer: &Value) -> Value {
    let s = |k: &str| customer.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let (first, last) = (s("first_name"), s("last_name"));
    json!({"first_name": first, "last_name": last, "name": format!("{first} {last}").trim(),
           "address1": "Av. Paseo de la Reforma 222", "address2": "Piso 3", "city": "Ciudad de México",
           "province": "Ciudad de México", "province_code": "CMX", "zip": "06600", "country": "Mexico",
           "country_code": "MX", "phone": customer.get("phone").cloned().unwrap_or(Value::Null), "company": null})
}

/// The shop object `app/uninstalled` carries.
fn shop_object(shop: &str) -> Value {
    let name = shop.split('.').next().unwrap_or(shop);
    json!({"id": shop_id(shop), "name": name, "email": format!("owner@{shop}"), "domain": shop,
           "myshopify_domain": shop, "plan_name": "basic", "plan_display_name": "Basic",
           "country_code": "MX", "currency": "MXN", "timezone": "(GMT-06:00) America/Mexico_City",
           "created_at": "2024-01-15T10:00:00-06:00", "updated_at": crate::state::rfc3339_now()})
}

impl Shopify {
    /// The merchant uninstalls the app: the shop's tokens die, its API subscriptions go and it
    /// no longer counts as installed (its former app is kept to sign `shop/redact`). Counts of
    /// (tokens revoked, subscriptions deleted).
    pub fn uninstall(&mut self, shop: &str) -> (usize, usize) {
        let before = self.access.len() + self.refresh.len();
        self.access.retain(|_, (s, _)| s != shop);
        self.refresh.retain(|_, (s, _)| s != shop);
        let tokens = before - self.access.len() - self.refresh.len();
        if let Some(app) = self.shop_apps.remove(shop) {
            self.webhooks.former_apps.insert(shop.to_string(), app);
        }
        (tokens, self.webhooks.remove_shop(shop))
    }
}

/// `{"send"?}`: Shopify sends `app/uninstalled` to the shop's subscribers, then the install ends.
async fn admin_uninstall(
    AxState(state): AxState<Arc<State>>,
    Path(shop): Path<String>,
    Json(b): Json<Value>,
) -> Response {
    let mut m = state.shopify.lock();
    if !m.shop_apps.contains_key(&shop) {
        return bad("the shop has not installed the app");
    }
    // routed before the subscriptions go: APP_UNINSTALLED subscribers hear of it
    let d = match crate::shopify_webhooks::delivery(&state, &m, &shop, "app/uninstalled", &shop_object(&shop)) {
        Ok(d) => d,
        Err(e) => return bad(&e),
    };
    let (tokens, subscriptions) = m.uninstall(&shop);
    drop(m);
    state.count("shopify uninstalls");
    let event = json!({"ok": true, "tokens_revoked": tokens, "subscriptions_deleted": subscriptions});
    webhooks::produced(&state, &b, event, &d, None)
}

/// `{"shop", "topic", "customer"?: {"id", "email", "phone"}, "orders"?: [ids], "send"?}`: a
/// compliance webhook with Shopify's body. Without `customer`, the buyer of the first known order
/// listed; without `orders`, that customer's orders in the shop.
async fn admin_privacy(AxState(state): AxState<Arc<State>>, Json(b): Json<Value>) -> Response {
    let (Some(shop), Some(topic)) = (
        b.get("shop").and_then(Value::as_str),
        b.get("topic").and_then(Value::as_str),
    ) else {
        return bad("shop and topic are required");
    };
    if !COMPLIANCE.contains(&topic) {
        return bad("topic must be customers/data_request, customers/redact or shop/redact");
    }
    let mut m = state.shopify.lock();
    let Some(app) = m
        .shop_apps
        .get(shop)
        .or_else(|| m.webhooks.former_apps.get(shop))
        .cloned()
    else {
        return bad("the shop never installed the app");
    };
    let body = match privacy_body(&mut m, shop, topic, &b) {
        Ok(body) => body,
        Err(e) => return bad(&e),
    };
    let mut d = match m.signed(&app, shop, topic, &body) {
        Ok(d) => d,
        Err(e) => return bad(&e),
    };
    d.targets = Some(crate::shopify_webhooks::targets(&state, &m, shop, topic));
    drop(m);
    state.count(format!("shopify {topic}"));
    webhooks::produced(&state, &b, json!({"ok": true}), &d, None)
}

/// The documented body of a compliance topic.
fn privacy_body(m: &mut Shopify, shop: &str, topic: &str, b: &Value) -> Result<Value, String> {
    let mut body = json!({"shop_id": shop_id(shop), "shop_domain": shop});
    if topic == "shop/redact" {
        return Ok(body);
    }
    let listed: Option<Vec<Value>> = b.get("orders").and_then(Value::as_array).cloned();
    let known = |id: &Value| {
        id.as_u64()
            .or_else(|| id.as_str().and_then(|s| s.parse().ok()))
            .and_then(|id| m.orders.get(&id))
            .filter(|o| o.shop == shop)
    };
    let customer = match b.get("customer") {
        Some(c) if c.is_object() => c.clone(),
        Some(_) => return Err("customer must be an object".into()),
        None => listed
            .iter()
            .flatten()
            .find_map(|id| known(id).map(|o| o.customer.clone()))
            .ok_or("customer is required (or orders naming a known order)")?,
    };
    let customer = json!({"id": customer.get("id").cloned().unwrap_or(Value::Null),
                          "email": customer.get("email").cloned().unwrap_or(Value::Null),
                          "phone": customer.get("phone").cloned().unwrap_or(Value::Null)});
    let orders: Vec<Value> = match listed {
        Some(l) => l,
        None => {
            let mut ids: Vec<u64> = m
                .orders
                .iter()
                .filter(|(_, o)| o.shop == shop && o.customer.get("id") == customer.get("id"))
                .map(|(id, _)| *id)
                .collect();
            ids.sort_unstable();
            ids.into_iter().map(Value::from).collect()
        }
    };
    body["customer"] = customer;
    if topic == "customers/redact" {
        body["orders_to_redact"] = json!(orders);
    } else {
        body["orders_requested"] = json!(orders);
        body["data_request"] = json!({"id": m.next_id()});
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shopify_webhooks::tests::{body_json, call, setup, subscribe, A};

    const LIST: &str = "{ webhookSubscriptions(first: 10) { nodes { id } } }";

    /// A loopback address nobody listens on; deliveries to it fail at once (no retries).
    fn dead_end(state: &State, path: &str) -> String {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        state.hooks.lock().retry_delays_ms.insert("shopify".into(), Vec::new());
        state.shopify.lock().webhooks.allow_http = true;
        format!("http://127.0.0.1:{port}{path}")
    }

    fn header(v: &Value, k: &str) -> String {
        v["delivery"]["headers"][k].as_str().unwrap_or("").to_string()
    }

    fn body(v: &Value) -> Value {
        serde_json::from_str(v["delivery"]["body"].as_str().unwrap_or("")).unwrap()
    }

    #[tokio::test]
    async fn uninstall_notifies_then_kills_tokens_and_subscriptions_until_reinstalled() {
        let (state, a, b) = setup();
        let refresh = state.shopify.lock().grant(A, "c", true)["refresh_token"]
            .as_str()
            .unwrap()
            .to_string();
        let gone = dead_end(&state, "/uninstalled");
        subscribe(&state, &a, "APP_UNINSTALLED", &gone).await;
        subscribe(&state, &a, "ORDERS_CREATE", "https://a.example/create").await;
        subscribe(&state, &b, "ORDERS_CREATE", "https://b.example/create").await;
        let r = admin_uninstall(AxState(state.clone()), Path(A.into()), Json(json!({}))).await;
        let v = body_json(r).await;
        assert_eq!(header(&v, "X-Shopify-Topic"), "app/uninstalled");
        assert_eq!(v["sent_to"], json!([gone]));
        assert_eq!(body(&v)["myshopify_domain"], A);
        assert_eq!(body(&v)["id"], shop_id(A));
        assert_eq!(v["event"]["subscriptions_deleted"], 2);
        // two grants: two access and two refresh tokens
        assert_eq!(v["event"]["tokens_revoked"], 4);
        // the old tokens die; the other shop keeps its install
        let r = call(&state, &a, "2026-01", LIST, json!({})).await;
        assert!(r["errors"].as_str().unwrap_or("").contains("Invalid API key"), "{r}");
        let refreshed = crate::shopify::access_token(
            AxState(state.clone()),
            Json(json!({"client_id": "c", "client_secret": "s", "refresh_token": refresh, "grant_type": "refresh_token"})),
        )
        .await;
        assert_eq!(refreshed.status(), 400);
        let other = call(&state, &b, "2026-01", LIST, json!({})).await;
        assert_eq!(
            other["data"]["webhookSubscriptions"]["nodes"].as_array().map(Vec::len),
            Some(1)
        );
        let r = admin_uninstall(AxState(state.clone()), Path(A.into()), Json(json!({}))).await;
        assert_eq!(r.status(), 400);
        // installing again gives working tokens and a clean slate
        let q = state.shopify.lock().install_callback(A, "c", "n").unwrap();
        let g = crate::shopify::access_token(
            AxState(state.clone()),
            Json(json!({"client_id": "c", "client_secret": "s", "code": q["code"], "expiring": "1"})),
        )
        .await;
        let token = body_json(g).await["access_token"].as_str().unwrap().to_string();
        let fresh = call(&state, &token, "2026-01", LIST, json!({})).await;
        assert_eq!(fresh["data"]["webhookSubscriptions"]["nodes"], json!([]));
    }

    #[tokio::test]
    async fn orders_carry_the_buyer_and_privacy_webhooks_have_shopify_s_bodies() {
        let (state, _, _) = setup();
        let toml = dead_end(&state, "/toml");
        state.hooks.lock().urls.insert("shopify".into(), toml.clone());
        state
            .shopify
            .lock()
            .levels
            .insert((A.into(), "1".into(), "9".into()), Default::default());
        let order = |customer: Value| {
            let state = state.clone();
            async move {
                let mut b = json!({"shop": A, "send": false,
                                   "lines": [{"inventory_item_id": 1, "location_id": 9, "sku": "S", "quantity": 1}]});
                if !customer.is_null() {
                    b["customer"] = customer;
                }
                body_json(crate::shopify::admin_order(AxState(state), Json(b)).await).await
            }
        };
        let generated = body(&order(Value::Null).await);
        assert!(generated["customer"]["email"].as_str().is_some_and(|e| e.contains('@')));
        assert!(generated["shipping_address"]["address1"].is_string());
        let o = order(json!({"email": "ana@example.com", "first_name": "Ana", "last_name": "Pérez"})).await;
        assert_eq!(o["sent_to"], json!([]));
        let placed = body(&o);
        assert_eq!(placed["customer"]["email"], "ana@example.com");
        assert_eq!(placed["shipping_address"]["name"], "Ana Pérez");
        let (order_id, customer) = (placed["id"].clone(), placed["customer"].clone());
        let privacy = |b: Value| {
            let state = state.clone();
            async move { body_json(admin_privacy(AxState(state), Json(b)).await).await }
        };
        // customers/redact: the customer's orders found for them; only the app-level URL hears it
        let v = privacy(json!({"shop": A, "topic": "customers/redact", "customer": customer})).await;
        assert_eq!(v["sent_to"], json!([toml]));
        assert_eq!(header(&v, "X-Shopify-Topic"), "customers/redact");
        let raw = v["delivery"]["body"].as_str().unwrap_or("");
        assert_eq!(
            header(&v, "X-Shopify-Hmac-Sha256"),
            marketplace_signing::shopify_webhook("s", raw.as_bytes())
        );
        assert_eq!(
            body(&v),
            json!({"shop_id": shop_id(A), "shop_domain": A, "orders_to_redact": [order_id],
                   "customer": {"id": customer["id"], "email": "ana@example.com", "phone": customer["phone"]}})
        );
        // customers/data_request: the customer of the orders named
        let v = privacy(json!({"shop": A, "topic": "customers/data_request", "orders": [order_id]})).await;
        let b = body(&v);
        assert_eq!(b["orders_requested"], json!([order_id]));
        assert_eq!(b["customer"]["email"], "ana@example.com");
        assert!(b["data_request"]["id"].is_u64());
        // shop/redact comes after the uninstall, still signed with the app
        admin_uninstall(AxState(state.clone()), Path(A.into()), Json(json!({"send": false}))).await;
        let v = privacy(json!({"shop": A, "topic": "shop/redact"})).await;
        assert_eq!(body(&v), json!({"shop_id": shop_id(A), "shop_domain": A}));
        let raw = v["delivery"]["body"].as_str().unwrap_or("");
        assert_eq!(
            header(&v, "X-Shopify-Hmac-Sha256"),
            marketplace_signing::shopify_webhook("s", raw.as_bytes())
        );
        assert_eq!(v["sent_to"], json!([toml]));
        // refused: another topic, an unknown shop, no customer to name
        for b in [
            json!({"shop": A, "topic": "orders/create"}),
            json!({"shop": "nope.myshopify.com", "topic": "shop/redact"}),
            json!({"shop": "b.myshopify.com", "topic": "customers/redact"}),
        ] {
            assert_eq!(admin_privacy(AxState(state.clone()), Json(b)).await.status(), 400);
        }
    }
}
