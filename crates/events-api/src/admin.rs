//! `/admin/namespaces/{ns}/limits`: a namespace's limits, read and replaced
//! through its `Tenant` object. The hosts require the admin token first, and
//! forget their cached copy of the namespace's limits after a change.

use events_core::ApiError;
use events_core::name::validate_namespace;
use events_objects::Tenant;
use events_objects::tenant::{NamespaceLimits, TenantRequest, TenantResponse};
use events_runtime::context::Host;
use serde::{Deserialize, Serialize};

/// Namespace limits; absent fields use the host's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitsView {
    /// Requests per minute per key.
    #[cfg_attr(feature = "openapi", schema(maximum = 9007199254740991_u64))]
    pub requests_per_minute: Option<u64>,
    /// Events per minute per key.
    #[cfg_attr(feature = "openapi", schema(maximum = 9007199254740991_u64))]
    pub events_per_minute: Option<u64>,
    /// Events per UTC day for the namespace (0 = unlimited).
    #[cfg_attr(feature = "openapi", schema(maximum = 9007199254740991_u64))]
    pub events_per_day: Option<u64>,
}

impl From<NamespaceLimits> for LimitsView {
    fn from(l: NamespaceLimits) -> Self {
        LimitsView {
            requests_per_minute: l.requests_per_minute,
            events_per_minute: l.events_per_minute,
            events_per_day: l.events_per_day,
        }
    }
}

impl From<LimitsView> for NamespaceLimits {
    fn from(v: LimitsView) -> Self {
        NamespaceLimits {
            requests_per_minute: v.requests_per_minute,
            events_per_minute: v.events_per_minute,
            events_per_day: v.events_per_day,
        }
    }
}

/// `GET /admin/namespaces/{ns}/limits` (the caller is the admin).
pub async fn get_limits<H: Host>(host: &H, ns: &str) -> Result<LimitsView, ApiError> {
    validate_namespace(ns)?;
    match host.call::<Tenant>(ns, TenantRequest::GetLimits).await? {
        TenantResponse::Limits(l) => Ok(l.into()),
        _ => Err(ApiError::internal("unexpected answer")),
    }
}

/// `PUT /admin/namespaces/{ns}/limits` (the caller is the admin): stores
/// `limits` (a limit above the exact-integer range is refused with
/// `INVALID_REQUEST` and nothing is stored) and answers them.
pub async fn put_limits<H: Host>(host: &H, ns: &str, limits: LimitsView) -> Result<LimitsView, ApiError> {
    validate_namespace(ns)?;
    host.call::<Tenant>(ns, TenantRequest::SetLimits(limits.into())).await?;
    Ok(limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_camel_case_and_unknown_fields_are_refused() {
        let v: LimitsView = serde_json::from_str(r#"{"eventsPerDay": 5}"#).unwrap();
        assert_eq!(NamespaceLimits::from(v).events_per_day, Some(5));
        assert!(serde_json::from_str::<LimitsView>(r#"{"events_per_day": 5}"#).is_err());
    }
}
