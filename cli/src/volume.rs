//! `berth volume ...` and `berth plugin ...`.

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};
use berth_api::jsonrpsee::ws_client::WsClient;
use berth_api::plugin::{PluginClient, PluginInstallRequest};
use berth_api::volume::{VolumeClient, VolumeCreateRequest, VolumeListRequest};

use crate::output::{self, Format, human_size};

/// `berth volume` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum VolumeCommand {
    /// Create a volume.
    Create {
        /// Name (default: a random one).
        name: Option<String>,
        /// Volume driver plugin.
        #[arg(short, long, default_value = "local")]
        driver: String,
        /// Driver option KEY=VALUE.
        #[arg(short = 'o', long = "opt")]
        opts: Vec<String>,
        /// Label KEY=VALUE.
        #[arg(long)]
        label: Vec<String>,
    },
    /// List volumes.
    #[command(alias = "list")]
    Ls {
        /// Print only names.
        #[arg(short, long)]
        quiet: bool,
        /// dangling=true|false, driver=NAME, name=TEXT, label=KEY[=VALUE].
        #[arg(short, long)]
        filter: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Show details of volumes as JSON.
    Inspect {
        /// Volumes.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes.
    #[command(alias = "remove")]
    Rm {
        /// Do not fail on volumes that do not exist.
        #[arg(short, long)]
        force: bool,
        /// Volumes.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove unused anonymous volumes (every unused volume with -a).
    Prune {
        /// Remove every unused volume, named ones too.
        #[arg(short, long)]
        all: bool,
        /// Do not ask for confirmation (berth never asks; accepted for docker parity).
        #[arg(short, long)]
        force: bool,
    },
}

/// `KEY=VALUE` flags (`-o`, `--label`) as a map.
pub(crate) fn pairs(flag: &str, items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|i| {
            i.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("invalid {flag} {i:?}: expected KEY=VALUE"))
        })
        .collect()
}

/// Prints a failed call's error; the exit code for it.
pub(crate) fn report(e: impl Into<anyhow::Error>) -> u8 {
    eprintln!("berth: {}", crate::describe(&e.into()));
    1
}

/// Runs a `berth volume` command.
pub async fn volume(client: &WsClient, command: VolumeCommand) -> anyhow::Result<u8> {
    match command {
        VolumeCommand::Create {
            name,
            driver,
            opts,
            label,
        } => {
            let request = VolumeCreateRequest {
                name,
                driver: Some(driver),
                driver_opts: pairs("-o", &opts)?,
                labels: pairs("--label", &label)?,
            };
            match VolumeClient::create(client, request).await {
                Ok(v) => {
                    println!("{}", v.name);
                    Ok(0)
                }
                Err(e) => Ok(report(e)),
            }
        }
        VolumeCommand::Ls {
            quiet,
            filter,
            format,
        } => {
            let list = VolumeClient::list(client, Some(VolumeListRequest { filters: filter }))
                .await
                .context("volume.list")?;
            if format == Format::Json {
                output::json(&list)?;
            } else if quiet {
                for v in &list {
                    println!("{}", v.name);
                }
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|v| vec![v.driver.clone(), v.name.clone()])
                    .collect();
                output::table(&["DRIVER", "VOLUME NAME"], &rows);
            }
            Ok(0)
        }
        VolumeCommand::Inspect { names } => {
            let mut all = Vec::new();
            let mut code = 0;
            for name in names {
                match VolumeClient::inspect(client, name).await {
                    Ok(v) => all.push(v),
                    Err(e) => code = report(e),
                }
            }
            output::json(&all)?;
            Ok(code)
        }
        VolumeCommand::Rm { force, names } => {
            let mut code = 0;
            for name in names {
                match VolumeClient::remove(client, name.clone(), Some(force)).await {
                    Ok(()) => println!("{name}"),
                    Err(e) => code = report(e),
                }
            }
            Ok(code)
        }
        VolumeCommand::Prune { all, force: _ } => {
            let report = VolumeClient::prune(client, Some(all))
                .await
                .context("volume.prune")?;
            if !report.volumes_deleted.is_empty() {
                println!("Deleted Volumes:");
                for v in &report.volumes_deleted {
                    println!("{v}");
                }
                println!();
            }
            println!(
                "Total reclaimed space: {}",
                human_size(report.space_reclaimed)
            );
            Ok(0)
        }
    }
}

