//! Data columns: top-level fields of `data` promoted to typed columns of
//! their own, so the table schema grows with the events (schema evolution).
//!
//! The writer observes which scalar fields a batch carries
//! ([`observe_columns`]); the catalog decides the table's columns; the file
//! is then written with those columns ([`encode_events_with`](crate::encode::encode_events_with)).
//! Like the other typed columns they are derived from `data`, which stays
//! the source of truth: a value that does not fit its column's type is null
//! in the column and intact in `data`.

use std::collections::BTreeMap;

use arrow_array::ArrayRef;
use arrow_array::builder::{BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, StringBuilder};
use arrow_schema::{DataType, Field};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::schema::event_schema;
use crate::view::{EventView, Scalar};

/// Longest data column name.
pub const MAX_DATA_COLUMN_NAME_LEN: usize = 64;
/// Most distinct fields observed in one batch (the rest are ignored).
pub const MAX_OBSERVED_FIELDS: usize = 256;

/// The type of a data column: the Iceberg primitive it maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnKind {
    /// `boolean`.
    Boolean,
    /// `int` (32-bit).
    Int,
    /// `long` (64-bit).
    Long,
    /// `double`.
    Double,
    /// `string`.
    String,
}

impl ColumnKind {
    /// The Iceberg type name.
    pub fn iceberg_type(self) -> &'static str {
        match self {
            ColumnKind::Boolean => "boolean",
            ColumnKind::Int => "int",
            ColumnKind::Long => "long",
            ColumnKind::Double => "double",
            ColumnKind::String => "string",
        }
    }

    /// The kind of an Iceberg type name, if it is one of these.
    pub fn from_iceberg_type(name: &str) -> Option<Self> {
        Some(match name {
            "boolean" => ColumnKind::Boolean,
            "int" => ColumnKind::Int,
            "long" => ColumnKind::Long,
            "double" => ColumnKind::Double,
            "string" => ColumnKind::String,
            _ => return None,
        })
    }

    /// The Arrow type of the column.
    pub fn arrow_type(self) -> DataType {
        match self {
            ColumnKind::Boolean => DataType::Boolean,
            ColumnKind::Int => DataType::Int32,
            ColumnKind::Long => DataType::Int64,
            ColumnKind::Double => DataType::Float64,
            ColumnKind::String => DataType::Utf8,
        }
    }

    /// The narrowest kind that holds `v`, if `v` is a scalar.
    pub fn of_scalar(v: &Scalar<'_>) -> Option<Self> {
        match v {
            Scalar::Bool(_) => Some(ColumnKind::Boolean),
            Scalar::Str(_) => Some(ColumnKind::String),
            Scalar::Number { int: Some(i), .. } if i32::try_from(*i).is_ok() => Some(ColumnKind::Int),
            Scalar::Number { int: Some(_), .. } => Some(ColumnKind::Long),
            Scalar::Number { int: None, .. } => Some(ColumnKind::Double),
            Scalar::Other => None,
        }
    }

    /// The narrowest kind that holds `v`, if `v` is a scalar.
    pub fn of(v: &Value) -> Option<Self> {
        match v {
            Value::Bool(_) => Some(ColumnKind::Boolean),
            Value::String(_) => Some(ColumnKind::String),
            Value::Number(n) => Some(match n.as_i64() {
                Some(i) if i32::try_from(i).is_ok() => ColumnKind::Int,
                Some(_) => ColumnKind::Long,
                None => ColumnKind::Double,
            }),
            _ => None,
        }
    }
}

/// One data column of the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataColumn {
    /// The column name, equal to the top-level `data` key it comes from.
    pub name: String,
    /// Its type.
    pub kind: ColumnKind,
}

/// Whether `name` may become a data column: `[A-Za-z_][A-Za-z0-9_]*`, at
/// most [`MAX_DATA_COLUMN_NAME_LEN`] bytes, and not one of the fixed columns
/// (compared without case, as SQL engines fold unquoted names).
pub fn is_data_column_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    first_ok
        && name.len() <= MAX_DATA_COLUMN_NAME_LEN
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !event_schema().fields().iter().any(|f| f.name().eq_ignore_ascii_case(name))
}

/// The scalar top-level fields of `events` and the widest kind seen for
/// each: ints and longs widen to long, and any mix with a fraction to
/// double. A field seen with two incompatible kinds (text and a number)
/// keeps the first kind seen. At most [`MAX_OBSERVED_FIELDS`] fields.
pub fn observe_columns<E: EventView>(events: &[E]) -> BTreeMap<String, ColumnKind> {
    let mut seen: BTreeMap<String, ColumnKind> = BTreeMap::new();
    for event in events {
        event.for_each_member(&mut |key, value| {
            let Some(kind) = ColumnKind::of_scalar(&value) else { return };
            if let Some(current) = seen.get_mut(key) {
                *current = widen(*current, kind);
            } else if seen.len() < MAX_OBSERVED_FIELDS && is_data_column_name(key) {
                seen.insert(key.to_string(), kind);
            }
        });
    }
    seen
}

