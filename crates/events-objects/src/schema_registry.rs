//! [`SchemaRegistry`]: one per namespace. JSON Schemas per event type or type
//! pattern, immutable versions, compatibility rules, and validation at ingest.
//!
//! A schema describes an event's *data*: every field of the submitted event
//! except the envelope (`type`, `ts`, `id`, `source`). Error paths are JSON
//! Pointers into that data (`/customer/email`).
//!
//! Lookup of the schema of an event type: the exact type first, then the
//! most specific matching pattern (most literal segments, then the longer
//! pattern, then alphabetical order).

use std::collections::HashMap;
use std::rc::Rc;

use events_core::pattern::{Pattern, Segment};
use events_core::{ApiError, ErrorCode, Event, Timestamp};
use events_runtime::{DurableObject, Host, Migration, ObjectContext, ObjectResult, Row, SqlStorage};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::schema_compat::{Difference, subset_differences};
use crate::schema_regex::check_regex;

/// Largest accepted schema, in bytes of JSON.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;
/// Deepest accepted nesting of a schema document.
pub const MAX_SCHEMA_DEPTH: usize = 32;
/// Most subjects (types and patterns) with a live schema in one namespace.
pub const MAX_SUBJECTS_PER_NAMESPACE: usize = 1_000;
/// Most versions one subject may accumulate.
pub const MAX_VERSIONS_PER_SUBJECT: u32 = 1_000;
/// Compiled validators kept in memory per namespace.
pub const MAX_CACHED_VALIDATORS: usize = 128;
/// Validation errors reported per event.
pub const MAX_ERRORS_PER_EVENT: usize = 10;
/// Longest schema description.
pub const MAX_DESCRIPTION_LEN: usize = 1_024;
/// Approximate size limit of one compiled `pattern` regex (linear-time engine).
pub const MAX_REGEX_COMPILED_BYTES: usize = 1 << 20;
/// The data field added to events that failed validation in `warn` mode.
pub const SCHEMA_ERRORS_FIELD: &str = "_schemaErrors";

/// What happens to events that fail their schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValidationMode {
    /// Not validated.
    Off,
    /// Accepted; reported in the ingest answer and marked with `_schemaErrors`.
    Warn,
    /// The whole batch is refused with `SCHEMA_VALIDATION_ERROR`.
    #[default]
    Strict,
}

/// Which earlier versions a new version must be compatible with (Confluent semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Compatibility {
    /// No check.
    None,
    /// Data valid under the latest version is valid under the new one.
    #[default]
    Backward,
    /// As `Backward`, against every live version.
    BackwardTransitive,
    /// Data valid under the new version is valid under the latest one.
    Forward,
    /// As `Forward`, against every live version.
    ForwardTransitive,
    /// Both `Backward` and `Forward`.
    Full,
    /// Both, against every live version.
    FullTransitive,
}

impl Compatibility {
    fn directions(self) -> (bool, bool, bool) {
        use Compatibility::*;
        // (backward, forward, transitive)
        match self {
            None => (false, false, false),
            Backward => (true, false, false),
            BackwardTransitive => (true, false, true),
            Forward => (false, true, false),
            ForwardTransitive => (false, true, true),
            Full => (true, true, false),
            FullTransitive => (true, true, true),
        }
    }
}

/// Namespace-wide settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RegistryConfig {
    /// Mode of schemas that set none.
    pub mode: ValidationMode,
    /// Compatibility of registrations that name none.
    pub compatibility: Compatibility,
}

/// A registration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterSchema {
    /// An event type (`order.created`) or a pattern (`order.*`).
    pub subject: String,
    /// Whether `subject` is a pattern.
    pub is_pattern: bool,
    /// The JSON Schema (draft 2020-12 or draft-07).
    pub schema: Value,
    /// Compatibility rule for this and later registrations of the subject.
    pub compatibility: Option<Compatibility>,
    /// Mode of this schema; `None` follows the namespace.
    pub mode: Option<ValidationMode>,
    /// Free text.
    pub description: Option<String>,
}

