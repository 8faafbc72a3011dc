//! Rate limits and circuit breakers: the arithmetic, in plain Rust (the shared-memory table
//! that holds their state is `shmem::limiter`).
//!
//! GCRA (as in redis-cell and the `governor` crate): a quota of `rate` requests per `period`
//! with `burst` is one "theoretical arrival time" per key. A request at `now` is allowed when
//! `tat + T <= now + T * burst` (T = period / rate), and then moves `tat` on by T.

use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Nanoseconds between requests at the sustained rate (T).
    pub emission_ns: i64,
    /// Requests allowed at once after an idle period.
    pub burst: i64,
}

impl Quota {
    pub fn new(requests: u32, period: Duration, burst: u32) -> Quota {
        let requests = requests.max(1) as i64;
        let period_ns = (period.as_nanos().min(i64::MAX as u128) as i64).max(1);
        Quota {
            emission_ns: (period_ns / requests).max(1),
            burst: burst.max(1) as i64,
        }
    }

    /// Requests per second at the sustained rate.
    pub fn per_second(&self) -> f64 {
        1e9 / self.emission_ns as f64
    }

    /// Parses `"200/min"`, `"4/s:40"`, `"1000/hour"`, `"100/60s"`: requests / period [: burst].
    pub fn parse(s: &str) -> Result<Quota, String> {
        let bad = || format!("invalid rate limit \"{s}\": expected requests/period[:burst], e.g. 200/min or 4/s:40");
        let (rate, rest) = s.trim().split_once('/').ok_or_else(bad)?;
        let (period, burst) = match rest.split_once(':') {
            Some((p, b)) => (p, b.trim().parse::<u32>().map_err(|_| bad())?),
            None => (rest, 1),
        };
        let requests: u32 = rate.trim().parse().map_err(|_| bad())?;
        if requests == 0 || burst == 0 {
            return Err(bad());
        }
        if burst > MAX_BURST {
            return Err(format!("invalid rate limit \"{s}\": the burst is at most {MAX_BURST}"));
        }
        let period = parse_period(period.trim()).ok_or_else(bad)?;
        Ok(Quota::new(requests, period, burst))
    }
}

/// Limits beyond these are no limits a marketplace has, and keep the limiter's nanosecond
/// arithmetic (interval × burst, interval × 102) far inside an i64.
const MAX_BURST: u32 = 100_000;
const MAX_PERIOD_SECS: f64 = 86_400.0;

/// A period of at most a day.
fn parse_period(p: &str) -> Option<Duration> {
    let (num, unit) = match p.find(|c: char| c.is_ascii_alphabetic()) {
        Some(0) => ("1", p),
        Some(i) => (&p[..i], &p[i..]),
        None => return None,
    };
    let n: f64 = num.trim().parse().ok().filter(|n: &f64| *n > 0.0 && n.is_finite())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "sec" | "second" => n,
        "m" | "min" | "minute" => n * 60.0,
        "h" | "hour" => n * 3600.0,
        _ => return None,
    };
    (secs <= MAX_PERIOD_SECS).then(|| Duration::from_secs_f64(secs))
}

/// The built-in quota of each marketplace (per tenant), from the product brief.
pub fn default_quota(marketplace: &str) -> Quota {
    let spec = match marketplace {
        "shopify" => "4/s:40",
        "tiktok" => "1000/hour",
        "shein" => "100/min",
        _ => "200/min",
    };
    Quota::parse(spec).unwrap_or(Quota {
        emission_ns: 300_000_000,
        burst: 1,
    })
}

/// What one GCRA check decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub limited: bool,
    /// Requests of this size that would still be allowed now.
    pub remaining: i64,
    /// When limited: ns until this request would be allowed; -1 when it never can (larger
    /// than the burst) or it was not limited.
    pub retry_after_ns: i64,
    /// ns until the limiter is back to its full burst.
    pub reset_after_ns: i64,
}

