//! Images: references, registry pulls (oci-client), manifests and configs (oci-spec), and
//! the local image index (which image ids exist, which references point at them).

pub mod archive;
pub mod pull;
pub mod push;
/// Image references (shared with the CLI, so it lives in berth-api).
pub use berth_api::reference;
pub mod registry;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use berth_api::ErrorKind;
use berth_api::image::{
    ImageDetails, ImageFilter, ImageRunConfig, ImageSummary, LayerDescriptor, RemovedImage,
};
use rusqlite::OptionalExtension;
use serde::{Deserialize, Serialize};

use crate::content::{self, ContentStore};
use crate::snapshot::{self, Snapshotter};
use crate::store::{self, Store, q};
pub use reference::Reference;

/// Image failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The reference is malformed.
    #[error(transparent)]
    Reference(#[from] reference::ParseError),
    /// No image matches.
    #[error("no such image: {0}")]
    NotFound(String),
    /// An id prefix matches several images.
    #[error("image id prefix {0:?} is ambiguous")]
    Ambiguous(String),
    /// The registry refused or failed.
    #[error("registry {registry}: {message}")]
    Registry {
        /// Registry host.
        registry: String,
        /// What happened.
        message: String,
        /// Classification.
        kind: ErrorKind,
    },
    /// A manifest, index or config is malformed or unsupported.
    #[error("{what} {digest}: {message}")]
    BadDocument {
        /// `manifest`, `index`, `config`.
        what: &'static str,
        /// Its digest.
        digest: String,
        /// What is wrong.
        message: String,
    },
    /// No manifest in the index matches the platform.
    #[error("{reference}: no image for platform {platform} (available: {available})")]
    NoPlatform {
        /// The reference.
        reference: String,
        /// Requested platform.
        platform: String,
        /// What the index offers.
        available: String,
    },
    /// The operation conflicts with the image's state (e.g. several tags without force).
    #[error("{0}")]
    Conflict(String),
    /// The content store failed.
    #[error(transparent)]
    Content(#[from] content::Error),
    /// The snapshotter failed.
    #[error(transparent)]
    Snapshot(#[from] snapshot::Error),
    /// The state database failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// A worker task died.
    #[error("image task failed: {0}")]
    Task(String),
}

impl Error {
    /// How the API reports this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Reference(_) => ErrorKind::InvalidArgument,
            Error::NotFound(_) | Error::NoPlatform { .. } => ErrorKind::NotFound,
            Error::Ambiguous(_) => ErrorKind::InvalidArgument,
            Error::Registry { kind, .. } => *kind,
            Error::BadDocument { .. } => ErrorKind::InvalidArgument,
            Error::Conflict(_) => ErrorKind::FailedPrecondition,
            Error::Content(e) => e.kind(),
            Error::Snapshot(e) => e.kind(),
            Error::Store(e) => e.kind(),
            Error::Task(_) => ErrorKind::Internal,
        }
    }
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, Error>;

/// One stored layer of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Compressed digest (the blob).
    pub digest: String,
    /// Media type of the blob.
    pub media_type: String,
    /// Compressed size.
    pub size: u64,
    /// Uncompressed digest.
    pub diff_id: String,
    /// Chain id (the snapshot).
    pub chain_id: String,
}

/// What berth stores about an image (the `doc` column).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Config digest.
    pub id: String,
    /// Manifest digest.
    pub manifest_digest: String,
    /// Manifest media type.
    pub manifest_media_type: String,
    /// Layers, bottom first.
    pub layers: Vec<LayerRecord>,
    /// OS.
    pub os: String,
    /// Architecture.
    pub architecture: String,
    /// Variant.
    pub variant: Option<String>,
    /// Creation time from the config.
    pub created: Option<String>,
    /// Uncompressed bytes of all layers.
    pub size: u64,
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The image subsystem: content, snapshots, index, registries.
#[derive(Debug)]
pub struct Images {
    /// Blobs.
    pub content: ContentStore,
    /// Unpacked layers.
    pub snapshots: Snapshotter,
    store: Arc<Store>,
    /// Registry clients and settings.
    pub registries: registry::Registries,
    /// Per-layer work in flight, so concurrent pulls of one layer do it once.
    pub(crate) inflight: Arc<pull::Inflight>,
}

