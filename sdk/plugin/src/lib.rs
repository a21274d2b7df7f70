//! berth-plugin: the guest-side SDK for writing berth plugins in Rust.
//!
//! This crate owns the Rust bindings of the berth WIT worlds (`plugins-api/wit`) and the small
//! helpers every driver needs, so that a driver crate is one `impl` of the generated `Guest`
//! traits plus one export macro:
//!
//! - [`plugin::Guest`]: the `berth:types/plugin` interface (`info`, `configure`) that every
//!   plugin exports, whatever its world;
//! - one module per world, each behind the cargo feature of the same name, holding that world's
//!   driver interface: `volume` (`volume-driver`), `network` (`network-driver`), `logging`
//!   (`logging-driver`) and `authz` (`authz-policy`), and one export macro per world
//!   (`export_volume_driver!`, `export_network_driver!`, `export_logging_driver!`,
//!   `export_authz_policy!`);
//! - [`Error`], [`ErrorKind`] and [`Scope`] from `berth:types/types`, shared by every world, with
//!   constructors that keep messages within the WIT's rules ([`error`]);
//! - [`log`]: the `berth:types/host-log` import as plain functions;
//! - [`fs`]: crash-safe writes into the plugin's state directory (temporary file, fsync,
//!   rename), the only thing the host keeps across instances;
//! - [`config`]: validation of `configure` keys and per-object options.
//!
//! # How the bindings are split
//!
//! Every world exports `berth:types/plugin`. wit-bindgen names the crate-level macro that exports
//! an interface after the interface alone, so generating two full worlds in one crate defines
//! that macro twice and does not compile. The SDK therefore generates `plugin` (with the shared
//! imports) once, in a hidden `shared` module, and each world module from a world that restates
//! the real one without `plugin`; the export macros put both halves together. What a component
//! built this way imports and exports is exactly the real world; a unit test
//! (`tests::*_world_matches_the_published_world`) parses `plugins-api/wit` and checks that the
//! restated worlds plus `shared` equal the published ones. Per the versioning rules in
//! `plugins-api/README.md`, a published world never changes within a major version.
//!
//! Enabling several world features in one build (cargo unifies features across a workspace) is
//! harmless: the component-type metadata a library links in describes imports only (wit-bindgen
//! drops exports from it when the export macro is public), and a world's exports are described
//! only by its export macro, expanded once in the driver crate.
//!
//! # Host target
//!
//! The crate also compiles for the build machine's target so that drivers can unit-test their
//! logic with a plain `cargo test`. There, [`log`] writes to standard error; calling any other
//! import (for example `host-net` in the network world) panics, as no host is linked.
//!
//! See README.md next to this crate's Cargo.toml for a walkthrough from nothing to a component.

pub mod config;
pub mod error;
pub mod fs;
pub mod log;

/// Bindings of what every world has in common: the imports `berth:types/types` and
/// `berth:types/host-log`, and the export `berth:types/plugin`. The world modules reuse the
/// imports through wit-bindgen's `with`, so that [`Error`] and [`log::Level`] are one Rust type
/// whatever world a driver implements.
#[doc(hidden)]
pub mod shared {
    /// Generates the bindings from `$wit` and keeps the text for the world test.
    macro_rules! shared_bindings {
        ($wit:tt) => {
            #[cfg(all(
                test,
                any(
                    feature = "volume",
                    feature = "network",
                    feature = "logging",
                    feature = "authz"
                )
            ))]
            pub(crate) const SDK_WORLD_WIT: &str = $wit;

            wit_bindgen::generate!({
                path: "../../plugins-api/wit/types",
                inline: $wit,
                world: "berth:plugin-sdk/shared",
                // `scope` is used by no function of this world, but the worlds below use it.
                generate_unused_types: true,
                generate_all,
                additional_derives: [PartialEq, Eq, Hash],
                pub_export_macro: true,
                export_macro_name: "export",
                default_bindings_module: "berth_plugin::shared",
            });
        };
    }

    shared_bindings!(
        "
        package berth:plugin-sdk;
        world shared {
            import berth:types/types@1.0.0;
            import berth:types/host-log@1.0.0;
            export berth:types/plugin@1.0.0;
        }
        "
    );
}

pub use shared::berth::types::types::{Error, ErrorKind, Scope};

