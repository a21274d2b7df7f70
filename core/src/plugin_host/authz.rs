//! Authorization policies (`berth:authz/authz-policy`, and `authz-scoped-policy` since
//! 1.1.0): the typed request, decision, list-scope and list-filter values the API gate builds,
//! and the [`Authorizer`] handle that asks one policy component. A policy gets no preopened
//! directory and no host interface but `host-log`: it sees only the request.

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use wasmtime::component::{Component, HasSelf, InstancePre, Linker};
use wasmtime::{Engine, Store};

use super::driver::{CallStats, Instance, call};
use super::sandbox::{self, PluginState};
use super::{Error, Limits, Result};

pub(super) mod bindings {
    wasmtime::component::bindgen!({
        path: "../plugins-api/wit/authz",
        world: "authz-scoped-policy",
        exports: { default: async },
        with: {
            "berth:types/types@1.0.0": crate::plugin_host::volume::bindings::berth::types::types,
            "berth:types/host-log@1.0.0": crate::plugin_host::volume::bindings::berth::types::host_log,
        },
    });
}

use bindings::AuthzScopedPolicy;
use bindings::exports::berth::authz::policy as wit;
use bindings::exports::berth::authz::scoped_policy as wit_scoped;
use bindings::exports::berth::types::plugin as wit_plugin;

/// Where a component's exports are, found once per component: `scoped-policy` is there only
/// in components built against 1.1.0's `authz-scoped-policy` world.
struct AuthzPre {
    pre: InstancePre<PluginState>,
    plugin: wit_plugin::GuestIndices,
    policy: wit::GuestIndices,
    scoped: Option<wit_scoped::GuestIndices>,
}

/// A live instance's exports.
struct Bindings {
    plugin: wit_plugin::Guest,
    policy: wit::Guest,
    scoped: Option<wit_scoped::Guest>,
}

impl AuthzPre {
    fn new(pre: InstancePre<PluginState>) -> wasmtime::Result<AuthzPre> {
        Ok(AuthzPre {
            plugin: wit_plugin::GuestIndices::new(&pre)?,
            policy: wit::GuestIndices::new(&pre)?,
            scoped: wit_scoped::GuestIndices::new(&pre).ok(),
            pre,
        })
    }

    async fn instantiate_async(
        &self,
        store: &mut Store<PluginState>,
    ) -> wasmtime::Result<Bindings> {
        let instance = self.pre.instantiate_async(&mut *store).await?;
        Ok(Bindings {
            plugin: self.plugin.load(&mut *store, &instance)?,
            policy: self.policy.load(&mut *store, &instance)?,
            scoped: match &self.scoped {
                Some(indices) => Some(indices.load(&mut *store, &instance)?),
                None => None,
            },
        })
    }
}

impl Bindings {
    fn berth_types_plugin(&self) -> &wit_plugin::Guest {
        &self.plugin
    }
}

/// Most candidates given to one `filter` call (the WIT's promise).
pub const FILTER_CHUNK: usize = 1024;

/// How the caller reached berthd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// The Unix socket.
    Unix,
    /// TCP with TLS.
    TcpTls,
    /// TCP without TLS (`--insecure-tcp`).
    TcpInsecure,
}

/// A local caller, from the socket's peer credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnixPeer {
    /// Effective uid.
    pub uid: u32,
    /// Effective gid.
    pub gid: u32,
    /// Process id, in berthd's pid namespace.
    pub pid: u32,
    /// User name of `uid`, if the user database has one.
    pub user: Option<String>,
    /// Names of the groups of `uid` (primary and supplementary).
    pub groups: Vec<String>,
}

/// A caller with a verified TLS client certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsClient {
    /// Subject common name, empty if none.
    pub subject_cn: String,
    /// Subject alternative names.
    pub sans: Vec<String>,
    /// SHA-256 of the DER certificate, lowercase hex.
    pub fingerprint_sha256: String,
}

/// Who is calling: the strongest identity the transport established.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Identity {
    /// A process on the Unix socket.
    Unix(UnixPeer),
    /// A TLS client certificate.
    Tls(TlsClient),
    /// A bearer token, by its configured name.
    Token {
        /// The token's name (never the secret).
        name: String,
    },
    /// Nothing authenticated.
    Anonymous,
}

impl Identity {
    /// A short name for logs: the user, certificate CN or token name.
    pub fn display_name(&self) -> String {
        match self {
            Identity::Unix(p) => p.user.clone().unwrap_or_else(|| format!("uid {}", p.uid)),
            Identity::Tls(t) => format!("cn={}", t.subject_cn),
            Identity::Token { name } => format!("token {name}"),
            Identity::Anonymous => "anonymous".into(),
        }
    }
}

/// Kind of object a method acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResourceKind {
    /// A container (also `exec`).
    Container,
    /// An image.
    Image,
    /// A volume.
    Volume,
    /// A network.
    Network,
    /// A plugin.
    Plugin,
    /// The daemon itself.
    System,
}