impl Images {
    /// Opens the image subsystem under `data_root`. Blocking.
    pub fn open(
        data_root: &std::path::Path,
        store: Arc<Store>,
        registries: registry::Registries,
    ) -> Result<Images> {
        Ok(Images {
            content: ContentStore::open(data_root)?,
            snapshots: Snapshotter::open(data_root, Arc::clone(&store))?,
            store,
            registries,
            inflight: Arc::default(),
        })
    }

    /// Records an image and points `names` at it, in one transaction. Blocking.
    pub fn record(&self, image: &ImageRecord, names: &[String]) -> Result<()> {
        let doc = serde_json::to_string(image).map_err(|e| Error::Task(e.to_string()))?;
        self.store.with_conn(|c| {
            let tx = c.unchecked_transaction().map_err(q("begin"))?;
            tx.execute(
                "INSERT INTO images (id, created_at, size_bytes, doc) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE SET doc = excluded.doc, size_bytes = excluded.size_bytes",
                rusqlite::params![image.id, now_secs(), image.size as i64, doc],
            )
            .map_err(q("record image"))?;
            for name in names {
                tx.execute(
                    "INSERT INTO image_refs (name, image_id, created_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name) DO UPDATE SET image_id = excluded.image_id",
                    rusqlite::params![name, image.id, now_secs()],
                )
                .map_err(q("record reference"))?;
            }
            tx.commit().map_err(q("commit"))
        })?;
        Ok(())
    }

    fn record_of(&self, id: &str) -> Result<Option<ImageRecord>> {
        let id = id.to_owned();
        let doc: Option<String> = self.store.with_conn(|c| {
            c.query_row("SELECT doc FROM images WHERE id = ?1", [&id], |r| r.get(0))
                .optional()
                .map_err(q("load image"))
        })?;
        doc.map(|d| {
            serde_json::from_str(&d).map_err(|e| Error::Task(format!("corrupt image record: {e}")))
        })
        .transpose()
    }

    pub(crate) fn refs_of(&self, id: &str) -> Result<Vec<String>> {
        let id = id.to_owned();
        Ok(self.store.with_conn(|c| {
            let mut s = c
                .prepare("SELECT name FROM image_refs WHERE image_id = ?1 ORDER BY name")
                .map_err(q("list references"))?;
            s.query_map([&id], |r| r.get(0))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
                .map_err(q("list references"))
        })?)
    }

    /// Finds an image by reference, full id, or unique id prefix. Blocking.
    pub fn resolve(&self, name: &str) -> Result<ImageRecord> {
        let hex_like = name.strip_prefix("sha256:").unwrap_or(name);
        if !hex_like.is_empty()
            && hex_like.len() <= 64
            && hex_like.bytes().all(|c| c.is_ascii_hexdigit())
        {
            let pattern = format!("sha256:{}%", hex_like.to_ascii_lowercase());
            let ids: Vec<String> = self.store.with_conn(|c| {
                let mut s = c
                    .prepare("SELECT id FROM images WHERE id LIKE ?1 LIMIT 2")
                    .map_err(q("find image"))?;
                s.query_map([&pattern], |r| r.get(0))
                    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
                    .map_err(q("find image"))
            })?;
            match ids.as_slice() {
                [one] => {
                    return self
                        .record_of(one)?
                        .ok_or_else(|| Error::NotFound(name.to_owned()));
                }
                [_, _] => return Err(Error::Ambiguous(name.to_owned())),
                _ => {}
            }
        }
        let reference = Reference::parse(name).map_err(|_| Error::NotFound(name.to_owned()))?;
        let key = match (&reference.digest, reference.tagged()) {
            (Some(d), _) => format!("{}@{d}", reference.name()),
            (None, Some(t)) => t,
            (None, None) => return Err(Error::NotFound(name.to_owned())),
        };
        let id: Option<String> = self.store.with_conn(|c| {
            c.query_row(
                "SELECT image_id FROM image_refs WHERE name = ?1",
                [&key],
                |r| r.get(0),
            )
            .optional()
            .map_err(q("find reference"))
        })?;
        match id {
            Some(id) => self
                .record_of(&id)?
                .ok_or_else(|| Error::NotFound(name.to_owned())),
            None => Err(Error::NotFound(name.to_owned())),
        }
    }

