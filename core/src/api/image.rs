//! `image.*` handlers: thin adapters from the API to [`crate::image`], with blocking work
//! moved off the async workers.

use std::sync::Arc;

use berth_api::image::{
    ImageDetails, ImageFilter, ImageServer, ImageSummary, PullEvent, PullRequest, PullResult,
    RemovedImage,
};
use jsonrpsee::PendingSubscriptionSink;
use jsonrpsee::core::{RpcResult, SubscriptionResult, async_trait};
use jsonrpsee::types::ErrorObjectOwned;

use super::ApiError;
use crate::daemon::Context;
use crate::image::{self, Images};
use crate::snapshot::UnpackOptions;

impl ApiError for image::Error {
    fn kind(&self) -> berth_api::ErrorKind {
        image::Error::kind(self)
    }
}

/// Implements [`ImageServer`].
#[derive(Debug)]
pub struct ImageApi {
    ctx: Arc<Context>,
}

impl ImageApi {
    /// Handlers over the shared daemon context.
    pub fn new(ctx: Arc<Context>) -> ImageApi {
        ImageApi { ctx }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Images) -> image::Result<T> + Send + 'static,
    ) -> Result<T, ErrorObjectOwned> {
        let images = Arc::clone(&self.ctx.images);
        tokio::task::spawn_blocking(move || f(&images))
            .await
            .map_err(|e| image::Error::Task(e.to_string()).to_rpc())?
            .map_err(|e| e.to_rpc())
    }

    async fn run_pull(
        &self,
        request: PullRequest,
        progress: impl Fn(PullEvent) + Send + Sync + 'static,
    ) -> image::Result<PullResult> {
        let config = &self.ctx.config;
        image::pull::pull(
            Arc::clone(&self.ctx.images),
            request,
            UnpackOptions {
                allow_device_nodes: config.allow_layer_device_nodes,
            },
            config.max_concurrent_downloads as usize,
            progress,
        )
        .await
    }
}

#[async_trait]
impl ImageServer for ImageApi {
    async fn pull(&self, request: PullRequest) -> RpcResult<PullResult> {
        self.run_pull(request, |_| {}).await.map_err(|e| e.to_rpc())
    }

    async fn pull_follow(
        &self,
        pending: PendingSubscriptionSink,
        request: PullRequest,
    ) -> SubscriptionResult {
        let sink = pending.accept().await?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<PullEvent>(256);
        let forward = {
            let sink = sink.clone();
            tokio::spawn(async move {
                while let Some(event) = rx.recv().await {
                    let Ok(msg) = serde_json::value::to_raw_value(&event) else {
                        continue;
                    };
                    if sink.send(msg).await.is_err() {
                        break;
                    }
                }
            })
        };
        let progress_tx = tx.clone();
        // Progress is best effort (a slow client loses intermediate ticks); the final event
        // is always delivered below.
        let outcome = self
            .run_pull(request, move |event| {
                if !matches!(event, PullEvent::Done(_)) {
                    let _ = progress_tx.try_send(event);
                }
            })
            .await;
        let last = match outcome {
            Ok(result) => PullEvent::Done(result),
            Err(e) => PullEvent::Failed {
                message: e.to_string(),
            },
        };
        let _ = tx.send(last).await;
        drop(tx);
        let _ = forward.await;
        Ok(())
    }

    async fn list(&self, filter: Option<ImageFilter>) -> RpcResult<Vec<ImageSummary>> {
        let filter = filter.unwrap_or_default();
        self.blocking(move |i| i.list(&filter)).await
    }

    async fn inspect(&self, name: String) -> RpcResult<ImageDetails> {
        self.blocking(move |i| i.inspect(&name)).await
    }

    async fn tag(&self, source: String, target: String) -> RpcResult<()> {
        self.blocking(move |i| i.tag(&source, &target)).await
    }

    async fn remove(&self, name: String, force: Option<bool>) -> RpcResult<Vec<RemovedImage>> {
        self.blocking(move |i| i.remove(&name, force.unwrap_or(false)))
            .await
    }
}
