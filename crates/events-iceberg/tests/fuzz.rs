//! Property-based fuzzing of Iceberg REST commit bodies: the requirements
//! and updates as they arrive in JSON, and their all-or-nothing application.
//!
//! The number of cases comes from `EVENTS_FUZZ_CASES` (default 512); see
//! `docs/fuzzing.md` for long runs.

use events_iceberg::commit::{TableRequirement, TableUpdate, apply_commit, check_requirements};
use events_iceberg::metadata::{NestedField, Schema, TableMetadata};
use proptest::prelude::*;
use serde_json::{Value, json};

fn cases() -> u32 {
    std::env::var("EVENTS_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512)
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: cases(), max_shrink_iters: 2000, ..ProptestConfig::default() }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-3i64..4).prop_map(|n| json!(n)),
        "[a-z-]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-z-]{1,6}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Small ids so that updates refer to each other and to the base table.
fn small_id() -> impl Strategy<Value = i64> {
    prop_oneof![4 => -1i64..6, 1 => any::<i64>()]
}

/// A base table: one to three schemas, zero to three snapshots on main.
fn base_table() -> impl Strategy<Value = TableMetadata> {
    (1usize..4, 0i64..4, prop::collection::btree_map("[a-z]{1,3}", "[a-z]{0,3}", 0..3)).prop_map(
        |(schemas, snapshots, properties)| {
            let field = |id: i32| NestedField {
                id,
                name: format!("c{id}"),
                required: false,
                field_type: json!("string"),
                doc: None,
            };
            let mut meta =
                TableMetadata::new("uuid-1".into(), "file:///t".into(), Schema::new(0, vec![field(1)]), 1_000);
            for i in 1..schemas {
                meta.schemas.push(Schema::new(i as i32, (1..=i as i32 + 1).map(field).collect()));
                meta.last_column_id = i as i32 + 1;
            }
            for s in 1..=snapshots {
                let update = vec![
                    json!({"action": "add-snapshot", "snapshot": snapshot_json(s, (s > 1).then_some(s - 1), s)}),
                    json!({"action": "set-snapshot-ref", "ref-name": "main", "snapshot-id": s, "type": "branch"}),
                ];
                let updates: Vec<TableUpdate> = serde_json::from_value(Value::Array(update)).unwrap();
                meta = apply_commit(&meta, &[], &updates, 1_000 + s).unwrap();
            }
            meta.properties = properties;
            meta
        },
    )
}

fn snapshot_json(id: i64, parent: Option<i64>, seq: i64) -> Value {
    let mut s = json!({
        "snapshot-id": id,
        "sequence-number": seq,
        "timestamp-ms": 2_000,
        "manifest-list": format!("file:///t/metadata/snap-{id}.avro"),
        "summary": {"operation": "append"},
        "schema-id": 0,
    });
    if let Some(p) = parent {
        s["parent-snapshot-id"] = json!(p);
    }
    s
}

fn field_json() -> impl Strategy<Value = Value> {
    (
        prop_oneof![1i64..12, any::<i64>()],
        "[a-z]{1,3}",
        any::<bool>(),
        prop_oneof![
            Just(json!("string")),
            Just(json!("long")),
            (1i64..20)
                .prop_map(|e| json!({"type": "list", "element-id": e, "element": "int", "element-required": false})),
            json_value(),
        ],
    )
        .prop_map(|(id, name, required, ty)| json!({"id": id, "name": name, "required": required, "type": ty}))
}

