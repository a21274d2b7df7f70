//! The authorization gate in front of every handler, behind the params check: each call
//! (each batch entry, each notification, each subscription start, each WebSocket message)
//! is put to the policy chain with the caller, the method, the normalized params and the
//! object it targets, and once more for each other object it uses, before any work happens.
//! List results and the event stream are narrowed to what the policies let the caller see:
//! by the label scopes they stated with their decision (applied by the list handler to its
//! typed result, see `ListNarrowing`), or object by object through their `filter`. Without
//! a configured chain the gate is absent.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use berth_api::MethodKind;
use berth_api::container::{CreateRequest, MountKind};
use berth_api::events::Event;
use berth_api::network::DEFAULT_NETWORK;
use jsonrpsee::core::middleware::{Batch, BatchEntry, Notification, RpcServiceT};
use jsonrpsee::core::server::Extensions;
use jsonrpsee::server::{BatchResponseBuilder, MethodResponse, ResponsePayload};
use jsonrpsee::types::{Id, Request};
use serde::Deserialize as _;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::authz::{Caller, Candidate, Gate, ResourceKind, Scopes, Target, unknown_caller};
use crate::daemon::Context;
use crate::network::{Mode, mode_of};

/// What the gate needs: the chain and the daemon state to name targets.
#[derive(Debug)]
pub struct GateState {
    /// The chain.
    pub gate: Gate,
    /// To resolve targets.
    pub ctx: Arc<Context>,
}

/// Layer adding [`AuthzGate`].
#[derive(Debug, Clone)]
pub struct AuthzLayer {
    /// `None`: no policy configured, every call passes.
    pub state: Option<Arc<GateState>>,
    /// The bearer tokens in force: a call made with one that has since been revoked is
    /// refused, policy or not.
    pub tokens: crate::authz::TokensInForce,
    /// Largest response, for rebuilt list results.
    pub max_response_body_size: usize,
}

