//! Property-based fuzzing of the schema registry's pure helpers: schema
//! compilation and validation, the compatibility checker, and the regex
//! safety checker.
//!
//! The number of cases comes from `EVENTS_FUZZ_CASES` (default 512); see
//! `docs/fuzzing.md` for long runs.

use events_objects::schema_compat::subset_differences;
use events_objects::schema_regex::{MAX_REGEX_LEN, check_regex};
use events_objects::schema_registry::{compatibility_differences, compile_schema, violations};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn cases() -> u32 {
    std::env::var("EVENTS_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512)
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: cases(), max_shrink_iters: 2000, ..ProptestConfig::default() }
}

// ---------------------------------------------------------------- schemas

/// Instances from a small domain, so that schemas and instances meet often.
fn instance() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..4).prop_map(|n| json!(n)),
        prop::sample::select(vec![0.5f64, -1.5, 2.0]).prop_map(|f| json!(f)),
        prop::sample::select(vec!["", "a", "ab", "abc", "1", "x@y.z", "2026-01-01"]).prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(2, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map(prop::sample::select(vec!["a", "b", "c"]), inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

const TYPES: [&str; 7] = ["string", "integer", "number", "boolean", "null", "object", "array"];

/// Schemas built from the keywords the compatibility checker understands
/// (and a few it does not), over the same small domain as the instances.
fn schema() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(json!({})),
        Just(json!(true)),
        Just(json!(false)),
        prop::sample::select(TYPES.to_vec()).prop_map(|t| json!({"type": t})),
        prop::collection::btree_set(prop::sample::select(TYPES.to_vec()), 1..3).prop_map(|t| json!({"type": t})),
        (
            -3i64..4,
            prop::sample::select(vec!["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"])
        )
            .prop_map(|(n, k)| json!({ k: if k == "multipleOf" { n.abs().max(1) } else { n } })),
        (
            0u64..4,
            prop::sample::select(vec![
                "minLength",
                "maxLength",
                "minItems",
                "maxItems",
                "minProperties",
                "maxProperties"
            ])
        )
            .prop_map(|(n, k)| json!({ k: n })),
        prop::collection::vec(instance(), 1..4).prop_map(|e| json!({"enum": e})),
        instance().prop_map(|c| json!({"const": c})),
        prop::sample::select(vec!["^a", "b$", "^[a-z]+$", "\\d"]).prop_map(|p| json!({"type": "string", "pattern": p})),
        prop::sample::select(vec!["email", "date"]).prop_map(|f| json!({"type": "string", "format": f})),
        Just(json!({"uniqueItems": true})),
        Just(json!({"not": {"type": "null"}})),
    ];
    leaf.prop_recursive(3, 16, 3, |inner| {
        prop_oneof![
            (
                prop::collection::btree_map(prop::sample::select(vec!["a", "b", "c"]), inner.clone(), 0..3),
                prop::collection::btree_set(prop::sample::select(vec!["a", "b", "c"]), 0..3),
                prop::option::of(prop_oneof![any::<bool>().prop_map(Value::Bool), inner.clone()]),
                any::<bool>(),
            )
                .prop_map(|(props, required, additional, typed)| {
                    let mut m = Map::new();
                    if typed {
                        m.insert("type".into(), json!("object"));
                    }
                    m.insert(
                        "properties".into(),
                        Value::Object(props.into_iter().map(|(k, v)| (k.to_string(), v)).collect()),
                    );
                    if !required.is_empty() {
                        m.insert("required".into(), json!(required));
                    }
                    if let Some(a) = additional {
                        m.insert("additionalProperties".into(), a);
                    }
                    Value::Object(m)
                }),
            (inner.clone(), any::<bool>()).prop_map(|(items, typed)| {
                if typed { json!({"type": "array", "items": items}) } else { json!({"items": items}) }
            }),
            (prop::sample::select(vec!["anyOf", "allOf", "oneOf"]), prop::collection::vec(inner.clone(), 1..3))
                .prop_map(|(k, v)| json!({ k: v })),
            (inner.clone(), inner).prop_map(|(a, b)| {
                // Two keyword sets merged into one schema object.
                let mut m = a.as_object().cloned().unwrap_or_default();
                if let Some(b) = b.as_object() {
                    m.extend(b.clone());
                }
                Value::Object(m)
            }),
        ]
    })
}

fn with_defs(s: Value, defs: Option<Value>) -> Value {
    // Optionally move the schema behind a local `$ref`.
    match (defs, s) {
        (Some(d), Value::Object(mut m)) => {
            m.insert("$defs".into(), json!({"d": d}));
            m.insert("$ref".into(), json!("#/$defs/d"));
            Value::Object(m)
        }
        (_, s) => s,
    }
}

fn valid(schema: &Value, x: &Value) -> Result<bool, TestCaseError> {
    let v =
        compile_schema(schema).map_err(|e| TestCaseError::fail(format!("{schema} does not compile: {}", e.message)))?;
    Ok(violations(&v, x).is_empty())
}

