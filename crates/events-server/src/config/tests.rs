//! Tests of the layered loading and of validation.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use super::*;

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    move |k| map.get(k).cloned()
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn file_with(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

#[test]
fn defaults() {
    let c = ServerConfig::load(None, &no_env, ConfigOverrides::default()).unwrap();
    assert_eq!(c, ServerConfig::default());
    assert_eq!(c.data_dir, PathBuf::from("./events-data"));
    assert_eq!(c.listen.to_string(), "127.0.0.1:8787");
    assert_eq!(c.env, "development");
    assert!(!c.dev);
    assert_eq!(c.log_format, LogFormat::Text);
    assert_eq!(c.request_timeout_ms, 30_000);
    assert_eq!(c.max_body_bytes, limits::MAX_INGEST_BODY_BYTES);
    assert_eq!(c.ingest.max_events_per_batch, limits::MAX_EVENTS_PER_BATCH);
    assert_eq!(c.ingest.max_event_bytes, limits::MAX_EVENT_BYTES);
    assert_eq!(c.ingest.requests_per_minute, limits::DEFAULT_REQUESTS_PER_MINUTE);
    assert_eq!(c.runtime, RuntimeConfig { idle_timeout_ms: 30_000, max_live_objects: 10_000, object_threads: 0 });
    assert!(c.runtime.effective_object_threads() >= 1);
    assert_eq!(c.lake_location(), LakeLocation::Dir(PathBuf::from("./events-data/lake")));
    c.validate().unwrap();
}

#[test]
fn file_overrides_defaults_and_keeps_the_rest() {
    let f = file_with(
        r#"
        env = "staging"
        listen = "0.0.0.0:9000"
        log_format = "json"
        [ingest]
        requests_per_minute = 5
        [runtime]
        object_threads = 3
        "#,
    );
    let c = ServerConfig::load(Some(f.path()), &no_env, ConfigOverrides::default()).unwrap();
    assert_eq!(c.env, "staging");
    assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.ingest.requests_per_minute, 5);
    assert_eq!(c.ingest.events_per_minute, limits::DEFAULT_EVENTS_PER_MINUTE);
    assert_eq!(c.runtime.object_threads, 3);
    assert_eq!(c.runtime.effective_object_threads(), 3);
    assert_eq!(c.data_dir, PathBuf::from("./events-data"));
}

#[test]
fn precedence_defaults_file_env_flags() {
    let f = file_with("env = \"from-file\"\ndata_dir = \"/file\"\nlisten = \"127.0.0.1:1111\"\ndev = false\n");
    let env = env_of(&[("EVENTS_ENV", "from-env"), ("EVENTS_DATA_DIR", "/env"), ("EVENTS_DEV", "yes")]);
    let flags = ConfigOverrides { env: Some("from-flag".into()), ..Default::default() };
    let c = ServerConfig::load(Some(f.path()), &env, flags).unwrap();
    assert_eq!(c.env, "from-flag", "flag beats env and file");
    assert_eq!(c.data_dir, PathBuf::from("/env"), "env beats file");
    assert_eq!(c.listen.to_string(), "127.0.0.1:1111", "file beats defaults");
    assert!(c.dev, "env turns dev on over the file");
    assert_eq!(c.request_timeout_ms, 30_000, "defaults remain");
}

#[test]
fn every_env_var_is_read() {
    let env = env_of(&[
        ("EVENTS_DATA_DIR", "/d"),
        ("EVENTS_LISTEN", "[::1]:0"),
        ("EVENTS_ENV", "production"),
        ("EVENTS_DEV", "TRUE"),
        ("EVENTS_ADMIN_TOKEN", "0123456789abcdef"),
        ("EVENTS_LAKE_URL", "s3://bucket/prefix"),
        ("EVENTS_LOG_FORMAT", "JSON"),
        ("EVENTS_REQUEST_TIMEOUT_MS", "1500"),
        ("EVENTS_MAX_BODY_BYTES", "2097152"),
        ("EVENTS_HTTP_HEADER_READ_TIMEOUT_MS", "1000"),
        ("EVENTS_HTTP_KEEP_ALIVE_TIMEOUT_MS", "2000"),
        ("EVENTS_HTTP_MAX_CONNECTIONS", "300"),
        ("EVENTS_HTTP_MAX_CONNECTIONS_PER_IP", "20"),
    ]);
    let c = ServerConfig::load(None, &env, ConfigOverrides::default()).unwrap();
    assert_eq!(c.data_dir, PathBuf::from("/d"));
    assert_eq!(c.listen.to_string(), "[::1]:0");
    assert_eq!(c.env, "production");
    assert!(c.dev);
    assert_eq!(c.admin_token.as_deref(), Some("0123456789abcdef"));
    assert_eq!(c.lake_location(), LakeLocation::Url("s3://bucket/prefix".into()));
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.request_timeout_ms, 1500);
    assert_eq!(c.max_body_bytes, 2 * 1024 * 1024);
    let h = &c.http;
    assert_eq!(
        (h.header_read_timeout_ms, h.keep_alive_timeout_ms, h.max_connections, h.max_connections_per_ip),
        (1000, 2000, 300, 20)
    );
}

#[test]
fn empty_env_values_count_as_unset() {
    let env = env_of(&[("EVENTS_ENV", ""), ("EVENTS_LISTEN", "")]);
    let c = ServerConfig::load(None, &env, ConfigOverrides::default()).unwrap();
    assert_eq!(c, ServerConfig::default());
}

