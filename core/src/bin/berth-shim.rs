//! berth-shim: supervises one container. `berth-shim start BUNDLE` starts it and prints the
//! container's pid once it has exec'd; the supervisor stays behind, detached from berthd.
//! `berth-shim exec BUNDLE PID PROCESS-JSON` runs one more process in a running container.
//! Small and single-threaded on purpose: no tokio, no wasmtime.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let code = match args.as_slice() {
        [_, cmd, bundle] if cmd == "start" => {
            berth_core::runtime::shim::start(std::path::Path::new(bundle), false)
        }
        [_, cmd, bundle, flag] if cmd == "start" && flag == "--await-attach" => {
            berth_core::runtime::shim::start(std::path::Path::new(bundle), true)
        }
        [_, cmd, bundle, pid, process] if cmd == "exec" => match pid.parse() {
            Ok(pid) => berth_core::runtime::exec::exec(std::path::Path::new(bundle), pid, process),
            Err(_) => {
                eprintln!("berth-shim exec: bad pid {pid:?}");
                2
            }
        },
        [_, cmd, bundle, pid, path] if cmd == "archive-get" || cmd == "archive-put" => {
            let bundle = std::path::Path::new(bundle);
            let pid = pid.parse().ok();
            if cmd == "archive-get" {
                berth_core::runtime::archive::get(bundle, pid, path)
            } else {
                berth_core::runtime::archive::put(bundle, pid, path)
            }
        }
        _ => {
            eprintln!(
                "usage: berth-shim start BUNDLE | exec BUNDLE PID PROCESS-JSON | archive-get|archive-put BUNDLE PID|- PATH"
            );
            2
        }
    };
    std::process::exit(code);
}