    fn config_of(&self, image: &ImageRecord) -> Result<oci_spec::image::ImageConfiguration> {
        let bytes = self.content.read(&image.id)?;
        serde_json::from_slice(&bytes).map_err(|e| Error::BadDocument {
            what: "config",
            digest: image.id.clone(),
            message: e.to_string(),
        })
    }

    fn familiar(refs: Vec<String>) -> (Vec<String>, Vec<String>) {
        let mut tags = Vec::new();
        let mut digests = Vec::new();
        for r in refs {
            let Ok(parsed) = Reference::parse(&r) else {
                continue;
            };
            match (&parsed.digest, &parsed.tag) {
                (Some(d), _) => digests.push(format!("{}@{d}", parsed.familiar_name())),
                (None, Some(t)) => tags.push(format!("{}:{t}", parsed.familiar_name())),
                _ => {}
            }
        }
        (tags, digests)
    }

    /// Lists images matching `filter`. Blocking.
    pub fn list(&self, filter: &ImageFilter) -> Result<Vec<ImageSummary>> {
        let rows: Vec<(String, Option<i64>)> = self.store.with_conn(|c| {
            let mut s = c
                .prepare(
                    "SELECT i.id, (SELECT count(*) FROM containers WHERE image_id = i.id)
                     FROM images i ORDER BY i.created_at DESC, i.id",
                )
                .map_err(q("list images"))?;
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(q("list images"))
        })?;
        let wanted = filter
            .reference
            .as_deref()
            .map(|r| Reference::parse(r).map(|p| (p, r.contains(':') && !r.ends_with(':'))))
            .transpose()?;
        let mut out = Vec::new();
        for (id, containers) in rows {
            let Some(image) = self.record_of(&id)? else {
                continue;
            };
            let refs = self.refs_of(&id)?;
            if let Some((want, has_tag)) = &wanted {
                let matches = refs
                    .iter()
                    .filter_map(|r| Reference::parse(r).ok())
                    .any(|r| r.name() == want.name() && (!has_tag || r.tag == want.tag));
                if !matches {
                    continue;
                }
            }
            let (repo_tags, repo_digests) = Self::familiar(refs);
            if let Some(dangling) = filter.dangling
                && dangling != repo_tags.is_empty()
            {
                continue;
            }
            let labels = self
                .config_of(&image)
                .ok()
                .and_then(|c| c.config().as_ref().and_then(|c| c.labels().clone()))
                .unwrap_or_default();
            let label_ok = filter.label.iter().all(|f| match f.split_once('=') {
                Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
                None => labels.contains_key(f),
            });
            if !label_ok {
                continue;
            }
            out.push(ImageSummary {
                id: image.id.clone(),
                repo_tags,
                repo_digests,
                created: image.created.clone(),
                size: image.size,
                labels: labels.into_iter().collect(),
                containers: containers.unwrap_or(0).max(0) as u64,
            });
        }
        Ok(out)
    }

    /// Details of one image. Blocking.
    pub fn inspect(&self, name: &str) -> Result<ImageDetails> {
        let image = self.resolve(name)?;
        let config = self.config_of(&image)?;
        let (repo_tags, repo_digests) = Self::familiar(self.refs_of(&image.id)?);
        let run = config.config().clone().unwrap_or_default();
        let mut lower_dirs = Vec::new();
        for layer in image.layers.iter().rev() {
            if let Some(snap) = self.snapshots.get(&layer.chain_id)? {
                lower_dirs.push(self.snapshots.fs_path(snap.id).display().to_string());
            }
        }
        Ok(ImageDetails {
            lower_dirs,
            id: image.id.clone(),
            repo_tags,
            repo_digests,
            manifest_digest: image.manifest_digest.clone(),
            manifest_media_type: image.manifest_media_type.clone(),
            created: image.created.clone(),
            author: config.author().clone(),
            os: image.os.clone(),
            architecture: image.architecture.clone(),
            variant: image.variant.clone(),
            size: image.size,
            config: ImageRunConfig {
                user: run.user().clone(),
                env: run.env().clone().unwrap_or_default(),
                entrypoint: run.entrypoint().clone(),
                cmd: run.cmd().clone(),
                working_dir: run.working_dir().clone(),
                exposed_ports: run.exposed_ports().clone().unwrap_or_default(),
                volumes: run.volumes().clone().unwrap_or_default(),
                labels: run
                    .labels()
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .collect::<BTreeMap<_, _>>(),
                stop_signal: run.stop_signal().clone(),
            },
            rootfs_layers: image.layers.iter().map(|l| l.diff_id.clone()).collect(),
            layers: image
                .layers
                .iter()
                .map(|l| LayerDescriptor {
                    digest: l.digest.clone(),
                    media_type: l.media_type.clone(),
                    size: l.size,
                    diff_id: l.diff_id.clone(),
                })
                .collect(),
        })
    }

