//! The capture worker: reads the stock messages the trigger emits back out of the WAL and turns
//! them into outbox jobs. The physical replication slot `integ_capture` keeps the WAL from the
//! oldest message not yet applied.
//!
//! Nothing is lost: the slot moves only after the jobs have committed (a crash in between reads
//! the same messages again, and `desired_lsn` makes applying them twice harmless), the trigger
//! emits only while the slot exists, and the slot is dropped only after every transaction that
//! could have seen it has finished and its messages are applied.

use super::capture_state;
use super::wait_latch;
use crate::capture::message::{self, Collector};
use crate::capture::{self, wal};
use crate::gucs;
use crate::shmem;
use crate::spi_util::{select_kept, worker_transaction};
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub const SLOT: &str = "integ_capture";
/// Products a read collects changes of at most (the latest of each, in memory until applied);
/// a backlog touching more is read in several turns. Counting products, not changes, lets a
/// heavy stream over fewer products be read in the windows its pace asks for.
const READ_PRODUCTS: usize = 100_000;
/// Changes applied per transaction.
const APPLY_CHUNK: usize = 1_000;
/// Least time between two reads while changes keep coming, so commits are applied in batches
/// rather than one transaction per commit. The gap grows with the CPU time a read takes (`gap`):
/// under heavy write load the worker takes at most a share of a core, and longer windows let
/// repeated changes of one product collapse into one (at up to `integ.capture_max_delay` more
/// latency).
const MIN_GAP: Duration = Duration::from_millis(10);
/// Changes in one read from which the next read waits (`gap`): more than a trickle.
const BATCHING_FROM: usize = 16;
/// Least time between two reads that found changes: a read applies in a transaction of its
/// own, so an application committing thousands of times a second would otherwise be followed
/// commit by commit, at ~100 µs of fixed cost each. A lone change is read at once.
const TRICKLE_GAP: Duration = Duration::from_millis(5);
/// A slice of a wait between reads without any commit to capture: the stream has paused.
const QUIET: Duration = Duration::from_millis(25);
/// While capturing, the catalog (extension, slot) is looked at again after this long, or at
/// once after an error or a configuration reload; in between every turn only reads the WAL.
const STATE_EVERY: Duration = Duration::from_secs(1);
/// The slot moves at most this often: each move first records its position in a transaction.
const MOVE_EVERY: Duration = Duration::from_secs(1);
/// Slot moves waiting for their applying commits to be flushed, at most; beyond, the capture
/// flushes them itself.
const UNFLUSHED_MAX: usize = 64;

