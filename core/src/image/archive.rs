//! Image archives: `save` writes an OCI image layout tar (with a docker-compatible
//! `manifest.json` beside `index.json`), `load` reads OCI layouts and `docker save` archives,
//! `import` turns a root filesystem tarball into a single-layer image. Archive input is
//! untrusted: only regular files are read, every blob is verified, and layers go through the
//! same safe unpacker as pulls. Blocking.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use serde_json::{Value, json};
use sha2::Digest as _;

use super::pull::host_platform;
use super::reference::Reference;
use super::{Error, ImageRecord, Images, LayerRecord, Result};
use crate::snapshot::{self, UnpackOptions};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Metadata files of an archive are small; anything larger is refused.
const MAX_METADATA: u64 = 32 * 1024 * 1024;

fn bad(what: &'static str, digest: &str, message: impl ToString) -> Error {
    Error::BadDocument {
        what,
        digest: digest.to_owned(),
        message: message.to_string(),
    }
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::BadDocument {
        what: "archive",
        digest: path.display().to_string(),
        message: format!("{what}: {e}"),
    }
}

fn blob_path(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    data: &[u8],
) -> std::io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, path, data)
}

impl Images {
    /// Writes `names` as an OCI layout tar to `dest` (temp file, fsync, rename).
    pub fn save(&self, names: &[String], dest: &Path) -> Result<u64> {
        if !dest.is_absolute() {
            return Err(bad(
                "archive",
                &dest.display().to_string(),
                "path must be absolute",
            ));
        }
        let mut images: Vec<(ImageRecord, Option<Reference>)> = Vec::new();
        for name in names {
            let image = self.resolve(name)?;
            let reference = Reference::parse(name)
                .ok()
                .filter(|r| r.tag.is_some() && !image.id.contains(name.as_str()));
            images.push((image, reference));
        }
        let temp = dest.with_file_name(format!(
            ".{}.berth-tmp",
            dest.file_name().and_then(|n| n.to_str()).unwrap_or("save")
        ));
        let result = (|| -> Result<u64> {
            let file = std::fs::File::create(&temp).map_err(|e| io_err("create", &temp, e))?;
            let mut tar = tar::Builder::new(BufWriter::with_capacity(1 << 20, file));
            let w = |e: std::io::Error| io_err("write", &temp, e);
            append_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)
                .map_err(w)?;
            let mut written = std::collections::HashSet::new();
            let mut index_entries = Vec::new();
            let mut docker_manifest = Vec::new();
            for (image, reference) in &images {
                let mut blobs = vec![image.manifest_digest.clone(), image.id.clone()];
                blobs.extend(image.layers.iter().map(|l| l.digest.clone()));
                for digest in blobs {
                    if !written.insert(digest.clone()) {
                        continue;
                    }
                    let mut blob = self.content.open_blob(&digest)?;
                    let size = blob.metadata().map_err(w)?.len();
                    let mut header = tar::Header::new_ustar();
                    header.set_size(size);
                    header.set_mode(0o644);
                    header.set_uid(0);
                    header.set_gid(0);
                    header.set_mtime(0);
                    header.set_entry_type(tar::EntryType::Regular);
                    tar.append_data(&mut header, blob_path(&digest), &mut blob)
                        .map_err(w)?;
                }
                let manifest_size = self.content.size(&image.manifest_digest).unwrap_or(0);
                let mut annotations = serde_json::Map::new();
                let mut repo_tags = Vec::new();
                if let Some(r) = reference {
                    annotations.insert("io.containerd.image.name".into(), json!(r.to_string()));
                    if let Some(tag) = &r.tag {
                        annotations.insert("org.opencontainers.image.ref.name".into(), json!(tag));
                        repo_tags.push(format!("{}:{tag}", r.familiar_name()));
                    }
                }
                index_entries.push(json!({
                    "mediaType": image.manifest_media_type,
                    "digest": image.manifest_digest,
                    "size": manifest_size,
                    "annotations": annotations,
                }));
                docker_manifest.push(json!({
                    "Config": blob_path(&image.id),
                    "RepoTags": repo_tags,
                    "Layers": image.layers.iter().map(|l| blob_path(&l.digest)).collect::<Vec<_>>(),
                }));
            }
            let index =
                json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": index_entries });
            append_bytes(
                &mut tar,
                "index.json",
                &serde_json::to_vec(&index).unwrap_or_default(),
            )
            .map_err(w)?;
            append_bytes(
                &mut tar,
                "manifest.json",
                &serde_json::to_vec(&docker_manifest).unwrap_or_default(),
            )
            .map_err(w)?;
            let mut out = tar.into_inner().map_err(w)?;
            out.flush().map_err(w)?;
            let file = out.into_inner().map_err(|e| w(e.into_error()))?;
            file.sync_all().map_err(w)?;
            let size = file.metadata().map_err(w)?.len();
            std::fs::rename(&temp, dest).map_err(|e| io_err("rename", dest, e))?;
            Ok(size)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        result
    }

    /// Loads every image of an OCI layout or `docker save` tar; returns what was loaded
    /// (references, or ids of unnamed images).
    pub fn load(&self, source: &Path, unpack: UnpackOptions) -> Result<Vec<String>> {
        let file = std::fs::File::open(source).map_err(|e| io_err("open", source, e))?;
        let reader = snapshot::decompressed(std::io::BufReader::new(file))
            .map_err(|e| io_err("read", source, e))?;
        let mut archive = tar::Archive::new(reader);
        let mut metadata: HashMap<String, Vec<u8>> = HashMap::new();
        let mut files: HashMap<String, String> = HashMap::new();
        let mut created_blobs = Vec::new();
        let entries = archive.entries().map_err(|e| io_err("read", source, e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| io_err("read", source, e))?;
            if entry.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            let path = entry
                .path()
                .map_err(|e| io_err("read", source, e))?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_owned();
            let size = entry.header().size().unwrap_or(0);
            if matches!(
                path.as_str(),
                "index.json" | "manifest.json" | "oci-layout" | "repositories"
            ) || path.ends_with(".json") && !path.starts_with("blobs/")
            {
                if size > MAX_METADATA {
                    return Err(bad("archive", &path, "metadata file too large"));
                }
                let mut data = Vec::new();
                entry
                    .read_to_end(&mut data)
                    .map_err(|e| io_err("read", source, e))?;
                metadata.insert(path, data);
                continue;
            }
            let expected = path
                .strip_prefix("blobs/sha256/")
                .map(|h| format!("sha256:{h}"));
            let mut ingest = match &expected {
                Some(d) => {
                    if self.content.contains(d) {
                        files.insert(path, d.clone());
                        continue;
                    }
                    self.content.ingest(d, Some(size))?
                }
                None => self.content.ingest_any()?,
            };
            std::io::copy(&mut entry, &mut ingest).map_err(|e| io_err("read", source, e))?;
            let digest = ingest.commit()?;
            created_blobs.push(digest.clone());
            files.insert(path, digest);
        }
        let result = if let Some(index) = metadata.get("index.json") {
            self.load_oci(index, unpack)
        } else if let Some(manifest) = metadata.get("manifest.json") {
            self.load_docker(manifest, &files, &metadata, unpack)
        } else {
            Err(bad(
                "archive",
                &source.display().to_string(),
                "neither index.json nor manifest.json found",
            ))
        };
        if result.is_err() {
            let _ = self.discard_unreferenced(&[], &created_blobs);
        }
        result
    }

    fn load_oci(&self, index: &[u8], unpack: UnpackOptions) -> Result<Vec<String>> {
        let index: ImageIndex =
            serde_json::from_slice(index).map_err(|e| bad("index", "index.json", e))?;
        let mut loaded = Vec::new();
        for desc in index.manifests() {
            let annotations = desc.annotations().clone().unwrap_or_default();
            let name = annotations
                .get("io.containerd.image.name")
                .and_then(|n| Reference::parse(n).ok())
                .or_else(|| {
                    annotations
                        .get("org.opencontainers.image.ref.name")
                        .filter(|n| n.contains('/') || n.contains(':'))
                        .and_then(|n| Reference::parse(n).ok())
                });
            let mut digest = desc.digest().to_string();
            let mut bytes = self.content.read(&digest)?;
            if serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v.get("manifests").cloned())
                .is_some()
            {
                let nested: ImageIndex =
                    serde_json::from_slice(&bytes).map_err(|e| bad("index", &digest, e))?;
                let (os, arch, _) = host_platform();
                let chosen = nested
                    .manifests()
                    .iter()
                    .find(|m| {
                        m.platform().as_ref().is_some_and(|p| {
                            p.os().to_string() == os && p.architecture().to_string() == arch
                        })
                    })
                    .ok_or_else(|| {
                        bad("index", &digest, format!("no manifest for linux/{arch}"))
                    })?;
                digest = chosen.digest().to_string();
                bytes = self.content.read(&digest)?;
            }
            let id = self.load_manifest(&digest, &bytes, name.as_ref(), unpack)?;
            loaded.push(name.map(|n| n.to_string()).unwrap_or(id));
        }
        Ok(loaded)
    }

