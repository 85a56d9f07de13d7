//! The CLI as a user meets it: every example printed by `events <command>
//! --help` runs against a real server, and the README's quick tour runs as a
//! script on a fresh data directory.
//!
//! Examples run through `bash` in a scratch directory holding the files they
//! name (`events.ndjson`, `order.json`, ...), with `EVENTS_URL`,
//! `EVENTS_TOKEN` (a key of namespace `acme`) and `EVENTS_ADMIN_TOKEN` set.
//! The ids an example can only show as placeholders (`sub_01J...`, a key id,
//! a snapshot id) are replaced by real ones; an example that deletes gets a
//! thing of its own to delete.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use events_e2e::serde_json::{Value, json};
use events_e2e::*;

/// Longest time one example may run.
const EXAMPLE_TIMEOUT_SECS: u64 = 120;

/// Runs `events <args>` directly; answers stdout, panicking on failure.
fn events_direct(args: &[&str]) -> String {
    let out = Command::new(events_bin()).args(args).env_remove("EVENTS_URL").env_remove("EVENTS_TOKEN").output();
    let out = out.expect("running the events binary");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "events {args:?} failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// The subcommands listed under `Commands:` of a help text (without `help`).
fn subcommands(help: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in help.lines() {
        if line.trim_end() == "Commands:" {
            inside = true;
            continue;
        }
        if inside {
            let Some(name) = line.strip_prefix("  ").and_then(|l| l.split_whitespace().next()) else { break };
            if name != "help" {
                out.push(name.to_string());
            }
        }
    }
    out
}

/// The command lines of a help text's `Examples:` section: comments
/// skipped, `\` continuations joined; the section ends at the first line
/// that is not indented.
fn examples(help: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    let mut pending = String::new();
    for line in help.lines() {
        if line.trim_end() == "Examples:" {
            inside = true;
            continue;
        }
        if !inside {
            continue;
        }
        if !line.is_empty() && !line.starts_with(' ') {
            inside = false;
            continue;
        }
        let text = line.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        match text.strip_suffix('\\') {
            Some(head) => {
                pending.push_str(head.trim_end());
                pending.push(' ');
            }
            None => {
                pending.push_str(text);
                out.push(std::mem::take(&mut pending));
            }
        }
    }
    out
}

/// Every command path with its help text, depth first: `[]`, `["serve"]`, `["keys"]`, `["keys", "create"]`, ...
fn every_help() -> Vec<(Vec<String>, String)> {
    let mut out = Vec::new();
    let mut todo = vec![Vec::<String>::new()];
    while let Some(path) = todo.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let help = events_direct(&args);
        for sub in subcommands(&help).into_iter().rev() {
            let mut child = path.clone();
            child.push(sub);
            todo.push(child);
        }
        out.push((path, help));
    }
    out
}

/// The example's command, after any `VAR=value` prefixes: `events serve ...` → `serve`.
fn is_serve(line: &str) -> bool {
    command_of(line) == Some("serve")
}

/// Whether the example streams until stopped (`events tail ...`).
fn is_tail(line: &str) -> bool {
    command_of(line) == Some("tail")
}

fn command_of(line: &str) -> Option<&str> {
    if line.split_whitespace().find(|w| !w.contains('=')) != Some("events") {
        return None;
    }
    line.split_whitespace().skip_while(|w| *w != "events").nth(1)
}

/// How long a streaming example runs before it is stopped.
const STREAM_EXAMPLE_SECS: u64 = 3;
/// The exit status of `timeout` when it stopped the command.
const STOPPED_BY_TIMEOUT: i32 = 124;

/// A scratch directory where examples run, and what they need.
struct Session {
    dir: tempfile::TempDir,
    bin_dir: PathBuf,
    env: Vec<(String, String)>,
}

