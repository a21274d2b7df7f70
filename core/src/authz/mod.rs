//! Who is calling, and may they: caller identities (Unix peer credentials, TLS client
//! certificates, bearer tokens), TLS for TCP listeners, the chain of policy plugins every
//! API call passes (all must allow; any failure denies), and the decision log.

mod identity;
mod tls;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use berth_api::ErrorKind;
use serde::Serialize;
use tracing::{info, warn};

pub use crate::plugin_host::{
    AuthzRequest, Candidate, Identity, LabelIn, ListScope, ResourceKind, Target, TlsClient,
    Transport, UnixPeer, Visibility,
};
pub use identity::{Tokens, tls_client, unix_peer};
pub use tls::server_config;

/// The bearer tokens in force: read on every token request and call, replaced on SIGHUP,
/// and watched by connections that authenticated with a token (a revoked one ends them).
pub type TokensInForce = Arc<tokio::sync::watch::Sender<Tokens>>;

use crate::plugin::Plugins;

/// Authorization and authentication set-up failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The tokens file is unreadable or malformed.
    #[error("tokens file {path}: {message}")]
    Tokens {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A certificate, key or CA file cannot be used.
    #[error("TLS: cannot {what}: {message}")]
    Tls {
        /// What was being done, naming the file.
        what: String,
        /// Why.
        message: String,
    },
    /// The decision log cannot be opened.
    #[error("cannot open the authorization decision log {path}: {source}")]
    Log {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl Error {
    /// How the API reports this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Tokens { .. } | Error::Tls { .. } => ErrorKind::InvalidArgument,
            Error::Log { .. } => ErrorKind::Internal,
        }
    }
}

/// Who made a request and how it arrived; set on every HTTP request (and so on every call
/// it carries) before the JSON-RPC layer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The authenticated identity.
    pub identity: Identity,
    /// The transport.
    pub transport: Transport,
    /// The TCP peer address.
    pub remote_address: Option<String>,
    /// The digest of the bearer token the identity came from: a WebSocket keeps its
    /// identity for all its calls, and each is checked against the tokens in force, so a
    /// token revoked on SIGHUP stops working on connections already open.
    pub token_digest: Option<[u8; 32]>,
}

impl Caller {
    /// Who the caller is, as far as telling two callers apart goes.
    pub fn principal(&self) -> Principal {
        Principal(match &self.identity {
            Identity::Unix(peer) => format!("unix uid {}", peer.uid),
            Identity::Tls(client) => format!("certificate {}", client.fingerprint_sha256),
            Identity::Token { name } => format!("token {name}"),
            Identity::Anonymous => "anonymous".to_owned(),
        })
    }
}

/// Who made the call whose extensions these are (the unknown caller if none is recorded).
pub fn principal_of(extensions: &jsonrpsee::core::server::Extensions) -> Principal {
    extensions
        .get::<Caller>()
        .map_or_else(|| unknown_caller().principal(), Caller::principal)
}

/// A caller as berthd tells callers apart: by uid on the Unix socket, by certificate, or by
/// token name. Processes and connections do not count, so what one `berth` process of a user
/// opened, another process of the same user may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal(String);

/// A denied call: the message the caller gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied(pub String);

/// What the policies of the chain let the caller see of a list result: each policy's scope,
/// in chain order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes(Vec<(String, ListScope)>);

impl Scopes {
    /// The scopes of a chain, in its order.
    #[cfg(test)]
    pub(crate) fn of(scopes: Vec<(String, ListScope)>) -> Scopes {
        Scopes(scopes)
    }

    /// Whether every policy shows everything, so the result needs no look at all.
    pub fn everything(&self) -> bool {
        self.0.iter().all(|(_, scope)| *scope == ListScope::All)
    }

    /// Whether some policy decides the list object by object (through its `filter`).
    pub fn per_object(&self) -> bool {
        self.0
            .iter()
            .any(|(_, scope)| *scope == ListScope::PerObject)
    }

