//! Authentication, with the native server's rules (the shared
//! [`events_api::auth`]): the admin token acts on `X-Namespace` (default
//! `default`); a namespace key `ns_<namespace>_<secret>` acts on its own
//! namespace only; a publishable key `pk_<namespace>_<secret>` may only call
//! `POST /e` ([`authenticate_ingest`]), from its allowed origins; nothing else
//! is accepted unless `DEV = "true"`. Keys are checked against their
//! namespace's `Tenant` object on every request.

pub use events_api::auth::{Caller, DEFAULT_NAMESPACE};
use events_api::auth::{Access, Credentials, credentials_for, verify_key};
use events_core::ApiError;

use super::Call;

/// Authenticates the request of `call` to any route but `POST /e`
/// (publishable keys are refused).
pub async fn authenticate(call: &Call) -> Result<Caller, ApiError> {
    authenticate_for(call, Access::Full).await
}

/// Authenticates a `POST /e` request, which also admits publishable keys, in
/// the header or the `key` query parameter.
pub async fn authenticate_ingest(call: &Call) -> Result<Caller, ApiError> {
    authenticate_for(call, Access::Ingest).await
}

async fn authenticate_for(call: &Call, access: Access) -> Result<Caller, ApiError> {
    let query = Some(call.query.as_str());
    match credentials_for(&call.headers, query, call.config.admin_token.as_deref(), call.config.dev, access)? {
        Credentials::Resolved(caller) => Ok(caller),
        Credentials::NamespaceKey { namespace, secret_sha256, kind } => {
            verify_key(&call.host, namespace, secret_sha256, kind).await?.admit(&call.headers)
        }
    }
}
