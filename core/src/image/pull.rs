//! Pulling an image: resolve the reference (index → platform manifest), fetch config, then
//! stream every missing layer in parallel straight through hashing, the content store and
//! the unpacker in one pass — download and unpack overlap, and layers do not wait for each
//! other. Nothing becomes visible until its digest and diff id are verified.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};

use berth_api::image::{LayerInfo, LayerPhase, PullEvent, PullRequest, PullResult, RegistryAuth};
use bytes::Bytes;
use futures_util::StreamExt;
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth as OciAuth;
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::registry::{Endpoint, oci_reference, registry_error};
use super::{Error, ImageRecord, Images, LayerRecord, Reference, Result};
use crate::content::{self, Ingest, digest_of};
use crate::snapshot::{self, UnpackOptions};

const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// Layers and blobs a pull is working on, so garbage collection leaves them alone.
#[derive(Debug, Default)]
pub struct Inflight(Mutex<HashMap<String, usize>>);

impl Inflight {
    /// Whether `key` (a digest or chain id) is in use by a pull.
    pub fn holds(&self, key: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(key)
    }

    fn hold(self: &Arc<Self>, keys: Vec<String>) -> InflightGuard {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for k in &keys {
            *map.entry(k.clone()).or_default() += 1;
        }
        InflightGuard {
            owner: Arc::clone(self),
            keys,
        }
    }
}

struct InflightGuard {
    owner: Arc<Inflight>,
    keys: Vec<String>,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let mut map = self.owner.0.lock().unwrap_or_else(|p| p.into_inner());
        for k in &self.keys {
            if let Some(n) = map.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    map.remove(k);
                }
            }
        }
    }
}

/// The platform of this host in OCI terms.
pub fn host_platform() -> (String, String, Option<String>) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    let variant = (arch == "arm64").then(|| "v8".to_owned());
    ("linux".to_owned(), arch.to_owned(), variant)
}

/// Parses `os/arch[/variant]`.
pub fn parse_platform(s: &str) -> Result<(String, String, Option<String>)> {
    let parts: Vec<&str> = s.split('/').collect();
    match parts.as_slice() {
        [os, arch] if !os.is_empty() && !arch.is_empty() => {
            Ok(((*os).into(), (*arch).into(), None))
        }
        [os, arch, v] if !os.is_empty() && !arch.is_empty() && !v.is_empty() => {
            Ok(((*os).into(), (*arch).into(), Some((*v).into())))
        }
        _ => Err(Error::BadDocument {
            what: "platform",
            digest: s.to_owned(),
            message: "expected os/arch[/variant]".into(),
        }),
    }
}

pub(crate) fn oci_auth(auth: &Option<RegistryAuth>) -> OciAuth {
    match auth {
        Some(RegistryAuth {
            registry_token: Some(t),
            ..
        }) => OciAuth::Bearer(t.clone()),
        Some(RegistryAuth {
            username: Some(u),
            password: Some(p),
            ..
        }) => OciAuth::Basic(u.clone(), p.clone()),
        _ => OciAuth::Anonymous,
    }
}

fn bad(what: &'static str, digest: &str, message: impl ToString) -> Error {
    Error::BadDocument {
        what,
        digest: digest.to_owned(),
        message: message.to_string(),
    }
}

/// A resolved image: which endpoint, and its manifest and config.
struct Resolved {
    endpoint: Endpoint,
    client: Arc<oci_client::Client>,
    oref: oci_client::Reference,
    top_digest: String,
    manifest_digest: String,
    manifest_bytes: Bytes,
    manifest: ImageManifest,
}

async fn fetch_manifest(
    client: &oci_client::Client,
    endpoint: &Endpoint,
    oref: &oci_client::Reference,
    auth: &OciAuth,
    expected: Option<&str>,
) -> Result<(Bytes, String)> {
    let (bytes, _) = client
        .pull_manifest_raw(oref, auth, MANIFEST_TYPES)
        .await
        .map_err(|e| registry_error(endpoint, e))?;
    let digest = digest_of(&bytes);
    if let Some(expected) = expected
        && expected != digest
    {
        return Err(bad(
            "manifest",
            expected,
            format!("content hashes to {digest}"),
        ));
    }
    Ok((bytes, digest))
}