pub fn register() {
    BackgroundWorkerBuilder::new("integration capture")
        .set_type("integration capture")
        .set_library("integration")
        .set_function("integ_capture_main")
        .enable_spi_access()
        .set_start_time(pgrx::bgworkers::BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn integ_capture_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(Some(&gucs::database()), None);
    // The applying transactions do not wait for their WAL flush: what they write is derived
    // from messages the slot keeps until it is durable (see `Capturer::move_slot`). With
    // durable commits an application writing thousands of changes a second would otherwise
    // share its WAL flushes with a capture commit every few milliseconds.
    let _ = worker_transaction(|| Spi::run("SET jit = off; SET synchronous_commit = off"));
    shmem::publish_capture_latch(true);
    Capturer::default().run();
    shmem::publish_capture_latch(false);
}

/// What one look at the catalog says.
struct State {
    extension: bool,
    /// Installed at a version other than the library's: wait for `ALTER EXTENSION ... UPDATE`.
    other_version: bool,
    slot: Option<SlotState>,
}

struct SlotState {
    ours: bool,
    lost: bool,
    restart: i64,
}

#[derive(Default)]
struct Capturer {
    /// Not before this may the next read start (see `gap`).
    next_read_at: Option<Instant>,
    /// Changes the previous read found.
    last_read: usize,
    last_error: Option<String>,
    /// Open while capturing; dropped (and the pending messages with it) on any error, to be
    /// rebuilt from the slot's restart point.
    reader: Option<wal::WalReader>,
    collector: Collector,
    /// Where the slot was last moved to.
    restart: i64,
    /// Until when the last look at the catalog holds (`STATE_EVERY`).
    state_valid_until: Option<Instant>,
    /// Slot moves waiting for the commits that applied what they pass over to be flushed.
    unflushed: UnflushedMoves,
    /// The furthest flushed position the slot may move to, when it next moves.
    movable: i64,
    last_move: Option<Instant>,
    /// End of the commit that last recorded a slot position.
    recorded_end: u64,
}

impl Capturer {
    fn run(&mut self) {
        loop {
            if BackgroundWorker::sigterm_received() {
                break;
            }
            if BackgroundWorker::sighup_received() {
                unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
                self.state_valid_until = None;
            }
            // this worker's writes (listing updates, new jobs) reach the statistics autovacuum
            // plans from only when reported; at most once a second, between transactions
            unsafe { pg_sys::pgstat_report_stat(false) };
            match self.turn() {
                Ok(true) => continue,
                Ok(false) => self.last_error = None,
                Err(e) => {
                    // start again from the slot: nothing read since it last moved is lost
                    self.reader = None;
                    self.collector = Collector::default();
                    self.state_valid_until = None;
                    self.unflushed.clear();
                    if self.last_error.as_deref() != Some(e.as_str()) {
                        warning!("integration capture: {e}");
                        self.last_error = Some(e);
                    }
                    wait_latch(1_000);
                }
            }
            wait_latch(gucs::POLL_INTERVAL_MS.get().max(10) as u64);
            self.sit_out_gap();
        }
    }

    /// Waits until `next_read_at` in slices of `QUIET`, without being woken by every commit. A
    /// slice in which no commit set the latch means the stream has paused: the wait ends, and
    /// the next change is read as soon as it commits (a gap earned by a stream must not hold
    /// back a change that comes after it, e.g. an order after an import).
    fn sit_out_gap(&mut self) {
        while let Some(at) = self.next_read_at {
            let remaining = at.saturating_duration_since(Instant::now());
            if remaining.is_zero() || BackgroundWorker::sigterm_received() {
                return;
            }
            std::thread::sleep(remaining.min(QUIET));
            let woken = unsafe { (*pg_sys::MyLatch).is_set != 0 };
            if !woken {
                self.next_read_at = None;
                return;
            }
            unsafe { pg_sys::ResetLatch(pg_sys::MyLatch) };
        }
    }

    /// One step; true when more is waiting to be read at once.
    fn turn(&mut self) -> Result<bool, String> {
        if self.reader.is_some() && self.state_valid_until.is_some() {
            let more = self.read()?;
            if self.state_valid_until.is_some_and(|t| Instant::now() >= t) {
                // looked at after the read, so that no change waits for it
                let state = read_state()?;
                let steady = state.extension
                    && !state.other_version
                    && gucs::LOGICAL_CAPTURE.get()
                    && state.slot.as_ref().is_some_and(|s| s.ours && !s.lost);
                self.state_valid_until = steady.then(|| Instant::now() + STATE_EVERY);
            }
            return Ok(more);
        }
        let state = read_state()?;
        if state.extension && state.other_version {
            // A new library before ALTER EXTENSION ... UPDATE (worker 0 says so): read nothing,
            // the slot keeps every message, and changes take the trigger's table path.
            shmem::set_capture_by_message(false);
            self.reader = None;
            self.collector = Collector::default();
            self.unflushed.clear();
            return Ok(false);
        }
        let wanted = state.extension && gucs::LOGICAL_CAPTURE.get();
        let Some(slot) = state.slot.as_ref().filter(|s| s.ours) else {
            shmem::set_capture_by_message(false);
            if state.slot.is_some() {
                if wanted {
                    return Err(format!(
                        "replication slot {SLOT} exists but is not a physical slot: stock changes are captured by the trigger's table path until it is dropped"
                    ));
                }
                return Ok(false);
            }
            if state.extension && capture_state::read()?.lost_by(None) {
                return self.recover_lost(&format!("replication slot {SLOT} is missing"));
            }
            if wanted {
                self.open()?;
                return Ok(true);
            }
            return Ok(false);
        };
        if slot.lost {
            return self.recover_lost(&format!(
                "replication slot {SLOT} was invalidated (max_slot_wal_keep_size)"
            ));
        }
        if !state.extension {
            // DROP EXTENSION: nothing to apply the messages to any more
            shmem::set_capture_by_message(false);
            self.reader = None;
            drop_slot()?;
            log!("integration capture: extension dropped, slot {SLOT} dropped");
            return Ok(false);
        }
        if self.reader.is_none() && capture_state::read()?.lost_by(Some(slot.restart)) {
            return self.recover_lost(&format!(
                "replication slot {SLOT} starts after the position the capture last moved it to"
            ));
        }
        if !wanted {
            return self.retire(slot.restart);
        }
        self.ensure_reader(slot.restart)?;
        if !shmem::capture_by_message() {
            // recorded before any message is emitted: from here a missing slot means a loss
            capture_state::capturing(self.restart)?;
            shmem::set_capture_by_message(true);
            log!("integration capture: capturing stock changes by logical message (slot {SLOT})");
        }
        self.state_valid_until = Some(Instant::now() + STATE_EVERY);
        self.read()
    }

    /// The first read, or again after an error or a restart, starts at the slot's restart
    /// point with nothing pending.
    fn ensure_reader(&mut self, restart: i64) -> Result<(), String> {
        if self.reader.is_none() {
            self.reader = Some(wal::WalReader::open(restart as u64)?);
            self.collector = Collector::default();
            self.restart = restart;
            self.movable = restart;
            self.unflushed.clear();
        }
        Ok(())
    }

    fn open(&mut self) -> Result<(), String> {
        slot_statement(
            "creating replication slot",
            "SELECT 1 FROM pg_catalog.pg_create_physical_replication_slot($1, true)",
            &[SLOT.into()],
        )?;
        log!("integration capture: created replication slot {SLOT}");
        Ok(())
    }

    /// Reads what has been written since the last read, applies what committed, moves the
    /// slot. True when the read stopped at `READ_PRODUCTS` with more behind it.
    fn read(&mut self) -> Result<bool, String> {
        let Some(reader) = self.reader.as_mut() else {
            return Ok(false);
        };
        let started = Instant::now();
        let cpu_started = cpu_time();
        let read = reader.read(&mut self.collector, READ_PRODUCTS)?;
        let position = reader.position();
        let malformed = std::mem::take(&mut self.collector.malformed);
        for m in &malformed {
            warning!("integration capture: skipped a stock message: {m}");
        }
        let prices = self.collector.take_prices();
        let applied = read.changes;
        let mut committed_end = self.unflushed.last_commit_end();
        if applied > 0 {
            let latest = self.collector.take_stock();
            // in several transactions, each waking the push workers, so a large change starts
            // pushing while the rest is still being applied; prices go with the first, so a
            // stock and a price changed together become visible together
            let mut chunks: Vec<&[message::StockChange]> = latest.chunks(APPLY_CHUNK).collect();
            if chunks.is_empty() {
                chunks.push(&[]);
            }
            for (i, chunk) in chunks.into_iter().enumerate() {
                let jobs = worker_transaction(|| {
                    let priced = if i == 0 && !prices.is_empty() {
                        capture::price::apply_prices(&prices).1
                    } else {
                        0
                    };
                    let stocked = if chunk.is_empty() {
                        0
                    } else {
                        capture::apply_changes(chunk).1
                    };
                    priced + stocked
                })
                .map_err(|e| format!("applying captured changes: {e}"))?;
                committed_end = committed_end.max(unsafe { pg_sys::XactLastCommitEnd });
                if jobs > 0 {
                    shmem::wake_workers();
                }
            }
        }
        // the slot keeps the WAL from the oldest message still undecided
        let restart = self.collector.oldest_pending().unwrap_or(position).min(position) as i64;
        self.move_slot(restart, committed_end)?;
        shmem::set_capture_position(position);
        shmem::count_messages_applied(applied as u64);
        if applied > 0 {
            let pacing = Pacing::configured();
            let cpu = cpu_time().saturating_sub(cpu_started);
            self.next_read_at = Some(started + gap(applied, self.last_read, cpu, pacing));
        }
        // a read that stopped at READ_PRODUCTS is a backlog (a huge UPDATE, a restart), not a
        // stream: the read that finishes it must not hold the next change back
        self.last_read = if read.more { 0 } else { applied };
        Ok(read.more)
    }

    /// Moves the slot to `restart` once the commits that applied the messages before it
    /// (ending at `committed_end`) are flushed: they commit without waiting for their flush,
    /// and a crash in between must find those messages still kept. An application's own
    /// commits flush them, or the WAL writer within `wal_writer_delay`.
    fn move_slot(&mut self, restart: i64, committed_end: u64) -> Result<(), String> {
        self.unflushed.push(restart, committed_end);
        if self.unflushed.len() > UNFLUSHED_MAX {
            unsafe { pg_sys::XLogFlush(committed_end) };
        }
        let flushed = unsafe { pg_sys::GetFlushRecPtr(std::ptr::null_mut()) };
        if let Some(target) = self.unflushed.take_flushed(flushed) {
            self.movable = self.movable.max(target);
        }
        // The position is recorded (integ.capture_state) before the slot moves there, so a
        // slot found beyond the record was not ours. At most once per MOVE_EVERY, and not for
        // the WAL of the record itself.
        let due = self.last_move.is_none_or(|t| t.elapsed() >= MOVE_EVERY);
        if due && self.movable > self.restart && self.movable as u64 > self.recorded_end {
            capture_state::capturing(self.movable)?;
            self.recorded_end = unsafe { pg_sys::XactLastCommitEnd };
            advance(self.movable)?;
            self.restart = self.movable;
            self.last_move = Some(Instant::now());
        }
        Ok(())
    }

    /// Stops capturing by message: the trigger goes back to the table path, every transaction
    /// that may still emit finishes, what they emitted is applied, then the slot goes.
    fn retire(&mut self, restart: i64) -> Result<bool, String> {
        shmem::set_capture_by_message(false);
        wait_for_older_transactions()?;
        self.ensure_reader(restart)?;
        while self.read()? {}
        // the slot goes: what it kept must be applied durably first
        flush_own_commits();
        self.reader = None;
        self.unflushed.clear();
        drop_slot()?;
        capture_state::stopped()?;
        log!("integration capture: back to the trigger's table path; slot {SLOT} dropped");
        Ok(false)
    }

    /// The slot's messages may be gone (`why`: invalidated, missing, or newer than where it
    /// was last moved): start again and bring every mapped listing back to EGDC's current
    /// stock. Meanwhile changes take the trigger's table path; the next turn creates a slot.
    fn recover_lost(&mut self, why: &str) -> Result<bool, String> {
        shmem::set_capture_by_message(false);
        self.reader = None;
        self.collector = Collector::default();
        self.unflushed.clear();
        wait_for_older_transactions()?;
        drop_slot()?;
        capture_state::resync(why)?;
        // nothing keeps these but their own commit
        flush_own_commits();
        Ok(true)
    }
}

/// Makes this worker's commits so far durable (they do not wait for their flush).
fn flush_own_commits() {
    unsafe { pg_sys::XLogFlush(pg_sys::XactLastCommitEnd) };
}

/// Slot positions, each allowed once the WAL is flushed up to the end of the commit that
/// applied the messages before it. Oldest first; both increase.
#[derive(Default)]
struct UnflushedMoves(VecDeque<(i64, u64)>);

impl UnflushedMoves {
    fn push(&mut self, restart: i64, commit_end: u64) {
        match self.0.back_mut() {
            Some(last) if last.1 == commit_end => last.0 = last.0.max(restart),
            _ => self.0.push_back((restart, commit_end)),
        }
    }

    fn last_commit_end(&self) -> u64 {
        self.0.back().map_or(0, |m| m.1)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear()
    }

    /// The furthest position whose commit is flushed, if any; it and those before it go.
    fn take_flushed(&mut self, flushed: u64) -> Option<i64> {
        let mut target = None;
        while let Some(&(at, end)) = self.0.front() {
            if end > flushed {
                break;
            }
            target = Some(target.map_or(at, |t: i64| t.max(at)));
            self.0.pop_front();
        }
        target
    }
}

/// CPU time this process has used. The pace counts CPU, not wall time: a read slowed by
/// other processes competing for the cores (push workers, the application) would otherwise
/// make the capture wait longer the busier the machine is, and keep waiting after the load
/// is gone.
fn cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32)
}

