//! HTTP routes, grouped by module.
//!
//! Each module exposes `pub fn register(api: ApiRouter) -> ApiRouter` that adds
//! its handlers with `api.routes(utoipa_axum::routes!(handler, ...))`. Every
//! handler carries `#[utoipa::path(...)]`: the method and path it is routed at
//! are read from that attribute, so the router and the OpenAPI document come
//! from one source. [`ApiRouter`] has no way to add an undocumented route.
//!
//! To add a module: write `routes/foo.rs` with `register`, declare it below and
//! append `foo::register` to [`MODULES`].

use std::sync::{Arc, OnceLock};

use axum::Router;
use utoipa::OpenApi;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Ref, RefOr};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};

use crate::error::ErrorBody;
use crate::state::AppState;

pub mod admin;
pub mod cdc;
pub mod events;
pub mod health;
pub mod iceberg;
pub mod ingest;
pub mod meta;
pub mod query;
pub mod schemas;
pub mod subscriptions;
pub mod tables;
pub mod tail;
pub mod webhooks;
pub mod worker_rpc;

/// Every route module, in registration order. The one list of routes.
pub const MODULES: &[fn(ApiRouter) -> ApiRouter] = &[
    health::register,
    meta::register,
    ingest::register,
    events::register,
    tail::register,
    admin::register,
    subscriptions::register,
    worker_rpc::register,
    schemas::register,
    webhooks::register,
    cdc::register,
    iceberg::register,
    tables::register,
    query::register,
];

/// One registered route: an HTTP method and a path template (`/things/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RouteInfo {
    /// Upper-case method, e.g. `GET`.
    pub method: String,
    /// Path template as routed by axum and written in the OpenAPI document.
    pub path: String,
}

/// A router that records each route and its OpenAPI operation together.
pub struct ApiRouter {
    inner: OpenApiRouter<AppState>,
    routes: Vec<RouteInfo>,
}

impl ApiRouter {
    /// An empty router whose document starts from [`ApiDoc`].
    pub fn new() -> ApiRouter {
        ApiRouter { inner: OpenApiRouter::with_openapi(ApiDoc::openapi()), routes: Vec::new() }
    }

    /// Adds handlers built with `utoipa_axum::routes!` (which may share one path).
    ///
    /// Operations that document no `default` response get one: the `ErrorBody` envelope.
    pub fn routes(mut self, mut method_router: UtoipaMethodRouter<AppState>) -> ApiRouter {
        for (path, item) in method_router.1.paths.iter_mut() {
            let ops = [
                ("GET", &mut item.get),
                ("PUT", &mut item.put),
                ("POST", &mut item.post),
                ("DELETE", &mut item.delete),
                ("OPTIONS", &mut item.options),
                ("HEAD", &mut item.head),
                ("PATCH", &mut item.patch),
                ("TRACE", &mut item.trace),
            ];
            for (method, op) in ops {
                if let Some(op) = op {
                    op.responses.responses.entry("default".to_string()).or_insert_with(error_response);
                    let path = if path.is_empty() { "/".to_string() } else { path.clone() };
                    self.routes.push(RouteInfo { method: method.to_string(), path });
                }
            }
        }
        self.inner = self.inner.routes(method_router);
        self
    }

    /// Merges extra document parts (tags, security schemes, shared schemas).
    pub fn merge_openapi(mut self, doc: utoipa::openapi::OpenApi) -> ApiRouter {
        self.inner.get_openapi_mut().merge(doc);
        self
    }

    /// The routes registered so far.
    pub fn route_list(&self) -> &[RouteInfo] {
        &self.routes
    }

    /// The axum router (state not yet supplied) and the OpenAPI document.
    pub fn split(self) -> (Router<AppState>, utoipa::openapi::OpenApi) {
        self.inner.split_for_parts()
    }
}

impl Default for ApiRouter {
    fn default() -> Self {
        ApiRouter::new()
    }
}

/// The root of the OpenAPI document; route modules add their paths to it.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "events.do",
        description = "Event streaming, CDC and lakehouse API. Every failing response has the `ErrorBody` envelope."
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth),
    tags(
        (name = "health", description = "Liveness"),
        (name = "meta", description = "Metrics and API description")
    )
)]
pub struct ApiDoc;

/// Adds the security schemes: `bearerAuth` (`Authorization: Bearer <key>`:
/// the admin token, a secret key `ns_...`, or on `POST /e` a publishable key
/// `pk_...`) and `publishableKey` (the `key` query parameter of `POST /e`).
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearerAuth",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The admin token, a secret key (ns_<namespace>_<secret>), or, on POST /e only, a \
                         publishable key (pk_<namespace>_<secret>); any other route refuses a publishable key \
                         with 403 FORBIDDEN.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "publishableKey",
            SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Query(
                utoipa::openapi::security::ApiKeyValue::with_description(
                    "key",
                    "A publishable key (pk_<namespace>_<secret>) as a query parameter, on POST /e only (for \
                     navigator.sendBeacon, which cannot send Authorization).",
                ),
            )),
        );
    }
}

