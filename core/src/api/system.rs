//! `system.*` handlers.

use std::sync::Arc;
use std::time::Duration;

use berth_api::error::invalid_params;
use berth_api::system::{
    ContainerCounts, DiskUsage, Heartbeat, SystemInfo, SystemServer, UsageSummary, VersionInfo,
};
use jsonrpsee::PendingSubscriptionSink;
use jsonrpsee::core::{RpcResult, SubscriptionResult, async_trait};

use super::ApiError;
use crate::daemon::Context;
use crate::fsutil::disk_usage;
use crate::store::Store;

/// Implements [`SystemServer`].
#[derive(Debug)]
pub struct SystemApi {
    ctx: Arc<Context>,
}

impl SystemApi {
    /// Handlers over the shared daemon context.
    pub fn new(ctx: Arc<Context>) -> SystemApi {
        SystemApi { ctx }
    }
}

/// Data-root subdirectories holding each kind's bytes.
const IMAGE_DIRS: &[&str] = &["content", "snapshots"];
const CONTAINER_DIRS: &[&str] = &["containers"];
/// Volume data lives in the drivers' state directories, beside their (small) components.
const VOLUME_DIRS: &[&str] = &["plugins"];
const PLUGIN_DIRS: &[&str] = &["plugin-cache"];

#[async_trait]
impl SystemServer for SystemApi {
    async fn version(&self) -> RpcResult<VersionInfo> {
        Ok(VersionInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            api_version: berth_api::API_VERSION.to_owned(),
            git_commit: option_env!("BERTH_GIT_COMMIT").map(str::to_owned),
            os: std::env::consts::OS.to_owned(),
            arch: self.ctx.host.architecture.clone(),
            kernel_version: self.ctx.host.kernel_version.clone(),
        })
    }

    async fn info(&self) -> RpcResult<SystemInfo> {
        let counts = self
            .ctx
            .store
            .run(Store::counts)
            .await
            .map_err(|e| e.to_rpc())?;
        let host = &self.ctx.host;
        Ok(SystemInfo {
            id: self.ctx.daemon_id.clone(),
            name: host.hostname.clone(),
            server_version: env!("CARGO_PKG_VERSION").to_owned(),
            api_version: berth_api::API_VERSION.to_owned(),
            kernel_version: host.kernel_version.clone(),
            operating_system: host.operating_system.clone(),
            os_type: std::env::consts::OS.to_owned(),
            architecture: host.architecture.clone(),
            ncpu: host.ncpu,
            mem_total: host.mem_total,
            cgroup: host.cgroup.clone(),
            storage_driver: "overlayfs".to_owned(),
            storage_driver_supported: host.overlay_supported,
            data_root: self.ctx.config.data_root.display().to_string(),
            listeners: self.ctx.listeners.clone(),
            containers: ContainerCounts {
                total: counts.containers,
                running: counts.running,
                paused: counts.paused,
                stopped: counts.containers - counts.running - counts.paused,
            },
            images: counts.images,
            volumes: counts.volumes,
            networks: counts.networks,
            plugins: counts.plugins,
            security_options: host.security_options.clone(),
            log_level: self.ctx.config.log_level.clone(),
            uptime_secs: self.ctx.started.elapsed().as_secs(),
            system_time: now_rfc3339(),
        })
    }

    async fn ping(&self) -> RpcResult<String> {
        Ok("OK".to_owned())
    }

    async fn metrics(&self) -> RpcResult<String> {
        let states = self
            .ctx
            .store
            .run(Store::container_states)
            .await
            .map_err(|e| e.to_rpc())?;
        let states: Vec<(&str, i64)> = states.iter().map(|(s, n)| (s.as_str(), *n)).collect();
        Ok(crate::metrics::render(&states))
    }

    async fn df(&self) -> RpcResult<DiskUsage> {
        let counts = self
            .ctx
            .store
            .run(Store::counts)
            .await
            .map_err(|e| e.to_rpc())?;
        let root = self.ctx.config.data_root.clone();
        let sizes = tokio::task::spawn_blocking(move || {
            let sum = |dirs: &[&str]| dirs.iter().map(|d| disk_usage(&root.join(d))).sum::<u64>();
            (
                sum(IMAGE_DIRS),
                sum(CONTAINER_DIRS),
                sum(VOLUME_DIRS),
                sum(PLUGIN_DIRS),
                disk_usage(&root),
            )
        })
        .await
        .map_err(|e| crate::store::Error::Task(e.to_string()).to_rpc())?;
        let (images, containers, volumes, plugins, all) = sizes;
        let active_containers = counts.running + counts.paused;
        Ok(DiskUsage {
            kinds: vec![
                UsageSummary {
                    kind: "Images".into(),
                    total: counts.images,
                    active: counts.images_in_use,
                    size_bytes: images,
                    reclaimable_bytes: counts.images_unused_bytes.min(images),
                },
                UsageSummary {
                    kind: "Containers".into(),
                    total: counts.containers,
                    active: active_containers,
                    size_bytes: containers,
                    // Stopped containers' writable layers are what `container prune` frees;
                    // per-container sizes are not tracked, so only an all-stopped set counts.
                    reclaimable_bytes: if active_containers == 0 {
                        containers
                    } else {
                        0
                    },
                },
                UsageSummary {
                    kind: "Local Volumes".into(),
                    total: counts.volumes,
                    active: counts.volumes_in_use,
                    size_bytes: volumes,
                    reclaimable_bytes: if counts.volumes_in_use == 0 {
                        volumes
                    } else {
                        0
                    },
                },
                UsageSummary {
                    kind: "Plugins".into(),
                    total: counts.plugins,
                    active: counts.plugins_enabled,
                    size_bytes: plugins,
                    reclaimable_bytes: 0,
                },
            ],
            data_root_bytes: all,
        })
    }

    async fn heartbeat(
        &self,
        pending: PendingSubscriptionSink,
        interval_ms: Option<u64>,
    ) -> SubscriptionResult {
        let interval = interval_ms.unwrap_or(1000);
        if !(10..=3_600_000).contains(&interval) {
            pending
                .reject(invalid_params(
                    Some("interval_ms".into()),
                    format!("invalid params for system.heartbeat: `interval_ms`: {interval} is outside 10..=3600000"),
                ))
                .await;
            return Ok(());
        }
        let sink = pending.accept().await?;
        let mut ticker = tokio::time::interval(Duration::from_millis(interval));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seq = 0;
        loop {
            tokio::select! {
                () = sink.closed() => break,
                _ = ticker.tick() => {
                    seq += 1;
                    let beat = Heartbeat { seq, uptime_secs: self.ctx.started.elapsed().as_secs() };
                    let msg = serde_json::value::to_raw_value(&beat)?;
                    if sink.send(msg).await.is_err() {
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The current time as RFC 3339 (UTC, seconds).
fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