    /// `docker history`: the config's history, newest first, with layer sizes. Blocking.
    pub fn history(&self, name: &str) -> Result<Vec<berth_api::image::HistoryEntry>> {
        let image = self.resolve(name)?;
        let config = self.config_of(&image)?;
        let sizes: Vec<u64> = image
            .layers
            .iter()
            .map(|l| {
                self.snapshots
                    .get(&l.chain_id)
                    .ok()
                    .flatten()
                    .map_or(0, |s| s.size)
            })
            .collect();
        let mut layer = 0;
        let mut out = Vec::new();
        let history = config.history().clone().unwrap_or_default();
        if history.is_empty() {
            // Images without history (imports, hand-made ones): one row per layer.
            for size in &sizes {
                out.push(berth_api::image::HistoryEntry {
                    created: image.created.clone(),
                    created_by: None,
                    size: *size,
                    comment: None,
                    empty_layer: false,
                });
            }
        }
        for h in history {
            let empty = h.empty_layer().unwrap_or(false);
            let size = if empty {
                0
            } else {
                let s = sizes.get(layer).copied().unwrap_or(0);
                layer += 1;
                s
            };
            out.push(berth_api::image::HistoryEntry {
                created: h.created().clone(),
                created_by: h.created_by().clone(),
                size,
                comment: h.comment().clone(),
                empty_layer: empty,
            });
        }
        out.reverse();
        Ok(out)
    }

    /// Deletes dangling (untagged) images, or every unused one with `all`, then garbage.
    /// Blocking.
    pub fn prune(&self, all: bool) -> Result<berth_api::image::PruneReport> {
        let candidates: Vec<String> = self.store.with_conn(|c| {
            let sql = if all {
                "SELECT id FROM images WHERE id NOT IN
                    (SELECT image_id FROM containers WHERE image_id IS NOT NULL)"
            } else {
                "SELECT id FROM images WHERE id NOT IN
                    (SELECT image_id FROM image_refs WHERE name NOT LIKE '%@%')
                 AND id NOT IN (SELECT image_id FROM containers WHERE image_id IS NOT NULL)"
            };
            let mut s = c.prepare(sql).map_err(q("find prunable images"))?;
            s.query_map([], |r| r.get(0))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
                .map_err(q("find prunable images"))
        })?;
        for id in &candidates {
            let id = id.clone();
            self.store.with_conn(|c| {
                let tx = c.unchecked_transaction().map_err(q("begin"))?;
                tx.execute("DELETE FROM image_refs WHERE image_id = ?1", [&id])
                    .map_err(q("untag"))?;
                tx.execute("DELETE FROM images WHERE id = ?1", [&id])
                    .map_err(q("delete image"))?;
                tx.commit().map_err(q("commit"))
            })?;
        }
        let (blobs, snaps) = self.collect_garbage()?;
        Ok(berth_api::image::PruneReport {
            images_deleted: candidates,
            space_reclaimed: blobs + snaps,
        })
    }

    /// Points `target` at the image `source` resolves to. Blocking.
    pub fn tag(&self, source: &str, target: &str) -> Result<()> {
        let image = self.resolve(source)?;
        let target = Reference::parse(target)?;
        if target.digest.is_some() {
            return Err(Error::Reference(reference::ParseError {
                input: target.to_string(),
                reason: "a tag target cannot carry a digest",
            }));
        }
        let name = target
            .tagged()
            .unwrap_or_else(|| format!("{}:{}", target.name(), reference::DEFAULT_TAG));
        self.store.with_conn(|c| {
            c.execute(
                "INSERT INTO image_refs (name, image_id, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET image_id = excluded.image_id",
                rusqlite::params![name, image.id, now_secs()],
            )
            .map_err(q("tag image"))
        })?;
        Ok(())
    }