    fn load_docker(
        &self,
        manifest: &[u8],
        files: &HashMap<String, String>,
        metadata: &HashMap<String, Vec<u8>>,
        unpack: UnpackOptions,
    ) -> Result<Vec<String>> {
        let entries: Vec<Value> =
            serde_json::from_slice(manifest).map_err(|e| bad("manifest", "manifest.json", e))?;
        let mut loaded = Vec::new();
        for entry in entries {
            let config_path = entry["Config"]
                .as_str()
                .ok_or_else(|| bad("manifest", "manifest.json", "entry without Config"))?;
            let config_bytes = match files.get(config_path) {
                Some(d) => self.content.read(d)?,
                None => metadata
                    .get(config_path)
                    .cloned()
                    .ok_or_else(|| bad("archive", config_path, "config missing from archive"))?,
            };
            let config_digest = self.content.write(&config_bytes)?;
            let mut layers = Vec::new();
            for layer in entry["Layers"].as_array().cloned().unwrap_or_default() {
                let path = layer.as_str().unwrap_or_default();
                let digest = files
                    .get(path)
                    .ok_or_else(|| bad("archive", path, "layer missing from archive"))?;
                let size = self.content.size(digest).unwrap_or(0);
                let media_type = self.layer_media_type(digest)?;
                layers.push(json!({ "mediaType": media_type, "digest": digest, "size": size }));
            }
            let manifest = json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": { "mediaType": OCI_CONFIG, "digest": config_digest, "size": config_bytes.len() },
                "layers": layers,
            });
            let bytes = serde_json::to_vec(&manifest).map_err(|e| Error::Task(e.to_string()))?;
            let digest = self.content.write(&bytes)?;
            let tags: Vec<Reference> = entry["RepoTags"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .filter_map(|t| t.as_str().and_then(|t| Reference::parse(t).ok()))
                .collect();
            let id = self.load_manifest(&digest, &bytes, tags.first(), unpack)?;
            for extra in tags.iter().skip(1) {
                self.tag(&id, &extra.to_string())?;
            }
            loaded.push(tags.first().map(ToString::to_string).unwrap_or(id));
        }
        Ok(loaded)
    }

    /// Unpacks the layers of a manifest whose blobs are in the content store and records
    /// the image under `name`. Returns the image id.
    fn load_manifest(
        &self,
        digest: &str,
        bytes: &[u8],
        name: Option<&Reference>,
        unpack: UnpackOptions,
    ) -> Result<String> {
        let manifest: ImageManifest =
            serde_json::from_slice(bytes).map_err(|e| bad("manifest", digest, e))?;
        let config_digest = manifest.config().digest().to_string();
        let config_bytes = self.content.read(&config_digest)?;
        let config: ImageConfiguration =
            serde_json::from_slice(&config_bytes).map_err(|e| bad("config", &config_digest, e))?;
        let diff_ids = config.rootfs().diff_ids().clone();
        if diff_ids.len() != manifest.layers().len() {
            return Err(bad(
                "manifest",
                digest,
                "layer count differs from the config's diff ids",
            ));
        }
        let chains = snapshot::chain_ids(&diff_ids);
        let mut layers = Vec::new();
        let mut size = 0;
        for (i, layer) in manifest.layers().iter().enumerate() {
            let blob = layer.digest().to_string();
            let snap = match self.snapshots.get(&chains[i])? {
                Some(s) => s,
                None => {
                    let file = self.content.open_blob(&blob)?;
                    let parent = i.checked_sub(1).map(|p| chains[p].as_str());
                    self.snapshots
                        .unpack_layer(&chains[i], parent, &diff_ids[i], file, unpack)?
                }
            };
            size += snap.size;
            layers.push(LayerRecord {
                digest: blob,
                media_type: layer.media_type().to_string(),
                size: layer.size(),
                diff_id: diff_ids[i].clone(),
                chain_id: chains[i].clone(),
            });
        }
        let record = ImageRecord {
            id: config_digest.clone(),
            manifest_digest: digest.to_owned(),
            manifest_media_type: manifest
                .media_type()
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_else(|| OCI_MANIFEST.to_owned()),
            layers,
            os: config.os().to_string(),
            architecture: config.architecture().to_string(),
            variant: config.variant().clone(),
            created: config.created().clone(),
            size,
        };
        let names: Vec<String> = name.and_then(Reference::tagged).into_iter().collect();
        self.record(&record, &names)?;
        Ok(config_digest)
    }

    /// The OCI layer media type for a stored tar blob, from its compression magic.
    fn layer_media_type(&self, digest: &str) -> Result<&'static str> {
        let mut head = [0u8; 4];
        let n = self.content.open_blob(digest)?.read(&mut head).unwrap_or(0);
        Ok(if head[..n].starts_with(&[0x1f, 0x8b]) {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        } else if head[..n].starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            "application/vnd.oci.image.layer.v1.tar+zstd"
        } else {
            "application/vnd.oci.image.layer.v1.tar"
        })
    }

    /// `docker import`: a root filesystem tarball (plain, gzip or zstd) as a one-layer image.
    pub fn import(
        &self,
        source: &Path,
        name: Option<&str>,
        changes: &[String],
        message: Option<&str>,
        unpack: UnpackOptions,
    ) -> Result<String> {
        let reference = name.map(Reference::parse).transpose()?;
        let run_config = apply_changes(changes)?;
        // Pass 1: store the tarball as the layer blob.
        let mut file = std::fs::File::open(source).map_err(|e| io_err("open", source, e))?;
        let mut ingest = self.content.ingest_any()?;
        std::io::copy(&mut file, &mut ingest).map_err(|e| io_err("read", source, e))?;
        let size = ingest.written();
        let blob = ingest.commit()?;
        // Pass 2: its diff id (the digest of the uncompressed tar).
        let mut hasher = sha2::Sha256::new();
        let mut reader = snapshot::decompressed(self.content.open_blob(&blob)?)
            .map_err(|e| io_err("read", source, e))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| io_err("decompress", source, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let diff_id = format!("sha256:{}", hex::encode(hasher.finalize()));
        let media_type = self.layer_media_type(&blob)?;
        let (_, arch, variant) = host_platform();
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let mut config = json!({
            "created": now,
            "architecture": arch,
            "os": "linux",
            "config": run_config,
            "rootfs": { "type": "layers", "diff_ids": [diff_id] },
            "history": [{ "created": now, "created_by": "berth import", "comment": message.unwrap_or("") }],
        });
        if let Some(v) = variant {
            config["variant"] = json!(v);
        }
        let config_bytes = serde_json::to_vec(&config).map_err(|e| Error::Task(e.to_string()))?;
        let config_digest = self.content.write(&config_bytes)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": OCI_CONFIG, "digest": config_digest, "size": config_bytes.len() },
            "layers": [{ "mediaType": media_type, "digest": blob, "size": size }],
        });
        let bytes = serde_json::to_vec(&manifest).map_err(|e| Error::Task(e.to_string()))?;
        let digest = self.content.write(&bytes)?;
        let loaded = self.load_manifest(&digest, &bytes, reference.as_ref(), unpack);
        if loaded.is_err() {
            let _ = self.discard_unreferenced(&[diff_id], &[blob, config_digest, digest]);
        }
        loaded
    }
}

