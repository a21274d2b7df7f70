//! `image.*`: pulling images from registries and managing them locally.

use std::collections::BTreeMap;

use berth_api_macros::method_specs;
use jsonrpsee::core::{RpcResult, SubscriptionResult};
use jsonrpsee::proc_macros::rpc;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Credentials for a registry, sent with the call that needs them (never stored by berthd).
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryAuth {
    /// User name for basic auth (or the token flow's credentials).
    #[serde(default)]
    pub username: Option<String>,
    /// Password or personal access token.
    #[serde(default)]
    pub password: Option<String>,
    /// A bearer token to present as is.
    #[serde(default)]
    pub registry_token: Option<String>,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field(
                "registry_token",
                &self.registry_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// What `image.pull` does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PullRequest {
    /// Image reference: `busybox`, `127.0.0.1:5000/app:v1`, `name@sha256:...`.
    pub reference: String,
    /// `os/arch[/variant]` to pick from a multi-platform index (default: this host).
    #[serde(default)]
    pub platform: Option<String>,
    /// Registry credentials (default: anonymous).
    #[serde(default)]
    pub auth: Option<RegistryAuth>,
}

/// What a finished pull produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PullResult {
    /// Image id (config digest).
    pub id: String,
    /// The normalized reference pulled.
    pub reference: String,
    /// Manifest digest (or index digest, when the reference named an index).
    pub digest: String,
    /// Layers downloaded (the rest were already present).
    pub layers_downloaded: u32,
    /// Layers already present.
    pub layers_present: u32,
    /// Compressed bytes downloaded.
    pub bytes_downloaded: u64,
}

/// Phase of one layer during a pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LayerPhase {
    /// Queued behind other downloads.
    Waiting,
    /// Bytes arriving (and being unpacked as they arrive).
    Downloading,
    /// Unpacked and verified.
    Done,
    /// Already on disk; nothing fetched.
    AlreadyExists,
}

/// One progress item of `image.pull_follow`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PullEvent {
    /// The manifest was resolved; `layers` lists the layer digests and sizes.
    Resolved {
        /// Normalized reference.
        reference: String,
        /// Manifest digest.
        digest: String,
        /// Layers, bottom first: (digest, compressed size).
        layers: Vec<LayerInfo>,
    },
    /// A layer's progress.
    Layer {
        /// Layer digest.
        digest: String,
        /// Phase.
        phase: LayerPhase,
        /// Compressed bytes received so far.
        current: u64,
        /// Compressed size.
        total: u64,
    },
    /// The pull finished.
    Done(PullResult),
    /// The pull failed; the stream ends after this.
    Failed {
        /// Why.
        message: String,
    },
}

/// A layer named in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LayerInfo {
    /// Compressed digest.
    pub digest: String,
    /// Compressed size.
    pub size: u64,
}

/// One row of `image.list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ImageSummary {
    /// Image id (config digest).
    pub id: String,
    /// `name:tag` references to this image.
    pub repo_tags: Vec<String>,
    /// `name@digest` references to this image.
    pub repo_digests: Vec<String>,
    /// Creation time from the image config (RFC 3339), if set.
    pub created: Option<String>,
    /// Uncompressed size of all layers in bytes.
    pub size: u64,
    /// Labels from the image config.
    pub labels: BTreeMap<String, String>,
    /// Containers using the image.
    pub containers: u64,
}

/// Filters for `image.list` (like `docker images --filter`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageFilter {
    /// Only images with a reference matching this repository (`busybox`, `reg:5000/app`),
    /// optionally with `:tag`.
    #[serde(default)]
    pub reference: Option<String>,
    /// `true`: only untagged images; `false`: only tagged ones.
    #[serde(default)]
    pub dangling: Option<bool>,
    /// Labels the image must carry: `key` or `key=value`.
    #[serde(default)]
    pub label: Vec<String>,
}

/// The run-time defaults an image carries (OCI image config `config`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ImageRunConfig {
    /// `user[:group]`.
    pub user: Option<String>,
    /// `KEY=value` entries.
    pub env: Vec<String>,
    /// Entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// Default command.
    pub cmd: Option<Vec<String>>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// `port/proto` entries.
    pub exposed_ports: Vec<String>,
    /// Volume mount points.
    pub volumes: Vec<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Stop signal.
    pub stop_signal: Option<String>,
}

/// `image.inspect`: everything berth knows about one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ImageDetails {
    /// Image id (config digest).
    pub id: String,
    /// `name:tag` references.
    pub repo_tags: Vec<String>,
    /// `name@digest` references.
    pub repo_digests: Vec<String>,
    /// Manifest digest.
    pub manifest_digest: String,
    /// Manifest media type.
    pub manifest_media_type: String,
    /// Creation time (RFC 3339).
    pub created: Option<String>,
    /// Author.
    pub author: Option<String>,
    /// OS.
    pub os: String,
    /// Architecture.
    pub architecture: String,
    /// Variant.
    pub variant: Option<String>,
    /// Uncompressed size in bytes.
    pub size: u64,
    /// Run-time defaults.
    pub config: ImageRunConfig,
    /// Uncompressed layer digests, bottom first.
    pub rootfs_layers: Vec<String>,
    /// Compressed layers as stored: digest, media type, size.
    pub layers: Vec<LayerDescriptor>,
    /// Storage: the overlay lower directories of this image, top layer first (like
    /// docker's `GraphDriver.Data.LowerDir`).
    pub lower_dirs: Vec<String>,
}

/// A stored layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LayerDescriptor {
    /// Compressed digest.
    pub digest: String,
    /// Media type.
    pub media_type: String,
    /// Compressed size.
    pub size: u64,
    /// Uncompressed digest.
    pub diff_id: String,
}