    /// Whether an object with these labels is in every label scope (the per-object ones
    /// are not asked here).
    pub fn admits<'a>(&self, label: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.0.iter().all(|(_, scope)| scope.admits(&label))
    }
}

/// Keeps in `visible` (ascending indices; `None`: all) only what is also in `indices`.
fn narrow(visible: &mut Option<Vec<u32>>, indices: Vec<u32>) {
    *visible = Some(match visible.take() {
        None => indices,
        Some(previous) => previous
            .into_iter()
            .filter(|i| indices.binary_search(i).is_ok())
            .collect(),
    });
}

/// What the decision log records.
#[derive(Serialize)]
struct DecisionRecord<'a> {
    time: String,
    request_id: &'a str,
    identity: &'a Identity,
    transport: Transport,
    #[serde(skip_serializing_if = "Option::is_none")]
    remote_address: Option<&'a str>,
    method: &'a str,
    resource: &'a Target,
    decision: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    policy: &'a str,
    latency_us: u64,
}

/// A decision as the caller's path hands it over: the writer thread formats it, so a call
/// pays for neither the JSON nor the timestamp.
struct Pending {
    at: std::time::SystemTime,
    request: Arc<AuthzRequest>,
    decision: &'static str,
    reason: Option<String>,
    policy: Arc<str>,
    latency_us: u64,
}

impl Pending {
    fn line(&self) -> Option<String> {
        let r = &self.request;
        let mut line = serde_json::to_string(&DecisionRecord {
            time: humantime::format_rfc3339_micros(self.at).to_string(),
            request_id: &r.request_id,
            identity: &r.identity,
            transport: r.transport,
            remote_address: r.remote_address.as_deref(),
            method: &r.method,
            resource: &r.target,
            decision: self.decision,
            reason: self.reason.as_deref(),
            policy: &self.policy,
            latency_us: self.latency_us,
        })
        .ok()?;
        line.push('\n');
        Some(line)
    }
}

enum LogMessage {
    Decision(Box<Pending>),
    Reopen,
}

/// How long the decision-log writer gathers lines after a write before it waits again. Each
/// wake-up is a timer interrupt on some CPU, and an interrupt that lands inside a decision is
/// what makes its tail: on the 2-CPU benchmark VM a 2 ms window put one list decision in 100
/// about 45 µs late. At 50 ms a busy daemon wakes the writer 20 times a second, and a line
/// still reaches the file within 50 ms (at once after a quiet spell).
const LOG_BATCH_WINDOW: std::time::Duration = std::time::Duration::from_millis(50);

/// The decision log: JSON lines appended by a writer thread, so a slow disk never stalls a
/// call. If the thread falls behind by more than its queue, lines are dropped and counted.
#[derive(Debug)]
pub struct DecisionLog {
    path: PathBuf,
    /// `None` only while dropping: closing the channel ends the writer once it has written
    /// everything.
    tx: Option<std::sync::mpsc::SyncSender<LogMessage>>,
    writer: Option<std::thread::JoinHandle<()>>,
    dropped: AtomicU64,
}

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