/// `berth plugin` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum PluginCommand {
    /// Install a plugin from a component file or an OCI artifact: SOURCE [KEY=VALUE...].
    Install {
        /// Name to install under (default: the file's stem or the repository's last part).
        #[arg(long, alias = "alias")]
        name: Option<String>,
        /// Do not enable it.
        #[arg(long)]
        disable: bool,
        /// A component file (a path with a `/` or ending in .wasm), or REGISTRY/REPO[:TAG].
        source: String,
        /// Configuration KEY=VALUE.
        config: Vec<String>,
    },
    /// List plugins.
    #[command(alias = "list")]
    Ls {
        /// Print only names.
        #[arg(short, long)]
        quiet: bool,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Show details of plugins as JSON.
    Inspect {
        /// Plugins.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Enable a plugin.
    Enable {
        /// Plugin.
        name: String,
    },
    /// Disable a plugin.
    Disable {
        /// Plugin.
        name: String,
    },
    /// Change a plugin's configuration: KEY=VALUE (KEY= removes a key).
    Set {
        /// Plugin.
        name: String,
        /// Settings.
        #[arg(required = true)]
        settings: Vec<String>,
    },
    /// Remove plugins.
    #[command(alias = "remove")]
    Rm {
        /// Plugins.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Push a plugin to a registry as an OCI Wasm artifact.
    Push {
        /// Plugin.
        name: String,
        /// REGISTRY/REPO[:TAG].
        reference: String,
    },
}

/// Whether an install source names a local file rather than a registry reference.
fn is_file_source(source: &str) -> bool {
    source.starts_with('/')
        || source.starts_with("./")
        || source.starts_with("../")
        || source.ends_with(".wasm")
        || std::path::Path::new(source).is_file()
}

fn default_name(source: &str, file: bool) -> String {
    let last = if file {
        std::path::Path::new(source)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        let no_digest = source.split('@').next().unwrap_or(source);
        let repo = no_digest.rsplit('/').next().unwrap_or(no_digest);
        repo.split(':').next().unwrap_or(repo).to_owned()
    };
    last.to_ascii_lowercase()
}

/// Runs a `berth plugin` command.
pub async fn plugin(client: &WsClient, command: PluginCommand) -> anyhow::Result<u8> {
    match command {
        PluginCommand::Install {
            name,
            disable,
            source,
            config,
        } => {
            let file = is_file_source(&source);
            let name = name.unwrap_or_else(|| default_name(&source, file));
            let mut request = PluginInstallRequest {
                name,
                config: pairs("setting", &config)?,
                disabled: disable,
                ..Default::default()
            };
            if file {
                let path = std::path::absolute(&source)
                    .with_context(|| format!("cannot resolve {source}"))?;
                if !path.is_file() {
                    bail!("no such component file: {}", path.display());
                }
                request.path = Some(path.display().to_string());
            } else {
                request.auth = crate::auth::for_reference(&source)?;
                request.reference = Some(source);
            }
            match PluginClient::install(client, request).await {
                Ok(p) => {
                    println!(
                        "Installed plugin {} ({} driver, {})",
                        p.name, p.kind, p.digest
                    );
                    Ok(0)
                }
                Err(e) => Ok(report(e)),
            }
        }
        PluginCommand::Ls { quiet, format } => {
            let list = PluginClient::list(client).await.context("plugin.list")?;
            if format == Format::Json {
                output::json(&list)?;
            } else if quiet {
                for p in &list {
                    println!("{}", p.name);
                }
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|p| {
                        let digest = p.digest.strip_prefix("sha256:").unwrap_or(&p.digest);
                        vec![
                            p.name.clone(),
                            p.kind.clone(),
                            p.wit_version.clone(),
                            p.state.clone(),
                            digest[..digest.len().min(12)].to_owned(),
                            p.source.clone(),
                        ]
                    })
                    .collect();
                output::table(&["NAME", "KIND", "WIT", "STATE", "DIGEST", "SOURCE"], &rows);
            }
            Ok(0)
        }
        PluginCommand::Inspect { names } => {
            let mut all = Vec::new();
            let mut code = 0;
            for name in names {
                match PluginClient::inspect(client, name).await {
                    Ok(p) => all.push(p),
                    Err(e) => code = report(e),
                }
            }
            output::json(&all)?;
            Ok(code)
        }
        PluginCommand::Enable { name } => {
            done(PluginClient::enable(client, name.clone()).await, &name)
        }
        PluginCommand::Disable { name } => {
            done(PluginClient::disable(client, name.clone()).await, &name)
        }
        PluginCommand::Set { name, settings } => {
            match PluginClient::set(client, name, settings).await {
                Ok(()) => Ok(0),
                Err(e) => Ok(report(e)),
            }
        }
        PluginCommand::Rm { names } => {
            let mut code = 0;
            for name in names {
                if done(PluginClient::remove(client, name.clone()).await, &name)? != 0 {
                    code = 1;
                }
            }
            Ok(code)
        }
        PluginCommand::Push { name, reference } => {
            let auth = crate::auth::for_reference(&reference)?;
            match PluginClient::push(client, name, reference, auth).await {
                Ok(r) => {
                    println!("{}@{}", r.reference, r.digest);
                    Ok(0)
                }
                Err(e) => Ok(report(e)),
            }
        }
    }
}

fn done(
    result: Result<(), berth_api::jsonrpsee::core::client::Error>,
    name: &str,
) -> anyhow::Result<u8> {
    match result {
        Ok(()) => {
            println!("{name}");
            Ok(0)
        }
        Err(e) => Ok(report(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_sources() {
        assert!(is_file_source("./x.wasm"));
        assert!(is_file_source("/tmp/a"));
        assert!(is_file_source("driver.wasm"));
        assert!(!is_file_source("127.0.0.1:5000/plugins/nfs:1.0"));
        assert_eq!(default_name("/tmp/My-Driver.wasm", true), "my-driver");
        assert_eq!(default_name("127.0.0.1:5000/plugins/nfs:1.0", false), "nfs");
        assert_eq!(default_name("reg.example/a/b@sha256:00", false), "b");
    }
}
