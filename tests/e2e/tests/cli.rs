//! The `events` client commands against a real server, as their `--help`
//! examples show them.

use std::process::Command;

use events_e2e::serde_json::{self, Value};
use events_e2e::*;

/// Runs `events <args> --url <server> --token <admin token>`; answers stdout, panicking on failure.
fn events(server: &TestServer, args: &[&str]) -> String {
    let out = Command::new(events_bin())
        .args(args)
        .args(["--url", server.base_url(), "--token", server.admin_token()])
        .env_remove("EVENTS_URL")
        .env_remove("EVENTS_TOKEN")
        .output()
        .expect("running the events binary");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "events {args:?} failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subs_create_sends_to_the_server_and_subscribes_the_target() {
    if skip_on_external_without("outbound-loopback", "subscribes a loopback target") {
        return;
    }
    let server = TestServer::start_with(ServerOptions::new().toml("[outbound]\nallow = [\"127.0.0.0/8\"]")).await;
    let ns = unique_ns("cli");
    let target = "http://127.0.0.1:9/orders";
    // The help's example, with this test's namespace and a loopback receiver.
    let help = events(&server, &["subs", "create", "--help"]);
    assert!(help.contains("--target https://hooks.example.com/orders"), "{help}");
    let printed = tokio::task::block_in_place(|| {
        events(&server, &["subs", "create", "--namespace", &ns, "--pattern", "order.*", "--target", target])
    });
    let created: Value = serde_json::from_str(printed.trim()).unwrap_or_else(|e| panic!("{e}: {printed}"));
    assert_eq!(created["url"], target, "{printed}");
    let listed = server.get("/subscriptions", &server.admin_for(&ns)).await;
    let subs = listed.expect(200)["subscriptions"].as_array().unwrap().clone();
    assert_eq!(subs.len(), 1, "{subs:?}");
    assert_eq!((subs[0]["pattern"].as_str(), subs[0]["url"].as_str()), (Some("order.*"), Some(target)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_prints_columns_in_select_order_nulls_included() {
    let server = TestServer::start().await;
    let ns = unique_ns("cliq");
    let key = server.create_key(&ns).await;
    let token = key.key.clone();
    let sql = "SELECT 2 AS z, CAST(NULL AS BIGINT) AS b, 'x' AS a";
    let out = tokio::task::block_in_place(|| {
        Command::new(events_bin())
            .args(["query", sql, "--format", "table", "--url", server.base_url(), "--token", &token])
            .env_remove("EVENTS_URL")
            .env_remove("EVENTS_TOKEN")
            .output()
            .expect("running the events binary")
    });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), ["z", "b", "a"], "{stdout}");
    assert_eq!(lines[2].split_whitespace().collect::<Vec<_>>(), ["2", "x"], "{stdout}");
    assert_eq!(lines[3], "(1 row)", "{stdout}");
}