/// `--change` instructions of `docker import`: CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL,
/// EXPOSE, VOLUME, STOPSIGNAL.
fn apply_changes(changes: &[String]) -> Result<Value> {
    let invalid = |c: &str, why: &str| bad("change", c, why);
    let mut config = serde_json::Map::new();
    let mut env: Vec<String> = Vec::new();
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    let mut ports = serde_json::Map::new();
    let mut volumes = serde_json::Map::new();
    for change in changes {
        let (instr, rest) = change
            .trim()
            .split_once(char::is_whitespace)
            .ok_or_else(|| invalid(change, "expected INSTRUCTION ARGS"))?;
        let rest = rest.trim();
        let command = || -> Value {
            serde_json::from_str::<Vec<String>>(rest)
                .map(|v| json!(v))
                .unwrap_or_else(|_| json!(["/bin/sh", "-c", rest]))
        };
        let pairs = |rest: &str| -> Vec<(String, String)> {
            rest.split_whitespace()
                .filter_map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
                })
                .collect()
        };
        match instr.to_ascii_uppercase().as_str() {
            "CMD" => {
                config.insert("Cmd".into(), command());
            }
            "ENTRYPOINT" => {
                config.insert("Entrypoint".into(), command());
            }
            "ENV" => {
                let kv = pairs(rest);
                if kv.is_empty() {
                    return Err(invalid(change, "ENV takes KEY=VALUE"));
                }
                env.extend(kv.into_iter().map(|(k, v)| format!("{k}={v}")));
            }
            "LABEL" => {
                let kv = pairs(rest);
                if kv.is_empty() {
                    return Err(invalid(change, "LABEL takes KEY=VALUE"));
                }
                labels.extend(kv);
            }
            "WORKDIR" => {
                config.insert("WorkingDir".into(), json!(rest));
            }
            "USER" => {
                config.insert("User".into(), json!(rest));
            }
            "STOPSIGNAL" => {
                config.insert("StopSignal".into(), json!(rest));
            }
            "EXPOSE" => {
                for p in rest.split_whitespace() {
                    let p = if p.contains('/') {
                        p.to_owned()
                    } else {
                        format!("{p}/tcp")
                    };
                    ports.insert(p, json!({}));
                }
            }
            "VOLUME" => {
                let list = serde_json::from_str::<Vec<String>>(rest)
                    .unwrap_or_else(|_| rest.split_whitespace().map(str::to_owned).collect());
                for v in list {
                    volumes.insert(v, json!({}));
                }
            }
            other => return Err(invalid(change, &format!("unsupported instruction {other}"))),
        }
    }
    if !env.is_empty() {
        config.insert("Env".into(), json!(env));
    }
    if !labels.is_empty() {
        config.insert("Labels".into(), json!(labels));
    }
    if !ports.is_empty() {
        config.insert("ExposedPorts".into(), Value::Object(ports));
    }
    if !volumes.is_empty() {
        config.insert("Volumes".into(), Value::Object(volumes));
    }
    Ok(Value::Object(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::digest_of;

    #[test]
    fn import_changes() {
        let c = apply_changes(&[
            "CMD [\"/bin/echo\", \"hi\"]".into(),
            "ENTRYPOINT /start".into(),
            "ENV A=1 B=two".into(),
            "LABEL team=core".into(),
            "EXPOSE 80 53/udp".into(),
            "WORKDIR /srv".into(),
        ])
        .unwrap();
        assert_eq!(c["Cmd"], json!(["/bin/echo", "hi"]));
        assert_eq!(c["Entrypoint"], json!(["/bin/sh", "-c", "/start"]));
        assert_eq!(c["Env"], json!(["A=1", "B=two"]));
        assert_eq!(c["Labels"]["team"], "core");
        assert!(c["ExposedPorts"]["80/tcp"].is_object() && c["ExposedPorts"]["53/udp"].is_object());
        assert!(apply_changes(&["RUN rm -rf /".into()]).is_err());
        assert!(apply_changes(&["ENV".into()]).is_err());
    }

    #[test]
    fn digest_helper_matches_content_store() {
        assert_eq!(
            blob_path(&digest_of(b"x")),
            format!("blobs/sha256/{}", &digest_of(b"x")[7..])
        );
    }
}
