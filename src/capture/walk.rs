//! Walking WAL records by their headers. PostgreSQL's reader checks the CRC of and decodes
//! every record; the capture wants about one record in six (our messages, commits, aborts)
//! and reading the rest cost most of its time. This walk reads the same pages, follows each
//! record's length across page boundaries (checking each continuation page's address, flag
//! and remaining length, as PostgreSQL's reader does), and copies only the records asked for.
//! Plain Rust: the pages come from a `PageSource`.

use super::wal::lsn_text;

/// XLOG_BLCKSZ and XLOG_PAGE_MAGIC (checked against PostgreSQL's in wal.rs).
pub const PAGE_SIZE: usize = 8192;
pub const PAGE_MAGIC: u16 = 0xD110;
/// MAXALIGN'd sizes of XLogPageHeaderData, XLogLongPageHeaderData and XLogRecord.
const SHORT_PAGE_HEADER: usize = 24;
const LONG_PAGE_HEADER: usize = 40;
pub const RECORD_HEADER: usize = 24;
// xlp_info flags (access/xlog_internal.h)
pub const FIRST_IS_CONTRECORD: u16 = 0x0001;
pub const LONG_HEADER: u16 = 0x0002;
pub const FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
/// Resource manager RM_XLOG_ID and its XLOG_SWITCH record: the rest of the segment is unused.
const RM_XLOG: u8 = 0;
const XLOG_SWITCH: u8 = 0x40;
const INFO_MASK: u8 = 0x0F;
// block ids of a record's headers (access/xlogrecord.h)
const MAX_BLOCK_ID: u8 = 32;
const DATA_SHORT: u8 = 255;
const DATA_LONG: u8 = 254;
const ORIGIN: u8 = 253;
const TOPLEVEL_XID: u8 = 252;

/// The largest record buffer kept for the next record.
const KEPT_CAPACITY: usize = 1 << 20;

/// Where the pages come from.
pub trait PageSource {
    /// Reads the page starting at `page_start` into `page`, when at least its first `needed`
    /// bytes are flushed; returns how many of its bytes are (Ok(None): not yet).
    fn read_page(
        &mut self,
        page_start: u64,
        needed: usize,
        page: &mut [u8; PAGE_SIZE],
    ) -> Result<Option<usize>, String>;
}

/// A record found: its header fields, and its main data when its resource manager was asked for.
pub struct Record<'a> {
    pub lsn: u64,
    pub xid: u32,
    pub info: u8,
    pub rmid: u8,
    pub main_data: &'a [u8],
}

pub struct Walk {
    segment_size: u64,
    page: Box<[u8; PAGE_SIZE]>,
    /// Start of the page in `page` (u64::MAX: none), and how many of its bytes are valid.
    page_start: u64,
    page_valid: usize,
    /// The record asked for, whole (header included); reused.
    record: Vec<u8>,
    /// Its main data, copied to 8-byte aligned memory (PostgreSQL's parsers read structs in place).
    main_data: Vec<u64>,
    next: u64,
}

fn word<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

fn max_align(n: u64) -> u64 {
    (n + 7) & !7
}

impl Walk {
    /// A walk from `start`, the start of a record (or of a page).
    pub fn new(start: u64, segment_size: u64) -> Walk {
        Walk {
            segment_size,
            page: Box::new([0; PAGE_SIZE]),
            page_start: u64::MAX,
            page_valid: 0,
            record: Vec::new(),
            main_data: Vec::new(),
            next: start,
        }
    }

    /// Start of the next record.
    pub fn position(&self) -> u64 {
        self.next
    }

    fn page_header_size(&self, page_start: u64) -> usize {
        if page_start.is_multiple_of(self.segment_size) {
            LONG_PAGE_HEADER
        } else {
            SHORT_PAGE_HEADER
        }
    }

    /// Makes the page at `page_start` current with at least `needed` valid bytes; false when
    /// they are not flushed yet. Checks the page's header.
    fn load(&mut self, source: &mut impl PageSource, page_start: u64, needed: usize) -> Result<bool, String> {
        if self.page_start == page_start && self.page_valid >= needed {
            return Ok(true);
        }
        // the buffer no longer holds the page it held, whatever comes back
        self.page_start = u64::MAX;
        let Some(valid) = source.read_page(page_start, needed, &mut self.page)? else {
            return Ok(false);
        };
        if valid < needed.max(self.page_header_size(page_start)) {
            return Ok(false);
        }
        let magic = u16::from_ne_bytes(word(&self.page[..], 0));
        let address = u64::from_ne_bytes(word(&self.page[..], 8));
        if magic != PAGE_MAGIC || address != page_start {
            return Err(format!(
                "WAL page at {} is not the page expected (magic {magic:#x}, address {})",
                lsn_text(page_start),
                lsn_text(address)
            ));
        }
        self.page_start = page_start;
        self.page_valid = valid;
        Ok(true)
    }