/// The least time from the start of a read that found changes to the next: `TRICKLE_GAP`
/// after a small read (a trickle) or after the first large one (a single burst, e.g. one big
/// UPDATE, must not hold back the changes that follow it); after consecutive large reads
/// (sustained heavy writing), the read's CPU time scaled so that reading takes at most the
/// configured share of a core.
fn gap(changes: usize, previous: usize, took: Duration, pacing: Pacing) -> Duration {
    if changes < BATCHING_FROM || previous < BATCHING_FROM {
        return TRICKLE_GAP;
    }
    let percent = pacing.cpu_percent.clamp(1, 100);
    (took * 100 / percent).clamp(MIN_GAP, pacing.max_gap.max(MIN_GAP))
}

/// How a sustained stream of changes is read: at most `cpu_percent` of one core (reading and
/// applying included), at least once per `max_gap`.
#[derive(Clone, Copy)]
struct Pacing {
    cpu_percent: u32,
    max_gap: Duration,
}

impl Pacing {
    /// The settings as they are (their bounds are the GUCs'; `gap` guards the arithmetic).
    fn configured() -> Self {
        Pacing {
            cpu_percent: gucs::CAPTURE_CPU_PERCENT.get().max(0) as u32,
            max_gap: Duration::from_millis(gucs::CAPTURE_MAX_DELAY_MS.get().max(0) as u64),
        }
    }
}

