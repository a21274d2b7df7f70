//! `container.*` handlers: blocking work on the blocking pool, one monitor task per running
//! container (records its exit, removes `--rm` containers), and log following.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use berth_api::container::{
    ArchiveEvent, AttachEvent, ContainerDetails, ContainerServer, ContainerStats, ContainerSummary,
    CreateRequest, CreateResult, ExecEvent, ExecRequest, ListRequest, LogEvent, LogLine,
    LogsRequest, TopResult, WaitResult,
};
use berth_api::error::start_failed;
use jsonrpsee::PendingSubscriptionSink;
use jsonrpsee::core::{RpcResult, SubscriptionResult, async_trait};
use jsonrpsee::types::ErrorObjectOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::ChildStdin;

use super::ApiError;
use crate::authz::{Principal, principal_of};
use crate::container::{self, Containers, ShimCommand, parse_signal, select_logs};
use crate::daemon::Context;
use crate::runtime::logfile;
use crate::runtime::protocol::{ExitRecord, Request, Response};

impl ApiError for container::Error {
    fn kind(&self) -> berth_api::ErrorKind {
        container::Error::kind(self)
    }

    fn to_rpc(&self) -> ErrorObjectOwned {
        match self {
            container::Error::StartFailed { message, exit_code } => {
                start_failed(message.clone(), *exit_code)
            }
            other => berth_api::error::rpc_error(other.kind(), other.to_string()),
        }
    }
}

/// Exit records of `--rm` containers, kept briefly so a `wait` that arrives after the
/// removal still learns how the container ended.
#[derive(Debug, Default)]
pub struct RecentExits(Mutex<HashMap<String, (ExitRecord, Instant)>>);

impl RecentExits {
    fn put(&self, id: &str, exit: ExitRecord) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, (_, at)| at.elapsed() < Duration::from_secs(300));
        map.insert(id.to_owned(), (exit, Instant::now()));
    }

    /// The exit of the one removed container whose id `key` is or starts with.
    fn get(&self, key: &str) -> Option<ExitRecord> {
        if !crate::container::is_id_prefix(key) {
            return None;
        }
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut found = map.iter().filter(|(id, _)| id.starts_with(key));
        match (found.next(), found.next()) {
            (Some((_, (exit, _))), None) => Some(exit.clone()),
            _ => None,
        }
    }
}

/// The stdin of each running exec that asked for one, by exec id.
type ExecInputs = Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<ChildStdin>>>>>;

/// An archive being unpacked into a container: its shim and when it last got data.
#[derive(Debug)]
struct Upload {
    child: tokio::process::Child,
    stdin: Option<ChildStdin>,
    touched: Instant,
    _session: Session,
}

/// The container each live exec and upload works in, and who opened it, by its id: the
/// calls that name only the session (`exec_input`, `exec_resize`, `archive_put_data`) act on
/// that container, and the authorization gate judges them as calls on it, from its opener
/// only.
#[derive(Debug, Default)]
pub struct Sessions(Arc<Mutex<HashMap<String, SessionOf>>>);

/// What a session works in, and for whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOf {
    /// The full id of its container.
    pub container_id: String,
    /// Who opened it.
    pub opener: Principal,
}

impl Sessions {
    /// Records that session `id`, opened by `opener`, works in `container_id` until the
    /// returned guard drops.
    fn open(&self, id: &str, container_id: String, opener: Principal) -> Session {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(
            id.to_owned(),
            SessionOf {
                container_id,
                opener,
            },
        );
        Session {
            sessions: Arc::clone(&self.0),
            id: id.to_owned(),
        }
    }

    /// The live session `id` (matched whole).
    pub fn get(&self, id: &str) -> Option<SessionOf> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }
}