/// One stored version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaVersion {
    /// Event type or pattern.
    pub subject: String,
    /// Whether `subject` is a pattern.
    pub is_pattern: bool,
    /// 1, 2, ...
    pub version: u32,
    /// The schema.
    pub schema: Value,
    /// The compatibility rule it was registered under.
    pub compatibility: Compatibility,
    /// Its own mode, if any.
    pub mode: Option<ValidationMode>,
    /// Free text.
    pub description: Option<String>,
    /// Registration time.
    pub created_at: Timestamp,
    /// Whether the subject was deleted after this version.
    pub deleted: bool,
}

/// One schema error of one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// JSON Pointer into the event data (`""` for the whole data).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// An event that failed its schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventFailure {
    /// Position in the batch.
    pub index: usize,
    /// The event's type.
    pub event_type: String,
    /// The subject whose schema applied.
    pub subject: String,
    /// Its version.
    pub version: u32,
    /// The mode that applied (`warn` or `strict`).
    pub mode: ValidationMode,
    /// The errors (at most [`MAX_ERRORS_PER_EVENT`]).
    pub errors: Vec<Violation>,
}

/// Requests to a [`SchemaRegistry`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SchemaRequest {
    /// Registers a new version (or returns the latest one if identical).
    Register(RegisterSchema),
    /// Latest live version of every subject.
    List,
    /// One version (the latest when `version` is `None`).
    Get {
        /// Type or pattern.
        subject: String,
        /// Version number.
        version: Option<u32>,
    },
    /// Every version of a subject, deleted ones included.
    Versions {
        /// Type or pattern.
        subject: String,
    },
    /// Deletes a subject (its versions stay readable in the history).
    Delete {
        /// Type or pattern.
        subject: String,
    },
    /// Reads the namespace settings.
    GetConfig,
    /// Replaces the namespace settings.
    SetConfig(RegistryConfig),
    /// Validates a batch; warn-mode failures are marked in the returned events.
    Validate {
        /// The events, returned in [`SchemaResponse::Validated`].
        events: Vec<Event>,
    },
}

/// Answers of a [`SchemaRegistry`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SchemaResponse {
    /// A registration: the version and whether it was new.
    Registered {
        /// The version now latest.
        version: SchemaVersion,
        /// False when an identical schema was already the latest version.
        created: bool,
    },
    /// Several versions.
    Versions(Vec<SchemaVersion>),
    /// One version.
    Version(SchemaVersion),
    /// Namespace settings.
    Config(RegistryConfig),
    /// Validation outcome.
    Validated {
        /// The events, warn-mode failures marked with `_schemaErrors`.
        events: Vec<Event>,
        /// Whether the namespace has any live schema (callers cache `false`).
        has_schemas: bool,
        /// Events that failed (both modes).
        failures: Vec<EventFailure>,
    },
}

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "schema versions",
    sql: "CREATE TABLE schemas (
              subject TEXT NOT NULL,
              version INTEGER NOT NULL,
              is_pattern INTEGER NOT NULL,
              schema TEXT NOT NULL,
              compatibility TEXT NOT NULL,
              mode TEXT,
              description TEXT,
              created_at INTEGER NOT NULL,
              deleted INTEGER NOT NULL DEFAULT 0,
              PRIMARY KEY (subject, version)
          ) WITHOUT ROWID;",
}];

const COLUMNS: &str = "subject, version, is_pattern, schema, compatibility, mode, description, created_at, deleted";

type CompiledValidator = jsonschema::Validator;

/// A live subject, as kept in memory.
struct Live {
    version: SchemaVersion,
    pattern: Option<Pattern>,
}

/// The namespace's schema registry object.
pub struct SchemaRegistry {
    config: RegistryConfig,
    live: Vec<Live>,
    validators: HashMap<(String, u32), Rc<CompiledValidator>>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, message)
}

fn enum_str<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

fn from_str<T: for<'de> Deserialize<'de>>(s: &str) -> ObjectResult<T> {
    serde_json::from_value(Value::String(s.to_string()))
        .map_err(|e| ApiError::new(ErrorCode::StorageError, format!("stored value {s:?}: {e}")))
}

