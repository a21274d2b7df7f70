//! The JSON-RPC API: jsonrpsee behind hyper on the Unix socket and TCP listeners, one
//! connection task per client, the params check in front of every handler, and the mapping
//! of engine errors to wire errors.

mod authz;
mod container;
mod error;
mod events;
mod http;
mod image;
mod network;
mod params;
mod server;
mod system;
mod volume;

use std::sync::Arc;

use berth_api::container::ContainerServer;
use berth_api::events::EventsServer;
use berth_api::image::ImageServer;
use berth_api::network::NetworkServer;
use berth_api::openrpc;
use berth_api::plugin::PluginServer;
use berth_api::system::SystemServer;
use berth_api::volume::VolumeServer;
use jsonrpsee::RpcModule;
use jsonrpsee::core::RegisterMethodError;

use crate::daemon::Context;
pub use authz::GateState;
pub use container::Sessions;
pub use error::ApiError;
pub use server::{Listener, Security, ServeSettings, serve};

/// All methods berthd serves, plus `rpc.discover`. `running` are the containers found alive
/// at start-up: each gets its monitor.
pub fn rpc_module(
    ctx: Arc<Context>,
    running: Vec<String>,
) -> Result<RpcModule<()>, RegisterMethodError> {
    let mut module = RpcModule::new(());
    module.merge(system::SystemApi::new(Arc::clone(&ctx)).into_rpc())?;
    module.merge(image::ImageApi::new(Arc::clone(&ctx)).into_rpc())?;
    let recent = container::monitor_all(&ctx, running);
    module.merge(container::ContainerApi::new(Arc::clone(&ctx), recent).into_rpc())?;
    let volumes = volume::VolumeApi::new(Arc::clone(&ctx));
    module.merge(VolumeServer::into_rpc(volumes.clone()))?;
    module.merge(PluginServer::into_rpc(volumes))?;
    module.merge(network::NetworkApi::new(Arc::clone(&ctx)).into_rpc())?;
    module.merge(events::EventsApi::new(Arc::clone(&ctx)).into_rpc())?;
    let doc = Arc::new(openrpc::document(
        &berth_api::all_methods(),
        env!("CARGO_PKG_VERSION"),
    ));
    module.register_method(openrpc::DISCOVER_METHOD, move |_, _, _| {
        serde_json::Value::clone(&doc)
    })?;
    Ok(module)
}
