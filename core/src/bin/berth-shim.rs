//! berth-shim: supervises one container. `berth-shim start BUNDLE` starts it and prints the
//! container's pid once it has exec'd; the supervisor stays behind, detached from berthd.
//! Small and single-threaded on purpose: no tokio, no wasmtime.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let code = match args.as_slice() {
        [_, cmd, bundle] if cmd == "start" => {
            berth_core::runtime::shim::start(std::path::Path::new(bundle))
        }
        _ => {
            eprintln!("usage: berth-shim start BUNDLE");
            2
        }
    };
    std::process::exit(code);
}
