//! End-to-end tests: real berthd processes, driven through the typed client, the CLI and raw
//! bytes. One test binary; one module per area.

mod api;
mod authz;
mod cli;
mod container;
mod daemon;
mod events;
mod image;
mod logging;
mod network;
mod telemetry;
mod volume;
