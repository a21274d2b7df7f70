//! berth-shim: supervises one container. `berth-shim start BUNDLE` starts it and prints the
//! container's pid once it has exec'd; the supervisor stays behind, detached from berthd.
//! `berth-shim exec BUNDLE PID PROCESS-JSON` runs one more process in a running container.
//! Small and single-threaded on purpose: no tokio, no wasmtime.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let code = match args.as_slice() {
        [_, cmd, bundle] if cmd == "start" => {
            berth_core::runtime::shim::start(std::path::Path::new(bundle))
        }
        [_, cmd, bundle, pid, process] if cmd == "exec" => match pid.parse() {
            Ok(pid) => berth_core::runtime::exec::exec(std::path::Path::new(bundle), pid, process),
            Err(_) => {
                eprintln!("berth-shim exec: bad pid {pid:?}");
                2
            }
        },
        _ => {
            eprintln!("usage: berth-shim start BUNDLE | berth-shim exec BUNDLE PID PROCESS-JSON");
            2
        }
    };
    std::process::exit(code);
}
