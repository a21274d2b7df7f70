//! Links berth-shim at a fixed address (see below), and embeds the default drivers into
//! berthd, which installs them on first start: the `local` volume driver
//! (plugins/dist/local.wasm), the `bridge` network driver (plugins/dist/bridge.wasm), the
//! `rego` authorization policy (plugins/dist/rego.wasm) and the `json-file` and `syslog`
//! logging drivers (plugins/dist/json-file.wasm, syslog.wasm), all made by plugins/build.sh.
//! Without a file berthd still builds, and says at start that the driver needs installing
//! by hand.

fn main() {
    // One berth-shim runs per container, so its private memory is what a container costs.
    // As a position-independent executable, the dynamic loader rewrites its ~260 kB of
    // relocated read-only data (vtables, string tables) in every process: a private copy
    // each. Linked at a fixed address, those pages stay clean and shared by all shims. The
    // shim's libraries, heap and stack are still randomized; its image is not.
    println!("cargo::rustc-link-arg-bin=berth-shim=-no-pie");
    for (name, cfg, var) in [
        ("local", "berth_embedded_local", "BERTH_LOCAL_WASM"),
        ("bridge", "berth_embedded_bridge", "BERTH_BRIDGE_WASM"),
        ("rego", "berth_embedded_rego", "BERTH_REGO_WASM"),
        (
            "json-file",
            "berth_embedded_json_file",
            "BERTH_JSON_FILE_WASM",
        ),
        ("syslog", "berth_embedded_syslog", "BERTH_SYSLOG_WASM"),
    ] {
        let wasm = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../plugins/dist/{name}.wasm"));
        println!("cargo::rerun-if-changed={}", wasm.display());
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        if let Ok(bytes) = std::fs::read(&wasm) {
            use sha2::Digest;
            println!("cargo::rustc-cfg={cfg}");
            println!("cargo::rustc-env={var}={}", wasm.display());
            println!(
                "cargo::rustc-env={var}_SHA256={}",
                hex::encode(sha2::Sha256::digest(&bytes))
            );
        } else {
            println!(
                "cargo::warning=plugins/dist/{name}.wasm is missing: berthd is built without the default `{name}` driver (run plugins/build.sh first)"
            );
        }
    }
}