fn row_version(r: &Row) -> ObjectResult<SchemaVersion> {
    Ok(SchemaVersion {
        subject: r.str(0).to_string(),
        version: r.i64(1) as u32,
        is_pattern: r.i64(2) != 0,
        schema: serde_json::from_str(r.str(3))
            .map_err(|e| ApiError::new(ErrorCode::StorageError, format!("stored schema: {e}")))?,
        compatibility: from_str(r.str(4))?,
        mode: r.opt_str(5).map(from_str).transpose()?,
        description: r.opt_str(6).map(str::to_string),
        created_at: Timestamp(r.i64(7)),
        deleted: r.i64(8) != 0,
    })
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// The draft a schema declares (`$schema`); draft 2020-12 when absent.
pub fn schema_draft(schema: &Value) -> Result<jsonschema::Draft, ApiError> {
    match schema.get("$schema") {
        None => Ok(jsonschema::Draft::Draft202012),
        Some(Value::String(s)) => {
            let s = s.trim_end_matches('#').trim_start_matches("https://").trim_start_matches("http://");
            match s {
                "json-schema.org/draft/2020-12/schema" => Ok(jsonschema::Draft::Draft202012),
                "json-schema.org/draft-07/schema" => Ok(jsonschema::Draft::Draft7),
                _ => Err(bad("$schema must be draft 2020-12 or draft-07")),
            }
        }
        Some(_) => Err(bad("$schema must be a string")),
    }
}

/// Walks a schema: refuses remote references and unsafe regexes.
fn check_schema_tree(v: &Value, path: &str, errors: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let here = format!("{path}/{k}");
                match (k.as_str(), child) {
                    ("enum" | "const" | "examples" | "default", _) => continue,
                    ("$ref" | "$dynamicRef", Value::String(r)) if !r.starts_with('#') => {
                        errors.push(format!("{here}: only local references (#...) are allowed, not {r:?}"));
                    }
                    ("pattern", Value::String(re)) => {
                        if let Err(e) = check_regex(re) {
                            errors.push(format!("{here}: unsafe regex {re:?}: {e}"));
                        }
                    }
                    ("patternProperties", Value::Object(pp)) => {
                        for re in pp.keys() {
                            if let Err(e) = check_regex(re) {
                                errors.push(format!("{here}: unsafe regex {re:?}: {e}"));
                            }
                        }
                    }
                    _ => {}
                }
                check_schema_tree(child, &here, errors);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                check_schema_tree(child, &format!("{path}/{i}"), errors);
            }
        }
        _ => {}
    }
}

/// Checks and compiles a schema as registration does; the validator checks formats,
/// resolves only local `$ref`s and runs `pattern`s on a linear-time regex engine.
pub fn compile_schema(schema: &Value) -> Result<CompiledValidator, ApiError> {
    if !schema.is_object() && !schema.is_boolean() {
        return Err(bad("a schema is a JSON object (or a boolean)"));
    }
    let size = serde_json::to_vec(schema).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > MAX_SCHEMA_BYTES {
        return Err(bad(format!("the schema is {size} bytes; the limit is {MAX_SCHEMA_BYTES}"))
            .with_details(json!({"maxSize": MAX_SCHEMA_BYTES, "size": size})));
    }
    let d = depth(schema);
    if d > MAX_SCHEMA_DEPTH {
        return Err(bad(format!("the schema nests {d} levels; the limit is {MAX_SCHEMA_DEPTH}")));
    }
    let draft = schema_draft(schema)?;
    let mut errors = Vec::new();
    check_schema_tree(schema, "", &mut errors);
    if !errors.is_empty() {
        return Err(
            bad(format!("the schema is refused: {}", errors.join("; "))).with_details(json!({"errors": errors}))
        );
    }
    jsonschema::options()
        .with_draft(draft)
        .should_validate_formats(true)
        .with_pattern_options(jsonschema::PatternOptions::regex().size_limit(MAX_REGEX_COMPILED_BYTES))
        .build(schema)
        .map_err(|e| bad(format!("invalid JSON Schema: {e}")).with_details(json!({"errors": [e.to_string()]})))
}

/// Validates one event's data with a compiled schema.
pub fn violations(validator: &CompiledValidator, data: &Value) -> Vec<Violation> {
    validator
        .iter_errors(data)
        .take(MAX_ERRORS_PER_EVENT)
        .map(|e| Violation { path: e.instance_path().as_str().to_string(), message: e.to_string() })
        .collect()
}

