//! Authentication, with the native server's rules (the shared
//! [`events_api::auth`]): the admin token acts on `X-Namespace` (default
//! `default`); a namespace key `ns_<namespace>_<secret>` acts on its own
//! namespace only; nothing else is accepted unless `DEV = "true"`. Keys are
//! checked against their namespace's `Tenant` object on every request.

pub use events_api::auth::{Caller, DEFAULT_NAMESPACE};
use events_api::auth::{Credentials, credentials, verify_key};
use events_core::ApiError;

use super::Call;

/// Authenticates the request of `call`.
pub async fn authenticate(call: &Call) -> Result<Caller, ApiError> {
    match credentials(&call.headers, call.config.admin_token.as_deref(), call.config.dev)? {
        Credentials::Resolved(caller) => Ok(caller),
        Credentials::NamespaceKey { namespace, secret_sha256 } => {
            verify_key(&call.host, namespace, secret_sha256).await
        }
    }
}
