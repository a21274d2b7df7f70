//! Images against a real registry: pull (OCI, v2s2, index), whiteouts through a real overlay
//! mount, metadata preservation, skip-present, hostile layers, and the image commands.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use berth_api::image::{ImageClient, ImageDetails, PullRequest};
use berth_tests::registry::Registry;
use berth_tests::tarball::{Entry, dir, file, tar};
use berth_tests::{Daemon, require_registry};

fn pull_req(reference: &str) -> PullRequest {
    PullRequest {
        reference: reference.to_owned(),
        platform: None,
        auth: None,
    }
}

/// Mounts the image's layers read-only with overlayfs and returns the guard.
struct Overlay {
    target: tempfile::TempDir,
}

impl Overlay {
    fn mount(details: &ImageDetails) -> Overlay {
        let target = tempfile::tempdir().unwrap();
        let lower = details.lower_dirs.join(":");
        let lower = if details.lower_dirs.len() == 1 {
            // overlayfs needs two lower dirs without an upper; add an empty one.
            let empty = target
                .path()
                .join("..")
                .join(format!("empty-{}", std::process::id()));
            std::fs::create_dir_all(&empty).unwrap();
            format!("{lower}:{}", empty.display())
        } else {
            lower
        };
        let mnt = target.path().to_path_buf();
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "overlay",
                "overlay",
                "-o",
                &format!("lowerdir={lower}"),
            ])
            .arg(&mnt)
            .status()
            .unwrap();
        assert!(status.success(), "overlay mount of {lower} failed");
        Overlay { target }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.target.path().join(p)
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.target.path())
            .status();
    }
}

#[tokio::test]
async fn pulls_oci_and_docker_v2s2_images() {
    require_registry!();
    let reg = Registry::start();
    reg.seed_busybox();
    let d = Daemon::start();
    let c = d.client().await;
    for tag in ["busybox:latest", "busybox:v2s2"] {
        let r = c.pull(pull_req(&reg.reference(tag))).await.unwrap();
        assert!(r.id.starts_with("sha256:"));
        let details = c.inspect(reg.reference(tag)).await.unwrap();
        assert_eq!(
            details.config.cmd.as_deref(),
            Some(&["/bin/sh".to_owned()][..])
        );
        assert_eq!(details.os, "linux");
        let top = Path::new(&details.lower_dirs[0]);
        let bb = top.join("bin/busybox");
        let meta = std::fs::metadata(&bb).unwrap_or_else(|e| panic!("{}: {e}", bb.display()));
        assert!(
            meta.permissions().mode() & 0o111 != 0,
            "busybox lost its exec bits"
        );
        assert_eq!(
            std::fs::read_link(top.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        if tag.ends_with("v2s2") {
            assert_eq!(
                details.manifest_media_type,
                "application/vnd.docker.distribution.manifest.v2+json"
            );
        }
    }
    // Both variants carry the same config, so they are one image with two tags, and their
    // layer is unpacked once.
    let list = c.list(None).await.unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].repo_tags.len(), 2, "{list:?}");
    assert_eq!(list[0].repo_digests.len(), 2, "{list:?}");
    let snapshots = std::fs::read_dir(d.data_root.join("snapshots"))
        .unwrap()
        .count();
    assert_eq!(snapshots, 1, "the shared layer was unpacked twice");
}

#[tokio::test]
async fn second_pull_downloads_nothing() {
    require_registry!();
    let reg = Registry::start();
    reg.seed_busybox();
    let d = Daemon::start();
    let c = d.client().await;
    let first = c
        .pull(pull_req(&reg.reference("busybox:latest")))
        .await
        .unwrap();
    assert!(first.layers_downloaded >= 1 && first.bytes_downloaded > 0);
    let second = c
        .pull(pull_req(&reg.reference("busybox:latest")))
        .await
        .unwrap();
    assert_eq!(second.id, first.id);
    assert_eq!((second.layers_downloaded, second.bytes_downloaded), (0, 0));
    assert_eq!(
        second.layers_present,
        first.layers_downloaded + first.layers_present
    );
}

