//! `image.*` handlers: thin adapters from the API to [`crate::image`], with blocking work
//! moved off the async workers.

use std::sync::Arc;

use berth_api::image::{
    HistoryEntry, ImageDetails, ImageFilter, ImageServer, ImageSummary, PruneReport, PullEvent,
    PullRequest, PullResult, PushEvent, PushRequest, PushResult, RemovedImage,
};
use jsonrpsee::PendingSubscriptionSink;
use jsonrpsee::core::{RpcResult, SubscriptionResult, async_trait};
use jsonrpsee::types::ErrorObjectOwned;
use serde::Serialize;

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

    fn emit(&self, action: &str, id: &str, name: Option<&str>) {
        self.ctx
            .events
            .emit("image", action, id, name.map(|n| ("name", n)));
    }

    fn unpack_options(&self) -> UnpackOptions {
        UnpackOptions {
            allow_device_nodes: self.ctx.config.allow_layer_device_nodes,
        }
    }

    async fn run_pull(
        &self,
        request: PullRequest,
        progress: impl Fn(PullEvent) + Send + Sync + 'static,
    ) -> image::Result<PullResult> {
        let config = &self.ctx.config;
        let started = std::time::Instant::now();
        let span = tracing::info_span!("image.pull", reference = %request.reference);
        let pulled = tracing::Instrument::instrument(
            image::pull::pull(
                Arc::clone(&self.ctx.images),
                request,
                self.unpack_options(),
                config.max_concurrent_downloads as usize,
                progress,
            ),
            span,
        )
        .await;
        crate::metrics::pull(
            pulled.as_ref().map(|p| p.bytes_downloaded).map_err(|_| ()),
            started.elapsed(),
        );
        let pulled = pulled?;
        self.emit("pull", &pulled.id, Some(&pulled.reference));
        Ok(pulled)
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
        follow(
            pending,
            |progress| self.run_pull(request, progress),
            |e| matches!(e, PullEvent::Done(_)),
            PullEvent::Done,
            |message| PullEvent::Failed { message },
        )
        .await
    }

    async fn push(&self, request: PushRequest) -> RpcResult<PushResult> {
        let pushed = image::push::push(Arc::clone(&self.ctx.images), request, |_| {})
            .await
            .map_err(|e| e.to_rpc())?;
        self.emit("push", &pushed.digest, Some(&pushed.reference));
        Ok(pushed)
    }

    async fn push_follow(
        &self,
        pending: PendingSubscriptionSink,
        request: PushRequest,
    ) -> SubscriptionResult {
        let images = Arc::clone(&self.ctx.images);
        let events = Arc::clone(&self.ctx.events);
        follow(
            pending,
            |progress| async move {
                let pushed = image::push::push(images, request, progress).await?;
                let name = [("name", pushed.reference.as_str())];
                events.emit("image", "push", &pushed.digest, name);
                Ok(pushed)
            },
            |e| matches!(e, PushEvent::Done(_)),
            PushEvent::Done,
            |message| PushEvent::Failed { message },
        )
        .await
    }

    async fn login(&self, registry: String, auth: berth_api::image::RegistryAuth) -> RpcResult<()> {
        self.ctx
            .images
            .registries
            .check_login(&registry, &auth)
            .await
            .map_err(|e| e.to_rpc())
    }

    async fn history(&self, name: String) -> RpcResult<Vec<HistoryEntry>> {
        self.blocking(move |i| i.history(&name)).await
    }

    async fn prune(&self, all: Option<bool>) -> RpcResult<PruneReport> {
        self.blocking(move |i| i.prune(all.unwrap_or(false))).await
    }

    async fn save(&self, names: Vec<String>, path: String) -> RpcResult<u64> {
        self.blocking(move |i| i.save(&names, std::path::Path::new(&path)))
            .await
    }

    async fn load(&self, path: String) -> RpcResult<Vec<String>> {
        let unpack = self.unpack_options();
        let loaded = self
            .blocking(move |i| i.load(std::path::Path::new(&path), unpack))
            .await?;
        for name in &loaded {
            self.emit("load", name, Some(name));
        }
        Ok(loaded)
    }

    async fn import(
        &self,
        path: String,
        reference: Option<String>,
        changes: Option<Vec<String>>,
        message: Option<String>,
    ) -> RpcResult<String> {
        let unpack = self.unpack_options();
        let name = reference.clone();
        let id = self
            .blocking(move |i| {
                i.import(
                    std::path::Path::new(&path),
                    reference.as_deref(),
                    &changes.unwrap_or_default(),
                    message.as_deref(),
                    unpack,
                )
            })
            .await?;
        self.emit("import", &id, name.as_deref());
        Ok(id)
    }

    async fn list(
        &self,
        extensions: &jsonrpsee::core::server::Extensions,
        filter: Option<ImageFilter>,
    ) -> RpcResult<Vec<ImageSummary>> {
        let filter = filter.unwrap_or_default();
        let mut listed = self.blocking(move |i| i.list(&filter)).await?;
        super::authz::narrow_list(extensions, &mut listed, |i| Some(&i.labels));
        Ok(listed)
    }

    async fn inspect(&self, name: String) -> RpcResult<ImageDetails> {
        self.blocking(move |i| i.inspect(&name)).await
    }

    async fn tag(&self, source: String, target: String) -> RpcResult<()> {
        let (from, to) = (source.clone(), target.clone());
        self.blocking(move |i| i.tag(&from, &to)).await?;
        let name = target.clone();
        let id = self
            .blocking(move |i| i.resolve(&target).map(|image| image.id))
            .await
            .unwrap_or(source);
        self.emit("tag", &id, Some(&name));
        Ok(())
    }

    async fn remove(&self, name: String, force: Option<bool>) -> RpcResult<Vec<RemovedImage>> {
        let removed = self
            .blocking(move |i| i.remove(&name, force.unwrap_or(false)))
            .await?;
        for r in &removed {
            match r {
                RemovedImage::Untagged(name) => self.emit("untag", name, Some(name)),
                RemovedImage::Deleted(id) => self.emit("delete", id, None),
            }
        }
        Ok(removed)
    }
}

/// Runs an operation that reports progress as a subscription: intermediate events are best
/// effort (a slow client loses ticks), the final `done`/`failed` event is always delivered.
async fn follow<E, R, Fut>(
    pending: PendingSubscriptionSink,
    start: impl FnOnce(Box<dyn Fn(E) + Send + Sync>) -> Fut,
    is_final: fn(&E) -> bool,
    done: fn(R) -> E,
    failed: fn(String) -> E,
) -> SubscriptionResult
where
    E: Serialize + Send + 'static,
    Fut: Future<Output = image::Result<R>>,
{
    let sink = pending.accept().await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<E>(256);
    let forward = tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            let Ok(msg) = serde_json::value::to_raw_value(&event) else {
                continue;
            };
            if sink.send(msg).await.is_err() {
                break;
            }
        }
    });
    let progress_tx = tx.clone();
    let outcome = start(Box::new(move |event| {
        if !is_final(&event) {
            let _ = progress_tx.try_send(event);
        }
    }))
    .await;
    let last = match outcome {
        Ok(result) => done(result),
        Err(e) => failed(e.to_string()),
    };
    let _ = tx.send(last).await;
    drop(tx);
    let _ = forward.await;
    Ok(())
}
