//! The policy: Rego modules and data loaded once per configuration, checked, and compiled to
//! regorus's virtual machine (RVM) bytecode; each request then only replaces the input. The
//! tree-walking interpreter stays as the fallback for a policy the RVM compiler cannot
//! take (and on request, `engine = interpreter`): the RVM evaluates our example policies
//! five to seven times faster, which is most of the cost of a decision.

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::vm::RegoVM;
// The AST, to find the rules the VM evaluates wrongly (regorus marks it unstable: pinned).
use regorus::unstable::{Expr, Literal, Query, Rule};
use regorus::{Engine, Value};

/// Default rule that must be `true` to allow.
pub const DEFAULT_QUERY: &str = "data.berth.authz.allow";
/// Default rule giving the reason (optional).
pub const DEFAULT_REASON: &str = "data.berth.authz.reason";
/// Default rule giving the visible candidates' indices (optional).
pub const DEFAULT_FILTER: &str = "data.berth.authz.visible";
/// Default rule giving a list's scope as label conditions (optional).
pub const DEFAULT_SCOPE: &str = "data.berth.authz.list_scope";

/// Which objects of a list result the caller may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// All of them.
    All,
    /// Those carrying each label key with one of its values.
    Labels(Vec<(String, Vec<String>)>),
    /// Ask the filter rule with the objects.
    PerObject,
}

/// Instructions one RVM evaluation may run. Far above what a policy over one request needs
/// (a filter over 1024 candidates runs some tens of thousands), and it ends a runaway policy
/// with a clear error before berthd's call deadline does.
const MAX_INSTRUCTIONS: usize = 50_000_000;

/// A configuration the policy refuses, or an evaluation that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError(pub String);

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which evaluator the `engine` setting asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineChoice {
    /// The RVM, or the interpreter if the RVM compiler refuses the policy.
    Auto,
    /// The RVM only: a policy it cannot compile is refused.
    Vm,
    /// The interpreter only.
    Interpreter,
}

/// What evaluates the rules.
enum Evaluator {
    /// A program per entry point, holding only the rules it reaches: each execution starts
    /// by resetting a rule cache and registers sized to its program. With one shared
    /// program, team-labels' list decision took about 10 % longer natively and 3 % longer
    /// through the component.
    Vm(Vec<(String, RegoVM)>),
    Interpreter(Box<Engine>),
}

impl Evaluator {
    fn eval(&mut self, input: &Value, rule: &str) -> Result<Value, PolicyError> {
        match self {
            Evaluator::Vm(programs) => {
                let Some((_, vm)) = programs.iter_mut().find(|(entry, _)| entry == rule) else {
                    return Err(PolicyError(format!("{rule}: not an entry point")));
                };
                vm.set_input(input.clone());
                vm.execute_entry_point_by_name(rule)
                    .map_err(|e| PolicyError(format!("{rule}: {e}")))
            }
            Evaluator::Interpreter(engine) => {
                engine.set_input(input.clone());
                engine
                    .eval_rule(rule.to_owned())
                    .map_err(|e| PolicyError(format!("{rule}: {e}")))
            }
        }
    }
}