async fn resolve(
    images: &Images,
    reference: &Reference,
    auth: &OciAuth,
    platform: &(String, String, Option<String>),
) -> Result<Resolved> {
    let mut last_err = None;
    for endpoint in images.registries.endpoints(reference) {
        let client = images.registries.client(&endpoint, auth);
        let oref = oci_reference(reference, &endpoint);
        match resolve_at(&client, &endpoint, &oref, reference, auth, platform).await {
            Ok((top_digest, manifest_digest, manifest_bytes, manifest)) => {
                return Ok(Resolved {
                    endpoint,
                    client,
                    oref,
                    top_digest,
                    manifest_digest,
                    manifest_bytes,
                    manifest,
                });
            }
            Err(e) => {
                debug!(registry = %endpoint.host, "resolve failed: {e}");
                last_err = Some(e);
            }
        }
    }
    Err(last_err.unwrap_or_else(|| Error::NotFound(reference.to_string())))
}

async fn resolve_at(
    client: &oci_client::Client,
    endpoint: &Endpoint,
    oref: &oci_client::Reference,
    reference: &Reference,
    auth: &OciAuth,
    platform: &(String, String, Option<String>),
) -> Result<(String, String, Bytes, ImageManifest)> {
    let (bytes, top_digest) =
        fetch_manifest(client, endpoint, oref, auth, reference.digest.as_deref()).await?;
    let probe: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| bad("manifest", &top_digest, e))?;
    if probe.get("manifests").is_none() {
        let manifest: ImageManifest =
            serde_json::from_slice(&bytes).map_err(|e| bad("manifest", &top_digest, e))?;
        return Ok((top_digest.clone(), top_digest, bytes, manifest));
    }
    let index: ImageIndex =
        serde_json::from_slice(&bytes).map_err(|e| bad("index", &top_digest, e))?;
    let (os, arch, variant) = platform;
    let candidates: Vec<&oci_spec::image::Descriptor> = index
        .manifests()
        .iter()
        .filter(|m| {
            m.platform().as_ref().is_some_and(|p| {
                p.os().to_string() == *os
                    && p.architecture().to_string() == *arch
                    && match (variant, p.variant()) {
                        (Some(want), Some(have)) => want == have,
                        (Some(_), None) => true,
                        (None, _) => true,
                    }
            })
        })
        .collect();
    let chosen = candidates.first().ok_or_else(|| Error::NoPlatform {
        reference: reference.to_string(),
        platform: format!(
            "{os}/{arch}{}",
            variant
                .as_ref()
                .map(|v| format!("/{v}"))
                .unwrap_or_default()
        ),
        available: index
            .manifests()
            .iter()
            .filter_map(|m| {
                m.platform()
                    .as_ref()
                    .map(|p| format!("{}/{}", p.os(), p.architecture()))
            })
            .collect::<Vec<_>>()
            .join(", "),
    })?;
    let digest = chosen.digest().to_string();
    let by_digest = oci_client::Reference::with_digest(
        oref.registry().to_owned(),
        oref.repository().to_owned(),
        digest.clone(),
    );
    let (mbytes, mdigest) =
        fetch_manifest(client, endpoint, &by_digest, auth, Some(&digest)).await?;
    let manifest: ImageManifest =
        serde_json::from_slice(&mbytes).map_err(|e| bad("manifest", &mdigest, e))?;
    Ok((top_digest, mdigest, mbytes, manifest))
}

/// Feeds the blocking unpacker from the async download.
struct ChannelReader {
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Copies everything read into the content store; at EOF verifies and commits the blob, so
/// a corrupt blob surfaces as a read error before the unpacker can publish its snapshot.
struct TeeReader {
    inner: ChannelReader,
    ingest: Option<Ingest>,
    committed: Option<std::result::Result<(), content::Error>>,
}

impl Read for TeeReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 {
            if let Some(ingest) = self.ingest.take() {
                let outcome = ingest.commit().map(drop);
                let failed = outcome.as_ref().err().map(ToString::to_string);
                self.committed = Some(outcome);
                if let Some(message) = failed {
                    return Err(std::io::Error::other(message));
                }
            }
            return Ok(0);
        }
        if let Some(ingest) = self.ingest.as_mut() {
            std::io::Write::write_all(ingest, &buf[..n])?;
        }
        Ok(n)
    }
}