/// A live session's entry in [`Sessions`]; dropping it removes the entry.
#[derive(Debug)]
struct Session {
    sessions: Arc<Mutex<HashMap<String, SessionOf>>>,
    id: String,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// Uploads unused this long are abandoned (their shim killed).
const UPLOAD_IDLE: Duration = Duration::from_secs(600);

/// Implements [`ContainerServer`].
#[derive(Debug)]
pub struct ContainerApi {
    ctx: Arc<Context>,
    recent: Arc<RecentExits>,
    exec_inputs: Arc<ExecInputs>,
    exec_resizers: Arc<Mutex<HashMap<String, std::fs::File>>>,
    uploads: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<Upload>>>>>,
}

impl ContainerApi {
    /// Handlers over the shared daemon context and its record of recent `--rm` exits.
    pub fn new(ctx: Arc<Context>, recent: Arc<RecentExits>) -> ContainerApi {
        ContainerApi {
            ctx,
            recent,
            exec_inputs: Arc::default(),
            exec_resizers: Arc::default(),
            uploads: Arc::default(),
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Containers) -> container::Result<T> + Send + 'static,
    ) -> Result<T, ErrorObjectOwned> {
        let containers = Arc::clone(&self.ctx.containers);
        // The call's span goes along, so the work's own spans nest under it.
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| f(&containers)))
            .await
            .map_err(|e| {
                berth_api::error::rpc_error(berth_api::ErrorKind::Internal, e.to_string())
            })?
            .map_err(|e| e.to_rpc())
    }

    /// Watches a running container until it exits: records the exit, removes `--rm` ones.
    pub fn monitor(ctx: Arc<Context>, recent: Arc<RecentExits>, id: String) {
        tokio::spawn(async move {
            let containers = Arc::clone(&ctx.containers);
            let c = Arc::clone(&containers);
            let monitored = id.clone();
            let result = tokio::task::spawn_blocking(move || {
                let mut run = c.resolve(&id)?.state.started_at;
                loop {
                    let exit = c.wait_exit(&id)?;
                    let record = c.mark_exited_run(&id, &exit, run.as_deref())?;
                    if record.state.started_at != run {
                        // Restarted by the user meanwhile: that run has its own monitor.
                        return Ok(false);
                    }
                    if record.config.auto_remove {
                        recent.put(&id, exit);
                        return Ok(true);
                    }
                    if !record.should_restart() {
                        return Ok(false);
                    }
                    // docker's backoff: 100 ms, doubling, at most a minute.
                    let n = c.count_restart(&id)?;
                    let delay = Duration::from_millis(100u64 << (n - 1).min(9))
                        .min(Duration::from_secs(60));
                    std::thread::sleep(delay);
                    // The user may have removed, started or stopped it meanwhile.
                    let now = c.resolve(&id)?;
                    if now.manually_stopped
                        || now.state.status != berth_api::container::ContainerStatus::Exited
                    {
                        return Ok(false);
                    }
                    run = c.start_by_policy(&id)?.0.state.started_at;
                }
            })
            .await;
            // A container removed (rm -f) while the monitor waited has nothing left to do.
            let result = result.map(|r| match r {
                Err(container::Error::NotFound(_)) => Ok(false),
                other => other,
            });
            match result {
                // `--rm` also removes the container's anonymous volumes, as in docker. They
                // are released before the container goes, so that once it is gone from
                // `ps -a` its volumes are free (a `volume prune` right after sees them so).
                Ok(Ok(true)) => {
                    ctx.volumes.release_container(&monitored, true).await;
                    let c = Arc::clone(&containers);
                    let id = monitored.clone();
                    match tokio::task::spawn_blocking(move || c.remove(&id, false)).await {
                        Ok(Ok(()) | Err(container::Error::NotFound(_))) => {}
                        Ok(Err(e)) => {
                            tracing::warn!(container = %monitored, "auto-remove: {e}");
                            ctx.volumes.release_orphans(None).await;
                        }
                        Err(e) => tracing::warn!("auto-remove task: {e}"),
                    }
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    tracing::warn!("container monitor: {e}");
                    ctx.volumes.release_orphans(None).await;
                }
                Err(e) => tracing::warn!("container monitor task: {e}"),
            }
        });
    }
}

fn internal(message: String) -> ErrorObjectOwned {
    berth_api::error::rpc_error(berth_api::ErrorKind::Internal, message)
}

/// Starts monitors for the containers found running at daemon start.
pub fn monitor_all(ctx: &Arc<Context>, ids: Vec<String>) -> Arc<RecentExits> {
    let recent = Arc::new(RecentExits::default());
    for id in ids {
        ContainerApi::monitor(Arc::clone(ctx), Arc::clone(&recent), id);
    }
    recent
}

/// A container's live log, read as it grows. The file stays open between reads, so what was
/// written before it was rotated away, or removed with its container (`run --rm` removes it
/// as soon as the container exits), is still read to its end.
struct LogTail<'a> {
    path: &'a Path,
    file: Option<std::fs::File>,
    /// Where the next complete record starts in `file`.
    offset: u64,
}

