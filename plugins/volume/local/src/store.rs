//! The volume operations on the state directory: everything the driver does, minus the WIT
//! glue. Rooted at an arbitrary directory so that unit tests run it on the host against a
//! temporary directory; the component roots it at `/state`.
//!
//! A volume exists exactly when `volumes/<name>` exists. That directory only ever appears whole
//! (built under `staging/`, then renamed into place) and disappears whole (renamed into
//! `trash/`), so each operation's effect is one rename, create or remove, made durable by
//! syncing the directory that changed. See [`crate::layout`] for the layout.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use berth_plugin::fs::{create_dir_all_synced, sync_dir, unique_name};
use berth_plugin::log;
use berth_plugin::volume::exports::berth::volume::driver::VolumeInfo;

use crate::error::VolumeError;
use crate::layout::{self, validate_name};
use crate::meta::VolumeMeta;

/// Docker `local` driver options, refused with a specific message (see
/// [`VolumeError::UnsupportedOption`]) instead of the generic unknown-option one.
const DOCKER_LOCAL_OPTIONS: [&str; 3] = ["type", "device", "o"];

/// Staging directories older than this are leftovers of creates interrupted by a discarded
/// instance; younger ones may be a concurrent instance's create in progress. Far longer than
/// any call deadline.
const STALE_STAGING_AGE: Duration = Duration::from_secs(3600);

/// The volumes of one state directory.
#[derive(Debug, Clone)]
pub struct VolumeStore {
    root: PathBuf,
}

impl VolumeStore {
    /// The store rooted at `root` (the component passes [`berth_plugin::fs::STATE_DIR`]).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Creates volume `name`, or returns it if it already exists with the same options.
    /// `created_at` (nanoseconds since the epoch) is recorded for a new volume.
    pub fn create(
        &self,
        name: &str,
        options: &[(String, String)],
        created_at: u64,
    ) -> Result<VolumeInfo, VolumeError> {
        validate_name(name)?;
        validate_options(options)?;
        if self.exists(name) {
            return self.existing_for_create(name, options);
        }

        self.ensure_dir(layout::VOLUMES_DIR)?;
        self.ensure_dir(layout::STAGING_DIR)?;
        let meta = VolumeMeta::new(name, created_at, options.to_vec());
        let staging = layout::staging_dir(&unique_name(""));
        if let Err(err) = self.build_volume_dir(&staging, &meta) {
            self.discard_staging(&staging);
            return Err(err);
        }
        // The publishing step: a rename onto a volume directory that exists (and, having been
        // published the same way, is never empty) fails, so a concurrent create of the same
        // name cannot be overwritten.
        match fs::rename(self.abs(&staging), self.abs(&layout::volume_dir(name))) {
            Ok(()) => {
                self.sync(layout::VOLUMES_DIR)?;
                log::info("volume created", &[("volume", name)]);
                Ok(self.info(name, Ok(meta)))
            }
            Err(err) => {
                self.discard_staging(&staging);
                if self.exists(name) {
                    // Lost a race with a concurrent create: same outcome as finding it first.
                    self.existing_for_create(name, options)
                } else {
                    Err(VolumeError::io("publishing", layout::volume_dir(name), err))
                }
            }
        }
    }