impl<S> tower::Layer<S> for AuthzLayer {
    type Service = AuthzGate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthzGate {
            inner,
            layer: self.clone(),
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct AuthzGate<S> {
    inner: S,
    layer: AuthzLayer,
}

/// Closing a subscription only acts on the caller's own subscription on its own connection,
/// which was authorized when it opened: these pass without asking.
fn is_unsubscribe(method: &str) -> bool {
    // A handful of names: comparing them is cheaper than hashing the method.
    static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
    NAMES
        .get_or_init(|| {
            berth_api::all_methods()
                .into_iter()
                .filter_map(|m| match m.kind {
                    MethodKind::Subscription { unsubscribe, .. } => Some(unsubscribe),
                    MethodKind::Call => None,
                })
                .collect()
        })
        .contains(&method)
}

fn kind_of_namespace(method: &str) -> ResourceKind {
    match method.split('.').next().unwrap_or_default() {
        "container" | "exec" => ResourceKind::Container,
        "image" => ResourceKind::Image,
        "volume" => ResourceKind::Volume,
        "network" => ResourceKind::Network,
        "plugin" => ResourceKind::Plugin,
        _ => ResourceKind::System,
    }
}

/// The param that names the network of a `network.*` call: `name` where the method has it,
/// else `network`.
fn network_key(params: &Map<String, Value>) -> &'static str {
    if params.get("name").is_some_and(Value::is_string) {
        "name"
    } else {
        "network"
    }
}

fn text(params: &Map<String, Value>, path: &[&str]) -> Option<String> {
    let mut v = params.get(path[0])?;
    for key in &path[1..] {
        v = v.get(key)?;
    }
    v.as_str().map(str::to_owned)
}

fn labels_at(params: &Map<String, Value>, path: &[&str]) -> Vec<(String, String)> {
    let mut v = params.get(path[0]);
    for key in &path[1..] {
        v = v.and_then(|v| v.get(key));
    }
    labels_of(v)
}

fn labels_of(v: Option<&Value>) -> Vec<(String, String)> {
    let mut labels: Vec<(String, String)> = v
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    labels.sort();
    labels
}

/// A reference to an object of `kind` that names none berth knows: the policy decides first.
fn unresolved(kind: ResourceKind, reference: String) -> Target {
    Target {
        kind,
        id: None,
        name: Some(reference),
        labels: Vec::new(),
    }
}

/// A lookup that failed for another reason than the key naming no object (or several): the
/// call is refused, since the policies cannot be shown what it would act on.
type Lookup = Result<Target, String>;

/// Whether a lookup error only says the key names no single object: the policies then see
/// the key, and the handler reports the same error.
fn names_nothing(kind: berth_api::ErrorKind) -> bool {
    matches!(
        kind,
        berth_api::ErrorKind::NotFound | berth_api::ErrorKind::InvalidArgument
    )
}

/// The container `key` (name, id or id prefix) names, with its labels; just the key if none.
async fn container_target(ctx: &Arc<Context>, key: String) -> Lookup {
    let containers = Arc::clone(&ctx.containers);
    let lookup = key.clone();
    let found = tokio::task::spawn_blocking(move || containers.resolve(&lookup))
        .await
        .map_err(|e| format!("looking up container {key:?} failed: {e}"))?;
    match found {
        Ok(r) => Ok(Target {
            kind: ResourceKind::Container,
            id: Some(r.id),
            name: Some(r.name),
            labels: r.config.labels.into_iter().collect(),
        }),
        Err(e) if names_nothing(e.kind()) => Ok(unresolved(ResourceKind::Container, key)),
        Err(e) => Err(format!("looking up container {key:?} failed: {e}")),
    }
}

/// The image `reference` names, with its labels; just the reference if none.
async fn image_target(ctx: &Arc<Context>, reference: String) -> Lookup {
    let images = Arc::clone(&ctx.images);
    let lookup = reference.clone();
    let found = tokio::task::spawn_blocking(move || images.inspect(&lookup))
        .await
        .map_err(|e| format!("looking up image {reference:?} failed: {e}"))?;
    match found {
        Ok(d) => Ok(Target {
            kind: ResourceKind::Image,
            id: Some(d.id),
            name: Some(reference),
            labels: d.config.labels.into_iter().collect(),
        }),
        Err(e) if names_nothing(e.kind()) => Ok(unresolved(ResourceKind::Image, reference)),
        Err(e) => Err(format!("looking up image {reference:?} failed: {e}")),
    }
}

/// The volume `name`, with its labels; just the name if there is none.
async fn volume_target(ctx: &Arc<Context>, name: String) -> Lookup {
    match ctx.volumes.labels(&name).await {
        Ok(Some(labels)) => Ok(Target {
            kind: ResourceKind::Volume,
            id: Some(name.clone()),
            name: Some(name),
            labels: labels.into_iter().collect(),
        }),
        Ok(None) => Ok(unresolved(ResourceKind::Volume, name)),
        Err(e) if names_nothing(e.kind()) => Ok(unresolved(ResourceKind::Volume, name)),
        Err(e) => Err(format!("looking up volume {name:?} failed: {e}")),
    }
}

/// The network `key` (name, id or id prefix) names, with its labels; just the key if none.
async fn network_target(ctx: &Arc<Context>, key: String) -> Lookup {
    match ctx.networks.identify(&key).await {
        Ok((id, name, labels)) => Ok(Target {
            kind: ResourceKind::Network,
            id: Some(id),
            name: Some(name),
            labels: labels.into_iter().collect(),
        }),
        Err(e) if names_nothing(e.kind()) => Ok(unresolved(ResourceKind::Network, key)),
        Err(e) => Err(format!("looking up network {key:?} failed: {e}")),
    }
}

/// The objects a call uses besides its target, each put to the policies as a target of the
/// same call: the named volumes a new container mounts and the user network it joins, the
/// container a network connects or disconnects, and the image a tag's name is taken from
/// (or the bare name, if no image holds it).
async fn also_uses(
    ctx: &Arc<Context>,
    method: &str,
    params: &Map<String, Value>,
) -> Result<Vec<Target>, String> {
    match method {
        "container.create" => {
            // The struct the handler parses: one it cannot parse fails before any work.
            let Some(request) = params
                .get("request")
                .and_then(|r| CreateRequest::deserialize(r).ok())
            else {
                return Ok(Vec::new());
            };
            let mut used = Vec::new();
            let volumes = request
                .mounts
                .into_iter()
                .filter(|m| m.kind == MountKind::Volume)
                .filter_map(|m| m.source);
            for name in volumes {
                used.push(volume_target(ctx, name).await?);
            }
            // The default bridge, the host's network and none are nobody's objects.
            if let Mode::Network(network) = mode_of(request.network.as_deref())
                && network != DEFAULT_NETWORK
            {
                used.push(network_target(ctx, network).await?);
            }
            Ok(used)
        }
        "network.connect" | "network.disconnect" => match text(params, &["container"]) {
            Some(key) => Ok(vec![container_target(ctx, key).await?]),
            None => Ok(Vec::new()),
        },
        // A tag moves a name off the image that holds it: whoever may not touch that image
        // may not take its name.
        "image.tag" => match text(params, &["target"]) {
            Some(reference) => Ok(vec![image_target(ctx, reference).await?]),
            None => Ok(Vec::new()),
        },
        _ => Ok(Vec::new()),
    }
}

/// Why a call naming an exec or upload session must be refused whatever the policies say,
/// if so: another caller opened the session. A policy judges the session's container, not
/// whose it is, and a session's id is no secret (exec ids are in the events).
fn session_of_another(
    ctx: &Arc<Context>,
    method: &str,
    params: &Map<String, Value>,
    extensions: &Extensions,
) -> Option<String> {
    if !matches!(
        method,
        "container.exec_input" | "container.exec_resize" | "container.archive_put_data"
    ) {
        return None;
    }
    let id = session_key(params)?;
    let session = ctx.sessions.get(&id)?;
    (crate::authz::principal_of(extensions) != session.opener)
        .then(|| format!("session {id} belongs to the caller who opened it"))
}

/// The session a call on one names (an exec's or an upload's id).
fn session_key(params: &Map<String, Value>) -> Option<String> {
    text(params, &["exec_id"]).or_else(|| text(params, &["upload_id"]))
}

/// Names the object a call acts on. Lookups read berth's own records only.
async fn target_of(ctx: &Arc<Context>, method: &str, params: &Map<String, Value>) -> Lookup {
    let kind = kind_of_namespace(method);
    let verb = method.split_once('.').map(|(_, v)| v).unwrap_or_default();
    let bare = |name: Option<String>, labels: Vec<(String, String)>| Target {
        kind,
        id: None,
        name,
        labels,
    };
    Ok(match (kind, verb) {
        (ResourceKind::Container, "create") => bare(
            text(params, &["request", "name"]),
            labels_at(params, &["request", "labels"]),
        ),
        (ResourceKind::Container, "list" | "prune") => bare(None, Vec::new()),
        // These name a session, which acts on the container it was opened in.
        (ResourceKind::Container, "exec_input" | "exec_resize" | "archive_put_data") => {
            let session = session_key(params);
            match session
                .as_deref()
                .and_then(|s| ctx.sessions.get(s))
                .map(|s| s.container_id)
            {
                Some(container_id) => container_target(ctx, container_id).await?,
                None => bare(session, Vec::new()),
            }
        }
        (ResourceKind::Container, _) => match text(params, &["id"]) {
            Some(key) => container_target(ctx, key).await?,
            None => bare(None, Vec::new()),
        },
        (ResourceKind::Image, _) => {
            let reference = match verb {
                "pull" | "pull_follow" | "push" | "push_follow" => {
                    text(params, &["request", "reference"])
                }
                "inspect" | "history" | "remove" => text(params, &["name"]),
                "tag" => text(params, &["source"]),
                _ => None,
            };
            let Some(reference) = reference else {
                return Ok(bare(None, Vec::new()));
            };
            if matches!(verb, "pull" | "pull_follow") {
                return Ok(bare(Some(reference), Vec::new()));
            }
            image_target(ctx, reference).await?
        }
        // Creating a volume that exists answers with that volume (as docker does): the
        // policies judge it, not the labels asked for.
        (ResourceKind::Volume, "create") => {
            let requested = bare(
                text(params, &["request", "name"]),
                labels_at(params, &["request", "labels"]),
            );
            match requested.name.clone() {
                Some(name) => match volume_target(ctx, name).await? {
                    existing @ Target { id: Some(_), .. } => existing,
                    _ => requested,
                },
                None => requested,
            }
        }
        (ResourceKind::Volume, "inspect" | "remove") => match text(params, &["name"]) {
            Some(name) => volume_target(ctx, name).await?,
            None => bare(None, Vec::new()),
        },
        (ResourceKind::Network, "create") => bare(
            text(params, &["request", "name"]),
            labels_at(params, &["request", "labels"]),
        ),
        (ResourceKind::Network, "inspect" | "remove" | "connect" | "disconnect") => {
            match text(params, &[network_key(params)]) {
                Some(key) => network_target(ctx, key).await?,
                None => bare(None, Vec::new()),
            }
        }
        (ResourceKind::Plugin, "install") => bare(text(params, &["request", "name"]), Vec::new()),
        (ResourceKind::Plugin, _) => match text(params, &["name"]) {
            Some(name) => Target {
                kind,
                id: Some(name.clone()),
                name: Some(name),
                labels: Vec::new(),
            },
            None => bare(None, Vec::new()),
        },
        _ => bare(None, Vec::new()),
    })
}

/// Makes the params name the objects the policies are asked about by their full ids, so the
/// handler acts on exactly those: a key it resolved again could name another object by then
/// (a name given up, or a name that was also a prefix of another object's id). Says whether
/// it changed anything.
fn pin_targets(
    method: &str,
    params: &mut Map<String, Value>,
    target: &Target,
    used: &[Target],
) -> bool {
    let mut pinned = false;
    let mut pin = |slot: Option<&mut Value>, id: &Option<String>| {
        if let (Some(slot @ Value::String(_)), Some(id)) = (slot, id)
            && slot.as_str() != Some(id.as_str())
        {
            *slot = Value::String(id.clone());
            pinned = true;
        }
    };
    let verb = method.split_once('.').map(|(_, v)| v).unwrap_or_default();
    match (target.kind, verb) {
        (ResourceKind::Container, "create") => {
            let network = used.iter().find(|t| t.kind == ResourceKind::Network);
            if let Some(network) = network {
                let slot = params.get_mut("request").and_then(|r| r.get_mut("network"));
                pin(slot, &network.id);
            }
        }
        // The session keys of these are exact; the rest name their container by `id`.
        (
            ResourceKind::Container,
            "list" | "prune" | "exec_input" | "exec_resize" | "archive_put_data",
        ) => {}
        (ResourceKind::Container, _) => pin(params.get_mut("id"), &target.id),
        (ResourceKind::Network, "inspect" | "remove" | "connect" | "disconnect") => {
            let key = network_key(params);
            pin(params.get_mut(key), &target.id);
            if let Some(container) = used.iter().find(|t| t.kind == ResourceKind::Container) {
                pin(params.get_mut("container"), &container.id);
            }
        }
        _ => {}
    }
    pinned
}

/// The objects of a list result, as the policies see them.
/// What a list item says about the object it describes; everything else in the item is
/// skipped unparsed.
#[derive(serde::Deserialize)]
struct ListItem {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    labels: Option<Value>,
}

fn candidate_of(kind: ResourceKind, item: &RawValue) -> Option<Candidate> {
    let item: ListItem = serde_json::from_str(item.get()).ok()?;
    let (id, name) = match kind {
        ResourceKind::Image => (
            item.id.unwrap_or_default(),
            item.repo_tags.and_then(|t| t.into_iter().next()),
        ),
        ResourceKind::Volume | ResourceKind::Plugin => {
            (item.name.clone().unwrap_or_default(), item.name)
        }
        _ => (item.id.unwrap_or_default(), item.name),
    };
    Some(Candidate {
        kind,
        id,
        name,
        labels: labels_of(item.labels.as_ref()),
    })
}

/// The `result` array of a JSON-RPC response, its items left as raw JSON.
#[derive(serde::Deserialize)]
struct ListResponse<'a> {
    #[serde(borrow)]
    result: Vec<&'a RawValue>,
}

