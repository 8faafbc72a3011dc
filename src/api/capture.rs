//! `integ.capture_counters()`, behind the `integ.capture` view: how stock changes are captured
//! right now and how many captured messages the capture worker has applied since start.

use crate::shmem;
use pgrx::prelude::*;

#[pg_extern(volatile, parallel_safe)]
fn capture_counters() -> TableIterator<
    'static,
    (
        name!(by_message, bool),
        name!(messages_applied, i64),
        name!(applied_upto, i64),
    ),
> {
    TableIterator::once((
        shmem::capture_by_message(),
        shmem::messages_applied().min(i64::MAX as u64) as i64,
        shmem::capture_position().min(i64::MAX as u64) as i64,
    ))
}
