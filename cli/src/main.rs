//! `berth`: the docker-like command line client of berthd. Every command is one or a few
//! JSON-RPC calls over a WebSocket to the daemon; nothing here touches the host.

mod attach;
mod auth;
mod client;
mod container;
mod events;
mod image;
mod network;
mod output;
mod volume;

use std::process::ExitCode;

use anyhow::Context as _;
use berth_api::container::ContainerClient;
use berth_api::jsonrpsee::core::client::Error as RpcError;
use berth_api::system::{DiskUsage, SystemClient, SystemInfo, VersionInfo};
use clap::{CommandFactory, Parser, Subcommand};
use serde::Serialize;

use output::{Format, human_size};

/// Exit status for errors of the CLI itself or its flags, as docker uses.
const EXIT_USAGE: u8 = 125;

#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = "A fast container engine with WebAssembly drivers",
    args_override_self = true,
    after_help = client::ENV_HELP
)]
struct Cli {
    #[command(flatten)]
    conn: client::ConnectArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show client and daemon versions.
    Version(FormatArg),
    /// Show daemon and host information (same as `system info`).
    Info(FormatArg),
    /// Daemon-wide commands.
    #[command(subcommand)]
    System(SystemCommand),
    /// Stream what happens to containers, images, volumes, networks and plugins.
    Events(events::EventsArgs),
    /// Create and run a container.
    Run {
        /// Run in the background and print the container id.
        #[arg(short, long)]
        detach: bool,
        #[command(flatten)]
        create: container::CreateArgs,
    },
    /// Create a container without starting it.
    Create(container::CreateArgs),
    /// Start containers.
    Start {
        /// Containers.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// List containers.
    Ps(container::PsArgs),
    /// Show a container's output.
    Logs(container::LogsArgs),
    /// Wait for containers to exit and print their exit codes.
    Wait {
        /// Containers.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Send a signal to containers (default SIGKILL).
    Kill {
        /// Signal name or number.
        #[arg(short, long)]
        signal: Option<String>,
        /// Containers.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Stop containers: their stop signal, then SIGKILL after the timeout.
    Stop {
        /// Seconds to wait before killing.
        #[arg(short, long)]
        time: Option<u64>,
        /// Containers.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Stop and start containers again.
    Restart {
        /// Seconds to wait before killing.
        #[arg(short, long)]
        time: Option<u64>,
        /// Containers.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Attach this terminal to a running container (Ctrl-P Ctrl-Q detaches).
    Attach {
        /// Do not send this terminal's input.
        #[arg(long)]
        no_stdin: bool,
        /// Container.
        id: String,
    },
    /// Copy files between a container and the local filesystem.
    Cp(container::CpArgs),
    /// Run a command in a running container.
    Exec(container::ExecArgs),
    /// Freeze every process of containers.
    Pause {
        /// Containers.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Thaw paused containers.
    Unpause {
        /// Containers.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Show a container's processes.
    Top {
        /// Container.
        id: String,
    },
    /// Show CPU, memory and pids usage of running containers.
    Stats(container::StatsArgs),
    /// Rename a container.
    Rename {
        /// Container.
        id: String,
        /// New name.
        name: String,
    },
    /// Remove containers.
    Rm {
        /// Kill and remove running containers.
        #[arg(short, long)]
        force: bool,
        /// Also remove the anonymous volumes made for them.
        #[arg(short, long)]
        volumes: bool,
        /// Containers.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Manage containers.
    #[command(subcommand)]
    Container(ContainerCommand),
    /// Pull an image from a registry.
    Pull(image::PullArgs),
    /// Push an image to a registry.
    Push(PushArgs),
    /// Log in to a registry (credentials are kept in ~/.berth/config.json, mode 0600).
    Login {
        /// Registry host[:port] (default: docker.io).
        server: Option<String>,
        /// User name.
        #[arg(short, long)]
        username: Option<String>,
        /// Password (prefer --password-stdin).
        #[arg(short, long)]
        password: Option<String>,
        /// Read the password from stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Log out from a registry.
    Logout {
        /// Registry host[:port] (default: docker.io).
        server: Option<String>,
    },
    /// List images.
    Images(image::ListArgs),
    /// Show the steps that built an image.
    History(HistoryArgs),
    /// Write images to a tar archive (OCI layout, loadable by docker too).
    Save(SaveArgs),
    /// Load images from a tar archive (OCI layout or `docker save` output).
    Load(LoadArgs),
    /// Create an image from a root filesystem tarball.
    Import(image::ImportArgs),
    /// Add a reference to an image: SOURCE TARGET.
    Tag {
        /// Existing image (reference or id).
        source: String,
        /// New reference.
        target: String,
    },
    /// Remove images (references, and the image once none is left).
    Rmi {
        /// Images to remove.
        #[arg(required = true)]
        names: Vec<String>,
        /// Remove even when the image has several tags or is in use.
        #[arg(short, long)]
        force: bool,
    },
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(volume::VolumeCommand),
    /// Manage WebAssembly driver plugins.
    #[command(subcommand)]
    Plugin(volume::PluginCommand),
    /// Manage networks.
    #[command(subcommand)]
    Network(network::NetworkCommand),
    /// List a container's published ports, or the host address of one.
    Port {
        /// Container.
        id: String,
        /// PORT[/PROTO] inside the container.
        port: Option<String>,
    },
    /// Print a shell completion script.
    Completion {
        /// Shell to generate for.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum SystemCommand {
    /// Show daemon and host information.
    Info(FormatArg),
    /// Show disk usage by object kind.
    Df(FormatArg),
    /// Remove unused data: stopped containers, dangling images (every unused one with -a),
    /// and the blobs and layers nothing uses.
    Prune {
        /// Also remove every image no container uses.
        #[arg(short, long)]
        all: bool,
        /// Do not ask for confirmation (berth never asks; accepted for docker parity).
        #[arg(short, long)]
        force: bool,
    },
    /// Check that the daemon answers.
    Ping,
}

#[derive(Debug, Subcommand)]
enum ContainerCommand {
    /// List containers.
    #[command(alias = "list", alias = "ps")]
    Ls(container::PsArgs),
    /// Show details of containers as JSON.
    Inspect {
        /// Containers.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Remove every container that is not running.
    Prune {
        /// Do not ask for confirmation (berth never asks; accepted for docker parity).
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Debug, clap::Args)]
struct PushArgs {
    /// Image to push: REGISTRY/NAME[:TAG].
    reference: String,
    /// Print only the reference when done.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Debug, clap::Args)]
struct SaveArgs {
    /// Images to save.
    #[arg(required = true)]
    names: Vec<String>,
    /// Write to this file instead of stdout.
    #[arg(short, long)]
    output: Option<String>,
}

#[derive(Debug, clap::Args)]
struct LoadArgs {
    /// Read from this file instead of stdin.
    #[arg(short, long)]
    input: Option<String>,
    /// Print only the loaded references.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Debug, clap::Args)]
struct HistoryArgs {
    /// Image.
    name: String,
    /// Do not truncate the command column.
    #[arg(long)]
    no_trunc: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Pull an image from a registry.
    Pull(image::PullArgs),
    /// Push an image to a registry.
    Push(PushArgs),
    /// Show the steps that built an image.
    History(HistoryArgs),
    /// Write images to a tar archive.
    Save(SaveArgs),
    /// Load images from a tar archive.
    Load(LoadArgs),
    /// Create an image from a root filesystem tarball.
    Import(image::ImportArgs),
    /// Remove unused images: dangling ones, or with -a every image no container uses.
    Prune {
        /// Remove every unused image, not just dangling ones.
        #[arg(short, long)]
        all: bool,
        /// Do not ask for confirmation (berth never asks; accepted for docker parity).
        #[arg(short, long)]
        force: bool,
    },
    /// List images.
    #[command(alias = "list")]
    Ls(image::ListArgs),
    /// Show details of images as JSON.
    Inspect {
        /// Images (reference or id).
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Add a reference to an image: SOURCE TARGET.
    Tag {
        /// Existing image.
        source: String,
        /// New reference.
        target: String,
    },
    /// Remove images.
    #[command(alias = "remove")]
    Rm {
        /// Images to remove.
        #[arg(required = true)]
        names: Vec<String>,
        /// Remove even when the image has several tags or is in use.
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Debug, clap::Args)]
struct FormatArg {
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

fn main() -> ExitCode {
    // Die quietly when the reader of our output goes away (`berth info | head`), as Unix
    // tools do, instead of failing on EPIPE mid-print.
    // SAFETY: called before any thread exists; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let usage_error = e.use_stderr();
            let _ = e.print();
            return if usage_error {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// The daemon's own message for call errors; the whole chain otherwise.
pub(crate) fn describe(e: &anyhow::Error) -> String {
    if let Some(RpcError::Call(obj)) = e.downcast_ref::<RpcError>() {
        return obj.message().to_owned();
    }
    format!("{e:#}")
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let conn = cli.conn.resolve(&|name| std::env::var_os(name))?;
    let connect = || client::connect(&conn);
    // Calls over one connection, a stream's items over another (see client::Paced).
    let connect_both = || async { tokio::try_join!(connect(), client::connect_paced(&conn)) };
    let code = match cli.command {
        Command::Run { detach, create } => {
            container::run(&connect().await?, &conn, create, detach).await?
        }
        Command::Create(a) => container::create(&connect().await?, a).await?,
        Command::Start { ids } => container::start(&connect().await?, ids).await?,
        Command::Ps(a) | Command::Container(ContainerCommand::Ls(a)) => {
            container::ps(&connect().await?, a).await?
        }
        Command::Logs(a) => container::logs(&client::connect_paced(&conn).await?, a).await?,
        Command::Events(a) => events::events(&client::connect_paced(&conn).await?, a).await?,
        Command::Wait { ids } => container::wait(&connect().await?, ids).await?,
        Command::Kill { signal, ids } => {
            let c = connect().await?;
            container::each(ids, |id| ContainerClient::kill(&c, id, signal.clone())).await?
        }
        Command::Stop { time, ids } => {
            let c = connect().await?;
            container::each(ids, |id| ContainerClient::stop(&c, id, time)).await?
        }
        Command::Rm {
            force,
            volumes,
            ids,
        } => {
            let c = connect().await?;
            container::each(ids, |id| {
                ContainerClient::remove(&c, id, Some(force), Some(volumes))
            })
            .await?
        }
        Command::Volume(v) => volume::volume(&connect().await?, v).await?,
        Command::Plugin(p) => volume::plugin(&connect().await?, p).await?,
        Command::Network(n) => network::network(&connect().await?, n).await?,
        Command::Port { id, port } => network::port(&connect().await?, id, port).await?,
        Command::Restart { time, ids } => {
            let c = connect().await?;
            container::each(ids, |id| ContainerClient::restart(&c, id, time)).await?
        }
        Command::Pause { ids } => {
            let c = connect().await?;
            container::each(ids, |id| ContainerClient::pause(&c, id)).await?
        }
        Command::Unpause { ids } => {
            let c = connect().await?;
            container::each(ids, |id| ContainerClient::unpause(&c, id)).await?
        }
        Command::Attach { no_stdin, id } => {
            let (c, paced) = connect_both().await?;
            container::attach(&c, &paced, id, !no_stdin).await?
        }
        Command::Cp(a) => container::cp(&connect().await?, &conn, a).await?,
        Command::Exec(a) => {
            let (c, paced) = connect_both().await?;
            container::exec(&c, &paced, a).await?
        }
        Command::Top { id } => container::top(&connect().await?, id).await?,
        Command::Stats(a) => container::stats(&connect().await?, a).await?,
        Command::Rename { id, name } => {
            let c = connect().await?;
            match ContainerClient::rename(&c, id, name).await {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("berth: {}", describe(&e.into()));
                    1
                }
            }
        }
        Command::Container(ContainerCommand::Prune { force: _ }) => {
            container::prune(&connect().await?).await?
        }
        Command::Container(ContainerCommand::Inspect { ids }) => {
            container::inspect(&connect().await?, ids).await?
        }
        Command::Version(f) => {
            version(&connect().await?, f.format).await?;
            0
        }
        Command::Info(f) | Command::System(SystemCommand::Info(f)) => {
            info(&connect().await?, f.format).await?;
            0
        }
        Command::System(SystemCommand::Df(f)) => {
            df(&connect().await?, f.format).await?;
            0
        }
        Command::System(SystemCommand::Ping) => {
            println!("{}", connect().await?.ping().await?);
            0
        }
        Command::Pull(a) | Command::Image(ImageCommand::Pull(a)) => {
            image::pull(&connect().await?, a).await?;
            0
        }
        Command::Login {
            server,
            username,
            password,
            password_stdin,
        } => {
            image::login(
                &connect().await?,
                server,
                username,
                password,
                password_stdin,
            )
            .await?;
            0
        }
        Command::Logout { server } => {
            image::logout(server)?;
            0
        }
        Command::Push(a) | Command::Image(ImageCommand::Push(a)) => {
            image::push(&connect().await?, a.reference, a.quiet).await?;
            0
        }
        Command::History(a) | Command::Image(ImageCommand::History(a)) => {
            image::history(&connect().await?, a.name, a.format, a.no_trunc).await?;
            0
        }
        Command::Image(ImageCommand::Prune { all, force: _ }) => {
            image::prune(&connect().await?, all).await?;
            0
        }
        Command::System(SystemCommand::Prune { all, force: _ }) => {
            let c = connect().await?;
            container::prune(&c).await?;
            image::prune(&c, all).await?;
            0
        }
        Command::Save(a) | Command::Image(ImageCommand::Save(a)) => {
            image::save(&connect().await?, a.names, a.output).await?;
            0
        }
        Command::Load(a) | Command::Image(ImageCommand::Load(a)) => {
            image::load(&connect().await?, a.input, a.quiet).await?;
            0
        }
        Command::Import(a) | Command::Image(ImageCommand::Import(a)) => {
            image::import(&connect().await?, a).await?;
            0
        }
        Command::Images(a) | Command::Image(ImageCommand::Ls(a)) => {
            image::list(&connect().await?, a).await?;
            0
        }
        Command::Image(ImageCommand::Inspect { names }) => {
            image::inspect(&connect().await?, names).await?;
            0
        }
        Command::Tag { source, target } | Command::Image(ImageCommand::Tag { source, target }) => {
            image::tag(&connect().await?, source, target).await?;
            0
        }
        Command::Rmi { names, force } | Command::Image(ImageCommand::Rm { names, force }) => {
            image::remove(&connect().await?, names, force).await?;
            0
        }
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "berth", &mut std::io::stdout());
            0
        }
    };
    Ok(ExitCode::from(code))
}

#[derive(Serialize)]
struct ClientVersion {
    version: &'static str,
    api_version: &'static str,
    os: &'static str,
    arch: &'static str,
}

async fn version(client: &impl SystemClient, format: Format) -> anyhow::Result<()> {
    let local = ClientVersion {
        version: env!("CARGO_PKG_VERSION"),
        api_version: berth_api::API_VERSION,
        os: std::env::consts::OS,
        arch: std::env::consts::ARCH,
    };
    let server: VersionInfo = client.version().await.context("system.version")?;
    if format == Format::Json {
        #[derive(Serialize)]
        struct Both<'a> {
            client: &'a ClientVersion,
            server: &'a VersionInfo,
        }
        return output::json(&Both {
            client: &local,
            server: &server,
        });
    }
    println!("Client:");
    println!(" Version:       {}", local.version);
    println!(" API version:   {}", local.api_version);
    println!(" OS/Arch:       {}/{}", local.os, local.arch);
    println!();
    println!("Server: berth engine");
    println!(" Version:       {}", server.version);
    println!(" API version:   {}", server.api_version);
    if let Some(commit) = &server.git_commit {
        println!(" Git commit:    {commit}");
    }
    println!(" OS/Arch:       {}/{}", server.os, server.arch);
    println!(" Kernel:        {}", server.kernel_version);
    Ok(())
}

async fn info(client: &impl SystemClient, format: Format) -> anyhow::Result<()> {
    let i: SystemInfo = client.info().await.context("system.info")?;
    if format == Format::Json {
        return output::json(&i);
    }
    println!("Containers: {}", i.containers.total);
    println!(" Running: {}", i.containers.running);
    println!(" Paused: {}", i.containers.paused);
    println!(" Stopped: {}", i.containers.stopped);
    println!("Images: {}", i.images);
    println!("Volumes: {}", i.volumes);
    println!("Networks: {}", i.networks);
    println!("Plugins: {}", i.plugins);
    println!("Server Version: {}", i.server_version);
    println!("API Version: {}", i.api_version);
    println!(
        "Storage Driver: {}{}",
        i.storage_driver,
        if i.storage_driver_supported {
            ""
        } else {
            " (unsupported by this kernel)"
        }
    );
    println!("Cgroup Driver: {}", i.cgroup.driver);
    println!("Cgroup Version: {}", i.cgroup.version);
    println!(" Controllers: {}", i.cgroup.controllers.join(" "));
    println!("Security Options:");
    for opt in &i.security_options {
        println!(" {opt}");
    }
    println!("Kernel Version: {}", i.kernel_version);
    println!("Operating System: {}", i.operating_system);
    println!("OSType: {}", i.os_type);
    println!("Architecture: {}", i.architecture);
    println!("CPUs: {}", i.ncpu);
    println!("Total Memory: {}", human_size(i.mem_total));
    println!("Name: {}", i.name);
    println!("ID: {}", i.id);
    println!("Data Root: {}", i.data_root);
    println!("Listeners:");
    for l in &i.listeners {
        println!(" {l}");
    }
    println!("Log Level: {}", i.log_level);
    println!("Uptime: {}s", i.uptime_secs);
    println!("System Time: {}", i.system_time);
    Ok(())
}

async fn df(client: &impl SystemClient, format: Format) -> anyhow::Result<()> {
    let usage: DiskUsage = client.df().await.context("system.df")?;
    if format == Format::Json {
        return output::json(&usage);
    }
    let rows: Vec<Vec<String>> = usage
        .kinds
        .iter()
        .map(|k| {
            let pct = (k.reclaimable_bytes * 100)
                .checked_div(k.size_bytes)
                .map(|p| format!(" ({p}%)"))
                .unwrap_or_default();
            vec![
                k.kind.clone(),
                k.total.to_string(),
                k.active.to_string(),
                human_size(k.size_bytes),
                format!("{}{pct}", human_size(k.reclaimable_bytes)),
            ]
        })
        .collect();
    output::table(&["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"], &rows);
    println!();
    println!("Data root total: {}", human_size(usage.data_root_bytes));
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    #[test]
    fn connection_options_are_global_and_tlsverify_takes_no_word() {
        use clap::Parser;
        let cli = super::Cli::try_parse_from(["berth", "--tlsverify", "ps"]).unwrap();
        assert_eq!(cli.conn.tlsverify, Some(true));
        assert!(matches!(cli.command, super::Command::Ps(_)));
        let cli = super::Cli::try_parse_from([
            "berth",
            "-H",
            "tcp://h:1",
            "ps",
            "--tls",
            "--tlscacert",
            "/ca.pem",
            "--token-file",
            "/t",
        ])
        .unwrap();
        assert!(cli.conn.tls);
        assert_eq!(cli.conn.host, "tcp://h:1");
        assert_eq!(
            cli.conn.tlscacert.as_deref(),
            Some(std::path::Path::new("/ca.pem"))
        );
        assert_eq!(
            cli.conn.token_file.as_deref(),
            Some(std::path::Path::new("/t"))
        );
        let cli = super::Cli::try_parse_from(["berth", "--tlsverify=false", "ps"]).unwrap();
        assert_eq!(cli.conn.tlsverify, Some(false));
    }

    #[test]
    fn help_tells_the_connection_options() {
        use clap::CommandFactory;
        let help = super::Cli::command().render_help().to_string();
        for word in [
            "--tlsverify",
            "--tlscacert",
            "--tlscert",
            "--tlskey",
            "--token-file",
            "BERTH_CERT_PATH",
            "BERTH_TLS_VERIFY",
            "BERTH_TOKEN",
            "peer credentials",
        ] {
            assert!(help.contains(word), "{word}");
        }
        // Global: in the subcommands' help too.
        let mut cmd = super::Cli::command();
        cmd.build();
        let ps = cmd
            .find_subcommand_mut("ps")
            .unwrap()
            .render_help()
            .to_string();
        assert!(ps.contains("--tlscacert"));
    }
}