/// The breaking changes between two schemas under a compatibility rule (one direction each).
pub fn compatibility_differences(old: &Value, new: &Value, backward: bool, forward: bool) -> Vec<Difference> {
    let mut out = Vec::new();
    if backward {
        out.extend(subset_differences(old, new));
    }
    if forward {
        out.extend(subset_differences(new, old).into_iter().map(|mut d| {
            d.message = format!("forward: {}", d.message);
            d
        }));
    }
    out
}

fn literal_segments(p: &Pattern) -> usize {
    p.segments().iter().filter(|s| matches!(s, Segment::Literal(_))).count()
}

impl SchemaRegistry {
    fn reload<H: Host>(&mut self, cx: &ObjectContext<H>) -> ObjectResult<()> {
        let rows = cx.storage().query(
            &format!(
                "SELECT {COLUMNS} FROM schemas s WHERE deleted = 0
                   AND version = (SELECT MAX(version) FROM schemas t WHERE t.subject = s.subject)"
            ),
            &[],
        )?;
        let mut live = Vec::with_capacity(rows.len());
        for r in &rows {
            let version = row_version(r)?;
            let pattern = if version.is_pattern { Some(Pattern::parse(&version.subject)?) } else { None };
            live.push(Live { version, pattern });
        }
        // Most specific first: exact types, then patterns by literal segments, length, name.
        live.sort_by(|a, b| {
            let key = |l: &Live| {
                let lits = l.pattern.as_ref().map_or(usize::MAX, literal_segments);
                (std::cmp::Reverse(lits), std::cmp::Reverse(l.version.subject.len()), l.version.subject.clone())
            };
            key(a).cmp(&key(b))
        });
        self.live = live;
        self.config = cx.kv().get("config")?.unwrap_or_default();
        Ok(())
    }

    /// The live schema that applies to `event_type`.
    fn lookup(&self, event_type: &str) -> Option<&SchemaVersion> {
        self.live
            .iter()
            .find(|l| match &l.pattern {
                None => l.version.subject == event_type,
                Some(p) => p.matches(event_type),
            })
            .map(|l| &l.version)
    }

    fn validator(&mut self, v: &SchemaVersion) -> ObjectResult<Rc<CompiledValidator>> {
        let key = (v.subject.clone(), v.version);
        if let Some(hit) = self.validators.get(&key) {
            return Ok(hit.clone());
        }
        let compiled = Rc::new(compile_schema(&v.schema)?);
        if self.validators.len() >= MAX_CACHED_VALIDATORS
            && let Some(evict) = self.validators.keys().next().cloned()
        {
            self.validators.remove(&evict);
        }
        self.validators.insert(key, compiled.clone());
        assert!(self.validators.len() <= MAX_CACHED_VALIDATORS);
        Ok(compiled)
    }

    fn versions<H: Host>(cx: &ObjectContext<H>, subject: &str) -> ObjectResult<Vec<SchemaVersion>> {
        let rows = cx
            .storage()
            .query(&format!("SELECT {COLUMNS} FROM schemas WHERE subject = ?1 ORDER BY version"), &[subject.into()])?;
        rows.iter().map(row_version).collect()
    }

