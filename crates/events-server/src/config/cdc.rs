//! The `[cdc]` table of the server configuration: the processors' own
//! [`CdcConfig`], passed to every `CdcProcessor` as host variables `cdc.*`
//! ([`CdcConfig::host_vars`]).

pub use events_objects::cdc::CdcConfig;
