//! A `jsonb` argument read without panicking: pgrx's own `JsonB` argument parses the value's
//! text with serde_json and panics (an internal error, SQLSTATE XX000) on a document nested
//! deeper than serde_json's 128 levels. `JsonIn` reads it the same way and refuses such a
//! document with a clear SQL error instead.

use pgrx::callconv::{Arg, ArgAbi};
use pgrx::prelude::*;
use pgrx::{direct_function_call, FromDatum, PgSqlErrorCode};
use serde_json::Value;

/// A `jsonb` function argument.
pub struct JsonIn(pub Value);

impl FromDatum for JsonIn {
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _: pg_sys::Oid) -> Option<JsonIn> {
        if is_null {
            return None;
        }
        let varlena = datum.cast_mut_ptr();
        let detoasted = unsafe { pg_sys::pg_detoast_datum_packed(varlena) };
        let text = unsafe { direct_function_call::<&core::ffi::CStr>(pg_sys::jsonb_out, &[Some(detoasted.into())]) }
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default();
        match serde_json::from_str(&text) {
            Ok(v) => Some(JsonIn(v)),
            Err(e) => crate::spi_util::fail(
                PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                format!(
                    "a jsonb argument could not be read ({}): documents nested deeper than 128 levels are refused",
                    if e.to_string().contains("recursion limit") {
                        "too deeply nested"
                    } else {
                        "not readable"
                    }
                ),
            ),
        }
    }
}

unsafe impl<'fcx> ArgAbi<'fcx> for JsonIn {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        unsafe { arg.unbox_arg_using_from_datum() }.unwrap_or_else(|| panic!("argument {index} must not be null"))
    }

    unsafe fn unbox_nullable_arg(arg: Arg<'_, 'fcx>) -> pgrx::nullable::Nullable<Self> {
        unsafe { arg.unbox_arg_using_from_datum() }.into()
    }
}

impl From<JsonIn> for pgrx::datum::DatumWithOid<'_> {
    /// Passed on to SPI as the `jsonb` it came as.
    fn from(j: JsonIn) -> Self {
        pgrx::JsonB(j.0).into()
    }
}

pgrx::impl_sql_translatable!(JsonIn, arg_only = "jsonb");
