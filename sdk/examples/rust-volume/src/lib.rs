//! A minimal berth volume driver: the smallest complete implementation of
//! `berth:volume/volume-driver@1.0.0`, written to be copied as the start of your own driver.
//!
//! berthd preopens the plugin's state directory at `/state`; everything lives there:
//!
//! ```text
//! volumes/<name>/meta.json          creation time and options, written with fs::write_atomic
//! volumes/<name>/mounts/<hex id>    one empty file per outstanding mount id
//! volumes/<name>/data/              the directory berthd bind-mounts into containers
//! trash/<unique>/                   a removed volume, deleted by berthd after `remove` returns
//! ```
//!
//! A volume exists exactly when its `meta.json` does. Nothing is kept in memory, because berthd
//! may discard the instance between any two calls and may run several instances at once; one
//! file per mount id (instead of a list in `meta.json`) means concurrent instances never
//! rewrite each other's records.
//!
//! Options (`berth volume create -o`): none; any key is refused with `invalid-argument` naming
//! it. Configuration keys: none. `plugins/volume/local` is the full driver this one trims down
//! (it builds each volume in a staging directory and renames it into place, which also claims
//! the name, and sweeps what interrupted creates leave).

use std::fs::{self, OpenOptions};
use std::io;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use berth_plugin::plugin::{self, PluginInfo};
use berth_plugin::volume::exports::berth::volume::driver::{self, VolumeCapabilities, VolumeInfo};
use berth_plugin::{Error, Scope, config, fs::STATE_DIR, log};
use serde::{Deserialize, Serialize};

/// The `-o` keys `create` accepts. Adding one here makes it stored and compared; check its
/// value in `create` before anything is written.
const OPTION_KEYS: &[&str] = &[];
const VOLUMES: &str = "volumes";
const TRASH: &str = "trash";

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    created_at: u64,
    options: Vec<(String, String)>,
}

/// The volumes of one state directory: `/state` in the component, a temporary directory in the
/// unit tests.
#[derive(Debug)]
struct Volumes {
    root: PathBuf,
}

