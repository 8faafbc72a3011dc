//! Webhook deliveries as the marketplaces send them. Each marketplace module builds its own
//! (real headers, signing and body shape); this module hands a delivery back to the admin caller
//! (so a test can pass it straight to `integ.receive_webhook`) and/or POSTs it to the callback URL
//! registered for that marketplace, retrying like the marketplace does (delays scaled down and
//! configurable). MercadoLibre notifications never acknowledged go to its missed feeds.

use crate::state::State;
use axum::extract::State as AxState;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// One delivery: the body exactly as sent, and its headers.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub marketplace: &'static str,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Delivery {
    pub fn to_json(&self) -> Value {
        let headers: serde_json::Map<String, Value> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        json!({"marketplace": self.marketplace, "headers": headers, "body": self.body})
    }
}

#[derive(Default)]
pub struct Hooks {
    /// marketplace -> callback URL
    pub urls: HashMap<String, String>,
    /// marketplace -> delays before each retry, in ms (the default schedule when absent)
    pub retry_delays_ms: HashMap<String, Vec<u64>>,
    /// Copies sent of every delivery (at-least-once delivery, as the marketplaces do it).
    pub copies: u32,
    /// Every attempt: {marketplace, attempt, status | error}
    pub log: Vec<Value>,
    /// MercadoLibre notifications never acknowledged: app id -> notifications
    pub missed: HashMap<String, Vec<Value>>,
}

/// The retry schedules, scaled down from the real ones: Shopify retries 8 times over 4 hours,
/// MercadoLibre for about an hour; TikTok and SHEIN do not publish theirs.
fn default_delays(marketplace: &str) -> Vec<u64> {
    match marketplace {
        "shopify" => vec![500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000],
        "mercadolibre" => vec![1_000; 20],
        _ => vec![1_000, 2_000, 4_000, 8_000, 16_000],
    }
}

/// The callback path a marketplace signs over (SHEIN signs the callback's own path).
pub fn callback_path(state: &State, marketplace: &str) -> String {
    let hooks = state.hooks.lock();
    hooks
        .urls
        .get(marketplace)
        .and_then(|u| u.split("://").nth(1))
        .and_then(|rest| {
            rest.find('/')
                .map(|i| rest[i..].split('?').next().unwrap_or("/").to_string())
        })
        .unwrap_or_else(|| "/".to_string())
}

/// Sends a delivery to the marketplace's callback URL, if one is registered, in the background.
/// `on_attempt` rewrites the body per attempt (MercadoLibre counts `attempts` in it);
/// `missed_key` files an unacknowledged MercadoLibre notification under its application.
pub fn emit(state: &Arc<State>, d: &Delivery, missed_key: Option<String>) {
    let (url, delays, copies) = {
        let h = state.hooks.lock();
        let Some(url) = h.urls.get(d.marketplace).cloned() else {
            if let Some(app) = missed_key {
                drop(h);
                file_missed(state, &app, &d.body);
            }
            return;
        };
        let delays = h
            .retry_delays_ms
            .get(d.marketplace)
            .cloned()
            .unwrap_or_else(|| default_delays(d.marketplace));
        (url, delays, h.copies.max(1))
    };
    for _ in 0..copies {
        let (state, d, url, delays, missed_key) = (
            state.clone(),
            d.clone(),
            url.clone(),
            delays.clone(),
            missed_key.clone(),
        );
        tokio::spawn(async move {
            for attempt in 0..=delays.len() {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(delays[attempt - 1])).await;
                }
                let mut body = d.body.clone();
                if d.marketplace == "mercadolibre" {
                    body = with_attempts(&body, attempt + 1);
                }
                let (url2, headers, sent) = (url.clone(), d.headers.clone(), body.clone());
                let result = tokio::task::spawn_blocking(move || send_once(&url2, &headers, &sent))
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()));
                let entry = match &result {
                    Ok(status) => json!({"marketplace": d.marketplace, "attempt": attempt + 1, "status": status}),
                    Err(e) => json!({"marketplace": d.marketplace, "attempt": attempt + 1, "error": e}),
                };
                state.hooks.lock().log.push(entry);
                state.count(format!("{} webhook attempts", d.marketplace));
                if matches!(result, Ok(s) if (200..300).contains(&s)) {
                    state.count(format!("{} webhooks delivered", d.marketplace));
                    return;
                }
            }
            state.count(format!("{} webhooks given up", d.marketplace));
            if let Some(app) = missed_key {
                file_missed(&state, &app, &d.body);
            }
        });
    }
}

fn with_attempts(body: &str, attempts: usize) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(mut v) => {
            v["attempts"] = json!(attempts);
            v.to_string()
        }
        Err(_) => body.to_string(),
    }
}

/// Files a MercadoLibre notification in its application's missed feeds.
pub fn file_missed(state: &State, app: &str, body: &str) {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        state.hooks.lock().missed.entry(app.to_string()).or_default().push(v);
    }
}

fn send_once(url: &str, headers: &[(String, String)], body: &str) -> Result<u16, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(1)))
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.post(url);
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    req.send(body.as_bytes())
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

// ---- admin (/_admin/webhooks) -----------------------------------------------------------------

pub fn admin_router() -> Router<Arc<State>> {
    Router::new().route("/", post(configure).get(show).delete(reset))
}

/// `{"marketplace", "url"?: string | null, "retry_delays_ms"?: [..], "copies"?: n}`
async fn configure(AxState(state): AxState<Arc<State>>, Json(b): Json<Value>) -> Response {
    let mut h = state.hooks.lock();
    if let Some(m) = b.get("marketplace").and_then(Value::as_str) {
        match b.get("url") {
            Some(Value::String(u)) => {
                h.urls.insert(m.to_string(), u.clone());
            }
            Some(Value::Null) => {
                h.urls.remove(m);
            }
            _ => {}
        }
        if let Some(d) = b.get("retry_delays_ms").and_then(Value::as_array) {
            let delays = d.iter().filter_map(Value::as_u64).collect();
            h.retry_delays_ms.insert(m.to_string(), delays);
        }
    }
    if let Some(c) = b.get("copies").and_then(Value::as_u64) {
        h.copies = c.clamp(1, 100) as u32;
    }
    Json(json!({"ok": true})).into_response()
}

async fn show(AxState(state): AxState<Arc<State>>) -> Response {
    let h = state.hooks.lock();
    Json(json!({"urls": h.urls, "copies": h.copies.max(1), "log": h.log, "missed": h.missed})).into_response()
}

async fn reset(AxState(state): AxState<Arc<State>>) -> Response {
    *state.hooks.lock() = Hooks::default();
    Json(json!({"ok": true})).into_response()
}

/// The admin answer for a new event: its id and the delivery, sent unless `"send": false`.
pub fn produced(state: &Arc<State>, body: &Value, event: Value, d: &Delivery, missed_key: Option<String>) -> Response {
    let send = body.get("send").and_then(Value::as_bool).unwrap_or(true);
    let lose = body.get("lose").and_then(Value::as_bool).unwrap_or(false);
    if lose {
        // the notification never reached the app (it was down): only the missed feeds have it
        if let Some(app) = &missed_key {
            file_missed(state, app, &d.body);
        }
    } else if send {
        emit(state, d, missed_key);
    }
    Json(json!({"event": event, "delivery": d.to_json()})).into_response()
}
