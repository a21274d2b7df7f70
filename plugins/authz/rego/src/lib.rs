//! berth's `rego` authorization policy, a WebAssembly component implementing
//! `berth:authz/authz-scoped-policy@1.1.0`: Rego (v1 syntax) evaluated by regorus.
//!
//! Configuration (what `configure` receives; berthd reads the files named by the plugin's
//! `policy` and `data` settings and passes their text): `policy:<path>` = a Rego module (at
//! least one), `data:<path>` = a JSON object merged into `data`, and optionally `query`
//! (default `data.berth.authz.allow`, must be `true` to allow), `reason` (default
//! `data.berth.authz.reason`: a string or a set of strings), `scope` (default
//! `data.berth.authz.list_scope`: for list methods and `events.subscribe`, an object of label
//! keys to the values the caller may see) and `filter` (default `data.berth.authz.visible`: a set of indices into
//! `input.candidates`, for lists the scope rule leaves undefined). The input document is
//! described in plugins/authz/README.md.

mod engine;

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Bindings of the `authz-scoped-policy` world. The SDK's authz module covers the plain
/// `authz-policy` world only (two worlds exporting `policy` cannot share one crate), so this
/// component restates its world here, without the `plugin` export the SDK's shared bindings
/// carry.
mod bindings {
    wit_bindgen::generate!({
        path: "../../../plugins-api/wit/authz",
        inline: "
            package berth:authz-rego;
            world rego {
                import berth:types/host-log@1.0.0;
                export berth:authz/policy@1.1.0;
                export berth:authz/scoped-policy@1.1.0;
            }
        ",
        world: "berth:authz-rego/rego",
        with: {
            "berth:types/types@1.0.0": berth_plugin::shared::berth::types::types,
            "berth:types/host-log@1.0.0": berth_plugin::shared::berth::types::host_log,
        },
        generate_all,
        additional_derives: [PartialEq, Eq],
    });
}

use berth_plugin::plugin::{self, PluginInfo};
use berth_plugin::{Error, ErrorKind};
use bindings::exports::berth::authz::policy::{
    self, Candidate, Decision, Identity, Request, ResourceKind, Transport, Visibility,
};
use bindings::exports::berth::authz::scoped_policy::{self, LabelIn, ListScope, ScopedDecision};
use regorus::Value;

use engine::{Policy, Scope};

static POLICY: Mutex<Option<Policy>> = Mutex::new(None);

fn kind_name(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::Container => "container",
        ResourceKind::Image => "image",
        ResourceKind::Volume => "volume",
        ResourceKind::Network => "network",
        ResourceKind::Plugin => "plugin",
        ResourceKind::System => "system",
    }
}

fn text(s: &str) -> Value {
    Value::from(s)
}

fn optional_text(s: &Option<String>) -> Value {
    s.as_deref().map_or(Value::Null, text)
}

fn texts(items: &[String]) -> Value {
    Value::from(items.iter().map(|s| text(s)).collect::<Vec<_>>())
}

fn object<const N: usize>(fields: [(&str, Value); N]) -> Value {
    Value::from(
        fields
            .into_iter()
            .map(|(k, v)| (text(k), v))
            .collect::<BTreeMap<Value, Value>>(),
    )
}

fn labels(pairs: &[(String, String)]) -> Value {
    Value::from(
        pairs
            .iter()
            .map(|(k, v)| (text(k), text(v)))
            .collect::<BTreeMap<Value, Value>>(),
    )
}

/// The Rego `input` for a request (see the README for its shape), built as regorus values
/// directly: going through serde_json first costs as much as a simple policy's evaluation.
/// Calls get theirs through [`InputCache`], which gives the same value.
#[cfg(test)]
fn input_of(r: &Request, candidates: Option<&[Candidate]>) -> Result<Value, Error> {
    let mut input = base_input(r)?;
    if let Some(candidates) = candidates {
        fields(&mut input)?.insert(text("candidates"), candidate_list(candidates));
    }
    Ok(input)
}