/// The label scopes of a list call, handed to its handler in the call's extensions: the
/// handler keeps only the objects every scope admits before its result is serialized, which
/// costs a map lookup per object where reading the labels back out of the JSON result cost
/// a parse of all of it. A handler that does not apply them leaves the flag down, and the
/// gate then narrows the JSON result object by object as it does for `filter` policies.
#[derive(Debug, Clone)]
pub(super) struct ListNarrowing {
    scopes: Scopes,
    applied: Arc<AtomicBool>,
}

impl ListNarrowing {
    /// Keeps in `items` only the objects whose labels every scope admits.
    fn retain<T>(
        &self,
        items: &mut Vec<T>,
        labels: impl Fn(&T) -> Option<&BTreeMap<String, String>>,
    ) {
        items.retain(|item| {
            let labels = labels(item);
            self.scopes
                .admits(|key| labels.and_then(|l| l.get(key)).map(String::as_str))
        });
        self.applied.store(true, Ordering::Release);
    }
}

/// What a list handler does with its result before returning it: keeps only what the
/// caller may see, when the gate asked (`labels` gives an object's labels, `None` if it
/// has none).
pub(super) fn narrow_list<T>(
    extensions: &Extensions,
    items: &mut Vec<T>,
    labels: impl Fn(&T) -> Option<&BTreeMap<String, String>>,
) {
    if let Some(narrowing) = extensions.get::<ListNarrowing>() {
        narrowing.retain(items, labels);
    }
}

