//! Manifests and manifest lists (spec "Manifests", "Manifest Lists"), v2,
//! for unpartitioned tables of Parquet data files.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::IcebergError;
use crate::avro::{self, Value};
use crate::metadata::Schema;

/// Manifest entry status: the file was already in the table.
pub const STATUS_EXISTING: i32 = 0;
/// Manifest entry status: the file was added by this snapshot.
pub const STATUS_ADDED: i32 = 1;
/// Manifest entry status: the file was removed by this snapshot.
pub const STATUS_DELETED: i32 = 2;

/// The Avro schema of a v2 manifest entry (unpartitioned, data files).
/// Field ids are the spec's; readers resolve columns by them.
pub const MANIFEST_ENTRY_SCHEMA: &str = r#"{"type":"record","name":"manifest_entry","fields":[{"name":"status","type":"int","field-id":0},{"name":"snapshot_id","type":["null","long"],"default":null,"field-id":1},{"name":"sequence_number","type":["null","long"],"default":null,"field-id":3},{"name":"file_sequence_number","type":["null","long"],"default":null,"field-id":4},{"name":"data_file","type":{"type":"record","name":"r2","fields":[{"name":"content","type":"int","field-id":134},{"name":"file_path","type":"string","field-id":100},{"name":"file_format","type":"string","field-id":101},{"name":"partition","type":{"type":"record","name":"r102","fields":[]},"field-id":102},{"name":"record_count","type":"long","field-id":103},{"name":"file_size_in_bytes","type":"long","field-id":104}]},"field-id":2}]}"#;

/// The Avro schema of a v2 manifest list entry.
pub const MANIFEST_FILE_SCHEMA: &str = r#"{"type":"record","name":"manifest_file","fields":[{"name":"manifest_path","type":"string","field-id":500},{"name":"manifest_length","type":"long","field-id":501},{"name":"partition_spec_id","type":"int","field-id":502},{"name":"content","type":"int","field-id":517},{"name":"sequence_number","type":"long","field-id":515},{"name":"min_sequence_number","type":"long","field-id":516},{"name":"added_snapshot_id","type":"long","field-id":503},{"name":"added_files_count","type":"int","field-id":504},{"name":"existing_files_count","type":"int","field-id":505},{"name":"deleted_files_count","type":"int","field-id":506},{"name":"added_rows_count","type":"long","field-id":512},{"name":"existing_rows_count","type":"long","field-id":513},{"name":"deleted_rows_count","type":"long","field-id":514}]}"#;

/// One data file of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFile {
    /// Its absolute location (URI).
    pub path: String,
    /// Rows in the file.
    pub record_count: i64,
    /// Its size.
    pub file_size_in_bytes: i64,
}

/// One manifest entry: a file, its status, and the snapshot and sequence numbers it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// [`STATUS_EXISTING`], [`STATUS_ADDED`] or [`STATUS_DELETED`].
    pub status: i32,
    /// The snapshot that added (or, for deleted entries, removed) the file.
    pub snapshot_id: i64,
    /// The data sequence number of the file.
    pub sequence_number: i64,
    /// The sequence number of the snapshot that added the file.
    pub file_sequence_number: i64,
    /// The file.
    pub file: DataFile,
}

/// One manifest list entry: a manifest file and its counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Its location.
    pub manifest_path: String,
    /// Its size.
    pub manifest_length: i64,
    /// The sequence number of the snapshot that wrote it.
    pub sequence_number: i64,
    /// The smallest data sequence number of its live files.
    pub min_sequence_number: i64,
    /// The snapshot that wrote it.
    pub added_snapshot_id: i64,
    /// Entries by status.
    pub added_files_count: i32,
    /// Entries by status.
    pub existing_files_count: i32,
    /// Entries by status.
    pub deleted_files_count: i32,
    /// Rows by status.
    pub added_rows_count: i64,
    /// Rows by status.
    pub existing_rows_count: i64,
    /// Rows by status.
    pub deleted_rows_count: i64,
}

