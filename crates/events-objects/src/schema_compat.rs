//! Structural compatibility of two JSON Schemas.
//!
//! [`subset_differences`]`(narrow, wide)` tries to prove that every instance
//! valid under `narrow` is valid under `wide`, and lists what stands in the
//! way. BACKWARD compatibility of a new schema is `subset(old, new)`
//! (consumers using the new schema read old data); FORWARD is
//! `subset(new, old)`; FULL is both.
//!
//! The proof is sound but incomplete: an empty list means the inclusion
//! holds for the constructs understood here; a keyword the checker does not
//! understand is accepted on the wide side only when the narrow side has the
//! identical value. `docs/schemas.md` lists the constructs.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Deepest nesting (including `$ref` hops) the comparison follows.
pub const MAX_COMPARE_DEPTH: usize = 48;
/// Most differences reported for one comparison.
pub const MAX_DIFFERENCES: usize = 50;

/// One reason why the narrow schema is not included in the wide one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    /// JSON Pointer into the schema where the difference is.
    pub path: String,
    /// Stable kind, e.g. `FIELD_MADE_REQUIRED`.
    pub kind: String,
    /// What changed, in words.
    pub message: String,
}

/// Keywords that only annotate: ignored on both sides.
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "$comment",
    "examples",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
    "$schema",
    "$id",
    "$anchor",
    "$defs",
    "definitions",
];

/// Keywords whose meaning the checker understands.
const UNDERSTOOD: &[&str] = &[
    "$ref",
    "type",
    "enum",
    "const",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "items",
    "minItems",
    "maxItems",
    "uniqueItems",
    "properties",
    "additionalProperties",
    "required",
    "minProperties",
    "maxProperties",
    "anyOf",
    "allOf",
    "oneOf",
];

/// The differences that keep `narrow` from being included in `wide`; empty when included.
pub fn subset_differences(narrow: &Value, wide: &Value) -> Vec<Difference> {
    let mut cx = Compare { a_root: narrow, b_root: wide, out: Vec::new() };
    cx.check(narrow, wide, "", 0);
    cx.out.truncate(MAX_DIFFERENCES);
    cx.out
}

struct Compare<'a> {
    a_root: &'a Value,
    b_root: &'a Value,
    out: Vec<Difference>,
}

fn contains_ref(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.contains_key("$ref") || m.values().any(contains_ref),
        Value::Array(a) => a.iter().any(contains_ref),
        _ => false,
    }
}

fn resolve<'v>(root: &'v Value, reference: &str) -> Option<&'v Value> {
    let pointer = reference.strip_prefix('#')?;
    if pointer.is_empty() {
        return Some(root);
    }
    root.pointer(pointer)
}

/// Whether `v` constrains nothing (`true`, `{}`, or only annotations).
fn is_trivial(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Object(m) => m.keys().all(|k| ANNOTATIONS.contains(&k.as_str())),
        _ => false,
    }
}