impl<'a> LogTail<'a> {
    fn new(path: &'a Path) -> LogTail<'a> {
        LogTail {
            path,
            file: None,
            offset: 0,
        }
    }

    /// The complete records written since the last read, across a rotation.
    fn read(&mut self) -> Vec<logfile::Record> {
        use std::os::unix::fs::MetadataExt as _;
        let identity = |m: std::fs::Metadata| (m.dev(), m.ino());
        // Which file the path names, seen before reading the open one: a file rotated away
        // meanwhile gets nothing more once renamed, so it is read to its end below before
        // the next read moves on to its successor.
        let named = std::fs::metadata(self.path).ok().map(identity);
        let mut records = Vec::new();
        if let Some(file) = &mut self.file {
            records = complete_records(file, &mut self.offset);
        }
        let open = self
            .file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map(identity);
        if named.is_some()
            && named != open
            && let Ok(mut file) = std::fs::File::open(self.path)
        {
            self.offset = 0;
            records.extend(complete_records(&mut file, &mut self.offset));
            self.file = Some(file);
        }
        records
    }
}

/// The complete records of `file` from `offset` on; `offset` moves past them.
fn complete_records(file: &mut std::fs::File, offset: &mut u64) -> Vec<logfile::Record> {
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len < *offset {
        *offset = 0; // truncated
    }
    if file.seek(SeekFrom::Start(*offset)).is_err() {
        return Vec::new();
    }
    let mut data = Vec::new();
    let _ = file.read_to_end(&mut data);
    let complete = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    *offset += complete as u64;
    data[..complete]
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(logfile::parse_line)
        .collect()
}

#[async_trait]
impl ContainerServer for ContainerApi {
    async fn create(&self, mut request: CreateRequest) -> RpcResult<CreateResult> {
        // The daemon's default logging driver is recorded in the container, as docker does,
        // so a later change of the default does not change existing containers.
        if request.log_driver.is_none() {
            request.log_driver = Some(self.ctx.config.log_driver.clone());
            if request.log_opts.is_empty() {
                request.log_opts = self
                    .ctx
                    .config
                    .log_opts
                    .iter()
                    .filter_map(|o| o.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
            }
        }
        self.ctx
            .logs
            .check(&request)
            .await
            .map_err(|e| berth_api::error::rpc_error(e.kind(), e.to_string()))?;
        // Volumes are made and mounted, then the container is written: run to the end even
        // if the caller goes away, so no volume is left mounted for nobody.
        let ctx = Arc::clone(&self.ctx);
        let record = tokio::spawn(async move {
            ctx.networks
                .check_create(&request)
                .await
                .map_err(|e| e.to_rpc())?;
            let containers = Arc::clone(&ctx.containers);
            let req = request.clone();
            let wanted = tokio::task::spawn_blocking(move || containers.volume_requests(&req))
                .await
                .map_err(|e| internal(e.to_string()))?
                .map_err(|e| e.to_rpc())?;
            let attached = ctx.volumes.attach(&wanted).await.map_err(|e| e.to_rpc())?;
            let volumes = attached.clone();
            let containers = Arc::clone(&ctx.containers);
            let created = tokio::task::spawn_blocking(move || containers.create(request, volumes))
                .await
                .map_err(|e| internal(e.to_string()))
                .and_then(|r| r.map_err(|e| e.to_rpc()));
            if created.is_err() {
                ctx.volumes.release(&attached).await;
            }
            let record = created?;
            if let Err(e) = ctx.networks.add_container(&record).await {
                // The network went away between the check and now: undo the container.
                let containers = Arc::clone(&ctx.containers);
                let id = record.id.clone();
                let _ = tokio::task::spawn_blocking(move || containers.remove(&id, true)).await;
                ctx.volumes.release(&attached).await;
                return Err(e.to_rpc());
            }
            Ok(record)
        })
        .await
        .map_err(|e| internal(e.to_string()))??;
        Ok(CreateResult {
            id: record.id,
            name: record.name,
        })
    }

    async fn start(&self, id: String, attach: Option<bool>) -> RpcResult<()> {
        let await_attach = attach.unwrap_or(false);
        let (record, started) = self
            .blocking(move |c| c.start_with(&id, await_attach))
            .await?;
        if started {
            Self::monitor(Arc::clone(&self.ctx), Arc::clone(&self.recent), record.id);
        }
        Ok(())
    }

    async fn wait(&self, id: String) -> RpcResult<WaitResult> {
        let key = id.clone();
        match self.blocking(move |c| c.wait(&key)).await {
            Ok(r) => Ok(r),
            Err(e) if e.code() == berth_api::ErrorKind::NotFound.code() => {
                match self.recent.get(&id) {
                    Some(exit) => Ok(WaitResult {
                        exit_code: exit.exit_code,
                        error: exit.error,
                        oom_killed: exit.oom_killed,
                    }),
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn kill(&self, id: String, signal: Option<String>) -> RpcResult<()> {
        let sig = match signal.as_deref() {
            None => libc::SIGKILL,
            Some(s) => parse_signal(s).ok_or_else(|| {
                berth_api::error::invalid_params(
                    Some("signal".into()),
                    format!("invalid signal {s:?}"),
                )
            })?,
        };
        self.blocking(move |c| c.kill_by_user(&id, sig)).await
    }

    async fn stop(&self, id: String, timeout: Option<u64>) -> RpcResult<()> {
        self.blocking(move |c| {
            let secs = match timeout {
                Some(t) => t,
                None => c.stop_timeout(&id)?.unwrap_or(10),
            };
            c.stop(&id, Duration::from_secs(secs))
        })
        .await
    }

    async fn restart(&self, id: String, timeout: Option<u64>) -> RpcResult<()> {
        let (record, started) = self
            .blocking(move |c| {
                // Each step finds the container by its id: the key could name another one
                // by the time the stop has waited (a name given up meanwhile).
                let id = c.resolve(&id)?.id;
                let secs = match timeout {
                    Some(t) => t,
                    None => c.stop_timeout(&id)?.unwrap_or(10),
                };
                c.stop(&id, Duration::from_secs(secs))?;
                let exit = c.wait_exit(&id)?;
                c.mark_exited(&id, &exit)?;
                let started = c.start(&id)?;
                c.emit_event(&id, "restart", &[]);
                Ok(started)
            })
            .await?;
        if started {
            Self::monitor(Arc::clone(&self.ctx), Arc::clone(&self.recent), record.id);
        }
        Ok(())
    }

    async fn exec(
        &self,
        pending: PendingSubscriptionSink,
        extensions: &jsonrpsee::core::server::Extensions,
        id: String,
        request: ExecRequest,
    ) -> SubscriptionResult {
        let opener = principal_of(extensions);
        let wants_stdin = request.stdin;
        let wants_tty = request.tty;
        let command_line = request.cmd.join(" ");
        let ShimCommand {
            program,
            args,
            container_id,
        } = match self.blocking(move |c| c.exec_command(&id, &request)).await {
            Ok(v) => v,
            Err(e) => {
                pending.reject(e).await;
                return Ok(());
            }
        };
        let mut command = tokio::process::Command::new(&program);
        command
            .args(&args)
            .stdin(if wants_stdin {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            // The process dies with its shim (PDEATHSIG): a caller that goes away ends it.
            .kill_on_drop(true);
        // With a terminal, resize requests reach the shim on a pipe at RESIZE_FD.
        let resize_pipe = if wants_tty {
            match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
                Ok((read, write)) => {
                    let read_fd = std::os::fd::AsRawFd::as_raw_fd(&read);
                    // SAFETY: dup2 is async-signal-safe; it runs in the forked child before
                    // exec and only duplicates a descriptor the child owns.
                    unsafe {
                        command.pre_exec(move || {
                            if libc::dup2(read_fd, crate::runtime::exec::RESIZE_FD) < 0 {
                                return Err(std::io::Error::last_os_error());
                            }
                            Ok(())
                        });
                    }
                    Some((read, std::fs::File::from(write)))
                }
                Err(e) => {
                    pending
                        .reject(berth_api::error::rpc_error(
                            berth_api::ErrorKind::Internal,
                            format!("create the resize pipe: {e}"),
                        ))
                        .await;
                    return Ok(());
                }
            }
        } else {
            None
        };
        let mut child = match spawn_tool(&mut command, &program) {
            Ok(c) => c,
            Err(e) => {
                pending.reject(e).await;
                return Ok(());
            }
        };
        let sink = pending.accept().await?;
        let exec_id = crate::store::random_hex(16)?;
        let _session = self
            .ctx
            .sessions
            .open(&exec_id, container_id.clone(), opener);
        let exec_event = |action: &'static str, extra: Option<(&'static str, String)>| {
            let containers = Arc::clone(&self.ctx.containers);
            let (key, exec_id, command_line) =
                (container_id.clone(), exec_id.clone(), command_line.clone());
            tokio::task::spawn_blocking(move || {
                let mut attributes = vec![("execID", exec_id), ("command", command_line)];
                attributes.extend(extra);
                containers.emit_event(&key, action, &attributes);
            })
        };
        let _ = exec_event("exec_start", None).await;
        let resizer = resize_pipe.map(|(read, write)| {
            drop(read);
            self.exec_resizers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(exec_id.clone(), write);
        });
        let registered = match child.stdin.take() {
            Some(stdin) => {
                let slot = Arc::new(tokio::sync::Mutex::new(Some(stdin)));
                self.exec_inputs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(exec_id.clone(), slot);
                true
            }
            None => false,
        };
        let outcome = stream_exec(&sink, &mut child, &exec_id).await;
        if resizer.is_some() {
            self.exec_resizers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&exec_id);
        }
        if registered {
            self.exec_inputs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&exec_id);
        }
        let _ = exec_event(
            "exec_die",
            outcome.map(|code| ("exitCode", code.to_string())),
        )
        .await;
        // A caller that left gets nothing more; the process is killed with its shim.
        if let Some(exit_code) = outcome {
            let _ = sink
                .send(serde_json::value::to_raw_value(&ExecEvent::Exit {
                    exit_code,
                })?)
                .await;
        }
        Ok(())
    }

    async fn exec_input(
        &self,
        exec_id: String,
        data: Option<String>,
        close: Option<bool>,
    ) -> RpcResult<()> {
        let slot = entry_of(&self.exec_inputs, &exec_id, || {
            format!("no running exec {exec_id:?} with an open stdin")
        })?;
        let bytes = decode_data(data)?;
        let mut guard = slot.lock().await;
        if let Some(stdin) = guard.as_mut()
            && !bytes.is_empty()
            && let Err(e) = stdin.write_all(&bytes).await
        {
            *guard = None;
            return Err(berth_api::error::rpc_error(
                berth_api::ErrorKind::FailedPrecondition,
                format!("exec {exec_id}: its stdin is closed: {e}"),
            ));
        }
        if close.unwrap_or(false) {
            *guard = None;
        }
        Ok(())
    }

    async fn archive_get(
        &self,
        pending: PendingSubscriptionSink,
        id: String,
        path: String,
    ) -> SubscriptionResult {
        let ShimCommand { program, args, .. } = match self
            .blocking(move |c| c.archive_command(&id, &path, false))
            .await
        {
            Ok(v) => v,
            Err(e) => {
                pending.reject(e).await;
                return Ok(());
            }
        };
        let mut command = tokio::process::Command::new(&program);
        command
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = match spawn_tool(&mut command, &program) {
            Ok(c) => c,
            Err(e) => {
                pending.reject(e).await;
                return Ok(());
            }
        };
        let sink = pending.accept().await?;
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let errors = tokio::spawn(async move {
            let mut text = String::new();
            if let Some(e) = stderr.as_mut() {
                let _ = e.read_to_string(&mut text).await;
            }
            text
        });
        let mut buf = vec![0u8; 256 * 1024];
        while let Some(out) = stdout.as_mut() {
            let n = tokio::select! {
                n = out.read(&mut buf) => n.unwrap_or(0),
                _ = sink.closed() => return Ok(()),
            };
            if n == 0 {
                break;
            }
            let event = ArchiveEvent::Data {
                data: BASE64.encode(&buf[..n]),
            };
            if sink
                .send(serde_json::value::to_raw_value(&event)?)
                .await
                .is_err()
            {
                return Ok(());
            }
        }
        let status = child.wait().await?;
        let message = errors.await.unwrap_or_default();
        let event = if status.success() {
            ArchiveEvent::End
        } else {
            ArchiveEvent::Failed {
                message: message.trim().to_owned(),
                not_found: status.code() == Some(crate::runtime::archive::EXIT_NOT_FOUND),
            }
        };
        let _ = sink.send(serde_json::value::to_raw_value(&event)?).await;
        Ok(())
    }

    async fn archive_put(
        &self,
        extensions: &jsonrpsee::core::server::Extensions,
        id: String,
        path: String,
    ) -> RpcResult<String> {
        let opener = principal_of(extensions);
        let ShimCommand {
            program,
            args,
            container_id,
        } = self
            .blocking(move |c| c.archive_command(&id, &path, true))
            .await?;
        let mut command = tokio::process::Command::new(&program);
        command
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = spawn_tool(&mut command, &program)?;
        let upload_id = crate::store::random_hex(16).map_err(|e| {
            berth_api::error::rpc_error(berth_api::ErrorKind::Internal, e.to_string())
        })?;
        let stdin = child.stdin.take();
        let session = self.ctx.sessions.open(&upload_id, container_id, opener);
        let mut uploads = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
        // Abandoned uploads go (dropping one kills its shim and closes its session).
        uploads.retain(|_, u| {
            u.try_lock()
                .map_or(true, |u| u.touched.elapsed() < UPLOAD_IDLE)
        });
        uploads.insert(
            upload_id.clone(),
            Arc::new(tokio::sync::Mutex::new(Upload {
                child,
                stdin,
                touched: Instant::now(),
                _session: session,
            })),
        );
        Ok(upload_id)
    }

    async fn archive_put_data(
        &self,
        upload_id: String,
        data: Option<String>,
        end: Option<bool>,
    ) -> RpcResult<()> {
        let slot = entry_of(&self.uploads, &upload_id, || {
            format!("no upload {upload_id:?}")
        })?;
        let bytes = decode_data(data)?;
        let mut upload = slot.lock().await;
        upload.touched = Instant::now();
        let mut write_failed = false;
        if !bytes.is_empty()
            && let Some(stdin) = upload.stdin.as_mut()
        {
            // A failed write means the shim stopped reading: its exit says why.
            write_failed = stdin.write_all(&bytes).await.is_err();
        }
        if !end.unwrap_or(false) && !write_failed {
            return Ok(());
        }
        upload.stdin = None;
        let status = upload.child.wait().await.map_err(|e| {
            berth_api::error::rpc_error(berth_api::ErrorKind::Internal, e.to_string())
        })?;
        let mut message = String::new();
        if let Some(err) = upload.child.stderr.as_mut() {
            let _ = err.read_to_string(&mut message).await;
        }
        drop(upload);
        self.uploads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&upload_id);
        if status.success() {
            return Ok(());
        }
        let kind = if status.code() == Some(crate::runtime::archive::EXIT_NOT_FOUND) {
            berth_api::ErrorKind::NotFound
        } else {
            berth_api::ErrorKind::FailedPrecondition
        };
        Err(berth_api::error::rpc_error(kind, message.trim().to_owned()))
    }

    async fn attach(&self, pending: PendingSubscriptionSink, id: String) -> SubscriptionResult {
        let key = id.clone();
        let stream = match self.blocking(move |c| c.attach(&key)).await {
            Ok(s) => s,
            Err(e) => {
                pending.reject(e).await;
                return Ok(());
            }
        };
        let sink = pending.accept().await?;
        let closer = stream.try_clone()?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<AttachEvent>(256);
        // The shim's answers are read on a blocking thread; shutting the socket down ends
        // it when the caller goes away.
        let reader = tokio::task::spawn_blocking(move || {
            use std::io::BufRead;
            let mut lines = std::io::BufReader::new(stream);
            let mut line = String::new();
            loop {
                line.clear();
                if lines.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let event = match serde_json::from_str::<Response>(&line) {
                    Ok(Response::Output { stream, data }) => AttachEvent::Output { stream, data },
                    Ok(Response::Exited(exit)) => AttachEvent::Exit {
                        exit_code: exit.exit_code,
                    },
                    _ => continue,
                };
                let last = matches!(event, AttachEvent::Exit { .. });
                if tx.blocking_send(event).is_err() || last {
                    return;
                }
            }
        });
        let mut ended = false;
        let mut delivered = false;
        loop {
            let event = tokio::select! {
                event = rx.recv() => event,
                _ = sink.closed() => {
                    ended = true;
                    None
                }
            };
            let Some(event) = event else {
                break;
            };
            let last = matches!(event, AttachEvent::Exit { .. });
            delivered |= matches!(event, AttachEvent::Output { .. });
            if sink
                .send(serde_json::value::to_raw_value(&event)?)
                .await
                .is_err()
            {
                ended = true;
                break;
            }
            if last {
                ended = true;
                break;
            }
        }
        let _ = closer.shutdown(std::net::Shutdown::Both);
        let _ = reader.await;
        if !ended {
            // The shim went away between our connect and its last answer (the container
            // was exiting): the caller still gets its output (from the log, when none
            // came through) and its exit, the stream's last event.
            if !delivered && let Ok(lines) = ContainerServer::logs(self, id.clone(), None).await {
                for line in lines {
                    let event = AttachEvent::Output {
                        stream: line.stream,
                        data: BASE64.encode(line.log.as_bytes()),
                    };
                    if sink
                        .send(serde_json::value::to_raw_value(&event)?)
                        .await
                        .is_err()
                    {
                        return Ok(());
                    }
                }
            }
            let exit_code = match ContainerServer::wait(self, id).await {
                Ok(r) => r.exit_code,
                Err(_) => 255,
            };
            let _ = sink
                .send(serde_json::value::to_raw_value(&AttachEvent::Exit {
                    exit_code,
                })?)
                .await;
        }
        Ok(())
    }

    async fn input(&self, id: String, data: Option<String>, close: Option<bool>) -> RpcResult<()> {
        if let Some(data) = &data
            && BASE64.decode(data.as_bytes()).is_err()
        {
            return Err(berth_api::error::invalid_params(
                Some("data".into()),
                "not base64",
            ));
        }
        self.blocking(move |c| {
            if let Some(data) = data {
                c.stdio_request(&id, &Request::Input { data })?;
            }
            if close.unwrap_or(false) {
                c.stdio_request(&id, &Request::CloseStdin)?;
            }
            Ok(())
        })
        .await
    }

    async fn resize(&self, id: String, rows: u16, cols: u16) -> RpcResult<()> {
        self.blocking(move |c| c.stdio_request(&id, &Request::Resize { rows, cols }))
            .await
    }

    async fn exec_resize(&self, exec_id: String, rows: u16, cols: u16) -> RpcResult<()> {
        use std::io::Write;
        let mut resizers = self.exec_resizers.lock().unwrap_or_else(|p| p.into_inner());
        let pipe = resizers.get_mut(&exec_id).ok_or_else(|| {
            berth_api::error::rpc_error(
                berth_api::ErrorKind::NotFound,
                format!("no running exec {exec_id:?} with a terminal"),
            )
        })?;
        // A few bytes into a pipe the shim drains: this never blocks for long.
        pipe.write_all(format!("{rows} {cols}\n").as_bytes())
            .map_err(|e| {
                berth_api::error::rpc_error(
                    berth_api::ErrorKind::FailedPrecondition,
                    format!("exec {exec_id}: {e}"),
                )
            })
    }

    async fn pause(&self, id: String) -> RpcResult<()> {
        self.blocking(move |c| c.pause(&id)).await
    }

    async fn unpause(&self, id: String) -> RpcResult<()> {
        self.blocking(move |c| c.unpause(&id)).await
    }

    async fn top(&self, id: String) -> RpcResult<TopResult> {
        self.blocking(move |c| c.top(&id)).await
    }

    async fn stats(&self, id: String) -> RpcResult<ContainerStats> {
        self.blocking(move |c| c.stats(&id)).await
    }

    async fn rename(&self, id: String, name: String) -> RpcResult<()> {
        self.blocking(move |c| c.rename(&id, &name)).await
    }

    async fn prune(&self) -> RpcResult<berth_api::container::ContainerPruneReport> {
        let report = self.blocking(|c| c.prune()).await;
        // Containers pruned before an error are gone too: release whatever lost its owner.
        self.ctx.volumes.release_orphans(None).await;
        report
    }

    async fn remove(
        &self,
        id: String,
        force: Option<bool>,
        volumes: Option<bool>,
    ) -> RpcResult<()> {
        let ctx = Arc::clone(&self.ctx);
        // Like create: the release of its volumes must happen even if the caller goes away.
        tokio::spawn(async move {
            let containers = Arc::clone(&ctx.containers);
            let removed = tokio::task::spawn_blocking(move || {
                let id = containers.resolve(&id)?.id;
                containers.remove(&id, force.unwrap_or(false)).map(|()| id)
            })
            .await
            .map_err(|e| internal(e.to_string()))?;
            match removed {
                Ok(id) => {
                    ctx.volumes
                        .release_container(&id, volumes.unwrap_or(false))
                        .await;
                    Ok(())
                }
                Err(e) => {
                    // It may be gone all the same (its files could not be deleted).
                    ctx.volumes.release_orphans(None).await;
                    Err(e.to_rpc())
                }
            }
        })
        .await
        .map_err(|e| internal(e.to_string()))?
    }

    async fn list(
        &self,
        extensions: &jsonrpsee::core::server::Extensions,
        request: Option<ListRequest>,
    ) -> RpcResult<Vec<ContainerSummary>> {
        let request = request.unwrap_or_default();
        request
            .validate()
            .map_err(|m| berth_api::error::invalid_params(Some("filters".into()), m))?;
        // A status filter shows stopped containers too, as in docker.
        let all = request.all
            || request
                .filters
                .iter()
                .any(|f| f.starts_with("status=") || f.starts_with("exited="));
        let listed = self.blocking(move |c| c.list(all)).await?;
        let mut listed: Vec<_> = listed.into_iter().filter(|c| request.matches(c)).collect();
        super::authz::narrow_list(extensions, &mut listed, |c| Some(&c.labels));
        Ok(listed)
    }

    async fn inspect(&self, id: String) -> RpcResult<ContainerDetails> {
        let (mut details, record) = self
            .blocking(move |c| Ok((c.inspect(&id)?, c.resolve(&id)?)))
            .await?;
        details.network_settings = self.ctx.networks.settings(&record).await;
        details.log_delivery = self.ctx.logs.status(&record.id);
        Ok(details)
    }

    async fn port(&self, id: String) -> RpcResult<Vec<berth_api::container::PortBinding>> {
        let record = self.blocking(move |c| c.resolve(&id)).await?;
        Ok(self.ctx.networks.settings(&record).await.ports)
    }

    async fn logs(&self, id: String, request: Option<LogsRequest>) -> RpcResult<Vec<LogLine>> {
        let request = request.unwrap_or_default();
        let key = id.clone();
        let record = self.blocking(move |c| c.resolve(&key)).await?;
        if let Some(lines) = self
            .ctx
            .logs
            .read_back(&record, &request)
            .await
            .map_err(|e| berth_api::error::rpc_error(e.kind(), e.to_string()))?
        {
            return Ok(lines);
        }
        self.blocking(move |c| {
            let (_, path) = c.log_path(&id)?;
            let records = logfile::read_all(&path).map_err(|source| container::Error::Io {
                id: id.clone(),
                what: "read its log",
                source,
            })?;
            Ok(select_logs(records, &request))
        })
        .await
    }

    async fn logs_follow(
        &self,
        pending: PendingSubscriptionSink,
        id: String,
        request: Option<LogsRequest>,
    ) -> SubscriptionResult {
        let request = request.unwrap_or_default();
        let key = id.clone();
        let found = self.blocking(move |c| c.log_path(&key)).await;
        let (record, path) = match found {
            Ok(v) => v,
            Err(e) => {
                pending.reject(e).await;
                return Ok(());
            }
        };
        let reader = match self.ctx.logs.open_reader(&record, &request, true).await {
            Ok(r) => r,
            Err(e) => {
                pending
                    .reject(berth_api::error::rpc_error(e.kind(), e.to_string()))
                    .await;
                return Ok(());
            }
        };
        let sink = pending.accept().await?;
        if let Some((driver, reader)) = reader {
            self.follow_driver(&sink, &record.id, driver, reader, &path)
                .await?;
            return Ok(());
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<LogLine>(1024);
        let containers = Arc::clone(&self.ctx.containers);
        let container_dir = path.parent().map(|p| p.to_path_buf()).unwrap_or_default();
        let bundle = containers.bundle_dir(&record.id);
        tokio::task::spawn_blocking(move || follow(&path, &container_dir, &bundle, &request, tx));
        while let Some(line) = rx.recv().await {
            let msg = serde_json::value::to_raw_value(&LogEvent::Line(line))?;
            if sink.send(msg).await.is_err() {
                return Ok(());
            }
        }
        let _ = sink
            .send(serde_json::value::to_raw_value(&LogEvent::End)?)
            .await;
        Ok(())
    }
}

impl ContainerApi {
    /// `logs -f` served by a logging driver that reads back: its records until the
    /// container has stopped and its delivery has finished, then `End`.
    async fn follow_driver(
        &self,
        sink: &jsonrpsee::SubscriptionSink,
        id: &str,
        driver: Arc<crate::plugin_host::LoggingDriver>,
        reader: Option<crate::plugin_host::ReaderId>,
        log_path: &Path,
    ) -> Result<(), serde_json::Error> {
        let bundle = self.ctx.containers.bundle_dir(id);
        let container_dir = log_path
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_default();
        let mut reader = reader;
        let mut last_round = false;
        loop {
            // Off the async workers: these are file system calls.
            let exists = |p: std::path::PathBuf| async move {
                tokio::fs::try_exists(&p).await.unwrap_or(false)
            };
            let stopped = exists(bundle.join(crate::runtime::files::EXIT)).await
                || !exists(container_dir.clone()).await;
            let finished = stopped && !self.ctx.logs.is_active(id);
            if reader.is_none() && !finished {
                // Nothing stored yet: open again once the first records arrive.
                let key = id.to_owned();
                if let Ok(record) = self.blocking(move |c| c.resolve(&key)).await
                    && let Ok(Some((_, r))) = self
                        .ctx
                        .logs
                        .open_reader(&record, &LogsRequest::default(), true)
                        .await
                {
                    reader = r;
                }
            }
            let batch = match reader {
                Some(r) => match driver.next(r, 1024).await {
                    Ok(batch) => batch,
                    Err(e) => {
                        tracing::warn!(container = %id, "logs -f: {e}");
                        break;
                    }
                },
                None => Vec::new(),
            };
            if batch.is_empty() {
                if last_round {
                    break;
                }
                // One more read after delivery finished: the records it closed with.
                last_round = finished;
                if !last_round {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                        _ = sink.closed() => break,
                    }
                }
                continue;
            }
            for entry in batch {
                let msg =
                    serde_json::value::to_raw_value(&LogEvent::Line(crate::logs::to_line(entry)))?;
                if sink.send(msg).await.is_err() {
                    if let Some(r) = reader {
                        driver.close_reader(r).await;
                    }
                    return Ok(());
                }
            }
        }
        if let Some(r) = reader {
            driver.close_reader(r).await;
        }
        let _ = sink
            .send(serde_json::value::to_raw_value(&LogEvent::End)?)
            .await;
        Ok(())
    }
}

/// Starts a `berth-shim` helper (exec, archive); a failure is an internal error naming it.
fn spawn_tool(
    command: &mut tokio::process::Command,
    program: &Path,
) -> Result<tokio::process::Child, ErrorObjectOwned> {
    command.spawn().map_err(|e| {
        berth_api::error::rpc_error(
            berth_api::ErrorKind::Internal,
            format!("run {}: {e}", program.display()),
        )
    })
}

/// The base64 `data` parameter of the stdin and upload methods, decoded.
fn decode_data(data: Option<String>) -> Result<Vec<u8>, ErrorObjectOwned> {
    match data {
        Some(d) => BASE64.decode(d.as_bytes()).map_err(|e| {
            berth_api::error::invalid_params(Some("data".into()), format!("not base64: {e}"))
        }),
        None => Ok(Vec::new()),
    }
}

/// The entry `key` of a registry of running execs or uploads, or NotFound.
fn entry_of<T: Clone>(
    map: &Mutex<HashMap<String, T>>,
    key: &str,
    missing: impl FnOnce() -> String,
) -> Result<T, ErrorObjectOwned> {
    map.lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(key)
        .cloned()
        .ok_or_else(|| berth_api::error::rpc_error(berth_api::ErrorKind::NotFound, missing()))
}

/// Streams an exec's output to `sink` until the process ends; returns its exit code, or
/// None when the caller went away first.
async fn stream_exec(
    sink: &jsonrpsee::SubscriptionSink,
    child: &mut tokio::process::Child,
    exec_id: &str,
) -> Option<i32> {
    let send = |event: ExecEvent| async move {
        match serde_json::value::to_raw_value(&event) {
            Ok(msg) => sink.send(msg).await.is_ok(),
            Err(_) => false,
        }
    };
    if !send(ExecEvent::Started {
        exec_id: exec_id.to_owned(),
    })
    .await
    {
        return None;
    }
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let (mut out_buf, mut err_buf) = (vec![0u8; 32 * 1024], vec![0u8; 32 * 1024]);
    while stdout.is_some() || stderr.is_some() {
        let event = tokio::select! {
            n = async { stdout.as_mut()?.read(&mut out_buf).await.ok() }, if stdout.is_some() => {
                match n {
                    Some(n) if n > 0 => Some(ExecEvent::Stdout { data: BASE64.encode(&out_buf[..n]) }),
                    _ => { stdout = None; None }
                }
            }
            n = async { stderr.as_mut()?.read(&mut err_buf).await.ok() }, if stderr.is_some() => {
                match n {
                    Some(n) if n > 0 => Some(ExecEvent::Stderr { data: BASE64.encode(&err_buf[..n]) }),
                    _ => { stderr = None; None }
                }
            }
            _ = sink.closed() => return None,
        };
        if let Some(event) = event
            && !send(event).await
        {
            return None;
        }
    }
    let status = tokio::select! {
        status = child.wait() => status.ok()?,
        _ = sink.closed() => return None,
    };
    use std::os::unix::process::ExitStatusExt;
    Some(
        status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .unwrap_or(255),
    )
}

/// Streams a container's log until its exit is recorded (or it is removed) and everything
/// written before is sent. Wakes on inotify events, with a slow timer as a safety net.
fn follow(
    path: &Path,
    container_dir: &Path,
    bundle: &Path,
    request: &LogsRequest,
    tx: tokio::sync::mpsc::Sender<LogLine>,
) {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).ok();
    if let Some(ino) = &inotify {
        let flags = AddWatchFlags::IN_MODIFY
            | AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_DELETE_SELF;
        let _ = ino.add_watch(container_dir, flags);
        let _ = ino.add_watch(bundle, flags);
    }
    stream_log(path, container_dir, bundle, request, &tx, inotify.as_ref());
    // The stream ends when the sender goes. Closing an inotify instance waits for an SRCU
    // grace period (~10 ms here), so it comes after: `run` does not wait for it.
    drop(tx);
    drop(inotify);
}

fn stream_log(
    path: &Path,
    container_dir: &Path,
    bundle: &Path,
    request: &LogsRequest,
    tx: &tokio::sync::mpsc::Sender<LogLine>,
    inotify: Option<&nix::sys::inotify::Inotify>,
) {
    let mut log = LogTail::new(path);
    let first = log.read();
    let follow_request = LogsRequest {
        tail: None,
        ..request.clone()
    };
    for line in select_logs(first, request) {
        if tx.blocking_send(line).is_err() {
            return;
        }
    }
    loop {
        let done = bundle.join(crate::runtime::files::EXIT).exists() || !container_dir.exists();
        for line in select_logs(log.read(), &follow_request) {
            if tx.blocking_send(line).is_err() {
                return;
            }
        }
        if done || tx.is_closed() {
            return;
        }
        match inotify {
            Some(ino) => {
                let fd = std::os::fd::AsFd::as_fd(ino);
                let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
                let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(500u16));
                let _ = ino.read_events();
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_containers_exit_is_found_by_its_id_or_a_unique_hex_prefix_only() {
        let exit = |code: i32| ExitRecord {
            exit_code: code,
            signal: None,
            oom_killed: false,
            finished_at: String::new(),
            error: None,
        };
        let recent = RecentExits::default();
        recent.put("ab12", exit(1));
        recent.put("ab34", exit(2));
        let code = |key: &str| recent.get(key).map(|e| e.exit_code);
        assert_eq!(code("ab12"), Some(1));
        assert_eq!(code("ab3"), Some(2));
        assert_eq!(code("ab"), None, "ambiguous");
        for key in ["", "%", "AB12", "web"] {
            assert_eq!(code(key), None, "{key:?}");
        }
    }

    #[test]
    fn a_followed_log_is_read_to_its_end_across_rotation_and_removal() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("container.log");
        let line = |n: u32| {
            format!(
                "{{\"log\":\"line {n}\\n\",\"stream\":\"stdout\",\"time\":\"2026-12-05T00:00:00Z\"}}\n"
            )
        };
        let texts = |records: Vec<logfile::Record>| -> Vec<String> {
            records.into_iter().map(|r| r.log).collect()
        };
        let mut tail = LogTail::new(&path);
        assert!(tail.read().is_empty(), "no file yet");
        let mut writer = std::fs::File::create(&path).unwrap();
        writer.write_all(line(0).as_bytes()).unwrap();
        // Half a record waits for its end.
        writer.write_all(&line(1).as_bytes()[..10]).unwrap();
        assert_eq!(texts(tail.read()), ["line 0\n"]);
        writer.write_all(&line(1).as_bytes()[10..]).unwrap();
        // Rotated by rename, as the json-file log does, with a line the reader has not seen.
        writer.write_all(line(2).as_bytes()).unwrap();
        std::fs::rename(&path, logfile::rotated(&path, 1)).unwrap();
        let mut writer = std::fs::File::create(&path).unwrap();
        writer.write_all(line(3).as_bytes()).unwrap();
        assert_eq!(texts(tail.read()), ["line 1\n", "line 2\n", "line 3\n"]);
        // Removed with its container before the reader caught up.
        writer.write_all(line(4).as_bytes()).unwrap();
        drop(writer);
        std::fs::remove_dir_all(dir.path()).unwrap();
        assert_eq!(texts(tail.read()), ["line 4\n"]);
        assert!(tail.read().is_empty());
    }

    #[test]
    fn a_session_names_its_container_and_opener_until_its_guard_drops() {
        let sessions = Sessions::default();
        let opener = crate::authz::unknown_caller().principal();
        let exec = sessions.open("e1", "c1".into(), opener.clone());
        let upload = sessions.open("u1", "c2".into(), opener.clone());
        let container_of = |id: &str| sessions.get(id).map(|s| s.container_id);
        assert_eq!(container_of("e1").as_deref(), Some("c1"));
        assert_eq!(container_of("u1").as_deref(), Some("c2"));
        assert_eq!(sessions.get("e1").unwrap().opener, opener);
        assert_eq!(container_of("e"), None, "ids match whole");
        drop(exec);
        assert_eq!(container_of("e1"), None);
        assert_eq!(container_of("u1").as_deref(), Some("c2"));
        drop(upload);
        assert_eq!(container_of("u1"), None);
    }
}
