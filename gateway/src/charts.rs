//! The dashboard's small bar charts: 24 hourly bars per series, as geometry the template draws
//! as inline SVG (no script, no external file: the page works offline).

use serde::Serialize;

pub const HOURS: usize = 24;
pub const WIDTH: f64 = 144.0;
pub const HEIGHT: f64 = 32.0;

#[derive(Serialize, Debug, PartialEq)]
pub struct Bar {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
    /// The hour's value, for the bar's tooltip.
    pub value: String,
}

#[derive(Serialize, Debug)]
pub struct Chart {
    pub bars: Vec<Bar>,
    /// The tallest bar's value (the scale), shown beside the chart.
    pub max: String,
    pub width: f64,
    pub height: f64,
}

fn shown(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.1}")
    }
}

/// `values[i]` is hour i of the last day, oldest first (None: no bucket, drawn as nothing).
pub fn bars(values: &[Option<f64>; HOURS]) -> Chart {
    let max = values.iter().flatten().copied().fold(0.0_f64, f64::max);
    let slot = WIDTH / HOURS as f64;
    let bars = values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| {
            let v = (*v)?;
            if !v.is_finite() || v <= 0.0 || max <= 0.0 {
                return None;
            }
            // at least one pixel, so a small non-zero hour is visible
            let height = ((v / max) * (HEIGHT - 1.0)).max(1.0);
            Some(Bar {
                x: i as f64 * slot + 0.5,
                y: HEIGHT - height,
                width: slot - 1.0,
                height,
                value: shown(v),
            })
        })
        .collect();
    Chart {
        bars,
        max: shown(max),
        width: WIDTH,
        height: HEIGHT,
    }
}

/// Which of the last 24 hour slots a bucket starting at `start` (unix s) falls in, `now` being
/// the current time: slot 23 is the current hour.
pub fn slot(start: i64, now: i64) -> Option<usize> {
    let current_hour = now - now.rem_euclid(3600);
    let back = (current_hour - (start - start.rem_euclid(3600))) / 3600;
    (0..HOURS as i64).contains(&back).then(|| HOURS - 1 - back as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_value() {
        let mut v = [None; HOURS];
        v[0] = Some(10.0);
        v[23] = Some(5.0);
        v[5] = Some(0.0);
        let c = bars(&v);
        assert_eq!(c.bars.len(), 2, "zero and missing hours draw nothing");
        assert_eq!(c.max, "10");
        assert_eq!(c.bars[0].height, HEIGHT - 1.0);
        assert_eq!(c.bars[1].height, (HEIGHT - 1.0) / 2.0);
        assert!(c.bars[1].x > c.bars[0].x);
        assert!(c.bars.iter().all(|b| b.y >= 0.0 && b.y + b.height <= HEIGHT));
    }

    #[test]
    fn an_empty_day_draws_no_bars() {
        let c = bars(&[None; HOURS]);
        assert!(c.bars.is_empty());
        assert_eq!(c.max, "0");
    }

    #[test]
    fn buckets_land_in_their_hour_slot() {
        let now = 1_000_000 * 3600 + 1234;
        assert_eq!(slot(1_000_000 * 3600, now), Some(23));
        assert_eq!(slot(999_999 * 3600, now), Some(22));
        assert_eq!(slot(999_977 * 3600, now), Some(0));
        assert_eq!(slot(999_976 * 3600, now), None);
        assert_eq!(slot(1_000_001 * 3600, now), None);
    }
}