    fn page_info(&self) -> (u16, u32) {
        (
            u16::from_ne_bytes(word(&self.page[..], 2)),
            u32::from_ne_bytes(word(&self.page[..], 16)),
        )
    }

    /// The next record, its main data only when `wanted(rmid)`; Ok(None) when it is not all
    /// flushed yet (the position stays at its start).
    pub fn next_record(
        &mut self,
        source: &mut impl PageSource,
        wanted: impl Fn(u8) -> bool,
    ) -> Result<Option<Record<'_>>, String> {
        'restart: loop {
            let mut at = self.next;
            let page_size = PAGE_SIZE as u64;
            if at.is_multiple_of(page_size) {
                // a page start: the record starts after the page's header
                let header = self.page_header_size(at);
                if !self.load(source, at, header)? {
                    return Ok(None);
                }
                let (info, remaining) = self.page_info();
                if info & FIRST_IS_CONTRECORD != 0 && remaining > 0 {
                    return Err(format!(
                        "WAL at {} continues a record where one should start",
                        lsn_text(at)
                    ));
                }
                at += header as u64;
            }
            let lsn = at;
            // a record starts 8-aligned, so its length (4 bytes) is on this page
            let page_start = at - at % page_size;
            let offset = (at - page_start) as usize;
            if !self.load(source, page_start, offset + 4)? {
                return Ok(None);
            }
            let total = u32::from_ne_bytes(word(&self.page[..], offset)) as usize;
            if total < RECORD_HEADER {
                return Err(format!("invalid WAL record length {total} at {}", lsn_text(lsn)));
            }
            // the header (which may cross a page), then the rest, kept or skipped
            if self.record.capacity() > KEPT_CAPACITY {
                // a huge record's buffers are let go
                (self.record, self.main_data) = (Vec::new(), Vec::new());
            }
            self.record.clear();
            let mut state = Span {
                at,
                left_in_record: total,
            };
            let end = match self.span(source, &mut state, RECORD_HEADER, true)? {
                SpanEnd::Done => {
                    let keep = wanted(self.record[17]);
                    self.span(source, &mut state, total - RECORD_HEADER, keep)?
                }
                cut => cut,
            };
            match end {
                SpanEnd::Done => {}
                SpanEnd::NotFlushed => return Ok(None),
                SpanEnd::Overwritten(page) => {
                    self.next = page;
                    continue 'restart;
                }
            }
            let (info, rmid) = (self.record[16], self.record[17]);
            let keep = wanted(rmid);
            let mut next = max_align(state.at);
            if rmid == RM_XLOG && info & !INFO_MASK == XLOG_SWITCH {
                next = next.div_ceil(self.segment_size) * self.segment_size;
            }
            self.next = next;
            let xid = u32::from_ne_bytes(word(&self.record, 4));
            let main_data = if keep { self.main_data(lsn)? } else { &[] };
            return Ok(Some(Record {
                lsn,
                xid,
                info,
                rmid,
                main_data,
            }));
        }
    }

    /// Walks `len` bytes of the current record from `state.at`, appending them to `record`
    /// when `keep`; crossing into a page checks that it continues this record.
    fn span(
        &mut self,
        source: &mut impl PageSource,
        state: &mut Span,
        mut len: usize,
        keep: bool,
    ) -> Result<SpanEnd, String> {
        let page_size = PAGE_SIZE as u64;
        while len > 0 {
            let page_start = state.at - state.at % page_size;
            let mut offset = (state.at - page_start) as usize;
            if offset == 0 {
                let header = self.page_header_size(page_start);
                if !self.load(source, page_start, header)? {
                    return Ok(SpanEnd::NotFlushed);
                }
                let (info, remaining) = self.page_info();
                if info & FIRST_IS_CONTRECORD == 0 {
                    if info & FIRST_IS_OVERWRITE_CONTRECORD != 0 {
                        // the record was cut short by a crash and never finished
                        return Ok(SpanEnd::Overwritten(page_start));
                    }
                    return Err(format!(
                        "WAL page at {} does not continue the record before it",
                        lsn_text(page_start)
                    ));
                }
                if remaining as usize != state.left_in_record {
                    return Err(format!(
                        "WAL page at {} continues a record with {remaining} bytes left, expected {}",
                        lsn_text(page_start),
                        state.left_in_record
                    ));
                }
                offset = header;
            }
            let here = len.min(PAGE_SIZE - offset);
            if !self.load(source, page_start, offset + here)? {
                return Ok(SpanEnd::NotFlushed);
            }
            if keep {
                self.record.extend_from_slice(&self.page[offset..offset + here]);
            }
            len -= here;
            state.left_in_record -= here;
            state.at = page_start + (offset + here) as u64;
        }
        Ok(SpanEnd::Done)
    }

    /// The main data of the record in `record`: the headers after the record header name
    /// its length, and it is the record's last bytes. Our records carry no block references.
    fn main_data(&mut self, lsn: u64) -> Result<&[u8], String> {
        let r = &self.record;
        let bad = |what: &str| format!("WAL record at {}: {what}", lsn_text(lsn));
        let mut at = RECORD_HEADER;
        let mut len = 0usize;
        while at < r.len() {
            match r[at] {
                DATA_SHORT => {
                    len = *r.get(at + 1).ok_or_else(|| bad("truncated data header"))? as usize;
                    break;
                }
                DATA_LONG => {
                    let b = r.get(at + 1..at + 5).ok_or_else(|| bad("truncated data header"))?;
                    len = u32::from_ne_bytes(word(b, 0)) as usize;
                    break;
                }
                ORIGIN => at += 3,
                TOPLEVEL_XID => at += 5,
                id if id <= MAX_BLOCK_ID => return Err(bad("unexpected block reference")),
                id => return Err(bad(&format!("invalid block id {id}"))),
            }
        }
        let data = r
            .get(r.len().saturating_sub(len)..)
            .filter(|_| len <= r.len() - RECORD_HEADER);
        let data = data.ok_or_else(|| bad("main data longer than the record"))?;
        self.main_data.clear();
        self.main_data.resize(len.div_ceil(8), 0);
        // SAFETY: the u64 buffer holds at least `len` bytes
        let aligned = unsafe { std::slice::from_raw_parts_mut(self.main_data.as_mut_ptr().cast::<u8>(), len) };
        aligned.copy_from_slice(data);
        Ok(aligned)
    }
}

