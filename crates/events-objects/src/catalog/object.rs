//! The [`DurableObject`] implementation: load, request dispatch and the alarm.

use std::collections::BTreeMap;

use events_core::{ApiError, ErrorCode};
use events_iceberg::metadata::{NAME_MAPPING_PROPERTY, TableMetadata};
use events_runtime::{DurableObject, Host, Migration, ObjectContext, ObjectResult, Placement, SqlStorage};

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
                validate_table_name(&table)?;
                if !table.starts_with("cdc_") {
                    return Err(ApiError::new(
                        ErrorCode::InvalidRequest,
                        format!("managed tables besides events are named cdc_*, not {table}"),
                    ));
                }
                if let Some((managed, _, loaded)) = Self::load_table(db, &table)? {
                    if !managed {
                        return Err(ApiError::new(ErrorCode::Conflict, format!("{table} exists as an external table")));
                    }
                    return Ok(CatalogResponse::Table(Box::new(loaded)));
                }
                let location = self.uri(&self.table_prefix(&table)).trim_end_matches('/').to_string();
                let mut meta = TableMetadata::new(Self::uuid(cx), location, schema.clone(), cx.now().as_millis());
                meta.properties.extend(properties);
                meta.properties.insert(NAME_MAPPING_PROPERTY.into(), schema.name_mapping_json());
                meta.properties.insert("events.managed".into(), "true".into());
                let loaded = self.store(cx, &table, true, None, meta).await?;
                Ok(CatalogResponse::Table(Box::new(loaded)))
            }
            CatalogRequest::IntendFiles { table, keys } => {
                Self::intend_files(db, &table, &keys, cx.now().as_millis())?;
                Ok(CatalogResponse::Ok)
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
                Self::require_table(db, &table)?;
                let changes = db
                    .query(
                        "SELECT at, change FROM schema_changes WHERE tbl = ?1 ORDER BY seq",
                        &[table.as_str().into()],
                    )?
                    .iter()
                    .map(|r| {
                        Ok(RecordedChange {
                            at: r.i64(0),
                            change: serde_json::from_slice(r.bytes(1)).map_err(corrupt)?,
                        })
                    })
                    .collect::<ObjectResult<Vec<_>>>()?;
                Ok(CatalogResponse::SchemaHistory(changes))
            }
            CatalogRequest::NamespaceInfo => {
                let props = db
                    .query_one("SELECT properties FROM namespace WHERE id = 1", &[])?
                    .map(|r| serde_json::from_slice(r.bytes(0)).map_err(corrupt))
                    .transpose()?;
                Ok(CatalogResponse::Namespace(props))
            }
            CatalogRequest::CreateNamespace { properties } => {
                if db.query_one("SELECT 1 FROM namespace WHERE id = 1", &[])?.is_some() {
                    return Err(ApiError::new(ErrorCode::Conflict, format!("namespace {} already exists", self.ns)));
                }
                db.execute(
                    "INSERT INTO namespace (id, properties) VALUES (1, ?1)",
                    &[serde_json::to_string(&properties).map_err(corrupt)?.into()],
                )?;
                Ok(CatalogResponse::Namespace(Some(properties)))
            }
            CatalogRequest::DropNamespace => {
                if db.query_one("SELECT 1 FROM namespace WHERE id = 1", &[])?.is_none() {
                    return Err(ApiError::not_found(format!("no namespace {}", self.ns)));
                }
                if db.query_one("SELECT 1 FROM tables LIMIT 1", &[])?.is_some() {
                    return Err(ApiError::new(ErrorCode::Conflict, format!("namespace {} has tables", self.ns)));
                }
                db.execute("DELETE FROM namespace", &[])?;
                Ok(CatalogResponse::Ok)
            }
            CatalogRequest::UpdateNamespaceProperties { removals, updates } => {
                let row = db.query_one("SELECT properties FROM namespace WHERE id = 1", &[])?;
                let mut props: BTreeMap<String, String> = match row {
                    Some(r) => serde_json::from_slice(r.bytes(0)).map_err(corrupt)?,
                    None => return Err(ApiError::not_found(format!("no namespace {}", self.ns))),
                };
                if removals.iter().any(|k| updates.contains_key(k)) {
                    return Err(ApiError::new(ErrorCode::InvalidRequest, "a key is both removed and updated"));
                }
                let (mut removed, mut missing) = (Vec::new(), Vec::new());
                for k in removals {
                    if props.remove(&k).is_some() { removed.push(k) } else { missing.push(k) }
                }
                let updated: Vec<String> = updates.keys().cloned().collect();
                props.extend(updates);
                db.execute(
                    "UPDATE namespace SET properties = ?1 WHERE id = 1",
                    &[serde_json::to_string(&props).map_err(corrupt)?.into()],
                )?;
                Ok(CatalogResponse::PropertiesUpdated { updated, removed, missing })
            }
            CatalogRequest::CreateTable { name, schema, properties } => {
                validate_table_name(&name)?;
                if is_managed_table(&name) {
                    return Err(ApiError::new(
                        ErrorCode::Forbidden,
                        format!("{name} is a name reserved for tables events.do writes"),
                    ));
                }
                if Self::load_table(db, &name)?.is_some() {
                    return Err(ApiError::new(ErrorCode::Conflict, format!("table {name} already exists")));
                }
                let count = db.query_one("SELECT COUNT(*) FROM tables", &[])?.map_or(0, |r| r.i64(0));
                if count as usize >= MAX_TABLES {
                    return Err(ApiError::new(
                        ErrorCode::InvalidRequest,
                        format!("a namespace has at most {MAX_TABLES} tables"),
                    ));
                }
                let location = self.uri(&self.table_prefix(&name)).trim_end_matches('/').to_string();
                let mut meta = TableMetadata::new(Self::uuid(cx), location, schema, cx.now().as_millis());
                meta.properties = properties;
                let loaded = self.store(cx, &name, false, None, meta).await?;
                Ok(CatalogResponse::Table(Box::new(loaded)))
            }
            CatalogRequest::CommitTable { table, requirements, updates } => {
                Ok(CatalogResponse::Table(Box::new(self.commit_table(cx, &table, requirements, updates).await?)))
            }
            CatalogRequest::DropTable { table } => {
                let (managed, _, _) = Self::require_table(db, &table)?;
                if managed {
                    return Err(ApiError::new(
                        ErrorCode::Forbidden,
                        format!("{table} is managed by events.do and cannot be dropped"),
                    ));
                }
                db.execute("DELETE FROM tables WHERE name = ?1", &[table.as_str().into()])?;
                Ok(CatalogResponse::Ok)
            }
            CatalogRequest::Maintain { table, options } => {
                let tables = match table {
                    Some(t) => {
                        if !Self::require_table(db, &t)?.0 {
                            return Err(ApiError::new(
                                ErrorCode::InvalidRequest,
                                format!("{t} is an external table; its engine maintains it"),
                            ));
                        }
                        vec![t]
                    }
                    None => Self::managed_tables(db)?,
                };
                let mut reports = Vec::new();
                for t in tables {
                    reports.push(self.maintain(cx, &t, &options).await?);
                }
                Ok(CatalogResponse::Maintained(reports))
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
