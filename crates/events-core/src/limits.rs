//! Every input limit of events.do, in one place.
//!
//! Limits that operators may change are defaults here and fields of the
//! server configuration; the rest are fixed. A value past a limit is always
//! refused with an explicit error, never truncated or queued without bound.

/// Largest accepted ingest request body, after decompression (1 MiB).
pub const MAX_INGEST_BODY_BYTES: usize = 1024 * 1024;
/// Largest compressed ingest body accepted before decoding (1 MiB).
pub const MAX_COMPRESSED_BODY_BYTES: usize = 1024 * 1024;
/// Most events in one ingest batch.
pub const MAX_EVENTS_PER_BATCH: usize = 1_000;
/// Largest single event, serialized as JSON (10 KiB).
pub const MAX_EVENT_BYTES: usize = 10 * 1024;
/// Deepest nesting of objects and arrays in an event, the event object
/// itself counting as level 1. Stored events sit two levels deeper (in a
/// batch array, under `data`), and every reader refuses JSON nested past
/// 127 levels, so this keeps a wide margin.
pub const MAX_EVENT_DEPTH: usize = 64;
/// Shortest and longest event `type`.
pub const MIN_EVENT_TYPE_LEN: usize = 1;
/// Longest event `type`.
pub const MAX_EVENT_TYPE_LEN: usize = 128;
/// How far in the past an event `ts` may lie (7 days, in ms).
pub const MAX_EVENT_AGE_MS: i64 = 7 * 24 * 3600 * 1000;
/// How far in the future an event `ts` may lie (1 hour, in ms).
pub const MAX_EVENT_FUTURE_MS: i64 = 3600 * 1000;
/// Longest `batchId`.
pub const MAX_BATCH_ID_LEN: usize = 256;
/// How long a `batchId` is remembered for idempotent replay (24 h, in ms).
pub const BATCH_ID_TTL_MS: i64 = 24 * 3600 * 1000;
/// How many failing event indices an error lists at most.
pub const MAX_REPORTED_ERRORS: usize = 100;

/// Longest namespace name.
pub const MAX_NAMESPACE_LEN: usize = 64;
/// Longest durable-object name.
pub const MAX_OBJECT_NAME_LEN: usize = 256;

/// Longest event-type pattern.
pub const MAX_PATTERN_LEN: usize = 256;
/// Most dot-separated segments in a pattern.
pub const MAX_PATTERN_SEGMENTS: usize = 16;

/// Default requests per minute per API key.
pub const DEFAULT_REQUESTS_PER_MINUTE: u64 = 1_000;
/// Default events per minute per API key.
pub const DEFAULT_EVENTS_PER_MINUTE: u64 = 100_000;
/// Default events per day per namespace (0 = unlimited).
pub const DEFAULT_EVENTS_PER_DAY: u64 = 0;

/// Most events returned by one page of `GET /events`.
pub const MAX_READ_PAGE: usize = 1_000;
/// Default page size of `GET /events`.
pub const DEFAULT_READ_PAGE: usize = 100;
