//! The driver against a temporary state directory, on the host (`cargo test`).

use std::fs;

use berth_plugin::ErrorKind;

use super::*;

fn setup() -> (tempfile::TempDir, Volumes) {
    let dir = tempfile::tempdir().unwrap();
    let volumes = Volumes {
        root: dir.path().to_path_buf(),
    };
    (dir, volumes)
}

fn pairs(kv: &[(&str, &str)]) -> Vec<(String, String)> {
    kv.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn status<'a>(info: &'a VolumeInfo, key: &str) -> Option<&'a str> {
    info.status
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[test]
fn create_lays_out_the_volume_and_describes_it() {
    let (dir, volumes) = setup();
    let info = volumes.create("data", &[], 42).unwrap();
    assert_eq!(info.name, "data");
    assert_eq!(info.mountpoint.as_deref(), Some("volumes/data/data"));
    assert_eq!(info.created_at, 42);
    assert_eq!(status(&info, "mounts"), Some("0"));
    let mut files: Vec<_> = fs::read_dir(dir.path().join("volumes/data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(files, ["data", "meta.json", "mounts"]);

    assert_eq!(volumes.get("data").unwrap(), info);
    assert_eq!(
        volumes.path("data").unwrap().as_deref(),
        Some("volumes/data/data")
    );
    assert_eq!(volumes.list().unwrap(), vec![info]);
}

#[test]
fn create_is_idempotent_and_refuses_other_options() {
    let (dir, volumes) = setup();
    let first = volumes.create("v", &[], 1).unwrap();
    assert_eq!(volumes.create("v", &[], 2).unwrap(), first);
    // No option is accepted today, so plant the metadata of a volume created with one.
    let planted = r#"{"created_at":1,"options":[["size","1G"]]}"#;
    fs::write(dir.path().join("volumes/v/meta.json"), planted).unwrap();
    let err = volumes.create("v", &[], 3).unwrap_err();
    assert_eq!(err.kind, ErrorKind::AlreadyExists, "{}", err.message);
}

#[test]
fn options_and_bad_names_are_invalid_arguments() {
    let (dir, volumes) = setup();
    let err = volumes
        .create("v", &pairs(&[("size", "1G")]), 0)
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
    assert!(err.message.contains("\"size\""), "{}", err.message);
    for name in ["", ".", "..", ".x", "a/b", "../escape", &"x".repeat(256)] {
        let err = volumes.create(name, &[], 0).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument, "{name:?}");
        assert_eq!(
            volumes.get(name).unwrap_err().kind,
            ErrorKind::InvalidArgument
        );
    }
    assert!(!dir.path().join("volumes").exists());
}

#[test]
fn unknown_volumes_are_not_found() {
    let (_dir, volumes) = setup();
    let errors = [
        volumes.remove("nope").unwrap_err(),
        volumes.mount("nope", "m").unwrap_err(),
        volumes.unmount("nope", "m").unwrap_err(),
        volumes.path("nope").unwrap_err(),
        volumes.get("nope").unwrap_err(),
    ];
    for err in errors {
        assert_eq!(err.kind, ErrorKind::NotFound, "{}", err.message);
    }
    assert!(volumes.list().unwrap().is_empty());
}

#[test]
fn mount_ids_are_files_and_unmount_is_idempotent() {
    let (dir, volumes) = setup();
    volumes.create("v", &[], 0).unwrap();
    assert_eq!(volumes.mount("v", "a/b").unwrap(), "volumes/v/data");
    assert_eq!(volumes.mount("v", "a/b").unwrap(), "volumes/v/data");
    assert!(dir.path().join("volumes/v/mounts/612f62").is_file());
    volumes.mount("v", &"x".repeat(127)).unwrap();
    assert_eq!(status(&volumes.get("v").unwrap(), "mounts"), Some("2"));

    for bad in [String::new(), "x".repeat(128)] {
        let err = volumes.mount("v", &bad).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
        volumes.unmount("v", &bad).unwrap();
    }
    volumes.unmount("v", "a/b").unwrap();
    volumes.unmount("v", "a/b").unwrap();
    volumes.unmount("v", "never-mounted").unwrap();
    assert_eq!(status(&volumes.get("v").unwrap(), "mounts"), Some("1"));
}

#[test]
fn remove_waits_for_unmount_and_hands_the_directory_to_the_host() {
    let (dir, volumes) = setup();
    volumes.create("v", &[], 0).unwrap();
    volumes.mount("v", "m").unwrap();
    fs::write(dir.path().join("volumes/v/data/file"), b"payload").unwrap();
    let err = volumes.remove("v").unwrap_err();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition);

    volumes.unmount("v", "m").unwrap();
    let trash = volumes.remove("v").unwrap().unwrap();
    assert!(
        trash.starts_with("trash/") && !trash.contains(".."),
        "{trash}"
    );
    assert_eq!(
        fs::read(dir.path().join(&trash).join("data/file")).unwrap(),
        b"payload"
    );
    assert_eq!(volumes.remove("v").unwrap_err().kind, ErrorKind::NotFound);
    assert!(volumes.list().unwrap().is_empty());

    // The name is free again, with fresh data.
    volumes.create("v", &[], 1).unwrap();
    assert_eq!(
        fs::read_dir(dir.path().join("volumes/v/data"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn state_survives_a_new_instance() {
    let (dir, volumes) = setup();
    volumes.create("a", &[], 10).unwrap();
    volumes.mount("a", "m").unwrap();
    drop(volumes);
    // What a re-instantiated component sees: only the directory.
    let volumes = Volumes {
        root: dir.path().to_path_buf(),
    };
    assert_eq!(volumes.get("a").unwrap().created_at, 10);
    assert_eq!(
        volumes.remove("a").unwrap_err().kind,
        ErrorKind::FailedPrecondition
    );
}

#[test]
fn unfinished_creates_are_invisible_and_completed_by_create() {
    let (dir, volumes) = setup();
    fs::create_dir_all(dir.path().join("volumes/half/data")).unwrap();
    fs::write(dir.path().join("volumes/stray-file"), b"").unwrap();
    assert!(volumes.list().unwrap().is_empty());
    assert_eq!(volumes.get("half").unwrap_err().kind, ErrorKind::NotFound);
    volumes.create("half", &[], 5).unwrap();
    assert_eq!(volumes.list().unwrap().len(), 1);
}

#[test]
fn corrupt_metadata_stays_visible_and_removable() {
    let (dir, volumes) = setup();
    volumes.create("v", &[], 7).unwrap();
    fs::write(dir.path().join("volumes/v/meta.json"), b"{").unwrap();
    let listed = volumes.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert!(status(&listed[0], "error").unwrap().contains("meta.json"));
    assert_eq!(
        volumes.create("v", &[], 8).unwrap_err().kind,
        ErrorKind::Internal
    );
    volumes.remove("v").unwrap();
}

#[test]
fn configuration_and_capabilities() {
    <Driver as plugin::Guest>::configure(Vec::new()).unwrap();
    let err = <Driver as plugin::Guest>::configure(pairs(&[("root", "/x")])).unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
    assert!(err.message.contains("\"root\""));
    assert_eq!(
        <Driver as driver::Guest>::capabilities().scope,
        Scope::Local
    );
}