#[tokio::test]
async fn whiteouts_and_opaque_directories_take_effect_in_overlay() {
    require_registry!();
    let reg = Registry::start();
    reg.seed_busybox();
    let base = tar(&[
        dir("a"),
        file("a/x", b"x"),
        file("a/y", b"y"),
        file("b", b"b"),
        dir("keep"),
        file("keep/k", b"k"),
    ]);
    let top = tar(&[
        dir("a"),
        file("a/.wh..wh..opq", b""),
        file("a/z", b"z"),
        file(".wh.b", b""),
        file("keep/.wh.nothing-here", b""),
    ]);
    reg.push_image("whiteouts", "v1", &[base, top], "amd64");
    let d = Daemon::start();
    let c = d.client().await;
    c.pull(pull_req(&reg.reference("whiteouts:v1")))
        .await
        .unwrap();
    let details = c.inspect(reg.reference("whiteouts:v1")).await.unwrap();
    assert_eq!(details.lower_dirs.len(), 2);
    let o = Overlay::mount(&details);
    assert!(!o.path("b").exists(), "whiteout did not hide b");
    let mut a: Vec<String> = std::fs::read_dir(o.path("a"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    a.sort();
    assert_eq!(a, ["z"], "opaque directory still shows lower entries");
    assert_eq!(std::fs::read(o.path("keep/k")).unwrap(), b"k");
    drop(o);

    // The umoci/skopeo fixture deletes a file in its last layer.
    c.pull(pull_req(&reg.reference("busybox:deleted")))
        .await
        .unwrap();
    let details = c.inspect(reg.reference("busybox:deleted")).await.unwrap();
    let o = Overlay::mount(&details);
    assert!(o.path("bin/busybox").exists());
    assert!(o.path("etc/extra/zz-link").is_symlink());
    assert!(
        !o.path("etc/extra/data.txt").exists(),
        "deleted file visible"
    );
    assert_eq!(
        std::fs::read(o.path("etc/motd")).unwrap(),
        b"hello from the fixture\n"
    );
}

#[tokio::test]
async fn ownership_modes_mtimes_xattrs_and_hardlinks_survive() {
    require_registry!();
    let reg = Registry::start();
    let layer = tar(&[
        Entry::FileWith {
            path: "srv/tool".into(),
            mode: 0o4750,
            uid: 1234,
            gid: 5678,
            mtime: 1_600_000_000,
            data: b"#!/bin/sh\n".to_vec(),
            xattrs: vec![
                ("user.origin".into(), b"fixture".to_vec()),
                ("trusted.overlay.opaque".into(), b"y".to_vec()),
            ],
        },
        Entry::Hardlink {
            path: "srv/tool-link".into(),
            target: "srv/tool".into(),
        },
        Entry::Symlink {
            path: "srv/abs".into(),
            target: "/etc/passwd".into(),
        },
    ]);
    reg.push_image("meta", "v1", &[layer], "amd64");
    let d = Daemon::start();
    let c = d.client().await;
    c.pull(pull_req(&reg.reference("meta:v1"))).await.unwrap();
    let details = c.inspect(reg.reference("meta:v1")).await.unwrap();
    let root = Path::new(&details.lower_dirs[0]);
    let m = std::fs::symlink_metadata(root.join("srv/tool")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1234, 5678));
    assert_eq!(m.mode() & 0o7777, 0o4750);
    assert_eq!(m.mtime(), 1_600_000_000);
    assert_eq!(m.nlink(), 2);
    let link = std::fs::symlink_metadata(root.join("srv/tool-link")).unwrap();
    assert_eq!(link.ino(), m.ino());
    assert_eq!(
        std::fs::read_link(root.join("srv/abs")).unwrap(),
        Path::new("/etc/passwd")
    );
    let out = std::process::Command::new("getfattr")
        .args(["--absolute-names", "-d", "-m", "-"])
        .arg(root.join("srv/tool"))
        .output()
        .expect("getfattr (Debian package attr) is installed");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("user.origin=\"fixture\""), "{text}");
    assert!(
        !text.contains("trusted.overlay"),
        "a layer forged overlay metadata: {text}"
    );
}

