//! The namespace and its properties.

use std::collections::BTreeMap;

use events_runtime::{ObjectResult, SqlStorage};

use super::*;

impl Catalog {
    pub(super) fn ensure_namespace<S: SqlStorage>(&self, db: &S) -> ObjectResult<()> {
        db.execute("INSERT INTO namespace (id, properties) VALUES (1, '{}') ON CONFLICT(id) DO NOTHING", &[])?;
        Ok(())
    }

    /// The namespace's properties, if it exists ([`CatalogRequest::NamespaceInfo`]).
    pub(super) fn namespace_properties<S: SqlStorage>(db: &S) -> ObjectResult<Option<BTreeMap<String, String>>> {
        db.query_one("SELECT properties FROM namespace WHERE id = 1", &[])?
            .map(|r| serde_json::from_slice(r.bytes(0)).map_err(corrupt))
            .transpose()
    }

    /// Creates the namespace with `properties` ([`CatalogRequest::CreateNamespace`]).
    pub(super) fn create_namespace<S: SqlStorage>(
        &self,
        db: &S,
        properties: BTreeMap<String, String>,
    ) -> ObjectResult<BTreeMap<String, String>> {
        if db.query_one("SELECT 1 FROM namespace WHERE id = 1", &[])?.is_some() {
            return Err(ApiError::new(ErrorCode::Conflict, format!("namespace {} already exists", self.ns)));
        }
        db.execute(
            "INSERT INTO namespace (id, properties) VALUES (1, ?1)",
            &[serde_json::to_string(&properties).map_err(corrupt)?.into()],
        )?;
        Ok(properties)
    }

    /// Drops the namespace, which must have no tables ([`CatalogRequest::DropNamespace`]).
    pub(super) fn drop_namespace<S: SqlStorage>(&self, db: &S) -> ObjectResult<()> {
        if db.query_one("SELECT 1 FROM namespace WHERE id = 1", &[])?.is_none() {
            return Err(ApiError::not_found(format!("no namespace {}", self.ns)));
        }
        if db.query_one("SELECT 1 FROM tables LIMIT 1", &[])?.is_some() {
            return Err(ApiError::new(ErrorCode::Conflict, format!("namespace {} has tables", self.ns)));
        }
        db.execute("DELETE FROM namespace", &[])?;
        Ok(())
    }

    /// Removes and sets namespace properties ([`CatalogRequest::UpdateNamespaceProperties`]).
    pub(super) fn update_namespace_properties<S: SqlStorage>(
        &self,
        db: &S,
        removals: Vec<String>,
        updates: BTreeMap<String, String>,
    ) -> ObjectResult<CatalogResponse> {
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
}