struct Span {
    at: u64,
    left_in_record: usize,
}

enum SpanEnd {
    Done,
    NotFlushed,
    /// The record was never finished: reading restarts at this page.
    Overwritten(u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEGMENT: u64 = 4 * PAGE_SIZE as u64;

    /// WAL laid out as PostgreSQL writes it: page headers, records 8-aligned and continued
    /// across pages. `flushed` bounds what the source hands out.
    struct Wal {
        bytes: Vec<u8>,
        flushed: usize,
        reads: usize,
    }

    impl Wal {
        /// All of `bytes`, flushed.
        fn flushed(bytes: Vec<u8>) -> Wal {
            let flushed = bytes.len();
            Wal {
                bytes,
                flushed,
                reads: 0,
            }
        }
    }

    impl PageSource for Wal {
        fn read_page(
            &mut self,
            page_start: u64,
            needed: usize,
            page: &mut [u8; PAGE_SIZE],
        ) -> Result<Option<usize>, String> {
            self.reads += 1;
            let start = page_start as usize;
            // what it has goes into the buffer even when that is not enough (a source may)
            let end = (start + PAGE_SIZE).min(self.bytes.len());
            page[..end - start].copy_from_slice(&self.bytes[start..end]);
            if start + needed > self.flushed {
                return Ok(None);
            }
            Ok(Some((self.flushed - start).min(PAGE_SIZE)))
        }
    }

    /// (rmid, info, xid, main data, filler before it) of a record.
    type Spec = (u8, u8, u32, Vec<u8>, usize);

    fn record_bytes((rmid, info, xid, main, filler): &Spec) -> Vec<u8> {
        let data_header = if main.len() <= 255 { 2 } else { 5 };
        // our records carry no blocks: filler stands for another record's block data, so
        // it only goes into records that are not asked for
        let total = RECORD_HEADER + filler + data_header + main.len();
        let mut r = Vec::with_capacity(total);
        r.extend_from_slice(&(total as u32).to_ne_bytes());
        r.extend_from_slice(&xid.to_ne_bytes());
        r.extend_from_slice(&0u64.to_ne_bytes());
        r.extend_from_slice(&[*info, *rmid, 0, 0, 0, 0, 0, 0]);
        if main.len() <= 255 {
            r.extend_from_slice(&[DATA_SHORT, main.len() as u8]);
        } else {
            r.push(DATA_LONG);
            r.extend_from_slice(&(main.len() as u32).to_ne_bytes());
        }
        r.extend(std::iter::repeat_n(0xAB, *filler));
        r.extend_from_slice(main);
        r
    }

    fn page_header(wal: &mut Vec<u8>, info: u16, remaining: u32) {
        let start = wal.len() as u64;
        let long = start.is_multiple_of(SEGMENT);
        let mut h = Vec::new();
        h.extend_from_slice(&PAGE_MAGIC.to_ne_bytes());
        h.extend_from_slice(&(info | if long { LONG_HEADER } else { 0 }).to_ne_bytes());
        h.extend_from_slice(&1u32.to_ne_bytes());
        h.extend_from_slice(&start.to_ne_bytes());
        h.extend_from_slice(&remaining.to_ne_bytes());
        h.resize(if long { LONG_PAGE_HEADER } else { SHORT_PAGE_HEADER }, 0);
        wal.extend_from_slice(&h);
    }

    /// Writes `records` from the start of a segment; returns the WAL and each record's LSN.
    fn write(records: &[Spec]) -> (Vec<u8>, Vec<u64>) {
        let mut wal = Vec::new();
        let mut lsns = Vec::new();
        page_header(&mut wal, 0, 0);
        for spec in records {
            let bytes = record_bytes(spec);
            wal.resize(max_align(wal.len() as u64) as usize, 0);
            if wal.len() % PAGE_SIZE == 0 {
                page_header(&mut wal, 0, 0);
            }
            lsns.push(wal.len() as u64);
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                if wal.len() % PAGE_SIZE == 0 {
                    page_header(&mut wal, FIRST_IS_CONTRECORD, rest.len() as u32);
                }
                let room = PAGE_SIZE - wal.len() % PAGE_SIZE;
                let here = rest.len().min(room);
                wal.extend_from_slice(&rest[..here]);
                rest = &rest[here..];
            }
            if spec.0 == RM_XLOG && spec.1 == XLOG_SWITCH {
                wal.resize(
                    max_align(wal.len() as u64).div_ceil(SEGMENT) as usize * SEGMENT as usize,
                    0,
                );
            }
        }
        (wal, lsns)
    }