/// The subscription whose events are narrowed like a list result, each event standing for
/// the object it is about.
const EVENTS_SUBSCRIBE: &str = "events.subscribe";

/// What the policies let the caller of an `events.subscribe` see, handed to the handler in
/// the call's extensions when some policy does not show everything: an event is sent only
/// if its object is in every policy's scope, as if it were the one item of a list result.
#[derive(Debug, Clone)]
pub struct EventScope {
    state: Arc<GateState>,
    request: Arc<crate::authz::AuthzRequest>,
    scopes: Scopes,
}

impl EventScope {
    /// Whether the caller may see `event`. The object an event is about is judged by what the
    /// event says of it: its type, id, `name` attribute, and its other attributes as labels
    /// (a container's events carry its labels). A policy that fails hides the event.
    pub async fn shows(&self, event: &Event) -> bool {
        let candidate = event_candidate(event);
        match self
            .state
            .gate
            .filter(
                &self.request,
                std::slice::from_ref(&candidate),
                &self.scopes,
            )
            .await
        {
            Ok(None) => true,
            Ok(Some(visible)) => visible == [0],
            Err(denied) => {
                tracing::warn!(event = event.seq, "event withheld: {}", denied.0);
                false
            }
        }
    }
}

fn event_candidate(event: &Event) -> Candidate {
    let kind = match event.kind.as_str() {
        "container" => ResourceKind::Container,
        "image" => ResourceKind::Image,
        "volume" => ResourceKind::Volume,
        "network" => ResourceKind::Network,
        "plugin" => ResourceKind::Plugin,
        _ => ResourceKind::System,
    };
    Candidate {
        kind,
        id: event.id.clone(),
        name: event.attributes.get("name").cloned(),
        labels: event
            .attributes
            .iter()
            .filter(|(key, _)| *key != "name")
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect(),
    }
}

