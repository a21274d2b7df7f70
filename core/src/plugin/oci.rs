//! Plugins as OCI artifacts (the CNCF Wasm OCI format): one layer of media type
//! `application/vnd.wasm.content.layer.v1+wasm` holding the component, and a small
//! `application/vnd.wasm.config.v0+json` config.

use berth_api::image::RegistryAuth;
use berth_api::plugin::{PluginPushResult, WASM_CONFIG_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE};
use oci_client::client::{Config, ImageLayer};
use sha2::Digest as _;

use super::{Error, Result};
use crate::image::pull::oci_auth;
use crate::image::registry::{Endpoint, oci_reference, registry_error};
use crate::image::{Images, Reference};

/// Collects a blob, failing once it passes the size its descriptor declared: a registry
/// cannot make berthd buffer more than it announced.
struct Capped {
    bytes: Vec<u8>,
    limit: usize,
}

impl tokio::io::AsyncWrite for Capped {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.bytes.len() + data.len() > self.limit {
            return std::task::Poll::Ready(Err(std::io::Error::other(format!(
                "the registry sent more than the {} bytes the manifest declares",
                self.limit
            ))));
        }
        self.bytes.extend_from_slice(data);
        std::task::Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

fn endpoint_of(images: &Images, reference: &Reference) -> Endpoint {
    images
        .registries
        .endpoints(reference)
        .pop()
        .unwrap_or(Endpoint {
            host: reference.registry.clone(),
            plain_http: false,
        })
}

/// Fetches the component of the artifact `reference`, checking its media type, size and
/// digest.
pub(super) async fn pull(
    images: &Images,
    reference: &str,
    auth: &Option<RegistryAuth>,
    max_bytes: u64,
) -> Result<Vec<u8>> {
    let parsed = Reference::parse(reference).map_err(crate::image::Error::from)?;
    let auth = oci_auth(auth);
    let mut last = None;
    for endpoint in images.registries.endpoints(&parsed) {
        let client = images.registries.client(&endpoint, &auth);
        let oref = oci_reference(&parsed, &endpoint);
        let (manifest, _digest) = match client.pull_image_manifest(&oref, &auth).await {
            Ok(m) => m,
            Err(e) => {
                last = Some(registry_error(&endpoint, e));
                continue;
            }
        };
        let wasm: Vec<_> = manifest
            .layers
            .iter()
            .filter(|l| l.media_type == WASM_LAYER_MEDIA_TYPE)
            .collect();
        let [layer] = wasm.as_slice() else {
            return Err(Error::Invalid(format!(
                "{reference} is not a Wasm component artifact: it needs exactly one layer of media type {WASM_LAYER_MEDIA_TYPE} (found {} of {} layers)",
                wasm.len(),
                manifest.layers.len()
            )));
        };
        if layer.size < 0 || layer.size as u64 > max_bytes {
            return Err(Error::Invalid(format!(
                "{reference}: the component layer is {} bytes, more than the {max_bytes} allowed",
                layer.size
            )));
        }
        let mut capped = Capped {
            bytes: Vec::with_capacity(layer.size as usize),
            limit: layer.size as usize,
        };
        client
            .pull_blob(&oref, *layer, &mut capped)
            .await
            .map_err(|e| registry_error(&endpoint, e))?;
        let bytes = capped.bytes;
        let (bytes, digest) = tokio::task::spawn_blocking(move || {
            let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)));
            (bytes, digest)
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))?;
        if digest != layer.digest || bytes.len() as i64 != layer.size {
            return Err(Error::Invalid(format!(
                "{reference}: the component layer does not match its descriptor (digest {digest}, {} bytes; expected {}, {} bytes)",
                bytes.len(),
                layer.digest,
                layer.size
            )));
        }
        return Ok(bytes);
    }
    Err(last
        .map(Error::from)
        .unwrap_or_else(|| Error::Invalid(format!("no registry endpoint for {reference}"))))
}

/// Pushes `component` to `reference` as a Wasm artifact.
pub(super) async fn push(
    images: &Images,
    kind: &str,
    reference: &str,
    auth: &Option<RegistryAuth>,
    component: Vec<u8>,
) -> Result<PluginPushResult> {
    let parsed = Reference::parse(reference).map_err(crate::image::Error::from)?;
    if parsed.digest.is_some() {
        return Err(Error::Invalid(format!(
            "{reference}: push to a tag, not a digest reference"
        )));
    }
    let endpoint = endpoint_of(images, &parsed);
    let auth = oci_auth(auth);
    let client = images.registries.client(&endpoint, &auth);
    let oref = oci_reference(&parsed, &endpoint);
    let (component, layer_digest) = tokio::task::spawn_blocking(move || {
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&component)));
        (component, digest)
    })
    .await
    .map_err(|e| Error::Task(e.to_string()))?;
    let config = serde_json::json!({
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer_digest],
        "component": { "berth.plugin.kind": kind },
    });
    let config = Config::new(
        serde_json::to_vec(&config).map_err(|e| Error::Task(e.to_string()))?,
        WASM_CONFIG_MEDIA_TYPE.to_owned(),
        None,
    );
    let layer = ImageLayer::new(component, WASM_LAYER_MEDIA_TYPE.to_owned(), None);
    client
        .push(&oref, &[layer], config, &auth, None)
        .await
        .map_err(|e| registry_error(&endpoint, e))?;
    let digest = client
        .fetch_manifest_digest(&oref, &auth)
        .await
        .map_err(|e| registry_error(&endpoint, e))?;
    Ok(PluginPushResult {
        reference: parsed.to_string(),
        digest,
    })
}
