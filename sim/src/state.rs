//! The sandbox's whole state: per-marketplace data, injected faults and request counters.

use crate::faults::Faults;
use crate::mercadolibre::Meli;
use crate::shein::Shein;
use crate::shopify::Shopify;
use crate::tiktok::TikTok;
use parking_lot::Mutex;
use std::collections::BTreeMap;

#[derive(Default)]
pub struct State {
    pub faults: Mutex<Faults>,
    /// "mercadolibre PUT /items/{id}" -> count, and other named counters.
    pub counters: Mutex<BTreeMap<String, u64>>,
    pub meli: Mutex<Meli>,
    pub shein: Mutex<Shein>,
    pub shopify: Mutex<Shopify>,
    pub tiktok: Mutex<TikTok>,
    pub hooks: Mutex<crate::webhooks::Hooks>,
}

impl State {
    pub fn count(&self, key: impl Into<String>) {
        *self.counters.lock().entry(key.into()).or_insert(0) += 1;
    }
}

pub fn random_token(prefix: &str) -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let tail: String = (0..32).map(|_| format!("{:x}", rng.gen::<u8>() & 0xf)).collect();
    format!("{prefix}{tail}")
}

/// A random UUID (v4 layout), as the marketplaces use for delivery ids.
pub fn uuid() -> String {
    use rand::Rng;
    let b: [u8; 16] = rand::thread_rng().gen();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Now as RFC 3339 in UTC with milliseconds, e.g. 2026-11-26T04:30:00.123Z.
pub fn rfc3339_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // civil date from days since 1970-01-01 (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60,
        now.subsec_millis()
    )
}

/// A per-key request limit over a sliding window, as the marketplaces count them (per seller,
/// shop or supplier). No limit unless configured.
pub struct RateLimit {
    pub limit: Option<usize>,
    pub window: std::time::Duration,
    windows: std::collections::HashMap<String, std::collections::VecDeque<std::time::Instant>>,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            limit: None,
            window: std::time::Duration::from_secs(60),
            windows: Default::default(),
        }
    }
}

impl RateLimit {
    /// Counts a request of `key` unless the limit is reached within the window; true when over
    /// it (the request is then not counted).
    pub fn over(&mut self, key: &str) -> bool {
        let Some(limit) = self.limit else { return false };
        let now = std::time::Instant::now();
        let window = self.window;
        let w = self.windows.entry(key.to_string()).or_default();
        while w.front().is_some_and(|t| now.duration_since(*t) >= window) {
            w.pop_front();
        }
        if w.len() >= limit {
            return true;
        }
        w.push_back(now);
        false
    }

    /// The admin API's `{"rate_limit_per_minute"?: n | null, "rate_window_s"?}`.
    pub fn configure(&mut self, body: &serde_json::Value) {
        if let Some(v) = body.get("rate_limit_per_minute") {
            self.limit = v.as_u64().map(|n| n as usize);
        }
        if let Some(w) = body
            .get("rate_window_s")
            .and_then(serde_json::Value::as_f64)
            .filter(|w| *w > 0.0 && w.is_finite())
        {
            self.window = std::time::Duration::from_secs_f64(w);
        }
    }
}