    fn register<H: Host>(&mut self, cx: &ObjectContext<H>, req: RegisterSchema) -> ObjectResult<SchemaResponse> {
        if req.is_pattern {
            Pattern::parse(&req.subject)?;
        } else if !events_core::event::valid_event_type(&req.subject) {
            return Err(bad(format!("{:?} is not a valid event type", req.subject)));
        }
        if req.description.as_ref().is_some_and(|d| d.len() > MAX_DESCRIPTION_LEN) {
            return Err(bad(format!("descriptions are at most {MAX_DESCRIPTION_LEN} characters")));
        }
        compile_schema(&req.schema)?;
        let history = Self::versions(cx, &req.subject)?;
        let live: Vec<&SchemaVersion> = {
            // Versions after the last deletion are the live history.
            let start = history.iter().rposition(|v| v.deleted).map_or(0, |i| i + 1);
            history[start..].iter().collect()
        };
        if let Some(last) = history.last()
            && last.is_pattern != req.is_pattern
        {
            return Err(bad("a subject is either an event type or a pattern, not both"));
        }
        let compatibility =
            req.compatibility.or_else(|| live.last().map(|v| v.compatibility)).unwrap_or(self.config.compatibility);
        if let Some(latest) = live.last()
            && latest.schema == req.schema
            && latest.mode == req.mode
            && latest.description == req.description
            && latest.compatibility == compatibility
        {
            return Ok(SchemaResponse::Registered { version: (*latest).clone(), created: false });
        }
        let next = history.last().map_or(1, |v| v.version + 1);
        if next > MAX_VERSIONS_PER_SUBJECT {
            return Err(ApiError::new(ErrorCode::Conflict, "this subject has the maximum number of versions"));
        }
        if live.is_empty() && self.live.len() >= MAX_SUBJECTS_PER_NAMESPACE {
            return Err(ApiError::new(ErrorCode::Conflict, "this namespace has the maximum number of schemas"));
        }
        let (backward, forward, transitive) = compatibility.directions();
        let against: Vec<&SchemaVersion> =
            if transitive { live.clone() } else { live.last().copied().into_iter().collect() };
        let mut differences = Vec::new();
        for old in against.iter().rev() {
            for d in compatibility_differences(&old.schema, &req.schema, backward, forward) {
                differences.push(json!({"version": old.version, "path": d.path, "kind": d.kind, "message": d.message}));
            }
        }
        if !differences.is_empty() {
            return Err(ApiError::new(
                ErrorCode::SchemaIncompatible,
                format!(
                    "the schema is not {} compatible with {} of {:?}",
                    enum_str(&compatibility),
                    if transitive { "every live version" } else { "the latest version" },
                    req.subject
                ),
            )
            .with_details(json!({"compatibility": compatibility, "differences": differences})));
        }
        let now = cx.now();
        let schema_text = serde_json::to_string(&req.schema).map_err(|e| ApiError::internal(e.to_string()))?;
        cx.storage().execute(
            "INSERT INTO schemas (subject, version, is_pattern, schema, compatibility, mode, description, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            &[
                req.subject.as_str().into(),
                next.into(),
                req.is_pattern.into(),
                schema_text.into(),
                enum_str(&compatibility).into(),
                req.mode.map(|m| enum_str(&m)).into(),
                req.description.clone().into(),
                now.as_millis().into(),
            ],
        )?;
        self.reload(cx)?;
        let version = SchemaVersion {
            subject: req.subject,
            is_pattern: req.is_pattern,
            version: next,
            schema: req.schema,
            compatibility,
            mode: req.mode,
            description: req.description,
            created_at: now,
            deleted: false,
        };
        Ok(SchemaResponse::Registered { version, created: true })
    }

    /// Registers a schema version ([`SchemaRequest::Register`]).
    fn register_or_reload<H: Host>(
        &mut self,
        cx: &ObjectContext<H>,
        r: RegisterSchema,
    ) -> ObjectResult<SchemaResponse> {
        let result = self.register(cx, r);
        if result.is_err() {
            // The request's writes roll back; keep memory in step with storage.
            self.reload(cx)?;
        }
        result
    }

    /// The live schema of every subject, by subject ([`SchemaRequest::List`]).
    fn list(&self) -> SchemaResponse {
        SchemaResponse::Versions({
            let mut v: Vec<SchemaVersion> = self.live.iter().map(|l| l.version.clone()).collect();
            v.sort_by(|a, b| a.subject.cmp(&b.subject));
            v
        })
    }

    /// One version of a subject, or its live one ([`SchemaRequest::Get`]).
    fn get<H: Host>(cx: &ObjectContext<H>, subject: &str, version: Option<u32>) -> ObjectResult<SchemaResponse> {
        let all = Self::versions(cx, subject)?;
        let latest = all.last().map(|v| v.version);
        let found = match version {
            Some(n) => all.into_iter().find(|v| v.version == n),
            None => all.into_iter().next_back().filter(|v| !v.deleted),
        };
        found.map(SchemaResponse::Version).ok_or_else(|| {
            let ns = cx.name();
            ApiError::not_found(match (version, latest) {
                (Some(n), Some(latest)) => {
                    format!("schema {subject:?} in namespace {ns} has no version {n} (latest: {latest})")
                }
                (Some(n), None) => format!("no schema {subject:?} in namespace {ns}, so no version {n}"),
                (None, Some(_)) => format!("schema {subject:?} in namespace {ns} is deleted"),
                (None, None) => format!("no schema {subject:?} in namespace {ns}"),
            })
        })
    }

    /// Every version of a subject ([`SchemaRequest::Versions`]).
    fn all_versions<H: Host>(cx: &ObjectContext<H>, subject: &str) -> ObjectResult<SchemaResponse> {
        let all = Self::versions(cx, subject)?;
        if all.is_empty() {
            return Err(ApiError::not_found(format!("no schema {subject:?} in namespace {}", cx.name())));
        }
        Ok(SchemaResponse::Versions(all))
    }

    /// Marks a subject's versions deleted ([`SchemaRequest::Delete`]).
    fn delete<H: Host>(&mut self, cx: &ObjectContext<H>, subject: &str) -> ObjectResult<SchemaResponse> {
        let n = cx
            .storage()
            .execute("UPDATE schemas SET deleted = 1 WHERE subject = ?1 AND deleted = 0", &[subject.into()])?;
        if n == 0 {
            return Err(ApiError::not_found(format!("no live schema {subject:?} in namespace {}", cx.name())));
        }
        self.validators.retain(|(s, _), _| s != subject);
        self.reload(cx)?;
        let all = Self::versions(cx, subject)?;
        Ok(SchemaResponse::Versions(all))
    }

    /// Replaces the namespace-wide settings ([`SchemaRequest::SetConfig`]).
    fn set_config<H: Host>(&mut self, cx: &ObjectContext<H>, config: RegistryConfig) -> ObjectResult<SchemaResponse> {
        cx.kv().put("config", &config)?;
        self.config = config;
        Ok(SchemaResponse::Config(config))
    }

    fn validate(&mut self, mut events: Vec<Event>) -> ObjectResult<SchemaResponse> {
        let mut failures = Vec::new();
        if !self.live.is_empty() {
            for (index, event) in events.iter_mut().enumerate() {
                let Some(schema) = self.lookup(&event.event_type).cloned() else { continue };
                let mode = schema.mode.unwrap_or(self.config.mode);
                if mode == ValidationMode::Off {
                    continue;
                }
                let validator = self.validator(&schema)?;
                let data = Value::Object(std::mem::take(&mut event.data));
                let errors = violations(&validator, &data);
                let Value::Object(map) = data else { unreachable!("built as an object above") };
                event.data = map;
                if errors.is_empty() {
                    continue;
                }
                if mode == ValidationMode::Warn {
                    let marks = errors.iter().map(|v| Value::String(format!("{}: {}", v.path, v.message))).collect();
                    event.data.insert(SCHEMA_ERRORS_FIELD.into(), Value::Array(marks));
                }
                failures.push(EventFailure {
                    index,
                    event_type: event.event_type.clone(),
                    subject: schema.subject.clone(),
                    version: schema.version,
                    mode,
                    errors,
                });
            }
        }
        Ok(SchemaResponse::Validated { events, has_schemas: !self.live.is_empty(), failures })
    }
}

