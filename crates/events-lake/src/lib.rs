//! The lakehouse file formats of events.do: Parquet encoding and decoding of
//! event batches, and the partition layout of event files.
//!
//! This crate does no I/O: it turns events into Parquet bytes and back, and
//! names the keys those bytes are stored under. It compiles for the native
//! host and for `wasm32-unknown-unknown` alike.
//!
//! - [`cdc`]: change-capture delta and state files, their keys, the manifest,
//!   and the streaming reconstruction of a collection at a point in time.
//! - [`layout`]: where event files live, `{prefix}/ns=…/date=…/hour=…/{file}.parquet`,
//!   and grouping events into those hourly partitions.
//! - [`columns`]: top-level `data` fields as typed columns (schema evolution).
//! - [`schema`]: the Arrow schema of event files and the typed columns derived from `data`.
//! - [`encode`]: events to one Parquet file, sorted by `(ts, id)`.
//! - [`view`]: what the encoder reads of an event, from an [`events_core::Event`]
//!   or borrowed from the writer's stored JSON ([`StoredEvent`]).
//! - [`decode`]: a Parquet file back to events, or only its footer stats.
//! - [`merge`]: compaction of several files into one, without duplicates.
//! - [`error`]: [`LakeError`], and its mapping to the API's error envelope.

#![warn(missing_docs)]

pub mod cdc;
pub mod columns;
pub mod decode;
pub mod encode;
pub mod error;
pub mod layout;
pub mod merge;
pub mod schema;
pub mod view;

#[cfg(test)]
mod testdata;

pub use columns::{ColumnKind, DataColumn, observe_columns};
pub use decode::{FileStats, decode_events, decode_events_bytes, file_stats};
pub use encode::{encode_events, encode_events_with, file_schema};
pub use error::LakeError;
pub use layout::{
    EVENTS_TABLE_PREFIX, EventFileKey, event_file_key, hour_prefix, parse_event_file_key, partition_by_hour,
};
pub use merge::{merge_event_files, merge_event_files_with};
pub use schema::event_schema;
pub use view::{EventView, StoredEvent};