const LIST_METHODS: &[&str] = &[
    "container.list",
    "image.list",
    "volume.list",
    "network.list",
    "plugin.list",
];

impl<S> AuthzGate<S>
where
    S: RpcServiceT<
            MethodResponse = MethodResponse,
            BatchResponse = MethodResponse,
            NotificationResponse = MethodResponse,
        > + Send
        + Sync
        + Clone
        + 'static,
{
    async fn gated(self, state: Arc<GateState>, req: Request<'_>) -> MethodResponse {
        let method = req.method_name().to_owned();
        if is_unsubscribe(&method) {
            return self.inner.call(req).await;
        }
        // Known methods arrive here with normalized params (an object); anything else is
        // shown to the policy with none.
        let mut params: Map<String, Value> = if berth_api::method(&method).is_some() {
            req.params
                .as_ref()
                .and_then(|p| serde_json::from_str(p.get()).ok())
                .unwrap_or_default()
        } else {
            Map::new()
        };
        let looked_up = match target_of(&state.ctx, &method, &params).await {
            Ok(target) => also_uses(&state.ctx, &method, &params)
                .await
                .map(|used| (target, used)),
            Err(e) => Err(e),
        };
        let (target, used) = match looked_up {
            Ok(found) => found,
            // Fails closed: the policies cannot be shown what the call would act on.
            Err(e) => {
                tracing::warn!(method = %method, "call refused: {e}");
                return MethodResponse::error(
                    req.id(),
                    berth_api::error::rpc_error(
                        berth_api::ErrorKind::Internal,
                        format!("cannot authorize {method}: {e}"),
                    ),
                );
            }
        };
        let foreign = session_of_another(&state.ctx, &method, &params, req.extensions());
        let pinned = pin_targets(&method, &mut params, &target, &used);
        let params_text = Value::Object(params).to_string();
        let mut req = req;
        if pinned {
            match RawValue::from_string(params_text.clone()) {
                Ok(raw) => req.params = Some(std::borrow::Cow::Owned(raw)),
                Err(e) => {
                    return MethodResponse::error(
                        req.id(),
                        berth_api::error::rpc_error(
                            berth_api::ErrorKind::Internal,
                            format!("cannot pin the call's objects: {e}"),
                        ),
                    );
                }
            }
        }
        let request = match req.extensions().get::<Caller>() {
            Some(caller) => state.gate.request(caller, &method, params_text, target),
            None => state
                .gate
                .request(&unknown_caller(), &method, params_text, target),
        };
        let deny = |denied: crate::authz::Denied| {
            MethodResponse::error(
                req.id(),
                berth_api::error::rpc_error(berth_api::ErrorKind::PermissionDenied, denied.0),
            )
        };
        let scopes = match state.gate.authorize(&request, foreign).await {
            Ok(scopes) => scopes,
            Err(denied) => return deny(denied),
        };
        for target in used {
            let on_used = Arc::new(crate::authz::AuthzRequest {
                target,
                ..(*request).clone()
            });
            if let Err(denied) = state.gate.authorize(&on_used, None).await {
                return deny(denied);
            }
        }
        let id = req.id().into_owned();
        if method == EVENTS_SUBSCRIBE && !scopes.everything() {
            req.extensions_mut().insert(EventScope {
                state: Arc::clone(&state),
                request: Arc::clone(&request),
                scopes,
            });
            return self.inner.call(req).await;
        }
        let is_list = LIST_METHODS.contains(&method.as_str());
        // The handler's flag; the scopes themselves stay with the gate.
        let applied = (is_list && !scopes.everything() && !scopes.per_object()).then(|| {
            let applied = Arc::new(AtomicBool::new(false));
            req.extensions_mut().insert(ListNarrowing {
                scopes: scopes.clone(),
                applied: Arc::clone(&applied),
            });
            applied
        });
        let response = self.inner.call(req).await;
        let narrowed = applied.is_some_and(|a| a.load(Ordering::Acquire));
        if !is_list || !response.is_success() || scopes.everything() || narrowed {
            return response;
        }
        self.filtered(&state, &request, &scopes, id, response).await
    }

    /// Why the call must be refused, if its caller's bearer token no longer names them (a
    /// WebSocket authenticated once, before a SIGHUP revoked or renamed its token).
    fn revoked_token(&self, req: &Request<'_>) -> Option<String> {
        let caller = req.extensions().get::<Caller>()?;
        let digest = caller.token_digest.as_ref()?;
        let still = self.layer.tokens.borrow().name_of(digest);
        match &caller.identity {
            crate::authz::Identity::Token { name } if still.as_ref() == Some(name) => None,
            _ => Some(format!(
                "permission denied: the bearer token of this connection ({}) has been revoked",
                caller.identity.display_name()
            )),
        }
    }

    /// A list result with only what the policies let the caller see.
    async fn filtered(
        &self,
        state: &GateState,
        request: &crate::authz::AuthzRequest,
        scopes: &Scopes,
        id: Id<'static>,
        response: MethodResponse,
    ) -> MethodResponse {
        let deny = |message: String| {
            MethodResponse::error(
                id.clone(),
                berth_api::error::rpc_error(berth_api::ErrorKind::PermissionDenied, message),
            )
        };
        // Items stay raw JSON: only the fields a candidate needs are parsed, and a result
        // is rebuilt from the kept items' own text only when something is hidden. Label
        // scopes are checked on the candidates too, where the handler did not apply them.
        let unfilterable =
            || deny("permission denied: the list result could not be filtered".into());
        let json = response.as_json().get();
        let Ok(list) = serde_json::from_str::<ListResponse<'_>>(json) else {
            return unfilterable();
        };
        if list.result.is_empty() {
            return response;
        }
        let Some(candidates) = list
            .result
            .iter()
            .map(|item| candidate_of(request.target.kind, item))
            .collect::<Option<Vec<_>>>()
        else {
            return unfilterable();
        };
        match state.gate.filter(request, &candidates, scopes).await {
            Ok(None) => response,
            Ok(Some(visible)) if visible.len() == list.result.len() => response,
            Ok(Some(visible)) => self
                .kept(json, &visible, id.clone())
                .unwrap_or_else(unfilterable),
            Err(denied) => deny(denied.0),
        }
    }

    /// A success response holding the items of the list result `json` at `visible`; `None`
    /// if `json` is not a list result.
    fn kept(&self, json: &str, visible: &[u32], id: Id<'static>) -> Option<MethodResponse> {
        let list = serde_json::from_str::<ListResponse<'_>>(json).ok()?;
        let mut kept = String::with_capacity(json.len());
        kept.push('[');
        for item in visible.iter().filter_map(|&i| list.result.get(i as usize)) {
            if kept.len() > 1 {
                kept.push(',');
            }
            kept.push_str(item.get());
        }
        kept.push(']');
        let kept = RawValue::from_string(kept).ok()?;
        Some(MethodResponse::response(
            id,
            ResponsePayload::success(kept),
            self.layer.max_response_body_size,
        ))
    }
}