    /// `docker rmi`: removes a reference, and the image once unreferenced. Blocking.
    pub fn remove(&self, name: &str, force: bool) -> Result<Vec<RemovedImage>> {
        let image = self.resolve(name)?;
        let refs = self.refs_of(&image.id)?;
        let by_id = image.id == name
            || image
                .id
                .strip_prefix("sha256:")
                .is_some_and(|h| h.starts_with(name.trim_start_matches("sha256:")));
        let users: i64 = {
            let id = image.id.clone();
            self.store.with_conn(|c| {
                c.query_row(
                    "SELECT count(*) FROM containers WHERE image_id = ?1",
                    [&id],
                    |r| r.get(0),
                )
                .map_err(q("count image users"))
            })?
        };
        let mut removed = Vec::new();
        let doomed_refs: Vec<String> = if by_id {
            let tags = refs.iter().filter(|r| !r.contains('@')).count();
            if tags > 1 && !force {
                return Err(Error::Conflict(format!(
                    "image {} is referenced by {tags} tags: remove them by name or use force",
                    image.id
                )));
            }
            refs.clone()
        } else {
            let parsed = Reference::parse(name)?;
            let key = match (&parsed.digest, parsed.tagged()) {
                (Some(d), _) => format!("{}@{d}", parsed.name()),
                (None, Some(t)) => t,
                (None, None) => return Err(Error::NotFound(name.to_owned())),
            };
            // Digest references of a repository go with that repository's last tag, and
            // every digest reference goes with the image's last tag.
            let repo_prefix = format!("{}@", parsed.name());
            let tag_prefix = format!("{}:", parsed.name());
            let tags_left = |prefix: Option<&str>| {
                refs.iter()
                    .filter(|r| !r.contains('@') && **r != key)
                    .filter(|r| prefix.is_none_or(|p| r.starts_with(p)))
                    .count()
            };
            let mut doomed = vec![key.clone()];
            if tags_left(None) == 0 {
                doomed.extend(
                    refs.iter()
                        .filter(|r| r.contains('@') && **r != key)
                        .cloned(),
                );
            } else if tags_left(Some(&tag_prefix)) == 0 {
                doomed.extend(
                    refs.iter()
                        .filter(|r| r.starts_with(&repo_prefix) && **r != key)
                        .cloned(),
                );
            }
            doomed
        };
        let deletes_image = refs.iter().all(|r| doomed_refs.contains(r));
        if deletes_image && users > 0 && !force {
            return Err(Error::Conflict(format!(
                "image {} is used by {users} container(s): remove them first or use force",
                image.id
            )));
        }
        let id = image.id.clone();
        self.store.with_conn(|c| {
            let tx = c.unchecked_transaction().map_err(q("begin"))?;
            for r in &doomed_refs {
                tx.execute("DELETE FROM image_refs WHERE name = ?1", [r])
                    .map_err(q("untag"))?;
            }
            if deletes_image && users == 0 {
                tx.execute("DELETE FROM images WHERE id = ?1", [&id])
                    .map_err(q("delete image"))?;
            }
            tx.commit().map_err(q("commit"))
        })?;
        for r in doomed_refs {
            let shown = Reference::parse(&r)
                .map(|p| match (&p.digest, &p.tag) {
                    (Some(d), _) => format!("{}@{d}", p.familiar_name()),
                    (None, Some(t)) => format!("{}:{t}", p.familiar_name()),
                    _ => r.clone(),
                })
                .unwrap_or(r);
            removed.push(RemovedImage::Untagged(shown));
        }
        if deletes_image && users == 0 {
            removed.push(RemovedImage::Deleted(image.id.clone()));
            self.collect_garbage()?;
        }
        Ok(removed)
    }

    /// After a failed pull: drops the snapshots and blobs it made that no image references.
    /// Blocking.
    pub fn discard_unreferenced(&self, chains: &[String], digests: &[String]) -> Result<()> {
        let (blobs, snapshots) = self.referenced()?;
        for chain in chains.iter().filter(|c| !snapshots.contains(*c)) {
            self.snapshots.remove(chain)?;
        }
        for digest in digests.iter().filter(|d| !blobs.contains(*d)) {
            self.content.delete(digest)?;
        }
        Ok(())
    }

