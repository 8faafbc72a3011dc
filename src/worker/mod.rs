//! Background workers: claim due jobs, push them on HTTP threads, record the results on the
//! main thread. Woken at commit through their latch; `integ.poll_interval` is the fallback.

mod capture_state;
mod capturing;
mod importing;
mod pool;
mod reconciling;
mod subscribing;

use crate::credentials;
use crate::gucs::{self, Tuning};
use crate::installation;
use crate::limits::{Admit, Circuit};
use crate::marketplaces::{self, http, Credentials, PriceWrite, PushKind};
use crate::outbox::price::{Need, Written};
use crate::outbox::{self, Attempt, ClaimedJob, Outcome, PriceFacts, Target};
use crate::push::{self, ListingRef};
use crate::shmem::{self, limiter};
use crate::spi_util::worker_transaction;
use crate::tokens::{self, TokenStatus};
use crate::version::{self, Installed};
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;
use pool::{Done, Pool, Task};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

pub fn register_workers() {
    for slot in 0..gucs::WORKERS.get().max(0) {
        BackgroundWorkerBuilder::new(&format!("integration worker {slot}"))
            .set_type("integration worker")
            .set_library("integration")
            .set_function("integ_worker_main")
            .set_argument(Some(pg_sys::Datum::from(slot as usize)))
            .enable_spi_access()
            .set_start_time(pgrx::bgworkers::BgWorkerStartTime::RecoveryFinished)
            .set_restart_time(Some(Duration::from_secs(5)))
            .load();
    }
    if gucs::WORKERS.get() > 0 {
        capturing::register();
    }
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn integ_worker_main(arg: pg_sys::Datum) {
    let slot = arg.value();
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(Some(&gucs::database()), None);
    // The worker's statements are kept generic plans, first planned when the outbox may still
    // be empty; a plan that seq-scans a then-empty table would stay even when it holds 100,000
    // jobs. Every statement here is an index probe by id, so the planner is held to indexes
    // (and JIT, which those penalty costs would trigger, is off). Generic plans are forced:
    // left to itself the plan cache re-plans a statement whose arrays it cannot size on every
    // execution (12% of a worker's CPU at 3,000 pushes/s).
    let _ = worker_transaction(|| {
        Spi::run(
            "SET enable_seqscan = off; SET enable_bitmapscan = off; SET jit = off; SET plan_cache_mode = force_generic_plan",
        )
    });
    shmem::publish_my_latch(slot);
    log!("integration worker {slot} started on database \"{}\"", gucs::database());
    Worker::new(slot).run();
    shmem::withdraw_my_latch(slot);
}

/// Waits on this process's latch; true when it was set (someone committed work).
fn wait_latch(ms: u64) -> bool {
    let flags = pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH;
    let rc = unsafe {
        let rc = pg_sys::WaitLatch(
            pg_sys::MyLatch,
            flags as i32,
            ms.min(i64::MAX as u64) as std::ffi::c_long,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
        rc
    };
    rc & pg_sys::WL_LATCH_SET as i32 != 0
}

/// Finished pushes are recorded in batches of up to this many (one statement each)...
const RECORD_BATCH: usize = 64;
/// ...or once the first of them has waited this long. Recording is what the marketplace
/// already shows; the wait only delays the log row and the job's `done`.
const RECORD_WAIT: Duration = Duration::from_millis(10);

struct InFlight {
    job: ClaimedJob,
    stock: i32,
    generation: i64,
    /// The first job of its call: only its result feeds the limiter and the circuit, which
    /// count calls, not the listings a batch carries.
    lead: bool,
    /// The installation the job belongs to: a push still out when the extension is dropped
    /// and created again is not recorded into the new installation's tables.
    installation: u32,
    /// What the job does: its stock alone, or its price (with the stock, when `with_stock`).
    call: Call,
}

/// The kind of write a claimed job makes, decided at claim time.
#[derive(Clone, Debug, PartialEq)]
enum Call {
    /// The stock; `price_follows`: the price must be written too, by a job made after this one
    /// (the marketplace takes them in separate calls).
    Stock { price_follows: bool },
    Price {
        amount: rust_decimal::Decimal,
        egdc: rust_decimal::Decimal,
        lsn: i64,
        currency: Option<String>,
        with_stock: bool,
    },
}

struct Worker {
    slot: usize,
    tuning: Tuning,
    pool: Pool<InFlight>,
    /// For token refreshes, which run on the main thread inside their transaction.
    agent: ureq::Agent,
    /// Jobs and calls out on HTTP threads (a call may carry many jobs).
    in_flight: usize,
    /// Finished pushes not recorded yet (see `record_due`), and since when the first waits.
    unrecorded: Vec<Done<InFlight>>,
    unrecorded_since: Instant,
    calls_in_flight: usize,
    /// Claimed jobs that must wait for their connection's limits, and circuit transitions,
    /// written together after a dispatch round.
    deferred: Vec<(ClaimedJob, i64)>,
    transitions: Vec<(i64, String, String, Circuit)>,
    extension_ready: bool,
    /// The extension's version while it differs from the library's (see `crate::version`).
    waiting_for_update: Option<String>,
    rng: StdRng,
    last_reclaim: Option<Instant>,
    last_purge: Instant,
    last_rollup: Instant,
    last_prune: Instant,
    alert_rules: crate::operations::alert_rules::Evaluator,
    last_webhooks: Instant,
    reconciler: reconciling::Reconciler,
    importer: importing::Importer,
    subscriber: subscribing::Subscriber,
    last_expiry_scan: Option<Instant>,
}

impl Worker {
    fn new(slot: usize) -> Self {
        let tuning = Tuning::read();
        let timeout = Duration::from_millis(tuning.http_timeout_ms);
        Worker {
            slot,
            tuning,
            pool: Pool::new(tuning.http_concurrency, timeout),
            agent: http::agent(timeout, 4),
            in_flight: 0,
            unrecorded: Vec::new(),
            unrecorded_since: Instant::now(),
            calls_in_flight: 0,
            deferred: Vec::new(),
            transitions: Vec::new(),
            extension_ready: false,
            waiting_for_update: None,
            rng: StdRng::from_entropy(),
            last_reclaim: None,
            last_purge: Instant::now(),
            last_rollup: Instant::now(),
            last_prune: Instant::now(),
            alert_rules: Default::default(),
            last_webhooks: Instant::now(),
            reconciler: Default::default(),
            importer: Default::default(),
            subscriber: Default::default(),
            last_expiry_scan: None,
        }
    }

    fn run(&mut self) {
        let mut work_signalled = true;
        let mut next_due: Option<Instant> = None;
        loop {
            if BackgroundWorker::sigterm_received() {
                break;
            }
            if BackgroundWorker::sighup_received() {
                self.reload();
            }
            if !self.extension_ready {
                self.extension_ready = self.extension_current();
                if !self.extension_ready {
                    wait_latch(self.tuning.poll_interval_ms);
                    continue;
                }
                work_signalled = true;
            }
            self.maintenance();
            // signalled deliveries at once; retries and rate-limited ones when they fall due
            let since = self.last_webhooks.elapsed();
            if (work_signalled && since >= Duration::from_millis(20)) || since >= Duration::from_secs(1) {
                self.apply_webhooks();
            }
            if !shmem::pending_refresh_requests().is_empty() {
                tokens::serve_requests(&self.agent);
            }
            let mut background_due = false;
            if self.slot == 0 {
                let pushing = work_signalled || self.in_flight > 0 || !self.unrecorded.is_empty();
                background_due = self.reconciler.turn(
                    &self.agent,
                    self.tuning.reconcile_interval_s,
                    self.tuning.circuit_cooldown_ns,
                    pushing,
                );
                background_due |=
                    self.importer
                        .turn(&self.agent, self.tuning.max_attempts, self.tuning.circuit_cooldown_ns);
                background_due |= self.subscriber.turn(&self.agent, self.tuning.circuit_cooldown_ns);
                self.refresh_expiring();
                self.roll_up();
            }
            let due_now = next_due.is_some_and(|t| Instant::now() >= t);
            if (work_signalled || due_now) && self.calls_in_flight < self.pool.size {
                let (more, limited) = self.claim_and_dispatch();
                work_signalled = more;
                // with more due work we come straight back; the next due time only matters
                // when this round drained what was due
                next_due = if more { None } else { self.next_due(&limited) };
            }
            if self.in_flight > 0 || !self.unrecorded.is_empty() {
                if self.in_flight > 0 {
                    let first = self.pool.recv_timeout(Duration::from_millis(5));
                    let mut done: Vec<Done<InFlight>> = first.into_iter().collect();
                    while let Some(d) = self.pool.try_recv() {
                        done.push(d);
                    }
                    self.finished(&done);
                    if self.unrecorded.is_empty() && !done.is_empty() {
                        self.unrecorded_since = Instant::now();
                    }
                    self.unrecorded.extend(done);
                }
                if self.record_due() {
                    let done = std::mem::take(&mut self.unrecorded);
                    work_signalled |= self.record(done);
                }
                work_signalled |= wait_latch(0);
            } else if background_due {
                // no sleep while background work is due, but a commit's wake-up still counts
                work_signalled |= wait_latch(0);
            } else if !work_signalled {
                let poll = Duration::from_millis(self.tuning.poll_interval_ms);
                let until_due = next_due
                    .map(|t| t.saturating_duration_since(Instant::now()))
                    .unwrap_or(poll)
                    .min(self.importer.due_in().unwrap_or(poll));
                let woke = wait_latch(until_due.min(poll).as_millis() as u64);
                work_signalled = woke || next_due.is_none_or(|t| Instant::now() >= t) || until_due >= poll;
            }
            work_signalled |= self.run_rechecks();
            unsafe { pg_sys::pgstat_report_stat(false) };
        }
        self.drain();
    }

    fn reload(&mut self) {
        unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        let new = Tuning::read();
        if new.http_concurrency != self.tuning.http_concurrency || new.http_timeout_ms != self.tuning.http_timeout_ms {
            self.drain();
            let timeout = Duration::from_millis(new.http_timeout_ms);
            self.pool = Pool::new(new.http_concurrency, timeout);
            self.agent = http::agent(timeout, 4);
        }
        self.tuning = new;
        log!("integration worker {} reloaded its settings", self.slot);
    }

    fn finished(&mut self, done: &[Done<InFlight>]) {
        self.in_flight = self.in_flight.saturating_sub(done.len());
        let calls = done.iter().filter(|d| d.job.lead).count();
        self.calls_in_flight = self.calls_in_flight.saturating_sub(calls);
    }

    /// Whether the finished pushes waiting to be recorded should be recorded now: many of
    /// them, the first has waited long enough, or nothing else is in flight (a trickle is
    /// recorded at once).
    fn record_due(&self) -> bool {
        !self.unrecorded.is_empty()
            && (self.in_flight == 0
                || self.unrecorded.len() >= RECORD_BATCH
                || self.unrecorded_since.elapsed() >= RECORD_WAIT)
    }

    /// Waits for every push in flight and records it (and runs the rechecks recording leaves).
    fn drain(&mut self) {
        let unrecorded = std::mem::take(&mut self.unrecorded);
        if !unrecorded.is_empty() {
            self.record(unrecorded);
        }
        let deadline = Instant::now() + self.pool.timeout * 2;
        while self.in_flight > 0 && Instant::now() < deadline {
            if let Some(d) = self.pool.recv_timeout(Duration::from_millis(50)) {
                self.finished(std::slice::from_ref(&d));
                self.record(vec![d]);
            }
        }
        // a recheck whose listing a writer still holds is tried until that writer finishes
        while self.run_rechecks() || outbox::rechecks_pending() {
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Looks at the listings of jobs recording flagged (see `outbox::recheck_flagged`), in their
    /// own transaction; true when work was enqueued. Flags left stay due for the next turn.
    fn run_rechecks(&mut self) -> bool {
        if !outbox::rechecks_pending() {
            return false;
        }
        match worker_transaction(outbox::recheck_flagged) {
            Ok(requeued) => requeued,
            Err(e) => {
                self.trouble("checking listings whose job pushed nothing", &e);
                outbox::rechecks_due();
                false
            }
        }
    }

    fn maintenance(&mut self) {
        if self.last_reclaim.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            // flags another worker left when it stopped between recording and looking
            outbox::rechecks_due();
            match worker_transaction(outbox::reclaim_abandoned) {
                Ok(n) if n > 0 => log!("integration worker {}: reclaimed {n} abandoned jobs", self.slot),
                Ok(_) => {}
                Err(e) => self.trouble("reclaiming jobs", &e),
            }
            self.last_reclaim = Some(Instant::now());
        }
        if self.last_purge.elapsed() > Duration::from_secs(60) {
            let keep = self.tuning.done_retention_s;
            if let Err(e) = worker_transaction(|| outbox::purge_done(keep)) {
                self.trouble("purging finished jobs", &e);
            }
            let keep = self.tuning.webhook_retention_s;
            if let Err(e) = worker_transaction(|| crate::inbound::purge(keep)) {
                self.trouble("purging old webhooks", &e);
            }
            self.last_purge = Instant::now();
        }
    }

    /// Applies accepted webhooks (orders take stock, cancellations give it back); the stock
    /// changes enqueue their own pushes.
    fn apply_webhooks(&mut self) {
        self.last_webhooks = Instant::now();
        if let Err(e) = crate::inbound::apply_pending(&self.agent, 50, self.tuning.max_attempts) {
            self.trouble("applying webhooks", &e);
        }
    }

    /// Usage and health take what the sync log and the webhook table gained (every 2 s, a
    /// backlog in a few batches), the alert rules judge them, and the sync log is pruned past
    /// its retention (every minute).
    fn roll_up(&mut self) {
        if self.last_rollup.elapsed() < Duration::from_secs(2) {
            return;
        }
        for _ in 0..4 {
            match worker_transaction(crate::operations::rollup::roll_up) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    self.trouble("rolling up usage and health", &e);
                    break;
                }
            }
        }
        self.last_rollup = Instant::now();
        // the rules are judged after a roll-up, but never take more than 1% of the worker:
        // with many busy connections a look costs more, and comes less often
        if self.alert_rules.due() {
            let rules = &mut self.alert_rules;
            if let Err(e) = worker_transaction(|| rules.evaluate()) {
                self.trouble("evaluating the alert rules", &e);
            }
        }
        if self.last_prune.elapsed() > Duration::from_secs(60) {
            let keep = gucs::SYNC_LOG_RETENTION_S.get();
            // in batches, each its own transaction, up to a million rows a minute
            for _ in 0..100 {
                match worker_transaction(|| crate::operations::rollup::prune_sync_log(keep)) {
                    Ok(n) if n >= crate::operations::rollup::PRUNE_BATCH.into() => continue,
                    Ok(_) => break,
                    Err(e) => {
                        self.trouble("pruning the sync log", &e);
                        break;
                    }
                }
            }
            self.last_prune = Instant::now();
        }
    }

    /// Tokens about to expire are refreshed before a push needs them (every 10 s).
    fn refresh_expiring(&mut self) {
        if self.tuning.refresh_ahead_s == 0
            || self
                .last_expiry_scan
                .is_some_and(|t| t.elapsed() < Duration::from_secs(10))
        {
            return;
        }
        self.last_expiry_scan = Some(Instant::now());
        let n = tokens::refresh_expiring(&self.agent, self.tuning.refresh_ahead_s);
        if n > 0 {
            log!("integration worker {}: refreshed {n} tokens ahead of expiry", self.slot);
        }
    }

    /// Whether the extension is installed at this library's version. Worker 0 says once what
    /// the DBA must do when it is installed at another one (a new build before `ALTER
    /// EXTENSION integration UPDATE`), and again when the update is seen.
    fn extension_current(&mut self) -> bool {
        match extension_state() {
            Installed::Current => {
                if self.waiting_for_update.take().is_some() && self.slot == 0 {
                    log!(
                        "integration: the extension is at version {}: syncing again",
                        version::LIBRARY
                    );
                }
                true
            }
            Installed::Absent => false,
            Installed::Other(v) => {
                if self.slot == 0 && self.waiting_for_update.as_deref() != Some(v.as_str()) {
                    warning!("{}", version::update_needed_message(&gucs::database(), &v));
                }
                self.waiting_for_update = Some(v);
                false
            }
        }
    }

    /// The extension was dropped and created again: what this worker holds of the previous
    /// installation goes (the process-wide caches went in `installation::check`).
    fn forget_installation(&mut self) {
        log!(
            "integration worker {}: the extension was created again; state of the previous installation dropped",
            self.slot
        );
        self.unrecorded.clear();
        self.deferred.clear();
        self.transitions.clear();
        self.reconciler = Default::default();
        self.importer = Default::default();
        self.subscriber = Default::default();
    }

    fn trouble(&mut self, what: &str, e: &str) {
        warning!("integration worker {}: {what} failed: {e}", self.slot);
        if !self.extension_current() {
            self.extension_ready = false;
        }
    }

    /// When to look again: the next job that becomes due, or the next moment a limited
    /// connection may send again, whichever comes first.
    fn next_due(&mut self, limited: &[(i64, i64)]) -> Option<Instant> {
        let excluded: Vec<i64> = limited.iter().map(|l| l.0).collect();
        let db = match worker_transaction(|| outbox::next_due_in_ms(&excluded)) {
            Ok(ms) => ms.map(|ms| Instant::now() + Duration::from_millis(ms.max(0) as u64)),
            Err(e) => {
                self.trouble("looking for due jobs", &e);
                None
            }
        };
        let limiter = limited
            .iter()
            .map(|l| Instant::now() + Duration::from_nanos(l.1.max(1_000_000) as u64))
            .min();
        [db, limiter].into_iter().flatten().min()
    }

    /// Claims what the pool can take (round-robin across connections, within each one's rate
    /// limit and circuit), records skips, gets tokens, dispatches. Returns whether there may be
    /// more due work right away, and the connections that are waiting on their limits.
    fn claim_and_dispatch(&mut self) -> (bool, Vec<(i64, i64)>) {
        // Capacity and shares count calls (one HTTP thread each); a call carries up to the
        // connector's batch size of listings.
        let capacity = self.pool.size.saturating_sub(self.calls_in_flight) as i64;
        let lease_ms = (self.tuning.http_timeout_ms * 6 + 30_000) as i64;
        let cooldown = self.tuning.circuit_cooldown_ns;
        let claimed = worker_transaction(|| {
            installation::check();
            let conns = outbox::connections_with_due_work();
            let share = (capacity / conns.len().max(1) as i64).max(1);
            let mut caps = Vec::new();
            let mut limited = Vec::new();
            // whether some connection got its whole share (it may have more due right away)
            let mut full = false;
            for (id, market, settings) in &conns {
                let quota = push::quota_for(market, settings);
                let batch = batch_size(market) as i64;
                let calls = match limiter::sendable_now(*id, quota, cooldown) {
                    None => share,
                    Some(Ok(n)) => n.min(share),
                    Some(Err(wait_ns)) => {
                        // due pushes come before a catalog import's calls
                        limiter::pushes_waiting(*id, wait_ns);
                        limited.push((*id, wait_ns));
                        continue;
                    }
                };
                full |= calls >= share;
                caps.push((*id, (calls * batch) as i32));
            }
            let most = caps.iter().map(|c| c.1 as i64).max().unwrap_or(share);
            let jobs = outbox::claim(&caps, most, lease_ms);
            let mut to_push = Vec::new();
            let mut requeued = false;
            let mut parked = Vec::new();
            for job in jobs {
                if let Some(held) = &job.held {
                    match held_call(&job, held) {
                        Some(call) => to_push.push((job, call)),
                        None => parked.push(job.job_id),
                    }
                    continue;
                }
                match decide_call(&job) {
                    Ok(call) => to_push.push((job, call)),
                    Err((outcome, price)) => {
                        let mut t = target(&job);
                        t.price = price;
                        requeued |= outbox::record(&t, &outcome, &Attempt::default());
                    }
                }
            }
            outbox::park(&parked);
            // Tokens for the claimed connections, read in this same transaction (decrypted only
            // when this process does not hold that generation yet).
            let mut tokens: HashMap<i64, Option<TokenStatus>> = HashMap::new();
            for (job, _) in &to_push {
                tokens
                    .entry(job.connection_id)
                    .or_insert_with(|| credentials::load(job.connection_id).and_then(|l| tokens::ready(&l)));
            }
            (to_push, requeued, full, limited, tokens)
        });
        let (jobs, requeued, full, limited, mut ready) = match claimed {
            Ok(v) => v,
            Err(e) => {
                self.trouble("claiming jobs", &e);
                return (false, Vec::new());
            }
        };
        if installation::take_change() {
            self.forget_installation();
        }
        let mut by_connection: HashMap<i64, Vec<(ClaimedJob, Call)>> = HashMap::new();
        for (j, call) in jobs {
            by_connection.entry(j.connection_id).or_default().push((j, call));
        }
        for (connection_id, jobs) in by_connection {
            let status = match ready.remove(&connection_id).flatten() {
                Some(ready) => ready,
                None => tokens::worker_token(&self.agent, connection_id, None),
            };
            match status {
                TokenStatus::Ready {
                    access_token,
                    generation,
                    credentials,
                } => {
                    // stock writes and price writes go in separate calls, each batched as the
                    // marketplace allows
                    let (prices, mut stocks): (Vec<_>, Vec<_>) =
                        jobs.into_iter().partition(|(_, c)| matches!(c, Call::Price { .. }));
                    let mut groups = vec![(stocks_per_call(&stocks), std::mem::take(&mut stocks))];
                    let per_call = prices_per_call(&prices);
                    groups.extend(price_calls(prices).into_iter().map(|g| (per_call, g)));
                    for (per_call, mut group) in groups {
                        let group = &mut group;
                        while !group.is_empty() {
                            let rest = group.split_off(per_call.min(group.len()));
                            let call = std::mem::replace(group, rest);
                            self.dispatch(call, &access_token, generation, &credentials);
                        }
                    }
                }
                TokenStatus::NeedsReauthorization(e) => {
                    self.release(jobs.into_iter().map(|j| j.0).collect(), &e, false)
                }
                TokenStatus::Unavailable(e) => self.release(jobs.into_iter().map(|j| j.0).collect(), &e, true),
            }
        }
        self.flush_deferred();
        (full || requeued, limited)
    }

    /// Sends one call carrying `jobs` (one connection, at most its connector's batch size) if the
    /// connection's circuit and rate limit allow, else defers them.
    fn dispatch(&mut self, jobs: Vec<(ClaimedJob, Call)>, token: &str, generation: i64, credentials: &Credentials) {
        let Some((first, _)) = jobs.first() else { return };
        let connection_id = first.connection_id;
        let quota = push::quota_for(&first.marketplace, &first.connection_settings);
        let (admit, transition) = limiter::circuit_admit(connection_id, self.tuning.circuit_cooldown_ns);
        if let Some(t) = transition {
            self.transitions
                .push((connection_id, first.tenant_id.clone(), first.marketplace.clone(), t));
        }
        let wait = match admit {
            Admit::No(wait_ns) => Some(wait_ns),
            _ => limiter::acquire(connection_id, quota).err().inspect(|_| {
                if admit == Admit::Probe {
                    limiter::cancel_probe(connection_id);
                }
            }),
        };
        if let Some(wait_ns) = wait {
            self.deferred.extend(jobs.into_iter().map(|(j, _)| (j, wait_ns)));
            return;
        }
        let mut connector = None;
        let mut batch = Vec::with_capacity(jobs.len());
        let mut requests = Vec::with_capacity(jobs.len());
        for (job, call) in jobs {
            let stock = job.desired_stock.unwrap_or(0).max(0);
            let listing = ListingRef {
                marketplace: &job.marketplace,
                connection_settings: &job.connection_settings,
                external_id: &job.external_id,
                listing_settings: &job.listing_settings,
                last_known: job.remote_stock,
            };
            let key = push::idempotency_key(job.job_id, stock);
            match push::prepare(&listing, stock, token.to_string(), credentials.clone(), key) {
                Ok((c, mut request)) => {
                    connector = Some(c);
                    if let Call::Price {
                        amount,
                        currency,
                        with_stock,
                        ..
                    } = &call
                    {
                        request.price = Some(PriceWrite {
                            amount: *amount,
                            currency: currency.clone(),
                            with_stock: *with_stock,
                        });
                    }
                    let lead = batch.is_empty();
                    batch.push(InFlight {
                        job,
                        stock,
                        generation,
                        lead,
                        installation: installation::id(),
                        call,
                    });
                    requests.push(request);
                }
                Err(e) => {
                    let o = Outcome::Dead { stock, error: e };
                    let t = target(&job);
                    if let Err(err) = worker_transaction(|| outbox::record(&t, &o, &Attempt::default())) {
                        self.trouble("dead-lettering a job", &err);
                    }
                }
            }
        }
        let Some(connector) = connector else { return };
        let n = batch.len();
        match self.pool.submit(Task {
            jobs: batch,
            connector,
            requests,
        }) {
            Ok(()) => {
                self.in_flight += n;
                self.calls_in_flight += 1;
            }
            Err(task) => {
                let jobs = task.jobs.into_iter().map(|f| f.job).collect();
                self.release(jobs, "HTTP pool unavailable", true)
            }
        }
    }

    /// Puts jobs that had to wait for their limits back in the queue, without burning an
    /// attempt or writing the log; logs circuit transitions.
    fn flush_deferred(&mut self) {
        let deferred = std::mem::take(&mut self.deferred);
        let transitions = std::mem::take(&mut self.transitions);
        if deferred.is_empty() && transitions.is_empty() {
            return;
        }
        let r = worker_transaction(|| {
            for (job, wait_ns) in &deferred {
                let delay_ms = (*wait_ns / 1_000_000).max(1);
                outbox::record(&target(job), &Outcome::Deferred { delay_ms }, &Attempt::default());
            }
            log_transitions(&transitions);
        });
        if let Err(e) = r {
            self.trouble("deferring jobs", &e);
        }
    }

    /// Puts claimed jobs back without pushing them (no token). `later` adds backoff.
    fn release(&mut self, jobs: Vec<ClaimedJob>, error: &str, later: bool) {
        let tuning = self.tuning;
        let delays: Vec<i64> = jobs
            .iter()
            .map(|j| {
                if later {
                    outbox::backoff::delay_ms(
                        j.attempts,
                        tuning.backoff_base_ms,
                        tuning.backoff_max_ms,
                        None,
                        &mut self.rng,
                    ) as i64
                } else {
                    0
                }
            })
            .collect();
        let r = worker_transaction(|| {
            for (job, delay_ms) in jobs.iter().zip(delays) {
                let stock = job.desired_stock.unwrap_or(0);
                let o = Outcome::Retry {
                    stock,
                    error: error.to_string(),
                    delay_ms,
                    burn: false,
                };
                outbox::record(&target(job), &o, &Attempt::default());
            }
        });
        if let Err(e) = r {
            self.trouble("releasing jobs", &e);
        }
    }

    /// Records finished pushes in one transaction (falling back to one per job if that
    /// fails), then refreshes tokens that were refused. Returns true if work was re-enqueued.
    fn record(&mut self, mut done: Vec<Done<InFlight>>) -> bool {
        done.retain(|d| d.job.installation == installation::id());
        let tuning = self.tuning;
        let mut unauthorized: HashMap<i64, i64> = HashMap::new();
        let mut transitions = Vec::new();
        let decided: Vec<(InFlight, Outcome, Attempt)> = done
            .into_iter()
            .map(|d| {
                let f = d.job;
                if let PushKind::Unauthorized { .. } = d.result.kind {
                    unauthorized.insert(f.job.connection_id, f.generation);
                }
                // Feed the shared limiter and circuit: a 429 pauses the connection for as long
                // as the marketplace asked; 5xx, timeouts and network errors count as failures.
                let conn = f.job.connection_id;
                let transition = match &d.result.kind {
                    _ if !f.lead => None,
                    PushKind::Throttled { retry_after, .. } => {
                        limiter::penalize(conn, *retry_after);
                        // a throttled half-open probe proved nothing either way: give it back,
                        // or the circuit would wait for its result for good
                        limiter::cancel_probe(conn);
                        None
                    }
                    PushKind::Retry { .. } => limiter::circuit_record(conn, false, tuning.circuit_failures),
                    _ => limiter::circuit_record(conn, true, tuning.circuit_failures),
                };
                if let Some(t) = transition {
                    transitions.push((conn, f.job.tenant_id.clone(), f.job.marketplace.clone(), t));
                }
                let outcome = push::decide(&d.result, f.stock, f.job.attempts, &tuning, &mut self.rng);
                let outcome = match (&d.result.kind, outcome) {
                    // a refused token is retried at once, after the refresh below
                    (PushKind::Unauthorized { .. }, Outcome::Retry { stock, error, burn, .. }) => Outcome::Retry {
                        stock,
                        error,
                        delay_ms: 0,
                        burn,
                    },
                    (_, o) => o,
                };
                let attempt = Attempt {
                    http_status: d.result.http_status.map(i32::from),
                    latency_ms: Some(d.result.latency_ms),
                    learned: d.result.learned.clone(),
                    calls: i32::from(f.lead && d.result.made_a_call()),
                };
                (f, outcome, attempt)
            })
            .collect();
        let batch = worker_transaction(|| {
            log_transitions(&transitions);
            record_all(&decided)
        });
        let requeued = match batch {
            Ok(r) => r,
            Err(e) => {
                warning!(
                    "integration worker {}: recording a batch failed ({e}); recording jobs one by one",
                    self.slot
                );
                let mut any = false;
                for one in &decided {
                    match worker_transaction(|| record_all(std::slice::from_ref(one))) {
                        Ok(r) => any |= r,
                        Err(e) => warning!(
                            "integration worker {}: could not record job {}: {e}; it will be reclaimed",
                            self.slot,
                            one.0.job.job_id
                        ),
                    }
                }
                any
            }
        };
        for (connection_id, generation) in unauthorized {
            let _ = tokens::worker_token(&self.agent, connection_id, Some(generation));
        }
        requeued || !decided.is_empty()
    }
}

/// What a claimed job does: a call to make, or an outcome to record now (with the price facts
/// the log shows, when it is about the price).
fn decide_call(job: &ClaimedJob) -> Result<Call, (Outcome, Option<PriceFacts>)> {
    let stock_needed = match (job.desired_stock, job.remote_stock) {
        (None, _) => false,
        (Some(d), Some(r)) if d == r => false,
        // a job made for a price sends the stock only when it moved since the last push
        (Some(d), _) => !job.price_only || job.last_pushed_stock != Some(d),
    };
    let connector = job
        .marketplace
        .parse()
        .ok()
        .and_then(|m| marketplaces::connector(m).ok());
    // a marketplace whose prices are not written yet makes no price work at all
    let need = if connector.is_some_and(|c| c.writes_prices()) {
        outbox::price::need(job)
    } else {
        Need::Nothing
    };
    if let Need::Refused { reason, lsn } = &need {
        let facts = PriceFacts {
            sent: None,
            egdc: job.price.as_ref().and_then(|p| p.egdc),
        };
        if !stock_needed {
            outbox::price::remember_refusal(job.listing_id, *lsn);
            return Err((
                Outcome::Dead {
                    stock: job.desired_stock.unwrap_or(0),
                    error: reason.clone(),
                },
                Some(facts),
            ));
        }
        let mut t = target(job);
        t.price = Some(facts);
        outbox::price::record_refusal(&t, reason, *lsn);
    }
    let combines = connector.is_some_and(|c| c.writes_price_with_stock());
    match need {
        Need::Write {
            amount,
            egdc,
            lsn,
            currency,
        } if combines || !stock_needed => Ok(Call::Price {
            amount,
            egdc,
            lsn,
            currency,
            with_stock: stock_needed,
        }),
        Need::Write { .. } => Ok(Call::Stock { price_follows: true }),
        _ if stock_needed => Ok(Call::Stock { price_follows: false }),
        _ => {
            let reason = match (job.desired_stock, job.remote_stock) {
                (None, _) => "no EGDC stock known for this product yet",
                (Some(d), Some(r)) if d == r => "marketplace already holds this quantity",
                _ if job.price_only && !connector.is_some_and(|c| c.writes_prices()) => {
                    "prices are not written to this marketplace yet"
                }
                _ => "the stock and the price are already published",
            };
            Err((
                Outcome::Skipped {
                    stock: job.desired_stock,
                    reason: reason.into(),
                },
                None,
            ))
        }
    }
}

/// What a held listing's job does: write the values a revert put back, where the listing does
/// not show them yet; None when there is nothing (the job is parked until `integ.release`).
fn held_call(job: &ClaimedJob, held: &outbox::Held) -> Option<Call> {
    let stock_needed = held
        .stock
        .is_some_and(|s| job.remote_stock != Some(s) || job.last_pushed_stock != Some(s));
    let published = job.price.as_ref().and_then(|p| p.last_pushed);
    let price = held.price.filter(|p| published != Some(*p));
    let connector = job
        .marketplace
        .parse()
        .ok()
        .and_then(|m| marketplaces::connector(m).ok())
        .filter(|c| c.writes_prices());
    match (price, connector) {
        (Some(amount), Some(c)) if c.writes_price_with_stock() || !stock_needed => Some(Call::Price {
            amount,
            egdc: job.price.as_ref().and_then(|p| p.egdc).unwrap_or(amount),
            lsn: job.price.as_ref().map_or(0, |p| p.lsn),
            currency: job.price.as_ref().and_then(|p| p.currency.clone()),
            with_stock: stock_needed,
        }),
        (Some(_), Some(_)) => Some(Call::Stock { price_follows: true }),
        _ if stock_needed => Some(Call::Stock { price_follows: false }),
        _ => None,
    }
}

/// Successful pushes go through one set-based statement; everything else job by job.
fn record_all(decided: &[(InFlight, Outcome, Attempt)]) -> bool {
    let mut pushed = Vec::new();
    let mut prices = Vec::new();
    let mut follow = Vec::new();
    let mut requeued = false;
    let mut notes: HashMap<i64, Option<String>> = HashMap::new();
    let mut seen: HashSet<i64> = HashSet::new();
    for (f, o, a) in decided {
        if let Some(learned) = &a.learned {
            outbox::learn(f.job.listing_id, learned);
        }
        if let Call::Price {
            amount,
            egdc,
            lsn,
            with_stock,
            ..
        } = &f.call
        {
            let mut t = target(&f.job);
            t.price = Some(PriceFacts {
                sent: Some(*amount),
                egdc: Some(*egdc),
            });
            let w = Written {
                target: t,
                amount: *amount,
                stock: with_stock.then_some(f.stock),
                lsn: *lsn,
            };
            match o {
                // recorded together below, like stock pushes (which note their connections)
                Outcome::Pushed { remote, .. } => {
                    prices.push((w, *remote, a));
                    continue;
                }
                _ => requeued |= outbox::price::record(&w, o, a),
            }
        } else if let Outcome::Pushed { stock, remote } = o {
            pushed.push(outbox::PushedJob {
                target: target(&f.job),
                stock: *stock,
                remote: *remote,
                attempt: a.clone(),
            });
            if f.call == (Call::Stock { price_follows: true }) {
                follow.push(f.job.listing_id);
            }
            continue;
        } else {
            requeued |= outbox::record(&target(&f.job), o, a);
        }
        let note = match o {
            Outcome::Pushed { .. } | Outcome::Skipped { .. } | Outcome::Deferred { .. } => None,
            Outcome::Retry { error, .. } | Outcome::Dead { error, .. } => Some(error.clone()),
        };
        // the last error of the batch wins over successes: it is what an operator must see
        if seen.insert(f.job.connection_id) || note.is_some() {
            notes.insert(f.job.connection_id, note);
        }
    }
    requeued |= outbox::record_pushed(&pushed);
    let written: Vec<(&Written, Option<i32>, &Attempt)> = prices.iter().map(|(w, r, a)| (w, *r, *a)).collect();
    requeued |= outbox::price::record_written(&written);
    requeued |= outbox::price::follow(&follow);
    for (connection_id, note) in notes {
        outbox::note_connection(connection_id, note.as_deref());
    }
    requeued
}

/// One log row and one server log line per circuit transition (not one per job).
fn log_transitions(transitions: &[(i64, String, String, Circuit)]) {
    for (connection_id, tenant, market, state) in transitions {
        let t = Target {
            job_id: None,
            attempt: None,
            listing_id: 0,
            connection_id: *connection_id,
            tenant_id: tenant,
            marketplace: market,
            product_id: "",
            external_id: "",
            egdc_stock: None,
            price: None,
            price_lsn: None,
        };
        let why = match state {
            Circuit::Open => "circuit opened: the marketplace keeps failing; jobs wait without burning attempts",
            Circuit::HalfOpen => "circuit half-open: one probe goes through",
            Circuit::Closed => "circuit closed: the marketplace answers again",
        };
        outbox::log(
            &t,
            "circuit",
            state.as_str(),
            None,
            None,
            &Attempt::default(),
            Some(why),
        );
        log!("integration: connection {connection_id} ({tenant}/{market}): {why}");
    }
}

fn target(job: &ClaimedJob) -> Target<'_> {
    Target {
        job_id: Some(job.job_id),
        attempt: Some(job.attempts),
        listing_id: job.listing_id,
        connection_id: job.connection_id,
        tenant_id: &job.tenant_id,
        marketplace: &job.marketplace,
        product_id: &job.product_id,
        external_id: &job.external_id,
        egdc_stock: job.egdc_stock,
        price: None,
        price_lsn: job.price.as_ref().map(|p| p.lsn),
    }
}