#[tokio::test]
async fn index_picks_the_host_platform_or_the_requested_one() {
    require_registry!();
    let reg = Registry::start();
    let (amd, amd_cfg) = reg.push_image(
        "multi",
        "amd64-only",
        &[tar(&[file("arch", b"amd64")])],
        "amd64",
    );
    let (arm, arm_cfg) = reg.push_image(
        "multi",
        "arm64-only",
        &[tar(&[file("arch", b"arm64")])],
        "arm64",
    );
    let index = reg.push_index(
        "multi",
        "v1",
        &[
            (amd.clone(), reg.manifest_size("multi", &amd), "amd64"),
            (arm.clone(), reg.manifest_size("multi", &arm), "arm64"),
        ],
    );
    let d = Daemon::start();
    let c = d.client().await;
    let host = c.pull(pull_req(&reg.reference("multi:v1"))).await.unwrap();
    assert_eq!(host.digest, index);
    assert_eq!(
        host.id,
        if std::env::consts::ARCH == "aarch64" {
            arm_cfg.clone()
        } else {
            amd_cfg.clone()
        }
    );
    let mut req = pull_req(&reg.reference("multi:v1"));
    req.platform = Some("linux/arm64".into());
    assert_eq!(c.pull(req).await.unwrap().id, arm_cfg);
    let mut req = pull_req(&reg.reference("multi:v1"));
    req.platform = Some("linux/s390x".into());
    let err = c.pull(req).await.unwrap_err().to_string();
    assert!(
        err.contains("linux/s390x") && err.contains("linux/amd64"),
        "{err}"
    );
    // By digest too.
    let by_digest = format!("{}@{}", reg.reference("multi"), index);
    assert_eq!(c.pull(pull_req(&by_digest)).await.unwrap().digest, index);
}