impl DurableObject for SchemaRegistry {
    const CLASS: &'static str = "SchemaRegistry";
    /// Validates the batches of namespaces with schemas on the ingest path.
    const PLACEMENT: events_runtime::Placement = events_runtime::Placement::Latency;
    type Request = SchemaRequest;
    type Response = SchemaResponse;

    fn migrations() -> &'static [Migration] {
        MIGRATIONS
    }

    async fn load<H: Host>(cx: &ObjectContext<H>) -> ObjectResult<Self> {
        let mut me = SchemaRegistry { config: RegistryConfig::default(), live: Vec::new(), validators: HashMap::new() };
        me.reload(cx)?;
        Ok(me)
    }

    async fn handle<H: Host>(&mut self, cx: &ObjectContext<H>, req: SchemaRequest) -> ObjectResult<SchemaResponse> {
        match req {
            SchemaRequest::Register(r) => self.register_or_reload(cx, r),
            SchemaRequest::List => Ok(self.list()),
            SchemaRequest::Get { subject, version } => Self::get(cx, &subject, version),
            SchemaRequest::Versions { subject } => Self::all_versions(cx, &subject),
            SchemaRequest::Delete { subject } => self.delete(cx, &subject),
            SchemaRequest::GetConfig => Ok(SchemaResponse::Config(self.config)),
            SchemaRequest::SetConfig(config) => self.set_config(cx, config),
            SchemaRequest::Validate { events } => self.validate(events),
        }
    }
}