/// A sync marker derived from a seed (files need distinct markers, not random ones).
fn sync_marker(seed: u128) -> [u8; 16] {
    seed.to_le_bytes()
}

/// Writes a manifest of `entries` for a table with `schema`, and returns its
/// bytes with the list entry that describes it (`manifest_path` = `path`).
pub fn write_manifest(
    path: &str,
    schema: &Schema,
    snapshot_id: i64,
    sequence_number: i64,
    entries: &[ManifestEntry],
    seed: u128,
) -> Result<(Vec<u8>, ManifestFile), IcebergError> {
    let metadata = BTreeMap::from([
        ("schema".to_string(), serde_json::to_string(schema)?),
        ("schema-id".to_string(), schema.schema_id.to_string()),
        ("partition-spec".to_string(), "[]".to_string()),
        ("partition-spec-id".to_string(), "0".to_string()),
        ("format-version".to_string(), "2".to_string()),
        ("content".to_string(), "data".to_string()),
    ]);
    let records: Vec<Value> = entries
        .iter()
        .map(|e| {
            Value::Record(vec![
                Value::Int(e.status),
                Value::optional(Some(Value::Long(e.snapshot_id))),
                Value::optional(Some(Value::Long(e.sequence_number))),
                Value::optional(Some(Value::Long(e.file_sequence_number))),
                Value::Record(vec![
                    Value::Int(0),
                    Value::String(e.file.path.clone()),
                    Value::String("PARQUET".into()),
                    Value::Record(Vec::new()),
                    Value::Long(e.file.record_count),
                    Value::Long(e.file.file_size_in_bytes),
                ]),
            ])
        })
        .collect();
    let bytes = avro::write_container(MANIFEST_ENTRY_SCHEMA, &metadata, &records, sync_marker(seed));
    let count = |status| entries.iter().filter(|e| e.status == status).count() as i32;
    let rows = |status| entries.iter().filter(|e| e.status == status).map(|e| e.file.record_count).sum::<i64>();
    let min_sequence_number = entries
        .iter()
        .filter(|e| e.status != STATUS_DELETED)
        .map(|e| e.sequence_number)
        .min()
        .unwrap_or(sequence_number);
    let file = ManifestFile {
        manifest_path: path.to_string(),
        manifest_length: bytes.len() as i64,
        sequence_number,
        min_sequence_number,
        added_snapshot_id: snapshot_id,
        added_files_count: count(STATUS_ADDED),
        existing_files_count: count(STATUS_EXISTING),
        deleted_files_count: count(STATUS_DELETED),
        added_rows_count: rows(STATUS_ADDED),
        existing_rows_count: rows(STATUS_EXISTING),
        deleted_rows_count: rows(STATUS_DELETED),
    };
    Ok((bytes, file))
}

/// Writes the manifest list of a snapshot.
pub fn write_manifest_list(
    snapshot_id: i64,
    parent_snapshot_id: Option<i64>,
    sequence_number: i64,
    manifests: &[ManifestFile],
    seed: u128,
) -> Vec<u8> {
    let metadata = BTreeMap::from([
        ("snapshot-id".to_string(), snapshot_id.to_string()),
        ("parent-snapshot-id".to_string(), parent_snapshot_id.map_or("null".to_string(), |p| p.to_string())),
        ("sequence-number".to_string(), sequence_number.to_string()),
        ("format-version".to_string(), "2".to_string()),
    ]);
    let records: Vec<Value> = manifests
        .iter()
        .map(|m| {
            Value::Record(vec![
                Value::String(m.manifest_path.clone()),
                Value::Long(m.manifest_length),
                Value::Int(0),
                Value::Int(0),
                Value::Long(m.sequence_number),
                Value::Long(m.min_sequence_number),
                Value::Long(m.added_snapshot_id),
                Value::Int(m.added_files_count),
                Value::Int(m.existing_files_count),
                Value::Int(m.deleted_files_count),
                Value::Long(m.added_rows_count),
                Value::Long(m.existing_rows_count),
                Value::Long(m.deleted_rows_count),
            ])
        })
        .collect();
    avro::write_container(MANIFEST_FILE_SCHEMA, &metadata, &records, sync_marker(seed))
}

