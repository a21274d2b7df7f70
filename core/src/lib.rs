//! berth-core: the berth engine. The API server (`api`), caller identity and authorization
//! (`authz`), wiring and lifecycle (`daemon`), the
//! state database (`store`) and host facts (`host`); images (`image`, `content`), snapshots,
//! containers and their runtime, the WebAssembly plugin host (`plugin_host`), installed plugins (`plugin`),
//! volumes (`volume`), networks (`network`), log delivery to logging drivers (`logs`), Prometheus
//! metrics (`metrics`) and OpenTelemetry traces (`telemetry`).

pub mod api;
pub mod authz;
pub mod container;
pub mod content;
pub mod daemon;
pub mod events;
pub mod fsutil;
pub mod host;
pub mod image;
pub mod logs;
pub mod metrics;
pub mod network;
pub mod plugin;
pub mod plugin_host;
pub mod runtime;
pub mod snapshot;
pub mod store;
pub mod telemetry;
pub mod volume;
