//! Image commands: pull (with per-layer progress bars), images, inspect, tag, rmi.

use std::collections::HashMap;

use anyhow::{Context as _, bail};
use berth_api::image::{
    ImageClient, ImageFilter, LayerPhase, PullEvent, PullRequest, PushEvent, PushRequest,
    RemovedImage,
};
use berth_api::jsonrpsee::ws_client::WsClient;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::output::{self, Format, human_size};

/// Options of `berth pull`.
#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// Image reference: NAME[:TAG|@DIGEST].
    pub reference: String,
    /// Platform to pick from a multi-platform image: os/arch[/variant].
    #[arg(long)]
    pub platform: Option<String>,
    /// Print only the image reference when done.
    #[arg(short, long)]
    pub quiet: bool,
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

/// `berth pull`.
pub async fn pull(client: &WsClient, args: PullArgs) -> anyhow::Result<()> {
    let request = PullRequest {
        reference: args.reference.clone(),
        platform: args.platform.clone(),
        auth: crate::auth::for_reference(&args.reference)?,
    };
    let mut sub = client
        .pull_follow(request)
        .await
        .context("image.pull_follow")?;
    let bars = MultiProgress::with_draw_target(if args.quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    });
    let style = ProgressStyle::with_template("{prefix}: {msg:16} [{bar:30}] {bytes}/{total_bytes}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let mut by_digest: HashMap<String, ProgressBar> = HashMap::new();
    while let Some(event) = sub.next().await {
        match event.context("progress stream")? {
            PullEvent::Resolved {
                reference,
                digest,
                layers,
            } => {
                if !args.quiet {
                    eprintln!("Pulling {reference} ({})", short(&digest));
                }
                for layer in layers {
                    let bar = bars.add(ProgressBar::new(layer.size));
                    bar.set_style(style.clone());
                    bar.set_prefix(short(&layer.digest).to_owned());
                    bar.set_message("Waiting");
                    by_digest.insert(layer.digest, bar);
                }
            }
            PullEvent::Layer {
                digest,
                phase,
                current,
                total,
            } => {
                if let Some(bar) = by_digest.get(&digest) {
                    bar.set_length(total);
                    bar.set_position(current);
                    match phase {
                        LayerPhase::Waiting => bar.set_message("Waiting"),
                        LayerPhase::Downloading => bar.set_message("Downloading"),
                        LayerPhase::Done => bar.finish_with_message("Pull complete"),
                        LayerPhase::AlreadyExists => bar.finish_with_message("Already exists"),
                    }
                }
            }
            PullEvent::Done(result) => {
                for bar in by_digest.values() {
                    if !bar.is_finished() {
                        bar.finish();
                    }
                }
                if args.quiet {
                    println!("{}", result.reference);
                } else {
                    println!("Digest: {}", result.digest);
                    println!(
                        "Status: {} for {}",
                        if result.layers_downloaded > 0 {
                            "Downloaded newer image"
                        } else {
                            "Image is up to date"
                        },
                        result.reference
                    );
                    println!("{}", result.reference);
                }
                return Ok(());
            }
            PullEvent::Failed { message } => {
                for bar in by_digest.values() {
                    bar.abandon();
                }
                bail!("{message}");
            }
        }
    }
    bail!("berthd closed the pull stream without a result")
}

/// Options of `berth images`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only images of this repository (NAME or NAME:TAG).
    pub reference: Option<String>,
    /// Filter: dangling=true|false, label=KEY[=VALUE], reference=NAME[:TAG].
    #[arg(short, long = "filter")]
    pub filters: Vec<String>,
    /// Only ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// Show digests.
    #[arg(long)]
    pub digests: bool,
    /// Do not truncate ids.
    #[arg(long)]
    pub no_trunc: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

fn parse_filters(args: &ListArgs) -> anyhow::Result<ImageFilter> {
    let mut filter = ImageFilter {
        reference: args.reference.clone(),
        ..ImageFilter::default()
    };
    for f in &args.filters {
        let (key, value) = f
            .split_once('=')
            .with_context(|| format!("invalid filter {f:?}: expected KEY=VALUE"))?;
        match key {
            "dangling" => {
                filter.dangling = Some(value.parse().with_context(|| {
                    format!("invalid filter {f:?}: dangling takes true or false")
                })?)
            }
            "label" => filter.label.push(value.to_owned()),
            "reference" => filter.reference = Some(value.to_owned()),
            other => bail!("invalid filter {other:?}: supported are dangling, label, reference"),
        }
    }
    Ok(filter)
}