/// Reads back a manifest written by [`write_manifest`].
pub fn read_manifest(bytes: &[u8]) -> Result<Vec<ManifestEntry>, IcebergError> {
    let c = avro::read_container(bytes)?;
    if c.metadata.get(avro::SCHEMA_KEY).map(String::as_str) != Some(MANIFEST_ENTRY_SCHEMA) {
        return Err(IcebergError::avro("manifest not written by events.do"));
    }
    let mut r = avro::Reader::new(&c.data);
    let mut out = Vec::with_capacity(c.count);
    let opt = |r: &mut avro::Reader| -> Result<i64, IcebergError> {
        match r.long()? {
            1 => r.long(),
            _ => Err(IcebergError::avro("null where a value was written")),
        }
    };
    for _ in 0..c.count {
        let status = r.long()? as i32;
        let snapshot_id = opt(&mut r)?;
        let sequence_number = opt(&mut r)?;
        let file_sequence_number = opt(&mut r)?;
        let _content = r.long()?;
        let path = r.string()?;
        let _format = r.string()?;
        let record_count = r.long()?;
        let file_size_in_bytes = r.long()?;
        out.push(ManifestEntry {
            status,
            snapshot_id,
            sequence_number,
            file_sequence_number,
            file: DataFile { path, record_count, file_size_in_bytes },
        });
    }
    Ok(out)
}

/// Reads back a manifest list written by [`write_manifest_list`].
pub fn read_manifest_list(bytes: &[u8]) -> Result<Vec<ManifestFile>, IcebergError> {
    let c = avro::read_container(bytes)?;
    let mut r = avro::Reader::new(&c.data);
    let mut out = Vec::with_capacity(c.count);
    for _ in 0..c.count {
        let manifest_path = r.string()?;
        let manifest_length = r.long()?;
        let (_spec, _content) = (r.long()?, r.long()?);
        out.push(ManifestFile {
            manifest_path,
            manifest_length,
            sequence_number: r.long()?,
            min_sequence_number: r.long()?,
            added_snapshot_id: r.long()?,
            added_files_count: r.long()? as i32,
            existing_files_count: r.long()? as i32,
            deleted_files_count: r.long()? as i32,
            added_rows_count: r.long()?,
            existing_rows_count: r.long()?,
            deleted_rows_count: r.long()?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::NestedField;

    #[test]
    fn manifest_and_list_round_trip_with_counts() {
        let schema = Schema::new(
            0,
            vec![NestedField { id: 1, name: "id".into(), required: true, field_type: "string".into(), doc: None }],
        );
        let entry = |status, path: &str, rows| ManifestEntry {
            status,
            snapshot_id: 7,
            sequence_number: 3,
            file_sequence_number: 3,
            file: DataFile { path: path.into(), record_count: rows, file_size_in_bytes: 100 },
        };
        let entries = [
            entry(STATUS_ADDED, "file:///a.parquet", 10),
            entry(STATUS_EXISTING, "file:///b.parquet", 5),
            entry(STATUS_DELETED, "file:///c.parquet", 2),
        ];
        let (bytes, file) = write_manifest("file:///m.avro", &schema, 7, 3, &entries, 1).unwrap();
        assert_eq!(read_manifest(&bytes).unwrap(), entries);
        assert_eq!((file.added_files_count, file.existing_files_count, file.deleted_files_count), (1, 1, 1));
        assert_eq!((file.added_rows_count, file.existing_rows_count, file.deleted_rows_count), (10, 5, 2));
        assert_eq!(file.manifest_length, bytes.len() as i64);
        let list = write_manifest_list(7, Some(6), 3, std::slice::from_ref(&file), 2);
        assert_eq!(read_manifest_list(&list).unwrap(), vec![file]);
    }
}