fn types(m: &Map<String, Value>) -> Option<BTreeSet<String>> {
    match m.get("type")? {
        Value::String(s) => Some([s.clone()].into()),
        Value::Array(a) => Some(a.iter().filter_map(|t| t.as_str().map(str::to_string)).collect()),
        _ => None,
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Lower bound `(value, exclusive)` of a numeric schema.
fn lower(m: &Map<String, Value>) -> Option<(f64, bool)> {
    let inc = m.get("minimum").and_then(Value::as_f64).map(|v| (v, false));
    let exc = m.get("exclusiveMinimum").and_then(Value::as_f64).map(|v| (v, true));
    match (inc, exc) {
        (Some(i), Some(e)) => Some(if e.0 >= i.0 { e } else { i }),
        (i, e) => i.or(e),
    }
}

fn upper(m: &Map<String, Value>) -> Option<(f64, bool)> {
    let inc = m.get("maximum").and_then(Value::as_f64).map(|v| (v, false));
    let exc = m.get("exclusiveMaximum").and_then(Value::as_f64).map(|v| (v, true));
    match (inc, exc) {
        (Some(i), Some(e)) => Some(if e.0 <= i.0 { e } else { i }),
        (i, e) => i.or(e),
    }
}

impl Compare<'_> {
    fn diff(&mut self, path: &str, kind: &str, message: String) {
        if self.out.len() < MAX_DIFFERENCES {
            self.out.push(Difference {
                path: if path.is_empty() { "/".into() } else { path.into() },
                kind: kind.into(),
                message,
            });
        }
    }

    fn check(&mut self, a: &Value, b: &Value, path: &str, depth: usize) {
        if depth > MAX_COMPARE_DEPTH {
            self.diff(path, "TOO_DEEP", format!("schemas nest deeper than {MAX_COMPARE_DEPTH} levels; not compared"));
            return;
        }
        if a == b && !contains_ref(a) {
            return;
        }
        if is_trivial(b) || a == &Value::Bool(false) {
            return;
        }
        if b == &Value::Bool(false) {
            self.diff(path, "SCHEMA_NARROWED", "the schema now rejects every value".into());
            return;
        }
        // Resolve references (local only: remote ones are refused at registration).
        if let Some(r) = a.get("$ref").and_then(Value::as_str) {
            match resolve(self.a_root, r) {
                // Siblings of $ref on the narrow side only narrow it further; dropping them is sound.
                Some(target) => return self.check(&target.clone(), b, path, depth + 1),
                None => return self.diff(path, "UNSUPPORTED_CHANGE", format!("unresolvable $ref {r:?}")),
            }
        }
        if let Some(r) = b.get("$ref").and_then(Value::as_str) {
            let Some(target) = resolve(self.b_root, r) else {
                return self.diff(path, "UNSUPPORTED_CHANGE", format!("unresolvable $ref {r:?}"));
            };
            let target = target.clone();
            self.check(a, &target, path, depth + 1);
            // Sibling keywords of $ref are further constraints on the wide side.
            let mut rest = b.as_object().cloned().unwrap_or_default();
            rest.remove("$ref");
            if !is_trivial(&Value::Object(rest.clone())) {
                self.check(a, &Value::Object(rest), path, depth + 1);
            }
            return;
        }
        let a_map = match a {
            Value::Object(m) => m.clone(),
            Value::Bool(true) => Map::new(),
            _ => return self.diff(path, "UNSUPPORTED_CHANGE", "the old schema is not a JSON Schema object".into()),
        };
        let Value::Object(b_map) = b else {
            return self.diff(path, "UNSUPPORTED_CHANGE", "the new schema is not a JSON Schema object".into());
        };
        let a_map = self.flatten_narrow(a_map, path);
        // Narrow side unions: every branch must fit.
        for key in ["anyOf", "oneOf"] {
            if let Some(Value::Array(branches)) = a_map.get(key) {
                let mut rest = a_map.clone();
                rest.remove(key);
                for (i, branch) in branches.iter().enumerate() {
                    let merged = overlay(&rest, branch);
                    self.check(&merged, b, &format!("{path}/{key}/{i}"), depth + 1);
                }
                return;
            }
        }
        // Wide side conjunctions: each conjunct must hold.
        if let Some(Value::Array(conj)) = b_map.get("allOf") {
            for (i, c) in conj.iter().enumerate() {
                self.check(&Value::Object(a_map.clone()), c, &format!("{path}/allOf/{i}"), depth + 1);
            }
        }
        if let Some(Value::Array(branches)) = b_map.get("anyOf") {
            let a_val = Value::Object(a_map.clone());
            let fits = branches.iter().any(|br| {
                let mut sub = Compare { a_root: self.a_root, b_root: self.b_root, out: Vec::new() };
                sub.check(&a_val, br, path, depth + 1);
                sub.out.is_empty()
            });
            if !fits {
                self.diff(path, "ANY_OF_NO_MATCH", "no branch of the new anyOf accepts every old value".into());
            }
        }
        self.check_keywords(&a_map, b_map, path, depth);
    }

    /// Folds `allOf` of the narrow side into one schema (overlapping keywords keep the last
    /// conjunct's value, which only widens the narrow side).
    fn flatten_narrow(&mut self, mut a: Map<String, Value>, _path: &str) -> Map<String, Value> {
        if let Some(Value::Array(conj)) = a.remove("allOf") {
            for c in conj {
                let c = match c.get("$ref").and_then(Value::as_str).and_then(|r| resolve(self.a_root, r)) {
                    Some(t) => t.clone(),
                    None => c,
                };
                if let Value::Object(m) = c {
                    for (k, v) in m {
                        a.insert(k, v);
                    }
                }
            }
        }
        a
    }

    fn check_keywords(&mut self, a: &Map<String, Value>, b: &Map<String, Value>, path: &str, depth: usize) {
        // Keywords not understood: the wide side must not add or change them.
        for (k, bv) in b {
            if ANNOTATIONS.contains(&k.as_str()) || UNDERSTOOD.contains(&k.as_str()) {
                continue;
            }
            if a.get(k) != Some(bv) {
                self.diff(
                    &format!("{path}/{k}"),
                    "UNSUPPORTED_CHANGE",
                    format!("keyword {k:?} is not understood by the compatibility checker and differs"),
                );
            }
        }
        if let Some(Value::Array(_)) = b.get("oneOf")
            && a.get("oneOf") != b.get("oneOf")
        {
            self.diff(
                &format!("{path}/oneOf"),
                "UNSUPPORTED_CHANGE",
                "oneOf differs (only identical oneOf is accepted)".into(),
            );
        }
        // Enumerations: checked value by value.
        let a_enum: Option<Vec<Value>> = match (a.get("enum"), a.get("const")) {
            (_, Some(c)) => Some(vec![c.clone()]),
            (Some(Value::Array(e)), None) => Some(e.clone()),
            _ => None,
        };
        let b_enum: Option<Vec<Value>> = match (b.get("enum"), b.get("const")) {
            (_, Some(c)) => Some(vec![c.clone()]),
            (Some(Value::Array(e)), None) => Some(e.clone()),
            _ => None,
        };
        if let Some(values) = &a_enum {
            // The narrow side is a finite set: check each value against the wide side's simple keywords.
            let mut dropped = Vec::new();
            for v in values {
                if let Some(be) = &b_enum
                    && !be.contains(v)
                {
                    dropped.push(v.clone());
                    continue;
                }
                if let Some(bt) = types(b) {
                    let t = json_type(v);
                    if !(bt.contains(t) || (t == "integer" && bt.contains("number"))) {
                        dropped.push(v.clone());
                    }
                }
            }
            if !dropped.is_empty() {
                self.diff(
                    &format!("{path}/enum"),
                    "ENUM_VALUE_DROPPED",
                    format!("values no longer accepted: {}", Value::Array(dropped)),
                );
            }
        } else if b_enum.is_some() {
            self.diff(
                &format!("{path}/enum"),
                "ENUM_ADDED",
                "an enum/const now restricts values that were free".into(),
            );
        }
        // Types.
        let a_types = match &a_enum {
            Some(values) => Some(values.iter().map(|v| json_type(v).to_string()).collect::<BTreeSet<_>>()),
            None => types(a),
        };
        if a_enum.is_none()
            && let Some(bt) = types(b)
        {
            match &a_types {
                None => self.diff(
                    &format!("{path}/type"),
                    "TYPE_NARROWED",
                    format!("type restricted to {bt:?}; any type was allowed"),
                ),
                Some(at) => {
                    let lost: Vec<&String> = at
                        .iter()
                        .filter(|t| !(bt.contains(*t) || (t.as_str() == "integer" && bt.contains("number"))))
                        .collect();
                    if !lost.is_empty() {
                        self.diff(
                            &format!("{path}/type"),
                            "TYPE_NARROWED",
                            format!("types no longer accepted: {lost:?}"),
                        );
                    }
                }
            }
        }
        if a_enum.is_some() {
            // Value-level checks above cover enums; bounds and structure of the wide side on
            // enum values are not evaluated, so any change there is reported as unsupported.
            for k in [
                "minimum",
                "maximum",
                "exclusiveMinimum",
                "exclusiveMaximum",
                "multipleOf",
                "minLength",
                "maxLength",
                "pattern",
                "format",
                "properties",
                "required",
                "additionalProperties",
                "minProperties",
                "maxProperties",
                "items",
                "minItems",
                "maxItems",
                "uniqueItems",
            ] {
                if let Some(bv) = b.get(k)
                    && a.get(k) != Some(bv)
                {
                    self.diff(
                        &format!("{path}/{k}"),
                        "UNSUPPORTED_CHANGE",
                        format!("{k} on an enumerated schema changed"),
                    );
                }
            }
            return;
        }
        let allows =
            |t: &str| a_types.as_ref().is_none_or(|s| s.contains(t) || (t == "number" && s.contains("integer")));
        if allows("number") {
            self.numeric(a, b, path);
        }
        if allows("string") {
            self.string(a, b, path);
        }
        if allows("array") {
            self.array(a, b, path, depth);
        }
        if allows("object") {
            self.object(a, b, path, depth);
        }
    }

    fn numeric(&mut self, a: &Map<String, Value>, b: &Map<String, Value>, path: &str) {
        if let Some((vb, eb)) = lower(b) {
            match lower(a) {
                Some((va, ea)) if va > vb || (va == vb && (ea || !eb)) => {}
                _ => self.diff(
                    path,
                    "MIN_TIGHTENED",
                    format!("lower bound raised to {vb}{}", if eb { " (exclusive)" } else { "" }),
                ),
            }
        }
        if let Some((vb, eb)) = upper(b) {
            match upper(a) {
                Some((va, ea)) if va < vb || (va == vb && (ea || !eb)) => {}
                _ => self.diff(
                    path,
                    "MAX_TIGHTENED",
                    format!("upper bound lowered to {vb}{}", if eb { " (exclusive)" } else { "" }),
                ),
            }
        }
        if let Some(mb) = b.get("multipleOf").and_then(Value::as_f64) {
            let ok = a.get("multipleOf").and_then(Value::as_f64).is_some_and(|ma| {
                let r = ma / mb;
                (r - r.round()).abs() < 1e-9
            });
            if !ok {
                self.diff(
                    &format!("{path}/multipleOf"),
                    "MULTIPLE_OF_CHANGED",
                    format!("values must now be multiples of {mb}"),
                );
            }
        }
    }

    fn string(&mut self, a: &Map<String, Value>, b: &Map<String, Value>, path: &str) {
        self.count_bounds(a, b, path, "minLength", "maxLength", "length");
        if let Some(pb) = b.get("pattern")
            && a.get("pattern") != Some(pb)
        {
            self.diff(&format!("{path}/pattern"), "PATTERN_CHANGED", format!("pattern {pb} is new or different"));
        }
        if let Some(fb) = b.get("format")
            && a.get("format") != Some(fb)
        {
            self.diff(&format!("{path}/format"), "FORMAT_ADDED", format!("format {fb} is new or different"));
        }
    }

    fn count_bounds(
        &mut self,
        a: &Map<String, Value>,
        b: &Map<String, Value>,
        path: &str,
        min: &str,
        max: &str,
        what: &str,
    ) {
        if let Some(mb) = b.get(min).and_then(Value::as_u64)
            && a.get(min).and_then(Value::as_u64).unwrap_or(0) < mb
        {
            self.diff(&format!("{path}/{min}"), "MIN_TIGHTENED", format!("minimum {what} raised to {mb}"));
        }
        if let Some(mb) = b.get(max).and_then(Value::as_u64)
            && a.get(max).and_then(Value::as_u64).is_none_or(|ma| ma > mb)
        {
            self.diff(&format!("{path}/{max}"), "MAX_TIGHTENED", format!("maximum {what} lowered to {mb}"));
        }
    }

    fn array(&mut self, a: &Map<String, Value>, b: &Map<String, Value>, path: &str, depth: usize) {
        self.count_bounds(a, b, path, "minItems", "maxItems", "item count");
        if b.get("uniqueItems") == Some(&Value::Bool(true)) && a.get("uniqueItems") != Some(&Value::Bool(true)) {
            self.diff(&format!("{path}/uniqueItems"), "UNIQUE_ITEMS_ADDED", "items must now be unique".into());
        }
        match b.get("items") {
            None => {}
            Some(Value::Array(_)) if a.get("items") != b.get("items") => {
                self.diff(&format!("{path}/items"), "UNSUPPORTED_CHANGE", "tuple-form items differ".into());
            }
            Some(Value::Array(_)) => {}
            Some(bi) => {
                let ai = match a.get("items") {
                    Some(Value::Array(_)) | None => Value::Bool(true),
                    Some(ai) => ai.clone(),
                };
                self.check(&ai, bi, &format!("{path}/items"), depth + 1);
            }
        }
    }

    fn object(&mut self, a: &Map<String, Value>, b: &Map<String, Value>, path: &str, depth: usize) {
        self.count_bounds(a, b, path, "minProperties", "maxProperties", "property count");
        let empty = Map::new();
        let a_props = a.get("properties").and_then(Value::as_object).unwrap_or(&empty);
        let b_props = b.get("properties").and_then(Value::as_object).unwrap_or(&empty);
        // patternProperties on the narrow side let more keys in: treat its extra keys as free.
        let a_add = if a.contains_key("patternProperties") {
            Value::Bool(true)
        } else {
            a.get("additionalProperties").cloned().unwrap_or(Value::Bool(true))
        };
        let b_add = b.get("additionalProperties").cloned().unwrap_or(Value::Bool(true));
        if let Some(bp) = b.get("patternProperties")
            && a.get("patternProperties") != Some(bp)
        {
            self.diff(&format!("{path}/patternProperties"), "UNSUPPORTED_CHANGE", "patternProperties differ".into());
        }
        for (k, bk) in b_props {
            let p = format!("{path}/properties/{}", k.replace('~', "~0").replace('/', "~1"));
            match a_props.get(k) {
                Some(ak) => self.check(ak, bk, &p, depth + 1),
                None if a_add == Value::Bool(false) => {}
                None => {
                    if is_trivial(&a_add) && !is_trivial(bk) {
                        self.diff(
                            &p,
                            "PROPERTY_CONSTRAINED",
                            format!("property {k:?} is new and constrained, but the old schema allowed any value under it (open content model)"),
                        );
                    } else {
                        self.check(&a_add, bk, &p, depth + 1);
                    }
                }
            }
        }
        for (k, ak) in a_props {
            if b_props.contains_key(k) {
                continue;
            }
            let p = format!("{path}/properties/{}", k.replace('~', "~0").replace('/', "~1"));
            if b_add == Value::Bool(false) && ak != &Value::Bool(false) {
                self.diff(&p, "FIELD_REMOVED", format!("field {k:?} was removed while additionalProperties is false"));
            } else {
                self.check(ak, &b_add, &p, depth + 1);
            }
        }
        if b_add == Value::Bool(false) && a_add != Value::Bool(false) {
            self.diff(
                &format!("{path}/additionalProperties"),
                "ADDITIONAL_PROPERTIES_CLOSED",
                "additional properties are no longer allowed".into(),
            );
        } else if !is_trivial(&b_add) {
            self.check(&a_add, &b_add, &format!("{path}/additionalProperties"), depth + 1);
        }
        let a_req: BTreeSet<&str> = a
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if let Some(Value::Array(req)) = b.get("required") {
            for k in req.iter().filter_map(Value::as_str) {
                if !a_req.contains(k) {
                    self.diff(
                        &format!("{path}/required"),
                        "FIELD_MADE_REQUIRED",
                        format!("field {k:?} is now required"),
                    );
                }
            }
        }
    }
}

/// `base` with the keywords of `branch` laid over it.
fn overlay(base: &Map<String, Value>, branch: &Value) -> Value {
    let mut m = base.clone();
    if let Value::Object(b) = branch {
        for (k, v) in b {
            m.insert(k.clone(), v.clone());
        }
    } else {
        return branch.clone();
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn kinds(a: Value, b: Value) -> Vec<String> {
        subset_differences(&a, &b).into_iter().map(|d| d.kind).collect()
    }

    #[test]
    fn identical_and_widened_schemas_are_included() {
        let s = json!({"type":"object","properties":{"id":{"type":"string"}},"required":["id"]});
        assert!(kinds(s.clone(), s.clone()).is_empty());
        // Dropping a requirement, widening a type, loosening bounds: all fine.
        let wider = json!({"type":"object","properties":{"id":{"type":["string","null"]}}});
        assert!(kinds(s.clone(), wider).is_empty());
        assert!(
            kinds(json!({"type":"integer","minimum":1,"maximum":5}), json!({"type":"number","minimum":0})).is_empty()
        );
        assert!(kinds(json!({"enum":["a","b"]}), json!({"type":"string"})).is_empty());
        // Found by the fuzz target `compatible_schemas_accept_what_they_promise`: the wide
        // side's object and array keywords were not checked against enumerated values.
        assert_eq!(kinds(json!({"enum":[{}]}), json!({"properties":{},"required":["a"]})), ["UNSUPPORTED_CHANGE"; 2]);
        assert_eq!(kinds(json!({"const":[1,1]}), json!({"uniqueItems":true})), ["UNSUPPORTED_CHANGE"]);
        assert!(kinds(json!({"enum":["a","b"]}), json!({"enum":["a","b","c"]})).is_empty());
    }

    #[test]
    fn narrowing_changes_are_reported() {
        assert_eq!(kinds(json!({"type":["string","null"]}), json!({"type":"string"})), ["TYPE_NARROWED"]);
        assert_eq!(kinds(json!({"enum":["a","b"]}), json!({"enum":["a"]})), ["ENUM_VALUE_DROPPED"]);
        assert_eq!(
            kinds(json!({"type":"integer","minimum":0}), json!({"type":"integer","minimum":1})),
            ["MIN_TIGHTENED"]
        );
        assert_eq!(
            kinds(json!({"type":"integer","maximum":9}), json!({"type":"integer","exclusiveMaximum":9})),
            ["MAX_TIGHTENED"]
        );
        assert_eq!(kinds(json!({"type":"string"}), json!({"type":"string","maxLength":3})), ["MAX_TIGHTENED"]);
        assert_eq!(
            kinds(
                json!({"type":"object","properties":{"a":{}}}),
                json!({"type":"object","properties":{"a":{}},"required":["a"]})
            ),
            ["FIELD_MADE_REQUIRED"]
        );
        assert_eq!(
            kinds(
                json!({"type":"object","properties":{"a":{"type":"string"},"b":{"type":"string"}},"additionalProperties":false}),
                json!({"type":"object","properties":{"a":{"type":"string"}},"additionalProperties":false})
            ),
            ["FIELD_REMOVED"]
        );
        assert_eq!(kinds(json!({"type":"string"}), json!({"type":"string","format":"email"})), ["FORMAT_ADDED"]);
        assert_eq!(
            kinds(json!({"type":"object"}), json!({"type":"object","additionalProperties":false})),
            ["ADDITIONAL_PROPERTIES_CLOSED"]
        );
        assert_eq!(
            kinds(json!({"type":"object"}), json!({"type":"object","properties":{"x":{"type":"string"}}})),
            ["PROPERTY_CONSTRAINED"]
        );
        assert_eq!(kinds(json!({"type":"array"}), json!({"type":"array","uniqueItems":true})), ["UNIQUE_ITEMS_ADDED"]);
    }

    #[test]
    fn refs_and_defs_are_followed_on_both_sides() {
        let old = json!({"$defs":{"money":{"type":"integer","minimum":0}},"type":"object","properties":{"total":{"$ref":"#/$defs/money"}}});
        let looser = json!({"$defs":{"amount":{"type":"number"}},"type":"object","properties":{"total":{"$ref":"#/$defs/amount"}}});
        let tighter = json!({"$defs":{"money":{"type":"integer","minimum":1}},"type":"object","properties":{"total":{"$ref":"#/$defs/money"}}});
        assert!(kinds(old.clone(), looser).is_empty());
        let d = subset_differences(&old, &tighter);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].kind, "MIN_TIGHTENED");
        assert_eq!(d[0].path, "/properties/total");
    }

    #[test]
    fn unknown_keywords_must_be_identical_on_the_wide_side() {
        let a = json!({"type":"object","not":{"required":["x"]}});
        assert!(kinds(a.clone(), a.clone()).is_empty());
        assert_eq!(kinds(json!({"type":"object"}), a.clone()), ["UNSUPPORTED_CHANGE"]);
        // On the narrow side an unknown keyword only narrows it: dropping it is fine.
        assert!(kinds(a, json!({"type":"object"})).is_empty());
    }

    #[test]
    fn unions() {
        assert!(
            kinds(json!({"anyOf":[{"type":"string"},{"type":"integer"}]}), json!({"type":["string","number"]}))
                .is_empty()
        );
        assert_eq!(
            kinds(json!({"anyOf":[{"type":"string"},{"type":"null"}]}), json!({"type":"string"})),
            ["TYPE_NARROWED"]
        );
        assert!(kinds(json!({"type":"string"}), json!({"anyOf":[{"type":"integer"},{"type":"string"}]})).is_empty());
        assert_eq!(
            kinds(json!({"type":"boolean"}), json!({"anyOf":[{"type":"integer"},{"type":"string"}]})),
            ["ANY_OF_NO_MATCH"]
        );
    }
}
