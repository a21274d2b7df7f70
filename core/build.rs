//! Embeds the default `local` volume driver component (plugins/dist/local.wasm, made by
//! plugins/build.sh) into berthd, which installs it on first start. Without the file berthd
//! still builds, and says at start that named volumes need the driver installed by hand.

fn main() {
    let wasm = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/dist/local.wasm");
    println!("cargo::rerun-if-changed={}", wasm.display());
    println!("cargo::rustc-check-cfg=cfg(berth_embedded_local)");
    if wasm.is_file() {
        println!("cargo::rustc-cfg=berth_embedded_local");
        println!("cargo::rustc-env=BERTH_LOCAL_WASM={}", wasm.display());
    } else {
        println!(
            "cargo::warning=plugins/dist/local.wasm is missing: berthd is built without the default `local` volume driver (run plugins/build.sh first)"
        );
    }
}
