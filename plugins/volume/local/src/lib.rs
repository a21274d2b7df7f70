//! berth's default `local` volume driver, a WebAssembly component implementing
//! `berth:volume/volume-driver@1.0.0`.
//!
//! A volume is a directory in the plugin's state directory (preopened by berthd at `/state`):
//! its data lives in `volumes/<name>/data`, which berthd bind-mounts into containers, and its
//! metadata and outstanding mount ids beside it (layout and crash-safety argument in the
//! `layout` module). Everything is on disk, so the host can discard and re-create the instance
//! at any time, and concurrent instances of the plugin stay consistent.
//!
//! This module is only the WIT glue: it roots a `store::VolumeStore` at `/state` for every
//! call and turns its errors into `berth:types` errors.
//!
//! Options: none. Docker's `local` driver options (`type`, `device`, `o`) mount a device, tmpfs
//! or NFS share, which a sandboxed driver cannot do and `berth:volume@1.0.0` gives the host no
//! way to do for it (it only bind-mounts a returned directory), so they are refused with
//! `invalid-argument` and a message saying so. Configuration keys: none.

mod error;
mod layout;
mod meta;
mod store;

use std::time::{SystemTime, UNIX_EPOCH};

use berth_plugin::plugin::{self, PluginInfo};
use berth_plugin::volume::exports::berth::volume::driver::{self, VolumeCapabilities, VolumeInfo};
use berth_plugin::{Error, Scope, config, fs::STATE_DIR, log};

use store::VolumeStore;

/// The component's implementation of its two exported interfaces. Stateless: each call works
/// on the state directory alone.
struct LocalDriver;

fn store() -> VolumeStore {
    VolumeStore::new(STATE_DIR)
}

/// Now, in nanoseconds since the Unix epoch; 0 (the WIT's "unknown") if the clock reads
/// earlier than the epoch.
fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl plugin::Guest for LocalDriver {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "local".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            description: "Volumes as directories in the plugin's state directory".to_owned(),
        }
    }

    fn configure(config: Vec<(String, String)>) -> Result<(), Error> {
        config::check_keys(&config, &[], "configuration key")?;
        // configure runs after every instantiation, so right after any instance that may have
        // been discarded mid-create: the moment to clear what such creates left behind.
        // Housekeeping failures must not make the host refuse a valid configuration.
        match store().sweep_staging(None) {
            Ok(0) => {}
            Ok(n) => log::info(
                "removed leftovers of interrupted creates",
                &[("count", &n.to_string())],
            ),
            Err(err) => log::warn(
                "could not clean up the staging directory",
                &[("error", &err.to_string())],
            ),
        }
        Ok(())
    }
}

impl driver::Guest for LocalDriver {
    fn create(name: String, options: Vec<(String, String)>) -> Result<VolumeInfo, Error> {
        Ok(store().create(&name, &options, now_nanos())?)
    }

    fn remove(name: String) -> Result<Option<String>, Error> {
        Ok(store().remove(&name)?)
    }

    fn mount(name: String, mount_id: String) -> Result<String, Error> {
        Ok(store().mount(&name, &mount_id)?)
    }

    fn unmount(name: String, mount_id: String) -> Result<(), Error> {
        Ok(store().unmount(&name, &mount_id)?)
    }

    fn path(name: String) -> Result<Option<String>, Error> {
        Ok(store().path(&name)?)
    }

    fn get(name: String) -> Result<VolumeInfo, Error> {
        Ok(store().get(&name)?)
    }

    fn list() -> Result<Vec<VolumeInfo>, Error> {
        Ok(store().list()?)
    }

    fn capabilities() -> VolumeCapabilities {
        VolumeCapabilities {
            scope: Scope::Local,
        }
    }
}

berth_plugin::export_volume_driver!(LocalDriver);
