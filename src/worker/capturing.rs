//! The capture worker: reads the stock messages the trigger emits back out of the `integ_capture`
//! logical replication slot and turns them into outbox jobs.
//!
//! Nothing is lost: the slot is advanced only after the jobs have committed (a crash in between
//! reads the same messages again, and `desired_lsn` makes applying them twice harmless), the
//! trigger emits only while the slot exists, and the slot is dropped only after every
//! transaction that could have seen it has finished and its messages are applied.

use super::wait_latch;
use crate::capture::{self, message};
use crate::gucs;
use crate::shmem;
use crate::spi_util::worker_transaction;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;
use std::time::{Duration, Instant};

pub const SLOT: &str = "integ_capture";
const SLOT_C: &std::ffi::CStr = c"integ_capture";
/// pgoutput needs a publication; this one holds no table, so table changes are not sent.
const PUBLICATION: &str = "integ_capture";
/// Rows one read returns at most (a transaction in progress is completed past it).
const READ_ROWS: i32 = 50_000;
/// Least time between two reads while changes keep coming: each read decodes WAL from the
/// slot's restart point and costs a few transactions, so commits are read in batches rather
/// than one read per commit. The gap grows with the time a read takes (`DUTY`), so under
/// heavy write load the worker takes at most a share of a core and batches grow instead.
const MIN_GAP: Duration = Duration::from_millis(10);
const MAX_GAP: Duration = Duration::from_millis(250);
/// Time between reads per unit of time spent reading.
const DUTY: u32 = 4;
/// WAL written since the last running-transactions record after which the worker logs one,
/// so the slot's restart point (where every read starts decoding) follows close behind.
const SNAPSHOT_EVERY_BYTES: i64 = 16 * 1024;

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
    let _ = worker_transaction(|| Spi::run("SET jit = off"));
    shmem::publish_capture_latch(true);
    Capturer::default().run();
    shmem::publish_capture_latch(false);
}

/// What one look at the catalog says.
struct State {
    extension: bool,
    slot: Option<SlotState>,
    flush: i64,
    insert: i64,
}

struct SlotState {
    ours: bool,
    lost: bool,
    confirmed: i64,
    restart: i64,
}

#[derive(Default)]
struct Capturer {
    /// When the last read started, and how long it took.
    last_read: Option<Instant>,
    last_read_took: Duration,
    last_snapshot: i64,
    last_error: Option<String>,
}

impl Capturer {
    fn gap(&self) -> Duration {
        (self.last_read_took * DUTY).clamp(MIN_GAP, MAX_GAP)
    }

    fn run(&mut self) {
        loop {
            if BackgroundWorker::sigterm_received() {
                break;
            }
            if BackgroundWorker::sighup_received() {
                unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            }
            match self.turn() {
                Ok(true) => continue,
                Ok(false) => self.last_error = None,
                Err(e) => {
                    // logged once per distinct error; the messages stay in the slot
                    if self.last_error.as_deref() != Some(e.as_str()) {
                        warning!("integration capture: {e}");
                        self.last_error = Some(e);
                    }
                    wait_latch(1_000);
                }
            }
            wait_latch(gucs::POLL_INTERVAL_MS.get().max(10) as u64);
            if let Some(gap) = self.last_read.map(|t| self.gap().saturating_sub(t.elapsed())) {
                if !gap.is_zero() {
                    std::thread::sleep(gap);
                }
            }
        }
    }

    /// One step; true when more is waiting to be read at once.
    fn turn(&mut self) -> Result<bool, String> {
        let state = read_state()?;
        let wanted = state.extension
            && gucs::LOGICAL_CAPTURE.get()
            && unsafe { pg_sys::wal_level } >= pg_sys::WalLevel::WAL_LEVEL_LOGICAL as i32;
        let Some(slot) = state.slot.as_ref().filter(|s| s.ours) else {
            if let Some(s) = &state.slot {
                shmem::set_capture_by_message(false);
                if wanted {
                    return Err(format!(
                        "replication slot {SLOT} exists but is not this database's pgoutput slot ({}): stock changes are captured by the trigger's table path until it is dropped",
                        if s.lost { "lost" } else { "another database or plugin" }
                    ));
                }
                return Ok(false);
            }
            if wanted {
                self.open()?;
                return Ok(true);
            }
            shmem::set_capture_by_message(false);
            return Ok(false);
        };
        if slot.lost {
            return self.recover_lost();
        }
        if !state.extension {
            // DROP EXTENSION: nothing to apply the messages to any more
            shmem::set_capture_by_message(false);
            drop_slot()?;
            log!("integration capture: extension dropped, slot {SLOT} dropped");
            return Ok(false);
        }
        if !wanted {
            return self.retire();
        }
        if !shmem::capture_by_message() {
            // a slot from before a restart: its unread messages are read like any others
            shmem::set_capture_by_message(true);
            log!("integration capture: capturing stock changes by logical message (slot {SLOT})");
        }
        self.read(&state, slot)
    }

