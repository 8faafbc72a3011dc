//! Reading the stock messages back out of the WAL, in the capture worker.
//!
//! A plain WAL reader (PostgreSQL's `XLogReader` over the local WAL, not logical decoding):
//! only logical messages and transaction commit/abort records are looked at, so the
//! application's own row changes cost a record header each, not a decoding pass. A physical
//! replication slot keeps the WAL from the oldest undecided message on.

use super::message::{Collector, Kind, PREFIX, PRICE_PREFIX};
use pgrx::pg_sys;
use pgrx::PgTryBuilder;
use std::ffi::{c_char, c_int, CStr};

unsafe extern "C-unwind" {
    // access/xlogutils.h: the same callbacks pg_walinspect uses; passed as function pointers,
    // so declared here rather than through pgrx's guarded wrappers.
    fn read_local_xlog_page_no_wait(
        state: *mut pg_sys::XLogReaderState,
        target_page: pg_sys::XLogRecPtr,
        req_len: c_int,
        target_rec: pg_sys::XLogRecPtr,
        cur_page: *mut c_char,
    ) -> c_int;
    fn wal_segment_open(state: *mut pg_sys::XLogReaderState, next_seg: pg_sys::XLogSegNo, tli: *mut pg_sys::TimeLineID);
    fn wal_segment_close(state: *mut pg_sys::XLogReaderState);
}

/// `xl_logical_message` (replication/message.h): dbId, transactional, prefix_size, message_size.
const LOGICAL_MESSAGE_HEADER: usize = 24;

pub struct WalReader {
    state: *mut pg_sys::XLogReaderState,
    /// Set by the page reader when it reaches the end of flushed WAL.
    end_of_wal: *mut pg_sys::ReadLocalXLogPageNoWaitPrivate,
    /// Start of the next record to read.
    next: u64,
}

/// What one read found (the changes themselves wait in the collector).
pub struct Read {
    /// Changes committed (stock and price, each counted).
    pub changes: usize,
    /// Reading stopped at `max_products`, with more WAL behind.
    pub more: bool,
}

impl WalReader {
    /// A reader starting at the first record at or after `start`.
    pub fn open(start: u64) -> Result<WalReader, String> {
        let mut reader = in_top_context(|| unsafe {
            let end_of_wal = pg_sys::palloc0(std::mem::size_of::<pg_sys::ReadLocalXLogPageNoWaitPrivate>())
                as *mut pg_sys::ReadLocalXLogPageNoWaitPrivate;
            let mut routine = pg_sys::XLogReaderRoutine {
                page_read: Some(read_local_xlog_page_no_wait),
                segment_open: Some(wal_segment_open),
                segment_close: Some(wal_segment_close),
            };
            let state = pg_sys::XLogReaderAllocate(
                pg_sys::wal_segment_size,
                std::ptr::null(),
                &mut routine,
                end_of_wal.cast(),
            );
            WalReader {
                state,
                end_of_wal,
                next: 0,
            }
        })?;
        if reader.state.is_null() {
            return Err("out of memory allocating a WAL reader".into());
        }
        let first = in_top_context(|| unsafe { pg_sys::XLogFindNextRecord(reader.state, start) })?;
        if first == 0 {
            return Err(format!("no WAL record found at or after {}", lsn_text(start)));
        }
        reader.next = first;
        Ok(reader)
    }

    pub fn position(&self) -> u64 {
        self.next
    }

    /// Reads from where the last read stopped to the end of flushed WAL, or until `collector`
    /// holds changes of `max_products` products; counts the changes whose commit was read.
    pub fn read(&mut self, collector: &mut Collector, max_products: usize) -> Result<Read, String> {
        let state = self.state;
        let end_of_wal = self.end_of_wal;
        let start = self.next;
        let my_db = unsafe { pg_sys::MyDatabaseId };
        let (changes, next, more) = in_top_context(move || unsafe {
            (*end_of_wal).end_of_wal = false;
            pg_sys::XLogBeginRead(state, start);
            let mut next = start;
            let mut changes = 0usize;
            loop {
                let mut error: *mut c_char = std::ptr::null_mut();
                let record = pg_sys::XLogReadRecord(state, &mut error);
                if record.is_null() {
                    if !(*end_of_wal).end_of_wal && !error.is_null() {
                        let text = CStr::from_ptr(error).to_string_lossy().into_owned();
                        return Err(format!("reading WAL at {}: {text}", lsn_text(next)));
                    }
                    return Ok((changes, next, false));
                }
                on_record(state, my_db, collector, &mut changes);
                next = (*state).EndRecPtr;
                if collector.products_held() >= max_products {
                    return Ok((changes, next, true));
                }
            }
        })??;
        self.next = next;
        Ok(Read { changes, more })
    }
}

