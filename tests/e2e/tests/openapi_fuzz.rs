//! The OpenAPI fuzzer: schemathesis runs against a real server from the
//! document the server itself serves at `/openapi.json`, twice: once with a
//! namespace key (`tests/e2e/fuzz/namespace-key.toml`) and once with the
//! admin token (`tests/e2e/fuzz/admin.toml`). Each run must end with no
//! failure of these checks:
//!
//! - `not_a_server_error`: no 5xx answer, whatever the request;
//! - `status_code_conformance`: every status is documented for the operation;
//! - `content_type_conformance`: every `Content-Type` is documented for it;
//! - `response_headers_conformance`: documented headers are present and valid;
//! - `response_schema_conformance`: every body matches its documented schema
//!   (for `GET /events/stream`, each Server-Sent Events message).
//!
//! Every operation of the document is tested; none is excluded. The phases
//! are schemathesis' defaults (coverage, fuzzing, stateful), with a fixed
//! seed, one worker and `max-examples = 20` per operation, so a run makes the
//! same requests every time and takes about a minute and a half.
//!
//! Before the runs the test writes a few events of namespace `fuzz` to the
//! lake and creates (and pauses) a subscription, so that reads, tables and
//! the routes under `/subscriptions/{id}` meet data that exists.
//!
//! schemathesis is `$EVENTS_SCHEMATHESIS` (`scripts/test.sh` installs the
//! version pinned in `tests/e2e/py/fuzz-requirements.txt` into its own venv
//! and sets it). Native only: the runs need a server this test configures.

use std::path::{Path, PathBuf};
use std::process::Command;

use events_e2e::serde_json::json;
use events_e2e::{Auth, ServerOptions, TestServer, skip_on_external};

/// The checks both runs apply (see the module docs).
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance";

/// The namespace the runs act on.
const NS: &str = "fuzz";

/// The schemathesis command: `$EVENTS_SCHEMATHESIS`; panics, saying how to
/// install it, when it is not set or does not run.
fn schemathesis() -> PathBuf {
    let requirements = Path::new(env!("CARGO_MANIFEST_DIR")).join("py").join("fuzz-requirements.txt");
    let bin = std::env::var_os("EVENTS_SCHEMATHESIS").filter(|b| !b.is_empty()).unwrap_or_else(|| {
        panic!(
            "EVENTS_SCHEMATHESIS is not set: run the suite with `bash scripts/test.sh` (it installs \
             schemathesis into a venv and sets it), or install it with `pip install -r {}` and point \
             EVENTS_SCHEMATHESIS at the `schemathesis` command",
            requirements.display()
        )
    });
    let bin = PathBuf::from(bin);
    let out = Command::new(&bin).arg("--version").output();
    match out {
        Ok(o) if o.status.success() => {
            eprintln!("{}", String::from_utf8_lossy(&o.stdout).trim());
            bin
        }
        Ok(o) => panic!("{} --version failed: {}", bin.display(), String::from_utf8_lossy(&o.stderr)),
        Err(e) => panic!("cannot run {} (EVENTS_SCHEMATHESIS): {e}", bin.display()),
    }
}

/// A server with namespace `fuzz`: a key, events in the buffers and in the
/// lake, and a paused subscription. Returns the key and the subscription id.
async fn prepared_server() -> (TestServer, String, String) {
    // Ingest limits well above what a run sends, so that `POST /e` is tested
    // beyond its first minute rather than answer 429 to every later case.
    let options = ServerOptions::new().toml("[ingest]\nrequests_per_minute = 1000000\nevents_per_minute = 100000000");
    let server = TestServer::start_with(options).await;
    let key = server.create_key(NS).await;
    let auth = Auth::Key(key.key.clone());
    let events: Vec<_> = (0..5).map(|i| json!({"type": "order.created", "orderId": i})).collect();
    server.ingest_ok(&auth, &events).await;
    server.admin_flush().await;
    server.ingest_ok(&auth, &[json!({"type": "order.paid", "orderId": 0})]).await;
    let r = server
        .post_json("/subscriptions", &auth, &json!({"pattern": "order.*", "url": "https://example.com/hook"}))
        .await;
    let id = r.expect(201)["id"].as_str().expect("subscription id").to_string();
    server.post_json(&format!("/subscriptions/{id}/pause"), &auth, &json!({})).await.expect(200);
    (server, key.key, id)
}

/// Runs schemathesis with `config` (a file of `tests/e2e/fuzz/`) and
/// `token`; panics with its report unless it passes.
async fn fuzz(server: &TestServer, config: &str, token: &str, subscription: &str) {
    let bin = schemathesis();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(config);
    let work = tempfile::Builder::new().prefix("events-fuzz-").tempdir().expect("creating a temp dir");
    let mut cmd = Command::new(bin);
    cmd.current_dir(work.path())
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(server.url("/openapi.json"))
        .args(["--checks", CHECKS, "--no-color"])
        .env("EVENTS_FUZZ_TOKEN", token)
        .env("EVENTS_FUZZ_NS", NS)
        .env("EVENTS_FUZZ_SUBSCRIPTION", subscription)
        // Nothing schemathesis keeps between runs lands outside the temp dir.
        .env("HOME", work.path());
    let started = std::time::Instant::now();
    let out =
        tokio::task::spawn_blocking(move || cmd.output()).await.expect("schemathesis task").expect("schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout.rsplit_once("SUMMARY").map(|(_, s)| s).unwrap_or(&stdout);
    eprintln!("schemathesis {} in {:.0?}:{summary}", config.display(), started.elapsed());
    assert!(
        out.status.success(),
        "schemathesis found failures with {} ({}):\n{stdout}\n{}",
        config.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_document_holds_under_fuzzing_with_a_namespace_key() {
    if skip_on_external("the fuzz runs configure their own server") {
        return;
    }
    let (server, key, subscription) = prepared_server().await;
    fuzz(&server, "namespace-key.toml", &key, &subscription).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_document_holds_under_fuzzing_with_the_admin_token() {
    if skip_on_external("the fuzz runs configure their own server") {
        return;
    }
    let (server, _key, subscription) = prepared_server().await;
    fuzz(&server, "admin.toml", server.admin_token(), &subscription).await;
}