impl DecisionLog {
    /// Opens (creating, mode 0600) `path` for appending and starts the writer. Blocking.
    pub fn open(path: &Path) -> Result<DecisionLog, Error> {
        let err = |source| Error::Log {
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(err)?;
        }
        let file = open_append(path).map_err(err)?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<LogMessage>(65_536);
        let owned = path.to_owned();
        let writer = std::thread::Builder::new()
            .name("authz-log".into())
            .spawn(move || {
                let mut out = std::io::BufWriter::new(file);
                while let Ok(first) = rx.recv() {
                    let mut next = Some(first);
                    while let Some(message) = next.take() {
                        match message {
                            LogMessage::Decision(pending) => {
                                let written = match pending.line() {
                                    Some(line) => out.write_all(line.as_bytes()),
                                    None => Ok(()),
                                };
                                if let Err(e) = written {
                                    warn!(path = %owned.display(), "decision log write failed: {e}");
                                }
                            }
                            LogMessage::Reopen => {
                                let _ = out.flush();
                                match open_append(&owned) {
                                    Ok(f) => out = std::io::BufWriter::new(f),
                                    Err(e) => {
                                        warn!(path = %owned.display(), "cannot reopen the decision log: {e}")
                                    }
                                }
                            }
                        }
                        next = rx.try_recv().ok();
                    }
                    if let Err(e) = out.flush() {
                        warn!(path = %owned.display(), "decision log write failed: {e}");
                    }
                    // Lines sent while this thread sleeps are only queued: callers wake it
                    // at most once per window instead of once per decision, a futex wake
                    // and a context switch off every call's path under load. Dropping the
                    // log unparks it early.
                    std::thread::park_timeout(LOG_BATCH_WINDOW);
                }
            })
            .map_err(err)?;
        Ok(DecisionLog {
            path: path.to_owned(),
            tx: Some(tx),
            writer: Some(writer),
            dropped: AtomicU64::new(0),
        })
    }

    /// Where it writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the file again (after log rotation moved it).
    pub fn reopen(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(LogMessage::Reopen);
        }
    }

    fn write(&self, pending: Pending) {
        let Some(tx) = &self.tx else { return };
        if tx
            .try_send(LogMessage::Decision(Box::new(pending)))
            .is_err()
        {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                warn!(
                    dropped = n,
                    "decision log lines dropped: the writer is behind"
                );
            }
        }
    }
}

impl Drop for DecisionLog {
    /// Waits for the writer to write and flush what is queued, so a daemon that shuts down
    /// loses no decision it made.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(writer) = self.writer.take() {
            writer.thread().unpark();
            let _ = writer.join();
        }
    }
}

/// The authorization chain: every call is put to each policy plugin in turn; all must allow.
/// A policy that is missing, fails, traps or misses its deadline denies.
#[derive(Debug)]
pub struct Gate {
    plugins: Arc<Plugins>,
    chain: Vec<String>,
    /// The chain as the decision log names it for an allowed call.
    chain_text: Arc<str>,
    log: DecisionLog,
    request_prefix: String,
    next_request: AtomicU64,
}

/// Methods root on the Unix socket may always call, so an operator can tell berthd is alive
/// while repairing a broken policy.
const ROOT_ALWAYS: &[&str] = &["system.ping"];

/// The name a denial berthd makes itself, before any policy is asked, goes by.
const BERTHD: &str = "berthd";

/// Plugin settings only root may give: `policy` and `data` name files berthd reads as root
/// (a caller who could set them could read any host file through the parse error), and
/// `berth.*` settings are grants of the host's own (`berth.allow-connect` lets a plugin reach
/// addresses from berthd's network namespace).
fn reserved_setting(key: &str) -> bool {
    matches!(key, "policy" | "data") || key.starts_with("berth.")
}

/// Why only root on the Unix socket may make this call whatever the policies say, if so:
/// it would replace or change a policy of the chain (which would let the caller decide its
/// own rights), make berthd read host files as root for a plugin, or grant a plugin what
/// only the host's owner may. (No one may disable or remove a policy of the chain.)
fn host_root_only(chain: &[String], method: &str, params: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Set {
        name: String,
        #[serde(default)]
        settings: Vec<String>,
    }
    #[derive(serde::Deserialize)]
    struct Install {
        request: InstallRequest,
    }
    #[derive(serde::Deserialize)]
    struct InstallRequest {
        name: String,
        #[serde(default)]
        config: std::collections::BTreeMap<String, String>,
    }
    const RESERVED: &str =
        "`policy`, `data` or `berth.*` settings (files berthd reads as root, grants of the host)";
    let in_chain = |name: &str| {
        chain.iter().any(|member| member == name).then(|| {
            format!(
                "only root on berthd's Unix socket may change {name}, a policy of the authorization chain"
            )
        })
    };
    // Params that do not parse fail in the handler before any work.
    match method {
        "plugin.set" => {
            let set: Set = serde_json::from_str(params).ok()?;
            in_chain(&set.name).or_else(|| {
                set.settings
                    .iter()
                    .map(|s| s.split_once('=').map_or(s.as_str(), |(k, _)| k))
                    .any(reserved_setting)
                    .then(|| format!("only root on berthd's Unix socket may set {RESERVED}"))
            })
        }
        "plugin.install" => {
            let install: Install = serde_json::from_str(params).ok()?;
            in_chain(&install.request.name).or_else(|| {
                install
                    .request
                    .config
                    .keys()
                    .any(|k| reserved_setting(k))
                    .then(|| {
                        format!(
                            "only root on berthd's Unix socket may install a plugin with {RESERVED}"
                        )
                    })
            })
        }
        _ => None,
    }
}