impl TeeReader {
    /// Reads to EOF (committing the blob) and reports how the commit went.
    fn finish(mut self) -> std::result::Result<(), content::Error> {
        let _ = std::io::copy(&mut self, &mut std::io::sink());
        match self.committed.take() {
            Some(outcome) => outcome,
            None => Ok(()),
        }
    }
}

struct LayerJob {
    descriptor: OciDescriptor,
    diff_id: String,
    chain_id: String,
    parent: Option<String>,
    need_snapshot: bool,
    need_blob: bool,
}

/// Pulls `request`, reporting progress through `progress`.
pub async fn pull(
    images: Arc<Images>,
    request: PullRequest,
    unpack: UnpackOptions,
    max_parallel: usize,
    progress: impl Fn(PullEvent) + Send + Sync + 'static,
) -> Result<PullResult> {
    let reference = Reference::parse(&request.reference)?;
    let platform = match &request.platform {
        Some(p) => parse_platform(p)?,
        None => host_platform(),
    };
    let auth = oci_auth(&request.auth);
    let started = std::time::Instant::now();
    let resolved = resolve(&images, &reference, &auth, &platform).await?;
    let Resolved {
        endpoint,
        client,
        oref,
        top_digest,
        manifest_digest,
        manifest_bytes,
        manifest,
    } = resolved;

    // Config: small, fetched whole and verified.
    let config_desc = manifest.config();
    let config_digest = config_desc.digest().to_string();
    let mut config_bytes = Vec::new();
    let oci_config_desc = OciDescriptor {
        media_type: config_desc.media_type().to_string(),
        digest: config_digest.clone(),
        size: config_desc.size() as i64,
        urls: None,
        annotations: None,
        artifact_type: None,
    };
    let stored_config = {
        let imgs = Arc::clone(&images);
        let d = config_digest.clone();
        tokio::task::spawn_blocking(move || imgs.content.read(&d).ok())
            .await
            .map_err(|e| Error::Task(e.to_string()))?
    };
    if let Some(stored) = stored_config {
        config_bytes = stored;
    } else {
        client
            .pull_blob(&oref, &oci_config_desc, &mut config_bytes)
            .await
            .map_err(|e| registry_error(&endpoint, e))?;
    }
    if digest_of(&config_bytes) != config_digest {
        return Err(bad(
            "config",
            &config_digest,
            "content does not match its digest",
        ));
    }
    let config: ImageConfiguration =
        serde_json::from_slice(&config_bytes).map_err(|e| bad("config", &config_digest, e))?;
    let diff_ids: Vec<String> = config.rootfs().diff_ids().clone();
    if diff_ids.len() != manifest.layers().len() {
        return Err(bad(
            "manifest",
            &manifest_digest,
            format!(
                "{} layers but the config lists {} diff ids",
                manifest.layers().len(),
                diff_ids.len()
            ),
        ));
    }
    let chains = snapshot::chain_ids(&diff_ids);
    {
        let imgs = Arc::clone(&images);
        let (cb, mb) = (config_bytes.clone(), manifest_bytes.clone());
        tokio::task::spawn_blocking(move || -> Result<()> {
            imgs.content.write(&cb)?;
            imgs.content.write(&mb)?;
            Ok(())
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))??;
    }

    // What is already on disk: database and stat calls, so off the async workers.
    let presence: Vec<(bool, bool)> = {
        let imgs = Arc::clone(&images);
        let chains = chains.clone();
        let digests: Vec<String> = manifest
            .layers()
            .iter()
            .map(|l| l.digest().to_string())
            .collect();
        tokio::task::spawn_blocking(move || -> Result<Vec<(bool, bool)>> {
            chains
                .iter()
                .zip(&digests)
                .map(|(chain, digest)| {
                    Ok((
                        imgs.snapshots.get(chain)?.is_none(),
                        !imgs.content.contains(digest),
                    ))
                })
                .collect()
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))??
    };
    let mut jobs = Vec::new();
    for (i, layer) in manifest.layers().iter().enumerate() {
        let digest = layer.digest().to_string();
        let (need_snapshot, need_blob) = presence[i];
        jobs.push(LayerJob {
            descriptor: OciDescriptor {
                media_type: layer.media_type().to_string(),
                digest,
                size: layer.size() as i64,
                urls: None,
                annotations: None,
                artifact_type: None,
            },
            diff_id: diff_ids[i].clone(),
            chain_id: chains[i].clone(),
            parent: i.checked_sub(1).map(|p| chains[p].clone()),
            need_snapshot,
            need_blob,
        });
    }
    let _hold = images.inflight.hold(
        jobs.iter()
            .flat_map(|j| [j.descriptor.digest.clone(), j.chain_id.clone()])
            .chain([config_digest.clone(), manifest_digest.clone()])
            .collect(),
    );
    progress(PullEvent::Resolved {
        reference: reference.to_string(),
        digest: top_digest.clone(),
        layers: jobs
            .iter()
            .map(|j| LayerInfo {
                digest: j.descriptor.digest.clone(),
                size: j.descriptor.size.max(0) as u64,
            })
            .collect(),
    });

    let progress = Arc::new(progress);
    let permits = Arc::new(tokio::sync::Semaphore::new(max_parallel.max(1)));
    // Set when one layer fails: the others stop at their next chunk. Tasks are not aborted,
    // because their blocking unpackers would run on unobserved and could publish snapshots
    // after the cleanup below.
    let (cancel_tx, _) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let mut present = 0u32;
    for job in jobs.iter() {
        let total = job.descriptor.size.max(0) as u64;
        if !job.need_snapshot && !job.need_blob {
            present += 1;
            progress(PullEvent::Layer {
                digest: job.descriptor.digest.clone(),
                phase: LayerPhase::AlreadyExists,
                current: total,
                total,
            });
            continue;
        }
        progress(PullEvent::Layer {
            digest: job.descriptor.digest.clone(),
            phase: LayerPhase::Waiting,
            current: 0,
            total,
        });
        let job = LayerJob {
            descriptor: job.descriptor.clone(),
            diff_id: job.diff_id.clone(),
            chain_id: job.chain_id.clone(),
            parent: job.parent.clone(),
            ..*job
        };
        let (images, client, oref, endpoint, progress, permits) = (
            Arc::clone(&images),
            Arc::clone(&client),
            oref.clone(),
            endpoint.clone(),
            Arc::clone(&progress),
            Arc::clone(&permits),
        );
        let cancel = cancel_tx.subscribe();
        let layer_span = tracing::info_span!(
            "image.pull.layer",
            digest = %job.descriptor.digest,
            size = job.descriptor.size,
        );
        let fetched = async move {
            let _permit = permits
                .acquire_owned()
                .await
                .map_err(|e| Error::Task(e.to_string()))?;
            let cancelled = *cancel.borrow();
            if cancelled {
                return Err(Error::Task("pull cancelled".into()));
            }
            let source = Source {
                client,
                oref,
                endpoint,
            };
            fetch_layer(images, source, job, unpack, progress.as_ref(), cancel).await
        };
        tasks.spawn(tracing::Instrument::instrument(fetched, layer_span));
    }
    let mut downloaded = 0u32;
    let mut bytes_downloaded = 0u64;
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(bytes)) => {
                downloaded += 1;
                bytes_downloaded += bytes;
            }
            Ok(Err(e)) => {
                if first_error.is_none() {
                    first_error = Some(e);
                    cancel_tx.send_replace(true);
                }
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                if first_error.is_none() {
                    first_error = Some(Error::Task(e.to_string()));
                }
            }
        }
    }
    if let Some(e) = first_error {
        // Leave nothing of a failed pull behind but layers other images already share.
        let chains: Vec<String> = jobs
            .iter()
            .filter(|j| j.need_snapshot)
            .map(|j| j.chain_id.clone())
            .collect();
        let blobs: Vec<String> = jobs
            .iter()
            .filter(|j| j.need_blob)
            .map(|j| j.descriptor.digest.clone())
            .chain([config_digest.clone(), manifest_digest.clone()])
            .collect();
        let imgs = Arc::clone(&images);
        let cleaned =
            tokio::task::spawn_blocking(move || imgs.discard_unreferenced(&chains, &blobs)).await;
        if let Ok(Err(clean_err)) = cleaned {
            warn!("cleaning up after a failed pull: {clean_err}");
        }
        return Err(e);
    }

    let sizes: Vec<u64> = {
        let imgs = Arc::clone(&images);
        let chains: Vec<String> = jobs.iter().map(|j| j.chain_id.clone()).collect();
        tokio::task::spawn_blocking(move || -> Result<Vec<u64>> {
            chains
                .iter()
                .map(|c| {
                    imgs.snapshots
                        .get(c)?
                        .map(|s| s.size)
                        .ok_or_else(|| Error::Task(format!("layer {c} vanished after unpacking")))
                })
                .collect()
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))??
    };
    let mut layers = Vec::new();
    let size: u64 = sizes.iter().sum();
    for job in &jobs {
        layers.push(LayerRecord {
            digest: job.descriptor.digest.clone(),
            media_type: job.descriptor.media_type.clone(),
            size: job.descriptor.size.max(0) as u64,
            diff_id: job.diff_id.clone(),
            chain_id: job.chain_id.clone(),
        });
    }
    let record = ImageRecord {
        id: config_digest.clone(),
        manifest_digest: manifest_digest.clone(),
        manifest_media_type: manifest
            .media_type()
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".into()),
        layers,
        os: config.os().to_string(),
        architecture: config.architecture().to_string(),
        variant: config.variant().clone(),
        created: config.created().clone(),
        size,
    };
    let mut names = vec![format!("{}@{top_digest}", reference.name())];
    if reference.digest.is_none()
        && let Some(tagged) = reference.tagged()
    {
        names.push(tagged);
    }
    {
        let imgs = Arc::clone(&images);
        let record = record.clone();
        tokio::task::spawn_blocking(move || imgs.record(&record, &names))
            .await
            .map_err(|e| Error::Task(e.to_string()))??;
    }
    info!(
        reference = %reference,
        id = %config_digest,
        layers = jobs.len(),
        downloaded,
        bytes = bytes_downloaded,
        ms = started.elapsed().as_millis() as u64,
        "pulled"
    );
    let result = PullResult {
        id: config_digest,
        reference: reference.to_string(),
        digest: top_digest,
        layers_downloaded: downloaded,
        layers_present: present,
        bytes_downloaded,
    };
    progress(PullEvent::Done(result.clone()));
    Ok(result)
}

