//! The policy: Rego modules and data loaded into a regorus engine once per configuration,
//! then evaluated per request with only the input replaced.

use regorus::{Engine, Value};

/// Default rule that must be `true` to allow.
pub const DEFAULT_QUERY: &str = "data.berth.authz.allow";
/// Default rule giving the reason (optional).
pub const DEFAULT_REASON: &str = "data.berth.authz.reason";
/// Default rule giving the visible candidates' indices (optional).
pub const DEFAULT_FILTER: &str = "data.berth.authz.visible";

/// A configuration the policy refuses, or an evaluation that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError(pub String);

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A loaded policy.
#[derive(Debug, Clone)]
pub struct Policy {
    engine: Engine,
    query: String,
    reason: Option<String>,
    filter: Option<String>,
}

fn rule_path_ok(rule: &str) -> bool {
    rule.starts_with("data.")
        && rule.len() > 5
        && rule
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._".contains(&b))
}

impl Policy {
    /// Loads the configuration berthd passes: `policy:<path>` (Rego module text, at least
    /// one), `data:<path>` (JSON documents, merged), `query`, `reason`, `filter`.
    pub fn load(pairs: &[(String, String)]) -> Result<Policy, PolicyError> {
        let mut engine = Engine::new();
        let mut modules = 0;
        let mut query = None;
        let mut reason = None;
        let mut filter = None;
        for (key, value) in pairs {
            if let Some(path) = key.strip_prefix("policy:") {
                engine
                    .add_policy(path.to_owned(), value.clone())
                    .map_err(|e| PolicyError(format!("policy {path}: {e}")))?;
                modules += 1;
            } else if let Some(path) = key.strip_prefix("data:") {
                let data = Value::from_json_str(value)
                    .map_err(|e| PolicyError(format!("data {path}: not JSON: {e}")))?;
                if data.as_object().is_err() {
                    return Err(PolicyError(format!("data {path}: must be a JSON object")));
                }
                engine
                    .add_data(data)
                    .map_err(|e| PolicyError(format!("data {path}: {e}")))?;
            } else {
                let slot = match key.as_str() {
                    "query" => &mut query,
                    "reason" => &mut reason,
                    "filter" => &mut filter,
                    other => {
                        return Err(PolicyError(format!(
                            "unknown setting {other:?} (accepted: policy, data, query, reason, filter)"
                        )));
                    }
                };
                if !rule_path_ok(value) {
                    return Err(PolicyError(format!(
                        "{key} {value:?} is not a rule path such as data.berth.authz.allow"
                    )));
                }
                *slot = Some(value.clone());
            }
        }
        if modules == 0 {
            return Err(PolicyError(
                "no policy given: set policy=FILE[,FILE...]".into(),
            ));
        }
        let mut policy = Policy {
            engine,
            query: query.unwrap_or_else(|| DEFAULT_QUERY.to_owned()),
            reason: None,
            filter: None,
        };
        // Errors in the policy show now, not at the first request: every entry point is
        // evaluated once against an empty input.
        policy.engine.set_input(Value::new_object());
        policy
            .engine
            .eval_rule(policy.query.clone())
            .map_err(|e| PolicyError(format!("query {}: {e}", policy.query)))?;
        for (given, default, slot) in [
            (reason, DEFAULT_REASON, &mut policy.reason),
            (filter, DEFAULT_FILTER, &mut policy.filter),
        ] {
            let explicit = given.is_some();
            let rule = given.unwrap_or_else(|| default.to_owned());
            match policy.engine.eval_rule(rule.clone()) {
                Ok(_) => *slot = Some(rule),
                // An optional rule the policy does not define is simply absent.
                Err(_) if !explicit => {}
                Err(e) => return Err(PolicyError(format!("{rule}: {e}"))),
            }
        }
        Ok(policy)
    }

    /// Whether `input` is allowed, and why.
    pub fn authorize(&mut self, input: Value) -> Result<(bool, Option<String>), PolicyError> {
        self.engine.set_input(input);
        let allowed = self
            .engine
            .eval_rule(self.query.clone())
            .map_err(|e| PolicyError(format!("{}: {e}", self.query)))?;
        let allow = allowed == Value::Bool(true);
        let reason = match &self.reason {
            Some(rule) => {
                let v = self
                    .engine
                    .eval_rule(rule.clone())
                    .map_err(|e| PolicyError(format!("{rule}: {e}")))?;
                reason_text(&v)
            }
            None => None,
        };
        let reason = match (allow, reason) {
            (false, None) => Some(format!("denied by policy ({} is not true)", self.query)),
            (_, r) => r,
        };
        Ok((allow, reason))
    }

    /// The indices of `input.candidates` the caller may see; `None` for all of them.
    pub fn filter(&mut self, input: Value, count: usize) -> Result<Option<Vec<u32>>, PolicyError> {
        let Some(rule) = self.filter.clone() else {
            return Ok(None);
        };
        self.engine.set_input(input);
        let v = self
            .engine
            .eval_rule(rule.clone())
            .map_err(|e| PolicyError(format!("{rule}: {e}")))?;
        let items: Vec<&Value> = match &v {
            Value::Undefined => return Ok(None),
            Value::Set(s) => s.iter().collect(),
            Value::Array(a) => a.iter().collect(),
            _ => {
                return Err(PolicyError(format!(
                    "{rule} must be a set or array of candidate indices"
                )));
            }
        };
        let mut indices = Vec::with_capacity(items.len());
        for item in items {
            let index = item
                .as_u32()
                .ok()
                .filter(|i| (*i as usize) < count)
                .ok_or_else(|| {
                    PolicyError(format!(
                        "{rule} holds {item}, which is not an index below {count}"
                    ))
                })?;
            indices.push(index);
        }
        indices.sort_unstable();
        indices.dedup();
        Ok(Some(indices))
    }
}

/// A reason rule's value as text: a string, or a set or array of strings.
fn reason_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.to_string()),
        Value::Set(_) | Value::Array(_) => {
            let items: Vec<&Value> = match v {
                Value::Set(s) => s.iter().collect(),
                Value::Array(a) => a.iter().collect(),
                _ => Vec::new(),
            };
            let mut texts: Vec<String> = items
                .into_iter()
                .filter_map(|i| i.as_string().ok().map(|s| s.to_string()))
                .collect();
            texts.sort();
            (!texts.is_empty()).then(|| texts.join("; "))
        }
        _ => None,
    }
}
