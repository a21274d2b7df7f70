//! The on-disk layout of the driver's state directory, and the validation of everything that
//! becomes a path component in it (volume names, mount ids).
//!
//! ```text
//! /state/
//!   volumes/<name>/             one directory per volume; renamed in and out as a whole
//!     volume.json               metadata (VolumeMeta), written once before the volume appears
//!     mounts/<mount-entry>      one empty file per outstanding mount id
//!     data/                     the volume's data: the only directory the host bind-mounts
//!   staging/<unique>/           a volume being created, renamed to volumes/<name> when complete
//!   trash/<unique>/             a removed volume, deleted by the host after `remove` returns
//! ```
//!
//! Every fact about a volume is its own directory entry, so each operation is a single
//! create, remove or rename and no file is ever rewritten: a crash at any point leaves either
//! the state before or the state after, and concurrent instances of the plugin (which the host
//! may run) never lose each other's updates. Metadata and mount records sit beside `data/`, never
//! inside it, because containers can write anything into `data/`.
//!
//! All paths handed to the host are relative to the state directory (`volumes/<name>/data`,
//! `trash/<unique>`), as `berth:volume/driver` requires.

use std::fmt::Write as _;

use crate::error::VolumeError;

/// Directory of live volumes.
pub const VOLUMES_DIR: &str = "volumes";
/// Directory of volumes under construction.
pub const STAGING_DIR: &str = "staging";
/// Directory of removed volumes awaiting deletion by the host.
pub const TRASH_DIR: &str = "trash";
/// Metadata file inside a volume directory.
pub const META_FILE: &str = "volume.json";
/// Directory of mount records inside a volume directory.
pub const MOUNTS_DIR: &str = "mounts";
/// Data directory inside a volume directory.
pub const DATA_DIR: &str = "data";

/// Longest volume name berth accepts (`[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}`).
pub const MAX_NAME_LEN: usize = 255;

/// Longest file name Linux accepts (NAME_MAX), the limit for a mount record's name.
const NAME_MAX: usize = 255;

/// Checks `name` against berth's volume name rule, `[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}`.
///
/// The host validates names before calling, but a name becomes a path component here, so the
/// driver does not rely on that: a name passing this check is one component that is neither
/// `.` nor `..` (it starts with a letter or digit) and contains no `/`.
pub fn validate_name(name: &str) -> Result<(), VolumeError> {
    let mut bytes = name.bytes();
    let valid = name.len() <= MAX_NAME_LEN
        && bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(VolumeError::InvalidName {
            name: name.to_owned(),
        })
    }
}

/// `volumes/<name>`: the volume's directory.
pub fn volume_dir(name: &str) -> String {
    format!("{VOLUMES_DIR}/{name}")
}

/// `volumes/<name>/volume.json`.
pub fn meta_file(name: &str) -> String {
    format!("{VOLUMES_DIR}/{name}/{META_FILE}")
}

/// `volumes/<name>/mounts`.
pub fn mounts_dir(name: &str) -> String {
    format!("{VOLUMES_DIR}/{name}/{MOUNTS_DIR}")
}

/// `volumes/<name>/data`: what `mount` and `path` return and the host bind-mounts.
pub fn data_dir(name: &str) -> String {
    format!("{VOLUMES_DIR}/{name}/{DATA_DIR}")
}

/// `staging/<unique>`.
pub fn staging_dir(unique: &str) -> String {
    format!("{STAGING_DIR}/{unique}")
}

/// `trash/<unique>`: what `remove` returns for the host to delete.
pub fn trash_dir(unique: &str) -> String {
    format!("{TRASH_DIR}/{unique}")
}

/// The file name recording the outstanding mount `mount_id` in `volumes/<name>/mounts/`.
///
/// Mount ids are opaque host strings. Ids made of `[A-Za-z0-9_.-]` that start with a letter or
/// digit are used as they are (readable when inspecting the state directory); any other id is
/// hex-encoded behind a `=` prefix, which plain ids cannot start with, so two different ids
/// never share a file. Ids whose record name would exceed NAME_MAX are refused with
/// `invalid-argument` rather than shortened, because a shortened (hashed) name could collide.
pub fn mount_entry(mount_id: &str) -> Result<String, VolumeError> {
    let mut bytes = mount_id.bytes();
    let plain = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    let entry = if plain {
        mount_id.to_owned()
    } else {
        let mut hex = String::with_capacity(1 + 2 * mount_id.len());
        hex.push('=');
        for b in mount_id.bytes() {
            // Writing into a String cannot fail.
            let _ = write!(hex, "{b:02x}");
        }
        hex
    };
    if mount_id.is_empty() || entry.len() > NAME_MAX {
        return Err(VolumeError::InvalidMountId {
            len: mount_id.len(),
        });
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_berth_volume_names() {
        for name in ["a", "data", "my_vol-1.2", "0", "a..b", &"x".repeat(255)] {
            validate_name(name).unwrap_or_else(|e| panic!("{name:?}: {e}"));
        }
    }

    #[test]
    fn rejects_names_that_are_not_one_safe_component() {
        for name in [
            "",
            ".",
            "..",
            ".hidden",
            "-x",
            "_x",
            "a/b",
            "../etc",
            "a b",
            "é",
            "a\0",
            &"x".repeat(256),
        ] {
            assert!(
                matches!(validate_name(name), Err(VolumeError::InvalidName { .. })),
                "{name:?} accepted"
            );
        }
    }

    #[test]
    fn paths_are_relative_and_canonical() {
        assert_eq!(volume_dir("v"), "volumes/v");
        assert_eq!(meta_file("v"), "volumes/v/volume.json");
        assert_eq!(mounts_dir("v"), "volumes/v/mounts");
        assert_eq!(data_dir("v"), "volumes/v/data");
        assert_eq!(staging_dir("u"), "staging/u");
        assert_eq!(trash_dir("u"), "trash/u");
        // The longest name still gives a path far below the WIT's 4096-byte limit.
        let longest = data_dir(&"x".repeat(MAX_NAME_LEN));
        assert!(longest.len() < 300);
        assert!(!longest.starts_with('/'));
    }

    #[test]
    fn plain_mount_ids_are_kept() {
        assert_eq!(mount_entry("abc123").unwrap(), "abc123");
        assert_eq!(mount_entry("c0ffee.1-x_y").unwrap(), "c0ffee.1-x_y");
    }

    #[test]
    fn other_mount_ids_are_hex_encoded_without_collisions() {
        assert_eq!(mount_entry("a/b").unwrap(), "=612f62");
        assert_eq!(mount_entry("..").unwrap(), "=2e2e");
        assert_eq!(mount_entry(".x").unwrap(), "=2e78");
        // An id that looks like an encoding is itself encoded ('=' is not plain).
        assert_eq!(mount_entry("=2e2e").unwrap(), "=3d32653265");
        assert_ne!(mount_entry("a:b").unwrap(), mount_entry("a;b").unwrap());
    }

    #[test]
    fn unusable_mount_ids_are_refused() {
        assert!(matches!(
            mount_entry(""),
            Err(VolumeError::InvalidMountId { len: 0 })
        ));
        mount_entry(&"a".repeat(255)).unwrap();
        assert!(mount_entry(&"a".repeat(256)).is_err());
        // Encoded ids double in length plus the prefix: 127 bytes fit, 128 do not.
        mount_entry(&":".repeat(127)).unwrap();
        assert!(mount_entry(&":".repeat(128)).is_err());
    }
}