proptest! {
    #![proptest_config(config())]

    /// Soundness of the compatibility checker, against the validator as the
    /// oracle: when it finds no difference between `narrow` and `wide`,
    /// every instance valid under `narrow` is valid under `wide`.
    #[test]
    fn compatible_schemas_accept_what_they_promise(
        narrow in schema(),
        wide in schema(),
        narrow_defs in prop::option::of(schema()),
        instances in prop::collection::vec(instance(), 1..12),
    ) {
        let narrow = with_defs(narrow, narrow_defs);
        prop_assume!(compile_schema(&narrow).is_ok() && compile_schema(&wide).is_ok());
        let differences = subset_differences(&narrow, &wide);
        prop_assert!(differences.len() <= 50);
        if differences.is_empty() {
            for x in &instances {
                if valid(&narrow, x)? {
                    prop_assert!(valid(&wide, x)?, "{} is valid under {} but not under {}, said compatible", x, narrow, wide);
                }
            }
        }
        // Each direction of the registry's rule is one subset check.
        prop_assert_eq!(compatibility_differences(&narrow, &wide, true, false).is_empty(), differences.is_empty());
        prop_assert_eq!(
            compatibility_differences(&wide, &narrow, false, true).is_empty(),
            differences.is_empty()
        );
    }

    /// Every schema is compatible with itself. (Not yet with a `$ref` that
    /// has sibling keywords: see "Found, not fixed" in docs/fuzzing.md.)
    #[test]
    fn a_schema_is_compatible_with_itself(s in schema()) {
        let d = subset_differences(&s, &s);
        prop_assert!(d.is_empty(), "{} vs itself: {:?}", s, d);
    }

    /// Arbitrary JSON as a schema and as data never panics compilation,
    /// validation or the compatibility checker.
    #[test]
    fn arbitrary_schemas_never_panic(s in any_json(), t in any_json(), x in any_json()) {
        if let Ok(v) = compile_schema(&s) {
            let found = violations(&v, &x);
            prop_assert!(found.len() <= 100);
        }
        let _ = subset_differences(&s, &t);
        let _ = subset_differences(&t, &s);
    }
}

/// Found by `compatible_schemas_accept_what_they_promise`: the checker
/// called these two schemas compatible, yet `{}` is valid under the first
/// and not under the second (the wide side's `required` was not checked
/// against enumerated values; fixed in `schema_compat.rs`).
#[test]
fn an_enum_is_not_proved_compatible_with_a_required_field() {
    let narrow =
        json!({"$defs": {"d": {"enum": [{}], "minimum": 0}}, "$ref": "#/$defs/d", "anyOf": [{"properties": {}}]});
    let wide = json!({"allOf": [{"properties": {}, "required": ["a"]}]});
    assert!(valid(&narrow, &json!({})).unwrap());
    assert!(!valid(&wide, &json!({})).unwrap());
    assert!(!subset_differences(&narrow, &wide).is_empty());
}

/// Found by `a_schema_is_compatible_with_itself` (with a `$ref` sibling):
/// an identical schema is reported as closing additional properties. Not
/// fixed yet (docs/fuzzing.md, "Found, not fixed").
#[test]
#[ignore = "known incompleteness of the compatibility checker with $ref siblings, not fixed yet"]
fn a_ref_with_siblings_is_compatible_with_itself() {
    let s = json!({"$defs": {"d": {"properties": {}}}, "$ref": "#/$defs/d", "additionalProperties": false, "properties": {}});
    assert_eq!(subset_differences(&s, &s), vec![]);
}

/// Arbitrary JSON whose keys are often schema keywords.
fn any_json() -> impl Strategy<Value = Value> {
    let keys = prop_oneof![
        prop::sample::select(vec![
            "type",
            "properties",
            "required",
            "items",
            "enum",
            "const",
            "anyOf",
            "allOf",
            "oneOf",
            "not",
            "$ref",
            "$defs",
            "minimum",
            "maximum",
            "pattern",
            "patternProperties",
            "additionalProperties",
            "format",
            "$schema",
            "multipleOf",
            "minLength",
            "if",
            "then",
            "else",
            "$dynamicRef",
        ])
        .prop_map(str::to_string),
        "[a-z#/$]{1,6}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        prop::sample::select(vec![
            "string",
            "object",
            "#",
            "#/$defs/a",
            "#/properties/a",
            "(a+)+",
            "^a$",
            "email",
            "x"
        ])
        .prop_map(|s| json!(s)),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 4, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

// ---------------------------------------------------------------- regexes

/// Pieces that repeat (or can match empty), each balanced.
fn repeating_piece() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a+", "a*", "\\d+", "[a-z]*", "b{2,}", "\\w{1,9}", ".+", "(?:ab)+", "(c|d)*"])
        .prop_map(str::to_string)
}