fn widen(a: ColumnKind, b: ColumnKind) -> ColumnKind {
    use ColumnKind::*;
    match (a, b) {
        _ if a == b => a,
        (Int, Long) | (Long, Int) => Long,
        (Int | Long | Double, Int | Long | Double) => Double,
        _ => a,
    }
}

/// The Arrow field of a data column (always nullable).
pub fn data_column_field(column: &DataColumn) -> Field {
    Field::new(&column.name, column.kind.arrow_type(), true)
}

/// Builds the array of `column` for `events`: each event's top-level value
/// if it fits the column's type, else null.
pub fn data_column_array<E: EventView>(column: &DataColumn, events: &[&E]) -> ArrayRef {
    let mut builder = DataColumnBuilder::new(column.kind, events.len());
    for event in events {
        builder.append(event.member(&column.name).as_ref());
    }
    builder.finish()
}

/// A data column's array, built one event at a time: a value that does not
/// fit the column's type is null.
pub enum DataColumnBuilder {
    /// [`ColumnKind::Boolean`].
    Boolean(BooleanBuilder),
    /// [`ColumnKind::Int`].
    Int(Int32Builder),
    /// [`ColumnKind::Long`].
    Long(Int64Builder),
    /// [`ColumnKind::Double`].
    Double(Float64Builder),
    /// [`ColumnKind::String`].
    String(StringBuilder),
}

impl DataColumnBuilder {
    /// A builder for `rows` values of `kind`.
    pub fn new(kind: ColumnKind, rows: usize) -> Self {
        match kind {
            ColumnKind::Boolean => DataColumnBuilder::Boolean(BooleanBuilder::with_capacity(rows)),
            ColumnKind::Int => DataColumnBuilder::Int(Int32Builder::with_capacity(rows)),
            ColumnKind::Long => DataColumnBuilder::Long(Int64Builder::with_capacity(rows)),
            ColumnKind::Double => DataColumnBuilder::Double(Float64Builder::with_capacity(rows)),
            ColumnKind::String => DataColumnBuilder::String(StringBuilder::with_capacity(rows, 0)),
        }
    }

    /// Adds one event's value (`None`: the event has no such member).
    pub fn append(&mut self, value: Option<&Scalar<'_>>) {
        match self {
            DataColumnBuilder::Boolean(b) => b.append_option(match value {
                Some(Scalar::Bool(v)) => Some(*v),
                _ => None,
            }),
            DataColumnBuilder::Int(b) => {
                b.append_option(value.and_then(Scalar::as_i64).and_then(|i| i32::try_from(i).ok()))
            }
            DataColumnBuilder::Long(b) => b.append_option(value.and_then(Scalar::as_i64)),
            DataColumnBuilder::Double(b) => b.append_option(value.and_then(Scalar::as_f64)),
            DataColumnBuilder::String(b) => b.append_option(value.and_then(Scalar::as_str)),
        }
    }

    /// The array.
    pub fn finish(&mut self) -> ArrayRef {
        match self {
            DataColumnBuilder::Boolean(b) => std::sync::Arc::new(b.finish()),
            DataColumnBuilder::Int(b) => std::sync::Arc::new(b.finish()),
            DataColumnBuilder::Long(b) => std::sync::Arc::new(b.finish()),
            DataColumnBuilder::Double(b) => std::sync::Arc::new(b.finish()),
            DataColumnBuilder::String(b) => std::sync::Arc::new(b.finish()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;
    use events_core::{Event, Timestamp};
    use serde_json::json;

    fn ev(data: Value) -> Event {
        Event {
            id: "1".into(),
            ns: "n".into(),
            ts: Timestamp(0),
            event_type: "t".into(),
            source: None,
            data: data.as_object().unwrap().clone(),
        }
    }

    #[test]
    fn observes_scalars_and_widens_numbers() {
        let events = [
            ev(
                json!({"amount": 1, "big": 1, "plan": "pro", "ok": true, "nested": {"a": 1}, "list": [1], "bad-name": 1}),
            ),
            ev(json!({"amount": 2.5, "big": 5_000_000_000_i64, "plan": 3, "type": "x", "userId": "u"})),
        ];
        let seen = observe_columns(&events);
        assert_eq!(
            seen,
            BTreeMap::from([
                ("amount".to_string(), ColumnKind::Double),
                ("big".to_string(), ColumnKind::Long),
                ("ok".to_string(), ColumnKind::Boolean),
                ("plan".to_string(), ColumnKind::String),
                ("userId".to_string(), ColumnKind::String),
            ])
        );
        assert!(!is_data_column_name("TYPE"), "fixed columns are not data columns, whatever the case");
        assert!(!is_data_column_name(&"x".repeat(65)));
    }

    #[test]
    fn values_that_do_not_fit_are_null() {
        let events = [ev(json!({"n": 3_000_000_000_i64})), ev(json!({"n": 4})), ev(json!({"n": "5"}))];
        let refs: Vec<&Event> = events.iter().collect();
        let a = data_column_array(&DataColumn { name: "n".into(), kind: ColumnKind::Int }, &refs);
        let a = a.as_any().downcast_ref::<arrow_array::Int32Array>().unwrap();
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![None, Some(4), None]);
    }
}