impl Volumes {
    fn create(
        &self,
        name: &str,
        options: &[(String, String)],
        now: u64,
    ) -> Result<VolumeInfo, Error> {
        check_name(name)?;
        config::check_keys(options, OPTION_KEYS, "option")?;
        // Sorted, so that the same options given in another order are the same volume.
        let mut options = options.to_vec();
        options.sort();
        if self.exists(name) {
            let meta = self.meta(name)?;
            if meta.options != options {
                return Err(Error::already_exists(format!(
                    "volume {name:?} already exists with different options"
                )));
            }
            return Ok(self.info(name, Ok(meta)));
        }
        // A create interrupted before meta.json was written left these behind, invisible and
        // never mounted; making them again completes it.
        for sub in ["data", "mounts"] {
            let rel = format!("{VOLUMES}/{name}/{sub}");
            berth_plugin::fs::create_dir_all_synced(&self.abs(&rel))
                .map_err(|e| Error::from_io(&format!("creating {rel}"), &e))?;
        }
        let meta = Meta {
            created_at: now,
            options,
        };
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| Error::internal(e.to_string()))?;
        // Written last, so the volume appears complete. Two concurrent creates of one name can
        // both get here; with no options accepted they differ only in created_at. A driver that
        // accepts options must claim the name first (plugins/volume/local renames a finished
        // directory into place, which fails if the name is taken).
        let rel = meta_file(name);
        berth_plugin::fs::write_atomic(&self.abs(&rel), &json)
            .map_err(|e| Error::from_io(&format!("writing {rel}"), &e))?;
        log::info("volume created", &[("volume", name)]);
        Ok(self.info(name, Ok(meta)))
    }

    fn remove(&self, name: &str) -> Result<Option<String>, Error> {
        self.require(name)?;
        // The WIT requires this refusal although berthd calls remove only when no container
        // uses the volume; for the same reason no mount races the check.
        let mounts = self.mount_count(name)?;
        if mounts > 0 {
            return Err(Error::failed_precondition(format!(
                "volume {name:?} is in use: {mounts} outstanding mount(s)"
            )));
        }
        berth_plugin::fs::create_dir_all_synced(&self.abs(TRASH))
            .map_err(|e| Error::from_io("creating trash", &e))?;
        let trash = format!("{TRASH}/{}", berth_plugin::fs::unique_name(""));
        // One rename removes the metadata and the data together, so a crash leaves the volume
        // either whole or gone. Deleting the data here could outlast the call deadline, so
        // berthd deletes the trash directory (without following symlinks) once this returns.
        match fs::rename(self.abs(&format!("{VOLUMES}/{name}")), self.abs(&trash)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_found(name)),
            Err(e) => return Err(Error::from_io(&format!("moving {name:?} to trash"), &e)),
        }
        self.sync(VOLUMES)?;
        self.sync(TRASH)?;
        log::info("volume removed", &[("volume", name)]);
        Ok(Some(trash))
    }

    fn mount(&self, name: &str, mount_id: &str) -> Result<String, Error> {
        self.require(name)?;
        let record = mount_record(name, mount_id).ok_or_else(|| {
            Error::invalid_argument(format!(
                "mount id of {} bytes cannot be recorded (1 to 127 bytes)",
                mount_id.len()
            ))
        })?;
        let data = data_dir(name);
        if !self.abs(&data).is_dir() {
            return Err(Error::internal(format!(
                "data directory of {name:?} is missing"
            )));
        }
        // Not create_new: a repeated mount id is the same mount and gets the same path.
        let opened = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.abs(&record));
        match opened {
            Ok(_) => {}
            // The volume was removed since the check above.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_found(name)),
            Err(e) => return Err(Error::from_io(&format!("recording mount {record}"), &e)),
        }
        self.sync(&format!("{VOLUMES}/{name}/mounts"))?;
        Ok(data)
    }

    fn unmount(&self, name: &str, mount_id: &str) -> Result<(), Error> {
        self.require(name)?;
        // Unknown ids succeed: after a restart berthd releases ids this driver may never have
        // recorded, and an id that cannot be a file name never was.
        let Some(record) = mount_record(name, mount_id) else {
            return Ok(());
        };
        match fs::remove_file(self.abs(&record)) {
            Ok(()) => self.sync(&format!("{VOLUMES}/{name}/mounts")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::from_io(&format!("removing {record}"), &e)),
        }
    }

    fn path(&self, name: &str) -> Result<Option<String>, Error> {
        self.require(name)?;
        Ok(Some(data_dir(name)))
    }

    fn get(&self, name: &str) -> Result<VolumeInfo, Error> {
        self.require(name)?;
        Ok(self.info(name, self.meta(name)))
    }

    fn list(&self) -> Result<Vec<VolumeInfo>, Error> {
        let entries = match fs::read_dir(self.abs(VOLUMES)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::from_io("listing volumes", &e)),
        };
        let mut volumes = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::from_io("listing volumes", &e))?;
            // Skips what is not a volume: stray files and unfinished creates.
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if check_name(&name).is_ok() && self.exists(&name) {
                volumes.push(self.info(&name, self.meta(&name)));
            }
        }
        Ok(volumes)
    }

    fn abs(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn exists(&self, name: &str) -> bool {
        self.abs(&meta_file(name)).is_file()
    }

    /// Every operation on an existing volume starts here: the name becomes a path component,
    /// so it is checked even though berthd validated it already.
    fn require(&self, name: &str) -> Result<(), Error> {
        check_name(name)?;
        if self.exists(name) {
            Ok(())
        } else {
            Err(not_found(name))
        }
    }

    fn meta(&self, name: &str) -> Result<Meta, Error> {
        let rel = meta_file(name);
        let json =
            fs::read(self.abs(&rel)).map_err(|e| Error::from_io(&format!("reading {rel}"), &e))?;
        serde_json::from_slice(&json).map_err(|e| Error::internal(format!("{rel}: {e}")))
    }

    fn mount_count(&self, name: &str) -> Result<usize, Error> {
        match fs::read_dir(self.abs(&format!("{VOLUMES}/{name}/mounts"))) {
            Ok(entries) => Ok(entries.count()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(Error::from_io(&format!("listing mounts of {name:?}"), &e)),
        }
    }

    fn sync(&self, rel: &str) -> Result<(), Error> {
        berth_plugin::fs::sync_dir(&self.abs(rel))
            .map_err(|e| Error::from_io(&format!("syncing {rel}"), &e))
    }

    /// A volume with unreadable metadata is still described (the reason in its status), so it
    /// stays visible to berthd's reconciliation and can be removed.
    fn info(&self, name: &str, meta: Result<Meta, Error>) -> VolumeInfo {
        let mut status = vec![match self.mount_count(name) {
            Ok(n) => ("mounts".to_owned(), n.to_string()),
            Err(e) => ("error".to_owned(), e.message),
        }];
        let meta = meta.unwrap_or_else(|e| {
            status.push(("error".to_owned(), e.message));
            Meta {
                created_at: 0,
                options: Vec::new(),
            }
        });
        VolumeInfo {
            name: name.to_owned(),
            mountpoint: Some(data_dir(name)),
            created_at: meta.created_at,
            status,
            options: meta.options,
        }
    }
}

/// berth's volume name rule, `[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}`: a name that passes is one path
/// component, never `.` or `..`.
fn check_name(name: &str) -> Result<(), Error> {
    let mut bytes = name.bytes();
    let ok = name.len() <= 255
        && bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_argument(format!(
            "invalid volume name {name:?}"
        )))
    }
}