/// A transaction that uses the slot. A failing slot function leaves the slot acquired by this
/// process (a backend's error recovery would release it; a worker's must do it itself), and
/// every later use would fail with "slot is active".
fn slot_transaction<R>(body: impl FnOnce() -> R) -> Result<R, String> {
    let result = worker_transaction(body);
    if result.is_err() {
        unsafe {
            if !pg_sys::MyReplicationSlot.is_null() {
                pg_sys::ReplicationSlotRelease();
            }
            pg_sys::ReplicationSlotCleanup();
        }
    }
    result
}

fn read_state() -> Result<State, String> {
    worker_transaction(|| {
        Spi::connect(|c| {
            let t = c.select(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'integration'),
                        s.slot_name IS NOT NULL,
                        coalesce(s.slot_type = 'physical', false),
                        coalesce(s.wal_status = 'lost', false),
                        coalesce((s.restart_lsn - '0/0')::int8, 0),
                        coalesce((SELECT extversion <> $2 FROM pg_catalog.pg_extension WHERE extname = 'integration'), false)
                   FROM (SELECT 1) one LEFT JOIN pg_catalog.pg_replication_slots s ON s.slot_name = $1",
                None,
                &[SLOT.into(), crate::version::LIBRARY.into()],
            )?;
            let r = t.first();
            let exists = r.get::<bool>(2)?.unwrap_or(false);
            Ok::<_, pgrx::spi::SpiError>(State {
                extension: r.get::<bool>(1)?.unwrap_or(false),
                other_version: r.get::<bool>(6)?.unwrap_or(false),
                slot: exists.then_some(SlotState {
                    ours: r.get::<bool>(3)?.unwrap_or(false),
                    lost: r.get::<bool>(4)?.unwrap_or(false),
                    restart: r.get::<i64>(5)?.unwrap_or(0),
                }),
            })
        })
    })
    .and_then(|r| r.map_err(|e| e.to_string()))
    .map_err(|e| format!("reading the capture slot's state: {e}"))
}