/// Well-formed update bodies of every action, with ids that often collide.
fn update_json() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop_oneof![Just("uuid-1".to_string()), "[a-z0-9-]{1,8}".prop_map(String::from)]
            .prop_map(|u| json!({"action": "assign-uuid", "uuid": u})),
        (0u8..4).prop_map(|v| json!({"action": "upgrade-format-version", "format-version": v})),
        (prop::collection::vec(field_json(), 0..3), -1i64..4).prop_map(|(fields, id)| {
            json!({"action": "add-schema", "schema": {"type": "struct", "schema-id": id, "fields": fields}})
        }),
        (-2i64..5).prop_map(|id| json!({"action": "set-current-schema", "schema-id": id})),
        prop::collection::vec((1000i64..1004, "[a-z]{1,3}"), 0..3).prop_map(|f| {
            let fields: Vec<Value> = f
                .iter()
                .map(|(id, n)| json!({"field-id": id, "source-id": 1, "name": n, "transform": "identity"}))
                .collect();
            json!({"action": "add-spec", "spec": {"spec-id": 0, "fields": fields}})
        }),
        (-2i64..3).prop_map(|id| json!({"action": "set-default-spec", "spec-id": id})),
        prop::collection::vec(json_value(), 0..2)
            .prop_map(|f| json!({"action": "add-sort-order", "sort-order": {"order-id": 0, "fields": f}})),
        (-2i64..3).prop_map(|id| json!({"action": "set-default-sort-order", "sort-order-id": id})),
        (small_id(), prop::option::of(small_id()), small_id()).prop_map(|(id, parent, seq)| {
            json!({"action": "add-snapshot", "snapshot": snapshot_json(id, parent, seq)})
        }),
        (
            prop::sample::select(vec!["main", "dev", "t1"]),
            small_id(),
            prop::sample::select(vec!["branch", "tag", "other"])
        )
            .prop_map(
                |(r, id, kind)| json!({"action": "set-snapshot-ref", "ref-name": r, "snapshot-id": id, "type": kind})
            ),
        prop::collection::vec(small_id(), 0..3)
            .prop_map(|ids| json!({"action": "remove-snapshots", "snapshot-ids": ids})),
        prop::sample::select(vec!["main", "dev", "t1"])
            .prop_map(|r| json!({"action": "remove-snapshot-ref", "ref-name": r})),
        "[a-z:/]{0,12}".prop_map(|l| json!({"action": "set-location", "location": l})),
        prop::collection::btree_map("[a-z]{1,3}", "[a-z]{0,3}", 0..3)
            .prop_map(|u| json!({"action": "set-properties", "updates": u})),
        prop::collection::vec("[a-z]{1,3}", 0..3).prop_map(|r| json!({"action": "remove-properties", "removals": r})),
    ]
}

fn requirement_json() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({"type": "assert-create"})),
        prop_oneof![Just("uuid-1".to_string()), "[a-z0-9-]{1,6}".prop_map(String::from)]
            .prop_map(|u| json!({"type": "assert-table-uuid", "uuid": u})),
        (prop::sample::select(vec!["main", "dev"]), prop::option::of(small_id()))
            .prop_map(|(r, id)| json!({"type": "assert-ref-snapshot-id", "ref": r, "snapshot-id": id})),
        (0i64..5).prop_map(|id| json!({"type": "assert-last-assigned-field-id", "last-assigned-field-id": id})),
        (0i64..4).prop_map(|id| json!({"type": "assert-current-schema-id", "current-schema-id": id})),
        (998i64..1002)
            .prop_map(|id| json!({"type": "assert-last-assigned-partition-id", "last-assigned-partition-id": id})),
        (0i64..2).prop_map(|id| json!({"type": "assert-default-spec-id", "default-spec-id": id})),
        (0i64..2).prop_map(|id| json!({"type": "assert-default-sort-order-id", "default-sort-order-id": id})),
    ]
}

/// A JSON value with one random change: a key dropped, a value replaced.
fn mutated(v: impl Strategy<Value = Value>) -> impl Strategy<Value = Value> {
    (v, any::<prop::sample::Index>(), json_value(), any::<bool>()).prop_map(|(mut v, i, replacement, drop)| {
        if let Some(m) = v.as_object_mut()
            && !m.is_empty()
        {
            let key = m.keys().nth(i.index(m.len())).unwrap().clone();
            if drop {
                m.remove(&key);
            } else {
                m.insert(key, replacement);
            }
        }
        v
    })
}

fn body_items(well_formed: BoxedStrategy<Value>) -> impl Strategy<Value = Vec<Value>> {
    prop::collection::vec(prop_oneof![8 => well_formed.clone(), 2 => mutated(well_formed), 1 => json_value()], 0..6)
}

/// Update lists in which an added snapshot is often also put on a ref, as
/// every append does.
fn update_items() -> impl Strategy<Value = Vec<Value>> {
    let append = (small_id(), prop::option::of(small_id()), small_id(), prop::sample::select(vec!["main", "dev"]))
        .prop_map(|(id, parent, seq, r)| {
            vec![
                json!({"action": "add-snapshot", "snapshot": snapshot_json(id, parent, seq)}),
                json!({"action": "set-snapshot-ref", "ref-name": r, "snapshot-id": id, "type": "branch"}),
            ]
        });
    prop::collection::vec(prop_oneof![3 => body_items(update_json().boxed()), 1 => append], 1..3)
        .prop_map(|parts| parts.concat())
}

/// Deserialises each item that is a valid update or requirement; the others
/// must fail cleanly (and a whole list with one bad item fails as a whole).
fn decode<T: serde::de::DeserializeOwned>(items: &[Value]) -> Result<Vec<Option<T>>, TestCaseError> {
    let each: Vec<Option<T>> = items.iter().map(|v| serde_json::from_value(v.clone()).ok()).collect();
    let whole = serde_json::from_value::<Vec<T>>(Value::Array(items.to_vec()));
    prop_assert_eq!(whole.is_ok(), each.iter().all(Option::is_some));
    Ok(each)
}

