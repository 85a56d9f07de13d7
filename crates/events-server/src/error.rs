//! The error envelope on the wire, and a JSON extractor that fails with it.
//!
//! Every failing response has the body `{"error": msg, "code": CODE, "details": {...}}`
//! with the status of [`ErrorCode::http_status`].

use std::borrow::Cow;
use std::convert::Infallible;
use std::marker::PhantomData;

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use events_core::{ApiError, ErrorCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, SchemaType, Type};
use utoipa::openapi::{RefOr, Schema};

/// An [`ApiError`] as an HTTP response.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiErrorResponse(pub ApiError);

impl From<ApiError> for ApiErrorResponse {
    fn from(e: ApiError) -> Self {
        ApiErrorResponse(e)
    }
}

impl ApiErrorResponse {
    /// An error with `code` and `message` and empty details.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiErrorResponse(ApiError::new(code, message))
    }
}

/// The envelope as written on the wire, fields in this order.
#[derive(Serialize)]
struct Envelope<'a> {
    error: &'a str,
    code: &'static str,
    details: Cow<'a, Value>,
}

impl<'a> Envelope<'a> {
    fn of(e: &'a ApiError) -> Self {
        // `details` is always an object.
        let details = match &e.details {
            Value::Object(_) => Cow::Borrowed(&e.details),
            Value::Null => Cow::Owned(json!({})),
            other => Cow::Owned(json!({ "value": other })),
        };
        Envelope { error: &e.message, code: e.code.as_str(), details }
    }
}

/// The envelope of `e` as a JSON value: `{"error", "code", "details"}`, `details` always an object.
pub fn envelope(e: &ApiError) -> Value {
    serde_json::to_value(Envelope::of(e)).unwrap_or_else(|_| json!({}))
}

impl IntoResponse for ApiErrorResponse {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&Envelope::of(&self.0))
            .unwrap_or_else(|_| br#"{"error":"internal error","code":"INTERNAL_ERROR","details":{}}"#.to_vec());
        let mut res = (status, body).into_response();
        res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        res.extensions_mut().insert(self.0);
        res
    }
}

/// Maps a rejection of axum's JSON extractor to the envelope.
pub fn json_rejection(rejection: JsonRejection) -> ApiErrorResponse {
    let (code, message) = match &rejection {
        JsonRejection::MissingJsonContentType(_) => {
            (ErrorCode::UnsupportedMediaType, "expected a request with `Content-Type: application/json`".to_string())
        }
        JsonRejection::JsonSyntaxError(e) => {
            (ErrorCode::InvalidJson, format!("the body is not valid JSON: {}", e.body_text()))
        }
        JsonRejection::JsonDataError(e) => {
            (ErrorCode::InvalidJson, format!("the JSON body does not have the expected shape: {}", e.body_text()))
        }
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            (ErrorCode::PayloadTooLarge, "the request body is too large".to_string())
        }
        JsonRejection::BytesRejection(e) => {
            (ErrorCode::InvalidRequest, format!("cannot read the body: {}", e.body_text()))
        }
        other => (ErrorCode::InvalidRequest, other.body_text()),
    };
    ApiErrorResponse::new(code, message)
}

/// `axum::Json`, but failing with the API error envelope instead of plain text.
///
/// As a response it serializes `T` with `Content-Type: application/json`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiErrorResponse;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// A JSON body read but not yet parsed, so that a handler authenticates
/// before it looks at the body: a caller without valid credentials gets
/// `401` whatever it sent. [`JsonBody::parse`] fails as [`ApiJson`] would
/// (`INVALID_JSON`, `UNSUPPORTED_MEDIA_TYPE`, `PAYLOAD_TOO_LARGE`).
#[derive(Debug)]
pub struct JsonBody<T> {
    /// Whether the content type is JSON, and the bytes; or why they could not be read.
    read: Result<(bool, Bytes), ApiErrorResponse>,
    of: PhantomData<fn() -> T>,
}