/// `berth images`.
pub async fn list(client: &WsClient, args: ListArgs) -> anyhow::Result<()> {
    let images = client
        .list(Some(parse_filters(&args)?))
        .await
        .context("image.list")?;
    if args.format == Format::Json {
        return output::json(&images);
    }
    let id = |full: &str| {
        if args.no_trunc {
            full.to_owned()
        } else {
            short(full).to_owned()
        }
    };
    if args.quiet {
        let mut seen = std::collections::HashSet::new();
        for i in &images {
            if seen.insert(i.id.clone()) {
                println!("{}", id(&i.id));
            }
        }
        return Ok(());
    }
    let mut rows = Vec::new();
    for i in &images {
        let created = output::ago(i.created.as_deref());
        let tags: Vec<(String, String)> = if i.repo_tags.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            i.repo_tags
                .iter()
                .map(|t| match t.rsplit_once(':') {
                    Some((repo, tag)) => (repo.to_owned(), tag.to_owned()),
                    None => (t.clone(), "<none>".into()),
                })
                .collect()
        };
        for (repo, tag) in tags {
            let mut row = vec![repo.clone(), tag];
            if args.digests {
                let digest = i
                    .repo_digests
                    .iter()
                    .find(|d| d.starts_with(&format!("{repo}@")))
                    .and_then(|d| d.split_once('@').map(|(_, d)| d.to_owned()))
                    .unwrap_or_else(|| "<none>".into());
                row.push(digest);
            }
            row.extend([id(&i.id), created.clone(), human_size(i.size)]);
            rows.push(row);
        }
    }
    let header: &[&str] = if args.digests {
        &["REPOSITORY", "TAG", "DIGEST", "IMAGE ID", "CREATED", "SIZE"]
    } else {
        &["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
    };
    output::table(header, &rows);
    Ok(())
}

/// `berth image inspect`.
pub async fn inspect(client: &WsClient, names: Vec<String>) -> anyhow::Result<()> {
    let mut all = Vec::new();
    let mut failed = None;
    for name in names {
        match client.inspect(name.clone()).await {
            Ok(details) => all.push(details),
            Err(e) => {
                eprintln!("berth: {}", crate::describe(&e.into()));
                failed = Some(name);
            }
        }
    }
    output::json(&all)?;
    match failed {
        Some(name) => bail!("cannot inspect {name}"),
        None => Ok(()),
    }
}

/// `berth tag`.
pub async fn tag(client: &WsClient, source: String, target: String) -> anyhow::Result<()> {
    client.tag(source, target).await.context("image.tag")?;
    Ok(())
}

/// `berth rmi`.
pub async fn remove(client: &WsClient, names: Vec<String>, force: bool) -> anyhow::Result<()> {
    let mut failed = false;
    for name in names {
        match client.remove(name, Some(force)).await {
            Ok(removed) => {
                for r in removed {
                    match r {
                        RemovedImage::Untagged(n) => println!("Untagged: {n}"),
                        RemovedImage::Deleted(id) => println!("Deleted: {id}"),
                    }
                }
            }
            Err(e) => {
                eprintln!("berth: {}", crate::describe(&e.into()));
                failed = true;
            }
        }
    }
    if failed {
        bail!("some images could not be removed");
    }
    Ok(())
}

/// `berth push`.
pub async fn push(client: &WsClient, reference: String, quiet: bool) -> anyhow::Result<()> {
    let request = PushRequest {
        reference: reference.clone(),
        auth: crate::auth::for_reference(&reference)?,
    };
    let mut sub = client
        .push_follow(request)
        .await
        .context("image.push_follow")?;
    if !quiet {
        eprintln!("Pushing {reference}");
    }
    while let Some(event) = sub.next().await {
        match event.context("progress stream")? {
            PushEvent::Blob {
                digest,
                status,
                size,
            } => {
                if !quiet {
                    let what = match status.as_str() {
                        "exists" => "Layer already exists",
                        "mounted" => "Mounted from another repository",
                        _ => "Pushed",
                    };
                    eprintln!("{}: {what} ({})", short(&digest), human_size(size));
                }
            }
            PushEvent::Done(result) => {
                if quiet {
                    println!("{}", result.reference);
                } else {
                    println!("{}: digest: {}", result.reference, result.digest);
                }
                return Ok(());
            }
            PushEvent::Failed { message } => bail!("{message}"),
        }
    }
    bail!("berthd closed the push stream without a result")
}

/// `berth history`.
pub async fn history(
    client: &WsClient,
    name: String,
    format: Format,
    no_trunc: bool,
) -> anyhow::Result<()> {
    let steps = client.history(name).await.context("image.history")?;
    if format == Format::Json {
        return output::json(&steps);
    }
    let rows: Vec<Vec<String>> = steps
        .iter()
        .map(|h| {
            let by = h.created_by.clone().unwrap_or_default();
            let by = if no_trunc || by.chars().count() <= 45 {
                by
            } else {
                format!("{}…", by.chars().take(44).collect::<String>())
            };
            vec![
                output::ago(h.created.as_deref()),
                by,
                human_size(h.size),
                h.comment.clone().unwrap_or_default(),
            ]
        })
        .collect();
    output::table(&["CREATED", "CREATED BY", "SIZE", "COMMENT"], &rows);
    Ok(())
}

/// `berth image prune`.
pub async fn prune(client: &WsClient, all: bool) -> anyhow::Result<()> {
    let report = client.prune(Some(all)).await.context("image.prune")?;
    if !report.images_deleted.is_empty() {
        println!("Deleted Images:");
        for id in &report.images_deleted {
            println!("deleted: {id}");
        }
        println!();
    }
    println!(
        "Total reclaimed space: {}",
        human_size(report.space_reclaimed)
    );
    Ok(())
}

