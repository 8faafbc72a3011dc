//! The first worker's part in operations: the roll-up of usage and health (`integ.roll_up`,
//! in SQL: the counting must happen in the statement that reads the rows) and the sync log's
//! retention.

use crate::spi_util::OrRaise;
use pgrx::prelude::*;

/// Rows one roll-up statement reads at most; a backlog is taken in several.
const ROLLUP_BATCH: i32 = 50_000;
/// Old sync-log rows deleted per statement.
pub const PRUNE_BATCH: i32 = 10_000;

/// One roll-up step (call in a transaction of its own); true when it read a full batch and
/// more is probably waiting.
pub fn roll_up() -> bool {
    Spi::get_one_with_args::<i64>("SELECT integ.roll_up($1)", &[ROLLUP_BATCH.into()])
        .or_raise("rolling up usage and health")
        .unwrap_or(0)
        >= i64::from(ROLLUP_BATCH)
}

/// Deletes up to a batch of counted sync-log rows older than `keep_s` seconds; returns how many.
pub fn prune_sync_log(keep_s: i32) -> i64 {
    Spi::get_one_with_args::<i64>(
        "SELECT integ.prune_sync_log(make_interval(secs => $1), $2)",
        &[f64::from(keep_s).into(), PRUNE_BATCH.into()],
    )
    .or_raise("pruning the sync log")
    .unwrap_or(0)
}

/// A whole-number field of a JSON object given as text (a reconciliation's report in the sync
/// log); NULL when the text is no such object, so one odd row never stops the roll-up.
#[pg_extern(immutable, parallel_safe)]
fn json_count(document: Option<&str>, key: &str) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_str(document?).ok()?;
    v.get(key)?.as_i64()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_report_count_is_read_or_null() {
        assert_eq!(super::json_count(Some(r#"{"errors": 3}"#), "errors"), Some(3));
        assert_eq!(super::json_count(Some("not json"), "errors"), None);
        assert_eq!(super::json_count(Some(r#"{"errors": "x"}"#), "errors"), None);
        assert_eq!(super::json_count(None, "errors"), None);
    }
}