/// GCRA check of `n` requests at `now`; moves `tat` on when allowed (n = 0 only peeks).
pub fn gcra_n(tat: &mut i64, now: i64, q: Quota, n: i64) -> Verdict {
    let dvt = q.emission_ns.saturating_mul(q.burst);
    let increment = q.emission_ns.saturating_mul(n);
    let base = (*tat).max(now);
    let new_tat = base.saturating_add(increment);
    let allow_at = new_tat.saturating_sub(dvt);
    if n > q.burst || now < allow_at {
        let current = base;
        return Verdict {
            limited: true,
            remaining: ((now - (current - dvt)) / q.emission_ns).max(0),
            retry_after_ns: if n > q.burst { -1 } else { allow_at - now },
            reset_after_ns: current - now,
        };
    }
    *tat = new_tat;
    Verdict {
        limited: false,
        remaining: (now - allow_at) / q.emission_ns,
        retry_after_ns: -1,
        reset_after_ns: new_tat - now,
    }
}

/// One request. Ok: allowed, `tat` moved on. Err(ns): wait that long first.
pub fn gcra(tat: &mut i64, now: i64, q: Quota) -> Result<(), i64> {
    let v = gcra_n(tat, now, q, 1);
    if v.limited {
        Err(v.retry_after_ns.max(1))
    } else {
        Ok(())
    }
}

/// Nanoseconds until one request could go out (0: now).
pub fn wait_for_one(tat: i64, now: i64, q: Quota) -> i64 {
    (tat - now - q.emission_ns * (q.burst - 1)).max(0)
}

/// Requests that could go out right now without waiting.
pub fn available(tat: i64, now: i64, q: Quota) -> i64 {
    let used = (tat - now).max(0);
    ((q.emission_ns * q.burst - used) / q.emission_ns).clamp(0, q.burst)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Circuit {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

impl Circuit {
    pub fn from_u8(v: u8) -> Circuit {
        match v {
            1 => Circuit::Open,
            2 => Circuit::HalfOpen,
            _ => Circuit::Closed,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Circuit::Closed => "closed",
            Circuit::Open => "open",
            Circuit::HalfOpen => "half_open",
        }
    }
}

// ---- adaptive slow-down ---------------------------------------------------------------------
// A 429 means the marketplace allows less than we were told (a shared app quota, a limit
// lowered mid-run). Besides pausing for Retry-After, the limiter then sends at the rate the
// marketplace was actually accepting: the successes of the last second, 2% under. With no
// success to go by, it halves; it always slows by at least a quarter. After ADAPT_HOLD_NS without another 429 it climbs back to the
// configured rate over ADAPT_RECOVER_NS, so a limit that was raised again is found again.

pub const ADAPT_HOLD_NS: i64 = 60 * NS_PER_S;
pub const ADAPT_RECOVER_NS: i64 = 300 * NS_PER_S;
const NS_PER_S: i64 = 1_000_000_000;
/// Never slower than this many times the configured interval.
const ADAPT_MAX_FACTOR: i64 = 64;

/// The emission interval after a 429: `current` is the interval in force, `configured` the
/// connection's own, `accepted_last_s` the successes the marketplace answered in the last second.
pub fn adapt_on_429(current_ns: i64, configured_ns: i64, accepted_last_s: u32) -> i64 {
    let measured = if accepted_last_s > 0 {
        NS_PER_S * (100 + 2) / 100 / accepted_last_s as i64
    } else {
        current_ns.saturating_mul(2)
    };
    // at least 25% slower than before: a per-minute quota can refuse while the last second
    // looked fine, and repeated 429s must still converge
    measured
        .max(current_ns.saturating_mul(5) / 4)
        .clamp(configured_ns, configured_ns.saturating_mul(ADAPT_MAX_FACTOR))
}

/// The interval in force `now`, for a limiter slowed to `adapted_ns` at `adapted_at_ns`
/// (`adapted_ns` 0 or not above `configured_ns`: not slowed).
pub fn effective_emission(configured_ns: i64, adapted_ns: i64, adapted_at_ns: i64, now: i64) -> i64 {
    if adapted_ns <= configured_ns {
        return configured_ns;
    }
    let since = now - adapted_at_ns - ADAPT_HOLD_NS;
    if since <= 0 {
        return adapted_ns;
    }
    if since >= ADAPT_RECOVER_NS {
        return configured_ns;
    }
    // interpolate the rate (not the interval) back up, linearly in time
    let slow = NS_PER_S as f64 / adapted_ns as f64;
    let full = NS_PER_S as f64 / configured_ns as f64;
    let rate = slow + (full - slow) * since as f64 / ADAPT_RECOVER_NS as f64;
    ((NS_PER_S as f64 / rate) as i64).clamp(configured_ns, adapted_ns)
}

/// Successes counted in one-second windows, for `adapt_on_429`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SuccessWindow {
    pub start_ns: i64,
    pub current: u32,
    pub previous: u32,
}

impl SuccessWindow {
    pub fn record(&mut self, now: i64) {
        self.roll(now);
        self.current = self.current.saturating_add(1);
    }

    fn roll(&mut self, now: i64) {
        let elapsed = now - self.start_ns;
        if elapsed >= 2 * NS_PER_S {
            *self = SuccessWindow {
                start_ns: now,
                ..Default::default()
            };
        } else if elapsed >= NS_PER_S {
            self.previous = self.current;
            self.current = 0;
            self.start_ns += NS_PER_S;
        }
    }

    /// Successes in the second before `now` (the previous window weighted by its overlap).
    pub fn last_second(&mut self, now: i64) -> u32 {
        self.roll(now);
        let into = (now - self.start_ns).clamp(0, NS_PER_S);
        let carried = self.previous as i64 * (NS_PER_S - into) / NS_PER_S;
        (self.current as i64 + carried) as u32
    }
}

/// Circuit state of one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Breaker {
    pub state: u8,
    pub failures: u32,
    pub opened_at_ns: i64,
    pub probe_in_flight: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// The single half-open probe: its result decides.
    Probe,
    /// Not before this many ns.
    No(i64),
}