    /// Blobs and snapshot chain ids some image references.
    fn referenced(&self) -> Result<(HashSet<String>, HashSet<String>)> {
        let docs: Vec<String> = self.store.with_conn(|c| {
            let mut s = c
                .prepare("SELECT doc FROM images")
                .map_err(q("list images"))?;
            s.query_map([], |r| r.get(0))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
                .map_err(q("list images"))
        })?;
        let mut blobs = HashSet::new();
        let mut chains = HashSet::new();
        for d in docs {
            let Ok(img) = serde_json::from_str::<ImageRecord>(&d) else {
                continue;
            };
            blobs.insert(img.id.clone());
            blobs.insert(img.manifest_digest.clone());
            for l in img.layers {
                blobs.insert(l.digest);
                chains.insert(l.chain_id);
            }
        }
        Ok((blobs, chains))
    }

    /// Deletes blobs and snapshots no image references. Blocking.
    pub fn collect_garbage(&self) -> Result<(u64, u64)> {
        let (blobs, chains) = self.referenced()?;
        let mut freed_blobs = 0;
        for digest in self.content.list()? {
            if !blobs.contains(&digest) && !self.inflight.holds(&digest) {
                freed_blobs += self.content.size(&digest).unwrap_or(0);
                self.content.delete(&digest)?;
            }
        }
        let mut freed_snaps = 0;
        for snap in self.snapshots.list()? {
            if !chains.contains(&snap.chain_id) && !self.inflight.holds(&snap.chain_id) {
                freed_snaps += snap.size;
                self.snapshots.remove(&snap.chain_id)?;
            }
        }
        Ok((freed_blobs, freed_snaps))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images() -> (tempfile::TempDir, Images) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let images = Images::open(dir.path(), store, registry::Registries::default()).unwrap();
        (dir, images)
    }

    fn record(images: &Images, names: &[&str]) -> ImageRecord {
        let config = images.content.write(br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#).unwrap();
        let manifest = images.content.write(b"{}").unwrap();
        let image = ImageRecord {
            id: config,
            manifest_digest: manifest,
            manifest_media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            layers: vec![],
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
            created: None,
            size: 0,
        };
        let names: Vec<String> = names
            .iter()
            .map(|n| Reference::parse(n).unwrap().tagged().unwrap())
            .collect();
        images.record(&image, &names).unwrap();
        image
    }

    #[test]
    fn rmi_refuses_images_in_use_by_containers() {
        let (_dir, images) = images();
        let image = record(&images, &["app:1"]);
        images
            .store
            .with_conn(|c| {
                c.execute(
                    "INSERT INTO containers (id, name, image_id, state, created_at, doc) VALUES ('c1', 'web', ?1, 'exited', 0, '{}')",
                    [&image.id],
                )
                .map_err(|source| store::Error::Query { what: "seed", source })
            })
            .unwrap();
        let err = images.remove("app:1", false).unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err}");
        assert!(err.to_string().contains("used by 1 container"), "{err}");
        // Forced: the reference goes, the image stays for its container.
        let removed = images.remove("app:1", true).unwrap();
        assert_eq!(removed, vec![RemovedImage::Untagged("app:1".into())]);
        assert!(images.resolve(&image.id).is_ok());
        // prune -a leaves it alone too.
        assert!(images.prune(true).unwrap().images_deleted.is_empty());
    }

    #[test]
    fn ids_prefixes_and_ambiguity() {
        let (_dir, images) = images();
        let image = record(&images, &["one:1", "two:2"]);
        let hex = &image.id[7..];
        assert_eq!(images.resolve(&hex[..12]).unwrap().id, image.id);
        assert_eq!(images.resolve(&image.id).unwrap().id, image.id);
        assert!(matches!(images.resolve("nope:1"), Err(Error::NotFound(_))));
        let err = images.remove(&hex[..12], false).unwrap_err();
        assert!(err.to_string().contains("2 tags"), "{err}");
        let removed = images.remove(&hex[..12], true).unwrap();
        assert!(removed.contains(&RemovedImage::Deleted(image.id.clone())));
    }
}
