//! Behaviour of the volume operations against a real (temporary) directory, including the
//! on-disk layout the host relies on and restarts with a fresh store (a new instance).

use std::fs;
use std::path::Path;
use std::time::Duration;

use super::*;

fn setup() -> (tempfile::TempDir, VolumeStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = VolumeStore::new(dir.path());
    (dir, store)
}

fn opts(kv: &[(&str, &str)]) -> Vec<(String, String)> {
    kv.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

fn status<'a>(info: &'a VolumeInfo, key: &str) -> Option<&'a str> {
    info.status
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[test]
fn create_lays_out_the_volume_and_describes_it() {
    let (dir, store) = setup();
    let info = store.create("data", &[], 42).unwrap();
    assert_eq!(info.name, "data");
    assert_eq!(info.mountpoint.as_deref(), Some("volumes/data/data"));
    assert_eq!(info.created_at, 42);
    assert!(info.options.is_empty());
    assert_eq!(status(&info, "mounts"), Some("0"));

    let root = dir.path();
    assert_eq!(
        entries(&root.join("volumes/data")),
        ["data", "mounts", "volume.json"]
    );
    assert!(entries(&root.join("staging")).is_empty());
    let meta = VolumeMeta::from_json(
        "data",
        &fs::read(root.join("volumes/data/volume.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(meta.created_at, 42);

    assert_eq!(store.get("data").unwrap(), info);
    assert_eq!(
        store.path("data").unwrap().as_deref(),
        Some("volumes/data/data")
    );
    assert_eq!(store.list().unwrap(), vec![info]);
}

#[test]
fn create_is_idempotent_and_keeps_the_first_creation_time() {
    let (_dir, store) = setup();
    let first = store.create("v", &[], 1).unwrap();
    let again = store.create("v", &[], 2).unwrap();
    assert_eq!(again, first);
    assert_eq!(store.list().unwrap().len(), 1);
}

#[test]
fn create_with_other_options_than_stored_is_already_exists() {
    // Options are refused today, so plant a volume created by a (hypothetical) version that
    // accepted one: the comparison must still hold.
    let (dir, store) = setup();
    store.create("v", &[], 1).unwrap();
    let stored = VolumeMeta::new("v", 1, opts(&[("size", "1G")]));
    fs::write(
        dir.path().join("volumes/v/volume.json"),
        stored.to_json().unwrap(),
    )
    .unwrap();
    let err = store.create("v", &[], 2).unwrap_err();
    assert!(matches!(err, VolumeError::AlreadyExists { .. }), "{err}");
    assert_eq!(err.kind(), berth_plugin::ErrorKind::AlreadyExists);
}

#[test]
fn create_refuses_bad_names_and_any_option() {
    let (dir, store) = setup();
    for name in ["", "..", ".x", "a/b", "../escape"] {
        let err = store.create(name, &[], 0).unwrap_err();
        assert!(
            matches!(err, VolumeError::InvalidName { .. }),
            "{name:?}: {err}"
        );
    }
    for key in ["type", "device", "o"] {
        let err = store.create("v", &opts(&[(key, "x")]), 0).unwrap_err();
        assert!(
            matches!(err, VolumeError::UnsupportedOption { .. }),
            "{key}: {err}"
        );
        assert!(err.to_string().contains("cannot mount devices"));
    }
    let err = store.create("v", &opts(&[("size", "1G")]), 0).unwrap_err();
    assert!(matches!(err, VolumeError::UnknownOption { .. }), "{err}");
    assert_eq!(err.kind(), berth_plugin::ErrorKind::InvalidArgument);
    // Nothing was created by the refused calls.
    assert!(entries(&dir.path().join("volumes")).is_empty());
}

#[test]
fn mount_ids_are_recorded_once_and_released_idempotently() {
    let (dir, store) = setup();
    store.create("v", &[], 0).unwrap();
    let path = store.mount("v", "m1").unwrap();
    assert_eq!(path, "volumes/v/data");
    // A repeated mount id returns the same path and records nothing new.
    assert_eq!(store.mount("v", "m1").unwrap(), path);
    store.mount("v", "ctr:abc/1").unwrap();
    assert_eq!(
        entries(&dir.path().join("volumes/v/mounts")),
        ["=6374723a6162632f31", "m1"]
    );
    assert_eq!(status(&store.get("v").unwrap(), "mounts"), Some("2"));

    store.unmount("v", "m1").unwrap();
    store.unmount("v", "m1").unwrap();
    store.unmount("v", "never-mounted").unwrap();
    store.unmount("v", "").unwrap();
    store.unmount("v", &"x".repeat(1000)).unwrap();
    assert_eq!(status(&store.get("v").unwrap(), "mounts"), Some("1"));
}

#[test]
fn unknown_volumes_are_not_found_everywhere() {
    let (_dir, store) = setup();
    let checks: [(&str, VolumeError); 5] = [
        ("remove", store.remove("nope").unwrap_err()),
        ("mount", store.mount("nope", "m").unwrap_err()),
        ("unmount", store.unmount("nope", "m").unwrap_err()),
        ("path", store.path("nope").unwrap_err()),
        ("get", store.get("nope").unwrap_err()),
    ];
    for (op, err) in checks {
        assert!(matches!(err, VolumeError::NotFound { .. }), "{op}: {err}");
    }
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn invalid_mount_ids_are_refused_by_mount() {
    let (_dir, store) = setup();
    store.create("v", &[], 0).unwrap();
    let err = store.mount("v", "").unwrap_err();
    assert!(matches!(err, VolumeError::InvalidMountId { .. }), "{err}");
    assert!(store.mount("v", &":".repeat(200)).is_err());
}

#[test]
fn remove_is_refused_while_mounted_and_hands_the_data_to_the_host() {
    let (dir, store) = setup();
    store.create("v", &[], 0).unwrap();
    store.mount("v", "m1").unwrap();
    fs::write(dir.path().join("volumes/v/data/file"), b"payload").unwrap();

    let err = store.remove("v").unwrap_err();
    assert!(matches!(err, VolumeError::InUse { mounts: 1, .. }), "{err}");
    assert_eq!(err.kind(), berth_plugin::ErrorKind::FailedPrecondition);

    store.unmount("v", "m1").unwrap();
    let trash = store
        .remove("v")
        .unwrap()
        .expect("a directory for the host to delete");
    assert!(trash.starts_with("trash/"));
    assert!(!trash.contains(".."));
    assert_eq!(
        fs::read(dir.path().join(&trash).join("data/file")).unwrap(),
        b"payload"
    );
    assert!(!dir.path().join("volumes/v").exists());
    assert!(matches!(
        store.remove("v").unwrap_err(),
        VolumeError::NotFound { .. }
    ));
    assert!(store.list().unwrap().is_empty());

    // The name is free again, and the new volume does not see the old data.
    store.create("v", &[], 1).unwrap();
    assert!(entries(&dir.path().join("volumes/v/data")).is_empty());
}

#[test]
fn state_survives_a_new_instance() {
    let (dir, store) = setup();
    store.create("a", &[], 10).unwrap();
    store.create("b", &[], 20).unwrap();
    store.mount("a", "m").unwrap();
    drop(store);

    // What a re-instantiated component sees: only the directory.
    let store = VolumeStore::new(dir.path());
    let mut names: Vec<_> = store.list().unwrap().into_iter().map(|v| v.name).collect();
    names.sort();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(store.get("b").unwrap().created_at, 20);
    assert!(matches!(
        store.remove("a").unwrap_err(),
        VolumeError::InUse { .. }
    ));
    store.unmount("a", "m").unwrap();
    store.remove("a").unwrap();
}

#[test]
fn broken_volumes_stay_visible_and_removable() {
    let (dir, store) = setup();
    store.create("ok", &[], 1).unwrap();
    store.create("broken", &[], 2).unwrap();
    fs::write(dir.path().join("volumes/broken/volume.json"), b"{not json").unwrap();
    // Entries that are not volume names (an operator's junk) are skipped.
    fs::create_dir(dir.path().join("volumes/.junk")).unwrap();
    fs::write(dir.path().join("volumes/not a name"), b"").unwrap();
    fs::write(dir.path().join("volumes/plainfile"), b"").unwrap();

    let mut list = store.list().unwrap();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].name, "broken");
    assert_eq!(list[0].created_at, 0);
    assert!(status(&list[0], "error").unwrap().contains("volume.json"));
    assert_eq!(store.get("broken").unwrap(), list[0]);
    // Its data can still be reached, and creating it again reports the corruption.
    assert_eq!(store.mount("broken", "m").unwrap(), "volumes/broken/data");
    store.unmount("broken", "m").unwrap();
    let err = store.create("broken", &[], 3).unwrap_err();
    assert!(matches!(err, VolumeError::BadMeta { .. }), "{err}");
    assert_eq!(err.kind(), berth_plugin::ErrorKind::Internal);
    store.remove("broken").unwrap();
}

#[test]
fn mount_recreates_a_missing_mounts_directory_only_inside_the_volume() {
    let (dir, store) = setup();
    store.create("v", &[], 0).unwrap();
    fs::remove_dir(dir.path().join("volumes/v/mounts")).unwrap();
    store.mount("v", "m").unwrap();
    assert_eq!(status(&store.get("v").unwrap(), "mounts"), Some("1"));
}

#[test]
fn mount_reports_missing_data() {
    let (dir, store) = setup();
    store.create("v", &[], 0).unwrap();
    fs::remove_dir(dir.path().join("volumes/v/data")).unwrap();
    let err = store.mount("v", "m").unwrap_err();
    assert!(matches!(err, VolumeError::DataMissing { .. }), "{err}");
    // And nothing was recorded for it.
    assert_eq!(status(&store.get("v").unwrap(), "mounts"), Some("0"));
}

#[test]
fn leftover_staging_directories_are_swept_by_age() {
    let (dir, store) = setup();
    assert_eq!(store.sweep_staging(None).unwrap(), 0);
    let leftover = dir.path().join("staging/interrupted");
    fs::create_dir_all(leftover.join("data")).unwrap();
    fs::write(leftover.join("volume.json"), b"{}").unwrap();
    // Young: possibly a concurrent create in progress.
    assert_eq!(store.sweep_staging(None).unwrap(), 0);
    assert!(leftover.exists());
    assert_eq!(store.sweep_staging(Some(Duration::ZERO)).unwrap(), 1);
    assert!(!leftover.exists());
}
