//! A minimal Avro object-container writer and reader, enough for Iceberg
//! manifests and manifest lists.
//!
//! Iceberg readers resolve manifest columns by the `field-id` attributes of
//! the Avro schema stored in the file header, so the schema is written
//! byte for byte as given (a general Avro library may drop unknown
//! attributes when it re-serializes a schema). Blocks are uncompressed
//! (`avro.codec` = `null`), which every Avro reader supports.

use std::collections::BTreeMap;

use crate::IcebergError;

/// The four magic bytes that open every Avro object-container file.
pub const MAGIC: &[u8; 4] = b"Obj\x01";
/// Most bytes one block of records may hold before a new block starts.
pub const BLOCK_BYTES: usize = 1 << 20;
/// Header key: the writer's Avro schema (JSON).
pub const SCHEMA_KEY: &str = "avro.schema";
/// Header key: the block codec.
pub const CODEC_KEY: &str = "avro.codec";

/// One Avro value, in the shapes Iceberg manifests use.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`.
    Null,
    /// `boolean`.
    Boolean(bool),
    /// `int` (zig-zag varint).
    Int(i32),
    /// `long` (zig-zag varint).
    Long(i64),
    /// `string`.
    String(String),
    /// `bytes`.
    Bytes(Vec<u8>),
    /// A record: its fields in schema order.
    Record(Vec<Value>),
    /// An array.
    Array(Vec<Value>),
    /// A union branch: its index in the union and the value.
    Union(u32, Box<Value>),
}

impl Value {
    /// `["null", T]` with `v` present (branch 1) or absent (branch 0).
    pub fn optional(v: Option<Value>) -> Value {
        match v {
            Some(v) => Value::Union(1, Box::new(v)),
            None => Value::Union(0, Box::new(Value::Null)),
        }
    }
}

/// Appends a zig-zag varint.
pub fn write_long(out: &mut Vec<u8>, v: i64) {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        if n & !0x7f == 0 {
            out.push(n as u8);
            return;
        }
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
}

fn write_bytes(out: &mut Vec<u8>, b: &[u8]) {
    write_long(out, b.len() as i64);
    out.extend_from_slice(b);
}

/// Appends the binary encoding of `v`.
pub fn encode(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => {}
        Value::Boolean(b) => out.push(u8::from(*b)),
        Value::Int(i) => write_long(out, i64::from(*i)),
        Value::Long(l) => write_long(out, *l),
        Value::String(s) => write_bytes(out, s.as_bytes()),
        Value::Bytes(b) => write_bytes(out, b),
        Value::Record(fields) => fields.iter().for_each(|f| encode(out, f)),
        Value::Array(items) => {
            if !items.is_empty() {
                write_long(out, items.len() as i64);
                items.iter().for_each(|i| encode(out, i));
            }
            write_long(out, 0);
        }
        Value::Union(branch, inner) => {
            write_long(out, i64::from(*branch));
            encode(out, inner);
        }
    }
}

/// Writes an object-container file: the header (with `schema_json` and
/// `metadata`), then `records` in blocks of at most [`BLOCK_BYTES`].
///
/// `sync` is the 16-byte block marker; any value unique to the file works.
pub fn write_container(
    schema_json: &str,
    metadata: &BTreeMap<String, String>,
    records: &[Value],
    sync: [u8; 16],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024 + records.len() * 128);
    out.extend_from_slice(MAGIC);
    let mut header: Vec<(&str, &[u8])> = vec![(SCHEMA_KEY, schema_json.as_bytes()), (CODEC_KEY, b"null")];
    header.extend(metadata.iter().map(|(k, v)| (k.as_str(), v.as_bytes())));
    write_long(&mut out, header.len() as i64);
    for (k, v) in header {
        write_bytes(&mut out, k.as_bytes());
        write_bytes(&mut out, v);
    }
    write_long(&mut out, 0);
    out.extend_from_slice(&sync);

    let mut block = Vec::new();
    let mut count = 0i64;
    let flush = |out: &mut Vec<u8>, block: &mut Vec<u8>, count: &mut i64| {
        if *count > 0 {
            write_long(out, *count);
            write_bytes(out, block);
            out.extend_from_slice(&sync);
            block.clear();
            *count = 0;
        }
    };
    for r in records {
        encode(&mut block, r);
        count += 1;
        if block.len() >= BLOCK_BYTES {
            flush(&mut out, &mut block, &mut count);
        }
    }
    flush(&mut out, &mut block, &mut count);
    out
}

