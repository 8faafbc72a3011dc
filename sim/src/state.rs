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

/// Requests per key over a sliding window, as the marketplaces count them.
#[derive(Default)]
pub struct SlidingWindows {
    windows: std::collections::HashMap<String, std::collections::VecDeque<std::time::Instant>>,
}

impl SlidingWindows {
    /// Counts a request of `key` unless `limit` requests already arrived within `window`; true
    /// when over the limit (the request is then not counted).
    pub fn over_limit(&mut self, key: &str, limit: usize, window: std::time::Duration) -> bool {
        let now = std::time::Instant::now();
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
}
