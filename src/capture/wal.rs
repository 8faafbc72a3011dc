//! Reading the stock messages back out of the WAL, in the capture worker.
//!
//! A plain WAL reader, not logical decoding: PostgreSQL's page reader for the local WAL (the
//! callbacks pg_walinspect uses), and `walk` to find the records. Only logical messages and
//! transaction commit/abort records are copied and looked at, so the application's own row
//! changes cost a record header each. A physical replication slot keeps the WAL from the
//! oldest undecided message on.

use super::message::{Collector, Kind, PREFIX, PRICE_PREFIX};
use super::walk::{self, PageSource, Record, Walk};
use pgrx::pg_sys;
use pgrx::PgTryBuilder;
use std::ffi::{c_char, c_int};

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

// the walk's view of PostgreSQL's WAL format, checked against PostgreSQL 15's
const _: () = {
    assert!(walk::PAGE_SIZE == pg_sys::XLOG_BLCKSZ as usize);
    assert!(walk::PAGE_MAGIC as u32 == pg_sys::XLOG_PAGE_MAGIC);
    assert!(walk::FIRST_IS_CONTRECORD as u32 == pg_sys::XLP_FIRST_IS_CONTRECORD);
    assert!(walk::LONG_HEADER as u32 == pg_sys::XLP_LONG_HEADER);
    assert!(walk::FIRST_IS_OVERWRITE_CONTRECORD as u32 == pg_sys::XLP_FIRST_IS_OVERWRITE_CONTRECORD);
    assert!(walk::RECORD_HEADER == std::mem::size_of::<pg_sys::XLogRecord>());
    assert!(std::mem::size_of::<pg_sys::XLogPageHeaderData>() == 24);
    assert!(std::mem::size_of::<pg_sys::XLogLongPageHeaderData>() == 40);
};

pub struct WalReader {
    pages: LocalPages,
    walk: Walk,
}

/// Pages of the local WAL, up to where it is flushed: PostgreSQL's reader, for its page
/// reading (segments, timelines) and for finding the first record.
struct LocalPages {
    state: *mut pg_sys::XLogReaderState,
    /// Set by the page reader when it reaches the end of flushed WAL.
    end_of_wal: *mut pg_sys::ReadLocalXLogPageNoWaitPrivate,
}

impl LocalPages {
    fn allocate() -> Result<LocalPages, String> {
        let pages = in_top_context(|| unsafe {
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
            LocalPages { state, end_of_wal }
        })?;
        if pages.state.is_null() {
            return Err("out of memory allocating a WAL reader".into());
        }
        Ok(pages)
    }
}

impl Drop for LocalPages {
    fn drop(&mut self) {
        unsafe {
            if !self.state.is_null() {
                pg_sys::XLogReaderFree(self.state);
            }
            pg_sys::pfree(self.end_of_wal.cast());
        }
    }
}

/// The records the capture looks at: logical messages, and commits and aborts.
fn wanted(rmid: u8) -> bool {
    rmid as u32 == pg_sys::RmgrIds::RM_LOGICALMSG_ID || rmid as u32 == pg_sys::RmgrIds::RM_XACT_ID
}

impl PageSource for LocalPages {
    fn read_page(
        &mut self,
        page_start: u64,
        needed: usize,
        page: &mut [u8; walk::PAGE_SIZE],
    ) -> Result<Option<usize>, String> {
        let (state, end_of_wal) = (self.state, self.end_of_wal);
        // raises an ERROR on a read failure: caught by `read`'s in_top_context
        let valid = unsafe {
            pg_sys::ffi::pg_guard_ffi_boundary(|| {
                (*end_of_wal).end_of_wal = false;
                read_local_xlog_page_no_wait(state, page_start, needed as c_int, page_start, page.as_mut_ptr().cast())
            })
        };
        Ok((valid >= 0).then_some(valid as usize))
    }
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
        let pages = LocalPages::allocate()?;
        let first = in_top_context(|| unsafe { pg_sys::XLogFindNextRecord(pages.state, start) })?;
        if first == 0 {
            return Err(format!("no WAL record found at or after {}", lsn_text(start)));
        }
        let walk = Walk::new(first, unsafe { pg_sys::wal_segment_size } as u64);
        Ok(WalReader { pages, walk })
    }

    pub fn position(&self) -> u64 {
        self.walk.position()
    }

    /// Reads from where the last read stopped to the end of flushed WAL, or until `collector`
    /// holds changes of `max_products` products; counts the changes whose commit was read.
    pub fn read(&mut self, collector: &mut Collector, max_products: usize) -> Result<Read, String> {
        let (pages, walk) = (&mut self.pages, &mut self.walk);
        let my_db = unsafe { pg_sys::MyDatabaseId };
        in_top_context(move || {
            let mut changes = 0usize;
            loop {
                let at = walk.position();
                let record = walk
                    .next_record(pages, wanted)
                    .map_err(|e| format!("reading WAL at {}: {e}", lsn_text(at)))?;
                let Some(record) = record else {
                    return Ok(Read { changes, more: false });
                };
                unsafe { on_record(&record, my_db, collector, &mut changes) };
                if collector.products_held() >= max_products {
                    return Ok(Read { changes, more: true });
                }
            }
        })?
    }
}

