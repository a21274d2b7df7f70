//! What every plugin instance runs in: its store state (WASI context with one preopened
//! state directory and no network, a capped resource table, the memory limiter), the
//! deadline armed before each call, and the classification of failures into reasons a
//! user can read.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime::{
    Engine, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, Trap, UpdateDeadline,
};
use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, io, random};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::Limits;
use super::logging::ConnectGrant;
use super::network::NetHost;

/// A limit an instance ran into, kept typed so the error says which.
#[derive(Debug)]
pub(super) enum LimitHit {
    Memory { desired: usize, limit: usize },
    Table { desired: usize },
}

impl std::fmt::Display for LimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LimitHit::Memory { desired, limit } => write!(
                f,
                "memory limit of {} MiB reached (it asked for {} MiB)",
                limit >> 20,
                desired >> 20
            ),
            LimitHit::Table { desired } => write!(f, "table limit reached ({desired} elements)"),
        }
    }
}

impl std::error::Error for LimitHit {}

/// StoreLimits, but failing growth with a typed error rather than a bare message.
pub(super) struct Limiter {
    inner: StoreLimits,
    memory_limit: usize,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if self.inner.memory_growing(current, desired, maximum)? {
            Ok(true)
        } else {
            Err(wasmtime::Error::new(LimitHit::Memory {
                desired,
                limit: self.memory_limit,
            }))
        }
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if self.inner.table_growing(current, desired, maximum)? {
            Ok(true)
        } else {
            Err(wasmtime::Error::new(LimitHit::Table { desired }))
        }
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// Most `host-log` lines a plugin instance may log per second; the rest are counted and
/// dropped (a plugin logging in a loop must not flood berthd's log).
const LOG_LINES_PER_SECOND: u32 = 100;

/// A plugin instance's store data.
pub(super) struct PluginState {
    pub(super) plugin: Arc<str>,
    log_window: Instant,
    log_lines: u32,
    log_dropped: u64,
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    /// The scoped network operations of a network driver; `None` for other worlds.
    pub(super) net: Option<Arc<dyn NetHost>>,
    /// Told of every armed deadline, so the epoch advances while the call runs.
    ticker: super::ticker::Ticker,
    /// When the running call started, and how long a call may run (the driver's limit):
    /// read by the store's epoch callback, which is installed once rather than boxed anew
    /// for every call.
    call_started: Instant,
    call_timeout: Duration,
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl PluginState {
    /// Whether one more log line fits this second's budget; reports what was dropped when
    /// a new second starts.
    pub(super) fn log_allowed(&mut self) -> bool {
        if self.log_window.elapsed() >= Duration::from_secs(1) {
            if self.log_dropped > 0 {
                tracing::warn!(
                    plugin = &*self.plugin,
                    dropped = self.log_dropped,
                    "plugin log lines dropped (over {LOG_LINES_PER_SECOND} per second)"
                );
            }
            self.log_window = Instant::now();
            self.log_lines = 0;
            self.log_dropped = 0;
        }
        if self.log_lines < LOG_LINES_PER_SECOND {
            self.log_lines += 1;
            true
        } else {
            self.log_dropped += 1;
            false
        }
    }
}

/// Makes a store for one instance of `plugin`: `state_dir` (if any) preopened read-write
/// as `/state`, nothing else of the host's filesystem, no network but the addresses of
/// `connect` (if any), the caps in `limits`.
pub(super) fn new_store(
    engine: &Engine,
    plugin: Arc<str>,
    state_dir: Option<&Path>,
    limits: &Limits,
    ticker: &super::ticker::Ticker,
    net: Option<Arc<dyn NetHost>>,
    connect: Option<Arc<ConnectGrant>>,
) -> wasmtime::Result<Store<PluginState>> {
    let mut wasi = WasiCtxBuilder::new();
    if let Some(state_dir) = state_dir {
        wasi.preopened_dir(state_dir, "/state", FsPerms::ReadWrite)?;
    }
    if let Some(grant) = connect {
        wasi.allow_tcp(grant.grants_tcp())
            .allow_udp(grant.grants_udp())
            .socket_addr_check(move |address, usage| {
                let allowed = grant.allows(address, usage);
                Box::pin(async move { allowed })
            });
    }
    let mut table = ResourceTable::new();
    table.set_max_capacity(limits.handles);
    let limiter = Limiter {
        inner: StoreLimitsBuilder::new()
            .memory_size(limits.memory_bytes)
            .instances(16)
            .memories(4)
            .tables(16)
            .table_elements(100_000)
            .build(),
        memory_limit: limits.memory_bytes,
    };
    let mut store = Store::new(
        engine,
        PluginState {
            plugin,
            log_window: Instant::now(),
            log_lines: 0,
            log_dropped: 0,
            wasi: wasi.build(),
            table,
            limiter,
            net,
            ticker: ticker.clone(),
            call_started: Instant::now(),
            call_timeout: limits.call_timeout,
        },
    );
    store.limiter(|state| &mut state.limiter);
    store.epoch_deadline_callback(|store| {
        let state = store.data();
        if state.call_started.elapsed() >= state.call_timeout {
            Ok(UpdateDeadline::Interrupt)
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
    store.set_max_component_handles(limits.handles);
    store.set_hostcall_fuel(limits.call_bytes);
    Ok(store)
}

/// Arms the deadline for the next call: the call yields to tokio every tick and traps once
/// the store's call timeout (its limits' `call_timeout`) of wall-clock time has passed.
pub(super) fn arm_deadline(store: &mut Store<PluginState>) {
    let state = store.data_mut();
    state.ticker.armed();
    state.call_started = Instant::now();
    store.set_epoch_deadline(1);
}

/// A reason a user can act on, for an error that ended an instance.
pub(super) fn reason(error: &wasmtime::Error, timeout: Duration) -> String {
    if let Some(trap) = error.downcast_ref::<Trap>() {
        return match trap {
            Trap::Interrupt => format!("deadline of {timeout:?} exceeded"),
            Trap::StackOverflow => "stack overflow".into(),
            Trap::UnreachableCodeReached => "the plugin crashed (panic or unreachable)".into(),
            Trap::MemoryOutOfBounds => "the plugin crashed (out-of-bounds memory access)".into(),
            other => format!("the plugin trapped: {other}"),
        };
    }
    if let Some(limit) = error.downcast_ref::<LimitHit>() {
        return limit.to_string();
    }
    if let Some(full) = error.downcast_ref::<wasmtime_wasi::ResourceTableError>() {
        return format!("handle limit reached ({full})");
    }
    if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return format!("the plugin exited with status {}", exit.0);
    }
    // The handle and copy caps report plain messages.
    format!("{error:#}")
}

/// The io interfaces' view: the store's resource table.
struct HasIo;

impl HasData for HasIo {
    type Data<'a> = &'a mut ResourceTable;
}

/// Adds WASI 0.2 to `linker`, without sockets: a plugin that imports them does not link.
pub(super) fn add_wasi(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::cli::{WasiCli, WasiCliView};
    use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
    use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
    use wasmtime_wasi::random::WasiRandom;
    type S = PluginState;
    io::error::add_to_linker::<S, HasIo>(linker, |s| s.ctx().table)?;
    io::poll::add_to_linker::<S, HasIo>(linker, |s| s.ctx().table)?;
    io::streams::add_to_linker::<S, HasIo>(linker, |s| s.ctx().table)?;
    clocks::wall_clock::add_to_linker::<S, WasiClocks>(linker, S::clocks)?;
    clocks::monotonic_clock::add_to_linker::<S, WasiClocks>(linker, S::clocks)?;
    filesystem::types::add_to_linker::<S, WasiFilesystem>(linker, S::filesystem)?;
    filesystem::preopens::add_to_linker::<S, WasiFilesystem>(linker, S::filesystem)?;
    random::random::add_to_linker::<S, WasiRandom>(linker, |s| s.wasi.random())?;
    random::insecure::add_to_linker::<S, WasiRandom>(linker, |s| s.wasi.random())?;
    random::insecure_seed::add_to_linker::<S, WasiRandom>(linker, |s| s.wasi.random())?;
    cli::exit::add_to_linker::<S, WasiCli>(linker, S::cli)?;
    cli::environment::add_to_linker::<S, WasiCli>(linker, S::cli)?;
    cli::stdin::add_to_linker::<S, WasiCli>(linker, S::cli)?;
    cli::stdout::add_to_linker::<S, WasiCli>(linker, S::cli)?;
    cli::stderr::add_to_linker::<S, WasiCli>(linker, S::cli)?;
    cli::terminal_input::add_to_linker::<S, WasiCli>(linker, S::cli)?;
    cli::terminal_output::add_to_linker::<S, WasiCli>(linker, S::cli)?;
    cli::terminal_stdin::add_to_linker::<S, WasiCli>(linker, S::cli)?;
    cli::terminal_stdout::add_to_linker::<S, WasiCli>(linker, S::cli)?;
    cli::terminal_stderr::add_to_linker::<S, WasiCli>(linker, S::cli)?;
    Ok(())
}

/// Adds WASI 0.2 sockets to `linker`, for worlds whose plugins may be granted addresses
/// (logging drivers). What a store may reach is its [`ConnectGrant`]: without one every
/// socket operation is refused; name lookups always are.
pub(super) fn add_sockets(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::p2::bindings::sockets;
    use wasmtime_wasi::sockets::{WasiSockets, WasiSocketsView};
    type S = PluginState;
    sockets::tcp_create_socket::add_to_linker::<S, WasiSockets>(linker, S::sockets)?;
    sockets::tcp::add_to_linker::<S, WasiSockets>(linker, S::sockets)?;
    sockets::udp_create_socket::add_to_linker::<S, WasiSockets>(linker, S::sockets)?;
    sockets::udp::add_to_linker::<S, WasiSockets>(linker, S::sockets)?;
    sockets::instance_network::add_to_linker::<S, WasiSockets>(linker, S::sockets)?;
    sockets::network::add_to_linker::<S, WasiSockets>(linker, &Default::default(), S::sockets)?;
    sockets::ip_name_lookup::add_to_linker::<S, WasiSockets>(linker, S::sockets)?;
    Ok(())
}
