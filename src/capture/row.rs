//! Reading a trigger's row. The triggers run in every tracked transaction of the application,
//! and each guarded call into PostgreSQL (pgrx's sigsetjmp and thread check) cost about as much
//! as the reading it guarded: a third of a trigger's own time when every column was read alone.
//! So the columns are found in the tuple descriptor here, read in one guarded call, and a text
//! key's bytes are taken from its datum.

use pgrx::pg_sys;
use std::borrow::Cow;
use std::ffi::{c_char, c_int, CStr};

unsafe extern "C-unwind" {
    // executor/spi.h and utils/datum.h, called unguarded only inside `read`'s one guarded call
    // (neither raises an error for a column number found by `column_numbers`)
    #[link_name = "SPI_getbinval"]
    fn spi_getbinval(
        tuple: *mut pg_sys::HeapTupleData,
        desc: pg_sys::TupleDesc,
        attnum: c_int,
        isnull: *mut bool,
    ) -> pg_sys::Datum;
    #[link_name = "datumIsEqual"]
    fn datum_is_equal(value1: pg_sys::Datum, value2: pg_sys::Datum, typ_by_val: bool, typ_len: c_int) -> bool;
}

/// The most columns a tracking trigger names (tenant, product, value, currency).
pub(crate) const MAX_COLUMNS: usize = 4;

/// The columns a trigger's arguments name, as their numbers, in argument order: user columns
/// that are not dropped, matched exactly as `SPI_fnumber` matches them. Err(name) names an
/// argument that is no column (any more).
pub(crate) unsafe fn column_numbers(desc: pg_sys::TupleDesc, trigger: &pg_sys::Trigger) -> Result<Columns, String> {
    let nargs = (trigger.tgnargs.max(0) as usize).min(MAX_COLUMNS);
    let attrs = (*desc).attrs.as_slice((*desc).natts as usize);
    let mut cols = Columns {
        numbers: [0; MAX_COLUMNS],
        len: nargs,
    };
    for (i, number) in cols.numbers.iter_mut().take(nargs).enumerate() {
        let name = CStr::from_ptr(*trigger.tgargs.add(i) as *const c_char).to_bytes_with_nul();
        // the name with its NUL against the start of each attname (no strlen of every column's)
        let same = |a: &pg_sys::FormData_pg_attribute| {
            let attname = std::slice::from_raw_parts(a.attname.data.as_ptr().cast::<u8>(), a.attname.data.len());
            attname.get(..name.len()) == Some(name)
        };
        let found = attrs.iter().position(|a| !a.attisdropped && same(a));
        *number = match found {
            Some(at) => at as i32 + 1,
            None => return Err(String::from_utf8_lossy(&name[..name.len() - 1]).into_owned()),
        };
    }
    Ok(cols)
}

/// Column numbers (1-based), `len` of them.
#[derive(Clone, Copy)]
pub(crate) struct Columns {
    numbers: [i32; MAX_COLUMNS],
    len: usize,
}

impl Columns {
    pub fn get(&self, i: usize) -> Option<i32> {
        (i < self.len).then(|| self.numbers[i])
    }

    pub fn len(&self) -> usize {
        self.len
    }
}

/// A row's values of the trigger's columns (None: NULL), in argument order. Datums of a
/// by-reference type point into the tuple, which outlives the trigger call.
pub(crate) type Values = [Option<pg_sys::Datum>; MAX_COLUMNS];

/// The values of `cols` in `tuple`, in one guarded call.
pub(crate) unsafe fn read(tuple: *mut pg_sys::HeapTupleData, desc: pg_sys::TupleDesc, cols: &Columns) -> Values {
    pg_sys::ffi::pg_guard_ffi_boundary(|| read_unguarded(tuple, desc, cols))
}

unsafe fn read_unguarded(tuple: *mut pg_sys::HeapTupleData, desc: pg_sys::TupleDesc, cols: &Columns) -> Values {
    let mut values = [None; MAX_COLUMNS];
    for (value, attnum) in values.iter_mut().zip(&cols.numbers[..cols.len]) {
        let mut null = false;
        let datum = spi_getbinval(tuple, desc, *attnum, &mut null);
        *value = (!null).then_some(datum);
    }
    values
}

/// An UPDATE's new values of `cols`, and whether each holds the same bytes as before (false
/// may still mean equal, e.g. a value stored compressed in one row only), in one guarded call.
pub(crate) unsafe fn read_update(
    old: *mut pg_sys::HeapTupleData,
    new: *mut pg_sys::HeapTupleData,
    desc: pg_sys::TupleDesc,
    cols: &Columns,
) -> (Values, [bool; MAX_COLUMNS]) {
    pg_sys::ffi::pg_guard_ffi_boundary(|| {
        let (before, after) = (read_unguarded(old, desc, cols), read_unguarded(new, desc, cols));
        let attrs = (*desc).attrs.as_slice((*desc).natts as usize);
        let mut same = [false; MAX_COLUMNS];
        for i in 0..cols.len {
            let attr = &attrs[(cols.numbers[i] - 1) as usize];
            same[i] = match (before[i], after[i]) {
                (None, None) => true,
                (Some(a), Some(b)) => datum_is_equal(a, b, attr.attbyval, attr.attlen as c_int),
                _ => false,
            };
        }
        (after, same)
    })
}

pub(crate) unsafe fn column_type(desc: pg_sys::TupleDesc, attnum: i32) -> pg_sys::Oid {
    (*desc).attrs.as_slice((*desc).natts as usize)[(attnum - 1) as usize].atttypid
}

/// One column of a tuple as its type's output function prints it, None when NULL.
pub(crate) unsafe fn column_output(
    tuple: *mut pg_sys::HeapTupleData,
    desc: pg_sys::TupleDesc,
    attnum: i32,
) -> Option<Vec<u8>> {
    let p = pg_sys::SPI_getvalue(tuple, desc, attnum);
    if p.is_null() {
        return None;
    }
    let bytes = CStr::from_ptr(p).to_bytes().to_vec();
    pg_sys::pfree(p.cast());
    Some(bytes)
}

/// A key column's bytes, None when NULL. text and varchar are borrowed from the datum itself
/// (the bytes their output function would copy), detoasted only when stored compressed or out
/// of line; other types go through their output function. Borrowed bytes live in the tuple or
/// the trigger call's memory context: `'t` must not outlive the trigger call.
pub(crate) unsafe fn key_bytes<'t>(
    tuple: *mut pg_sys::HeapTupleData,
    desc: pg_sys::TupleDesc,
    attnum: i32,
    value: Option<pg_sys::Datum>,
) -> Option<Cow<'t, [u8]>> {
    let typ = column_type(desc, attnum);
    if typ != pg_sys::TEXTOID && typ != pg_sys::VARCHAROID {
        return column_output(tuple, desc, attnum).map(Cow::Owned);
    }
    let mut v = value?.cast_mut_ptr::<pg_sys::varlena>();
    if pgrx::varlena::varatt_is_4b_c(v) || pgrx::varlena::varatt_is_1b_e(v) {
        v = pg_sys::pg_detoast_datum_packed(v);
    }
    let (data, len) = (pgrx::varlena::vardata_any(v), pgrx::varlena::varsize_any_exhdr(v));
    Some(Cow::Borrowed(std::slice::from_raw_parts(data.cast::<u8>(), len)))
}