/// One record: a message of ours is kept under its (sub)transaction; a commit hands over the
/// messages of the transaction and its committed subtransactions; an abort drops them.
unsafe fn on_record(record: &Record, my_db: pg_sys::Oid, collector: &mut Collector, changes: &mut usize) {
    let (lsn, data, xl_xid) = (record.lsn, record.main_data, record.xid);
    match record.rmid as u32 {
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
                    collector.message(xl_xid, lsn, Kind::Stock, content);
                } else if prefix == Some(PRICE_PREFIX.to_bytes_with_nul()) {
                    collector.message(xl_xid, lsn, Kind::Price, content);
                }
            }
        }
        pg_sys::RmgrIds::RM_XACT_ID => {
            if data.is_empty() {
                return;
            }
            let info = record.info;
            match info as u32 & pg_sys::XLOG_XACT_OPMASK {
                op @ (pg_sys::XLOG_XACT_COMMIT | pg_sys::XLOG_XACT_COMMIT_PREPARED) => {
                    let mut parsed = pg_sys::xl_xact_parsed_commit::default();
                    pg_sys::ParseCommitRecord(info, data.as_ptr() as *mut _, &mut parsed);
                    let xid = if op == pg_sys::XLOG_XACT_COMMIT_PREPARED {
                        parsed.twophase_xid.into_inner()
                    } else {
                        xl_xid
                    };
                    let subxids = xids(parsed.subxacts, parsed.nsubxacts);
                    *changes += collector.commit(xid, subxids, lsn, parsed.xact_time);
                }
                op @ (pg_sys::XLOG_XACT_ABORT | pg_sys::XLOG_XACT_ABORT_PREPARED) => {
                    let mut parsed = pg_sys::xl_xact_parsed_abort::default();
                    pg_sys::ParseAbortRecord(info, data.as_ptr() as *mut _, &mut parsed);
                    let xid = if op == pg_sys::XLOG_XACT_ABORT_PREPARED {
                        parsed.twophase_xid.into_inner()
                    } else {
                        xl_xid
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

/// (lsn, next record's lsn, rmid, xid, info, main data of a wanted record) of each record.
#[cfg(any(test, feature = "pg_test"))]
pub type Seen = (u64, u64, u8, u32, u8, Vec<u8>);

/// Every record from the first at or after `start` to the end of flushed WAL, found by the
/// walk and by PostgreSQL's own reader, for tests to compare.
#[cfg(any(test, feature = "pg_test"))]
pub fn records_both_ways(start: u64) -> Result<(Vec<Seen>, Vec<Seen>), String> {
    let mut ours = Vec::new();
    let mut reader = WalReader::open(start)?;
    let first = reader.position();
    while let Some(r) = reader.walk.next_record(&mut reader.pages, wanted)? {
        let (lsn, rmid, xid, info, data) = (r.lsn, r.rmid, r.xid, r.info, r.main_data.to_vec());
        ours.push((lsn, reader.walk.position(), rmid, xid, info, data));
    }
    let theirs = in_top_context(|| unsafe {
        let state = reader.pages.state;
        (*reader.pages.end_of_wal).end_of_wal = false;
        pg_sys::XLogBeginRead(state, first);
        let mut theirs = Vec::new();
        loop {
            let mut error: *mut c_char = std::ptr::null_mut();
            if pg_sys::XLogReadRecord(state, &mut error).is_null() {
                return theirs;
            }
            let d = (*state).record;
            let h = &(*d).header;
            let data = if wanted(h.xl_rmid) && !(*d).main_data.is_null() {
                std::slice::from_raw_parts((*d).main_data as *const u8, (*d).main_data_len as usize).to_vec()
            } else {
                Vec::new()
            };
            let (lsn, next) = ((*state).ReadRecPtr, (*state).EndRecPtr);
            theirs.push((lsn, next, h.xl_rmid, h.xl_xid.into_inner(), h.xl_info, data));
        }
    })?;
    Ok((ours, theirs))
}
