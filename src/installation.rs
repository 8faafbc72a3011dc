//! Which installation of the extension (one `CREATE EXTENSION integration`) this process's
//! caches came from. Connection ids and credential generations start again at 1 when the
//! extension is dropped and created again, so anything cached by them (credentials, master
//! keys, limiter and circuit slots, a worker's pushes in flight) must also carry the
//! installation: the extension's oid, which a re-created extension never shares with the one
//! before it (oids come from one counter for the whole cluster).

use pgrx::prelude::*;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// The installation this process last saw (0: none yet, or not installed).
static SEEN: AtomicU32 = AtomicU32::new(0);
/// Set when a look finds another installation than an earlier one; see `take_change`.
static CHANGED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The local transaction that last looked: one look per transaction is enough.
    static LOOKED_IN: Cell<u32> = const { Cell::new(0) };
}

/// The installation this process last saw, for keys of shared state (0 before any look).
pub fn id() -> u32 {
    SEEN.load(Ordering::Acquire)
}

/// Whether some look since the last call found the extension dropped or created again (for a
/// worker, which then drops what it holds of the previous installation).
pub fn take_change() -> bool {
    CHANGED.swap(false, Ordering::AcqRel)
}

/// Looks at this database's installation (catalog access: inside a transaction, on a main
/// thread). When it is not the one this process's caches came from, every per-process cache
/// and the shared slots of other installations are dropped.
pub fn check() {
    let lxid = unsafe { pg_sys::MyProc.as_ref().map_or(0, |p| p.lxid) };
    if lxid != 0 && LOOKED_IN.with(Cell::get) == lxid {
        return;
    }
    LOOKED_IN.with(|c| c.set(lxid));
    let now = unsafe { pg_sys::get_extension_oid(c"integration".as_ptr(), true) }.to_u32();
    let before = SEEN.swap(now, Ordering::AcqRel);
    if before == now {
        return;
    }
    crate::credentials::forget_cached();
    crate::keys::forget_loaded();
    if before != 0 {
        crate::shmem::limiter::forget_other_installations(now);
        CHANGED.store(true, Ordering::Release);
    }
}