impl Gate {
    /// A gate asking `chain` (names of authz plugins), logging to `log`.
    pub fn new(plugins: Arc<Plugins>, chain: Vec<String>, log: DecisionLog) -> Gate {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Gate {
            plugins,
            chain_text: Arc::from(chain.join(",")),
            chain,
            log,
            request_prefix: format!("{:x}", started.as_micros() as u64 & 0xffff_ffff),
            next_request: AtomicU64::new(1),
        }
    }

    /// The decision log.
    pub fn log(&self) -> &DecisionLog {
        &self.log
    }

    /// The request record for one call.
    pub fn request(
        &self,
        caller: &Caller,
        method: &str,
        params: String,
        target: Target,
    ) -> Arc<AuthzRequest> {
        let n = self.next_request.fetch_add(1, Ordering::Relaxed);
        Arc::new(AuthzRequest {
            request_id: format!("{}-{n}", self.request_prefix),
            identity: caller.identity.clone(),
            method: method.to_owned(),
            params,
            target,
            transport: caller.transport,
            remote_address: caller.remote_address.clone(),
        })
    }

    /// Puts `request` to every policy, unless berthd itself `refuses` it (for that reason);
    /// logs the decision. An allowed call gets the list scopes the policies stated
    /// (meaningful for list methods only).
    pub async fn authorize(
        &self,
        request: &Arc<AuthzRequest>,
        refuses: Option<String>,
    ) -> Result<Scopes, Denied> {
        let started = Instant::now();
        let caller_is_root = matches!(&request.identity, Identity::Unix(p) if p.uid == 0)
            && request.transport == Transport::Unix;
        let outcome = if caller_is_root && ROOT_ALWAYS.contains(&request.method.as_str()) {
            Ok((
                Some("root may always call this on the Unix socket".to_owned()),
                Scopes::default(),
            ))
        } else if let Some(reason) = refuses.or_else(|| {
            (!caller_is_root)
                .then(|| host_root_only(&self.chain, &request.method, &request.params))
                .flatten()
        }) {
            Err((BERTHD.to_owned(), reason))
        } else {
            self.ask_chain(request).await
        };
        let latency_us = started.elapsed().as_micros() as u64;
        let (decision, reason, policy) = match &outcome {
            Ok((reason, _)) => ("allow", reason.clone(), Arc::clone(&self.chain_text)),
            Err((plugin, reason)) => ("deny", Some(reason.clone()), Arc::from(plugin.as_str())),
        };
        self.log.write(Pending {
            at: std::time::SystemTime::now(),
            request: Arc::clone(request),
            decision,
            reason,
            policy,
            latency_us,
        });
        match outcome {
            Ok((_, scopes)) => Ok(scopes),
            Err((plugin, reason)) => {
                info!(
                    caller = %request.identity.display_name(),
                    method = %request.method,
                    policy = %plugin,
                    "denied: {reason}"
                );
                Err(Denied(if plugin == BERTHD {
                    format!("permission denied: {}: {reason}", request.method)
                } else {
                    format!(
                        "permission denied: {} by authorization policy {plugin}: {reason}",
                        request.method
                    )
                }))
            }
        }
    }