impl<T, S> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
{
    type Rejection = Infallible;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json(req.headers());
        let read = Bytes::from_request(req, state).await.map(|b| (json, b)).map_err(|e| json_rejection(e.into()));
        Ok(JsonBody { read, of: PhantomData })
    }
}

impl<T: DeserializeOwned> JsonBody<T> {
    /// The body as `T`; call it once the caller is authenticated.
    pub fn parse(self) -> Result<T, ApiErrorResponse> {
        let (json, bytes) = self.read?;
        if !json {
            return Err(json_rejection(JsonRejection::MissingJsonContentType(Default::default())));
        }
        axum::Json::<T>::from_bytes(&bytes).map(|axum::Json(v)| v).map_err(json_rejection)
    }
}

/// A request body read but not yet looked at, for the same reason as
/// [`JsonBody`]: a body that could not be read (too large) is reported by
/// [`RawBody::bytes`], after authentication, with the envelope.
#[derive(Debug)]
pub struct RawBody(Result<Bytes, ApiErrorResponse>);

impl<S> FromRequest<S> for RawBody
where
    S: Send + Sync,
{
    type Rejection = Infallible;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Ok(RawBody(Bytes::from_request(req, state).await.map_err(|e| json_rejection(e.into()))))
    }
}

impl RawBody {
    /// The bytes; call it once the caller is authenticated.
    pub fn bytes(self) -> Result<Bytes, ApiErrorResponse> {
        self.0
    }
}

/// Whether `Content-Type` is `application/json` or `application/<x>+json`.
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence.strip_prefix("application/").is_some_and(|sub| sub == "json" || sub.ends_with("+json"))
}

/// A query string, parsed into `T` by [`ApiQuery::parse`] once the handler has
/// authenticated the caller (so that a caller without valid credentials gets
/// `401` whatever it sent); a malformed one answers `400 INVALID_QUERY` in the
/// envelope instead of axum's plain text.
#[derive(Debug, Clone)]
pub struct ApiQuery<T> {
    uri: axum::http::Uri,
    of: PhantomData<fn() -> T>,
}

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
{
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ApiQuery { uri: parts.uri.clone(), of: PhantomData })
    }
}

impl<T: DeserializeOwned> ApiQuery<T> {
    /// The query string as `T`.
    pub fn parse(&self) -> Result<T, ApiErrorResponse> {
        axum::extract::Query::<T>::try_from_uri(&self.uri).map(|q| q.0).map_err(|e| query_rejection(&e))
    }
}

/// `axum::extract::Path`, but failing with the envelope (`400 INVALID_REQUEST`,
/// e.g. for a segment that is not UTF-8 once percent-decoded) instead of plain text.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiErrorResponse;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(rejection) => Err(ApiErrorResponse::new(
                ErrorCode::InvalidRequest,
                format!("invalid path: {}", rejection.body_text()),
            )),
        }
    }
}

/// Maps a rejection of axum's query extractor to `400 INVALID_QUERY`.
pub fn query_rejection(rejection: &QueryRejection) -> ApiErrorResponse {
    ApiErrorResponse::new(ErrorCode::InvalidQuery, format!("invalid query string: {}", rejection.body_text()))
}

/// Marks responses of [`not_found`] and [`method_not_allowed`] (in the response
/// extensions), telling them apart from handlers that answer 404 themselves.
#[derive(Debug, Clone, Copy)]
pub struct RoutingFallback;

/// Handler for unknown routes: `404 NOT_FOUND`.
pub async fn not_found(req: Request) -> Response {
    let msg = format!("no route for {} {}", req.method(), req.uri().path());
    (axum::Extension(RoutingFallback), ApiErrorResponse::new(ErrorCode::NotFound, msg)).into_response()
}

/// Handler for known routes called with the wrong method: `405 METHOD_NOT_ALLOWED`
/// (axum adds the `Allow` header).
pub async fn method_not_allowed(req: Request) -> Response {
    let msg = format!("method {} is not allowed on {}", req.method(), req.uri().path());
    (axum::Extension(RoutingFallback), ApiErrorResponse::new(ErrorCode::MethodNotAllowed, msg)).into_response()
}

