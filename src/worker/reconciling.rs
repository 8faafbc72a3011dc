//! The first worker's reconciliation schedule: every active connection is reconciled every
//! `integ.reconcile_interval` (and once soon after start, to catch what happened while we were
//! down), one small page per turn of the worker loop so pushes are never held up for long.

use crate::reconcile::{self, InWorker, Report};
use crate::spi_util::worker_transaction;
use pgrx::prelude::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Listings read per turn of the worker loop.
const PAGE: i64 = 20;
/// The first reconciliation after start.
const FIRST_RUN: Duration = Duration::from_secs(3);

struct Run {
    due: Instant,
    /// Last listing id done in the current run (0: the run has not started).
    cursor: i64,
    report: Report,
}

#[derive(Default)]
pub struct Reconciler {
    runs: HashMap<i64, Run>,
    last_scan: Option<Instant>,
}

impl Reconciler {
    pub fn turn(&mut self, agent: &ureq::Agent, interval_s: i64) {
        if interval_s <= 0 {
            return;
        }
        let interval = Duration::from_secs(interval_s as u64);
        if self.last_scan.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            self.scan(interval);
        }
        let now = Instant::now();
        let Some((&id, run)) = self
            .runs
            .iter_mut()
            .filter(|(_, r)| r.due <= now)
            .min_by_key(|(_, r)| r.due)
        else {
            return;
        };
        let side = InWorker(agent);
        if run.cursor == 0 {
            reconcile::missed_notifications(&side, id, &mut run.report);
        }
        let (page, next) = reconcile::page(&side, id, run.cursor, PAGE, 0);
        run.report.add(&page);
        match next {
            Some(n) if n > run.cursor => run.cursor = n,
            // the rate limit is spent: pushes come first, continue in a moment
            Some(_) => run.due = now + Duration::from_secs(1),
            None => {
                let report = std::mem::take(&mut run.report);
                if let Err(e) = worker_transaction(|| reconcile::log(id, &report)) {
                    warning!("integration: logging a reconciliation failed: {e}");
                }
                run.cursor = 0;
                run.due = now + interval;
            }
        }
    }

    /// Follows the set of active connections.
    fn scan(&mut self, interval: Duration) {
        self.last_scan = Some(Instant::now());
        let ids = worker_transaction(|| {
            Spi::connect(|c| {
                let rows = c.select("SELECT id FROM integ.connections WHERE status = 'active'", None, &[])?;
                rows.map(|r| r.get::<i64>(1).map(Option::unwrap_or_default))
                    .collect::<Result<Vec<_>, _>>()
            })
        });
        let Ok(Ok(ids)) = ids else { return };
        let first = Instant::now() + FIRST_RUN.min(interval);
        self.runs.retain(|id, _| ids.contains(id));
        for id in ids {
            self.runs.entry(id).or_insert(Run {
                due: first,
                cursor: 0,
                report: Report::default(),
            });
        }
    }
}