impl<S> RpcServiceT for AuthzGate<S>
where
    S: RpcServiceT<
            MethodResponse = MethodResponse,
            BatchResponse = MethodResponse,
            NotificationResponse = MethodResponse,
        > + Send
        + Sync
        + Clone
        + 'static,
{
    type MethodResponse = MethodResponse;
    type NotificationResponse = MethodResponse;
    type BatchResponse = MethodResponse;

    fn call<'a>(&self, req: Request<'a>) -> impl Future<Output = MethodResponse> + Send + 'a {
        let this = self.clone();
        async move {
            if let Some(revoked) = this.revoked_token(&req) {
                return MethodResponse::error(
                    req.id(),
                    berth_api::error::rpc_error(berth_api::ErrorKind::PermissionDenied, revoked),
                );
            }
            match this.layer.state.clone() {
                None => this.inner.call(req).await,
                Some(state) => this.gated(state, req).await,
            }
        }
    }

    // The params check in front splits batches and notifications into calls; these keep the
    // gate whole should it ever be placed elsewhere.
    fn batch<'a>(&self, batch: Batch<'a>) -> impl Future<Output = MethodResponse> + Send + 'a {
        let this = self.clone();
        async move {
            let mut responses =
                BatchResponseBuilder::new_with_limit(this.layer.max_response_body_size);
            for entry in batch {
                let response = match entry {
                    Ok(BatchEntry::Call(req)) => this.call(req).await,
                    Ok(BatchEntry::Notification(n)) => {
                        this.notification(n).await;
                        continue;
                    }
                    Err(err) => {
                        let (err, id) = err.into_parts();
                        MethodResponse::error(id, err)
                    }
                };
                if let Err(too_big) = responses.append(response) {
                    return too_big;
                }
            }
            MethodResponse::from_batch(responses.finish())
        }
    }

    fn notification<'a>(
        &self,
        n: Notification<'a>,
    ) -> impl Future<Output = MethodResponse> + Send + 'a {
        let this = self.clone();
        async move {
            let Notification {
                method,
                params,
                extensions,
                ..
            } = n;
            let mut req = Request::owned(
                method.into_owned(),
                params.map(|p| p.into_owned()),
                Id::Null,
            );
            *req.extensions_mut() = extensions;
            let _ = this.call(req).await;
            MethodResponse::notification()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_params_name_the_judged_objects_by_their_ids() {
        let found = |kind, id: &str| Target {
            kind,
            id: Some(id.into()),
            name: Some("shown".into()),
            labels: Vec::new(),
        };
        let params = |v: Value| v.as_object().unwrap().clone();
        let container = found(ResourceKind::Container, "c0ffee11");
        let mut p = params(json!({"id": "c0f", "timeout": 3}));
        assert!(pin_targets("container.restart", &mut p, &container, &[]));
        assert_eq!(Value::Object(p), json!({"id": "c0ffee11", "timeout": 3}));
        let mut p = params(json!({"id": "c0ffee11"}));
        assert!(!pin_targets("container.inspect", &mut p, &container, &[]));
        // An unresolved key stays as given: the handler reports it.
        let mut p = params(json!({"id": "nope"}));
        let missing = unresolved(ResourceKind::Container, "nope".into());
        assert!(!pin_targets("container.remove", &mut p, &missing, &[]));
        // A session key is exact already.
        let mut p = params(json!({"exec_id": "e1", "data": ""}));
        assert!(!pin_targets(
            "container.exec_input",
            &mut p,
            &container,
            &[]
        ));

        let network = found(ResourceKind::Network, "ab12cd34");
        let mut p = params(json!({"network": "ab1", "container": "web"}));
        assert!(pin_targets(
            "network.connect",
            &mut p,
            &network,
            std::slice::from_ref(&container)
        ));
        assert_eq!(
            Value::Object(p),
            json!({"network": "ab12cd34", "container": "c0ffee11"})
        );
        let mut p = params(json!({"name": "net-a"}));
        assert!(pin_targets("network.remove", &mut p, &network, &[]));
        assert_eq!(Value::Object(p), json!({"name": "ab12cd34"}));

        let new = Target {
            kind: ResourceKind::Container,
            id: None,
            name: Some("web".into()),
            labels: Vec::new(),
        };
        let volume = found(ResourceKind::Volume, "data");
        let mut p = params(json!({"request": {"image": "busybox", "network": "net-a",
            "mounts": [{"type": "volume", "source": "data", "target": "/d"}]}}));
        assert!(pin_targets(
            "container.create",
            &mut p,
            &new,
            &[volume, network]
        ));
        assert_eq!(p["request"]["network"], "ab12cd34");
        assert_eq!(p["request"]["mounts"][0]["source"], "data");
    }

    #[test]
    fn unsubscribes_are_known_and_calls_are_not() {
        assert!(is_unsubscribe("container.logs_unfollow"));
        assert!(!is_unsubscribe("container.logs_follow"));
        assert!(!is_unsubscribe("container.remove"));
        assert!(!is_unsubscribe("Container.logs_unfollow"));
    }

    fn raw_list(json: &str) -> Vec<Candidate> {
        let whole = format!(r#"{{"jsonrpc":"2.0","id":1,"result":{json}}}"#);
        let list: ListResponse<'_> = serde_json::from_str(&whole).unwrap();
        list.result
            .iter()
            .map(|item| {
                let kind = if item.get().contains("repo_tags") {
                    ResourceKind::Image
                } else {
                    ResourceKind::Container
                };
                candidate_of(kind, item).unwrap()
            })
            .collect()
    }

    #[test]
    fn an_event_stands_for_its_object_with_its_attributes_as_labels() {
        let event = Event {
            seq: 7,
            time: String::new(),
            time_nano: 0,
            kind: "container".into(),
            action: "die".into(),
            id: "c1".into(),
            attributes: [("name", "web"), ("team", "a"), ("exitCode", "0")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        };
        let c = event_candidate(&event);
        assert_eq!(c.kind, ResourceKind::Container);
        assert_eq!((c.id.as_str(), c.name.as_deref()), ("c1", Some("web")));
        assert_eq!(c.label("team"), Some("a"));
        assert_eq!(c.label("name"), None);
        let daemon = Event {
            kind: "daemon".into(),
            attributes: Default::default(),
            ..event
        };
        let c = event_candidate(&daemon);
        assert_eq!((c.kind, c.name), (ResourceKind::System, None));
    }

    #[test]
    fn a_list_handler_keeps_what_the_label_scopes_admit_and_says_so() {
        use crate::authz::{LabelIn, ListScope};
        let team = |t: &str| BTreeMap::from([("team".to_owned(), t.to_owned())]);
        let items = vec![
            Some(team("a")),
            Some(team("b")),
            None,
            Some(BTreeMap::new()),
        ];
        // Without the gate's request the handler's result stays whole.
        let mut untouched = items.clone();
        narrow_list(&Extensions::new(), &mut untouched, Option::as_ref);
        assert_eq!(untouched, items);
        let narrowing = ListNarrowing {
            scopes: Scopes::of(vec![
                (
                    "teams".into(),
                    ListScope::Labels(vec![LabelIn {
                        key: "team".into(),
                        values: vec!["a".into(), "c".into()],
                    }]),
                ),
                ("other".into(), ListScope::All),
            ]),
            applied: Arc::new(AtomicBool::new(false)),
        };
        let mut extensions = Extensions::new();
        extensions.insert(narrowing.clone());
        let mut listed = items.clone();
        narrow_list(&extensions, &mut listed, Option::as_ref);
        assert_eq!(listed, vec![Some(team("a"))]);
        assert!(narrowing.applied.load(Ordering::Acquire));
    }

    #[test]
    fn list_candidates_carry_ids_names_and_labels() {
        let c = raw_list(
            r#"[{"id": "c1", "name": "web", "labels": {"team": "a", "n": 1}, "other": [1, {"x": 2}]},
                {"id": "c2", "name": "db"}]"#,
        );
        assert_eq!(c[0].id, "c1");
        assert_eq!(c[0].labels, vec![("team".to_owned(), "a".to_owned())]);
        assert_eq!(c[1].name.as_deref(), Some("db"));
        let c = raw_list(r#"[{"id": "sha256:x", "repo_tags": ["a:1"]}]"#);
        assert_eq!(c[0].name.as_deref(), Some("a:1"));
        // An item that is no object cannot be judged, so the list is not filterable.
        let whole = r#"{"jsonrpc":"2.0","id":1,"result":[1]}"#;
        let list: ListResponse<'_> = serde_json::from_str(whole).unwrap();
        assert!(candidate_of(ResourceKind::Container, list.result[0]).is_none());
    }
}