/// A private temp directory for archives passed through stdin/stdout.
fn private_tempdir() -> anyhow::Result<std::path::PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = std::env::temp_dir().join(format!(
        "berth-cli-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn absolute(path: &str) -> anyhow::Result<String> {
    let p = std::path::Path::new(path);
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    };
    Ok(abs.display().to_string())
}

/// `berth save`.
pub async fn save(
    client: &WsClient,
    names: Vec<String>,
    output: Option<String>,
) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    match output {
        Some(path) => {
            client
                .save(names, absolute(&path)?)
                .await
                .context("image.save")?;
        }
        None => {
            if std::io::stdout().is_terminal() {
                bail!("refusing to write an archive to a terminal: use -o FILE or redirect stdout");
            }
            let dir = private_tempdir()?;
            let path = dir.join("save.tar");
            let saved = client.save(names, path.display().to_string()).await;
            let copied = saved.context("image.save").and_then(|_| {
                let mut file = std::fs::File::open(&path)?;
                std::io::copy(&mut file, &mut std::io::stdout().lock())?;
                Ok(())
            });
            let _ = std::fs::remove_dir_all(&dir);
            copied?;
        }
    }
    Ok(())
}

/// Copies stdin to a private temp file and returns (dir, file).
fn stdin_to_temp() -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf)> {
    let dir = private_tempdir()?;
    let path = dir.join("input.tar");
    let mut file = std::fs::File::create(&path)?;
    std::io::copy(&mut std::io::stdin().lock(), &mut file).context("reading stdin")?;
    Ok((dir, path))
}

/// `berth load`.
pub async fn load(client: &WsClient, input: Option<String>, quiet: bool) -> anyhow::Result<()> {
    let (temp, path) = match input {
        Some(p) => (None, absolute(&p)?),
        None => {
            let (dir, path) = stdin_to_temp()?;
            (Some(dir), path.display().to_string())
        }
    };
    let loaded = client.load(path).await.context("image.load");
    if let Some(dir) = temp {
        let _ = std::fs::remove_dir_all(dir);
    }
    for name in loaded? {
        if quiet {
            println!("{name}");
        } else if name.starts_with("sha256:") {
            println!("Loaded image ID: {name}");
        } else {
            println!("Loaded image: {name}");
        }
    }
    Ok(())
}

/// Options of `berth import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Root filesystem tarball, or - for stdin.
    pub file: String,
    /// Reference for the new image.
    pub reference: Option<String>,
    /// Instruction to apply (CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE, VOLUME,
    /// STOPSIGNAL); repeatable.
    #[arg(short, long = "change")]
    pub changes: Vec<String>,
    /// Commit message.
    #[arg(short, long)]
    pub message: Option<String>,
}

/// `berth import`.
pub async fn import(client: &WsClient, args: ImportArgs) -> anyhow::Result<()> {
    let (temp, path) = if args.file == "-" {
        let (dir, path) = stdin_to_temp()?;
        (Some(dir), path.display().to_string())
    } else {
        (None, absolute(&args.file)?)
    };
    let id = client
        .import(path, args.reference, Some(args.changes), args.message)
        .await
        .context("image.import");
    if let Some(dir) = temp {
        let _ = std::fs::remove_dir_all(dir);
    }
    println!("{}", id?);
    Ok(())
}

/// `berth login`.
pub async fn login(
    client: &WsClient,
    server: Option<String>,
    username: Option<String>,
    password: Option<String>,
    password_stdin: bool,
) -> anyhow::Result<()> {
    use std::io::{IsTerminal, Read};
    let registry = crate::auth::server_key(server.as_deref());
    let username = username.context("--username is required")?;
    let password = match (password, password_stdin) {
        (Some(_), true) => bail!("--password and --password-stdin are mutually exclusive"),
        (Some(p), false) => {
            eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
            p
        }
        (None, _) => {
            if std::io::stdin().is_terminal() && !password_stdin {
                bail!("no password: use --password-stdin (berth does not prompt)");
            }
            let mut p = String::new();
            std::io::stdin()
                .read_to_string(&mut p)
                .context("reading the password from stdin")?;
            p.trim_end_matches(['\n', '\r']).to_owned()
        }
    };
    if password.is_empty() {
        bail!("empty password");
    }
    let auth = berth_api::image::RegistryAuth {
        username: Some(username.clone()),
        password: Some(password.clone()),
        registry_token: None,
    };
    client
        .login(registry.clone(), auth)
        .await
        .context("image.login")?;
    crate::auth::store(&registry, &username, &password)?;
    println!("Login Succeeded");
    Ok(())
}

/// `berth logout`.
pub fn logout(server: Option<String>) -> anyhow::Result<()> {
    let registry = crate::auth::server_key(server.as_deref());
    if crate::auth::remove(&registry)? {
        println!("Removing login credentials for {registry}");
    } else {
        println!("Not logged in to {registry}");
    }
    Ok(())
}