/// One removed or untagged item of `image.remove`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RemovedImage {
    /// A reference was removed.
    Untagged(String),
    /// The image itself was deleted.
    Deleted(String),
}

/// What `image.push` does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PushRequest {
    /// Local image reference to push, naming the destination: `reg:5000/app:v1`.
    pub reference: String,
    /// Registry credentials (default: anonymous).
    #[serde(default)]
    pub auth: Option<RegistryAuth>,
}

/// What a finished push did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PushResult {
    /// The reference pushed.
    pub reference: String,
    /// Manifest digest (identical to the local one).
    pub digest: String,
    /// Blobs uploaded (the rest existed or were mounted).
    pub blobs_uploaded: u32,
    /// Bytes uploaded.
    pub bytes_uploaded: u64,
}

/// One progress item of `image.push_follow`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PushEvent {
    /// A blob was handled: `status` is `exists`, `mounted` or `pushed`.
    Blob {
        /// Blob digest.
        digest: String,
        /// What happened.
        status: String,
        /// Bytes.
        size: u64,
    },
    /// The push finished.
    Done(PushResult),
    /// The push failed; the stream ends after this.
    Failed {
        /// Why.
        message: String,
    },
}

/// One row of `image.history`, newest first (like `docker history`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HistoryEntry {
    /// When the step ran (RFC 3339).
    pub created: Option<String>,
    /// The command that made it.
    pub created_by: Option<String>,
    /// Bytes the step's layer adds (0 for steps without a layer).
    pub size: u64,
    /// Comment.
    pub comment: Option<String>,
    /// Whether the step made no layer.
    pub empty_layer: bool,
}

/// What a prune removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PruneReport {
    /// Image ids deleted.
    pub images_deleted: Vec<String>,
    /// Bytes freed on disk (blobs and unpacked layers).
    pub space_reclaimed: u64,
}

/// `image.*`: pull, list, inspect, tag and remove images.
#[method_specs]
#[rpc(server, client, namespace = "image", namespace_separator = ".")]
pub trait Image {
    /// Pulls an image from its registry; returns when every layer is unpacked.
    #[method(name = "pull", param_kind = map)]
    async fn pull(&self, request: PullRequest) -> RpcResult<PullResult>;

    /// Pulls an image, streaming progress events; the last item is `done` or `failed`.
    #[subscription(name = "pull_follow", unsubscribe = "pull_unfollow", item = PullEvent, param_kind = map)]
    async fn pull_follow(&self, request: PullRequest) -> SubscriptionResult;

    /// Lists images (like `docker images`).
    #[method(name = "list", param_kind = map, with_extensions)]
    async fn list(&self, filter: Option<ImageFilter>) -> RpcResult<Vec<ImageSummary>>;

    /// Shows one image by reference, id or id prefix.
    #[method(name = "inspect", param_kind = map)]
    async fn inspect(&self, name: String) -> RpcResult<ImageDetails>;

    /// Adds the reference `target` to the image `source`.
    #[method(name = "tag", param_kind = map)]
    async fn tag(&self, source: String, target: String) -> RpcResult<()>;

    /// Pushes a local image to the registry its name points at.
    #[method(name = "push", param_kind = map)]
    async fn push(&self, request: PushRequest) -> RpcResult<PushResult>;

    /// Pushes an image, streaming progress events; the last item is `done` or `failed`.
    #[subscription(name = "push_follow", unsubscribe = "push_unfollow", item = PushEvent, param_kind = map)]
    async fn push_follow(&self, request: PushRequest) -> SubscriptionResult;

    /// The steps that built an image, newest first.
    #[method(name = "history", param_kind = map)]
    async fn history(&self, name: String) -> RpcResult<Vec<HistoryEntry>>;

    /// Deletes dangling images (no tag), or with `all` every image no container uses, then
    /// unreferenced blobs and layers.
    #[method(name = "prune", param_kind = map)]
    async fn prune(&self, all: Option<bool>) -> RpcResult<PruneReport>;

    /// Writes images to `path` (absolute, on the daemon's host) as an OCI layout tar that
    /// also carries docker's `manifest.json`. Returns the archive's size in bytes.
    #[method(name = "save", param_kind = map)]
    async fn save(&self, names: Vec<String>, path: String) -> RpcResult<u64>;

    /// Loads every image of an OCI layout tar or a `docker save` archive at `path` (on the
    /// daemon's host). Returns the references (or ids) loaded.
    #[method(name = "load", param_kind = map)]
    async fn load(&self, path: String) -> RpcResult<Vec<String>>;

    /// Makes a one-layer image from a root filesystem tarball at `path` (plain, gzip or
    /// zstd), like `docker import`. `changes` are CMD, ENTRYPOINT, ENV, WORKDIR, USER,
    /// LABEL, EXPOSE, VOLUME or STOPSIGNAL instructions. Returns the image id.
    #[method(name = "import", param_kind = map)]
    async fn import(
        &self,
        path: String,
        reference: Option<String>,
        changes: Option<Vec<String>>,
        message: Option<String>,
    ) -> RpcResult<String>;

    /// Checks credentials against a registry (`host[:port]`, `docker.io` for Docker Hub), like
    /// `docker login`. berthd does not keep them: clients store them and send them with
    /// each pull or push.
    #[method(name = "login", param_kind = map)]
    async fn login(&self, registry: String, auth: RegistryAuth) -> RpcResult<()>;

    /// Removes a reference, and the image when no reference is left (like `docker rmi`).
    /// An image id removes every reference; `force` allows that for images with several.
    #[method(name = "remove", param_kind = map)]
    async fn remove(&self, name: String, force: Option<bool>) -> RpcResult<Vec<RemovedImage>>;
}