/// The `berth:types/plugin` interface every plugin exports: implement [`plugin::Guest`]
/// (`info` and `configure`) for the same type as the world's driver trait.
pub mod plugin {
    pub use crate::shared::exports::berth::types::plugin::{Guest, PluginInfo};
}

/// Generates the bindings of world module `$module` from `$wit`, a restatement of the published
/// world at `$path` without its `berth:types/plugin` export (see the crate documentation), and
/// keeps the text for the test that compares it with the published world.
#[cfg(any(
    feature = "volume",
    feature = "network",
    feature = "logging",
    feature = "authz"
))]
macro_rules! world_bindings {
    ($module:tt, $path:tt, $world:tt, $wit:tt) => {
        #[cfg(test)]
        pub(crate) const SDK_WORLD: (&str, &str, &str) = ($path, $world, $wit);

        wit_bindgen::generate!({
            path: $path,
            inline: $wit,
            world: $world,
            with: {
                "berth:types/types@1.0.0": crate::shared::berth::types::types,
                "berth:types/host-log@1.0.0": crate::shared::berth::types::host_log,
            },
            // The world's own interfaces (and, for network, `net-types` and `host-net`).
            generate_all,
            additional_derives: [PartialEq, Eq],
            pub_export_macro: true,
            export_macro_name: "export",
            default_bindings_module: $module,
        });
    };
}

/// The `volume-driver` world (`berth:volume@1.0.0`): implement
/// [`volume::exports::berth::volume::driver::Guest`] and [`plugin::Guest`] for one type, then
/// call [`export_volume_driver!`] with it.
///
/// The plugin's state directory is preopened at [`fs::STATE_DIR`]; the paths a driver returns
/// are relative to it.
#[cfg(feature = "volume")]
pub mod volume {
    world_bindings!(
        "berth_plugin::volume",
        "../../plugins-api/wit/volume",
        "berth:plugin-sdk-volume/volume-driver",
        "
        package berth:plugin-sdk-volume;
        world volume-driver {
            import berth:types/host-log@1.0.0;
            export berth:volume/driver@1.0.0;
        }
        "
    );
}

/// The `network-driver` world (`berth:network@1.0.0`): implement
/// [`network::exports::berth::network::driver::Guest`] and [`plugin::Guest`] for one type, then
/// call [`export_network_driver!`] with it. Privileged effects go through the
/// [`network::berth::network::host_net`] import.
#[cfg(feature = "network")]
pub mod network {
    world_bindings!(
        "berth_plugin::network",
        "../../plugins-api/wit/network",
        "berth:plugin-sdk-network/network-driver",
        "
        package berth:plugin-sdk-network;
        world network-driver {
            import berth:types/host-log@1.0.0;
            import berth:network/host-net@1.0.0;
            export berth:network/driver@1.0.0;
        }
        "
    );
}

/// The `logging-driver` world (`berth:logging@1.0.0`): implement
/// [`logging::exports::berth::logging::driver::Guest`] (with its `LogStream` and `LogReader`
/// resource types) and [`plugin::Guest`] for one type, then call [`export_logging_driver!`]
/// with it.
#[cfg(feature = "logging")]
pub mod logging {
    world_bindings!(
        "berth_plugin::logging",
        "../../plugins-api/wit/logging",
        "berth:plugin-sdk-logging/logging-driver",
        "
        package berth:plugin-sdk-logging;
        world logging-driver {
            import berth:types/host-log@1.0.0;
            export berth:logging/driver@1.0.0;
        }
        "
    );
}

/// The `authz-policy` world (`berth:authz@1.1.0`, whose `policy` interface is 1.0.0's): implement
/// [`authz::exports::berth::authz::policy::Guest`] and [`plugin::Guest`] for one type, then
/// call [`export_authz_policy!`] with it.
#[cfg(feature = "authz")]
pub mod authz {
    world_bindings!(
        "berth_plugin::authz",
        "../../plugins-api/wit/authz",
        "berth:plugin-sdk-authz/authz-policy",
        "
        package berth:plugin-sdk-authz;
        world authz-policy {
            import berth:types/host-log@1.0.0;
            export berth:authz/policy@1.1.0;
        }
        "
    );
}