fn fields(input: &mut Value) -> Result<&mut regorus::value::Object, Error> {
    input.as_object_mut().map_err(|e| Error {
        kind: ErrorKind::Internal,
        message: format!("building the input: {e}"),
    })
}

/// The input without `candidates`.
fn base_input(r: &Request) -> Result<Value, Error> {
    let (identity, user, groups) = match &r.identity {
        Identity::UnixPeer(p) => (
            object([
                ("type", text("unix")),
                ("uid", Value::from(p.uid)),
                ("gid", Value::from(p.gid)),
                ("pid", Value::from(p.pid)),
                ("user", optional_text(&p.user)),
                ("groups", texts(&p.groups)),
            ]),
            optional_text(&p.user),
            texts(&p.groups),
        ),
        Identity::TlsClient(t) => (
            object([
                ("type", text("tls")),
                ("cn", text(&t.subject_cn)),
                ("sans", texts(&t.sans)),
                ("fingerprint", text(&t.fingerprint_sha256)),
            ]),
            if t.subject_cn.is_empty() {
                Value::Null
            } else {
                text(&t.subject_cn)
            },
            texts(&[]),
        ),
        Identity::Token(t) => (
            object([("type", text("token")), ("name", text(&t.name))]),
            text(&t.name),
            texts(&[]),
        ),
        Identity::Anonymous => (
            object([("type", text("anonymous"))]),
            Value::Null,
            texts(&[]),
        ),
    };
    let params = Value::from_json_str(&r.params).map_err(|e| Error {
        kind: ErrorKind::InvalidArgument,
        message: format!("params of {} are not JSON: {e}", r.method),
    })?;
    let transport = match r.transport {
        Transport::Unix => "unix",
        Transport::TcpTls => "tcp-tls",
        Transport::TcpInsecure => "tcp-insecure",
    };
    let target = object([
        ("kind", text(kind_name(r.target.kind))),
        ("id", optional_text(&r.target.id)),
        ("name", optional_text(&r.target.name)),
        ("labels", labels(&r.target.labels)),
    ]);
    Ok(object([
        ("request_id", text(&r.request_id)),
        ("identity", identity),
        ("user", user),
        ("groups", groups),
        ("method", text(&r.method)),
        ("params", params),
        ("target", target),
        ("transport", text(transport)),
        ("remote_address", optional_text(&r.remote_address)),
    ]))
}

fn candidate_list(candidates: &[Candidate]) -> Value {
    Value::from(
        candidates
            .iter()
            .map(|c| {
                object([
                    ("kind", text(kind_name(c.kind))),
                    ("id", text(&c.id)),
                    ("name", optional_text(&c.name)),
                    ("labels", labels(&c.labels)),
                ])
            })
            .collect::<Vec<_>>(),
    )
}

/// The parts of the last input, reused by a call that repeats them: `filter` follows
/// `authorize` with the request of the same API call, and a client polling a list sends the
/// same request again and again. Building an input and dropping it again is about a third
/// of a decision in Wasm. Only `request_id` differs from call to call, and is always set anew.
struct InputCache {
    /// The last request (its `request_id` aside) and its input without candidates.
    base: Option<(Request, Value)>,
    /// The last candidates and their list value.
    candidates: Option<(Vec<Candidate>, Value)>,
}

fn same_but_id(a: &Request, b: &Request) -> bool {
    a.identity == b.identity
        && a.method == b.method
        && a.params == b.params
        && a.target == b.target
        && a.transport == b.transport
        && a.remote_address == b.remote_address
}

impl InputCache {
    const EMPTY: InputCache = InputCache {
        base: None,
        candidates: None,
    };

    /// The same value as `input_of` gives.
    fn input(&mut self, r: &Request, candidates: Option<&[Candidate]>) -> Result<Value, Error> {
        let mut input = match &self.base {
            Some((last, base)) if same_but_id(last, r) => base.clone(),
            _ => {
                let base = base_input(r)?;
                self.base = Some((r.clone(), base.clone()));
                base
            }
        };
        let fields = fields(&mut input)?;
        fields.insert(text("request_id"), text(&r.request_id));
        if let Some(candidates) = candidates {
            let list = match &self.candidates {
                Some((last, list)) if last.as_slice() == candidates => list.clone(),
                _ => {
                    let list = candidate_list(candidates);
                    self.candidates = Some((candidates.to_vec(), list.clone()));
                    list
                }
            };
            fields.insert(text("candidates"), list);
        }
        Ok(input)
    }
}

