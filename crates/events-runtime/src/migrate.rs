//! Versioned schema migrations, per object class.
//!
//! Each class lists its migrations in order, numbered from 1. When an object
//! is activated, the host applies, in one transaction, every migration newer
//! than the version recorded in the object's database. Migrations are never
//! edited once released; a change is a new migration.

use crate::sql::SqlStorage;
use crate::{ApiError, ObjectResult};

/// One schema migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Position, from 1, with no gaps.
    pub version: u32,
    /// Short description, recorded with the version.
    pub name: &'static str,
    /// The statements, `;`-separated.
    pub sql: &'static str,
}

/// Tables every object has, managed by the runtime itself.
pub const SYSTEM_MIGRATIONS: &str = "
CREATE TABLE IF NOT EXISTS _migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS _kv (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;
";

/// Applies the system tables and every pending migration of `migrations`.
/// Returns the schema version afterwards.
pub fn apply<S: SqlStorage>(storage: &S, class: &str, migrations: &[Migration], now_ms: i64) -> ObjectResult<u32> {
    for (i, m) in migrations.iter().enumerate() {
        assert_eq!(m.version as usize, i + 1, "{class}: migrations must be numbered 1, 2, 3, ... without gaps");
    }
    storage.transaction(|| {
        storage.execute_script(SYSTEM_MIGRATIONS)?;
        let current =
            storage.query_one("SELECT COALESCE(MAX(version), 0) FROM _migrations", &[])?.map_or(0, |r| r.i64(0));
        let current = u32::try_from(current).map_err(|_| ApiError::internal("corrupt migration version"))?;
        if current as usize > migrations.len() {
            return Err(ApiError::internal(format!(
                "{class}: database is at schema version {current}, newer than this build knows ({})",
                migrations.len()
            )));
        }
        for m in &migrations[current as usize..] {
            storage.execute_script(m.sql)?;
            storage.execute(
                "INSERT INTO _migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
                &[m.version.into(), m.name.into(), now_ms.into()],
            )?;
        }
        Ok(migrations.len() as u32)
    })
}
