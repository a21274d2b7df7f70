//! berth's `rego` authorization policy, a WebAssembly component implementing
//! `berth:authz/authz-policy@1.0.0`: Rego (v1 syntax) evaluated by regorus.
//!
//! Configuration (what `configure` receives; berthd reads the files named by the plugin's
//! `policy` and `data` settings and passes their text): `policy:<path>` = a Rego module (at
//! least one), `data:<path>` = a JSON object merged into `data`, and optionally `query`
//! (default `data.berth.authz.allow`, must be `true` to allow), `reason` (default
//! `data.berth.authz.reason`: a string or a set of strings) and `filter` (default
//! `data.berth.authz.visible`: a set of indices into `input.candidates`). The input
//! document is described in plugins/authz/README.md.

mod engine;

use std::sync::Mutex;

use berth_plugin::authz::exports::berth::authz::policy::{
    self, Candidate, Decision, Identity, Request, ResourceKind, Transport, Visibility,
};
use berth_plugin::plugin::{self, PluginInfo};
use berth_plugin::{Error, ErrorKind};
use serde_json::{Map, Value as Json, json};

use engine::Policy;

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

fn labels(pairs: &[(String, String)]) -> Json {
    Json::Object(
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), Json::String(v.clone())))
            .collect(),
    )
}

/// The Rego `input` for a request (see the README for its shape).
fn input_of(r: &Request) -> Result<Map<String, Json>, Error> {
    let (identity, user, groups) = match &r.identity {
        Identity::UnixPeer(p) => (
            json!({"type": "unix", "uid": p.uid, "gid": p.gid, "pid": p.pid, "user": p.user, "groups": p.groups}),
            p.user.clone(),
            p.groups.clone(),
        ),
        Identity::TlsClient(t) => (
            json!({"type": "tls", "cn": t.subject_cn, "sans": t.sans, "fingerprint": t.fingerprint_sha256}),
            Some(t.subject_cn.clone()).filter(|cn| !cn.is_empty()),
            Vec::new(),
        ),
        Identity::Token(t) => (
            json!({"type": "token", "name": t.name}),
            Some(t.name.clone()),
            Vec::new(),
        ),
        Identity::Anonymous => (json!({"type": "anonymous"}), None, Vec::new()),
    };
    let params: Json = serde_json::from_str(&r.params).map_err(|e| Error {
        kind: ErrorKind::InvalidArgument,
        message: format!("params of {} are not JSON: {e}", r.method),
    })?;
    let transport = match r.transport {
        Transport::Unix => "unix",
        Transport::TcpTls => "tcp-tls",
        Transport::TcpInsecure => "tcp-insecure",
    };
    let mut input = Map::new();
    input.insert("request_id".into(), json!(r.request_id));
    input.insert("identity".into(), identity);
    input.insert("user".into(), json!(user));
    input.insert("groups".into(), json!(groups));
    input.insert("method".into(), json!(r.method));
    input.insert("params".into(), params);
    input.insert(
        "target".into(),
        json!({
            "kind": kind_name(r.target.kind),
            "id": r.target.id,
            "name": r.target.name,
            "labels": labels(&r.target.labels),
        }),
    );
    input.insert("transport".into(), json!(transport));
    input.insert("remote_address".into(), json!(r.remote_address));
    Ok(input)
}

fn candidates_json(candidates: &[Candidate]) -> Json {
    Json::Array(
        candidates
            .iter()
            .map(|c| {
                json!({
                    "kind": kind_name(c.kind),
                    "id": c.id,
                    "name": c.name,
                    "labels": labels(&c.labels),
                })
            })
            .collect(),
    )
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
        let input = input_of(&request)?;
        with_policy(|p| {
            let (allow, reason) = p
                .authorize(regorus::Value::from(Json::Object(input)))
                .map_err(internal)?;
            Ok(Decision { allow, reason })
        })
    }

    fn filter(request: Request, candidates: Vec<Candidate>) -> Result<Visibility, Error> {
        let mut input = input_of(&request)?;
        input.insert("candidates".into(), candidates_json(&candidates));
        with_policy(|p| {
            match p
                .filter(regorus::Value::from(Json::Object(input)), candidates.len())
                .map_err(internal)?
            {
                None => Ok(Visibility::All),
                Some(indices) => Ok(Visibility::Only(indices)),
            }
        })
    }
}

berth_plugin::export_authz_policy!(RegoPolicy);

#[cfg(test)]
mod tests;