/// Every hostile layer fails its pull naming the entry, touches nothing outside the data
/// root, and leaves no image, snapshot or blob behind.
#[tokio::test]
async fn hostile_layers_are_refused_and_leave_nothing() {
    require_registry!();
    let reg = Registry::start();
    let d = Daemon::start();
    let c = d.client().await;
    let canary_dir = tempfile::tempdir().unwrap();
    let canary = canary_dir.path().join("canary");
    std::fs::write(&canary, b"untouched").unwrap();
    let canary_s = canary.display().to_string();
    let canary_rel = canary_s.trim_start_matches('/');
    let dotdots = "../".repeat(20);
    let cases: Vec<(&str, Vec<Entry>, &str)> = vec![
        (
            "dotdot",
            vec![file(&format!("{dotdots}{canary_rel}"), b"owned")],
            "..",
        ),
        (
            "symlink-escape",
            vec![
                Entry::Symlink {
                    path: "evil".into(),
                    target: "/".into(),
                },
                file(&format!("evil/{canary_rel}"), b"owned"),
            ],
            "outside the layer",
        ),
        (
            "relative-symlink-escape",
            vec![
                Entry::Symlink {
                    path: "up".into(),
                    target: dotdots.clone(),
                },
                file(&format!("up/{canary_rel}"), b"owned"),
            ],
            "outside the layer",
        ),
        (
            "hardlink-out",
            vec![Entry::Hardlink {
                path: "stolen".into(),
                target: format!("{dotdots}{canary_rel}"),
            }],
            "leaves the layer",
        ),
        (
            "hardlink-absolute",
            vec![Entry::Hardlink {
                path: "stolen".into(),
                target: canary_s.clone(),
            }],
            "not in this layer",
        ),
        (
            "device-node",
            vec![Entry::CharDev {
                path: "dev/mem".into(),
                major: 1,
                minor: 1,
            }],
            "device nodes",
        ),
    ];
    for (name, entries, expected) in cases {
        reg.push_image(
            name,
            "v1",
            &[tar(&[file("ok", b"fine")]), tar(&entries)],
            "amd64",
        );
        let err = c
            .pull(pull_req(&reg.reference(&format!("{name}:v1"))))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("hostile layer entry") && err.contains(expected),
            "{name}: {err}"
        );
        assert_eq!(
            std::fs::read(&canary).unwrap(),
            b"untouched",
            "{name} touched the host"
        );
    }
    assert!(c.list(None).await.unwrap().is_empty());
    let leftovers: Vec<_> = std::fs::read_dir(d.data_root.join("snapshots"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(leftovers.is_empty(), "snapshots left behind: {leftovers:?}");
    let blobs = std::fs::read_dir(d.data_root.join("content/blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 0, "blobs of failed pulls left behind");

    // An absolute path is rooted in the layer, never at the host's /.
    reg.push_image(
        "absolute",
        "v1",
        &[tar(&[file(&canary_s, b"inside")])],
        "amd64",
    );
    c.pull(pull_req(&reg.reference("absolute:v1")))
        .await
        .unwrap();
    let details = c.inspect(reg.reference("absolute:v1")).await.unwrap();
    assert_eq!(
        std::fs::read(Path::new(&details.lower_dirs[0]).join(canary_rel)).unwrap(),
        b"inside"
    );
    assert_eq!(std::fs::read(&canary).unwrap(), b"untouched");
}

#[tokio::test]
async fn wrong_diff_id_and_truncated_tar_fail_cleanly() {
    require_registry!();
    let reg = Registry::start();
    let good = tar(&[file("f", b"data")]);
    reg.push_image_with(
        "liar",
        "v1",
        std::slice::from_ref(&good),
        "amd64",
        Some(vec![format!("sha256:{}", "0".repeat(64))]),
    );
    let mut truncated = tar(&[file("big", &vec![7u8; 4096])]);
    truncated.truncate(1024);
    reg.push_image("truncated", "v1", &[truncated], "amd64");
    let d = Daemon::start();
    let c = d.client().await;
    let err = c
        .pull(pull_req(&reg.reference("liar:v1")))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("hashes to"), "{err}");
    let err = c
        .pull(pull_req(&reg.reference("truncated:v1")))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("malformed layer tar"), "{err}");
    assert!(c.list(None).await.unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(d.data_root.join("snapshots"))
            .unwrap()
            .count(),
        0
    );
    assert!(d.log_text().lines().all(|l| !l.contains("panicked")));
}

#[tokio::test]
async fn unknown_images_and_bad_references_are_clear_errors() {
    require_registry!();
    let reg = Registry::start();
    let d = Daemon::start();
    let c = d.client().await;
    let err = c
        .pull(pull_req(&reg.reference("nothing:here")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("manifest unknown"), "{err}");
    let err = c.pull(pull_req("Not A Reference")).await.unwrap_err();
    assert!(
        err.to_string().contains("invalid reference format"),
        "{err}"
    );
    let err = c.inspect("nope:1".into()).await.unwrap_err();
    assert!(err.to_string().contains("no such image: nope:1"), "{err}");
    // A registry that is not there: refused connection, reported as such, quickly.
    let gone = format!("127.0.0.1:{}/x:1", {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    });
    let err = c.pull(pull_req(&gone)).await.unwrap_err();
    assert!(err.to_string().contains("registry 127.0.0.1"), "{err}");
}

#[test]
fn cli_pull_images_tag_inspect_rmi() {
    require_registry!();
    let reg = Registry::start();
    reg.seed_busybox();
    let d = Daemon::start();
    let name = reg.reference("busybox:latest");
    let out = d.cli(&["pull", &name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Status: Downloaded newer image"));
    let out = d.cli(&["pull", "-q", &name]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), name);
    let out = d.cli(&["tag", &name, "mybox:1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = d.cli(&["images"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("mybox") && text.contains(&reg.reference("busybox")),
        "{text}"
    );
    let out = d.cli(&[
        "images",
        "--filter",
        "label=org.berth.fixture=busybox",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    let out = d.cli(&["images", "--filter", "bogus=1"]);
    assert_eq!(out.status.code(), Some(1));
    let out = d.cli(&["image", "inspect", "mybox:1"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["config"]["labels"]["org.berth.fixture"], "busybox");
    // Removing by id while two tags point at it needs force.
    let id = v[0]["id"].as_str().unwrap().to_owned();
    let out = d.cli(&["rmi", &id[7..19]]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("force"));
    let out = d.cli(&["rmi", "mybox:1"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Untagged: mybox:1"));
    let out = d.cli(&["rmi", &name]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("Deleted: {id}")), "{text}");
    let out = d.cli(&["images", "-q"]);
    assert!(out.stdout.is_empty());
    assert_eq!(
        std::fs::read_dir(d.data_root.join("snapshots"))
            .unwrap()
            .count(),
        0,
        "layers kept after rmi"
    );
    let out = d.cli(&["pull", &reg.reference("missing:1")]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn pushed_images_are_pullable_by_skopeo_and_docker() {
    require_registry!();
    let source = Registry::start();
    source.seed_busybox();
    let dest = Registry::start();
    let d = Daemon::start();
    let src = source.reference("busybox:latest");
    assert!(d.cli(&["pull", "-q", &src]).status.success());
    let target = dest.reference("pushed/busybox:v1");
    assert!(d.cli(&["tag", &src, &target]).status.success());
    let out = d.cli(&["push", &target]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Pushed"), "{stderr}");
    let local = d.cli(&["image", "inspect", &src]);
    let v: serde_json::Value = serde_json::from_slice(&local.stdout).unwrap();
    let digest = v[0]["manifest_digest"].as_str().unwrap().to_owned();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&digest),
        "pushed digest differs from the local one"
    );
    // A second push uploads nothing.
    let again = d.cli(&["push", &target]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("Layer already exists"));
    // Another repository on the same registry: blobs are mounted, not uploaded.
    let sibling = dest.reference("other/busybox:v1");
    assert!(d.cli(&["tag", &target, &sibling]).status.success());
    let out = d.cli(&["push", &sibling]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Mounted from another repository"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // skopeo reads and copies it, verifying every blob.
    let oci = tempfile::tempdir().unwrap();
    let copy = std::process::Command::new("skopeo")
        .args([
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{target}"),
        ])
        .arg(format!("oci:{}:x", oci.path().display()))
        .output()
        .unwrap();
    assert!(
        copy.status.success(),
        "{}",
        String::from_utf8_lossy(&copy.stderr)
    );
    let inspect = std::process::Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{target}"),
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(v["Digest"], digest);

    // docker pulls and runs it.
    if !berth_tests::dockerd::present() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI must install docker.io"
        );
        eprintln!("docker part skipped: dockerd not installed");
        return;
    }
    let docker = berth_tests::dockerd::Dockerd::start();
    let pulled = docker.docker(&["pull", &target]);
    assert!(
        pulled.status.success(),
        "{}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    let ran = docker.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        &target,
        "/bin/busybox",
        "echo",
        "pushed-by-berth",
    ]);
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&ran.stdout).trim(),
        "pushed-by-berth"
    );
}

#[test]
fn history_and_prune() {
    require_registry!();
    let reg = Registry::start();
    reg.seed_busybox();
    let d = Daemon::start();
    let name = reg.reference("busybox:deleted");
    assert!(d.cli(&["pull", "-q", &name]).status.success());
    let out = d.cli(&["history", "--format", "json", &name]);
    let steps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let steps = steps.as_array().unwrap();
    assert!(steps.len() >= 3, "{steps:?}");
    assert!(steps.iter().filter(|s| s["empty_layer"] == false).count() >= 3);
    let out = d.cli(&["history", &name]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("CREATED"));
    // Tagged images survive a plain prune; `-a` removes every unused one and its layers.
    let out = d.cli(&["image", "inspect", &name]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = v[0]["id"].as_str().unwrap().to_owned();
    let other = reg.reference("busybox:latest");
    assert!(d.cli(&["pull", "-q", &other]).status.success());
    let out = d.cli(&["image", "prune"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Total reclaimed space: 0B"),
        "tagged images were pruned"
    );
    let out = d.cli(&["system", "prune", "-a"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&id), "{text}");
    assert!(d.cli(&["images", "-q"]).stdout.is_empty());
    assert_eq!(
        std::fs::read_dir(d.data_root.join("snapshots"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(d.data_root.join("content/blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test]
async fn zstd_and_uncompressed_layers() {
    require_registry!();
    use berth_tests::registry::Compression;
    let reg = Registry::start();
    let layers = [tar(&[file("one", b"1")]), tar(&[file("two", b"2")])];
    reg.push_compressed("zst", "v1", &layers, "amd64", None, Compression::Zstd);
    reg.push_compressed("plain", "v1", &layers, "amd64", None, Compression::None);
    let d = Daemon::start();
    let c = d.client().await;
    for name in ["zst:v1", "plain:v1"] {
        c.pull(pull_req(&reg.reference(name))).await.unwrap();
        let details = c.inspect(reg.reference(name)).await.unwrap();
        let o = Overlay::mount(&details);
        assert_eq!(std::fs::read(o.path("one")).unwrap(), b"1", "{name}");
        assert_eq!(std::fs::read(o.path("two")).unwrap(), b"2", "{name}");
    }
}

#[test]
fn interrupted_pull_leaves_no_partial_image() {
    require_registry!();
    let reg = Registry::start();
    // Big enough that the pull is still running when berthd is killed.
    let layers: Vec<Vec<u8>> = (0..6u8)
        .map(|i| {
            let mut x: u64 = 0x1234_5678 + u64::from(i);
            let data: Vec<u8> = (0..16 * 1024 * 1024)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            tar(&[file(&format!("blob-{i}"), &data)])
        })
        .collect();
    reg.push_image("big", "v1", &layers, "amd64");
    let mut d = Daemon::start();
    let name = reg.reference("big:v1");
    let mut cmd = std::process::Command::new(berth_tests::bin("berth"));
    cmd.args(["-H", &d.host(), "pull", "-q", &name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut pull = cmd.spawn().unwrap();
    // Wait until layers are being unpacked, then crash the daemon.
    let snapshots = d.data_root.join("snapshots");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        let busy = std::fs::read_dir(&snapshots)
            .map(|r| {
                r.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("tmp-"))
            })
            .unwrap_or(false);
        if busy {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    d.kill9();
    let _ = pull.wait();
    d.restart();
    let out = d.cli(&["images", "-q"]);
    assert!(
        out.stdout.is_empty(),
        "a partial image is visible: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let leftovers: Vec<String> = std::fs::read_dir(&snapshots)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(
        std::fs::read_dir(d.data_root.join("content/ingest"))
            .unwrap()
            .count(),
        0
    );
    // The next pull completes, reusing whatever finished before the crash.
    let out = d.cli(&["pull", "-q", &name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = d.cli(&["image", "inspect", &name]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["lower_dirs"].as_array().unwrap().len(), 6);
}

#[test]
fn save_load_import_round_trips_and_docker_interop() {
    require_registry!();
    let reg = Registry::start();
    reg.seed_busybox();
    let d = Daemon::start();
    let name = reg.reference("busybox:latest");
    assert!(d.cli(&["pull", "-q", &name]).status.success());
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("busybox.tar");
    let out = d.cli(&["save", "-o", archive.to_str().unwrap(), &name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = std::process::Command::new("tar")
        .arg("tf")
        .arg(&archive)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.contains("index.json")
            && listing.contains("oci-layout")
            && listing.contains("manifest.json"),
        "{listing}"
    );
    let before = d.cli(&["image", "inspect", &name]);
    let before: serde_json::Value = serde_json::from_slice(&before.stdout).unwrap();
    assert!(d.cli(&["rmi", &name]).status.success());
    let out = d.cli(&["load", "-i", archive.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("Loaded image: {name}")),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = d.cli(&["image", "inspect", &name]);
    let after: serde_json::Value = serde_json::from_slice(&after.stdout).unwrap();
    assert_eq!(before[0]["id"], after[0]["id"]);
    assert_eq!(before[0]["manifest_digest"], after[0]["manifest_digest"]);
    // skopeo reads the archive as an OCI layout.
    let layout = work.path().join("layout");
    std::fs::create_dir(&layout).unwrap();
    assert!(
        std::process::Command::new("tar")
            .arg("xf")
            .arg(&archive)
            .arg("-C")
            .arg(&layout)
            .status()
            .unwrap()
            .success()
    );
    let inspect = std::process::Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}", layout.display()))
        .output()
        .unwrap();
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );

    // import: a rootfs tarball becomes a one-layer image with the requested config.
    let rootfs = work.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    let tarball = work.path().join("rootfs.tar.gz");
    assert!(
        std::process::Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-czf")
            .arg(&tarball)
            .arg(".")
            .status()
            .unwrap()
            .success()
    );
    let out = d.cli(&[
        "import",
        "-c",
        "CMD [\"/bin/busybox\", \"true\"]",
        "-c",
        "ENV A=1",
        "-m",
        "from a tarball",
        tarball.to_str().unwrap(),
        "imported:v1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = d.cli(&["image", "inspect", "imported:v1"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v[0]["config"]["cmd"],
        serde_json::json!(["/bin/busybox", "true"])
    );
    assert_eq!(v[0]["config"]["env"], serde_json::json!(["A=1"]));
    assert!(
        std::path::Path::new(v[0]["lower_dirs"][0].as_str().unwrap())
            .join("bin/busybox")
            .exists()
    );
    let out = d.cli(&["history", "imported:v1"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("from a tarball"));
    let out = d.cli(&["import", "-c", "RUN rm -rf /", tarball.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let garbage = work.path().join("garbage.tar");
    std::fs::write(&garbage, b"not an archive at all").unwrap();
    let out = d.cli(&["load", "-i", garbage.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));

    if !berth_tests::dockerd::present() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI must install docker.io"
        );
        return;
    }
    // docker loads what berth saved, and berth loads what docker saved.
    let docker = berth_tests::dockerd::Dockerd::start();
    let loaded = docker.docker(&["load", "-i", archive.to_str().unwrap()]);
    assert!(
        loaded.status.success(),
        "{}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    let ran = docker.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        &name,
        "/bin/busybox",
        "echo",
        "saved-by-berth",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&ran.stdout).trim(),
        "saved-by-berth",
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let docker_archive = work.path().join("docker.tar");
    assert!(
        docker
            .docker(&["save", "-o", docker_archive.to_str().unwrap(), &name])
            .status
            .success()
    );
    assert!(d.cli(&["rmi", &name]).status.success());
    let out = d.cli(&["load", "-i", docker_archive.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = d.cli(&["image", "inspect", &name]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["id"], before[0]["id"]);
}

#[test]
fn login_then_pull_and_push_with_basic_auth() {
    require_registry!();
    let open = Registry::start();
    open.seed_busybox();
    let private = Registry::start_with_auth("alice", "s3cret");
    let d = Daemon::start();
    let config = tempfile::tempdir().unwrap();
    let cli = |args: &[&str], stdin: Option<&str>| {
        use std::io::Write;
        let mut child = std::process::Command::new(berth_tests::bin("berth"))
            .env("BERTH_CONFIG", config.path())
            .arg("-H")
            .arg(d.host())
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.unwrap_or("").as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let target = private.reference("secret/busybox:v1");
    let src = open.reference("busybox:latest");
    assert!(cli(&["pull", "-q", &src], None).status.success());
    assert!(cli(&["tag", &src, &target], None).status.success());
    // Without credentials: refused, as a permission error.
    let out = cli(&["push", &target], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401")
            || String::from_utf8_lossy(&out.stderr).contains("authorized"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A wrong password is refused and not stored.
    let out = cli(
        &["login", "-u", "alice", "--password-stdin", &private.addr],
        Some("wrong\n"),
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!config.path().join("config.json").exists());
    let out = cli(
        &["login", "-u", "alice", "--password-stdin", &private.addr],
        Some("s3cret\n"),
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Login Succeeded"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(config.path().join("config.json"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let out = cli(&["push", "-q", &target], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(cli(&["rmi", &target], None).status.success());
    let out = cli(&["pull", "-q", &target], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["logout", &private.addr], None);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Removing login credentials"));
    assert!(cli(&["rmi", &target], None).status.success());
    let out = cli(&["pull", "-q", &target], None);
    assert_eq!(
        out.status.code(),
        Some(1),
        "pulled without credentials after logout"
    );
}

#[tokio::test]
async fn docker_hub_names_resolve_through_a_configured_mirror() {
    require_registry!();
    let mirror = Registry::start();
    mirror.push_image(
        "library/busybox",
        "latest",
        &[tar(&[file("from-mirror", b"yes")])],
        "amd64",
    );
    let d = Daemon::start_with(&["--registry-mirrors", &format!("http://{}", mirror.addr)]);
    let c = d.client().await;
    let r = c.pull(pull_req("busybox")).await.unwrap();
    assert_eq!(r.reference, "docker.io/library/busybox:latest");
    let list = c.list(None).await.unwrap();
    assert_eq!(list[0].repo_tags, ["busybox:latest"]);
    let details = c.inspect("busybox".into()).await.unwrap();
    assert!(
        Path::new(&details.lower_dirs[0])
            .join("from-mirror")
            .exists()
    );
}

#[tokio::test]
async fn bearer_token_flow_with_a_token_service() {
    require_registry!();
    use berth_api::image::RegistryAuth;
    let open = Registry::start();
    open.seed_busybox();
    let token = berth_tests::token::TokenServer::start("alice", "s3cret");
    let reg = Registry::start_with_token_service(&token);
    let d = Daemon::start();
    let c = d.client().await;
    let alice = Some(RegistryAuth {
        username: Some("alice".into()),
        password: Some("s3cret".into()),
        registry_token: None,
    });
    c.login(reg.addr.clone(), alice.clone().unwrap())
        .await
        .expect("right credentials get a token");
    let wrong = RegistryAuth {
        password: Some("nope".into()),
        ..alice.clone().unwrap()
    };
    assert!(
        c.login(reg.addr.clone(), wrong).await.is_err(),
        "wrong credentials were accepted"
    );
    // Push with a token, pull it back with a token; anonymous is refused.
    c.pull(pull_req(&open.reference("busybox:latest")))
        .await
        .unwrap();
    let target = reg.reference("tokens/busybox:v1");
    c.tag(open.reference("busybox:latest"), target.clone())
        .await
        .unwrap();
    let pushed = c
        .push(berth_api::image::PushRequest {
            reference: target.clone(),
            auth: alice.clone(),
        })
        .await
        .expect("push with a bearer token");
    assert!(pushed.blobs_uploaded >= 2);
    c.remove(target.clone(), None).await.unwrap();
    let err = c.pull(pull_req(&target)).await.unwrap_err().to_string();
    assert!(err.contains("registry"), "{err}");
    let mut req = pull_req(&target);
    req.auth = alice;
    c.pull(req).await.expect("pull with a bearer token");
}
