//! `events schema`: the schema registry (register, list, show, validate, config).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use crate::cli::ClientArgs;
use crate::client::{Client, enc};
use crate::output::Doc;

const EXAMPLES: &str = "\
Examples:
  # Register a schema for one event type (BACKWARD compatibility by default)
  events schema register --ns acme --type order.created --schema order.json

  # Register a schema for every order.* type, in warn mode
  events schema register --ns acme --pattern 'order.*' --schema order.json --mode warn

  # Test events against a local schema file, without a server
  events schema validate --schema order.json --events events.ndjson";

/// Manage event schemas: register, list, show, validate events, namespace settings.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct SchemaArgs {
    #[command(subcommand)]
    pub command: SchemaCommand,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// The `schema` subcommands.
#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Register a new schema version for an event type or a type pattern.
    #[command(after_help = "\
Examples:
  events schema register --ns acme --type order.created --schema order.json
  events schema register --ns acme --pattern 'order.*' --schema order.json --compatibility FULL_TRANSITIVE
  events schema register --ns acme --type page.viewed --schema page.json --mode warn --description 'page views'

An incompatible change fails with 409 SCHEMA_INCOMPATIBLE and lists the breaking differences.")]
    Register(RegisterArgs),
    /// List the latest version of every schema of a namespace.
    #[command(after_help = "\
Examples:
  events schema list --ns acme
  EVENTS_TOKEN=ns_acme_... events schema list --ns acme")]
    List(NsArg),
    /// Show a schema: the latest version, one version, or the whole history.
    #[command(after_help = "\
Examples:
  events schema show --ns acme order.created
  events schema show --ns acme order.created --at 2
  events schema show --ns acme 'order.*' --history")]
    Show(ShowArgs),
    /// Validate events against a namespace's schemas (no storage), or against a local schema file.
    #[command(after_help = "\
Examples:
  # Against the server's schemas (nothing is stored)
  events schema validate --ns acme --events batch.json

  # Offline: a local schema file and a local events file (a JSON array, an object with an
  # \"events\" array, or NDJSON)
  events schema validate --schema order.json --events events.ndjson

Exits with status 1 when an event fails.")]
    Validate(ValidateArgs),
    /// Show or change the namespace's validation mode and default compatibility.
    #[command(after_help = "\
Examples:
  events schema config --ns acme
  events schema config --ns acme --mode warn
  events schema config --ns acme --mode strict --compatibility FULL")]
    Config(ConfigArgs),
}

/// The namespace option.
#[derive(Debug, Args)]
pub struct NsArg {
    /// Namespace.
    #[arg(long, default_value = "default", value_name = "NS")]
    pub ns: String,
}

/// `schema register`.
#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// Namespace.
    #[arg(long, default_value = "default", value_name = "NS")]
    pub ns: String,
    /// Event type the schema applies to.
    #[arg(long = "type", value_name = "TYPE", conflicts_with = "pattern", required_unless_present = "pattern")]
    pub event_type: Option<String>,
    /// Type pattern (`order.*`, `webhook.**`) the schema applies to.
    #[arg(long, value_name = "PATTERN")]
    pub pattern: Option<String>,
    /// JSON Schema file (draft 2020-12 or draft-07).
    #[arg(long, value_name = "FILE")]
    pub schema: PathBuf,
    /// NONE, BACKWARD, FORWARD, FULL or a _TRANSITIVE form.
    #[arg(long, value_name = "RULE")]
    pub compatibility: Option<String>,
    /// off, warn or strict (default: the namespace's mode).
    #[arg(long, value_name = "MODE")]
    pub mode: Option<String>,
    /// Free text.
    #[arg(long)]
    pub description: Option<String>,
}

/// `schema show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Namespace.
    #[arg(long, default_value = "default", value_name = "NS")]
    pub ns: String,
    /// Event type or pattern.
    pub subject: String,
    /// One version, by number.
    #[arg(long = "at", value_name = "N", conflicts_with = "history")]
    pub at: Option<u32>,
    /// Every version.
    #[arg(long)]
    pub history: bool,
}

/// `schema validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Namespace (server mode).
    #[arg(long, default_value = "default", value_name = "NS")]
    pub ns: String,
    /// Events file: a JSON array, `{"events": [...]}`, or NDJSON.
    #[arg(long, value_name = "FILE")]
    pub events: PathBuf,
    /// Local schema file: validate every event's data against it, offline.
    #[arg(long, value_name = "FILE")]
    pub schema: Option<PathBuf>,
}

/// `schema config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Namespace.
    #[arg(long, default_value = "default", value_name = "NS")]
    pub ns: String,
    /// off, warn or strict.
    #[arg(long, value_name = "MODE")]
    pub mode: Option<String>,
    /// Default compatibility of new schemas.
    #[arg(long, value_name = "RULE")]
    pub compatibility: Option<String>,
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// Events from a JSON array, a `{"events": [...]}` object or NDJSON.
pub fn read_events(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if let Ok(v) = serde_json::from_str::<Value>(&text) {
        return match v {
            Value::Array(a) => Ok(a),
            Value::Object(mut o) if o.get("events").is_some_and(Value::is_array) => {
                Ok(o.remove("events").and_then(|e| e.as_array().cloned()).unwrap_or_default())
            }
            other => Ok(vec![other]),
        };
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("line {}: invalid JSON", i + 1)))
        .collect()
}