/// The error envelope in the OpenAPI document (component `ErrorBody`).
///
/// Only a schema: responses are built from [`ApiError`].
#[derive(Debug)]
pub struct ErrorBody;

impl utoipa::PartialSchema for ErrorBody {
    fn schema() -> RefOr<Schema> {
        let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        ObjectBuilder::new()
            .description(Some("The error envelope of every failing response."))
            .property(
                "error",
                ObjectBuilder::new().schema_type(Type::String).description(Some("Human-readable message.")),
            )
            .required("error")
            .property(
                "code",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(codes))
                    .description(Some("Stable machine-readable code; each maps to one HTTP status.")),
            )
            .required("code")
            .property(
                "details",
                ObjectBuilder::new()
                    .schema_type(SchemaType::new(Type::Object))
                    .additional_properties(Some(AdditionalProperties::FreeForm(true)))
                    .description(Some("Structured context; `{}` when none.")),
            )
            .required("details")
            .examples([json!({"error": "no route for GET /nope", "code": "NOT_FOUND", "details": {}})])
            .into()
    }
}

impl utoipa::ToSchema for ErrorBody {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ErrorBody")
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::{Body, to_bytes};
    use axum::extract::DefaultBodyLimit;
    use axum::routing::post;
    use serde::Deserialize;
    use tower::ServiceExt;

    use super::*;

