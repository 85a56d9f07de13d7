//! Runs the `events` binary: `serve` prints its address, answers, and exits
//! cleanly on SIGTERM and SIGINT.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};

struct Running {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

fn start(extra: &[&str]) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_events"))
        .args(["serve", "--listen", "127.0.0.1:0", "--env", "cli-test", "--data-dir"])
        .arg(&data)
        .args(extra)
        .env_remove("EVENTS_LISTEN")
        .env_remove("EVENTS_DATA_DIR")
        .env_remove("EVENTS_ENV")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    let base = line
        .trim_end()
        .strip_prefix("events.do listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    assert!(base.starts_with("http://127.0.0.1:") && !base.ends_with(":0"), "{base}");
    Running { child, base, _dir: dir }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Only matters when a test failed before the child exited.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

async fn check_health(base: &str) {
    let v: serde_json::Value = reqwest::get(format!("{base}/health")).await.unwrap().json().await.unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["env"], "cli-test");
}

#[tokio::test]
async fn serve_answers_and_stops_on_sigterm() {
    let mut r = start(&["--dev"]);
    check_health(&r.base).await;
    signal(&r.child, "-TERM");
    let status = r.child.wait().unwrap();
    assert!(status.success(), "{status}");
    let mut rest = String::new();
    r.child.stdout.take().unwrap().read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "", "only one line on stdout");
}

#[tokio::test]
async fn serve_stops_on_sigint() {
    let mut r = start(&[]);
    check_health(&r.base).await;
    signal(&r.child, "-INT");
    let status = r.child.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn bad_config_file_fails_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "listen = 12\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_events")).args(["serve", "--config"]).arg(&file).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&file.display().to_string()) && err.contains("listen"), "{err}");
    assert!(out.stdout.is_empty());
}
