//! Schema evolution from observed data: new columns and type promotion by
//! Iceberg's rules; anything else is an incompatible change, reported and
//! not applied.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::metadata::{NestedField, Schema};

/// What happened to one observed column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaChange {
    /// The column.
    pub column: String,
    /// Its type before (`None`: new column).
    pub from: Option<String>,
    /// The type observed (or promoted to).
    pub to: String,
    /// Whether the change was applied to the schema.
    pub applied: bool,
    /// Why it was not applied, if it was not.
    pub reason: Option<String>,
}

/// Whether Iceberg allows widening `from` to `to` (spec "Schema Evolution").
pub fn can_promote(from: &str, to: &str) -> bool {
    from == to || matches!((from, to), ("int", "long") | ("float", "double"))
}

/// The type two observations of one new column in one batch agree on.
pub fn unify(a: &str, b: &str) -> Option<&'static str> {
    const NUMERIC: [&str; 4] = ["int", "long", "float", "double"];
    let rank = |t: &str| NUMERIC.iter().position(|n| *n == t);
    match (rank(a), rank(b)) {
        _ if a == b => leak(a),
        (Some(x), Some(y)) => Some(NUMERIC[x.max(y)]),
        _ => None,
    }
}

fn leak(t: &str) -> Option<&'static str> {
    ["boolean", "int", "long", "float", "double", "string"].into_iter().find(|k| *k == t)
}

/// Evolves `schema` for `observed` columns (name → Iceberg primitive type),
/// assigning new field ids after `last_column_id`. At most `max_new` new
/// columns are added. Returns the new schema (if anything changed), the
/// new last column id, and every change considered.
pub fn evolve(
    schema: &Schema,
    last_column_id: i32,
    observed: &BTreeMap<String, String>,
    max_new: usize,
) -> (Option<Schema>, i32, Vec<SchemaChange>) {
    let mut fields = schema.fields.clone();
    let mut last = last_column_id;
    let mut changes = Vec::new();
    let mut added = 0usize;
    for (name, seen) in observed {
        match fields.iter_mut().find(|f| f.name.eq_ignore_ascii_case(name)) {
            Some(f) if f.name != *name => changes.push(SchemaChange {
                column: name.clone(),
                from: f.primitive().map(str::to_string),
                to: seen.clone(),
                applied: false,
                reason: Some(format!("differs only in case from column {}", f.name)),
            }),
            Some(f) => {
                let current = f.primitive().unwrap_or("").to_string();
                if current == *seen {
                    continue;
                }
                if can_promote(&current, seen) {
                    f.field_type = seen.clone().into();
                    changes.push(SchemaChange {
                        column: name.clone(),
                        from: Some(current),
                        to: seen.clone(),
                        applied: true,
                        reason: None,
                    });
                } else if can_promote(seen, &current) {
                    // Narrower values fit the wider column: nothing to change.
                } else {
                    changes.push(SchemaChange {
                        column: name.clone(),
                        from: Some(current.clone()),
                        to: seen.clone(),
                        applied: false,
                        reason: Some(format!("{current} cannot be promoted to {seen}")),
                    });
                }
            }
            None if added >= max_new => changes.push(SchemaChange {
                column: name.clone(),
                from: None,
                to: seen.clone(),
                applied: false,
                reason: Some(format!("the table already has the most added columns ({max_new})")),
            }),
            None => {
                last += 1;
                added += 1;
                fields.push(NestedField {
                    id: last,
                    name: name.clone(),
                    required: false,
                    field_type: seen.clone().into(),
                    doc: None,
                });
                changes.push(SchemaChange {
                    column: name.clone(),
                    from: None,
                    to: seen.clone(),
                    applied: true,
                    reason: None,
                });
            }
        }
    }
    if changes.iter().any(|c| c.applied) {
        let mut next = Schema::new(schema.schema_id + 1, fields);
        next.identifier_field_ids = schema.identifier_field_ids.clone();
        (Some(next), last, changes)
    } else {
        (None, last_column_id, changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Schema {
        Schema::new(
            0,
            vec![NestedField { id: 1, name: "id".into(), required: true, field_type: "string".into(), doc: None }],
        )
    }

    #[test]
    fn adds_promotes_and_refuses() {
        let observed =
            BTreeMap::from([("amount".to_string(), "int".to_string()), ("plan".to_string(), "string".to_string())]);
        let (s1, last, changes) = evolve(&base(), 1, &observed, 10);
        let s1 = s1.unwrap();
        assert_eq!(last, 3);
        assert_eq!(s1.field("amount").unwrap().id, 2);
        assert_eq!(s1.field("plan").unwrap().id, 3);
        assert!(!s1.field("plan").unwrap().required);
        assert_eq!(changes.len(), 2);

        // int -> long is a promotion; string -> long is not; narrower int into long is fine.
        let observed =
            BTreeMap::from([("amount".to_string(), "long".to_string()), ("plan".to_string(), "long".to_string())]);
        let (s2, last2, changes) = evolve(&s1, last, &observed, 10);
        let s2 = s2.unwrap();
        assert_eq!((s2.schema_id, last2), (2, 3));
        assert_eq!(s2.field("amount").unwrap().primitive(), Some("long"));
        assert_eq!(s2.field("amount").unwrap().id, 2, "promotion keeps the field id");
        assert_eq!(s2.field("plan").unwrap().primitive(), Some("string"));
        let refused: Vec<_> = changes.iter().filter(|c| !c.applied).collect();
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].column, "plan");

        let (none, _, changes) = evolve(&s2, 3, &BTreeMap::from([("amount".to_string(), "int".to_string())]), 10);
        assert!(none.is_none() && changes.is_empty());
        // long -> double is not an Iceberg promotion.
        let (none, _, changes) = evolve(&s2, 3, &BTreeMap::from([("amount".to_string(), "double".to_string())]), 10);
        assert!(none.is_none() && !changes[0].applied);
    }

    #[test]
    fn new_columns_are_capped() {
        let observed: BTreeMap<String, String> = (0..5).map(|i| (format!("c{i}"), "string".to_string())).collect();
        let (s, last, changes) = evolve(&base(), 1, &observed, 3);
        assert_eq!(s.unwrap().fields.len(), 4);
        assert_eq!(last, 4);
        assert_eq!(changes.iter().filter(|c| !c.applied).count(), 2);
        assert_eq!(unify("int", "double"), Some("double"));
        assert_eq!(unify("string", "int"), None);
    }
}