/// The object a call acts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Its kind.
    pub kind: ResourceKind,
    /// Full id, when it exists.
    pub id: Option<String>,
    /// Name or reference.
    pub name: Option<String>,
    /// Labels, sorted by key.
    #[serde(with = "labels_as_map")]
    pub labels: Vec<(String, String)>,
}

/// One call to decide on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthzRequest {
    /// Correlates the policy's log lines and the decision log.
    pub request_id: String,
    /// Who calls.
    pub identity: Identity,
    /// The JSON-RPC method.
    pub method: String,
    /// The normalized params, a JSON object text.
    pub params: String,
    /// What it acts on.
    pub target: Target,
    /// How the caller connected.
    pub transport: Transport,
    /// The TCP peer, if any.
    pub remote_address: Option<String>,
}

/// A policy's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the call may proceed.
    pub allow: bool,
    /// Why.
    pub reason: Option<String>,
    /// For an allowed list method, which objects of its result the caller sees.
    pub scope: ListScope,
}

/// Which objects of a list result a caller may see, as a policy stated it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListScope {
    /// All of them.
    All,
    /// Those carrying each label key with one of its values.
    Labels(Vec<LabelIn>),
    /// Ask the policy's `filter` with the objects.
    PerObject,
}

/// One condition of a [`ListScope::Labels`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelIn {
    /// The label key.
    pub key: String,
    /// The values that satisfy it.
    pub values: Vec<String>,
}

impl ListScope {
    /// Whether an object is in the scope, `label` giving the value of each of its labels
    /// (for [`ListScope::PerObject`] the policy's `filter` decides; this says yes).
    pub fn admits<'a>(&self, mut label: impl FnMut(&str) -> Option<&'a str>) -> bool {
        match self {
            ListScope::All | ListScope::PerObject => true,
            ListScope::Labels(conditions) => conditions
                .iter()
                .all(|c| label(&c.key).is_some_and(|value| c.values.iter().any(|v| v == value))),
        }
    }
}

/// One object of a list result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// Its kind.
    pub kind: ResourceKind,
    /// Full id.
    pub id: String,
    /// Name, if any.
    pub name: Option<String>,
    /// Labels.
    #[serde(with = "labels_as_map")]
    pub labels: Vec<(String, String)>,
}

impl Candidate {
    /// The value of label `key`, if the object carries it.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Which candidates the caller may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visibility {
    /// All of them.
    All,
    /// These indices, strictly ascending and in range (checked by the handle).
    Only(Vec<u32>),
}

/// Labels travel as a JSON object, as everywhere else in the API.
mod labels_as_map {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(labels: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(labels.iter().map(|(k, v)| (k, v)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
        Ok(BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .collect())
    }
}

fn kind_out(kind: ResourceKind) -> wit::ResourceKind {
    match kind {
        ResourceKind::Container => wit::ResourceKind::Container,
        ResourceKind::Image => wit::ResourceKind::Image,
        ResourceKind::Volume => wit::ResourceKind::Volume,
        ResourceKind::Network => wit::ResourceKind::Network,
        ResourceKind::Plugin => wit::ResourceKind::Plugin,
        ResourceKind::System => wit::ResourceKind::System,
    }
}

fn request_out(r: &AuthzRequest) -> wit::Request {
    wit::Request {
        request_id: r.request_id.clone(),
        identity: match &r.identity {
            Identity::Unix(p) => wit::Identity::UnixPeer(wit::UnixPeer {
                uid: p.uid,
                gid: p.gid,
                pid: p.pid,
                user: p.user.clone(),
                groups: p.groups.clone(),
            }),
            Identity::Tls(t) => wit::Identity::TlsClient(wit::TlsClient {
                subject_cn: t.subject_cn.clone(),
                sans: t.sans.clone(),
                fingerprint_sha256: t.fingerprint_sha256.clone(),
            }),
            Identity::Token { name } => {
                wit::Identity::Token(wit::TokenIdentity { name: name.clone() })
            }
            Identity::Anonymous => wit::Identity::Anonymous,
        },
        method: r.method.clone(),
        params: r.params.clone(),
        target: wit::Target {
            kind: kind_out(r.target.kind),
            id: r.target.id.clone(),
            name: r.target.name.clone(),
            labels: r.target.labels.clone(),
        },
        transport: match r.transport {
            Transport::Unix => wit::Transport::Unix,
            Transport::TcpTls => wit::Transport::TcpTls,
            Transport::TcpInsecure => wit::Transport::TcpInsecure,
        },
        remote_address: r.remote_address.clone(),
    }
}

/// An authorization policy plugin.
pub struct Authorizer {
    name: Arc<str>,
    engine: Engine,
    pre: AuthzPre,
    config: Vec<(String, String)>,
    limits: Limits,
    failures: super::FailureReport,
    ticker: super::ticker::Ticker,
    instance: tokio::sync::Mutex<Option<Instance<Bindings>>>,
    stats: std::sync::Mutex<CallStats>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("name", &self.name)
            .finish()
    }
}

impl Authorizer {
    pub(super) fn new(
        engine: Engine,
        name: Arc<str>,
        component: &Component,
        config: Vec<(String, String)>,
        oversight: super::Oversight,
    ) -> Result<Authorizer> {
        let link_error = |e: wasmtime::Error| Error::Link {
            plugin: name.to_string(),
            message: format!("{e:#}"),
        };
        let mut linker = Linker::<PluginState>::new(&engine);
        sandbox::add_wasi(&mut linker).map_err(link_error)?;
        AuthzScopedPolicy::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)
            .map_err(link_error)?;
        let pre = linker.instantiate_pre(component).map_err(link_error)?;
        let pre = AuthzPre::new(pre).map_err(link_error)?;
        Ok(Authorizer {
            name,
            engine,
            pre,
            config,
            limits: oversight.limits,
            failures: oversight.failures,
            ticker: oversight.ticker,
            instance: tokio::sync::Mutex::new(None),
            stats: std::sync::Mutex::new(CallStats::default()),
        })
    }