    fn open(&mut self) -> Result<(), String> {
        worker_transaction(|| {
            let exists = Spi::get_one_with_args::<bool>(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1)",
                &[PUBLICATION.into()],
            )?
            .unwrap_or(false);
            if !exists {
                Spi::run(&format!("CREATE PUBLICATION {PUBLICATION}"))?;
            }
            Ok::<_, pgrx::spi::SpiError>(())
        })
        .and_then(|r| r.map_err(|e| e.to_string()))
        .map_err(|e| format!("creating publication {PUBLICATION}: {e}"))?;
        // waits for the transactions running now to finish (meanwhile: the table path)
        slot_transaction(|| {
            select(
                "SELECT 1 FROM pg_catalog.pg_create_logical_replication_slot($1, 'pgoutput')",
                &[SLOT.into()],
            )
        })
        .and_then(|r| r.map_err(|e| e.to_string()))
        .map_err(|e| format!("creating replication slot {SLOT}: {e}"))?;
        shmem::set_capture_by_message(true);
        log!("integration capture: capturing stock changes by logical message (slot {SLOT})");
        Ok(())
    }

    /// Reads what has committed since the last read, applies it, advances the slot. True when
    /// the read stopped at `READ_ROWS` with more behind it.
    fn read(&mut self, state: &State, slot: &SlotState) -> Result<bool, String> {
        if state.flush <= slot.confirmed {
            return Ok(false);
        }
        if state.insert - self.last_snapshot >= SNAPSHOT_EVERY_BYTES
            && state.flush - slot.restart >= SNAPSHOT_EVERY_BYTES
        {
            // a running-transactions record lets the slot's restart point move up to it
            worker_transaction(|| unsafe { pg_sys::LogStandbySnapshot() })?;
            self.last_snapshot = state.insert;
        }
        let started = Instant::now();
        self.last_read = Some(started);
        let upto = state.flush;
        let (full, last_commit_end, applied, jobs, malformed) = slot_transaction(|| {
            let rows = Spi::connect(|c| {
                let t = c.select(
                    "SELECT data FROM pg_catalog.pg_logical_slot_peek_binary_changes($1, '0/0'::pg_lsn + $2::numeric, $3,
                         'proto_version', '1', 'publication_names', $4, 'messages', 'true')",
                    None,
                    &[SLOT.into(), upto.into(), READ_ROWS.into(), PUBLICATION.into()],
                )?;
                t.map(|r| r.get::<Vec<u8>>(1).map(Option::unwrap_or_default))
                    .collect::<Result<Vec<Vec<u8>>, _>>()
            })
            .map_err(|e| e.to_string())?;
            let full = rows.len() >= READ_ROWS as usize;
            let batch = message::read_batch(rows.iter().map(Vec::as_slice))?;
            let applied = batch.changes.len();
            let latest = message::latest_per_product(batch.changes);
            let (_, jobs) = capture::apply_changes(&latest);
            Ok::<_, String>((full, batch.last_commit_end, applied, jobs, batch.malformed))
        })
        .and_then(|r| r)
        .map_err(|e| format!("reading slot {SLOT}: {e}"))?;
        for m in &malformed {
            warning!("integration capture: skipped a stock message: {m}");
        }
        let advance_to = if full {
            last_commit_end.map(|l| l as i64)
        } else {
            Some(upto)
        };
        if let Some(lsn) = advance_to {
            advance(lsn)?;
        }
        self.last_read_took = started.elapsed();
        shmem::count_messages_applied(applied as u64);
        if jobs > 0 {
            shmem::wake_workers();
        }
        Ok(full && advance_to.is_some())
    }

    /// Stops capturing by message: the trigger goes back to the table path, every transaction
    /// that may still emit finishes, what they emitted is applied, then the slot goes.
    fn retire(&mut self) -> Result<bool, String> {
        shmem::set_capture_by_message(false);
        wait_for_older_transactions()?;
        loop {
            let state = read_state()?;
            let Some(slot) = state.slot.as_ref() else {
                return Ok(false);
            };
            if !self.read(&state, slot)? {
                break;
            }
        }
        drop_slot()?;
        log!("integration capture: back to the trigger's table path; slot {SLOT} dropped");
        Ok(false)
    }

    /// The slot was invalidated (it fell behind `max_slot_wal_keep_size`): its messages are
    /// gone. Start again and bring every mapped listing back to EGDC's current stock.
    fn recover_lost(&mut self) -> Result<bool, String> {
        shmem::set_capture_by_message(false);
        wait_for_older_transactions()?;
        drop_slot()?;
        let seeded = worker_transaction(|| {
            Spi::get_one::<i64>(
                "SELECT count(*) FILTER (WHERE integ.seed_listing_stock(tenant_id, product_id))
                   FROM (SELECT DISTINCT tenant_id, product_id FROM integ.listings) p",
            )
        })
        .and_then(|r| r.map_err(|e| e.to_string()))
        .map_err(|e| format!("re-reading EGDC's stock after the slot was lost: {e}"))?
        .unwrap_or(0);
        let text = format!(
            "replication slot {SLOT} was invalidated (max_slot_wal_keep_size); the stock of {seeded} products was read again from the tracked tables"
        );
        warning!("integration capture: {text}");
        Ok(true)
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
                        coalesce(s.slot_type = 'logical' AND s.plugin = 'pgoutput'
                                 AND s.database = pg_catalog.current_database(), false),
                        coalesce(s.wal_status = 'lost', false),
                        coalesce((s.confirmed_flush_lsn - '0/0')::int8, 0),
                        coalesce((s.restart_lsn - '0/0')::int8, 0),
                        (pg_catalog.pg_current_wal_flush_lsn() - '0/0')::int8,
                        (pg_catalog.pg_current_wal_insert_lsn() - '0/0')::int8
                   FROM (SELECT 1) one LEFT JOIN pg_catalog.pg_replication_slots s ON s.slot_name = $1",
                None,
                &[SLOT.into()],
            )?;
            let r = t.first();
            let exists = r.get::<bool>(2)?.unwrap_or(false);
            Ok::<_, pgrx::spi::SpiError>(State {
                extension: r.get::<bool>(1)?.unwrap_or(false),
                slot: exists.then_some(SlotState {
                    ours: r.get::<bool>(3)?.unwrap_or(false),
                    lost: r.get::<bool>(4)?.unwrap_or(false),
                    confirmed: r.get::<i64>(5)?.unwrap_or(0),
                    restart: r.get::<i64>(6)?.unwrap_or(0),
                }),
                flush: r.get::<i64>(7)?.unwrap_or(0),
                insert: r.get::<i64>(8)?.unwrap_or(0),
            })
        })
    })
    .and_then(|r| r.map_err(|e| e.to_string()))
    .map_err(|e| format!("reading the capture slot's state: {e}"))
}

