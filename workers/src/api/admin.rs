//! `/admin/...`: namespace keys and limits, flushing, shard layouts, with the admin token.

use events_api::admin::LimitsView;
use events_core::name::validate_namespace;
use events_api::keys;
use events_core::{ApiError, ErrorCode};
use events_objects::event_writer::flush_writer;
use events_objects::shard_coordinator::ShardRequest;
use events_objects::ShardCoordinator;
use events_runtime::Host;
use serde_json::json;

use super::auth::authenticate;
use super::{ApiResult, Call, json, parse_json};
use crate::directory::{DIRECTORY_NAME, Directory, DirectoryRequest, DirectoryResponse};
use crate::host::CfHost;

/// Largest key-creation body.
const MAX_ADMIN_BODY_BYTES: usize = 16 * 1024;

async fn admin(call: &Call) -> Result<(), ApiError> {
    authenticate(call).await?.require_admin()
}

/// `POST /admin/namespaces/{ns}/keys`: the shared [`events_api::keys`].
pub async fn create_key(call: &mut Call, ns: &str) -> ApiResult {
    admin(call).await?;
    validate_namespace(ns)?;
    let request = keys::CreateKeyRequest::parse(&call.body(MAX_ADMIN_BODY_BYTES).await?)?;
    json(201, &keys::create_key(&call.host, ns, request).await?)
}

/// `GET /admin/namespaces/{ns}/keys`.
pub async fn list_keys(call: &Call, ns: &str) -> ApiResult {
    admin(call).await?;
    json(200, &keys::list_keys(&call.host, ns).await?)
}

/// `DELETE /admin/namespaces/{ns}/keys/{id}`.
pub async fn revoke_key(call: &Call, ns: &str, id: &str) -> ApiResult {
    admin(call).await?;
    json(200, &keys::revoke_key(&call.host, ns, id).await?)
}

/// `GET /admin/namespaces/{ns}/limits`: the shared [`events_api::admin`].
pub async fn get_limits(call: &Call, ns: &str) -> ApiResult {
    admin(call).await?;
    json(200, &events_api::admin::get_limits(&call.host, ns).await?)
}

/// `PUT /admin/namespaces/{ns}/limits`; this isolate forgets its cached copy
/// (others within the ingest cache's lifetime, as natively across restarts).
pub async fn put_limits(call: &mut Call, ns: &str) -> ApiResult {
    admin(call).await?;
    validate_namespace(ns)?;
    let limits: LimitsView = parse_json(&call.body(MAX_ADMIN_BODY_BYTES).await?)?;
    let limits = events_api::admin::put_limits(&call.host, ns, limits).await?;
    super::ingest::invalidate_limits(ns);
    json(200, &limits)
}

/// Every writer shard that has received events.
pub async fn writer_names(host: &CfHost) -> Result<Vec<String>, ApiError> {
    match host.call::<Directory>(DIRECTORY_NAME, DirectoryRequest::Writers).await? {
        DirectoryResponse::Writers(names) => Ok(names),
        _ => Err(ApiError::internal("directory answered out of protocol")),
    }
}

/// `GET /admin/shards`: the writer layout of every namespace that has received
/// events (the namespaces of the writers in the directory).
pub async fn shards(call: &Call) -> ApiResult {
    admin(call).await?;
    let names = writer_names(&call.host).await?;
    let namespaces: std::collections::BTreeSet<&str> =
        names.iter().filter_map(|w| w.rsplit_once('/').map(|(ns, _)| ns)).collect();
    let mut views = Vec::with_capacity(namespaces.len());
    for ns in namespaces {
        let layout = call.host.call::<ShardCoordinator>(ns, ShardRequest::Layout).await?;
        views.push(json!({
            "namespace": ns, "shards": layout.shards, "epoch": layout.epoch,
            "changedAt": layout.changed_at.to_iso(), "recentBackpressure": layout.recent_reports,
        }));
    }
    json(200, &json!({"namespaces": views}))
}

/// `POST /admin/flush`: every writer buffer to R2 now.
pub async fn flush(call: &Call) -> ApiResult {
    admin(call).await?;
    let mut files = Vec::new();
    for name in writer_names(&call.host).await? {
        match flush_writer(&call.host, &name).await {
            Ok(written) => files.extend(written),
            Err(e) => {
                return Err(ApiError::new(ErrorCode::StorageError, format!("flush of writer {name} failed: {e}")));
            }
        }
    }
    json(200, &json!({"files": files}))
}
