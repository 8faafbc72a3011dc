//! The loaded library's version against the installed extension's. After a new build is
//! installed and the server restarted, the library is new while each database's extension is
//! still at the version it was created or last updated to, until `ALTER EXTENSION integration
//! UPDATE`. Until then the workers wait instead of running new statements against the old
//! schema.

use pgrx::prelude::*;

/// The version this library was built as (`Cargo.toml`, `integration.control`).
pub const LIBRARY: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    /// No `CREATE EXTENSION integration` in this database (or it was dropped).
    Absent,
    /// Installed at the library's version.
    Current,
    /// Installed at another version: the schema is not the one this library expects.
    Other(String),
}

impl Installed {
    fn from_extversion(extversion: Option<String>) -> Installed {
        match extversion {
            None => Installed::Absent,
            Some(v) if v == LIBRARY => Installed::Current,
            Some(v) => Installed::Other(v),
        }
    }
}

/// Reads `pg_extension.extversion` (inside the caller's transaction).
pub fn installed() -> Result<Installed, pgrx::spi::SpiError> {
    let v = Spi::get_one::<String>("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'integration'")?;
    Ok(Installed::from_extversion(v))
}

/// What a DBA must do, said once by the worker that notices it.
pub fn update_needed_message(database: &str, installed: &str) -> String {
    format!(
        "integration: the loaded library is version {LIBRARY} but the extension in database \"{database}\" is at version \
         {installed}: run ALTER EXTENSION integration UPDATE in that database; the workers sync nothing until then"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_told_apart() {
        assert_eq!(Installed::from_extversion(None), Installed::Absent);
        assert_eq!(Installed::from_extversion(Some(LIBRARY.into())), Installed::Current);
        assert_eq!(
            Installed::from_extversion(Some("0.0.1".into())),
            Installed::Other("0.0.1".into())
        );
        let m = update_needed_message("shop", "0.0.1");
        assert!(m.contains("ALTER EXTENSION integration UPDATE") && m.contains("0.0.1") && m.contains(LIBRARY));
    }
}