    /// `Ok((reason of the last policy, scopes))` or `Err((policy, reason))`.
    async fn ask_chain(
        &self,
        request: &AuthzRequest,
    ) -> Result<(Option<String>, Scopes), (String, String)> {
        let mut last_reason = None;
        let mut scopes = Vec::with_capacity(self.chain.len());
        for name in &self.chain {
            let policy = self
                .plugins
                .authorizer(name)
                .await
                .map_err(|e| (name.clone(), format!("the policy is not running: {e}")))?;
            match policy.authorize(request).await {
                Ok(decision) if decision.allow => {
                    last_reason = decision.reason;
                    scopes.push((name.clone(), decision.scope));
                }
                Ok(decision) => {
                    return Err((
                        name.clone(),
                        decision
                            .reason
                            .unwrap_or_else(|| "the policy gave no reason".into()),
                    ));
                }
                Err(e) => return Err((name.clone(), format!("the policy failed: {e}"))),
            }
        }
        Ok((last_reason, Scopes(scopes)))
    }

    /// The candidates every policy lets the caller see (ascending indices), or `None` for
    /// all of them: label scopes are checked here, policies that scoped the list per object
    /// are asked through `filter`. Any failure fails the call.
    pub async fn filter(
        &self,
        request: &AuthzRequest,
        candidates: &[Candidate],
        scopes: &Scopes,
    ) -> Result<Option<Vec<u32>>, Denied> {
        let mut visible: Option<Vec<u32>> = None;
        if scopes
            .0
            .iter()
            .any(|(_, scope)| matches!(scope, ListScope::Labels(_)))
        {
            let admitted = candidates
                .iter()
                .enumerate()
                .filter(|(_, c)| scopes.admits(|key| c.label(key)))
                .map(|(i, _)| i as u32)
                .collect();
            narrow(&mut visible, admitted);
        }
        let per_object = scopes
            .0
            .iter()
            .filter(|(_, scope)| *scope == ListScope::PerObject);
        for (name, _) in per_object {
            let fail = |e: String| {
                Denied(format!(
                    "permission denied: {} by authorization policy {name}: filtering the result failed: {e}",
                    request.method
                ))
            };
            let policy = self
                .plugins
                .authorizer(name)
                .await
                .map_err(|e| fail(e.to_string()))?;
            match policy
                .filter(request, candidates)
                .await
                .map_err(|e| fail(e.to_string()))?
            {
                Visibility::All => {}
                Visibility::Only(indices) => narrow(&mut visible, indices),
            }
        }
        Ok(visible)
    }
}

