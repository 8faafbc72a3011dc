//! Shared memory: only fast, rebuildable state: the workers' latches (so that a committing
//! backend can wake them), token-refresh requests, and the limiters and circuit breakers.

pub mod limiter;

use crate::gucs::MAX_WORKERS;
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PgAtomic};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};

/// Address of each running worker's `MyLatch` (PGPROC latches live in shared memory, mapped at
/// the same address in every process), 0 when the slot is empty.
static WORKER_LATCHES: PgAtomic<[AtomicUsize; MAX_WORKERS]> = unsafe { PgAtomic::new(c"integ_worker_latches") };

/// True once this process knows shared memory was initialised (the library was preloaded).
static SHMEM_READY: AtomicBool = AtomicBool::new(false);

pub fn init() {
    pg_shmem_init!(WORKER_LATCHES);
    pg_shmem_init!(REFRESH_REQUESTS = std::array::from_fn(|_| RefreshSlot::default()));
    pg_shmem_init!(CAPTURE);
    limiter::init(crate::gucs::MAX_LIMITERS.get().max(16) as usize);
    SHMEM_READY.store(true, Ordering::Relaxed);
}

fn latches() -> Option<&'static [AtomicUsize; MAX_WORKERS]> {
    if SHMEM_READY.load(Ordering::Relaxed) {
        Some(WORKER_LATCHES.get())
    } else {
        None
    }
}

/// Called by worker `slot` once connected: publishes its latch.
pub fn publish_my_latch(slot: usize) {
    if let Some(l) = latches() {
        if slot < MAX_WORKERS {
            l[slot].store(unsafe { pg_sys::MyLatch } as usize, Ordering::Release);
        }
    }
}

pub fn withdraw_my_latch(slot: usize) {
    if let Some(l) = latches() {
        if slot < MAX_WORKERS {
            l[slot].store(0, Ordering::Release);
        }
    }
}

/// Sets every published worker latch. Safe in a commit callback: no allocation, no error path.
pub fn wake_workers() {
    if let Some(l) = latches() {
        for slot in l.iter() {
            let p = slot.load(Ordering::Acquire);
            if p != 0 {
                unsafe { pg_sys::SetLatch(p as *mut pg_sys::Latch) };
            }
        }
    }
}

// ---- capture by logical message --------------------------------------------------------------

/// The capture worker's latch, and whether stock changes are captured as logical-decoding
/// messages (set only while the capture slot exists, so no message is emitted unread).
#[derive(Default)]
#[repr(C)]
pub struct CaptureShared {
    latch: AtomicUsize,
    by_message: AtomicBool,
    messages_applied: AtomicU64,
    /// WAL position up to which every committed message has been applied.
    position: AtomicU64,
}

unsafe impl pgrx::PGRXSharedMemory for CaptureShared {}

static CAPTURE: PgAtomic<CaptureShared> = unsafe { PgAtomic::new(c"integ_capture") };

fn capture() -> Option<&'static CaptureShared> {
    SHMEM_READY.load(Ordering::Relaxed).then(|| CAPTURE.get())
}

/// True when triggers should emit messages rather than write the outbox themselves.
pub fn capture_by_message() -> bool {
    capture().is_some_and(|c| c.by_message.load(Ordering::Acquire))
}

pub fn set_capture_by_message(on: bool) {
    if let Some(c) = capture() {
        c.by_message.store(on, Ordering::Release);
    }
}

pub fn publish_capture_latch(on: bool) {
    if let Some(c) = capture() {
        let latch = if on { (unsafe { pg_sys::MyLatch }) as usize } else { 0 };
        c.latch.store(latch, Ordering::Release);
    }
}

pub fn count_messages_applied(n: u64) {
    if let Some(c) = capture() {
        c.messages_applied.fetch_add(n, Ordering::Relaxed);
    }
}

pub fn set_capture_position(lsn: u64) {
    if let Some(c) = capture() {
        c.position.store(lsn, Ordering::Release);
    }
}

pub fn capture_position() -> u64 {
    capture().map_or(0, |c| c.position.load(Ordering::Acquire))
}

pub fn messages_applied() -> u64 {
    capture().map_or(0, |c| c.messages_applied.load(Ordering::Relaxed))
}

fn wake_capture() {
    if let Some(c) = capture() {
        let p = c.latch.load(Ordering::Acquire);
        if p != 0 {
            unsafe { pg_sys::SetLatch(p as *mut pg_sys::Latch) };
        }
    }
}

// ---- wake at commit ------------------------------------------------------------------------

