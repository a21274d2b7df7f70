//! berth-api: the JSON-RPC contract between berthd and its clients.
//!
//! Each namespace (`system.*`, and later `image.*`, `container.*`, `exec.*`, `volume.*`,
//! `network.*`, `plugin.*`, `events.*`) is one jsonrpsee `#[rpc(server, client)]` trait with
//! its serde types; `#[method_specs]` derives a [`MethodSpec`] table from the same trait. berthd implements the `*Server` traits, the CLI and tests use the `*Client`
//! traits, and [`openrpc::document`] describes every method from the same declarations.

pub mod archive;
pub mod container;
pub mod error;
pub mod events;
pub mod image;
pub mod network;
pub mod openrpc;
pub mod plugin;
pub mod reference;
pub mod spec;
pub mod system;
pub mod volume;

pub use error::{ErrorData, ErrorKind};
pub use spec::{MethodKind, MethodSpec, ParamSpec, ParamsError, normalize_params};

/// Re-exported so that clients need not pin jsonrpsee themselves.
pub use jsonrpsee;

/// The API version: bumped on any incompatible change to a method or type.
pub const API_VERSION: &str = "1.0.0";

/// Namespaces whose names are taken; their methods arrive with the issues that build them.
pub const NAMESPACES: &[&str] = &[
    "system",
    "image",
    "container",
    "exec",
    "volume",
    "network",
    "plugin",
    "events",
];

/// Every method of the API, across namespaces, in declaration order.
pub fn all_methods() -> Vec<&'static MethodSpec> {
    system::SPECS
        .iter()
        .chain(image::SPECS)
        .chain(container::SPECS)
        .chain(volume::SPECS)
        .chain(network::SPECS)
        .chain(plugin::SPECS)
        .chain(events::SPECS)
        .collect()
}

/// Finds a method by its full name (a hash lookup: the server does this on every call).
pub fn method(name: &str) -> Option<&'static MethodSpec> {
    static INDEX: std::sync::OnceLock<
        std::collections::HashMap<&'static str, &'static MethodSpec>,
    > = std::sync::OnceLock::new();
    INDEX
        .get_or_init(|| all_methods().into_iter().map(|m| (m.name, m)).collect())
        .get(name)
        .copied()
}

#[cfg(test)]
mod tests {
    #[test]
    fn method_names_are_unique_and_namespaced() {
        let mut seen = std::collections::HashSet::new();
        for m in super::all_methods() {
            assert!(seen.insert(m.name), "duplicate method {}", m.name);
            let ns = m.name.split('.').next().unwrap();
            assert!(
                super::NAMESPACES.contains(&ns),
                "{} outside known namespaces",
                m.name
            );
            assert!(!m.doc.trim().is_empty(), "{} has no doc", m.name);
        }
    }
}