/// The caller of a request that carries no [`Caller`]: never happens for requests that came
/// through berthd's listeners; treated as anonymous so policies deny it.
pub fn unknown_caller() -> Caller {
    Caller {
        identity: Identity::Anonymous,
        transport: Transport::TcpInsecure,
        remote_address: None,
        token_digest: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels_in(key: &str, values: &[&str]) -> ListScope {
        ListScope::Labels(vec![LabelIn {
            key: key.into(),
            values: values.iter().map(|v| (*v).into()).collect(),
        }])
    }

    #[test]
    fn every_label_scope_of_the_chain_must_admit_an_object() {
        let team = |t: &'static str| move |k: &str| (k == "team").then_some(t);
        let scopes = Scopes(vec![
            ("a".into(), labels_in("team", &["x", "y"])),
            ("b".into(), ListScope::All),
        ]);
        assert!(!scopes.everything() && !scopes.per_object());
        assert!(scopes.admits(team("x")));
        assert!(!scopes.admits(team("z")));
        assert!(
            !scopes.admits(|_| None),
            "an object without the label is out"
        );
        let both = Scopes(vec![
            ("a".into(), labels_in("team", &["x", "y"])),
            ("b".into(), labels_in("team", &["y"])),
        ]);
        assert!(!both.admits(team("x")) && both.admits(team("y")));
        // No values: nothing matches. No conditions: everything does.
        assert!(!labels_in("team", &[]).admits(team("x")));
        assert!(ListScope::Labels(Vec::new()).admits(|_| None));
        let mixed = Scopes(vec![("a".into(), ListScope::PerObject)]);
        assert!(mixed.per_object() && !mixed.everything());
        assert!(Scopes(vec![("a".into(), ListScope::All)]).everything());
    }

    fn pending(n: u32) -> Pending {
        Pending {
            at: std::time::SystemTime::now(),
            request: Arc::new(AuthzRequest {
                request_id: format!("r-{n}"),
                identity: Identity::Anonymous,
                method: "system.version".into(),
                params: "{}".into(),
                target: Target {
                    kind: ResourceKind::System,
                    id: None,
                    name: None,
                    labels: Vec::new(),
                },
                transport: Transport::Unix,
                remote_address: None,
            }),
            decision: "allow",
            reason: None,
            policy: Arc::from("rego"),
            latency_us: 1,
        }
    }

    #[test]
    fn a_dropped_decision_log_has_written_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.log");
        let log = DecisionLog::open(&path).unwrap();
        log.write(pending(1));
        // The writer has written the first line and now waits out its batch window: the
        // second is only queued when the log is dropped.
        std::thread::sleep(std::time::Duration::from_millis(10));
        log.write(pending(2));
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        let ids: Vec<String> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["request_id"].to_string()
            })
            .collect();
        assert_eq!(ids, ["\"r-1\"", "\"r-2\""]);
    }

    #[test]
    fn only_host_root_may_change_the_chain_name_files_berthd_reads_or_grant_host_access() {
        let chain = vec!["rego".to_owned()];
        let only = |method: &str, params: &str| host_root_only(&chain, method, params);
        let set = |name: &str, settings: &str| {
            only(
                "plugin.set",
                &format!(r#"{{"name":"{name}","settings":{settings}}}"#),
            )
        };
        assert!(set("rego", r#"["policy=/tmp/p.rego"]"#).is_some());
        assert!(
            set("rego", r#"["engine=vm"]"#).is_some(),
            "any setting of a chain member"
        );
        assert!(set("rego", "[]").is_some());
        assert!(set("other", r#"["data=/etc/shadow"]"#).is_some());
        assert!(set("other", r#"["policy="]"#).is_some());
        assert!(set("other", r#"["policy:/x=package x"]"#).is_none());
        assert!(set("local", r#"["size=1g"]"#).is_none());
        assert!(set("syslog", r#"["berth.allow-connect=tcp:127.0.0.1:6379"]"#).is_some());
        assert!(set("syslog", r#"["berth.anything"]"#).is_some());
        assert!(set("syslog", r#"["berthx=1"]"#).is_none());
        let install = |name: &str, config: &str| {
            only(
                "plugin.install",
                &format!(r#"{{"request":{{"name":"{name}","path":"/p.wasm","config":{config}}}}}"#),
            )
        };
        assert!(install("p", r#"{"policy":"/etc/shadow"}"#).is_some());
        assert!(install("p", r#"{"data":"/x.json"}"#).is_some());
        assert!(install("p", r#"{"berth.allow-connect":"tcp:169.254.169.254:80"}"#).is_some());
        assert!(install("p", r#"{"mode":"x"}"#).is_none());
        assert!(install("p", "{}").is_none());
        assert!(install("rego", "{}").is_some(), "a chain member's name");
        assert!(only("plugin.inspect", r#"{"name":"rego"}"#).is_none());
        assert!(only("plugin.set", "not json").is_none());
    }

    #[test]
    fn narrowing_keeps_what_every_answer_shows() {
        let mut visible = None;
        narrow(&mut visible, vec![0, 2, 3]);
        assert_eq!(visible, Some(vec![0, 2, 3]));
        narrow(&mut visible, vec![2, 3, 4]);
        assert_eq!(visible, Some(vec![2, 3]));
        narrow(&mut visible, Vec::new());
        assert_eq!(visible, Some(Vec::new()));
    }
}
