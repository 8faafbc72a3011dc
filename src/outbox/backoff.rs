//! Retry delays: exponential backoff with full jitter, never shorter than a `Retry-After`.

use rand::Rng;

/// Delay before attempt `attempt + 1` (attempt counts from 1).
pub fn delay_ms(attempt: i32, base_ms: u64, max_ms: u64, retry_after_ms: Option<u64>, rng: &mut impl Rng) -> u64 {
    let exp = attempt.clamp(1, 40) as u32 - 1;
    let cap = base_ms
        .saturating_mul(1u64.checked_shl(exp).unwrap_or(u64::MAX))
        .min(max_ms)
        .max(1);
    let jittered = rng.gen_range(0..=cap);
    jittered.max(retry_after_ms.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn grows_exponentially_within_cap() {
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 1..20 {
            let cap = (100u64 << (attempt - 1)).min(5_000);
            for _ in 0..200 {
                let d = delay_ms(attempt, 100, 5_000, None, &mut rng);
                assert!(d <= cap, "attempt {attempt}: {d} > {cap}");
            }
        }
    }

    #[test]
    fn full_jitter_spreads_delays() {
        let mut rng = StdRng::seed_from_u64(1);
        let ds: Vec<u64> = (0..1000).map(|_| delay_ms(5, 100, 100_000, None, &mut rng)).collect();
        let max = *ds.iter().max().unwrap();
        let min = *ds.iter().min().unwrap();
        assert!(max > 1400 && min < 200, "min {min} max {max}");
    }

    #[test]
    fn retry_after_is_a_floor() {
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..100 {
            assert!(delay_ms(1, 10, 20, Some(2_000), &mut rng) >= 2_000);
        }
    }

    #[test]
    fn huge_attempts_do_not_overflow() {
        let mut rng = StdRng::seed_from_u64(3);
        assert!(delay_ms(i32::MAX, u64::MAX / 2, 1_000, None, &mut rng) <= 1_000);
    }
}