proptest! {
    #![proptest_config(config())]

    /// Commit bodies never panic the decoder or the commit; an update
    /// round-trips through its wire form; a refused commit leaves the table
    /// as it was; an accepted one keeps every invariant, only grows what
    /// Iceberg says only grows, and reads back identically from its JSON.
    #[test]
    fn commits_are_all_or_nothing(
        base in base_table(),
        requirements in body_items(requirement_json().boxed()),
        updates in update_items(),
        now in prop_oneof![Just(5_000i64), any::<i64>()],
    ) {
        let requirements: Vec<TableRequirement> = decode(&requirements)?.into_iter().flatten().collect();
        let updates: Vec<TableUpdate> = decode(&updates)?.into_iter().flatten().collect();
        for u in &updates {
            let back: TableUpdate = serde_json::from_value(serde_json::to_value(u).unwrap()).unwrap();
            prop_assert_eq!(&back, u);
        }
        for r in &requirements {
            let back: TableRequirement = serde_json::from_value(serde_json::to_value(r).unwrap()).unwrap();
            prop_assert_eq!(&back, r);
        }
        let before = base.clone();
        let result = apply_commit(&base, &requirements, &updates, now);
        prop_assert_eq!(&base, &before, "the base is never modified");
        let requirements_hold = check_requirements(Some(&base), &requirements).is_ok();
        match result {
            Err(_) => {}
            Ok(meta) => {
                prop_assert!(requirements_hold, "a commit applied although a requirement failed");
                prop_assert_eq!(meta.check_invariants(), Ok(()));
                prop_assert_eq!(&meta.table_uuid, &base.table_uuid);
                prop_assert_eq!(meta.format_version, base.format_version);
                prop_assert!(meta.last_updated_ms >= base.last_updated_ms);
                prop_assert!(meta.last_sequence_number >= base.last_sequence_number);
                prop_assert!(meta.last_column_id >= base.last_column_id);
                // Schemas, specs and sort orders are only ever added.
                prop_assert_eq!(&meta.schemas[..base.schemas.len()], &base.schemas[..]);
                prop_assert_eq!(&meta.partition_specs[..base.partition_specs.len()], &base.partition_specs[..]);
                prop_assert_eq!(&meta.sort_orders[..base.sort_orders.len()], &base.sort_orders[..]);
                // A snapshot of the base disappears (or is replaced by one
                // added under its id, as Iceberg allows) only when removed by id.
                let removed: Vec<i64> = updates
                    .iter()
                    .filter_map(|u| match u { TableUpdate::RemoveSnapshots { snapshot_ids } => Some(snapshot_ids.clone()), _ => None })
                    .flatten()
                    .collect();
                for s in &base.snapshots {
                    match meta.snapshot(s.snapshot_id) {
                        Some(kept) if !removed.contains(&s.snapshot_id) => prop_assert_eq!(kept, s),
                        Some(_) => {}
                        None => prop_assert!(removed.contains(&s.snapshot_id)),
                    }
                }
                // Snapshot ids stay unique.
                let mut ids: Vec<i64> = meta.snapshots.iter().map(|s| s.snapshot_id).collect();
                ids.sort_unstable();
                ids.dedup();
                prop_assert_eq!(ids.len(), meta.snapshots.len());
                // The metadata file written for the commit reads back as the same table.
                let text = serde_json::to_string(&meta).unwrap();
                let back: TableMetadata = serde_json::from_str(&text).unwrap();
                prop_assert_eq!(&back, &meta);
                // Applying the same commit again to the same base gives the same table.
                prop_assert_eq!(apply_commit(&base, &requirements, &updates, now).ok(), Some(meta));
            }
        }
        // Requirements alone decide for an empty update list.
        prop_assert_eq!(apply_commit(&base, &requirements, &[], now).is_ok(), requirements_hold);
    }

    /// Arbitrary JSON never panics the decoders.
    #[test]
    fn arbitrary_json_never_panics_the_decoders(v in json_value(), tag in prop::sample::select(vec!["action", "type"]), name in "[a-z-]{0,30}") {
        let _ = serde_json::from_value::<TableUpdate>(v.clone());
        let _ = serde_json::from_value::<TableRequirement>(v.clone());
        let _ = serde_json::from_value::<TableMetadata>(v.clone());
        let mut tagged = v;
        if let Some(m) = tagged.as_object_mut() {
            m.insert(tag.into(), json!(name));
        }
        let _ = serde_json::from_value::<TableUpdate>(tagged.clone());
        let _ = serde_json::from_value::<TableRequirement>(tagged);
    }
}