    async fn body_json(res: Response) -> Value {
        let bytes = to_bytes(res.into_body(), usize::MAX).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn envelope_response_shape() {
        let err = ApiError::new(ErrorCode::InvalidEvent, "bad").with_details(json!({"indices": [1]}));
        let res = ApiErrorResponse::from(err).into_response();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(body_json(res).await, json!({"error": "bad", "code": "INVALID_EVENT", "details": {"indices": [1]}}));
    }

    #[tokio::test]
    async fn envelope_fields_are_in_order() {
        let res = ApiErrorResponse::new(ErrorCode::NotFound, "gone").into_response();
        let bytes = to_bytes(res.into_body(), usize::MAX).await.unwrap();
        assert_eq!(&bytes[..], br#"{"error":"gone","code":"NOT_FOUND","details":{}}"#);
    }

    #[tokio::test]
    async fn every_code_gets_its_status_and_an_object_details() {
        for &code in ErrorCode::ALL {
            let res = ApiErrorResponse::new(code, "m").into_response();
            assert_eq!(res.status().as_u16(), code.http_status(), "{code}");
            let v = body_json(res).await;
            assert_eq!(v["code"], code.as_str());
            assert_eq!(v["details"], json!({}));
            assert_eq!(v.as_object().unwrap().len(), 3);
        }
    }

    #[tokio::test]
    async fn null_details_become_empty_object() {
        let err = ApiError { code: ErrorCode::Conflict, message: "x".into(), details: Value::Null };
        let v = body_json(ApiErrorResponse(err).into_response()).await;
        assert_eq!(v, json!({"error": "x", "code": "CONFLICT", "details": {}}));
    }

    #[derive(Deserialize, Serialize)]
    struct Thing {
        n: u32,
    }

    async fn echo(ApiJson(t): ApiJson<Thing>) -> ApiJson<Thing> {
        ApiJson(t)
    }

    async fn call(content_type: Option<&str>, body: impl Into<Body>) -> Response {
        let app = Router::new().route("/", post(echo)).layer(DefaultBodyLimit::max(64));
        let mut req = Request::post("/");
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        app.oneshot(req.body(body.into()).unwrap()).await.unwrap()
    }

    #[tokio::test]
    async fn api_json_accepts_valid_bodies() {
        let res = call(Some("application/json"), r#"{"n": 7}"#).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(body_json(res).await, json!({"n": 7}));
    }

    #[tokio::test]
    async fn api_json_rejections_use_the_envelope() {
        for (ct, body, status, code) in [
            (Some("application/json"), "{not json".to_string(), 400, "INVALID_JSON"),
            (Some("application/json"), r#"{"n": "seven"}"#.to_string(), 400, "INVALID_JSON"),
            (Some("text/plain"), r#"{"n": 1}"#.to_string(), 415, "UNSUPPORTED_MEDIA_TYPE"),
            (None, r#"{"n": 1}"#.to_string(), 415, "UNSUPPORTED_MEDIA_TYPE"),
            (
                Some("application/json"),
                format!(r#"{{"n": 1, "pad": "{}"}}"#, "x".repeat(100)),
                413,
                "PAYLOAD_TOO_LARGE",
            ),
        ] {
            let res = call(ct, body).await;
            assert_eq!(res.status().as_u16(), status, "{ct:?} {code}");
            assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
            let v = body_json(res).await;
            assert_eq!(v["code"], code);
            assert!(v["error"].as_str().is_some_and(|m| !m.is_empty()));
            assert_eq!(v["details"], json!({}));
        }
    }

    #[derive(Deserialize)]
    struct Page {
        #[allow(dead_code)]
        limit: Option<usize>,
    }

    async fn page(query: ApiQuery<Page>) -> Result<&'static str, ApiErrorResponse> {
        query.parse()?;
        Ok("ok")
    }

    #[tokio::test]
    async fn api_query_rejections_use_the_envelope() {
        let app = Router::new().route("/", axum::routing::get(page));
        for query in ["?limit=-1", "?limit=1&limit=2", "?limit=x"] {
            let res =
                app.clone().oneshot(Request::get(format!("/{query}")).body(Body::empty()).unwrap()).await.unwrap();
            assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{query}");
            assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
            assert_eq!(body_json(res).await["code"], "INVALID_QUERY", "{query}");
        }
        let res = app.oneshot(Request::get("/?limit=5").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }

    /// Authenticates (a header `auth: yes`) before it parses the body.
    async fn guarded(
        headers: axum::http::HeaderMap,
        body: JsonBody<Thing>,
    ) -> Result<ApiJson<Thing>, ApiErrorResponse> {
        if headers.get("auth").is_none() {
            return Err(ApiErrorResponse::new(ErrorCode::AuthRequired, "no credentials"));
        }
        Ok(ApiJson(body.parse()?))
    }

    #[tokio::test]
    async fn json_body_is_parsed_only_when_the_handler_asks() {
        let app = Router::new().route("/", post(guarded)).layer(DefaultBodyLimit::max(64));
        let send = |auth: bool, ct: &str, body: String| {
            let mut req = Request::post("/").header(header::CONTENT_TYPE, ct);
            if auth {
                req = req.header("auth", "yes");
            }
            app.clone().oneshot(req.body(Body::from(body)).unwrap())
        };
        let big = format!(r#"{{"n": 1, "pad": "{}"}}"#, "x".repeat(100));
        for (ct, body, code) in [
            ("application/json", "{not json".to_string(), "INVALID_JSON"),
            ("text/plain", r#"{"n": 1}"#.to_string(), "UNSUPPORTED_MEDIA_TYPE"),
            ("application/json", big, "PAYLOAD_TOO_LARGE"),
        ] {
            let res = send(false, ct, body.clone()).await.unwrap();
            assert_eq!(body_json(res).await["code"], "AUTH_REQUIRED", "{ct} {code}");
            let res = send(true, ct, body).await.unwrap();
            assert_eq!(body_json(res).await["code"], code, "{ct}");
        }
        let res = send(true, "application/merge-patch+json; charset=utf-8", r#"{"n": 3}"#.into()).await.unwrap();
        assert_eq!(body_json(res).await, json!({"n": 3}));
    }

    #[test]
    fn error_body_schema_lists_every_code() {
        let schema = serde_json::to_value(<ErrorBody as utoipa::PartialSchema>::schema()).unwrap();
        let codes = schema["properties"]["code"]["enum"].as_array().unwrap();
        assert_eq!(codes.len(), ErrorCode::ALL.len());
        for code in ErrorCode::ALL {
            assert!(codes.contains(&json!(code.as_str())), "{code}");
        }
        assert_eq!(schema["required"], json!(["error", "code", "details"]));
    }
}