/// Validates `events` against a local schema; one `{index, type, path, message}` per error.
pub fn validate_local(schema: &Value, events: &[Value]) -> anyhow::Result<Vec<Value>> {
    let validator = events_objects::schema_registry::compile_schema(schema).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut out = Vec::new();
    for (index, event) in events.iter().enumerate() {
        // A schema describes an event's data: the envelope fields are not part of it.
        let mut data = event.as_object().cloned().unwrap_or_default();
        let ty = data.remove("type").unwrap_or(Value::Null);
        for k in ["ts", "id", "source"] {
            data.remove(k);
        }
        for v in events_objects::schema_registry::violations(&validator, &Value::Object(data)) {
            out.push(json!({"index": index, "type": ty, "path": v.path, "message": v.message}));
        }
    }
    Ok(out)
}

/// Prints a validation result (the errors as rows) and exits with status 1 when an event failed.
fn report(out: crate::output::Printer, result: &Doc) {
    out.list(result, result.get("errors").items());
    if result.get("valid") != &Doc::Bool(true) {
        if out.format == crate::output::Format::Table {
            println!("invalid");
        }
        std::process::exit(1);
    }
    if out.format == crate::output::Format::Table {
        println!("valid");
    }
}

/// Runs `events schema ...`.
pub async fn run(args: SchemaArgs) -> anyhow::Result<()> {
    let out = args.client.output.printer();
    match args.command {
        SchemaCommand::Validate(a) if a.schema.is_some() => {
            let schema = read_json(a.schema.as_deref().unwrap_or(Path::new("")))?;
            let events = read_events(&a.events)?;
            let errors = validate_local(&schema, &events)?;
            report(out, &Doc::from(&json!({"valid": errors.is_empty(), "errors": errors})));
            Ok(())
        }
        command => {
            let client = Client::new(&args.client)?;
            match command {
                SchemaCommand::Register(a) => {
                    let mut body = json!({"schema": read_json(&a.schema)?});
                    match (a.event_type, a.pattern) {
                        (Some(t), _) => body["type"] = json!(t),
                        (None, Some(p)) => body["pattern"] = json!(p),
                        (None, None) => bail!("give --type or --pattern"),
                    }
                    for (k, v) in [("compatibility", a.compatibility), ("mode", a.mode), ("description", a.description)]
                    {
                        if let Some(v) = v {
                            body[k] = json!(v);
                        }
                    }
                    out.record(&client.call(Method::POST, &format!("/schemas/{}", enc(&a.ns)), Some(body)).await?);
                }
                SchemaCommand::List(a) => {
                    let list = client.call(Method::GET, &format!("/schemas/{}", enc(&a.ns)), None).await?;
                    out.list(&list, list.get("schemas").items());
                }
                SchemaCommand::Show(a) => {
                    let (ns, subject) = (enc(&a.ns), enc(&a.subject));
                    match (a.at, a.history) {
                        (Some(n), _) => out.record(
                            &client.call(Method::GET, &format!("/schemas/{ns}/{subject}/versions/{n}"), None).await?,
                        ),
                        (None, true) => {
                            let all =
                                client.call(Method::GET, &format!("/schemas/{ns}/{subject}/versions"), None).await?;
                            out.list(&all, all.get("schemas").items());
                        }
                        (None, false) => {
                            out.record(&client.call(Method::GET, &format!("/schemas/{ns}/{subject}"), None).await?)
                        }
                    }
                }
                SchemaCommand::Validate(a) => {
                    let events = read_events(&a.events)?;
                    let path = format!("/schemas/{}/validate", enc(&a.ns));
                    report(out, &client.call(Method::POST, &path, Some(json!({"events": events}))).await?);
                }
                SchemaCommand::Config(a) => {
                    let path = format!("/schemas/{}/config", enc(&a.ns));
                    let mut current = client.call(Method::GET, &path, None).await?.to_value();
                    if a.mode.is_some() || a.compatibility.is_some() {
                        if let Some(m) = a.mode {
                            current["mode"] = json!(m);
                        }
                        if let Some(c) = a.compatibility {
                            current["compatibility"] = json!(c);
                        }
                        out.record(&client.call(Method::PUT, &path, Some(current)).await?);
                    } else {
                        out.record(&Doc::from(&current));
                    }
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_validation_reports_paths_and_reads_every_format() {
        let dir = tempfile::tempdir().unwrap();
        let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]});
        let ndjson = dir.path().join("e.ndjson");
        std::fs::write(&ndjson, "{\"type\":\"a\",\"n\":1}\n\n{\"type\":\"a\",\"n\":\"x\",\"id\":\"i\"}\n").unwrap();
        let events = read_events(&ndjson).unwrap();
        assert_eq!(events.len(), 2);
        let errors = validate_local(&schema, &events).unwrap();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0]["index"], 1);
        assert_eq!(errors[0]["path"], "/n");
        let wrapped = dir.path().join("e.json");
        std::fs::write(&wrapped, r#"{"events": [{"type": "a"}]}"#).unwrap();
        let errors = validate_local(&schema, &read_events(&wrapped).unwrap()).unwrap();
        assert_eq!(errors[0]["path"], "", "missing required field is reported on the object");
        // Unsafe regexes are refused offline too.
        assert!(validate_local(&json!({"pattern": "(a+)+"}), &[]).is_err());
    }
}
