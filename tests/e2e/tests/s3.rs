//! The lake on an S3-compatible object store: a real moto server
//! (`python -m moto.server`), `lake_url = "s3://bucket/lake"` and the AWS_*
//! environment. The objects are listed and downloaded with boto3 and read
//! with pyarrow.
//!
//! Configures and starts its own server process, so it does not run against
//! an external server (`EVENTS_TEST_BASE_URL`).

use std::time::{Duration, Instant};

use events_e2e::{
    DEADLINE, MotoServer, ServerOptions, TestServer, event, read_parquet, require_python_modules, skip_on_external,
    unique_ns,
};
use serde_json::Value;

const BUCKET: &str = "events-e2e";

#[tokio::test]
async fn flushed_events_land_in_the_s3_bucket() {
    if skip_on_external("starts its own server with lake_url pointing at a local moto S3") {
        return;
    }
    require_python_modules(&["pyarrow", "boto3", "moto"]);
    let moto = MotoServer::start().await;
    moto.create_bucket(BUCKET);

    let mut options = ServerOptions::new()
        .top_level(&format!("lake_url = \"s3://{BUCKET}/lake\""))
        .toml("[writer]\nflush_max_age_ms = 3600000");
    for (k, v) in moto.aws_env() {
        options = options.env(k, &v);
    }
    let server = TestServer::start_with(options).await;
    let key = server.create_key(&unique_ns("s3")).await;
    let ns = key.namespace.clone();
    let events: Vec<Value> = (0..25).map(|i| event("s3.test", &format!("s3-{i:02}"))).collect();
    server.ingest_ok(&key.auth(), &events).await;
    let files = server.admin_flush().await;
    assert!(!files.is_empty(), "POST /admin/flush wrote no file");

    // Nothing lands on the local disk's lake.
    assert!(events_e2e::parquet_files(&server.lake_dir()).is_empty(), "Parquet written locally despite lake_url");

    let want: Vec<String> = (0..25).map(|i| format!("s3-{i:02}")).collect();
    let deadline = Instant::now() + DEADLINE;
    let (keys, read) = loop {
        let dest = tempfile::tempdir().unwrap();
        let keys = moto.download(BUCKET, "lake/", dest.path());
        let read = read_parquet(dest.path(), true);
        let mut ids: Vec<String> = read
            .rows
            .iter()
            .filter(|r| r["ns"] == ns.as_str())
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        if ids == want || Instant::now() > deadline {
            let everything = moto.list(BUCKET, "");
            assert_eq!(ids, want, "ids under s3://{BUCKET}/lake/; keys there: {keys:?}; whole bucket: {everything:?}");
            break (keys, read);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let parquet_keys: Vec<&String> = keys.iter().filter(|k| k.ends_with(".parquet")).collect();
    assert!(!parquet_keys.is_empty(), "{keys:?}");
    for k in &parquet_keys {
        assert!(k.starts_with("lake/") && k.contains(&format!("/ns={ns}/date=")), "unexpected key {k:?}");
    }
    assert_eq!(read.columns.iter().find(|(n, _)| n == "ts").map(|(_, t)| t.as_str()), Some("timestamp[us, tz=UTC]"));
    // Reading over HTTP still returns the events, now from the bucket.
    let stored = server.wait_for_events(&key.auth(), "", 25).await;
    assert_eq!(events_e2e::sorted_ids(&stored), want);
}
