//! berthd: the berth daemon. Loads its config, takes the data root, binds the API and
//! serves until SIGTERM or SIGINT; SIGHUP re-reads the config file and applies the log level,
//! reloads the tokens file and the authorization policies, and reopens the decision log.

use anyhow::Context as _;
use berth_core::daemon::{self, Args, LogFormat};
use berth_core::telemetry::Telemetry;
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

type FilterHandle = reload::Handle<EnvFilter, Registry>;

/// Logs to stderr under the reloadable `level` filter; with `otlp`, berth's spans (info and
/// above, whatever the log level) also go to the OpenTelemetry exporter.
fn init_logging(
    level: &str,
    format: LogFormat,
    otlp: Option<(&str, Option<&std::path::Path>)>,
) -> anyhow::Result<(FilterHandle, Option<Telemetry>)> {
    let filter = EnvFilter::try_new(level).context("invalid log level")?;
    let (filter, handle) = reload::Layer::new(filter);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let telemetry = otlp
        .map(|(endpoint, ca)| Telemetry::otlp(endpoint, ca))
        .transpose()?;
    let berth_spans = Targets::new().with_target("berth_core", LevelFilter::INFO);
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let lines: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Json => lines.json().boxed(),
        LogFormat::Text => lines.with_ansi(ansi).boxed(),
    };
    let traces = telemetry
        .as_ref()
        .map(|t| t.layer().with_filter(berth_spans));
    tracing_subscriber::registry()
        .with(lines.with_filter(filter))
        .with(traces)
        .try_init()
        .context("cannot install the logger")?;
    Ok((handle, telemetry))
}

fn main() -> std::process::ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == "compile-plugin") {
        return compile_plugin(&argv[2..]);
    }
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berthd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `berthd compile-plugin CACHE_DIR PLUGIN`: berthd's plugin host compiling a component (on
/// stdin) into its cache in a process of its own (see `plugin_host::compile_out_of_process`).
fn compile_plugin(args: &[std::ffi::OsString]) -> std::process::ExitCode {
    let [dir, plugin] = args else {
        eprintln!("usage: berthd compile-plugin CACHE_DIR PLUGIN < component.wasm");
        return std::process::ExitCode::from(2);
    };
    let plugin = plugin.to_string_lossy();
    match berth_core::plugin_host::compile_plugin_main(std::path::Path::new(dir), &plugin) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    // The running binary, even if its file has been replaced since.
    berth_core::plugin_host::compile_out_of_process("/proc/self/exe".into());
    let args = Args::parse();
    let config = args.load()?;
    let (filter, telemetry) = init_logging(
        &config.log_level,
        config.log_format,
        config
            .otlp_endpoint
            .as_deref()
            .map(|endpoint| (endpoint, config.otlp_ca.as_deref())),
    )?;
    // Everything that must be exclusive (data root, socket) happens before any thread
    // exists, so a refused start has touched nothing.
    let prepared = daemon::prepare(config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("berthd")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
        let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
        let reloader = prepared.reloader();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                reload_log_level(&args, &filter).await;
                reloader.reload().await;
            }
        });
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            }
        };
        prepared.serve(shutdown).await?;
        anyhow::Ok(())
    })?;
    // Connections that outlived the shutdown timeout are abandoned, not awaited.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    Ok(())
}

async fn reload_log_level(args: &Args, filter: &FilterHandle) {
    let args = args.clone();
    let loaded = tokio::task::spawn_blocking(move || args.load()).await;
    match loaded {
        Ok(Ok(config)) => match EnvFilter::try_new(&config.log_level) {
            Ok(new) => match filter.reload(new) {
                Ok(()) => tracing::info!(level = %config.log_level, "SIGHUP: log level reloaded"),
                Err(e) => tracing::warn!("SIGHUP: cannot apply log level: {e}"),
            },
            Err(e) => tracing::warn!("SIGHUP: invalid log level kept the old one: {e}"),
        },
        Ok(Err(e)) => tracing::warn!("SIGHUP: config not reloaded: {e}"),
        Err(e) => tracing::warn!("SIGHUP: config reload task failed: {e}"),
    }
}
