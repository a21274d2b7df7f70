//! `network.*` handlers: thin adapters to [`crate::network`].

use std::sync::Arc;

use berth_api::container::ContainerStatus;
use berth_api::network::{
    NetworkCreateRequest, NetworkInfo, NetworkListRequest, NetworkPruneReport, NetworkServer,
};
use jsonrpsee::core::{RpcResult, async_trait};

use super::ApiError;
use crate::daemon::Context;
use crate::network;

impl ApiError for network::Error {
    fn kind(&self) -> berth_api::ErrorKind {
        network::Error::kind(self)
    }
}

/// Implements [`NetworkServer`].
#[derive(Debug, Clone)]
pub struct NetworkApi {
    ctx: Arc<Context>,
}

impl NetworkApi {
    /// Handlers over the shared daemon context.
    pub fn new(ctx: Arc<Context>) -> NetworkApi {
        NetworkApi { ctx }
    }

    fn emit(&self, action: &str, id: &str, attributes: &[(&str, &str)]) {
        self.ctx
            .events
            .emit("network", action, id, attributes.iter().copied());
    }

    async fn container(&self, key: String) -> RpcResult<crate::container::ContainerRecord> {
        let containers = Arc::clone(&self.ctx.containers);
        tokio::task::spawn_blocking(move || containers.resolve(&key))
            .await
            .map_err(|e| {
                berth_api::error::rpc_error(berth_api::ErrorKind::Internal, e.to_string())
            })?
            .map_err(|e| e.to_rpc())
    }
}

#[async_trait]
impl NetworkServer for NetworkApi {
    async fn create(&self, request: NetworkCreateRequest) -> RpcResult<NetworkInfo> {
        let ctx = Arc::clone(&self.ctx);
        // Run to the end even if the caller goes away: the driver's bridge and the record
        // must not part ways.
        let info = tokio::spawn(async move { ctx.networks.create(request).await })
            .await
            .map_err(|e| {
                berth_api::error::rpc_error(berth_api::ErrorKind::Internal, e.to_string())
            })?
            .map_err(|e| e.to_rpc())?;
        self.emit(
            "create",
            &info.id,
            &[("name", info.name.as_str()), ("type", info.driver.as_str())],
        );
        Ok(info)
    }

    async fn list(
        &self,
        extensions: &jsonrpsee::core::server::Extensions,
        request: Option<NetworkListRequest>,
    ) -> RpcResult<Vec<NetworkInfo>> {
        let request = request.unwrap_or_default();
        request
            .validate()
            .map_err(|m| berth_api::error::invalid_params(Some("filters".into()), m))?;
        let mut listed = self
            .ctx
            .networks
            .list(&request)
            .await
            .map_err(|e| e.to_rpc())?;
        super::authz::narrow_list(extensions, &mut listed, |n| Some(&n.labels));
        Ok(listed)
    }

    async fn inspect(&self, name: String) -> RpcResult<NetworkInfo> {
        self.ctx
            .networks
            .inspect(&name)
            .await
            .map_err(|e| e.to_rpc())
    }

    async fn remove(&self, name: String) -> RpcResult<()> {
        let ctx = Arc::clone(&self.ctx);
        let found = self.ctx.networks.inspect(&name).await.ok();
        tokio::spawn(async move { ctx.networks.remove(&name).await })
            .await
            .map_err(|e| {
                berth_api::error::rpc_error(berth_api::ErrorKind::Internal, e.to_string())
            })?
            .map_err(|e| e.to_rpc())?;
        if let Some(info) = found {
            self.emit("destroy", &info.id, &[("name", info.name.as_str())]);
        }
        Ok(())
    }

    async fn prune(&self) -> RpcResult<NetworkPruneReport> {
        let ctx = Arc::clone(&self.ctx);
        let report = tokio::spawn(async move { ctx.networks.prune().await })
            .await
            .map_err(|e| {
                berth_api::error::rpc_error(berth_api::ErrorKind::Internal, e.to_string())
            })?
            .map_err(|e| e.to_rpc())?;
        for name in &report.networks_deleted {
            self.emit("destroy", name, &[("name", name.as_str())]);
        }
        Ok(report)
    }

    async fn connect(
        &self,
        network: String,
        container: String,
        ip: Option<String>,
        aliases: Option<Vec<String>>,
    ) -> RpcResult<()> {
        let record = self.container(container).await?;
        let running = matches!(
            record.state.status,
            ContainerStatus::Running | ContainerStatus::Paused
        );
        let ctx = Arc::clone(&self.ctx);
        let (container_id, network_name) = (record.id.clone(), network.clone());
        tokio::spawn(async move {
            ctx.networks
                .connect(
                    &network,
                    &record,
                    running,
                    ip.as_deref(),
                    aliases.unwrap_or_default(),
                )
                .await
        })
        .await
        .map_err(|e| berth_api::error::rpc_error(berth_api::ErrorKind::Internal, e.to_string()))?
        .map_err(|e| e.to_rpc())?;
        self.emit(
            "connect",
            &network_name,
            &[
                ("name", network_name.as_str()),
                ("container", container_id.as_str()),
            ],
        );
        Ok(())
    }

    async fn disconnect(&self, network: String, container: String) -> RpcResult<()> {
        let record = self.container(container).await?;
        let ctx = Arc::clone(&self.ctx);
        let (container_id, network_name) = (record.id.clone(), network.clone());
        tokio::spawn(async move {
            ctx.networks
                .disconnect(&network, &record.id, &record.name)
                .await
        })
        .await
        .map_err(|e| berth_api::error::rpc_error(berth_api::ErrorKind::Internal, e.to_string()))?
        .map_err(|e| e.to_rpc())?;
        self.emit(
            "disconnect",
            &network_name,
            &[
                ("name", network_name.as_str()),
                ("container", container_id.as_str()),
            ],
        );
        Ok(())
    }
}