/// Stock writes one call of these jobs' marketplace carries.
fn stocks_per_call(jobs: &[(ClaimedJob, Call)]) -> usize {
    jobs.first().map_or(1, |(j, _)| batch_size(&j.marketplace))
}

/// Price writes one call of these jobs' marketplace carries.
fn prices_per_call(jobs: &[(ClaimedJob, Call)]) -> usize {
    jobs.first()
        .and_then(|(j, _)| j.marketplace.parse().ok())
        .and_then(|m| marketplaces::connector(m).ok())
        .map_or(1, |c| c.max_price_batch().max(1))
}

/// Price jobs split by the call that can carry them together (`Connector::price_call_group`),
/// so that each dispatch is one call and takes one request from the rate limit.
fn price_calls(jobs: Vec<(ClaimedJob, Call)>) -> Vec<Vec<(ClaimedJob, Call)>> {
    let connector = jobs
        .first()
        .and_then(|(j, _)| j.marketplace.parse().ok())
        .and_then(|m| marketplaces::connector(m).ok());
    let mut groups: BTreeMap<String, Vec<(ClaimedJob, Call)>> = BTreeMap::new();
    for (j, c) in jobs {
        let key = connector.map_or(String::new(), |k| {
            k.price_call_group(&j.connection_settings, &j.listing_settings)
        });
        groups.entry(key).or_default().push((j, c));
    }
    groups.into_values().collect()
}

/// Listings one call of this marketplace carries.
fn batch_size(marketplace: &str) -> usize {
    marketplace
        .parse()
        .ok()
        .and_then(|m| marketplaces::connector(m).ok())
        .map_or(1, |c| c.max_batch().max(1))
}

fn extension_state() -> Installed {
    worker_transaction(version::installed)
        .ok()
        .and_then(Result::ok)
        .unwrap_or(Installed::Absent)
}