    const MESSAGE: u8 = 21;
    const HEAP: u8 = 10;

    fn walk_all(wal: &mut Wal, walk: &mut Walk) -> Vec<(u64, u8, u32, Vec<u8>)> {
        let mut got = Vec::new();
        while let Some(r) = walk.next_record(wal, |rmid| rmid == MESSAGE).unwrap() {
            got.push((r.lsn, r.rmid, r.xid, r.main_data.to_vec()));
        }
        got
    }

    fn mixed() -> Vec<Spec> {
        let mut specs = Vec::new();
        for i in 0..400u32 {
            let main: Vec<u8> = (0..(i * 37 % 300)).map(|b| (b + i) as u8).collect();
            specs.push((MESSAGE, 0, i, main, 0));
            // other records: small, page-sized, several pages long (a full-page image)
            let filler = [3usize, 60, 8000, 20000][(i % 4) as usize];
            specs.push((HEAP, 0, i, vec![1, 2, 3], filler + (i as usize % 13)));
        }
        specs
    }

    #[test]
    fn every_record_is_found_and_only_the_wanted_ones_are_kept() {
        let specs = mixed();
        let (bytes, lsns) = write(&specs);
        let mut wal = Wal::flushed(bytes);
        let mut walk = Walk::new(lsns[0], SEGMENT);
        let got = walk_all(&mut wal, &mut walk);
        assert_eq!(got.len(), specs.len());
        for ((lsn, rmid, xid, main), (spec, want_lsn)) in got.iter().zip(specs.iter().zip(&lsns)) {
            assert_eq!((*lsn, *rmid, *xid), (*want_lsn, spec.0, spec.2));
            let want: &[u8] = if spec.0 == MESSAGE { &spec.3 } else { &[] };
            assert_eq!(main.as_slice(), want, "record at {lsn}");
        }
        assert!(
            (got.iter().filter(|r| r.3.len() > 255).count()) > 0,
            "long main data covered"
        );
        // every page read about once, however the records fall
        assert!(wal.reads < wal.bytes.len() / PAGE_SIZE * 2, "{} reads", wal.reads);
    }

