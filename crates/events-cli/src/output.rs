//! How every client command prints its result.
//!
//! - On a terminal: a table. A list is one row per item with the columns in
//!   the order the server sent them (the API's field order, or the SELECT's
//!   for `events query`); one record is a two-column FIELD/VALUE table.
//! - With `--json` (or `--format json`): the server's answer, as JSON.
//! - When stdout is not a terminal (piped, redirected): NDJSON, one JSON
//!   object per row of the table a terminal would show.
//! - `--format csv`: the table's rows as CSV with a header.
//!
//! Answers are decoded into [`Doc`], which keeps the order of object fields
//! (a `serde_json::Value` object would sort them).

use std::fmt::Write as _;
use std::io::IsTerminal;

use clap::{Args, ValueEnum};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Number, Value};

/// Widest cell of a list table, in characters; longer values are cut with `…`.
const MAX_CELL_CHARS: usize = 60;

/// How to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// An aligned text table (the default on a terminal).
    Table,
    /// The server's answer as JSON.
    Json,
    /// One JSON object per line (the default when stdout is not a terminal).
    Ndjson,
    /// CSV with a header row.
    Csv,
}

/// The output options every client command takes.
#[derive(Debug, Clone, Default, Args)]
pub struct OutputArgs {
    /// Print the server's answer as JSON (same as --format json).
    #[arg(long, global = true, conflicts_with = "format")]
    pub json: bool,
    /// table, json, ndjson or csv [default: table on a terminal, ndjson when piped].
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub format: Option<Format>,
}

impl OutputArgs {
    /// The format chosen by the flags, else by whether stdout is a terminal.
    pub fn format(&self) -> Format {
        match (self.json, self.format) {
            (true, _) => Format::Json,
            (false, Some(f)) => f,
            (false, None) if std::io::stdout().is_terminal() => Format::Table,
            (false, None) => Format::Ndjson,
        }
    }

    /// A printer in the chosen format.
    pub fn printer(&self) -> Printer {
        Printer { format: self.format() }
    }
}

/// Prints results in one [`Format`].
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub format: Format,
}

impl Printer {
    /// Prints a list: `rows` as the table, the NDJSON lines or the CSV; the
    /// whole `answer` with `--json`.
    pub fn list(&self, answer: &Doc, rows: &[Doc]) {
        print!("{}", self.render_list(answer, rows));
    }

    /// Prints one record: a FIELD/VALUE table, one NDJSON line, or JSON.
    pub fn record(&self, answer: &Doc) {
        print!("{}", self.render_record(answer));
    }

    /// Prints a further list under a title, on a terminal only (the rest of
    /// the answer is in `--json`).
    pub fn extra(&self, title: &str, rows: &[Doc]) {
        if self.format == Format::Table && !rows.is_empty() {
            println!("\n{title}:");
            print!("{}", table(rows));
        }
    }

    /// A list in this format.
    pub fn render_list(&self, answer: &Doc, rows: &[Doc]) -> String {
        match self.format {
            Format::Json => pretty(answer),
            Format::Ndjson => rows.iter().map(|r| format!("{}\n", compact(r))).collect(),
            Format::Table => table(rows),
            Format::Csv => csv(rows),
        }
    }

    /// A record in this format.
    pub fn render_record(&self, answer: &Doc) -> String {
        match self.format {
            Format::Json => pretty(answer),
            Format::Ndjson => format!("{}\n", compact(answer)),
            Format::Table => fields(answer),
            Format::Csv => csv(std::slice::from_ref(answer)),
        }
    }
}

/// A JSON value whose objects keep their fields in the order received.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Doc {
    #[default]
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Doc>),
    Object(Vec<(String, Doc)>),
}

static NULL: Doc = Doc::Null;

impl Doc {
    /// Parses JSON text.
    pub fn parse(text: &str) -> serde_json::Result<Doc> {
        serde_json::from_str(text)
    }

    /// A field of an object (`Null` when absent or not an object).
    pub fn get(&self, key: &str) -> &Doc {
        match self {
            Doc::Object(fields) => fields.iter().find(|(k, _)| k == key).map_or(&NULL, |(_, v)| v),
            _ => &NULL,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Doc::String(s) => Some(s),
            _ => None,
        }
    }

    /// The items of an array (none for anything else).
    pub fn items(&self) -> &[Doc] {
        match self {
            Doc::Array(items) => items,
            _ => &[],
        }
    }

