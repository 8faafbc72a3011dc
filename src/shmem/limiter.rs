//! Per-connection (= per tenant and marketplace) rate limiters and circuit breakers in shared
//! memory, shared by every worker and every backend calling `integ.sync_product`.
//!
//! One open-addressing table of `integ.max_limiters` slots under one LWLock, held only for a
//! few arithmetic operations (never across I/O). The state is rebuildable: after a restart every
//! limiter starts full and every circuit closed. When the table is full, connections without a
//! slot are not limited (and `overflowed` counts them): the marketplace's own 429s still slow
//! them down through retries.

use crate::limits::{self, Admit, Breaker, Circuit, Quota, SuccessWindow};
use pgrx::pg_sys;
use std::sync::atomic::{AtomicBool, Ordering};

#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct Slot {
    /// The installation the connection id belongs to (`crate::installation`): ids start again
    /// at 1 in a re-created extension, whose connections must not inherit these slots.
    pub installation: u32,
    pub connection_id: i64,
    pub emission_ns: i64,
    pub burst: i64,
    pub tat_ns: i64,
    /// Set from a marketplace's 429 / Retry-After: nobody sends before this.
    pub blocked_until_ns: i64,
    pub requests: u64,
    pub throttled: u64,
    pub remote_throttled: u64,
    pub circuit_state: u8,
    pub probe_in_flight: bool,
    pub failures: u32,
    pub opened_at_ns: i64,
    /// Slowed after a 429 to this interval (0: not slowed), at this time; see limits::adapt_on_429.
    pub adapted_ns: i64,
    pub adapted_at_ns: i64,
    pub successes: SuccessWindow,
    /// Pushes found no budget and wait for it until about then: spare-budget work (catalog
    /// imports) leaves the next requests to them.
    pub pushes_waiting_until_ns: i64,
}

impl Slot {
    fn breaker(&self) -> Breaker {
        Breaker {
            state: self.circuit_state,
            failures: self.failures,
            opened_at_ns: self.opened_at_ns,
            probe_in_flight: self.probe_in_flight,
        }
    }
    fn set_breaker(&mut self, b: Breaker) {
        self.circuit_state = b.state;
        self.failures = b.failures;
        self.opened_at_ns = b.opened_at_ns;
        self.probe_in_flight = b.probe_in_flight;
    }
    /// The configured quota.
    pub fn quota(&self) -> Quota {
        Quota {
            emission_ns: self.emission_ns.max(1),
            burst: self.burst.max(1),
        }
    }
    /// The quota in force `now`: the configured one, or slower after a 429.
    pub fn effective_quota(&self, now: i64) -> Quota {
        let q = self.quota();
        Quota {
            emission_ns: limits::effective_emission(q.emission_ns, self.adapted_ns, self.adapted_at_ns, now),
            burst: q.burst,
        }
    }
}

#[repr(C)]
struct Header {
    capacity: u64,
    overflowed: u64,
}

static mut HEADER: *mut Header = std::ptr::null_mut();
static mut SLOTS: *mut Slot = std::ptr::null_mut();
static mut LOCK: *mut pg_sys::LWLock = std::ptr::null_mut();
static mut CAPACITY: usize = 0;
static mut PREV_REQUEST: Option<unsafe extern "C-unwind" fn()> = None;
static mut PREV_STARTUP: Option<unsafe extern "C-unwind" fn()> = None;
static READY: AtomicBool = AtomicBool::new(false);
const NAME: &std::ffi::CStr = c"integ_limiters";

fn bytes(capacity: usize) -> usize {
    std::mem::size_of::<Header>() + capacity * std::mem::size_of::<Slot>()
}

/// Bytes of shared memory for `n` limiters (reported by the memory benchmark).
pub fn bytes_for(n: usize) -> usize {
    bytes(n)
}