impl Session {
    fn new(env: Vec<(String, String)>) -> Session {
        let dir = tempfile::Builder::new().prefix("events-cli-examples-").tempdir().expect("temp dir");
        let bin_dir = events_bin().parent().expect("binary directory").to_path_buf();
        Session { dir, bin_dir, env }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path().join(name), text).expect("writing an example file");
    }

    fn bash(&self, script: &str) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg("-c").arg(script).current_dir(self.path());
        let path = format!("{}:{}", self.bin_dir.display(), std::env::var("PATH").unwrap_or_default());
        cmd.env("PATH", path);
        for var in SERVER_ENV_VARS.iter().chain(&["EVENTS_URL", "EVENTS_TOKEN"]) {
            cmd.env_remove(var);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Runs a client example to completion.
    fn run(&self, line: &str) -> Output {
        self.run_for(line, EXAMPLE_TIMEOUT_SECS)
    }

    /// Runs a client example, stopping it after `seconds`.
    fn run_for(&self, line: &str, seconds: u64) -> Output {
        let script = format!("set -o pipefail\ntimeout {seconds} bash -c {}", shell_quote(line));
        tokio::task::block_in_place(|| self.bash(&script).stdin(Stdio::null()).output().expect("running bash"))
    }

    /// Starts a `serve` example, waits for its listening line, stops it.
    fn run_server(&self, line: &str, n: usize) {
        let data = self.path().join(format!("serve-data-{n}"));
        tokio::task::block_in_place(|| {
            let mut cmd = self.bash(&format!("exec {line}"));
            cmd.env("EVENTS_LISTEN", "127.0.0.1:0").env("EVENTS_DATA_DIR", &data);
            cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
            let mut child = cmd.spawn().expect("starting bash");
            let stdout = child.stdout.take().expect("piped stdout");
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut first = String::new();
                let _ = BufReader::new(stdout).read_line(&mut first);
                let _ = tx.send(first);
            });
            let first = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
            let _ = child.kill();
            let out = child.wait_with_output().expect("waiting for the server");
            assert!(
                first.starts_with("events.do listening on http://"),
                "example `{line}` did not start a server: {first}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        });
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What the examples act on, made beforehand through the API.
struct World {
    key: String,
    sub: String,
    dead_letter: String,
    snapshot: String,
    /// Stands for the examples' `2026-11-27T12:00:00Z` (a recent past): after `u_42`'s insert, before its update.
    past: String,
}

async fn post(server: &TestServer, path: &str, auth: &Auth, body: Value) -> Value {
    let r = server.post_json(path, auth, &body).await;
    assert!(r.status / 100 == 2, "POST {path}: {} {}", r.status, r.text);
    r.body.clone()
}

async fn world(server: &TestServer) -> World {
    let key = server.create_key("acme").await;
    let auth = key.auth();
    // Schemas: order.created has two versions (the examples read version 2),
    // the second relaxing the first (orderId no longer required).
    let mut v1 = order_schema();
    v1["required"] = json!(["amount", "orderId"]);
    post(server, "/schemas/acme", &auth, json!({"type": "order.created", "schema": v1})).await;
    post(server, "/schemas/acme", &auth, json!({"type": "order.created", "schema": order_schema()})).await;
    // A subscription whose receiver refuses connections, one attempt per delivery: dead letters.
    let sub = post(
        server,
        "/subscriptions",
        &auth,
        json!({"pattern": "order.*", "url": "http://127.0.0.1:9/orders", "retrySchedule": [0]}),
    )
    .await;
    let sub = sub["id"].as_str().expect("subscription id").to_string();
    // Events, one with the id the examples ask about, and a collection with u_42.
    let past = iso_at_offset(-24 * 3_600_000);
    let events = [
        json!({"type": "order.created", "id": "evt_123", "orderId": "o-1", "amount": 42}),
        json!({"type": "order.created", "orderId": "o-2", "amount": 7}),
        json!({"type": "collection.insert", "collection": "users", "docId": "u_42",
               "doc": {"name": "Ada", "plan": "free"}, "ts": iso_at_offset(-48 * 3_600_000)}),
        json!({"type": "collection.insert", "collection": "users", "docId": "u_7",
               "doc": {"name": "Grace", "plan": "pro"}, "ts": iso_at_offset(-48 * 3_600_000)}),
        json!({"type": "collection.update", "collection": "users", "docId": "u_42",
               "doc": {"name": "Ada", "plan": "pro"}, "ts": iso_at_offset(-3_600_000)}),
    ];
    server.ingest_ok(&auth, &events).await;
    server.admin_flush().await;
    let deadline = Instant::now() + DEADLINE;
    let dead_letter = loop {
        let r = server.get(&format!("/subscriptions/{sub}/dead-letters"), &auth).await;
        if let Some(id) = r.body["deadLetters"][0]["id"].as_str() {
            break id.to_string();
        }
        assert!(Instant::now() < deadline, "no dead letter: {}", r.text);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    loop {
        let r = server.get("/cdc/acme/users/u_42", &auth).await;
        if r.status == 200 && r.body.to_string().contains("pro") {
            break;
        }
        assert!(Instant::now() < deadline, "u_42 never arrived: {}", r.text);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let snapshots = server.get("/tables/events/snapshots", &auth).await;
    let snapshot = snapshots.expect(200)["snapshots"][0]["snapshotId"].to_string();
    assert!(snapshot.parse::<i64>().is_ok(), "{}", snapshots.text);
    World { key: key.key, sub, dead_letter, snapshot, past }
}

fn order_schema() -> Value {
    json!({"type": "object", "properties": {"orderId": {"type": "string"}, "amount": {"type": "number"}},
           "required": ["amount"]})
}

/// The files the examples name.
fn example_files(session: &Session) {
    session.write("order.json", &order_schema().to_string());
    session.write("page.json", r#"{"type": "object", "properties": {"url": {"type": "string"}}}"#);
    session.write(
        "events.ndjson",
        "{\"type\":\"order.created\",\"orderId\":\"o-10\",\"amount\":5}\n\
         {\"type\":\"order.created\",\"orderId\":\"o-11\",\"amount\":6.5}\n",
    );
    session.write("batch.json", r#"{"events": [{"type": "order.created", "orderId": "o-12", "amount": 1}]}"#);
    session.write("events.toml", "[ingest]\nrequests_per_minute = 2000\n");
}

/// The example with its placeholders replaced by real ids.
async fn substitute(server: &TestServer, w: &World, line: &str) -> String {
    let auth = Auth::Key(w.key.clone());
    let mut line = line.to_string();
    if line.contains("sub_01J...") {
        let id = if line.contains(" delete ") {
            let fresh = json!({"pattern": "order.cancelled", "url": "https://hooks.example.com/cancelled"});
            post(server, "/subscriptions", &auth, fresh).await["id"].as_str().expect("id").to_string()
        } else {
            w.sub.clone()
        };
        line = line.replace("sub_01J...", &id);
    }
    if line.contains("01JD0Z7Q6C3W5X8Y9Z0A1B2C3D") {
        let fresh = server.create_key("acme").await;
        line = line.replace("01JD0Z7Q6C3W5X8Y9Z0A1B2C3D", &fresh.id);
    }
    line.replace("msg_01J...", &w.dead_letter)
        .replace("4417581370221958521", &w.snapshot)
        .replace("ns_acme_...", &w.key)
        .replace("2026-11-27T12:00:00Z", &w.past)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_help_example_runs_against_a_real_server() {
    if skip_on_external("runs the events binary's client commands and starts servers of its own") {
        return;
    }
    let server = TestServer::start_with(ServerOptions::new().toml("[outbound]\nallow = [\"127.0.0.0/8\"]")).await;
    let w = world(&server).await;
    let session = Session::new(vec![
        ("EVENTS_URL".into(), server.base_url().into()),
        ("EVENTS_TOKEN".into(), w.key.clone()),
        ("EVENTS_ADMIN_TOKEN".into(), server.admin_token().into()),
    ]);
    example_files(&session);

    let helps = tokio::task::block_in_place(every_help);
    let names: Vec<String> = helps.iter().map(|(p, _)| p.join(" ")).collect();
    for expected in ["", "serve", "send", "flush", "query", "keys create", "subs create", "schema show", "cdc get"] {
        assert!(names.iter().any(|n| n == expected), "no help for `events {expected}`: {names:?}");
    }
    let (mut ran, mut failures) = (0, Vec::new());
    for (path, help) in &helps {
        let found = examples(help);
        assert!(!found.is_empty(), "`events {} --help` shows no example", path.join(" "));
        for example in found {
            ran += 1;
            if is_serve(&example) {
                session.run_server(&example, ran);
                continue;
            }
            let line = substitute(&server, &w, &example).await;
            // A stream runs until stopped: it passes if it connected and was stopped, not refused.
            let (out, stopped_is_fine) = if is_tail(&example) {
                (session.run_for(&line, STREAM_EXAMPLE_SECS), true)
            } else {
                (session.run(&line), false)
            };
            let stopped = out.status.code() == Some(STOPPED_BY_TIMEOUT);
            if !(out.status.success() || (stopped_is_fine && stopped)) {
                failures.push(format!(
                    "`{line}` (from `events {} --help`) exited with {}:\n{}{}",
                    path.join(" "),
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {ran} examples failed:\n\n{}", failures.len(), failures.join("\n\n"));
    assert!(ran > 60, "only {ran} examples found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_a_table_on_request_ndjson_when_piped_and_json_with_the_flag() {
    if skip_on_external("runs the events binary's client commands") {
        return;
    }
    let server = TestServer::start().await;
    let key = server.create_key("acme").await;
    let session = Session::new(vec![
        ("EVENTS_URL".into(), server.base_url().into()),
        ("EVENTS_TOKEN".into(), server.admin_token().into()),
    ]);
    let run = |line: &str| {
        let out = session.run(line);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "`{line}`: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        stdout
    };
    // Piped: NDJSON, one object per key, fields in the API's order.
    let piped = run("events keys list acme");
    let first: Value = serde_json::from_str(piped.lines().next().unwrap_or_default()).expect("an NDJSON line");
    assert_eq!(first["id"], key.id.as_str(), "{piped}");
    assert!(piped.trim_start().starts_with("{\"id\":"), "the API's first field comes first: {piped}");
    // --json: the server's answer.
    let json: Value = serde_json::from_str(&run("events keys list acme --json")).expect("JSON");
    assert_eq!(json["keys"][0]["id"], key.id.as_str());
    // A table (what a terminal gets): header, rule, rows, count.
    let table = run("events keys list acme --format table");
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("id "), "{table}");
    assert!(lines[1].starts_with("--"), "{table}");
    assert!(lines[2].starts_with(key.id.as_str()), "{table}");
    assert_eq!(lines.last(), Some(&"(1 row)"), "{table}");
    // Records too: a subscription list, schema answers and CDC reads print the same ways.
    let schema = r#"{"type":"object"}"#;
    session.write("s.json", schema);
    let line = run("events schema register --ns acme --type a.b --schema s.json");
    assert_eq!(line.lines().count(), 1, "one NDJSON line: {line}");
    let registered: Value = serde_json::from_str(&line).expect("NDJSON");
    assert_eq!(registered["version"], 1, "{line}");
    let fields = run("events schema show --ns acme a.b --format table");
    assert!(fields.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["version", "1"]), "{fields}");
    // A missing version is named in the error.
    let out = session.run("events schema show --ns acme a.b --at 9");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("no version 9") && stderr.contains("latest: 1"), "{stderr}");
    // The product binary has no benchmarks, and serve takes no client options.
    let help = events_direct(&["--help"]);
    assert!(!subcommands(&help).contains(&"bench".to_string()), "{help}");
    assert!(help.contains("events-bench"), "`events --help` points at the benchmark binary: {help}");
    let serve = events_direct(&["serve", "--help"]);
    assert!(!serve.contains("--url") && !serve.contains("--token"), "{serve}");
}

/// The README's quick tour, taken from README.md.
fn readme_tour() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).expect("README");
    let tour = readme.split("## Quick tour").nth(1).expect("README has a Quick tour");
    let block = tour.split("```sh\n").nth(1).expect("the tour has a sh block");
    block.split("\n```").next().expect("the block ends").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_tour_works_on_the_first_try() {
    if skip_on_external("starts a server of its own in the tour's directory") {
        return;
    }
    let session = Session::new(Vec::new());
    // `events serve` as the README starts it: defaults, ./events-data, a generated admin token.
    let (mut child, addr) = tokio::task::block_in_place(|| {
        let mut cmd = session.bash("exec events serve --listen 127.0.0.1:0");
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = cmd.spawn().expect("starting events serve");
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut first).expect("reading stdout");
        let addr = first.trim().strip_prefix("events.do listening on http://").map(str::to_string);
        (child, addr.unwrap_or_else(|| panic!("no listening line: {first}")))
    });
    let script = readme_tour().replace("localhost:8787", &addr);
    let session = Session { env: vec![("EVENTS_URL".into(), format!("http://{addr}"))], ..session };
    let out = session.run(&format!("set -euo pipefail\n{script}"));
    let _ = child.kill();
    let _ = child.wait();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the tour failed:\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
    assert!(stdout.contains(r#"{"ok":true,"received":1,"namespace":"acme"}"#), "{stdout}");
    // The last line: the query's one row, as NDJSON (stdout is not a terminal).
    let last: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("an NDJSON row");
    assert_eq!(last, json!({"type": "order.created", "n": 1}), "{stdout}");
    assert!(stdout.contains("\"snapshotId\""), "snapshots listed right after the flush: {stdout}");
}

#[test]
fn examples_are_read_like_a_user_reads_them() {
    let help = "About\n\nExamples:\n  # a comment\n  events a --x 1\n\n  events b \\\n      --y 2\n\nNotes, not an example:\n  events c\n";
    assert_eq!(examples(help), ["events a --x 1", "events b --y 2"]);
    assert_eq!(subcommands("Usage: x\n\nCommands:\n  serve  Run\n  help   Print\n\nOptions:\n"), ["serve"]);
    assert!(is_serve("events serve --dev") && !is_serve("events subs create") && !is_serve("echo x | events send"));
}
