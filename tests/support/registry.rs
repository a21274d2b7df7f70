//! A real OCI registry for tests: Debian's `docker-registry` on a free loopback port with
//! filesystem storage in a temp dir, seeded either with busybox images built by
//! `umoci`/`skopeo` or with hand-made images pushed over the distribution API.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::tarball::{gzip, sha256};

/// Tools the registry fixtures need, from Debian packages.
pub const TOOLS: &[&str] = &["docker-registry", "umoci", "skopeo", "busybox", "htpasswd"];

/// Whether every fixture tool is installed.
pub fn tools_present() -> bool {
    TOOLS.iter().all(|t| which(t).is_some())
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(tool))
            .find(|p| p.is_file())
    })
}

/// Skips a test that needs root and the registry tools, except under `CI=true`.
#[macro_export]
macro_rules! require_registry {
    () => {
        $crate::require_root!();
        if !$crate::registry::tools_present() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI must install {:?}", $crate::registry::TOOLS);
            }
            eprintln!("skipped: needs {:?}", $crate::registry::TOOLS);
            return;
        }
    };
}

/// How test layers are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
    /// Plain tar.
    None,
}

/// How a test registry authenticates.
#[derive(Debug, Clone, Copy)]
enum Auth<'a> {
    /// htpasswd basic auth.
    Basic(&'a str, &'a str),
    /// The bearer token flow through a token service.
    Token(&'a crate::token::TokenServer),
}

