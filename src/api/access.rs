//! Who may act for which tenant. Two roles: `integ_operator` configures everything for every
//! tenant; `integ_application` calls the sync, webhook and status functions, and a session of
//! it sees and changes only the rows of the tenant it is scoped to (`SET integ.tenant_id`).
//! Superusers act as operators. Row-level security on every tenant-keyed table and the views
//! ask `integ.tenant_visible`; the SECURITY DEFINER functions ask `require_access` first, about
//! the role that called them (not the function's owner).

use crate::spi_util::fail;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

fn role_oid(name: &std::ffi::CStr) -> pg_sys::Oid {
    unsafe { pg_sys::get_role_oid(name.as_ptr(), true) }
}

/// Whether the calling role (the one in effect before any SECURITY DEFINER switch) is a
/// superuser or an operator.
pub fn caller_is_operator() -> bool {
    unsafe {
        let caller = pg_sys::GetOuterUserId();
        if pg_sys::superuser_arg(caller) {
            return true;
        }
        let op = role_oid(c"integ_operator");
        op != pg_sys::InvalidOid && pg_sys::is_member_of_role(caller, op)
    }
}

/// The tenant this session is scoped to (`integ.tenant_id`), if any.
pub fn session_tenant() -> Option<String> {
    unsafe {
        let v = pg_sys::GetConfigOption(c"integ.tenant_id".as_ptr(), true, false);
        if v.is_null() {
            return None;
        }
        let s = std::ffi::CStr::from_ptr(v).to_string_lossy().into_owned();
        (!s.is_empty()).then_some(s)
    }
}

/// Whether the caller may see and act on `tenant`'s rows.
pub fn may_act_for(tenant: Option<&str>) -> bool {
    caller_is_operator() || (tenant.is_some() && session_tenant().as_deref() == tenant)
}

/// Raises a permission error unless the caller may act for `tenant`.
pub fn require_access(tenant: &str) {
    if !may_act_for(Some(tenant)) {
        fail(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            match session_tenant() {
                Some(_) => "permission denied: this session is scoped to another tenant (integ.tenant_id)".to_string(),
                None => "permission denied: set integ.tenant_id to the tenant this session acts for, or use a role that is a member of integ_operator".to_string(),
            },
        );
    }
}

/// Raises a permission error unless the caller is an operator.
pub fn require_operator(what: &str) {
    if !caller_is_operator() {
        fail(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("permission denied: {what} needs a role that is a member of integ_operator"),
        );
    }
}

/// For row-level security and the views: whether the calling role sees `tenant_id`'s rows.
#[pg_extern(stable, parallel_safe)]
fn tenant_visible(tenant_id: Option<&str>) -> bool {
    may_act_for(tenant_id)
}

/// `integ.require_tenant(tenant_id)`: the same check for the PL/pgSQL functions.
#[pg_extern(stable, parallel_safe)]
fn require_tenant(tenant_id: Option<&str>) {
    match tenant_id {
        Some(t) => require_access(t),
        None => require_operator("acting for every tenant"),
    }
}