static WAKE_AT_COMMIT: AtomicBool = AtomicBool::new(false);
static WAKE_CAPTURE_AT_COMMIT: AtomicBool = AtomicBool::new(false);
static CALLBACK_REGISTERED: AtomicBool = AtomicBool::new(false);

#[pg_guard]
unsafe extern "C-unwind" fn on_xact_event(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    match event {
        pg_sys::XactEvent::XACT_EVENT_COMMIT | pg_sys::XactEvent::XACT_EVENT_PARALLEL_COMMIT => {
            if WAKE_AT_COMMIT.swap(false, Ordering::Relaxed) {
                wake_workers();
            }
            if WAKE_CAPTURE_AT_COMMIT.swap(false, Ordering::Relaxed) {
                wake_capture();
            }
        }
        pg_sys::XactEvent::XACT_EVENT_ABORT | pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT => {
            WAKE_AT_COMMIT.store(false, Ordering::Relaxed);
            WAKE_CAPTURE_AT_COMMIT.store(false, Ordering::Relaxed);
        }
        _ => {}
    }
}

fn register_xact_callback() {
    if !CALLBACK_REGISTERED.swap(true, Ordering::Relaxed) {
        unsafe { pg_sys::RegisterXactCallback(Some(on_xact_event), std::ptr::null_mut()) };
    }
}

/// Ask for the workers to be woken when (and only if) the current transaction commits.
pub fn wake_workers_at_commit() {
    register_xact_callback();
    WAKE_AT_COMMIT.store(true, Ordering::Relaxed);
}

/// Ask for the capture worker to be woken when the current transaction commits.
pub fn wake_capture_at_commit() {
    register_xact_callback();
    WAKE_CAPTURE_AT_COMMIT.store(true, Ordering::Relaxed);
}

// ---- token refresh requests ----------------------------------------------------------------
// Refreshes run only in workers, in their own committed transactions, so a rotated refresh
// token is durable before use even when the caller's transaction later rolls back. A backend
// that needs one posts (connection, generation it saw) here and waits for the slot to clear.

const REFRESH_SLOTS: usize = 64;
/// A slot being filled by a backend (connection ids are positive).
const RESERVED: i64 = -1;

#[derive(Default)]
#[repr(C)]
pub struct RefreshSlot {
    connection_id: AtomicI64,
    generation: AtomicI64,
}

unsafe impl pgrx::PGRXSharedMemory for RefreshSlot {}

static REFRESH_REQUESTS: PgAtomic<[RefreshSlot; REFRESH_SLOTS]> = unsafe { PgAtomic::new(c"integ_refresh_requests") };

/// True when at least one worker has published its latch (so someone will serve requests).
pub fn workers_running() -> bool {
    latches().is_some_and(|l| l.iter().any(|s| s.load(Ordering::Acquire) != 0))
}

/// Posts a refresh request; false when shared memory is absent or every slot is taken.
pub fn request_refresh(connection_id: i64, generation: i64) -> bool {
    if !SHMEM_READY.load(Ordering::Relaxed) {
        return false;
    }
    let slots = REFRESH_REQUESTS.get();
    if slots
        .iter()
        .any(|s| s.connection_id.load(Ordering::Acquire) == connection_id)
    {
        wake_workers();
        return true;
    }
    for s in slots.iter() {
        // Reserve the slot first (RESERVED is invisible to workers), then fill it, so a
        // request never overwrites another's generation and is never seen half-written.
        if s.connection_id
            .compare_exchange(0, RESERVED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            s.generation.store(generation, Ordering::Release);
            s.connection_id.store(connection_id, Ordering::Release);
            wake_workers();
            return true;
        }
    }
    false
}

pub fn refresh_pending(connection_id: i64) -> bool {
    SHMEM_READY.load(Ordering::Relaxed)
        && REFRESH_REQUESTS
            .get()
            .iter()
            .any(|s| s.connection_id.load(Ordering::Acquire) == connection_id)
}

/// The requests waiting now: (connection, generation seen by the requester).
pub fn pending_refresh_requests() -> Vec<(i64, i64)> {
    if !SHMEM_READY.load(Ordering::Relaxed) {
        return Vec::new();
    }
    REFRESH_REQUESTS
        .get()
        .iter()
        .filter_map(|s| {
            let c = s.connection_id.load(Ordering::Acquire);
            (c > 0).then(|| (c, s.generation.load(Ordering::Acquire)))
        })
        .collect()
}

pub fn finish_refresh_request(connection_id: i64) {
    if !SHMEM_READY.load(Ordering::Relaxed) {
        return;
    }
    for s in REFRESH_REQUESTS.get().iter() {
        let _ = s
            .connection_id
            .compare_exchange(connection_id, 0, Ordering::AcqRel, Ordering::Acquire);
    }
}
