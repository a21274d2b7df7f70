//! Pushing an image: every blob the registry lacks (checked with HEAD, mounted from another
//! repository of the same registry when the image came from there), then the manifest
//! exactly as stored, so the pushed digest equals the local one.

use std::sync::Arc;

use berth_api::image::{PushEvent, PushRequest, PushResult};
use bytes::Bytes;
use oci_client::RegistryOperation;
use tokio::io::AsyncReadExt;

use super::pull::oci_auth;
use super::registry::{Endpoint, oci_reference, registry_error};
use super::{Error, Images, Reference, Result};

/// Pushes `request.reference` (a local image name) to its registry.
pub async fn push(
    images: Arc<Images>,
    request: PushRequest,
    progress: impl Fn(PushEvent) + Send + Sync,
) -> Result<PushResult> {
    let reference = Reference::parse(&request.reference)?;
    if reference.digest.is_some() {
        return Err(Error::Conflict(format!(
            "{reference}: push a tag, not a digest reference"
        )));
    }
    let image = {
        let imgs = Arc::clone(&images);
        let name = request.reference.clone();
        tokio::task::spawn_blocking(move || imgs.resolve(&name))
            .await
            .map_err(|e| Error::Task(e.to_string()))??
    };
    let endpoint = images
        .registries
        .endpoints(&reference)
        .pop()
        .unwrap_or(Endpoint {
            host: reference.registry.clone(),
            plain_http: false,
        });
    let auth = oci_auth(&request.auth);
    let client = images.registries.client(&endpoint, &auth);
    let oref = oci_reference(&reference, &endpoint);
    client
        .auth(&oref, &auth, RegistryOperation::Push)
        .await
        .map_err(|e| registry_error(&endpoint, e))?;

    // Repositories of the same registry this image is known in: mount sources.
    let mount_sources: Vec<oci_client::Reference> = {
        let imgs = Arc::clone(&images);
        let id = image.id.clone();
        tokio::task::spawn_blocking(move || imgs.refs_of(&id))
            .await
            .map_err(|e| Error::Task(e.to_string()))??
            .into_iter()
            .filter_map(|r| Reference::parse(&r).ok())
            .filter(|r| r.registry == reference.registry && r.repository != reference.repository)
            .map(|r| oci_reference(&r, &endpoint))
            .collect()
    };

    let mut blobs: Vec<(String, u64)> = image
        .layers
        .iter()
        .map(|l| (l.digest.clone(), l.size))
        .collect();
    let config_size = {
        let imgs = Arc::clone(&images);
        let id = image.id.clone();
        tokio::task::spawn_blocking(move || imgs.content.size(&id).unwrap_or(0))
            .await
            .map_err(|e| Error::Task(e.to_string()))?
    };
    blobs.push((image.id.clone(), config_size));
    let mut uploaded = 0u32;
    let mut bytes_uploaded = 0u64;
    for (digest, size) in &blobs {
        if client
            .blob_exists(&oref, digest)
            .await
            .map_err(|e| registry_error(&endpoint, e))?
        {
            progress(PushEvent::Blob {
                digest: digest.clone(),
                status: "exists".into(),
                size: *size,
            });
            continue;
        }
        let mut mounted = false;
        for source in &mount_sources {
            if client.mount_blob(&oref, source, digest).await.is_ok()
                && client.blob_exists(&oref, digest).await.unwrap_or(false)
            {
                mounted = true;
                break;
            }
        }
        if mounted {
            progress(PushEvent::Blob {
                digest: digest.clone(),
                status: "mounted".into(),
                size: *size,
            });
            continue;
        }
        let path = images.content.path(digest)?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|_| Error::Content(crate::content::Error::NotFound(digest.clone())))?;
        let stream = futures_util::stream::unfold(file, |mut file| async move {
            let mut buf = vec![0u8; 1 << 20];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), file))
                }
                Err(e) => Some((
                    Err(oci_client::errors::OciDistributionError::IoError(e)),
                    file,
                )),
            }
        });
        client
            .push_blob_stream(&oref, stream, digest, Some(*size))
            .await
            .map_err(|e| registry_error(&endpoint, e))?;
        uploaded += 1;
        bytes_uploaded += size;
        progress(PushEvent::Blob {
            digest: digest.clone(),
            status: "pushed".into(),
            size: *size,
        });
    }
    let manifest = {
        let imgs = Arc::clone(&images);
        let d = image.manifest_digest.clone();
        tokio::task::spawn_blocking(move || imgs.content.read(&d))
            .await
            .map_err(|e| Error::Task(e.to_string()))??
    };
    let content_type = http::HeaderValue::from_str(&image.manifest_media_type)
        .map_err(|e| Error::Task(format!("manifest media type: {e}")))?;
    client
        .push_manifest_raw(&oref, manifest, content_type)
        .await
        .map_err(|e| registry_error(&endpoint, e))?;
    // The pushed manifest is now also known under this repository.
    {
        let imgs = Arc::clone(&images);
        let name = format!("{}@{}", reference.name(), image.manifest_digest);
        let record = image.clone();
        tokio::task::spawn_blocking(move || imgs.record(&record, &[name]))
            .await
            .map_err(|e| Error::Task(e.to_string()))??;
    }
    let result = PushResult {
        reference: reference.to_string(),
        digest: image.manifest_digest.clone(),
        blobs_uploaded: uploaded,
        bytes_uploaded,
    };
    progress(PushEvent::Done(result.clone()));
    Ok(result)
}