/// Where a layer is downloaded from.
struct Source {
    client: Arc<oci_client::Client>,
    oref: oci_client::Reference,
    endpoint: Endpoint,
}

/// Downloads one layer and unpacks it as it arrives. Returns the bytes downloaded.
async fn fetch_layer(
    images: Arc<Images>,
    source: Source,
    job: LayerJob,
    unpack: UnpackOptions,
    progress: &(dyn Fn(PullEvent) + Send + Sync),
    mut cancel: tokio::sync::watch::Receiver<bool>,
) -> Result<u64> {
    let total = job.descriptor.size.max(0) as u64;
    let digest = job.descriptor.digest.clone();
    progress(PullEvent::Layer {
        digest: digest.clone(),
        phase: LayerPhase::Downloading,
        current: 0,
        total,
    });
    let Source {
        client,
        oref,
        endpoint,
    } = source;
    let sized = client
        .pull_blob_stream(&oref, &job.descriptor)
        .await
        .map_err(|e| registry_error(&endpoint, e))?;
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(32);
    let worker = {
        let images = Arc::clone(&images);
        let digest = digest.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let ingest = if job.need_blob {
                Some(images.content.ingest(&digest, Some(total))?)
            } else {
                None
            };
            let mut tee = TeeReader {
                inner: ChannelReader {
                    rx,
                    current: Bytes::new(),
                },
                ingest,
                committed: None,
            };
            let made = if job.need_snapshot {
                images
                    .snapshots
                    .unpack_layer(
                        &job.chain_id,
                        job.parent.as_deref(),
                        &job.diff_id,
                        &mut tee,
                        unpack,
                    )
                    .map(Some)
            } else {
                Ok(None)
            };
            let committed = tee.finish();
            match (made, committed) {
                (Ok(_), Ok(())) => Ok(()),
                (Ok(Some(_)), Err(e)) => {
                    let _ = images.snapshots.remove(&job.chain_id);
                    Err(e.into())
                }
                (Ok(None), Err(e)) => Err(e.into()),
                // A blob that fails verification shows up in the unpacker as a read error:
                // report the verification failure, which says what really went wrong.
                (Err(_), Err(blob)) => Err(blob.into()),
                (Err(e), Ok(())) => Err(e.into()),
            }
        })
    };
    let mut stream = sized.stream;
    let mut received = 0u64;
    let mut last_report = 0u64;
    let mut stream_error = None;
    loop {
        let chunk = tokio::select! {
            chunk = stream.next() => chunk,
            () = async { drop(cancel.wait_for(|c| *c).await) } => {
                let _ = tx.send(Err(std::io::Error::other("pull cancelled"))).await;
                drop(tx);
                let _ = worker.await;
                return Err(Error::Task("pull cancelled".into()));
            }
        };
        let Some(chunk) = chunk else { break };
        match chunk {
            Ok(bytes) => {
                received += bytes.len() as u64;
                if tx.send(Ok(bytes)).await.is_err() {
                    break; // the unpacker stopped: its error is reported below
                }
                if received - last_report >= 1 << 20 {
                    last_report = received;
                    progress(PullEvent::Layer {
                        digest: digest.clone(),
                        phase: LayerPhase::Downloading,
                        current: received,
                        total,
                    });
                }
            }
            Err(e) => {
                let message = e.to_string();
                let _ = tx.send(Err(std::io::Error::other(message.clone()))).await;
                stream_error = Some(message);
                break;
            }
        }
    }
    drop(tx);
    let outcome = worker.await.map_err(|e| Error::Task(e.to_string()))?;
    if let Some(message) = stream_error {
        warn!(layer = %digest, "download failed: {message}");
        return Err(Error::Registry {
            registry: endpoint.host.clone(),
            message: format!("downloading layer {digest}: {message}"),
            kind: berth_api::ErrorKind::Unavailable,
        });
    }
    outcome?;
    progress(PullEvent::Layer {
        digest,
        phase: LayerPhase::Done,
        current: received,
        total,
    });
    Ok(received)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms() {
        assert_eq!(
            parse_platform("linux/arm64/v8").unwrap(),
            ("linux".into(), "arm64".into(), Some("v8".into()))
        );
        assert_eq!(parse_platform("linux/amd64").unwrap().1, "amd64");
        assert!(parse_platform("linux").is_err());
        assert!(parse_platform("linux//v8").is_err());
        assert_eq!(host_platform().0, "linux");
    }

    #[test]
    fn tee_commits_at_eof_and_reports_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let cs = crate::content::ContentStore::open(dir.path()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let run = |payload: &'static [u8], claimed: &[u8]| {
            let (tx, rx) = mpsc::channel(4);
            rt.block_on(async {
                tx.send(Ok(Bytes::from_static(payload))).await.unwrap();
            });
            drop(tx);
            let mut tee = TeeReader {
                inner: ChannelReader {
                    rx,
                    current: Bytes::new(),
                },
                ingest: Some(cs.ingest(&digest_of(claimed), None).unwrap()),
                committed: None,
            };
            let mut out = Vec::new();
            let read = tee.read_to_end(&mut out);
            (read.is_ok(), tee.finish().is_ok())
        };
        assert_eq!(run(b"layer", b"layer"), (true, true));
        assert!(cs.contains(&digest_of(b"layer")));
        assert_eq!(run(b"evil", b"good"), (false, false));
        assert!(!cs.contains(&digest_of(b"good")));
    }
}