/// Installs the shared-memory hooks; called from `_PG_init` while preloading.
pub fn init(capacity: usize) {
    unsafe {
        CAPACITY = capacity.max(16);
        PREV_REQUEST = pg_sys::shmem_request_hook;
        pg_sys::shmem_request_hook = Some(request);
        PREV_STARTUP = pg_sys::shmem_startup_hook;
        pg_sys::shmem_startup_hook = Some(startup);
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn request() {
    unsafe {
        if let Some(prev) = PREV_REQUEST {
            prev();
        }
        pg_sys::RequestAddinShmemSpace(bytes(CAPACITY));
        pg_sys::RequestNamedLWLockTranche(NAME.as_ptr(), 1);
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn startup() {
    unsafe {
        if let Some(prev) = PREV_STARTUP {
            prev();
        }
        let init_lock = &raw mut (*pg_sys::MainLWLockArray.add(21)).lock; // AddinShmemInitLock
        pg_sys::LWLockAcquire(init_lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let mut found = false;
        let base = pg_sys::ShmemInitStruct(NAME.as_ptr(), bytes(CAPACITY), &mut found) as *mut u8;
        if !found {
            std::ptr::write_bytes(base, 0, bytes(CAPACITY));
            (*(base as *mut Header)).capacity = CAPACITY as u64;
        }
        HEADER = base as *mut Header;
        SLOTS = base.add(std::mem::size_of::<Header>()) as *mut Slot;
        LOCK = &raw mut (*pg_sys::GetNamedLWLockTranche(NAME.as_ptr())).lock;
        pg_sys::LWLockRelease(init_lock);
        READY.store(true, Ordering::Release);
    }
}

/// Nanoseconds on the system-wide monotonic clock (the same in every process).
pub fn now_ns() -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec.saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec)
}

fn probe_start(connection_id: i64, capacity: usize) -> usize {
    (connection_id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) as usize % capacity
}

/// Runs `f` on the slot of `connection_id` of the current installation (created on first use)
/// under the lock. None when shared memory is absent (library not preloaded) or the table is
/// full.
fn with_slot<R>(connection_id: i64, f: impl FnOnce(&mut Slot) -> R) -> Option<R> {
    if !READY.load(Ordering::Acquire) || connection_id == 0 {
        return None;
    }
    // a backend may not have looked at the installation yet; a worker looks every round
    if unsafe { pg_sys::IsTransactionState() } {
        crate::installation::check();
    }
    let installation = crate::installation::id();
    unsafe {
        let cap = (*HEADER).capacity as usize;
        pg_sys::LWLockAcquire(LOCK, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let start = probe_start(connection_id, cap);
        let mut result = None;
        for i in 0..cap {
            let slot = &mut *SLOTS.add((start + i) % cap);
            let ours = slot.connection_id == connection_id && slot.installation == installation;
            if ours || slot.connection_id == 0 {
                if slot.connection_id == 0 {
                    *slot = Slot {
                        installation,
                        connection_id,
                        ..Default::default()
                    };
                }
                result = Some(f(slot));
                break;
            }
        }
        if result.is_none() {
            (*HEADER).overflowed += 1;
        }
        pg_sys::LWLockRelease(LOCK);
        result
    }
}

/// Drops the slots of every installation but `installation` (a dropped extension's), and puts
/// the rest back where a lookup finds them.
pub fn forget_other_installations(installation: u32) {
    if !READY.load(Ordering::Acquire) {
        return;
    }
    unsafe {
        let cap = (*HEADER).capacity as usize;
        pg_sys::LWLockAcquire(LOCK, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let mut kept = Vec::new();
        for i in 0..cap {
            let slot = &mut *SLOTS.add(i);
            if slot.connection_id != 0 && slot.installation == installation {
                kept.push(*slot);
            }
            *slot = Slot::default();
        }
        for s in kept {
            let start = probe_start(s.connection_id, cap);
            if let Some(free) = (0..cap)
                .map(|i| &mut *SLOTS.add((start + i) % cap))
                .find(|slot| slot.connection_id == 0)
            {
                *free = s;
            }
        }
        pg_sys::LWLockRelease(LOCK);
    }
}

/// Takes one request from the connection's budget. Err(ns): wait that long (the request was
/// not counted).
pub fn acquire(connection_id: i64, quota: Quota) -> Result<(), i64> {
    let now = now_ns();
    with_slot(connection_id, |s| {
        s.emission_ns = quota.emission_ns;
        s.burst = quota.burst;
        if s.blocked_until_ns > now {
            s.throttled += 1;
            return Err(s.blocked_until_ns - now);
        }
        let quota = s.effective_quota(now);
        match limits::gcra(&mut s.tat_ns, now, quota) {
            Ok(()) => {
                s.requests += 1;
                s.pushes_waiting_until_ns = 0;
                Ok(())
            }
            Err(wait) => {
                s.throttled += 1;
                Err(wait)
            }
        }
    })
    .unwrap_or(Ok(()))
}

/// The marketplace said slow down: nobody sends for this connection before its Retry-After
/// (1 s when it gave none), and after that it sends at the rate the marketplace was accepting
/// (limits::adapt_on_429).
pub fn penalize(connection_id: i64, retry_after: Option<std::time::Duration>) {
    let retry_after_ns = retry_after.map_or(1_000_000_000, |d| d.as_nanos().min(i64::MAX as u128) as i64);
    let now = now_ns();
    with_slot(connection_id, |s| {
        s.remote_throttled += 1;
        let current = s.effective_quota(now).emission_ns;
        let accepted = s.successes.last_second(now);
        s.adapted_ns = limits::adapt_on_429(current, s.quota().emission_ns, accepted);
        s.adapted_at_ns = now;
        s.blocked_until_ns = s.blocked_until_ns.max(now + retry_after_ns.max(0));
        // the budget restarts from empty after the pause, not from a full burst
        s.tat_ns = s.tat_ns.max(s.blocked_until_ns + s.emission_ns * (s.burst - 1).max(0));
    });
}

/// May a request go out now as far as the circuit is concerned?
pub fn circuit_admit(connection_id: i64, cooldown_ns: i64) -> (Admit, Option<Circuit>) {
    let now = now_ns();
    with_slot(connection_id, |s| {
        let mut b = s.breaker();
        let r = b.admit(now, cooldown_ns);
        s.set_breaker(b);
        r
    })
    .unwrap_or((Admit::Yes, None))
}

/// Records whether the marketplace answered (success: also counted for adapt_on_429) or failed
/// (5xx, timeout, network).
pub fn circuit_record(connection_id: i64, success: bool, threshold: u32) -> Option<Circuit> {
    let now = now_ns();
    with_slot(connection_id, |s| {
        if success {
            s.successes.record(now);
        }
        let mut b = s.breaker();
        let t = b.record(success, now, threshold);
        s.set_breaker(b);
        t
    })
    .flatten()
}

/// How many requests the connection may send right now, without taking any: Ok(n > 0), or
/// Err(ns until it may) when it is out of budget, paused by a 429, or behind an open circuit
/// (or a half-open one whose probe is out). None: not limited (no slot).
pub fn sendable_now(connection_id: i64, quota: Quota, cooldown_ns: i64) -> Option<Result<i64, i64>> {
    let now = now_ns();
    with_slot(connection_id, |s| {
        s.emission_ns = quota.emission_ns;
        s.burst = quota.burst;
        let quota = s.effective_quota(now);
        let circuit = Circuit::from_u8(s.circuit_state);
        let circuit_wait = match circuit {
            Circuit::Closed => 0,
            Circuit::Open => s.opened_at_ns + cooldown_ns - now,
            Circuit::HalfOpen if s.probe_in_flight => cooldown_ns.min(1_000_000_000),
            Circuit::HalfOpen => 0,
        };
        let wait = limits::wait_for_one(s.tat_ns, now, quota)
            .max(s.blocked_until_ns - now)
            .max(circuit_wait);
        if wait > 0 {
            return Err(wait);
        }
        let budget = limits::available(s.tat_ns, now, quota);
        // an open or half-open circuit lets exactly one probe through
        Ok(if circuit == Circuit::Closed {
            budget
        } else {
            budget.min(1)
        })
    })
}

/// Pushes of the connection are due but its budget is spent for `wait_ns`: until they take it
/// (or a second after it should have come), `acquire_spare` leaves it to them.
pub fn pushes_waiting(connection_id: i64, wait_ns: i64) {
    let until = now_ns().saturating_add(wait_ns.max(0)).saturating_add(1_000_000_000);
    with_slot(connection_id, |s| {
        s.pushes_waiting_until_ns = s.pushes_waiting_until_ns.max(until);
    });
}

/// One request from the connection's spare budget: refused (Err(ns) to wait) while pushes wait
/// for the budget, behind a 429 pause or an open circuit, or when it is spent. Ok(()) also
/// when the connection has no limiter slot.
pub fn acquire_spare(connection_id: i64, quota: Quota, cooldown_ns: i64) -> Result<(), i64> {
    let now = now_ns();
    let waiting = with_slot(connection_id, |s| s.pushes_waiting_until_ns - now).unwrap_or(0);
    if waiting > 0 {
        return Err(quota.emission_ns.min(waiting).max(1_000_000));
    }
    match sendable_now(connection_id, quota, cooldown_ns) {
        Some(Ok(n)) if n >= 1 => acquire(connection_id, quota),
        Some(Ok(_)) => Err(quota.emission_ns),
        Some(Err(wait)) => Err(wait),
        None => Ok(()),
    }
}

/// Gives back a half-open probe that was admitted but not sent.
pub fn cancel_probe(connection_id: i64) {
    with_slot(connection_id, |s| s.probe_in_flight = false);
}

/// A copy of every used slot (of every installation: see `Slot::installation`).
pub fn snapshot() -> Vec<Slot> {
    if !READY.load(Ordering::Acquire) {
        return Vec::new();
    }
    unsafe {
        let cap = (*HEADER).capacity as usize;
        pg_sys::LWLockAcquire(LOCK, pg_sys::LWLockMode::LW_SHARED);
        let out = (0..cap)
            .map(|i| *SLOTS.add(i))
            .filter(|s| s.connection_id != 0)
            .collect();
        pg_sys::LWLockRelease(LOCK);
        out
    }
}

/// (capacity, slots used, lookups refused because the table was full)
pub fn usage() -> (u64, u64, u64) {
    if !READY.load(Ordering::Acquire) {
        return (0, 0, 0);
    }
    let used = snapshot().len() as u64;
    unsafe { ((*HEADER).capacity, used, (*HEADER).overflowed) }
}