static INPUTS: Mutex<InputCache> = Mutex::new(InputCache::EMPTY);

fn cached_input(r: &Request, candidates: Option<&[Candidate]>) -> Result<Value, Error> {
    INPUTS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .input(r, candidates)
}

fn internal(e: engine::PolicyError) -> Error {
    Error {
        kind: ErrorKind::Internal,
        message: e.0,
    }
}

fn with_policy<T>(f: impl FnOnce(&mut Policy) -> Result<T, Error>) -> Result<T, Error> {
    let mut slot = POLICY.lock().unwrap_or_else(|p| p.into_inner());
    let policy = slot.as_mut().ok_or_else(|| Error {
        kind: ErrorKind::FailedPrecondition,
        message: "no policy is loaded".into(),
    })?;
    f(policy)
}

/// The component.
struct RegoPolicy;

impl plugin::Guest for RegoPolicy {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "rego".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            description: "Rego authorization policies (regorus)".to_owned(),
        }
    }

    fn configure(pairs: Vec<(String, String)>) -> Result<(), Error> {
        // Built whole before it replaces the policy in force, so a bad one changes nothing.
        let policy = Policy::load(&pairs).map_err(|e| Error {
            kind: ErrorKind::InvalidArgument,
            message: e.0,
        })?;
        *POLICY.lock().unwrap_or_else(|p| p.into_inner()) = Some(policy);
        Ok(())
    }
}

impl policy::Guest for RegoPolicy {
    fn authorize(request: Request) -> Result<Decision, Error> {
        let input = cached_input(&request, None)?;
        with_policy(|p| {
            let (allow, reason) = p.authorize(input).map_err(internal)?;
            Ok(Decision { allow, reason })
        })
    }

    fn filter(request: Request, candidates: Vec<Candidate>) -> Result<Visibility, Error> {
        // A policy without a filter rule shows everything: no input is built for it.
        if !with_policy(|p| Ok(p.filters()))? {
            return Ok(Visibility::All);
        }
        let input = cached_input(&request, Some(&candidates))?;
        with_policy(
            |p| match p.filter(input, candidates.len()).map_err(internal)? {
                None => Ok(Visibility::All),
                Some(indices) => Ok(Visibility::Only(indices)),
            },
        )
    }
}

/// The methods whose results a scope narrows (the WIT's list): the list methods, and the
/// event stream, whose events stand for the objects they are about.
fn is_scoped(method: &str) -> bool {
    matches!(
        method,
        "container.list"
            | "image.list"
            | "volume.list"
            | "network.list"
            | "plugin.list"
            | "events.subscribe"
    )
}

impl scoped_policy::Guest for RegoPolicy {
    fn authorize_scoped(request: Request) -> Result<ScopedDecision, Error> {
        let input = cached_input(&request, None)?;
        with_policy(|p| {
            let (allow, reason) = p.authorize(input.clone()).map_err(internal)?;
            let scope = if allow && is_scoped(&request.method) {
                match p.scope(&input).map_err(internal)? {
                    Scope::All => ListScope::All,
                    Scope::PerObject => ListScope::PerObject,
                    Scope::Labels(conditions) => ListScope::Labels(
                        conditions
                            .into_iter()
                            .map(|(key, values)| LabelIn { key, values })
                            .collect(),
                    ),
                }
            } else {
                ListScope::All
            };
            Ok(ScopedDecision {
                decision: Decision { allow, reason },
                scope,
            })
        })
    }
}

berth_plugin::shared::export!(RegoPolicy with_types_in berth_plugin::shared);
bindings::export!(RegoPolicy with_types_in bindings);

#[cfg(test)]
mod tests;
