//! The [`DurableObject`] implementation: load, request dispatch and the alarm.

use events_runtime::{DurableObject, Host, Migration, ObjectContext, ObjectResult, Placement};

use super::*;
use crate::var_or;

impl DurableObject for Catalog {
    const CLASS: &'static str = "Catalog";
    const PLACEMENT: Placement = Placement::Background;
    type Request = CatalogRequest;
    type Response = CatalogResponse;

    fn migrations() -> &'static [Migration] {
        MIGRATIONS
    }

    async fn load<H: Host>(cx: &ObjectContext<H>) -> ObjectResult<Self> {
        let host = cx.host();
        let config = CatalogConfig {
            base_uri: host.var("lake.base_uri").unwrap_or_else(|| "file:///lake".to_string()),
            maintenance_interval_ms: var_or(host, "catalog.maintenance_interval_ms", DEFAULT_MAINTENANCE_INTERVAL_MS)
                .max(1000),
            snapshot_max_age_ms: var_or(host, "catalog.snapshot_max_age_ms", DEFAULT_SNAPSHOT_MAX_AGE_MS).max(0),
            min_snapshots: var_or(host, "catalog.min_snapshots", DEFAULT_MIN_SNAPSHOTS).max(1),
            orphan_min_age_ms: var_or(host, "catalog.orphan_min_age_ms", DEFAULT_ORPHAN_MIN_AGE_MS).max(0),
            events_prefix: host
                .var("lake.events_prefix")
                .unwrap_or_else(|| events_lake::EVENTS_TABLE_PREFIX.to_string()),
        };
        Ok(Catalog { ns: cx.name().to_string(), config, alarm: AlarmSlot::load(cx.storage()).await? })
    }

    async fn handle<H: Host>(&mut self, cx: &ObjectContext<H>, req: CatalogRequest) -> ObjectResult<CatalogResponse> {
        let db = cx.storage();
        match req {
            CatalogRequest::PrepareColumns { table, observed } => {
                Ok(CatalogResponse::Columns(self.prepare_columns(cx, &table, observed).await?))
            }
            CatalogRequest::EnsureManagedTable { table, schema, properties } => {
                Ok(CatalogResponse::Table(Box::new(self.ensure_managed_table(cx, &table, schema, properties).await?)))
            }
            CatalogRequest::IntendFiles { table, keys } => {
                Self::intend_files(db, &table, &keys, cx.now().as_millis()).map(|()| CatalogResponse::Ok)
            }
            CatalogRequest::CommitFiles { table, added, removed } => {
                Ok(CatalogResponse::Committed(self.commit_files(cx, &table, added, removed, false).await?))
            }
            CatalogRequest::Scan { table, snapshot_id, as_of_ms } => {
                Ok(CatalogResponse::Scan(Self::scan(db, &table, snapshot_id, as_of_ms)?))
            }
            CatalogRequest::Changes { table, from_snapshot, to_snapshot } => {
                Ok(CatalogResponse::Changes(Box::new(Self::changes(db, &table, from_snapshot, to_snapshot)?)))
            }
            CatalogRequest::ListTables => Ok(CatalogResponse::Tables(Self::list_tables(db)?)),
            CatalogRequest::LoadTable { table } => {
                Ok(CatalogResponse::Table(Box::new(Self::require_table(db, &table)?.2)))
            }
            CatalogRequest::SchemaHistory { table } => {
                Ok(CatalogResponse::SchemaHistory(Self::schema_history(db, &table)?))
            }
            CatalogRequest::NamespaceInfo => Ok(CatalogResponse::Namespace(Self::namespace_properties(db)?)),
            CatalogRequest::CreateNamespace { properties } => {
                Ok(CatalogResponse::Namespace(Some(self.create_namespace(db, properties)?)))
            }
            CatalogRequest::DropNamespace => self.drop_namespace(db).map(|()| CatalogResponse::Ok),
            CatalogRequest::UpdateNamespaceProperties { removals, updates } => {
                self.update_namespace_properties(db, removals, updates)
            }
            CatalogRequest::CreateTable { name, schema, properties } => {
                Ok(CatalogResponse::Table(Box::new(self.create_table(cx, &name, schema, properties).await?)))
            }
            CatalogRequest::CommitTable { table, requirements, updates } => {
                Ok(CatalogResponse::Table(Box::new(self.commit_table(cx, &table, requirements, updates).await?)))
            }
            CatalogRequest::DropTable { table } => Self::drop_table(db, &table).map(|()| CatalogResponse::Ok),
            CatalogRequest::Maintain { table, options } => {
                Ok(CatalogResponse::Maintained(self.maintain_tables(cx, table, &options).await?))
            }
        }
    }

    async fn alarm<H: Host>(&mut self, cx: &ObjectContext<H>) -> ObjectResult<()> {
        self.alarm.fired();
        // Compaction of closed hours is the writers' trigger; the alarm expires and cleans.
        let options = MaintainOptions { expire: true, remove_orphans: true, ..Default::default() };
        for t in Self::managed_tables(cx.storage())? {
            self.maintain(cx, &t, &options).await?;
        }
        Ok(())
    }
}