impl Drop for WalReader {
    fn drop(&mut self) {
        unsafe {
            if !self.state.is_null() {
                pg_sys::XLogReaderFree(self.state);
            }
            pg_sys::pfree(self.end_of_wal.cast());
        }
    }
}

/// One record: a message of ours is kept under its (sub)transaction; a commit hands over the
/// messages of the transaction and its committed subtransactions; an abort drops them.
unsafe fn on_record(
    state: *mut pg_sys::XLogReaderState,
    my_db: pg_sys::Oid,
    collector: &mut Collector,
    changes: &mut usize,
) {
    let decoded = (*state).record;
    if decoded.is_null() {
        return;
    }
    let header = &(*decoded).header;
    let lsn = (*state).ReadRecPtr;
    let data: &[u8] = if (*decoded).main_data.is_null() {
        &[]
    } else {
        std::slice::from_raw_parts((*decoded).main_data as *const u8, (*decoded).main_data_len as usize)
    };
    match header.xl_rmid as u32 {
        pg_sys::RmgrIds::RM_LOGICALMSG_ID => {
            if data.len() < LOGICAL_MESSAGE_HEADER {
                return;
            }
            let word = |at: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&data[at..at + 8]);
                usize::from_ne_bytes(b)
            };
            let db = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]);
            let transactional = data[4] != 0;
            let (prefix_size, message_size) = (word(8), word(16));
            let prefix_end = LOGICAL_MESSAGE_HEADER.saturating_add(prefix_size);
            let Some(content) = data.get(prefix_end..prefix_end.saturating_add(message_size)) else {
                return;
            };
            if db == my_db.to_u32() && transactional {
                let prefix = data.get(LOGICAL_MESSAGE_HEADER..prefix_end);
                if prefix == Some(PREFIX.to_bytes_with_nul()) {
                    collector.message(header.xl_xid.into_inner(), lsn, Kind::Stock, content);
                } else if prefix == Some(PRICE_PREFIX.to_bytes_with_nul()) {
                    collector.message(header.xl_xid.into_inner(), lsn, Kind::Price, content);
                }
            }
        }
        pg_sys::RmgrIds::RM_XACT_ID => {
            let info = header.xl_info;
            match info as u32 & pg_sys::XLOG_XACT_OPMASK {
                op @ (pg_sys::XLOG_XACT_COMMIT | pg_sys::XLOG_XACT_COMMIT_PREPARED) => {
                    let mut parsed = pg_sys::xl_xact_parsed_commit::default();
                    pg_sys::ParseCommitRecord(info, (*decoded).main_data.cast(), &mut parsed);
                    let xid = if op == pg_sys::XLOG_XACT_COMMIT_PREPARED {
                        parsed.twophase_xid.into_inner()
                    } else {
                        header.xl_xid.into_inner()
                    };
                    let subxids = xids(parsed.subxacts, parsed.nsubxacts);
                    *changes += collector.commit(xid, subxids, lsn, parsed.xact_time);
                }
                op @ (pg_sys::XLOG_XACT_ABORT | pg_sys::XLOG_XACT_ABORT_PREPARED) => {
                    let mut parsed = pg_sys::xl_xact_parsed_abort::default();
                    pg_sys::ParseAbortRecord(info, (*decoded).main_data.cast(), &mut parsed);
                    let xid = if op == pg_sys::XLOG_XACT_ABORT_PREPARED {
                        parsed.twophase_xid.into_inner()
                    } else {
                        header.xl_xid.into_inner()
                    };
                    collector.abort(xid, xids(parsed.subxacts, parsed.nsubxacts));
                }
                _ => {}
            }
        }
        _ => {}
    }
}

unsafe fn xids<'a>(p: *const pg_sys::TransactionId, n: c_int) -> &'a [u32] {
    if p.is_null() || n <= 0 {
        return &[];
    }
    std::slice::from_raw_parts(p.cast::<u32>(), n as usize)
}

pub fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// Runs `f` with TopMemoryContext current: the reader and the records it decodes live across
/// transactions. An ERROR raised inside comes back as Err.
fn in_top_context<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    unsafe {
        let old = pg_sys::MemoryContextSwitchTo(pg_sys::TopMemoryContext);
        let result = PgTryBuilder::new(std::panic::AssertUnwindSafe(move || Ok(f())))
            .catch_others(|e| Err(crate::spi_util::caught_message(&e)))
            .execute();
        pg_sys::MemoryContextSwitchTo(old);
        if result.is_err() {
            // the error is handled here; PostgreSQL's error state must be cleared
            pg_sys::FlushErrorState();
        }
        result
    }
}