/// Confirms the slot up to `lsn`, as the walsender does when a subscriber confirms: no second
/// decoding pass (which `pg_replication_slot_advance` would make). The restart point moves to
/// the candidate the last read found.
fn advance(lsn: i64) -> Result<(), String> {
    slot_transaction(|| unsafe {
        pg_sys::ReplicationSlotAcquire(SLOT_C.as_ptr(), true);
        pg_sys::LogicalConfirmReceivedLocation(lsn.max(0) as u64);
        pg_sys::ReplicationSlotRelease();
    })
    .map_err(|e| format!("advancing slot {SLOT}: {e}"))
}

/// Runs a statement through SPI's read-only path: pgrx's `Spi::run` assigns a transaction id
/// first, which slot creation refuses and which would write a commit record per call.
fn select(sql: &str, args: &[pgrx::datum::DatumWithOid]) -> Result<(), pgrx::spi::SpiError> {
    Spi::connect(|c| c.select(sql, None, args).map(|_| ()))
}

fn drop_slot() -> Result<(), String> {
    slot_transaction(|| {
        select(
            "SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            &[SLOT.into()],
        )?;
        Spi::run(&format!("DROP PUBLICATION IF EXISTS {PUBLICATION}"))
    })
    .and_then(|r| r.map_err(|e| e.to_string()))
    .map_err(|e| format!("dropping slot {SLOT}: {e}"))
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