/// Defines the export macro of one world: the `plugin` half (from `shared`) plus the world's
/// own half, each with its component-type metadata. Both are reached through their
/// `with_types_in` form and `$crate`, so the expansion does not depend on how the driver crate
/// names this one.
macro_rules! world_export_macro {
    ($feature:literal, $name:ident, $module:ident, $world:literal) => {
        #[doc = concat!(
            "Exports `$ty` as the plugin's implementation of the `", $world, "` world.\n\n",
            "`$ty` (a type name, not a path) must implement [`plugin::Guest`] and the world's ",
            "driver `Guest` trait in [`", stringify!($module), "`]. Call it once, at the top ",
            "level of the driver crate, for example `berth_plugin::", stringify!($name),
            "!(MyDriver);`."
        )]
        #[cfg(feature = $feature)]
        #[macro_export]
        macro_rules! $name {
            ($ty:ident) => {
                $crate::shared::export!($ty with_types_in $crate::shared);
                $crate::$module::export!($ty with_types_in $crate::$module);
            };
        }
    };
}

world_export_macro!(
    "volume",
    export_volume_driver,
    volume,
    "berth:volume/volume-driver@1.0.0"
);
world_export_macro!(
    "network",
    export_network_driver,
    network,
    "berth:network/network-driver@1.0.0"
);
world_export_macro!(
    "logging",
    export_logging_driver,
    logging,
    "berth:logging/logging-driver@1.0.0"
);
world_export_macro!(
    "authz",
    export_authz_policy,
    authz,
    "berth:authz/authz-policy@1.1.0"
);

/// Only worlds that are enabled are generated, so only they can be checked.
#[cfg(all(
    test,
    any(
        feature = "volume",
        feature = "network",
        feature = "logging",
        feature = "authz"
    )
))]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use wit_parser::{Resolve, WorldId};

    /// Names of the imports (or exports) of `world`, interfaces by their full name.
    fn items(resolve: &Resolve, world: WorldId, exports: bool) -> BTreeSet<String> {
        let world = &resolve.worlds[world];
        let map = if exports {
            &world.exports
        } else {
            &world.imports
        };
        map.keys().map(|k| resolve.name_world_key(k)).collect()
    }

    fn wit_path(rel: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
    }

    /// The restated world of an SDK module, plus `shared`, imports and exports exactly what the
    /// published world does (see the crate documentation for why worlds are restated).
    fn check_world((path, sdk_world, sdk_wit): (&str, &str, &str), published_world: &str) {
        let mut resolve = Resolve::default();
        let (published_pkg, _) = resolve.push_path(wit_path(path)).unwrap();
        let published = resolve
            .select_world(&[published_pkg], Some(published_world))
            .unwrap();
        let sdk_pkg = resolve.push_str("sdk-world.wit", sdk_wit).unwrap();
        let sdk = resolve.select_world(&[sdk_pkg], Some(sdk_world)).unwrap();
        let shared_pkg = resolve
            .push_str("shared.wit", crate::shared::SDK_WORLD_WIT)
            .unwrap();
        let shared = resolve
            .select_world(&[shared_pkg], Some("berth:plugin-sdk/shared"))
            .unwrap();

        for exports in [false, true] {
            let expected = items(&resolve, published, exports);
            let actual: BTreeSet<String> = items(&resolve, sdk, exports)
                .union(&items(&resolve, shared, exports))
                .cloned()
                .collect();
            let what = if exports { "exports" } else { "imports" };
            assert_eq!(actual, expected, "{what} of {published_world} differ");
        }
    }

    #[cfg(feature = "volume")]
    #[test]
    fn volume_world_matches_the_published_world() {
        check_world(crate::volume::SDK_WORLD, "volume-driver");
    }

    #[cfg(feature = "network")]
    #[test]
    fn network_world_matches_the_published_world() {
        check_world(crate::network::SDK_WORLD, "network-driver");
    }

    #[cfg(feature = "logging")]
    #[test]
    fn logging_world_matches_the_published_world() {
        check_world(crate::logging::SDK_WORLD, "logging-driver");
    }

    #[cfg(feature = "authz")]
    #[test]
    fn authz_world_matches_the_published_world() {
        check_world(crate::authz::SDK_WORLD, "authz-policy");
    }
}
