//! `volume.*` and `plugin.*` handlers: thin adapters to [`crate::volume`] and
//! [`crate::plugin`].

use std::sync::Arc;

use berth_api::image::RegistryAuth;
use berth_api::plugin::{PluginInfo, PluginInstallRequest, PluginPushResult, PluginServer};
use berth_api::volume::{
    VolumeCreateRequest, VolumeInfo, VolumeListRequest, VolumePruneReport, VolumeServer,
};
use jsonrpsee::core::{RpcResult, async_trait};

use super::ApiError;
use crate::daemon::Context;
use crate::{plugin, volume};

impl ApiError for volume::Error {
    fn kind(&self) -> berth_api::ErrorKind {
        volume::Error::kind(self)
    }
}

impl ApiError for plugin::Error {
    fn kind(&self) -> berth_api::ErrorKind {
        plugin::Error::kind(self)
    }
}

/// Implements [`VolumeServer`] and [`PluginServer`].
#[derive(Debug, Clone)]
pub struct VolumeApi {
    ctx: Arc<Context>,
}

impl VolumeApi {
    /// Handlers over the shared daemon context.
    pub fn new(ctx: Arc<Context>) -> VolumeApi {
        VolumeApi { ctx }
    }

    /// Refuses to take away a logging driver that containers still deliver their logs to
    /// (their lines would have nowhere to go); otherwise keeps new deliveries from starting
    /// to it until the returned guard drops.
    async fn retire_logging(&self, plugin: &str, what: &str) -> RpcResult<crate::logs::Retiring> {
        let ids = match self.ctx.logs.retire(plugin) {
            Ok(retiring) => return Ok(retiring),
            Err(ids) => ids,
        };
        let containers = Arc::clone(&self.ctx.containers);
        let names = tokio::task::spawn_blocking(move || {
            ids.into_iter()
                .map(|id| containers.resolve(&id).map(|r| r.name).unwrap_or(id))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        Err(berth_api::error::rpc_error(
            berth_api::ErrorKind::FailedPrecondition,
            format!(
                "plugin {plugin} is in use and cannot be {what}: container(s) {} deliver their \
                 logs to it (stop them first)",
                names.join(", ")
            ),
        ))
    }

    fn emit(&self, kind: &str, action: &str, name: &str, extra: &[(&str, &str)]) {
        let attributes = extra.iter().copied().chain([("name", name)]);
        self.ctx.events.emit(kind, action, name, attributes);
    }
}

#[async_trait]
impl VolumeServer for VolumeApi {
    async fn create(&self, request: VolumeCreateRequest) -> RpcResult<VolumeInfo> {
        let info = self
            .ctx
            .volumes
            .create(request)
            .await
            .map_err(|e| e.to_rpc())?;
        self.emit(
            "volume",
            "create",
            &info.name,
            &[("driver", info.driver.as_str())],
        );
        Ok(info)
    }

    async fn list(
        &self,
        extensions: &jsonrpsee::core::server::Extensions,
        request: Option<VolumeListRequest>,
    ) -> RpcResult<Vec<VolumeInfo>> {
        let request = request.unwrap_or_default();
        request
            .validate()
            .map_err(|m| berth_api::error::invalid_params(Some("filters".into()), m))?;
        let mut listed = self
            .ctx
            .volumes
            .list(&request)
            .await
            .map_err(|e| e.to_rpc())?;
        super::authz::narrow_list(extensions, &mut listed, |v| Some(&v.labels));
        Ok(listed)
    }

    async fn inspect(&self, name: String) -> RpcResult<VolumeInfo> {
        self.ctx
            .volumes
            .inspect(&name)
            .await
            .map_err(|e| e.to_rpc())
    }

    async fn remove(&self, name: String, force: Option<bool>) -> RpcResult<()> {
        self.ctx
            .volumes
            .remove(&name, force.unwrap_or(false))
            .await
            .map_err(|e| e.to_rpc())?;
        self.emit("volume", "destroy", &name, &[]);
        Ok(())
    }

    async fn prune(&self, all: Option<bool>) -> RpcResult<VolumePruneReport> {
        let report = self
            .ctx
            .volumes
            .prune(all.unwrap_or(false))
            .await
            .map_err(|e| e.to_rpc())?;
        for name in &report.volumes_deleted {
            self.emit("volume", "destroy", name, &[]);
        }
        Ok(report)
    }
}

#[async_trait]
impl PluginServer for VolumeApi {
    async fn install(&self, request: PluginInstallRequest) -> RpcResult<PluginInfo> {
        let info = self
            .ctx
            .plugins
            .install(request)
            .await
            .map_err(|e| e.to_rpc())?;
        self.emit(
            "plugin",
            "install",
            &info.name,
            &[("kind", info.kind.as_str())],
        );
        Ok(info)
    }

    async fn list(
        &self,
        extensions: &jsonrpsee::core::server::Extensions,
    ) -> RpcResult<Vec<PluginInfo>> {
        let mut listed = self.ctx.plugins.list().await.map_err(|e| e.to_rpc())?;
        // Plugins carry no labels: a label scope shows none of them.
        super::authz::narrow_list(extensions, &mut listed, |_| None);
        Ok(listed)
    }

    async fn inspect(&self, name: String) -> RpcResult<PluginInfo> {
        self.ctx
            .plugins
            .inspect(&name)
            .await
            .map_err(|e| e.to_rpc())
    }

    async fn enable(&self, name: String) -> RpcResult<()> {
        self.ctx
            .plugins
            .enable(&name)
            .await
            .map_err(|e| e.to_rpc())?;
        self.emit("plugin", "enable", &name, &[]);
        Ok(())
    }

    async fn disable(&self, name: String) -> RpcResult<()> {
        // No volume operation may be using the driver while it changes or goes.
        let _volumes = self.ctx.volumes.exclusive().await;
        let _retiring = self.retire_logging(&name, "disabled").await?;
        self.ctx
            .plugins
            .disable(&name)
            .await
            .map_err(|e| e.to_rpc())?;
        self.emit("plugin", "disable", &name, &[]);
        Ok(())
    }

    async fn set(&self, name: String, settings: Vec<String>) -> RpcResult<()> {
        // No volume operation may be using the driver while it changes or goes.
        let _volumes = self.ctx.volumes.exclusive().await;
        self.ctx
            .plugins
            .set(&name, &settings)
            .await
            .map_err(|e| e.to_rpc())
    }

    async fn remove(&self, name: String) -> RpcResult<()> {
        // No volume operation may be using the driver while it changes or goes.
        let _volumes = self.ctx.volumes.exclusive().await;
        let _retiring = self.retire_logging(&name, "removed").await?;
        self.ctx
            .plugins
            .remove(&name)
            .await
            .map_err(|e| e.to_rpc())?;
        self.emit("plugin", "remove", &name, &[]);
        Ok(())
    }

    async fn push(
        &self,
        name: String,
        reference: String,
        auth: Option<RegistryAuth>,
    ) -> RpcResult<PluginPushResult> {
        self.ctx
            .plugins
            .push(&name, &reference, &auth)
            .await
            .map_err(|e| e.to_rpc())
    }
}