    #[test]
    fn a_record_not_all_flushed_waits_at_its_start() {
        let specs = mixed();
        let (bytes, lsns) = write(&specs);
        let full = bytes.len();
        // a record crossing into a page whose header is not all flushed
        let crossing = lsns
            .windows(2)
            .find(|w| w[0] / PAGE_SIZE as u64 != w[1] / PAGE_SIZE as u64)
            .unwrap();
        let page_header_cut = (crossing[0] as usize / PAGE_SIZE + 1) * PAGE_SIZE + 10;
        // cut in the middle of a record crossing pages, and of a header
        for cut in [
            lsns[7] as usize + 9000,
            lsns[100] as usize + 10,
            page_header_cut,
            full - 5,
        ] {
            let mut wal = Wal {
                bytes: bytes.clone(),
                flushed: cut,
                reads: 0,
            };
            let mut walk = Walk::new(lsns[0], SEGMENT);
            let first = walk_all(&mut wal, &mut walk);
            let stopped = walk.position();
            assert!(
                lsns.contains(&stopped) && stopped as usize <= cut,
                "stops at a record start"
            );
            assert!(first.iter().all(|r| r.0 < stopped));
            wal.flushed = full;
            let rest = walk_all(&mut wal, &mut walk);
            assert_eq!(first.len() + rest.len(), specs.len());
            assert_eq!(rest.first().map(|r| r.0), Some(stopped));
        }
    }

    #[test]
    fn a_switch_record_ends_its_segment() {
        let specs = vec![
            (MESSAGE, 0, 1, b"a".to_vec(), 0),
            (RM_XLOG, XLOG_SWITCH, 0, vec![], 0),
            (MESSAGE, 0, 2, b"b".to_vec(), 0),
        ];
        let (bytes, lsns) = write(&specs);
        assert_eq!(lsns[2], SEGMENT + LONG_PAGE_HEADER as u64);
        let mut walk = Walk::new(lsns[0], SEGMENT);
        let got = walk_all(&mut Wal::flushed(bytes), &mut walk);
        assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), lsns);
        assert_eq!(got[2].3, b"b");
    }

    #[test]
    fn a_record_cut_by_a_crash_is_passed_over() {
        // a record crossing into page 1, whose continuation a restarted server overwrote
        let (mut bytes, lsns) = write(&[(MESSAGE, 0, 1, b"a".to_vec(), 0), (HEAP, 0, 2, vec![], 8100)]);
        bytes.truncate(PAGE_SIZE);
        page_header(&mut bytes, FIRST_IS_OVERWRITE_CONTRECORD, 0);
        let after = bytes.len() as u64;
        bytes.extend_from_slice(&record_bytes(&(MESSAGE, 0, 3, b"c".to_vec(), 0)));
        let mut walk = Walk::new(lsns[0], SEGMENT);
        let got = walk_all(&mut Wal::flushed(bytes.clone()), &mut walk);
        assert_eq!(
            got.iter().map(|r| (r.0, r.2)).collect::<Vec<_>>(),
            vec![(lsns[0], 1), (after, 3)]
        );
        // without the flag, a page that does not continue the record is an error
        bytes[PAGE_SIZE + 2] = 0;
        let mut walk = Walk::new(lsns[1], SEGMENT);
        let err = walk.next_record(&mut Wal::flushed(bytes), |_| true);
        assert!(err.is_err_and(|e| e.contains("does not continue")));
    }

    #[test]
    fn a_page_from_elsewhere_is_refused() {
        let (mut bytes, lsns) = write(&mixed());
        bytes[PAGE_SIZE * 3 + 8] ^= 1; // the address of page 3
        let mut wal = Wal::flushed(bytes);
        let mut walk = Walk::new(lsns[0], SEGMENT);
        let err = loop {
            match walk.next_record(&mut wal, |_| false) {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("walked past a page from elsewhere"),
                Err(e) => break e,
            }
        };
        assert!(err.contains("not the page expected"), "{err}");
    }
}