/// The `default` response of every operation: the error envelope.
fn error_response() -> RefOr<Response> {
    ResponseBuilder::new()
        .description("Error: the envelope `{error, code, details}`; the status follows `code`.")
        .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build())
        .build()
        .into()
}

/// All routes of the API, from [`MODULES`].
pub fn api() -> ApiRouter {
    MODULES.iter().fold(ApiRouter::new(), |api, register| register(api))
}

/// The OpenAPI document of the whole API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().split().1
}

/// Where the generated document is committed (`docs/openapi.json`), for
/// readers and for the Worker, which embeds it; a test keeps it current.
pub const COMMITTED_DOCUMENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");

/// The OpenAPI document as JSON, built once per process.
pub fn openapi_json() -> Arc<str> {
    static JSON: OnceLock<Arc<str>> = OnceLock::new();
    JSON.get_or_init(|| openapi().to_pretty_json().expect("the OpenAPI document serializes").into()).clone()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Method, Request};
    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;
    use crate::config::ServerConfig;
    use crate::error::RoutingFallback;

    #[test]
    fn every_route_is_documented() {
        let api = api();
        let routes = api.route_list().to_vec();
        let doc: Value = serde_json::to_value(api.split().1).unwrap();
        assert!(routes.len() >= 4, "{routes:?}");
        for r in &routes {
            let op = &doc["paths"][&r.path][r.method.to_lowercase()];
            assert!(op.is_object(), "{} {} is routed but not in the OpenAPI document", r.method, r.path);
            let responses = op["responses"].as_object().unwrap();
            assert!(responses.keys().any(|k| k.starts_with('2')), "{} {} has no success response", r.method, r.path);
            // The Iceberg REST catalog answers errors in the spec's model; everything else in the envelope.
            let error_body = if events_api::iceberg::is_catalog_path(&r.path) {
                "#/components/schemas/IcebergErrorResponse"
            } else {
                "#/components/schemas/ErrorBody"
            };
            assert_eq!(
                op["responses"]["default"]["content"]["application/json"]["schema"]["$ref"], error_body,
                "{} {}",
                r.method, r.path
            );
        }
        // ... and the document describes nothing that is not routed.
        let documented: usize =
            doc["paths"].as_object().unwrap().values().map(|item| item.as_object().unwrap().len()).sum();
        assert_eq!(documented, routes.len());
    }

    #[test]
    fn no_route_is_registered_twice() {
        let mut routes = api().route_list().to_vec();
        let n = routes.len();
        routes.sort();
        routes.dedup();
        assert_eq!(routes.len(), n);
    }

    #[tokio::test]
    async fn every_registered_route_is_served() {
        let state = AppState::new(ServerConfig::default()).unwrap();
        let app = crate::router(state);
        for r in api().route_list() {
            let uri = r.path.split('/').map(|s| if s.starts_with('{') { "x" } else { s }).collect::<Vec<_>>().join("/");
            let req = Request::builder()
                .method(Method::from_bytes(r.method.as_bytes()).unwrap())
                .uri(if uri.is_empty() { "/".to_string() } else { uri })
                .body(Body::empty())
                .unwrap();
            let res = app.clone().oneshot(req).await.unwrap();
            assert!(res.extensions().get::<RoutingFallback>().is_none(), "{} {} is not routed", r.method, r.path);
        }
    }

    /// `docs/openapi.json` is this document, byte for byte: the Worker
    /// serves that file, so both hosts describe the same API.
    #[test]
    fn the_committed_document_is_current() {
        let now = format!("{}\n", openapi_json());
        if std::env::var_os("EVENTS_UPDATE_OPENAPI").is_some() {
            std::fs::write(COMMITTED_DOCUMENT, &now).unwrap();
        }
        let committed = std::fs::read_to_string(COMMITTED_DOCUMENT).unwrap_or_default();
        assert!(
            committed == now,
            "docs/openapi.json is not the generated document; regenerate it with \
             EVENTS_UPDATE_OPENAPI=1 cargo test -p events-server the_committed_document_is_current"
        );
    }

    #[test]
    fn document_is_openapi_3_1_with_error_codes() {
        let doc: Value = serde_json::from_str(&openapi_json()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["title"], "events.do");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        let codes = doc["components"]["schemas"]["ErrorBody"]["properties"]["code"]["enum"].as_array().unwrap();
        assert_eq!(codes.len(), events_core::ErrorCode::ALL.len());
    }
}