/// A loaded policy.
pub struct Policy {
    evaluator: Evaluator,
    query: String,
    reason: Option<String>,
    filter: Option<String>,
    scope: Option<String>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("vm", &self.uses_vm())
            .field("query", &self.query)
            .field("reason", &self.reason)
            .field("filter", &self.filter)
            .field("scope", &self.scope)
            .finish()
    }
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
    /// one), `data:<path>` (JSON documents, merged), `query`, `reason`, `filter`, `scope`,
    /// `engine`.
    pub fn load(pairs: &[(String, String)]) -> Result<Policy, PolicyError> {
        let mut engine = Engine::new();
        let mut modules = 0;
        let mut query = None;
        let mut reason = None;
        let mut filter = None;
        let mut scope = None;
        let mut choice = EngineChoice::Auto;
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
            } else if key == "engine" {
                choice = match value.as_str() {
                    "auto" => EngineChoice::Auto,
                    "vm" => EngineChoice::Vm,
                    "interpreter" => EngineChoice::Interpreter,
                    other => {
                        return Err(PolicyError(format!(
                            "engine {other:?}: expected auto, vm or interpreter"
                        )));
                    }
                };
            } else {
                let slot = match key.as_str() {
                    "query" => &mut query,
                    "reason" => &mut reason,
                    "filter" => &mut filter,
                    "scope" => &mut scope,
                    other => {
                        return Err(PolicyError(format!(
                            "unknown setting {other:?} (accepted: policy, data, query, reason, \
                             filter, scope, engine)"
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
        let query = query.unwrap_or_else(|| DEFAULT_QUERY.to_owned());
        // Errors in the policy show now, not at the first request: every entry point is
        // evaluated once against an empty input.
        engine.set_input(Value::new_object());
        engine
            .eval_rule(query.clone())
            .map_err(|e| PolicyError(format!("query {query}: {e}")))?;
        let mut optional = [
            (reason, DEFAULT_REASON),
            (filter, DEFAULT_FILTER),
            (scope, DEFAULT_SCOPE),
        ]
        .into_iter()
        .map(|(given, default)| {
            let explicit = given.is_some();
            let rule = given.unwrap_or_else(|| default.to_owned());
            match engine.eval_rule(rule.clone()) {
                Ok(_) => Ok(Some(rule)),
                // An optional rule the policy does not define is simply absent.
                Err(_) if !explicit => Ok(None),
                Err(e) => Err(PolicyError(format!("{rule}: {e}"))),
            }
        });
        let reason = optional.next().expect("three rules")?;
        let filter = optional.next().expect("three rules")?;
        let scope = optional.next().expect("three rules")?;
        drop(optional);

        let evaluator = match choice {
            EngineChoice::Interpreter => Evaluator::Interpreter(Box::new(engine)),
            EngineChoice::Vm | EngineChoice::Auto => {
                let entry_points: Vec<&str> = [
                    Some(&query),
                    reason.as_ref(),
                    filter.as_ref(),
                    scope.as_ref(),
                ]
                .into_iter()
                .flatten()
                .map(String::as_str)
                .collect();
                match compile_vm(&mut engine, &entry_points) {
                    Ok(programs) => Evaluator::Vm(programs),
                    Err(_) if choice == EngineChoice::Auto => {
                        Evaluator::Interpreter(Box::new(engine))
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        Ok(Policy {
            evaluator,
            query,
            reason,
            filter,
            scope,
        })
    }

    /// The value of `rule` for `input`, as the evaluator in use gives it.
    #[cfg(test)]
    pub fn value_of(&mut self, input: &Value, rule: &str) -> Result<Value, PolicyError> {
        self.evaluator.eval(input, rule)
    }

    /// Whether the RVM (rather than the interpreter) evaluates this policy.
    pub fn uses_vm(&self) -> bool {
        matches!(self.evaluator, Evaluator::Vm(_))
    }

    /// Whether `input` is allowed, and why not. The reason rule is evaluated for denials
    /// only: it explains a refusal, and skipping it keeps allowed calls cheap.
    pub fn authorize(&mut self, input: Value) -> Result<(bool, Option<String>), PolicyError> {
        let allow = self.evaluator.eval(&input, &self.query)? == Value::Bool(true);
        if allow {
            return Ok((true, None));
        }
        let reason = match &self.reason {
            Some(rule) => reason_text(&self.evaluator.eval(&input, rule)?),
            None => None,
        };
        let reason =
            reason.unwrap_or_else(|| format!("denied by policy ({} is not true)", self.query));
        Ok((false, Some(reason)))
    }

    /// Whether the policy has a filter rule (otherwise every candidate is visible).
    pub fn filters(&self) -> bool {
        self.filter.is_some()
    }

    /// Which objects of a list result the caller may see, from the scope rule: an object
    /// of label keys to the values each may have (`{}`: all); where the rule is absent or
    /// undefined, the filter rule decides object by object, and without one all are seen.
    pub fn scope(&mut self, input: &Value) -> Result<Scope, PolicyError> {
        let fallback = || {
            if self.filter.is_some() {
                Scope::PerObject
            } else {
                Scope::All
            }
        };
        let Some(rule) = &self.scope else {
            return Ok(fallback());
        };
        let v = self.evaluator.eval(input, rule)?;
        let fields = match &v {
            Value::Undefined => return Ok(fallback()),
            Value::Object(fields) => fields,
            _ => {
                return Err(PolicyError(format!(
                    "{rule} must be an object of label keys to sets or arrays of values"
                )));
            }
        };
        let mut conditions = Vec::with_capacity(fields.len());
        for (key, values) in fields.iter() {
            let bad = || {
                PolicyError(format!(
                    "{rule}: label {key} must map to a set or array of strings, not {values}"
                ))
            };
            let key = key.as_string().map_err(|_| bad())?.to_string();
            let items: Vec<&Value> = match values {
                Value::Set(s) => s.iter().collect(),
                Value::Array(a) => a.iter().collect(),
                _ => return Err(bad()),
            };
            let mut texts = items
                .into_iter()
                .map(|i| i.as_string().map(|s| s.to_string()).map_err(|_| bad()))
                .collect::<Result<Vec<_>, _>>()?;
            texts.sort();
            texts.dedup();
            conditions.push((key, texts));
        }
        Ok(if conditions.is_empty() {
            Scope::All
        } else {
            Scope::Labels(conditions)
        })
    }

    /// The indices of `input.candidates` the caller may see; `None` for all of them.
    pub fn filter(&mut self, input: Value, count: usize) -> Result<Option<Vec<u32>>, PolicyError> {
        let Some(rule) = &self.filter else {
            return Ok(None);
        };
        let v = self.evaluator.eval(&input, rule)?;
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

/// The policy compiled to RVM bytecode, a program per entry point, its data loaded.
fn compile_vm(
    engine: &mut Engine,
    entry_points: &[&str],
) -> Result<Vec<(String, RegoVM)>, PolicyError> {
    let refused = |e: &dyn std::fmt::Display| {
        PolicyError(format!(
            "the policy does not compile for regorus's VM ({e}); set engine=interpreter (or \
             auto) to evaluate it with the interpreter"
        ))
    };
    if let Some(place) = else_chain_iterating(engine) {
        return Err(refused(&format!(
            "{place}: a body of an `else` chain iterates (`some`, or a reference with a \
             variable index), and regorus 0.14.1's VM then skips the later branches where \
             Rego takes them"
        )));
    }
    let data = engine.get_data();
    entry_points
        .iter()
        .map(|&entry| {
            let compiled = engine
                .compile_with_entrypoint(&entry.into())
                .map_err(|e| refused(&e))?;
            let program =
                Compiler::compile_from_policy(&compiled, &[entry]).map_err(|e| refused(&e))?;
            let mut vm = RegoVM::new();
            vm.load_program(program);
            vm.set_max_instructions(MAX_INSTRUCTIONS);
            vm.set_data(data.clone()).map_err(|e| refused(&e))?;
            Ok((entry.to_owned(), vm))
        })
        .collect()
}

/// The first rule or function (as ``file:line, `head` ``) whose `else` chain has a body that
/// iterates by itself. regorus 0.14.1's VM evaluates such a chain wrongly: once that body
/// finds nothing, the VM leaves the rule undefined (or at its default) instead of taking the
/// next branch, as OPA and regorus's interpreter do. A scope rule left so, in a policy with
/// no filter rule, shows every object: these policies never run on the VM. The check errs on
/// the side of the interpreter: a variable index counts even where the variable is already
/// bound (a lookup, not a loop). Iteration inside comprehensions, `every` and called rules
/// is evaluated correctly.
fn else_chain_iterating(engine: &mut Engine) -> Option<String> {
    for module in engine.get_modules() {
        for rule in &module.policy {
            let Rule::Spec { span, bodies, .. } = rule.as_ref() else {
                continue;
            };
            if !bodies.iter().any(|b| b.is_else) {
                continue;
            }
            if let Some(body) = bodies.iter().find(|b| query_iterates(&b.query)) {
                let head = span.text().lines().next().unwrap_or_default().trim();
                return Some(format!(
                    "{}:{}, `{head}`",
                    body.span.source.file(),
                    body.span.line
                ));
            }
        }
    }
    None
}

fn query_iterates(query: &Query) -> bool {
    query.stmts.iter().any(|stmt| match &stmt.literal {
        Literal::SomeVars { .. } | Literal::SomeIn { .. } => true,
        Literal::Expr { expr, .. } | Literal::NotExpr { expr, .. } => expr_iterates(expr),
        Literal::Every { domain, .. } => expr_iterates(domain),
    })
}

fn expr_iterates(expr: &Expr) -> bool {
    match expr {
        Expr::RefBrack { refr, index, .. } => {
            matches!(index.as_ref(), Expr::Var { .. }) || expr_iterates(refr) || expr_iterates(index)
        }
        Expr::String { .. }
        | Expr::RawString { .. }
        | Expr::Number { .. }
        | Expr::Bool { .. }
        | Expr::Null { .. }
        | Expr::Var { .. }
        // A comprehension's iteration is its own; the VM gets it right.
        | Expr::ArrayCompr { .. }
        | Expr::SetCompr { .. }
        | Expr::ObjectCompr { .. } => false,
        Expr::Array { items, .. } | Expr::Set { items, .. } => {
            items.iter().any(|i| expr_iterates(i))
        }
        Expr::Object { fields, .. } => fields
            .iter()
            .any(|(_, k, v)| expr_iterates(k) || expr_iterates(v)),
        Expr::Call { fcn, params, .. } => {
            expr_iterates(fcn) || params.iter().any(|p| expr_iterates(p))
        }
        Expr::UnaryExpr { expr, .. } => expr_iterates(expr),
        Expr::RefDot { refr, .. } => expr_iterates(refr),
        Expr::BinExpr { lhs, rhs, .. }
        | Expr::BoolExpr { lhs, rhs, .. }
        | Expr::ArithExpr { lhs, rhs, .. }
        | Expr::AssignExpr { lhs, rhs, .. } => expr_iterates(lhs) || expr_iterates(rhs),
        Expr::Membership {
            key,
            value,
            collection,
            ..
        } => {
            key.as_ref().is_some_and(|k| expr_iterates(k))
                || expr_iterates(value)
                || expr_iterates(collection)
        }
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