/// Balanced regex pieces of every kind.
fn piece() -> impl Strategy<Value = String> {
    let leaf = prop::sample::select(vec![
        "a",
        "b",
        "\\.",
        "\\d",
        "\\w",
        "\\s",
        "[a-z]",
        "[^@]",
        "[0-9A-F]",
        ".",
        "^",
        "$",
        "\\b",
        "x{3}",
        "y?",
        "z+",
        "[a-c]{2,5}",
        "\\p{L}",
        "\\u0041",
        "é",
    ])
    .prop_map(str::to_string);
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..4).prop_map(|v| v.concat()),
            prop::collection::vec(inner.clone(), 2..4).prop_map(|v| format!("({})", v.join("|"))),
            (inner.clone(), prop::sample::select(vec!["*", "+", "?", "{2}", "{1,3}", "{2,}", "+?"]))
                .prop_map(|(p, q)| format!("(?:{p}){q}")),
            inner.prop_map(|p| format!("(?<n>{p})")),
        ]
    })
}

/// Arbitrary text biased towards regex syntax.
fn regex_noise() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        prop::collection::vec(
            prop::sample::select(vec![
                '(',
                ')',
                '[',
                ']',
                '{',
                '}',
                '|',
                '*',
                '+',
                '?',
                '\\',
                '^',
                '$',
                '.',
                ',',
                '-',
                'a',
                '1',
                '2',
                'k',
                '<',
                '>',
                '=',
                '!',
                ':',
                'P',
                'p',
                'd',
                'w',
                'é',
                '\u{10FFFF}',
            ]),
            0..300,
        )
        .prop_map(|c| c.into_iter().collect()),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// The checker never panics on any text, and refuses anything longer
    /// than the limit.
    #[test]
    fn check_regex_never_panics(src in regex_noise()) {
        let r = check_regex(&src);
        if src.chars().count() > MAX_REGEX_LEN {
            prop_assert!(r.is_err());
        }
        // Whatever is accepted is also accepted as a schema `pattern` and compiles there, or
        // is refused there as invalid (never as unsafe).
        if r.is_ok()
            && let Err(e) = compile_schema(&json!({"type": "string", "pattern": src}))
        {
            prop_assert!(!e.message.contains("unsafe regex"), "{}", e.message);
        }
    }

    /// A repetition of anything that itself repeats (or can match empty) is
    /// refused, however it is wrapped.
    #[test]
    fn nested_quantifiers_are_refused(
        before in prop::option::of(piece()),
        inner in repeating_piece(),
        after in prop::option::of(piece()),
        group in prop::sample::select(vec!["(", "(?:", "(?<g>"]),
        q in prop::sample::select(vec!["*", "+", "{2,}", "{1,5}", "+?", "*+"]),
        outer in prop::sample::select(vec!["", "^", "x"]),
    ) {
        let src = format!("{outer}{group}{}{inner}{}){q}", before.unwrap_or_default(), after.unwrap_or_default());
        prop_assume!(src.chars().count() <= MAX_REGEX_LEN);
        prop_assert!(check_regex(&src).is_err(), "accepted {}", src);
    }

    /// Overlapping alternatives under a repetition are refused.
    #[test]
    fn overlapping_alternatives_under_a_repetition_are_refused(
        c in "[a-z0-9]",
        x in piece(),
        y in piece(),
        q in prop::sample::select(vec!["*", "+", "{2,}"]),
    ) {
        let src = format!("(?:{c}{x}|{c}{y}){q}");
        prop_assume!(src.chars().count() <= MAX_REGEX_LEN);
        prop_assert!(check_regex(&src).is_err(), "accepted {}", src);
    }

    /// Back-references are refused wherever they appear.
    #[test]
    fn back_references_are_refused(p in piece(), q in piece(), r in prop::sample::select(vec!["\\1", "\\2", "\\k<n>"])) {
        let src = format!("({p}){q}{r}");
        prop_assume!(src.chars().count() <= MAX_REGEX_LEN);
        prop_assert!(check_regex(&src).is_err(), "accepted {}", src);
    }

    /// Wrapping in a plain group or anchors does not change the verdict.
    #[test]
    fn grouping_does_not_change_the_verdict(p in piece()) {
        prop_assume!(p.chars().count() + 6 <= MAX_REGEX_LEN);
        let verdict = check_regex(&p).is_ok();
        prop_assert_eq!(check_regex(&format!("(?:{p})")).is_ok(), verdict, "(?:{})", p);
        prop_assert_eq!(check_regex(&format!("^(?:{p})$")).is_ok(), verdict, "^(?:{})$", p);
        prop_assert_eq!(check_regex(&format!("({p})")).is_ok(), verdict, "({})", p);
    }

    /// A sequence of quantified single characters or classes, and literal
    /// text, are accepted.
    #[test]
    fn flat_patterns_are_accepted(
        parts in prop::collection::vec(
            (prop::sample::select(vec!["a", "\\d", "[a-z]", "[^@]", "\\.", "-", "_"]), prop::sample::select(vec!["", "*", "+", "?", "{2}", "{1,4}", "{3,}"])),
            0..10,
        ),
        anchors in any::<bool>(),
    ) {
        let body: String = parts.iter().map(|(a, q)| format!("{a}{q}")).collect();
        let src = if anchors { format!("^{body}$") } else { body };
        prop_assert_eq!(check_regex(&src), Ok(()), "{}", src);
    }
}