/// A cursor over Avro binary data (used to read back manifests).
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Whether every byte was read.
    pub fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Reads a zig-zag varint.
    pub fn long(&mut self) -> Result<i64, IcebergError> {
        let mut n: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or_else(|| IcebergError::avro("truncated varint"))?;
            self.pos += 1;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(((n >> 1) as i64) ^ -((n & 1) as i64));
            }
        }
        Err(IcebergError::avro("varint longer than 10 bytes"))
    }

    /// Reads `n` raw bytes.
    pub fn raw(&mut self, n: usize) -> Result<&'a [u8], IcebergError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len());
        let end = end.ok_or_else(|| IcebergError::avro("truncated data"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// Reads length-prefixed bytes.
    pub fn bytes(&mut self) -> Result<&'a [u8], IcebergError> {
        let n = self.long()?;
        let n = usize::try_from(n).map_err(|_| IcebergError::avro("negative length"))?;
        self.raw(n)
    }

    /// Reads a string.
    pub fn string(&mut self) -> Result<String, IcebergError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| IcebergError::avro("string is not UTF-8"))
    }
}

/// The header of an object-container file and its concatenated record bytes.
pub struct Container {
    /// Header metadata (including `avro.schema`).
    pub metadata: BTreeMap<String, String>,
    /// The number of records.
    pub count: usize,
    /// The encoded records, back to back.
    pub data: Vec<u8>,
}

/// Splits an uncompressed object-container file into header and record bytes.
pub fn read_container(file: &[u8]) -> Result<Container, IcebergError> {
    let mut r = Reader::new(file);
    if r.raw(4)? != MAGIC {
        return Err(IcebergError::avro("not an Avro object-container file"));
    }
    let mut metadata = BTreeMap::new();
    loop {
        let mut n = r.long()?;
        if n == 0 {
            break;
        }
        if n < 0 {
            n = -n;
            r.long()?; // block size in bytes
        }
        for _ in 0..n {
            let k = r.string()?;
            let v = r.string()?;
            metadata.insert(k, v);
        }
    }
    if metadata.get(CODEC_KEY).is_some_and(|c| c != "null") {
        return Err(IcebergError::avro("only the null codec is read"));
    }
    let sync = r.raw(16)?.to_vec();
    let mut data = Vec::new();
    let mut count = 0usize;
    while !r.at_end() {
        count += usize::try_from(r.long()?).map_err(|_| IcebergError::avro("negative block count"))?;
        data.extend_from_slice(r.bytes()?);
        if r.raw(16)? != sync.as_slice() {
            return Err(IcebergError::avro("block sync marker mismatch"));
        }
    }
    Ok(Container { metadata, count, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        for v in [0i64, 1, -1, 63, -64, 64, 300, -300, i64::from(i32::MAX), i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            write_long(&mut out, v);
            assert_eq!(Reader::new(&out).long().unwrap(), v);
        }
        let mut out = Vec::new();
        write_long(&mut out, -2);
        assert_eq!(out, [3], "zig-zag: -2 is 3");
    }

    #[test]
    fn container_round_trips_header_and_records() {
        let meta = BTreeMap::from([("format-version".to_string(), "2".to_string())]);
        let recs = vec![
            Value::Record(vec![Value::String("a".into()), Value::optional(Some(Value::Long(7)))]),
            Value::Record(vec![Value::String("b".into()), Value::optional(None)]),
        ];
        let file = write_container(r#"{"type":"record"}"#, &meta, &recs, [9; 16]);
        let c = read_container(&file).unwrap();
        assert_eq!(c.count, 2);
        assert_eq!(c.metadata["avro.schema"], r#"{"type":"record"}"#);
        assert_eq!(c.metadata["format-version"], "2");
        let mut r = Reader::new(&c.data);
        assert_eq!(r.string().unwrap(), "a");
        assert_eq!((r.long().unwrap(), r.long().unwrap()), (1, 7));
        assert_eq!(r.string().unwrap(), "b");
        assert_eq!(r.long().unwrap(), 0);
        assert!(r.at_end());
        assert!(read_container(b"PAR1").is_err());
    }
}
