//! Operations: usage and health rolled up from what is already written (`integ.roll_up`),
//! the sync log's retention, the latency histograms they keep, and the alert rules judged on them.

pub mod alert_rules;
pub mod histogram;
pub mod metrics;
pub mod rollup;