    /// An object of `fields`, in this order.
    pub fn object<K: Into<String>>(fields: impl IntoIterator<Item = (K, Doc)>) -> Doc {
        Doc::Object(fields.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// The same value as a `serde_json::Value` (objects sorted).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The text of a table cell: strings bare, `null` empty, anything else as compact JSON.
    pub fn cell(&self) -> String {
        match self {
            Doc::Null => String::new(),
            Doc::String(s) => s.clone(),
            other => compact(other),
        }
    }
}

impl From<&str> for Doc {
    fn from(s: &str) -> Doc {
        Doc::String(s.to_string())
    }
}

impl From<String> for Doc {
    fn from(s: String) -> Doc {
        Doc::String(s)
    }
}

impl From<u64> for Doc {
    fn from(n: u64) -> Doc {
        Doc::Number(n.into())
    }
}

impl From<bool> for Doc {
    fn from(b: bool) -> Doc {
        Doc::Bool(b)
    }
}

impl From<&Value> for Doc {
    fn from(v: &Value) -> Doc {
        match v {
            Value::Null => Doc::Null,
            Value::Bool(b) => Doc::Bool(*b),
            Value::Number(n) => Doc::Number(n.clone()),
            Value::String(s) => Doc::String(s.clone()),
            Value::Array(a) => Doc::Array(a.iter().map(Doc::from).collect()),
            Value::Object(o) => Doc::Object(o.iter().map(|(k, v)| (k.clone(), Doc::from(v))).collect()),
        }
    }
}

impl Serialize for Doc {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Doc::Null => s.serialize_unit(),
            Doc::Bool(b) => s.serialize_bool(*b),
            Doc::Number(n) => n.serialize(s),
            Doc::String(v) => s.serialize_str(v),
            Doc::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Doc::Object(fields) => {
                let mut map = s.serialize_map(Some(fields.len()))?;
                for (k, v) in fields {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Doc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Doc, D::Error> {
        struct DocVisitor;
        impl<'de> Visitor<'de> for DocVisitor {
            type Value = Doc;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Doc, E> {
                Ok(Doc::Null)
            }
            fn visit_none<E>(self) -> Result<Doc, E> {
                Ok(Doc::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Doc, D::Error> {
                Doc::deserialize(d)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Doc, E> {
                Ok(Doc::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Doc, E> {
                Ok(Doc::Number(n.into()))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Doc, E> {
                Ok(Doc::Number(n.into()))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Doc, E> {
                Number::from_f64(n).map(Doc::Number).ok_or_else(|| E::custom("a number JSON cannot hold"))
            }
            fn visit_str<E>(self, s: &str) -> Result<Doc, E> {
                Ok(Doc::String(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> Result<Doc, E> {
                Ok(Doc::String(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Doc, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Doc::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Doc, A::Error> {
                let mut fields = Vec::new();
                while let Some(entry) = map.next_entry::<String, Doc>()? {
                    fields.push(entry);
                }
                Ok(Doc::Object(fields))
            }
        }
        d.deserialize_any(DocVisitor)
    }
}

fn compact(doc: &Doc) -> String {
    serde_json::to_string(doc).unwrap_or_default()
}

fn pretty(doc: &Doc) -> String {
    format!("{}\n", serde_json::to_string_pretty(doc).unwrap_or_default())
}

/// The columns of `rows`: the first row's fields in order, then any a later
/// row adds. Rows that are not objects make one column, `value`.
pub fn columns_of(rows: &[Doc]) -> Vec<String> {
    let mut columns: Vec<String> = Vec::new();
    for row in rows {
        match row {
            Doc::Object(fields) => {
                for (c, _) in fields {
                    if !columns.contains(c) {
                        columns.push(c.clone());
                    }
                }
            }
            _ if !columns.iter().any(|c| c == "value") => columns.push("value".to_string()),
            _ => {}
        }
    }
    columns
}

fn row_cell(row: &Doc, column: &str) -> String {
    match row {
        Doc::Object(_) => row.get(column).cell(),
        other if column == "value" => other.cell(),
        _ => String::new(),
    }
}

fn cut(s: &str) -> String {
    // One line per row: line breaks inside a value are shown as spaces.
    let s: String = s.chars().map(|c| if c == '\n' || c == '\r' || c == '\t' { ' ' } else { c }).collect();
    if s.chars().count() <= MAX_CELL_CHARS {
        s
    } else {
        format!("{}…", s.chars().take(MAX_CELL_CHARS - 1).collect::<String>())
    }
}

/// An aligned table with a header, a rule and a row count.
pub fn table(rows: &[Doc]) -> String {
    let mut out = String::new();
    let columns = columns_of(rows);
    let cells: Vec<Vec<String>> = rows.iter().map(|r| columns.iter().map(|c| cut(&row_cell(r, c))).collect()).collect();
    let mut widths: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |out: &mut String, cells: &[String]| {
        let text: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", text.join("  ").trim_end());
    };
    if !columns.is_empty() {
        line(&mut out, &columns);
        line(&mut out, &widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>());
    }
    for row in &cells {
        line(&mut out, row);
    }
    let _ = writeln!(out, "({} {})", rows.len(), if rows.len() == 1 { "row" } else { "rows" });
    out
}

/// A record as FIELD/VALUE lines; nested objects one level deep become
/// `parent.field` lines.
pub fn fields(record: &Doc) -> String {
    let mut pairs: Vec<(String, String)> = Vec::new();
    match record {
        Doc::Object(top) => {
            for (k, v) in top {
                match v {
                    Doc::Object(inner) if !inner.is_empty() => {
                        pairs.extend(inner.iter().map(|(ik, iv)| (format!("{k}.{ik}"), iv.cell())));
                    }
                    other => pairs.push((k.clone(), other.cell())),
                }
            }
        }
        other => pairs.push(("value".to_string(), other.cell())),
    }
    let width = pairs.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    pairs.iter().map(|(k, v)| format!("{k:<width$}  {v}").trim_end().to_string() + "\n").collect()
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

/// Rows as CSV with a header.
pub fn csv(rows: &[Doc]) -> String {
    let columns = columns_of(rows);
    let mut out = String::new();
    let _ = writeln!(out, "{}", columns.iter().map(|c| csv_field(c)).collect::<Vec<_>>().join(","));
    for row in rows {
        let _ = writeln!(out, "{}", columns.iter().map(|c| csv_field(&row_cell(row, c))).collect::<Vec<_>>().join(","));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> Doc {
        Doc::parse(text).unwrap()
    }

    #[test]
    fn objects_keep_their_field_order() {
        let d = doc(r#"{"z":1,"b":null,"a":{"y":[1,2.5,"x"],"c":true}}"#);
        assert_eq!(compact(&d), r#"{"z":1,"b":null,"a":{"y":[1,2.5,"x"],"c":true}}"#);
        assert_eq!(d.get("a").get("c"), &Doc::Bool(true));
        assert_eq!(d.get("missing"), &Doc::Null);
    }

    #[test]
    fn tables_keep_the_servers_column_order() {
        let rows = doc(r#"[{"z":1,"b":null,"a":"x"},{"z":2,"b":3,"a":null,"extra":[1]}]"#);
        let rows = rows.items();
        assert_eq!(columns_of(rows), ["z", "b", "a", "extra"]);
        let text = table(rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), ["z", "b", "a", "extra"], "{text}");
        assert_eq!(lines[2].split_whitespace().collect::<Vec<_>>(), ["1", "x"], "{text}");
        assert_eq!(lines[3].split_whitespace().collect::<Vec<_>>(), ["2", "3", "[1]"], "{text}");
        assert_eq!(lines[4], "(2 rows)");
        assert_eq!(table(&[]), "(0 rows)\n");
    }

    #[test]
    fn every_format_of_a_list_and_a_record() {
        let answer = doc(r#"{"keys":[{"id":"k1","name":"a,b"},{"id":"k2","name":null}],"next":null}"#);
        let rows = answer.get("keys").items();
        let ndjson = Printer { format: Format::Ndjson }.render_list(&answer, rows);
        assert_eq!(ndjson, "{\"id\":\"k1\",\"name\":\"a,b\"}\n{\"id\":\"k2\",\"name\":null}\n");
        let csv = Printer { format: Format::Csv }.render_list(&answer, rows);
        assert_eq!(csv, "id,name\nk1,\"a,b\"\nk2,\n");
        let json = Printer { format: Format::Json }.render_list(&answer, rows);
        assert_eq!(Doc::parse(&json).unwrap(), answer);
        let record = doc(r#"{"id":"s1","stats":{"delivered":2,"dead":0},"tags":["a"]}"#);
        let text = Printer { format: Format::Table }.render_record(&record);
        assert_eq!(text, "id               s1\nstats.delivered  2\nstats.dead       0\ntags             [\"a\"]\n");
        let line = Printer { format: Format::Ndjson }.render_record(&record);
        assert_eq!(line.lines().count(), 1);
    }

    #[test]
    fn long_cells_are_cut() {
        let rows = vec![Doc::object([("v", Doc::from("x".repeat(100)))])];
        let text = table(&rows);
        assert!(text.lines().nth(2).unwrap().ends_with('…'), "{text}");
        assert_eq!(text.lines().nth(2).unwrap().chars().count(), MAX_CELL_CHARS);
    }
}
