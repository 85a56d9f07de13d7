//! Committing the current table to the namespace's Iceberg catalog.

use std::collections::BTreeMap;

use events_core::{ApiError, ErrorCode};
use events_lake::cdc::current_keys;
use events_runtime::{BlobStore, Host, ObjectContext, ObjectResult, SqlStorage};

use super::*;
use crate::Catalog;
use crate::catalog::{CatalogRequest, CatalogResponse, NewFile, cdc_table_name, iceberg_schema};

impl CdcProcessor {
    /// Commits the current table to the namespace's Iceberg catalog as table
    /// [`cdc_table_name`], replacing the one committed before, unless it is
    /// there already. Runs after the compaction that wrote it has been
    /// recorded, so a retry (the next alarm) finds the same file; a file the
    /// catalog already lists is replaced by itself, so a repeat is harmless.
    ///
    /// A failure is counted and retried by the alarm; it never undoes the
    /// compaction.
    pub(super) async fn publish_current<H: Host>(&mut self, cx: &ObjectContext<H>) {
        if let Err(e) = self.try_publish_current(cx).await {
            metrics::publish_failed();
            self.publish_error = Some(e.message);
        } else {
            self.publish_error = None;
        }
    }

    async fn try_publish_current<H: Host>(&mut self, cx: &ObjectContext<H>) -> ObjectResult<()> {
        let db = cx.storage();
        let Some(current) =
            db.query_one(&format!("SELECT {STATE_REF_COLUMNS} FROM files WHERE kind = 'current'"), &[])?
        else {
            return Ok(());
        };
        let current = state_ref_row(&current);
        if current.upto_seq == self.counters.cataloged_seq {
            return Ok(());
        }
        let table = cdc_table_name(&self.collection);
        let catalog = cx.stub::<Catalog>(self.ns.clone());
        let properties = BTreeMap::from([(CDC_COLLECTION_PROPERTY.to_string(), self.collection.clone())]);
        let schema = iceberg_schema(&events_lake::cdc::state_schema());
        match catalog.call(CatalogRequest::EnsureManagedTable { table: table.clone(), schema, properties }).await? {
            CatalogResponse::Table(loaded) => {
                let owner = loaded.metadata.properties.get(CDC_COLLECTION_PROPERTY);
                if owner != Some(&self.collection) {
                    return Err(ApiError::new(
                        ErrorCode::Conflict,
                        format!("table {table} belongs to collection {owner:?}, not {:?}", self.collection),
                    ));
                }
            }
            other => return Err(ApiError::internal(format!("catalog answered {other:?} to EnsureManagedTable"))),
        }
        // Every live file of the state, in one catalog snapshot.
        let mut added = Vec::new();
        for part in state_parts(db, &current)?.into_iter().filter(|p| !p.tombstones) {
            let bytes = match part.bytes {
                0 => cx
                    .host()
                    .blobs()
                    .list(&part.key)
                    .await?
                    .into_iter()
                    .find(|b| b.key == part.key)
                    .map(|b| b.size as i64)
                    .ok_or_else(|| ApiError::internal(format!("state file {} is missing from the lake", part.key)))?,
                n => n,
            };
            added.push(NewFile { key: part.key, rows: part.rows, bytes });
        }
        let removed = self.cataloged_keys(db)?;
        let keys: Vec<String> = added.iter().map(|f| f.key.clone()).collect();
        match catalog.call(CatalogRequest::CommitFiles { table, added, removed }).await? {
            CatalogResponse::Committed(_) => {}
            other => return Err(ApiError::internal(format!("catalog answered {other:?} to CommitFiles"))),
        }
        db.execute("DELETE FROM cataloged", &[])?;
        for key in keys {
            db.execute("INSERT OR IGNORE INTO cataloged (key) VALUES (?1)", &[key.into()])?;
        }
        self.counters.cataloged_seq = current.upto_seq;
        self.save_counters(db)
    }

    /// The live state files the catalog's table holds (recorded since states
    /// were split; before, the one file named by `cataloged_seq`).
    pub(super) fn cataloged_keys<S: SqlStorage>(&self, db: &S) -> ObjectResult<Vec<String>> {
        let keys: Vec<String> =
            db.query("SELECT key FROM cataloged ORDER BY key", &[])?.iter().map(|r| r.str(0).to_string()).collect();
        Ok(match (keys.is_empty(), self.counters.cataloged_seq) {
            (true, 0) => Vec::new(),
            (true, seq) => vec![current_keys(&self.ns, &self.collection, seq).0],
            (false, _) => keys,
        })
    }
}