    super::driver::driver_methods!();

    fn preopen(&self) -> Option<&std::path::Path> {
        None
    }

    fn net_host(&self) -> Option<Arc<dyn super::network::NetHost>> {
        None
    }

    fn connect_grant(&self) -> Option<Arc<super::logging::ConnectGrant>> {
        None
    }

    /// `authorize-scoped` where the component exports it, else `authorize` (whose lists are
    /// then filtered object by object). An error (the policy's own, a trap, a deadline) is
    /// the caller's to turn into a denial.
    pub async fn authorize(&self, request: &AuthzRequest) -> Result<Decision> {
        self.count();
        let request = request_out(request);
        if self.pre.scoped.is_some() {
            let answer = call!(self, "authorize-scoped", |i| match &i.bindings.scoped {
                Some(scoped) => scoped.call_authorize_scoped(&mut i.store, &request).await,
                None => Err(wasmtime::format_err!(
                    "the instance lacks the scoped-policy export its component has"
                )),
            })?;
            return Ok(Decision {
                allow: answer.decision.allow,
                reason: answer.decision.reason,
                scope: match answer.scope {
                    wit_scoped::ListScope::All => ListScope::All,
                    wit_scoped::ListScope::PerObject => ListScope::PerObject,
                    wit_scoped::ListScope::Labels(conditions) => ListScope::Labels(
                        conditions
                            .into_iter()
                            .map(|c| LabelIn {
                                key: c.key,
                                values: c.values,
                            })
                            .collect(),
                    ),
                },
            });
        }
        let decision = call!(self, "authorize", |i| i
            .bindings
            .policy
            .call_authorize(&mut i.store, &request)
            .await)?;
        Ok(Decision {
            allow: decision.allow,
            reason: decision.reason,
            scope: ListScope::PerObject,
        })
    }

    /// `filter`, in chunks of [`FILTER_CHUNK`]: the indices (into `candidates`) the caller
    /// may see. An answer that breaks the WIT's rules is an error.
    pub async fn filter(
        &self,
        request: &AuthzRequest,
        candidates: &[Candidate],
    ) -> Result<Visibility> {
        let wit_request = request_out(request);
        let mut visible: Vec<u32> = Vec::new();
        let mut all = true;
        for (chunk_index, chunk) in candidates.chunks(FILTER_CHUNK).enumerate() {
            self.count();
            let offset = (chunk_index * FILTER_CHUNK) as u32;
            let wit_candidates: Vec<wit::Candidate> = chunk
                .iter()
                .map(|c| wit::Candidate {
                    kind: kind_out(c.kind),
                    id: c.id.clone(),
                    name: c.name.clone(),
                    labels: c.labels.clone(),
                })
                .collect();
            let answer = call!(self, "filter", |i| i
                .bindings
                .policy
                .call_filter(&mut i.store, &wit_request, &wit_candidates)
                .await)?;
            match answer {
                wit::Visibility::All => visible.extend(offset..offset + chunk.len() as u32),
                wit::Visibility::Only(indices) => {
                    all = false;
                    let ascending = indices.windows(2).all(|w| w[0] < w[1]);
                    let in_range = indices.iter().all(|&i| (i as usize) < chunk.len());
                    if !ascending || !in_range {
                        return Err(Error::Plugin {
                            plugin: self.name.to_string(),
                            function: "filter",
                            kind: berth_api::ErrorKind::Internal,
                            message: format!(
                                "answered indices that are not strictly ascending and below {}",
                                chunk.len()
                            ),
                        });
                    }
                    visible.extend(indices.into_iter().map(|i| i + offset));
                }
            }
        }
        Ok(if all {
            Visibility::All
        } else {
            Visibility::Only(visible)
        })
    }
}
