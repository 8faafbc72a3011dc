//! The first worker's reconciliation schedule: every active connection is reconciled every
//! `integ.reconcile_interval` (and once soon after start, to catch what happened while we were
//! down), in small pages from the spare budget (pushes come first) and at most `SLICE` per turn
//! of the worker loop, so pushes are never held up for long.

use crate::reconcile::{self, Budget, InWorker, Report};
use crate::spi_util::worker_transaction;
use pgrx::prelude::*;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Listings read per turn of the worker loop.
const PAGE: i64 = 20;
/// The longest a turn of the worker loop spends reconciling: pushes dispatched by the same loop
/// wait at most this long.
const SLICE: Duration = Duration::from_millis(20);
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
    /// Reconciles due pages for up to `SLICE` (one page while `pushing`: pushes in flight or
    /// signalled wait for the loop's next turn); returns whether more is due now (the loop then
    /// comes straight back instead of sleeping: a cycle is paced by the spare budget, not by
    /// `integ.poll_interval`).
    pub fn turn(&mut self, agent: &ureq::Agent, interval_s: i64, cooldown_ns: i64, pushing: bool) -> bool {
        if interval_s <= 0 {
            return false;
        }
        let interval = Duration::from_secs(interval_s as u64);
        if self.last_scan.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            self.scan(interval);
        }
        let started = Instant::now();
        loop {
            if !self.one_page(agent, interval, cooldown_ns) {
                return false;
            }
            if pushing || started.elapsed() >= SLICE {
                return true;
            }
        }
    }

    /// One page of the connection due first; false when none is due.
    fn one_page(&mut self, agent: &ureq::Agent, interval: Duration, cooldown_ns: i64) -> bool {
        let now = Instant::now();
        let Some((&id, run)) = self
            .runs
            .iter_mut()
            .filter(|(_, r)| r.due <= now)
            .min_by_key(|(_, r)| r.due)
        else {
            return false;
        };
        let side = InWorker(agent);
        if run.cursor == 0 {
            reconcile::missed_notifications(&side, id, &mut run.report);
        }
        let (page, next) = reconcile::page(&side, id, run.cursor, PAGE, Budget::Spare { cooldown_ns });
        run.report.add(&page);
        match next {
            Some(n) if n > run.cursor => run.cursor = n,
            // no spare budget: pushes come first, continue in a moment
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
        true
    }

    /// Follows the set of active connections.
    fn scan(&mut self, interval: Duration) {
        self.last_scan = Some(Instant::now());
        let ids = worker_transaction(|| {
            Spi::connect(|c| {
                let rows = c.select("SELECT id FROM integ.connections WHERE status = 'active'", None, &[])?;
                rows.map(|r| r.get::<i64>(1).map(Option::unwrap_or_default))
                    .collect::<Result<HashSet<_>, _>>()
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
