//! Fault injection, per marketplace: error rate and status, latency, timeouts (the reply comes
//! too late for any client) and dropped connections (the reply is cut off mid-way).

use crate::state::State;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State as AxState};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Fault {
    /// Fraction of requests answered with `error_status`.
    pub error_rate: f64,
    /// Every n-th request (of the marketplace, counted since the fault was set) answered with
    /// `error_status`: an exact share, where `error_rate` is a chance. 0: off.
    pub error_every: u64,
    pub error_status: Option<u16>,
    /// Added to every request.
    pub latency_ms: u64,
    /// Fraction of requests held for `timeout_ms` (default 30 s) and then answered 504.
    pub timeout_rate: f64,
    pub timeout_ms: Option<u64>,
    /// Fraction of requests whose connection is dropped mid-reply.
    pub drop_rate: f64,
}

/// Faults by marketplace ("mercadolibre", ...) or "*" for all.
#[derive(Default)]
pub struct Faults {
    pub by_marketplace: HashMap<String, Fault>,
    /// Requests seen per marketplace since its fault was set (for `error_every`).
    pub seen: HashMap<String, u64>,
}

fn marketplace_of(path: &str) -> &str {
    path.trim_start_matches('/').split('/').next().unwrap_or("")
}

pub async fn inject(AxState(state): AxState<Arc<State>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let market = marketplace_of(&path).to_string();
    state.count(format!("{market} requests"));
    let (fault, nth) = {
        let mut f = state.faults.lock();
        let fault = f
            .by_marketplace
            .get(&market)
            .or_else(|| f.by_marketplace.get("*"))
            .cloned();
        let seen = f.seen.entry(market.clone()).or_insert(0);
        *seen += 1;
        (fault, *seen)
    };
    let Some(fault) = fault else { return next.run(req).await };
    if fault.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(fault.latency_ms)).await;
    }
    let (timeout, drop, error) = {
        let mut rng = rand::thread_rng();
        (
            rng.gen_bool(fault.timeout_rate.clamp(0.0, 1.0)),
            rng.gen_bool(fault.drop_rate.clamp(0.0, 1.0)),
            rng.gen_bool(fault.error_rate.clamp(0.0, 1.0))
                || (fault.error_every > 0 && nth.is_multiple_of(fault.error_every)),
        )
    };
    // Timeouts and drops happen after the request was processed, as on a real network: the
    // write may have landed even though the client never hears of it.
    if timeout {
        state.count(format!("{market} faults timeout"));
        let _ = next.run(req).await;
        tokio::time::sleep(Duration::from_millis(fault.timeout_ms.unwrap_or(30_000))).await;
        return (StatusCode::GATEWAY_TIMEOUT, "").into_response();
    }
    if drop {
        state.count(format!("{market} faults drop"));
        let _ = next.run(req).await;
        let stream = futures_util::stream::once(async {
            Err::<Bytes, std::io::Error>(std::io::Error::other("dropped by fault injection"))
        });
        return Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(Body::from_stream(stream))
            .unwrap_or_default();
    }
    if error {
        state.count(format!("{market} faults error"));
        let status =
            StatusCode::from_u16(fault.error_status.unwrap_or(500)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({"message": "injected fault", "error": "internal_error", "status": status.as_u16(), "cause": []});
        return (status, axum::Json(body)).into_response();
    }
    next.run(req).await
}
