//! berthd: the berth daemon. Loads its config, takes the data root, binds the API and
//! serves until SIGTERM or SIGINT; SIGHUP re-reads the config file and applies the log level,
//! reloads the tokens file and the authorization policies, and reopens the decision log.

use anyhow::Context as _;
use berth_core::daemon::{self, Args, LogFormat};
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, reload};

type FilterHandle = reload::Handle<EnvFilter, tracing_subscriber::Registry>;

fn init_logging(level: &str, format: LogFormat) -> anyhow::Result<FilterHandle> {
    let filter = EnvFilter::try_new(level).context("invalid log level")?;
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    }
    .context("cannot install the logger")?;
    Ok(handle)
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berthd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = args.load()?;
    let filter = init_logging(&config.log_level, config.log_format)?;
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
