//! Validation of a whole configuration, run as each layer is applied.

use super::ServerConfig;

impl ServerConfig {
    /// Checks every value; the message names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if self.data_dir.as_os_str().is_empty() {
            return Err("data_dir must not be empty".into());
        }
        if self.env.trim().is_empty() {
            return Err("env must not be empty".into());
        }
        if !self.env.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.') {
            return Err(format!("env must be made of letters, digits, '-', '_' or '.', got {:?}", self.env));
        }
        if let Some(token) = &self.admin_token
            && token.trim().len() < 16
        {
            return Err("admin_token must be at least 16 characters".into());
        }
        if let Some(url) = &self.lake_url {
            let scheme_ok = url.split_once("://").is_some_and(|(scheme, rest)| {
                !scheme.is_empty() && !rest.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric())
            });
            if !scheme_ok {
                return Err(format!("lake_url must be a URL like s3://bucket/prefix or file:///path, got {url:?}"));
            }
        }
        if self.request_timeout_ms == 0 {
            return Err("request_timeout_ms must be greater than 0".into());
        }
        if self.max_body_bytes == 0 {
            return Err("max_body_bytes must be greater than 0".into());
        }
        let i = &self.ingest;
        if i.max_events_per_batch == 0 {
            return Err("ingest.max_events_per_batch must be greater than 0".into());
        }
        if i.max_event_bytes == 0 {
            return Err("ingest.max_event_bytes must be greater than 0".into());
        }
        if i.max_event_bytes > self.max_body_bytes {
            return Err(format!(
                "ingest.max_event_bytes ({}) must not exceed max_body_bytes ({})",
                i.max_event_bytes, self.max_body_bytes
            ));
        }
        if i.requests_per_minute == 0 {
            return Err("ingest.requests_per_minute must be greater than 0".into());
        }
        if i.events_per_minute == 0 {
            return Err("ingest.events_per_minute must be greater than 0".into());
        }
        let s = &self.subscriptions;
        let max = events_objects::subs_layout::MAX_SUBS_SHARDS;
        if !(1..=max).contains(&s.max_shards) {
            return Err(format!("subscriptions.max_shards must be between 1 and {max}, got {}", s.max_shards));
        }
        if s.merge_backlog > s.split_backlog || s.merge_rate > s.split_rate {
            return Err(
                "subscriptions.merge_backlog and merge_rate must not exceed split_backlog and split_rate".into()
            );
        }
        if s.report_interval_ms <= 0 || s.merge_quiet_ms < 0 || s.shard_cooldown_ms < 0 {
            return Err(
                "subscriptions.report_interval_ms must be positive, merge_quiet_ms and shard_cooldown_ms not negative"
                    .into(),
            );
        }
        self.cdc.validate()?;
        self.http.validate()?;
        let r = &self.runtime;
        if r.idle_timeout_ms == 0 {
            return Err("runtime.idle_timeout_ms must be greater than 0".into());
        }
        if r.max_live_objects == 0 {
            return Err("runtime.max_live_objects must be greater than 0".into());
        }
        Ok(())
    }
}