fn not_found(name: &str) -> Error {
    Error::not_found(format!("volume {name:?} not found"))
}

// Paths given to berthd are relative to the state directory, as the WIT requires.
fn data_dir(name: &str) -> String {
    format!("{VOLUMES}/{name}/data")
}

fn meta_file(name: &str) -> String {
    format!("{VOLUMES}/{name}/meta.json")
}

/// `volumes/<name>/mounts/<hex of mount_id>`. Mount ids are opaque host strings, so they are
/// hex-encoded to be safe file names; `None` for ids that would not fit a 255-byte name.
fn mount_record(name: &str, mount_id: &str) -> Option<String> {
    if mount_id.is_empty() || mount_id.len() > 127 {
        return None;
    }
    let hex: String = mount_id.bytes().map(|b| format!("{b:02x}")).collect();
    Some(format!("{VOLUMES}/{name}/mounts/{hex}"))
}

/// The exported interfaces; every call works on `/state` alone.
struct Driver;

fn volumes() -> Volumes {
    Volumes {
        root: PathBuf::from(STATE_DIR),
    }
}

impl plugin::Guest for Driver {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "rust-volume".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            description: "Example volume driver: directories in the plugin's state directory"
                .to_owned(),
        }
    }

    fn configure(config: Vec<(String, String)>) -> Result<(), Error> {
        config::check_keys(&config, &[], "configuration key")
    }
}

impl driver::Guest for Driver {
    fn create(name: String, options: Vec<(String, String)>) -> Result<VolumeInfo, Error> {
        // 0 is the WIT's "unknown" for a clock before the epoch.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        volumes().create(&name, &options, u64::try_from(now).unwrap_or(u64::MAX))
    }

    fn remove(name: String) -> Result<Option<String>, Error> {
        volumes().remove(&name)
    }

    fn mount(name: String, mount_id: String) -> Result<String, Error> {
        volumes().mount(&name, &mount_id)
    }

    fn unmount(name: String, mount_id: String) -> Result<(), Error> {
        volumes().unmount(&name, &mount_id)
    }

    fn path(name: String) -> Result<Option<String>, Error> {
        volumes().path(&name)
    }

    fn get(name: String) -> Result<VolumeInfo, Error> {
        volumes().get(&name)
    }

    fn list() -> Result<Vec<VolumeInfo>, Error> {
        volumes().list()
    }

    fn capabilities() -> VolumeCapabilities {
        VolumeCapabilities {
            scope: Scope::Local,
        }
    }
}

berth_plugin::export_volume_driver!(Driver);

#[cfg(test)]
mod tests;
