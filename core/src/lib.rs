//! berth-core: the berth engine. The API server (`api`), wiring and lifecycle (`daemon`), the
//! state database (`store`) and host facts (`host`); images, snapshots, the runtime and the
//! plugin host join as they are built.

pub mod api;
pub mod container;
pub mod content;
pub mod daemon;
pub mod fsutil;
pub mod host;
pub mod image;
pub mod runtime;
pub mod snapshot;
pub mod store;