/// A running registry, stopped on drop.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Registry {
    /// Starts a registry and waits until `/v2/` answers.
    pub fn start() -> Registry {
        Registry::start_inner(None)
    }

    /// Starts a registry that requires basic auth (htpasswd, bcrypt) for everything.
    pub fn start_with_auth(user: &str, password: &str) -> Registry {
        Registry::start_inner(Some(Auth::Basic(user, password)))
    }

    /// Starts a registry that uses the bearer token flow with `token` as its token service.
    pub fn start_with_token_service(token: &crate::token::TokenServer) -> Registry {
        Registry::start_inner(Some(Auth::Token(token)))
    }

    fn start_inner(auth: Option<Auth<'_>>) -> Registry {
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("tempdir");
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            let config = dir.path().join("config.yml");
            let mut yaml = format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                dir.path().join("storage").display()
            );
            if let Some(Auth::Token(token)) = auth {
                yaml.push_str(&format!(
                    "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                    token.realm,
                    crate::token::SERVICE,
                    crate::token::ISSUER,
                    token.cert_pem.display()
                ));
            }
            if let Some(Auth::Basic(user, password)) = auth {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", user, password])
                    .output()
                    .expect("htpasswd (apache2-utils)");
                assert!(out.status.success(), "htpasswd failed");
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, &out.stdout).expect("htpasswd file");
                yaml.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                    file.display()
                ));
            }
            std::fs::write(&config, yaml).expect("registry config");
            let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("start docker-registry");
            let mut reg = Registry { child, dir, addr };
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                let up = match ureq::get(&format!("http://{}/v2/", reg.addr)).call() {
                    Ok(_) => true,
                    // An auth-protected registry is up when it asks for credentials.
                    Err(ureq::Error::StatusCode(401)) => auth.is_some(),
                    Err(_) => false,
                };
                if up {
                    return reg;
                }
                if reg.child.try_wait().ok().flatten().is_some() {
                    eprintln!(
                        "docker-registry exited: {}",
                        std::fs::read_to_string(reg.dir.path().join("registry.log"))
                            .unwrap_or_default()
                    );
                    break; // port taken meanwhile: try another
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            drop(reg);
        }
        panic!("docker-registry did not start");
    }

    /// `ADDR/name:tag`.
    pub fn reference(&self, name_tag: &str) -> String {
        format!("{}/{name_tag}", self.addr)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/v2/{path}", self.addr)
    }

    /// Uploads a blob (monolithic) and returns its digest.
    pub fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = sha256(data);
        let start = ureq::post(&self.url(&format!("{repo}/blobs/uploads/")))
            .send_empty()
            .expect("start blob upload");
        let location = start
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("upload location")
            .to_owned();
        let location = if location.starts_with("http") {
            location
        } else {
            format!("http://{}{location}", self.addr)
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        ureq::put(&format!("{location}{sep}digest={digest}"))
            .header("Content-Type", "application/octet-stream")
            .send(data)
            .expect("finish blob upload");
        digest
    }

    /// Uploads a manifest or index under `reference` (tag or digest).
    pub fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> String {
        ureq::put(&self.url(&format!("{repo}/manifests/{reference}")))
            .header("Content-Type", media_type)
            .send(body)
            .expect("push manifest");
        sha256(body)
    }

    /// Pushes a single-platform OCI image made of uncompressed layer tars (gzipped here).
    /// Returns (manifest digest, config digest).
    pub fn push_image(
        &self,
        repo: &str,
        tag: &str,
        layers: &[Vec<u8>],
        arch: &str,
    ) -> (String, String) {
        self.push_image_with(repo, tag, layers, arch, None)
    }

    /// Like [`Registry::push_image`], optionally lying about the diff ids in the config.
    pub fn push_image_with(
        &self,
        repo: &str,
        tag: &str,
        layers: &[Vec<u8>],
        arch: &str,
        diff_ids_override: Option<Vec<String>>,
    ) -> (String, String) {
        self.push_compressed(
            repo,
            tag,
            layers,
            arch,
            diff_ids_override,
            Compression::Gzip,
        )
    }

    /// Pushes an image whose layers are compressed as asked.
    pub fn push_compressed(
        &self,
        repo: &str,
        tag: &str,
        layers: &[Vec<u8>],
        arch: &str,
        diff_ids_override: Option<Vec<String>>,
        compression: Compression,
    ) -> (String, String) {
        let mut descriptors = Vec::new();
        let mut diff_ids = Vec::new();
        for layer in layers {
            let (blob, media_type) = match compression {
                Compression::Gzip => (gzip(layer), "application/vnd.oci.image.layer.v1.tar+gzip"),
                Compression::Zstd => (
                    zstd::encode_all(&layer[..], 3).expect("zstd to memory"),
                    "application/vnd.oci.image.layer.v1.tar+zstd",
                ),
                Compression::None => (layer.clone(), "application/vnd.oci.image.layer.v1.tar"),
            };
            let digest = self.push_blob(repo, &blob);
            diff_ids.push(sha256(layer));
            descriptors.push(json!({
                "mediaType": media_type,
                "digest": digest,
                "size": blob.len(),
            }));
        }
        let config = json!({
            "created": "2026-01-01T00:00:00Z",
            "architecture": arch,
            "os": "linux",
            "config": { "Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], "Labels": { "fixture": repo } },
            "rootfs": { "type": "layers", "diff_ids": diff_ids_override.unwrap_or(diff_ids) },
        });
        let config_bytes = serde_json::to_vec(&config).expect("config json");
        let config_digest = self.push_blob(repo, &config_bytes);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config_bytes.len(),
            },
            "layers": descriptors,
        });
        let body = serde_json::to_vec(&manifest).expect("manifest json");
        let digest = self.push_manifest(
            repo,
            tag,
            "application/vnd.oci.image.manifest.v1+json",
            &body,
        );
        (digest, config_digest)
    }

    /// Pushes an index over already-pushed manifests: (manifest digest, size, arch).
    pub fn push_index(&self, repo: &str, tag: &str, manifests: &[(String, usize, &str)]) -> String {
        let entries: Vec<_> = manifests
            .iter()
            .map(|(digest, size, arch)| {
                json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": digest,
                    "size": size,
                    "platform": { "architecture": arch, "os": "linux" },
                })
            })
            .collect();
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries,
        });
        let body = serde_json::to_vec(&index).expect("index json");
        self.push_manifest(repo, tag, "application/vnd.oci.image.index.v1+json", &body)
    }

    /// Size of a manifest already in the registry.
    pub fn manifest_size(&self, repo: &str, digest: &str) -> usize {
        let resp = ureq::get(&self.url(&format!("{repo}/manifests/{digest}")))
            .header("Accept", "application/vnd.oci.image.manifest.v1+json")
            .call()
            .expect("get manifest");
        resp.into_body().read_to_vec().expect("manifest body").len()
    }

    /// Builds busybox images with umoci and copies them in with skopeo:
    /// `busybox:latest` (OCI), `busybox:v2s2` (Docker v2 schema 2) and `busybox:deleted`
    /// (OCI, a file added in one layer and deleted in the next: a whiteout).
    pub fn seed_busybox(&self) {
        let work = self.dir.path().join("umoci");
        let layout = work.join("oci");
        let layout_s = layout.display().to_string();
        run("umoci", &["init", "--layout", &layout_s]);
        run("umoci", &["new", "--image", &format!("{layout_s}:base")]);
        let root = work.join("root");
        std::fs::create_dir_all(root.join("bin")).expect("mkdir");
        std::fs::create_dir_all(root.join("etc")).expect("mkdir");
        let busybox = which("busybox").expect("busybox");
        std::fs::copy(&busybox, root.join("bin/busybox")).expect("copy busybox");
        for applet in ["sh", "echo", "cat", "ls", "true"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("symlink");
        }
        std::fs::write(root.join("etc/motd"), b"hello from the fixture\n").expect("motd");
        // Debian's umoci drops the tail of a layer's tar stream (the last entry's padding and
        // the end-of-archive blocks), so every layer here ends with a data-less entry.
        std::fs::create_dir_all(root.join("usr")).expect("mkdir");
        std::os::unix::fs::symlink("../bin", root.join("usr/bin")).expect("symlink");
        run(
            "umoci",
            &[
                "insert",
                "--image",
                &format!("{layout_s}:base"),
                &root.display().to_string(),
                "/",
            ],
        );
        run(
            "umoci",
            &[
                "config",
                "--image",
                &format!("{layout_s}:base"),
                "--config.cmd",
                "/bin/sh",
                "--config.env",
                "PATH=/bin",
                "--config.label",
                "org.berth.fixture=busybox",
            ],
        );
        let extra = work.join("extra");
        std::fs::create_dir_all(&extra).expect("mkdir");
        std::fs::write(extra.join("data.txt"), b"soon deleted\n").expect("extra");
        std::os::unix::fs::symlink("data.txt", extra.join("zz-link")).expect("symlink");
        run(
            "umoci",
            &[
                "insert",
                "--image",
                &format!("{layout_s}:base"),
                "--tag",
                "deleted",
                &extra.display().to_string(),
                "/etc/extra",
            ],
        );
        run(
            "umoci",
            &[
                "insert",
                "--image",
                &format!("{layout_s}:deleted"),
                "--whiteout",
                "/etc/extra/data.txt",
            ],
        );
        self.skopeo(&layout, "base", "busybox:latest", false);
        self.skopeo(&layout, "base", "busybox:v2s2", true);
        self.skopeo(&layout, "deleted", "busybox:deleted", false);
    }

    fn skopeo(&self, layout: &Path, tag: &str, dest: &str, v2s2: bool) {
        let src = format!("oci:{}:{tag}", layout.display());
        let dst = format!("docker://{}/{dest}", self.addr);
        let mut args = vec!["copy", "--dest-tls-verify=false"];
        if v2s2 {
            args.extend(["--format", "v2s2"]);
        }
        args.extend([src.as_str(), dst.as_str()]);
        run("skopeo", &args);
    }
}

fn run(tool: &str, args: &[&str]) {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