#[test]
fn all_flags_apply() {
    let flags = ConfigOverrides {
        data_dir: Some("/flag".into()),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        env: Some("test".into()),
        dev: Some(true),
        admin_token: Some("a-long-enough-admin-token".into()),
        lake_url: Some("file:///tmp/lake".into()),
        log_format: Some(LogFormat::Json),
    };
    let env = env_of(&[("EVENTS_LISTEN", "127.0.0.1:5"), ("EVENTS_LOG_FORMAT", "text")]);
    let c = ServerConfig::load(None, &env, flags).unwrap();
    assert_eq!(c.data_dir, PathBuf::from("/flag"));
    assert_eq!(c.listen.port(), 0);
    assert_eq!(c.env, "test");
    assert!(c.dev);
    assert_eq!(c.admin_token.as_deref(), Some("a-long-enough-admin-token"));
    assert_eq!(c.lake_url.as_deref(), Some("file:///tmp/lake"));
    assert_eq!(c.log_format, LogFormat::Json);
}

fn invalid_source(e: &ConfigError) -> ConfigSource {
    e.source_layer().cloned().unwrap_or_else(|| panic!("expected an Invalid error, got {e}"))
}

#[test]
fn bad_env_values_name_the_variable() {
    for (var, value, needle) in [
        ("EVENTS_LISTEN", "localhost", "IP:PORT"),
        ("EVENTS_DEV", "maybe", "true/false"),
        ("EVENTS_LOG_FORMAT", "xml", "\"text\" or \"json\""),
        ("EVENTS_REQUEST_TIMEOUT_MS", "-1", "integer"),
        ("EVENTS_REQUEST_TIMEOUT_MS", "0", "request_timeout_ms must be greater than 0"),
        ("EVENTS_LAKE_URL", "bucket", "lake_url"),
        ("EVENTS_ENV", "has space", "env must be"),
        ("EVENTS_HTTP_HEADER_READ_TIMEOUT_MS", "0", "http.header_read_timeout_ms"),
        ("EVENTS_HTTP_MAX_CONNECTIONS", "many", "integer"),
    ] {
        let env = env_of(&[(var, value)]);
        let e = ServerConfig::load(None, &env, ConfigOverrides::default()).unwrap_err();
        assert_eq!(invalid_source(&e), ConfigSource::Env(var.into()), "{var}={value}");
        let msg = e.to_string();
        assert!(msg.contains(var), "{msg}");
        assert!(msg.contains(needle), "{msg}");
    }
}

#[test]
fn admin_token_is_not_echoed() {
    let env = env_of(&[("EVENTS_ADMIN_TOKEN", "short-secret")]);
    let e = ServerConfig::load(None, &env, ConfigOverrides::default()).unwrap_err();
    assert_eq!(invalid_source(&e), ConfigSource::Env("EVENTS_ADMIN_TOKEN".into()));
    assert!(!e.to_string().contains("short-secret"), "{e}");
}

#[test]
fn bad_file_values_name_the_file() {
    for (text, needle) in [
        ("listen = \"nope\"", "listen"),
        ("unknown_key = 1", "unknown_key"),
        ("[ingest]\nbogus = 1", "bogus"),
        ("[runtime]\nmax_live_objects = 0", "runtime.max_live_objects"),
        ("[subscriptions]\nmax_shards = 0", "subscriptions.max_shards"),
        ("[subscriptions]\nmax_shards = 17", "subscriptions.max_shards"),
        ("[subscriptions]\nsplit_backlog = 10\nmerge_backlog = 20", "merge_backlog"),
        ("[subscriptions]\nreport_interval_ms = 0", "report_interval_ms"),
        ("[http]\nmax_connections_per_ip = 0", "http.max_connections_per_ip"),
        ("[http]\nkeep_alive_timeout_ms = 0", "http.keep_alive_timeout_ms"),
        ("log_format = \"xml\"", "log_format"),
        ("request_timeout_ms = \"soon\"", "request_timeout_ms"),
        ("not toml at all", "not toml"),
    ] {
        let f = file_with(text);
        let e = ServerConfig::load(Some(f.path()), &no_env, ConfigOverrides::default()).unwrap_err();
        assert_eq!(invalid_source(&e), ConfigSource::File(f.path().into()), "{text}");
        let msg = e.to_string();
        assert!(msg.contains(&f.path().display().to_string()), "{msg}");
        assert!(msg.contains(needle), "{text}: {msg}");
    }
}

#[test]
fn missing_file_is_a_read_error() {
    let e = ServerConfig::load(Some(Path::new("/definitely/not/here.toml")), &no_env, ConfigOverrides::default())
        .unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }), "{e}");
    assert!(e.to_string().contains("/definitely/not/here.toml"), "{e}");
}

#[test]
fn bad_flag_values_name_the_flag() {
    let flags = ConfigOverrides { env: Some(String::new()), ..Default::default() };
    let e = ServerConfig::load(None, &no_env, flags).unwrap_err();
    assert_eq!(invalid_source(&e), ConfigSource::Flag("--env".into()));
    assert!(e.to_string().contains("--env"), "{e}");
}

#[test]
fn cross_field_checks() {
    let f = file_with("max_body_bytes = 100");
    let e = ServerConfig::load(Some(f.path()), &no_env, ConfigOverrides::default()).unwrap_err();
    assert!(e.to_string().contains("ingest.max_event_bytes"), "{e}");
}

#[test]
fn debug_redacts_the_admin_token() {
    let c = ServerConfig { admin_token: Some("super-secret-admin-token".into()), ..Default::default() };
    let s = format!("{c:?}");
    assert!(!s.contains("super-secret"), "{s}");
    assert!(s.contains("<redacted>"), "{s}");
}

#[test]
fn toml_round_trip() {
    let c = ServerConfig { admin_token: Some("0123456789abcdef".into()), ..Default::default() };
    let text = toml::to_string(&c).unwrap();
    assert_eq!(ServerConfig::from_toml(&text).unwrap(), c);
}