impl Breaker {
    pub fn state(&self) -> Circuit {
        Circuit::from_u8(self.state)
    }

    /// May a request go out now? Moves OPEN to HALF_OPEN after the cool-down.
    /// Returns the decision and a transition, if one happened.
    pub fn admit(&mut self, now: i64, cooldown_ns: i64) -> (Admit, Option<Circuit>) {
        match self.state() {
            Circuit::Closed => (Admit::Yes, None),
            Circuit::Open => {
                let ready_at = self.opened_at_ns.saturating_add(cooldown_ns);
                if now < ready_at {
                    (Admit::No(ready_at - now), None)
                } else {
                    self.state = Circuit::HalfOpen as u8;
                    self.probe_in_flight = true;
                    (Admit::Probe, Some(Circuit::HalfOpen))
                }
            }
            Circuit::HalfOpen if self.probe_in_flight => (Admit::No(cooldown_ns.min(1_000_000_000)), None),
            Circuit::HalfOpen => {
                self.probe_in_flight = true;
                (Admit::Probe, None)
            }
        }
    }

    /// Records a result; returns the transition, if one happened.
    pub fn record(&mut self, success: bool, now: i64, threshold: u32) -> Option<Circuit> {
        let before = self.state();
        if success {
            self.failures = 0;
            self.probe_in_flight = false;
            self.state = Circuit::Closed as u8;
        } else {
            self.failures = self.failures.saturating_add(1);
            self.probe_in_flight = false;
            if before == Circuit::HalfOpen || (before == Circuit::Closed && self.failures >= threshold.max(1)) {
                self.state = Circuit::Open as u8;
                self.opened_at_ns = now;
            }
        }
        (self.state() != before).then(|| self.state())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_429_slows_to_what_the_marketplace_accepted() {
        let configured = 50_000_000; // 20/s
                                     // it accepted 10 in the last second: 10/s, 2% under
        let slowed = adapt_on_429(configured, configured, 10);
        assert_eq!(slowed, 102_000_000);
        // nothing accepted to go by: half the rate in force
        assert_eq!(adapt_on_429(configured, configured, 0), 100_000_000);
        // at least a quarter slower than the rate in force, never slower than 64x configured
        assert_eq!(adapt_on_429(200_000_000, configured, 10), 250_000_000);
        assert_eq!(adapt_on_429(configured * 60, configured, 0), configured * 64);
        // the last second looked fine (a per-minute quota ran out): still a quarter slower
        assert_eq!(adapt_on_429(configured, configured, 1000), 62_500_000);
    }

    #[test]
    fn a_slowed_limiter_holds_then_recovers() {
        let configured = 50_000_000;
        let slowed = 100_000_000;
        let at = 1_000 * NS_PER_S;
        assert_eq!(effective_emission(configured, 0, 0, at), configured);
        assert_eq!(effective_emission(configured, slowed, at, at + 59 * NS_PER_S), slowed);
        // halfway through the recovery the rate is halfway: 15/s
        let mid = effective_emission(configured, slowed, at, at + ADAPT_HOLD_NS + ADAPT_RECOVER_NS / 2);
        assert!((mid - 66_666_666).abs() < 10, "{mid}");
        assert_eq!(
            effective_emission(configured, slowed, at, at + ADAPT_HOLD_NS + ADAPT_RECOVER_NS),
            configured
        );
    }

    #[test]
    fn success_window_counts_the_last_second() {
        let mut w = SuccessWindow::default();
        let t0 = 10 * NS_PER_S;
        w.record(t0);
        for k in 0..10 {
            w.record(t0 + k * 90_000_000); // 10 in the first 0.9 s (plus the first)
        }
        assert_eq!(w.last_second(t0 + 950_000_000), 11);
        // half a second into the next window: half of the previous one still counts
        assert_eq!(w.last_second(t0 + 1_500_000_000), 5);
        // long idle: nothing
        assert_eq!(w.last_second(t0 + 10 * NS_PER_S), 0);
    }

    const S: i64 = 1_000_000_000;

    #[test]
    fn parses_quotas() {
        assert_eq!(
            Quota::parse("200/min").unwrap(),
            Quota {
                emission_ns: 300_000_000,
                burst: 1
            }
        );
        assert_eq!(
            Quota::parse("4/s:40").unwrap(),
            Quota {
                emission_ns: 250_000_000,
                burst: 40
            }
        );
        assert_eq!(Quota::parse("1000/hour").unwrap().emission_ns, 3_600_000_000);
        assert_eq!(Quota::parse("100/60s").unwrap().emission_ns, 600_000_000);
        assert_eq!(Quota::parse(" 5 / 500ms ").unwrap().emission_ns, 100_000_000);
        for bad in ["", "200", "0/min", "10/fortnight", "10/min:0", "x/s", "-1/s"] {
            assert!(Quota::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn marketplace_defaults() {
        assert_eq!(default_quota("mercadolibre").per_second(), 200.0 / 60.0);
        assert_eq!(
            default_quota("shopify"),
            Quota {
                emission_ns: 250_000_000,
                burst: 40
            }
        );
        assert_eq!(default_quota("shein").emission_ns, 600_000_000);
        assert_eq!(default_quota("tiktok").emission_ns, 3_600_000_000);
    }

    /// redis-cell's `it_rate_limits` table (its max_burst 4 is our burst 5; 1 request per
    /// second): (offset ms, volume, remaining, reset_after ms, retry_after ms or -1, limited).
    #[test]
    fn redis_cell_table() {
        let q = Quota {
            emission_ns: S,
            burst: 5,
        };
        let start = 1_000 * S;
        let ms = 1_000_000;
        #[rustfmt::skip]
        let cases: &[(i64, i64, i64, i64, i64, bool)] = &[
            (0, 6, 5, 0, -1, true),
            (0, 1, 4, 1000, -1, false),
            (0, 1, 3, 2000, -1, false),
            (0, 1, 2, 3000, -1, false),
            (0, 1, 1, 4000, -1, false),
            (0, 1, 0, 5000, -1, false),
            (0, 1, 0, 5000, 1000, true),
            (3000, 1, 2, 3000, -1, false),
            (3100, 1, 1, 3900, -1, false),
            (4000, 1, 1, 4000, -1, false),
            (8000, 1, 4, 1000, -1, false),
            (9500, 1, 4, 1000, -1, false),
            (9500, 0, 4, 1000, -1, false),
            (9500, 2, 2, 3000, -1, false),
            (9500, 5, 2, 3000, 3000, true),
        ];
        let mut tat = 0;
        for (i, &(offset, volume, remaining, reset, retry, limited)) in cases.iter().enumerate() {
            let v = gcra_n(&mut tat, start + offset * ms, q, volume);
            let retry_ns = if retry < 0 { -1 } else { retry * ms };
            assert_eq!(
                v,
                Verdict {
                    limited,
                    remaining,
                    retry_after_ns: retry_ns,
                    reset_after_ns: reset * ms
                },
                "case {i}"
            );
        }
    }

    #[test]
    fn sustained_rate_is_exact() {
        let q = Quota::parse("200/min").unwrap();
        let mut tat = 0;
        let mut allowed = 0;
        let mut now = 0;
        while now < 60 * S {
            match gcra(&mut tat, now, q) {
                Ok(()) => allowed += 1,
                Err(wait) => {
                    assert!(wait > 0);
                    now += wait;
                    continue;
                }
            }
        }
        assert_eq!(allowed, 200);
    }

    #[test]
    fn burst_then_refill() {
        let q = Quota::parse("4/s:40").unwrap();
        let mut tat = 0;
        let now = 10 * S;
        assert_eq!(available(tat, now, q), 40);
        assert_eq!(wait_for_one(tat, now, q), 0);
        for _ in 0..40 {
            assert!(gcra(&mut tat, now, q).is_ok());
        }
        assert_eq!(available(tat, now, q), 0);
        assert_eq!(wait_for_one(tat, now, q), 250_000_000);
        let wait = gcra(&mut tat, now, q).unwrap_err();
        assert_eq!(wait, 250_000_000);
        assert!(gcra(&mut tat, now + wait, q).is_ok());
    }

    #[test]
    fn circuit_state_machine() {
        let mut b = Breaker::default();
        let cooldown = 10 * S;
        for i in 1..5 {
            assert_eq!(b.record(false, i, 5), None);
            assert_eq!(b.admit(i, cooldown).0, Admit::Yes);
        }
        assert_eq!(b.record(false, 5, 5), Some(Circuit::Open));
        assert!(matches!(b.admit(6, cooldown), (Admit::No(_), None)));
        // after the cool-down exactly one probe goes through
        assert_eq!(b.admit(5 + cooldown, cooldown), (Admit::Probe, Some(Circuit::HalfOpen)));
        assert!(matches!(b.admit(5 + cooldown, cooldown).0, Admit::No(_)));
        // a failed probe opens it again, a successful one closes it
        assert_eq!(b.record(false, 6 + cooldown, 5), Some(Circuit::Open));
        assert_eq!(b.admit(6 + 2 * cooldown, cooldown).0, Admit::Probe);
        assert_eq!(b.record(true, 7 + 2 * cooldown, 5), Some(Circuit::Closed));
        assert_eq!(b.failures, 0);
        assert_eq!(b.admit(8 + 2 * cooldown, cooldown).0, Admit::Yes);
        // a success resets the consecutive count
        for _ in 0..4 {
            b.record(false, 0, 5);
        }
        b.record(true, 0, 5);
        assert_eq!(b.record(false, 0, 5), None);
    }
}