fn advance(lsn: i64) -> Result<(), String> {
    slot_statement(
        "advancing slot",
        "SELECT 1 FROM pg_catalog.pg_replication_slot_advance($1, '0/0'::pg_lsn + $2::numeric)",
        &[SLOT.into(), lsn.into()],
    )
}

fn drop_slot() -> Result<(), String> {
    slot_statement(
        "dropping slot",
        "SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
        &[SLOT.into()],
    )
}

/// One slot function in its own transaction, through SPI's read-only path: pgrx's `Spi::run`
/// assigns a transaction id first, which slot creation refuses and which would write a commit
/// record per call. Kept plans: the slot is moved after every read.
fn slot_statement(what: &str, sql: &'static str, args: &[pgrx::datum::DatumWithOid]) -> Result<(), String> {
    slot_transaction(|| select_kept(sql, args, |_| Ok(())))
        .and_then(|r| r.map_err(|e| e.to_string()))
        .map_err(|e| format!("{what} {SLOT}: {e}"))
}

/// Waits until every transaction id assigned before now has finished. Triggers take their
/// transaction id before looking at the capture flag, so once the flag is cleared, this is
/// every transaction that may still emit a message.
fn wait_for_older_transactions() -> Result<(), String> {
    // the next transaction id to be assigned (a snapshot's xmax is not: it is one past the
    // latest completed, and running transactions may be above it)
    let horizon = unsafe { pg_sys::ReadNextFullTransactionId() }.value.to_string();
    let started = Instant::now();
    let mut last_said = Instant::now();
    loop {
        let done = worker_transaction(|| {
            Spi::get_one_with_args::<bool>(
                "SELECT pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot()) >= $1::xid8",
                &[horizon.as_str().into()],
            )
        })
        .and_then(|r| r.map_err(|e| e.to_string()))?
        .unwrap_or(false);
        if done {
            return Ok(());
        }
        if BackgroundWorker::sigterm_received() {
            return Err("stopped while waiting for older transactions".into());
        }
        if last_said.elapsed() >= Duration::from_secs(60) {
            last_said = Instant::now();
            log!(
                "integration capture: waiting {}s for transactions older than the switch to finish",
                started.elapsed().as_secs()
            );
        }
        wait_latch(50);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slot_passes_only_messages_whose_applying_commit_is_flushed() {
        let mut moves = UnflushedMoves::default();
        // nothing applied yet: a move waits for nothing
        moves.push(100, 0);
        assert_eq!(moves.take_flushed(0), Some(100));
        moves.push(200, 1_000);
        moves.push(300, 2_000);
        moves.push(350, 2_000); // a read that applied nothing new waits for the same commit
        assert_eq!(moves.len(), 2);
        assert_eq!(moves.take_flushed(999), None, "no commit flushed yet");
        assert_eq!(moves.take_flushed(1_500), Some(200));
        assert_eq!(moves.last_commit_end(), 2_000);
        assert_eq!(moves.take_flushed(2_000), Some(350));
        assert_eq!(moves.take_flushed(u64::MAX), None, "all taken");
    }

    #[test]
    fn only_sustained_heavy_writing_waits_between_reads() {
        let took = Duration::from_millis(20);
        let pacing = Pacing {
            cpu_percent: 5,
            max_gap: Duration::from_secs(5),
        };
        // a trickle, and the first large read (a burst), wait only the least gap
        assert_eq!(gap(3, 500, took, pacing), TRICKLE_GAP);
        assert_eq!(gap(5_000, 0, took, pacing), TRICKLE_GAP);
        assert_eq!(gap(5_000, BATCHING_FROM - 1, took, pacing), TRICKLE_GAP);
        // consecutive large reads: the read takes 5% of the time from one read to the next
        assert_eq!(gap(5_000, 5_000, took, pacing), took * 20);
        let half = Pacing {
            cpu_percent: 50,
            ..pacing
        };
        assert_eq!(gap(5_000, 5_000, took, half), took * 2);
        // within the bounds
        assert_eq!(gap(20, 20, Duration::from_micros(100), pacing), MIN_GAP);
        assert_eq!(gap(50_000, 50_000, Duration::from_secs(3), pacing), pacing.max_gap);
        let short = Pacing {
            max_gap: Duration::from_millis(1),
            ..pacing
        };
        assert_eq!(gap(5_000, 5_000, took, short), MIN_GAP, "never below the least gap");
    }
}