    /// Removes volume `name` from the driver's view and returns the directory (relative to the
    /// root) that the host deletes. Refused while mount ids are outstanding.
    pub fn remove(&self, name: &str) -> Result<Option<String>, VolumeError> {
        validate_name(name)?;
        self.require(name)?;
        let mounts = self.count_mounts(name)?;
        if mounts > 0 {
            return Err(VolumeError::InUse {
                name: name.to_owned(),
                mounts,
            });
        }
        self.ensure_dir(layout::TRASH_DIR)?;
        let trash = layout::trash_dir(&unique_name(""));
        match fs::rename(self.abs(&layout::volume_dir(name)), self.abs(&trash)) {
            Ok(()) => {}
            // A concurrent remove got there first.
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Err(VolumeError::NotFound {
                    name: name.to_owned(),
                });
            }
            Err(err) => {
                return Err(VolumeError::io(
                    "moving to trash",
                    layout::volume_dir(name),
                    err,
                ));
            }
        }
        self.sync(layout::VOLUMES_DIR)?;
        self.sync(layout::TRASH_DIR)?;
        log::info("volume removed", &[("volume", name), ("trash", &trash)]);
        // Deleting the data from inside the sandbox could take longer than the call deadline;
        // the host deletes it, without following symlinks, after this returns.
        Ok(Some(trash))
    }

    /// Records the outstanding mount `mount_id` of volume `name` and returns the directory
    /// (relative to the root) to bind-mount. Repeating a known `mount_id` returns the same path.
    pub fn mount(&self, name: &str, mount_id: &str) -> Result<String, VolumeError> {
        validate_name(name)?;
        let entry = layout::mount_entry(mount_id)?;
        self.require(name)?;
        let data = layout::data_dir(name);
        if !self.abs(&data).is_dir() {
            return Err(VolumeError::DataMissing {
                name: name.to_owned(),
            });
        }
        let mounts = layout::mounts_dir(name);
        // Only the mounts directory itself, never its parents: if the volume was removed since
        // the check above, recreating `volumes/<name>` would conjure a volume without data.
        match fs::create_dir(self.abs(&mounts)) {
            Ok(()) => self.sync(&layout::volume_dir(name))?,
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Err(VolumeError::NotFound {
                    name: name.to_owned(),
                });
            }
            Err(err) => return Err(VolumeError::io("creating", mounts, err)),
        }
        let record = format!("{mounts}/{entry}");
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.abs(&record))
        {
            Ok(_) => self.sync(&mounts)?,
            // A repeated mount: already recorded.
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(VolumeError::io("recording mount", record, err)),
        }
        Ok(data)
    }

    /// Forgets the mount `mount_id` of volume `name`. Unknown ids are accepted, since after a
    /// daemon restart the host releases ids whether or not the driver remembers them.
    pub fn unmount(&self, name: &str, mount_id: &str) -> Result<(), VolumeError> {
        validate_name(name)?;
        self.require(name)?;
        // An id that could never have been recorded is, by definition, unknown.
        let Ok(entry) = layout::mount_entry(mount_id) else {
            return Ok(());
        };
        let mounts = layout::mounts_dir(name);
        let record = format!("{mounts}/{entry}");
        match fs::remove_file(self.abs(&record)) {
            Ok(()) => self.sync(&mounts),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(VolumeError::io("removing mount record", record, err)),
        }
    }

    /// Where volume `name`'s data lives, relative to the root.
    pub fn path(&self, name: &str) -> Result<Option<String>, VolumeError> {
        validate_name(name)?;
        self.require(name)?;
        Ok(Some(layout::data_dir(name)))
    }

    /// Describes volume `name`.
    pub fn get(&self, name: &str) -> Result<VolumeInfo, VolumeError> {
        validate_name(name)?;
        self.require(name)?;
        let meta = self.read_meta(name);
        Ok(self.info(name, meta))
    }

    /// Describes every volume.
    ///
    /// A volume whose metadata is unusable is still listed (with the reason in its status) so
    /// that it stays visible to the host's reconciliation and can be removed; entries of
    /// `volumes/` that are not directories named like volumes are skipped with a warning.
    pub fn list(&self) -> Result<Vec<VolumeInfo>, VolumeError> {
        let entries = match fs::read_dir(self.abs(layout::VOLUMES_DIR)) {
            Ok(entries) => entries,
            // Nothing created yet.
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(VolumeError::io("listing", layout::VOLUMES_DIR, err)),
        };
        let mut volumes = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| VolumeError::io("listing", layout::VOLUMES_DIR, e))?;
            let file_name = entry.file_name();
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            let Some(name) = file_name
                .to_str()
                .filter(|n| is_dir && validate_name(n).is_ok())
            else {
                log::warn(
                    "skipping an entry of volumes/ that is not a volume directory",
                    &[("entry", &file_name.to_string_lossy())],
                );
                continue;
            };
            let meta = self.read_meta(name);
            volumes.push(self.info(name, meta));
        }
        Ok(volumes)
    }

    /// Deletes staging directories left by creates that a discarded instance never finished.
    /// Returns how many were removed.
    pub fn sweep_staging(&self, min_age: Option<Duration>) -> Result<usize, VolumeError> {
        let min_age = min_age.unwrap_or(STALE_STAGING_AGE);
        let dir = self.abs(layout::STAGING_DIR);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(err) => return Err(VolumeError::io("listing", layout::STAGING_DIR, err)),
        };
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(|e| VolumeError::io("listing", layout::STAGING_DIR, e))?;
            let age = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .unwrap_or_default();
            if age < min_age {
                continue;
            }
            // A staging directory holds only the driver's own files and an empty data
            // directory (it was never mounted), so deleting it here is quick and follows no
            // container-made symlinks.
            match fs::remove_dir_all(entry.path()) {
                Ok(()) => removed += 1,
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => {
                    let path = format!(
                        "{}/{}",
                        layout::STAGING_DIR,
                        entry.file_name().to_string_lossy()
                    );
                    return Err(VolumeError::io("removing", path, err));
                }
            }
        }
        Ok(removed)
    }

    fn abs(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn exists(&self, name: &str) -> bool {
        self.abs(&layout::volume_dir(name)).is_dir()
    }

    fn require(&self, name: &str) -> Result<(), VolumeError> {
        if self.exists(name) {
            Ok(())
        } else {
            Err(VolumeError::NotFound {
                name: name.to_owned(),
            })
        }
    }

    fn ensure_dir(&self, rel: &str) -> Result<(), VolumeError> {
        create_dir_all_synced(&self.abs(rel)).map_err(|e| VolumeError::io("creating", rel, e))
    }

    fn sync(&self, rel: &str) -> Result<(), VolumeError> {
        sync_dir(&self.abs(rel)).map_err(|e| VolumeError::io("syncing", rel, e))
    }

    /// The answer to `create` for a volume that exists: itself if the options match.
    fn existing_for_create(
        &self,
        name: &str,
        options: &[(String, String)],
    ) -> Result<VolumeInfo, VolumeError> {
        let meta = self.read_meta(name)?;
        if meta.options != options {
            return Err(VolumeError::AlreadyExists {
                name: name.to_owned(),
            });
        }
        Ok(self.info(name, Ok(meta)))
    }

    /// Fills `staging` with a complete volume directory and makes it durable.
    fn build_volume_dir(&self, staging: &str, meta: &VolumeMeta) -> Result<(), VolumeError> {
        let json = meta.to_json().map_err(|e| VolumeError::BadMeta {
            name: meta.name.clone(),
            path: staging.to_owned(),
            reason: e.to_string(),
        })?;
        for rel in [
            staging.to_owned(),
            format!("{staging}/{}", layout::DATA_DIR),
            format!("{staging}/{}", layout::MOUNTS_DIR),
        ] {
            fs::create_dir(self.abs(&rel)).map_err(|e| VolumeError::io("creating", rel, e))?;
        }
        let meta_rel = format!("{staging}/{}", layout::META_FILE);
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.abs(&meta_rel))
            .and_then(|mut f| f.write_all(&json).and_then(|()| f.sync_all()));
        written.map_err(|e| VolumeError::io("writing", meta_rel, e))?;
        self.sync(staging)
    }

    fn discard_staging(&self, staging: &str) {
        if let Err(err) = fs::remove_dir_all(self.abs(staging)) {
            // Harmless: a later sweep removes it.
            log::warn(
                "could not remove a staging directory",
                &[("path", staging), ("error", &err.to_string())],
            );
        }
    }

    fn read_meta(&self, name: &str) -> Result<VolumeMeta, VolumeError> {
        let rel = layout::meta_file(name);
        let bad = |reason: String| VolumeError::BadMeta {
            name: name.to_owned(),
            path: rel.clone(),
            reason,
        };
        let json = fs::read(self.abs(&rel)).map_err(|e| bad(e.to_string()))?;
        VolumeMeta::from_json(name, &json).map_err(bad)
    }

    /// Number of outstanding mount ids; a volume without a mounts directory has none.
    fn count_mounts(&self, name: &str) -> Result<usize, VolumeError> {
        let rel = layout::mounts_dir(name);
        match fs::read_dir(self.abs(&rel)) {
            Ok(entries) => {
                let mut n = 0;
                for entry in entries {
                    entry.map_err(|e| VolumeError::io("listing", rel.clone(), e))?;
                    n += 1;
                }
                Ok(n)
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(err) => Err(VolumeError::io("listing", rel, err)),
        }
    }

    /// The WIT description of volume `name`, degraded (no creation time or options, the reason
    /// in the status) when its metadata is unusable.
    fn info(&self, name: &str, meta: Result<VolumeMeta, VolumeError>) -> VolumeInfo {
        let mut status = Vec::new();
        match self.count_mounts(name) {
            Ok(n) => status.push(("mounts".to_owned(), n.to_string())),
            Err(err) => status.push(("error".to_owned(), err.to_string())),
        }
        let (created_at, options) = match meta {
            Ok(meta) => (meta.created_at, meta.options),
            Err(err) => {
                let reason = err.to_string();
                log::warn(
                    "volume has unusable metadata",
                    &[("volume", name), ("error", &reason)],
                );
                status.push(("error".to_owned(), reason));
                (0, Vec::new())
            }
        };
        VolumeInfo {
            name: name.to_owned(),
            mountpoint: Some(layout::data_dir(name)),
            created_at,
            status,
            options,
        }
    }
}

/// Checks `create` options: this driver accepts none. Docker `local` options get a message
/// that says why they cannot work here.
fn validate_options(options: &[(String, String)]) -> Result<(), VolumeError> {
    match options.first() {
        None => Ok(()),
        Some((key, _)) if DOCKER_LOCAL_OPTIONS.contains(&key.as_str()) => {
            Err(VolumeError::UnsupportedOption { key: key.clone() })
        }
        Some((key, _)) => Err(VolumeError::UnknownOption { key: key.clone() }),
    }
}

#[cfg(test)]
mod tests;
