//! The namespace and its properties.

use events_runtime::{ObjectResult, SqlStorage};

use super::*;

impl Catalog {
    pub(super) fn ensure_namespace<S: SqlStorage>(&self, db: &S) -> ObjectResult<()> {
        db.execute("INSERT INTO namespace (id, properties) VALUES (1, '{}') ON CONFLICT(id) DO NOTHING", &[])?;
        Ok(())
    }
}
