//! Native tests: the example policies' shared cases (plugins/authz/examples/cases.json, also
//! run through the Wasm component by berthd's plugin host tests) and the configuration rules.

use std::path::Path;

use crate::bindings::exports::berth::authz::policy::{TlsClient, TokenIdentity, UnixPeer};
use serde_json::Value as Json;

use super::*;

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn kind(s: &str) -> ResourceKind {
    match s {
        "container" => ResourceKind::Container,
        "image" => ResourceKind::Image,
        "volume" => ResourceKind::Volume,
        "network" => ResourceKind::Network,
        "plugin" => ResourceKind::Plugin,
        "system" => ResourceKind::System,
        other => panic!("kind {other}"),
    }
}

fn pairs(labels: &Json) -> Vec<(String, String)> {
    labels
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn opt(v: &Json) -> Option<String> {
    v.as_str().map(str::to_owned)
}

/// A request in cases.json's form (berthd's serde form of its `AuthzRequest`).
fn request(r: &Json) -> Request {
    let identity = match &r["identity"] {
        Json::String(s) if s == "anonymous" => Identity::Anonymous,
        v if v.get("unix").is_some() => {
            let p = &v["unix"];
            Identity::UnixPeer(UnixPeer {
                uid: p["uid"].as_u64().unwrap() as u32,
                gid: p["gid"].as_u64().unwrap() as u32,
                pid: p["pid"].as_u64().unwrap() as u32,
                user: opt(&p["user"]),
                groups: serde_json::from_value(p["groups"].clone()).unwrap(),
            })
        }
        v if v.get("tls").is_some() => {
            let t = &v["tls"];
            Identity::TlsClient(TlsClient {
                subject_cn: opt(&t["subject_cn"]).unwrap(),
                sans: serde_json::from_value(t["sans"].clone()).unwrap(),
                fingerprint_sha256: opt(&t["fingerprint_sha256"]).unwrap(),
            })
        }
        v => Identity::Token(TokenIdentity {
            name: opt(&v["token"]["name"]).unwrap(),
        }),
    };
    let t = &r["target"];
    Request {
        request_id: opt(&r["request_id"]).unwrap(),
        identity,
        method: opt(&r["method"]).unwrap(),
        params: r["params"].to_string(),
        target: policy::Target {
            kind: kind(t["kind"].as_str().unwrap()),
            id: opt(&t["id"]),
            name: opt(&t["name"]),
            labels: pairs(&t["labels"]),
        },
        transport: match r["transport"].as_str().unwrap() {
            "unix" => Transport::Unix,
            "tcp-tls" => Transport::TcpTls,
            _ => Transport::TcpInsecure,
        },
        remote_address: opt(&r["remote_address"]),
    }
}

/// The configuration berthd passes for these files.
fn config(policies: &[&str], data: &[&str]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (prefix, files) in [("policy", policies), ("data", data)] {
        for f in files {
            let path = examples().join(f);
            out.push((
                format!("{prefix}:{}", path.display()),
                std::fs::read_to_string(&path).unwrap(),
            ));
        }
    }
    out
}

/// Every case of cases.json under one engine setting.
fn cases_hold_with(engine: &str) {
    let cases: Vec<Json> =
        serde_json::from_str(&std::fs::read_to_string(examples().join("cases.json")).unwrap())
            .unwrap();
    assert!(cases.len() >= 20);
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let files = |k: &str| -> Vec<String> { serde_json::from_value(case[k].clone()).unwrap() };
        let (p, d) = (files("policy"), files("data"));
        let p: Vec<&str> = p.iter().map(String::as_str).collect();
        let d: Vec<&str> = d.iter().map(String::as_str).collect();
        let mut settings = config(&p, &d);
        settings.push(("engine".into(), engine.into()));
        let mut policy = Policy::load(&settings).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(policy.uses_vm(), engine != "interpreter", "{name}");
        let req = request(&case["request"]);
        let (allow, reason) = policy
            .authorize(input_of(&req, None).unwrap())
            .unwrap_or_else(|e| panic!("{engine} {name}: {e}"));
        assert_eq!(
            allow,
            case["allow"].as_bool().unwrap(),
            "{engine} {name}: {reason:?}"
        );
        if let Some(needle) = case["reason_contains"].as_str() {
            let reason = reason.unwrap_or_default();
            assert!(reason.contains(needle), "{engine} {name}: {reason}");
        }
        if let Some(candidates) = case["candidates"].as_array() {
            let list: Vec<Candidate> = candidates
                .iter()
                .map(|c| Candidate {
                    kind: kind(c["kind"].as_str().unwrap()),
                    id: opt(&c["id"]).unwrap(),
                    name: opt(&c["name"]),
                    labels: pairs(&c["labels"]),
                })
                .collect();
            let got = policy
                .filter(input_of(&req, Some(&list)).unwrap(), list.len())
                .unwrap_or_else(|e| panic!("{engine} {name}: {e}"));
            let want: Option<Vec<u32>> = match &case["visible"] {
                Json::String(s) if s == "all" => None,
                v => Some(serde_json::from_value(v.clone()).unwrap()),
            };
            assert_eq!(got, want, "{engine} {name}");
            // The list scope, where the policy states one, shows the same objects.
            let scope = policy
                .scope(&input_of(&req, None).unwrap())
                .unwrap_or_else(|e| panic!("{engine} {name}: {e}"));
            let all: Vec<u32> = (0..list.len() as u32).collect();
            let scoped = match &scope {
                Scope::PerObject => continue,
                Scope::All => all.clone(),
                Scope::Labels(conditions) => all
                    .iter()
                    .copied()
                    .filter(|&i| {
                        conditions.iter().all(|(key, values)| {
                            list[i as usize]
                                .labels
                                .iter()
                                .any(|(k, v)| k == key && values.contains(v))
                        })
                    })
                    .collect(),
            };
            assert_eq!(scoped, want.unwrap_or(all), "{engine} {name}: {scope:?}");
        }
    }
}

#[test]
fn example_cases_hold_in_the_vm_and_the_interpreter() {
    // `vm` refuses a policy the RVM cannot compile, so this also proves every example runs
    // on the fast path.
    cases_hold_with("vm");
    cases_hold_with("interpreter");
    cases_hold_with("auto");
}

fn inline(rego: &str) -> Vec<(String, String)> {
    vec![("policy:/t.rego".into(), rego.into())]
}

#[test]
fn configuration_errors_are_refused_by_name() {
    let e = Policy::load(&[]).unwrap_err();
    assert!(e.0.contains("no policy given"), "{e}");
    let e = Policy::load(&inline("package berth.authz\nallow if {\n")).unwrap_err();
    assert!(e.0.contains("/t.rego"), "{e}");
    let mut c = inline("package berth.authz\nallow := true\n");
    c.push(("data:/d.json".into(), "{not json".into()));
    let e = Policy::load(&c).unwrap_err();
    assert!(e.0.contains("/d.json") && e.0.contains("not JSON"), "{e}");
    let mut c = inline("package berth.authz\nallow := true\n");
    c.push(("data:/d.json".into(), "[1]".into()));
    assert!(Policy::load(&c).unwrap_err().0.contains("object"));
    let mut c = inline("package berth.authz\nallow := true\n");
    c.push(("colour".into(), "blue".into()));
    assert!(
        Policy::load(&c)
            .unwrap_err()
            .0
            .contains("unknown setting \"colour\"")
    );
    let mut c = inline("package berth.authz\nallow := true\n");
    c.push(("query".into(), "data.berth.authz.nothing".into()));
    assert!(
        Policy::load(&c)
            .unwrap_err()
            .0
            .contains("data.berth.authz.nothing")
    );
    let mut c = inline("package berth.authz\nallow := true\n");
    c.push(("query".into(), "data.x; true".into()));
    assert!(Policy::load(&c).unwrap_err().0.contains("not a rule path"));
    let mut c = inline("package berth.authz\nallow := true\n");
    c.push(("engine".into(), "fast".into()));
    let e = Policy::load(&c).unwrap_err();
    assert!(e.0.contains("engine \"fast\""), "{e}");
}

fn input(method: &str) -> regorus::Value {
    regorus::Value::from(serde_json::json!({"method": method, "candidates": [1, 2, 3]}))
}

/// A policy under both engines.
fn both(rego: &str) -> [Policy; 2] {
    ["vm", "interpreter"].map(|engine| {
        let mut c = inline(rego);
        c.push(("engine".into(), engine.into()));
        let p = Policy::load(&c).unwrap_or_else(|e| panic!("{engine}: {e}"));
        assert_eq!(p.uses_vm(), engine == "vm");
        p
    })
}

#[test]
fn only_a_true_query_allows_and_reasons_may_be_sets() {
    for mut p in both(
        "package berth.authz\nimport rego.v1\nallow := \"yes\" if input.method == \"a\"\nallow if input.method == \"b\"\nreason contains \"two\" if input.method == \"c\"\nreason contains \"one\" if input.method == \"c\"\nreason contains \"allowed\" if input.method == \"b\"\n",
    ) {
        assert!(!p.authorize(input("a")).unwrap().0, "a string is not true");
        // Reasons explain denials only.
        assert_eq!(p.authorize(input("b")).unwrap(), (true, None));
        let (allow, reason) = p.authorize(input("c")).unwrap();
        assert!(!allow);
        assert_eq!(reason.as_deref(), Some("one; two"));
        let (_, reason) = p.authorize(input("d")).unwrap();
        assert!(reason.unwrap().contains("is not true"));
    }
}

#[test]
fn filter_indices_are_checked() {
    for mut p in both(
        "package berth.authz\nimport rego.v1\nallow := true\nvisible contains i if { some i, _ in input.candidates; i != 1 }\nvisible contains 7 if input.method == \"bad\"\n",
    ) {
        assert!(p.filters());
        assert_eq!(p.filter(input("ok"), 3).unwrap(), Some(vec![0, 2]));
        let e = p.filter(input("bad"), 3).unwrap_err();
        assert!(e.0.contains("not an index below 3"), "{e}");
    }
    let mut none = Policy::load(&inline("package berth.authz\nallow := true\n")).unwrap();
    assert!(!none.filters());
    assert_eq!(none.filter(input("x"), 3).unwrap(), None);
}

#[test]
fn list_scopes_are_label_conditions_or_fall_back_to_the_filter_rule() {
    let rules = "package berth.authz\nimport rego.v1\nallow := true\n";
    let scoped = |body: &str| both(&format!("{rules}{body}"));
    for mut p in scoped(
        "list_scope := {} if input.method == \"all\"\nlist_scope := {\"team\": [\"b\", \"a\", \"a\"], \"tier\": {\"x\"}} if input.method == \"labels\"\nlist_scope := \"everything\" if input.method == \"text\"\nlist_scope := {\"team\": [1]} if input.method == \"number\"\n",
    ) {
        assert_eq!(p.scope(&input("all")).unwrap(), Scope::All);
        assert_eq!(
            p.scope(&input("labels")).unwrap(),
            Scope::Labels(vec![
                ("team".into(), vec!["a".into(), "b".into()]),
                ("tier".into(), vec!["x".into()]),
            ])
        );
        let e = p.scope(&input("text")).unwrap_err();
        assert!(e.0.contains("must be an object"), "{e}");
        let e = p.scope(&input("number")).unwrap_err();
        assert!(e.0.contains("label \"team\" must map to"), "{e}");
        // Undefined, and no filter rule: everything.
        assert_eq!(p.scope(&input("other")).unwrap(), Scope::All);
    }
    for mut p in scoped("list_scope := {} if input.method == \"all\"\nvisible contains 0 if true\n")
    {
        assert_eq!(p.scope(&input("all")).unwrap(), Scope::All);
        assert_eq!(p.scope(&input("other")).unwrap(), Scope::PerObject);
    }
    // A scope rule named explicitly must exist.
    let mut c = inline(rules);
    c.push(("scope".into(), "data.berth.authz.nothing_here".into()));
    assert!(Policy::load(&c).is_err());
}

/// The component's policy is one per process: tests that configure it take turns.
static CONFIGURING: Mutex<()> = Mutex::new(());

#[test]
fn only_lists_and_events_get_a_scope_and_denials_none() {
    use berth_plugin::plugin::Guest as _;
    use scoped_policy::Guest as _;
    let _turn = CONFIGURING.lock().unwrap_or_else(|p| p.into_inner());
    RegoPolicy::configure(inline(
        "package berth.authz\nimport rego.v1\nallow if input.user == \"ann\"\nlist_scope := {\"team\": input.groups}\n",
    ))
    .unwrap();
    let mut r = request(&serde_json::json!({
        "request_id": "t",
        "identity": {"unix": {"uid": 1, "gid": 1, "pid": 1, "user": "ann", "groups": ["a"]}},
        "method": "container.list",
        "params": {},
        "target": {"kind": "container", "id": null, "name": null, "labels": {}},
        "transport": "unix",
        "remote_address": null
    }));
    let d = RegoPolicy::authorize_scoped(r.clone()).unwrap();
    assert!(d.decision.allow);
    assert_eq!(
        d.scope,
        ListScope::Labels(vec![LabelIn {
            key: "team".into(),
            values: vec!["a".into()]
        }])
    );
    // The event stream is scoped like a list; other methods are not.
    r.method = "events.subscribe".into();
    assert_eq!(
        RegoPolicy::authorize_scoped(r.clone()).unwrap().scope,
        d.scope
    );
    r.method = "container.inspect".into();
    assert_eq!(
        RegoPolicy::authorize_scoped(r.clone()).unwrap().scope,
        ListScope::All
    );
    r.method = "container.list".into();
    r.identity = Identity::Anonymous;
    let d = RegoPolicy::authorize_scoped(r).unwrap();
    assert!(!d.decision.allow);
    assert_eq!(d.scope, ListScope::All);
}

#[test]
fn a_failed_configure_keeps_the_policy_in_force() {
    use berth_plugin::plugin::Guest as _;
    let _turn = CONFIGURING.lock().unwrap_or_else(|p| p.into_inner());
    RegoPolicy::configure(inline("package berth.authz\nallow := true\n")).unwrap();
    let e = RegoPolicy::configure(inline("package berth.authz\nallow if {\n")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    with_policy(|p| {
        assert!(p.authorize(input("x")).unwrap().0);
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_policy_the_vm_cannot_compile_falls_back_to_the_interpreter_unless_vm_is_asked() {
    // The RVM compiler does not take `with` (regorus 0.14).
    let rego = "package berth.authz\nimport rego.v1\nadmin if input.user == \"root\"\nallow if admin with input.user as \"root\"\n";
    let mut p = Policy::load(&inline(rego)).unwrap();
    assert!(!p.uses_vm());
    assert!(p.authorize(input("x")).unwrap().0);
    let mut c = inline(rego);
    c.push(("engine".into(), "vm".into()));
    let e = Policy::load(&c).unwrap_err();
    assert!(e.0.contains("does not compile for regorus's VM"), "{e}");
}

#[test]
fn else_chains_that_iterate_run_on_the_interpreter_where_the_vm_would_show_everything() {
    // regorus 0.14.1's VM leaves this scope undefined for a non-admin (the loop in the first
    // body finds nothing and the `else` is skipped); undefined with no filter rule shows
    // every object. The interpreter gives the team condition.
    let rego = "package berth.authz\nimport rego.v1\nallow := true\n\
        list_scope := {} if {\n\tsome group in input.groups\n\tgroup in data.admin_groups\n}\n\
        else := {\"team\": input.groups}\n";
    let mut c = inline(rego);
    c.push(("data:/d.json".into(), r#"{"admin_groups": ["ops"]}"#.into()));
    let mut p = Policy::load(&c).unwrap();
    assert!(!p.uses_vm());
    let caller = |groups: serde_json::Value| {
        regorus::Value::from(serde_json::json!({"method": "container.list", "groups": groups}))
    };
    assert_eq!(
        p.scope(&caller(serde_json::json!(["dev"]))).unwrap(),
        Scope::Labels(vec![("team".into(), vec!["dev".into()])])
    );
    assert_eq!(
        p.scope(&caller(serde_json::json!(["ops"]))).unwrap(),
        Scope::All
    );
    c.push(("engine".into(), "vm".into()));
    let e = Policy::load(&c).unwrap_err();
    assert!(
        e.0.contains("/t.rego:4, `list_scope := {} if {`") && e.0.contains("else"),
        "{e}"
    );

    // Every form of iteration that trips the VM is caught, in rules and functions alike;
    // chains without it, and iteration the VM gets right, stay on the VM.
    let with_iteration = [
        "r := 1 if {\n\tsome g in input.groups\n\tg == \"y\"\n}\nelse := 3\n",
        "r := 1 if {\n\tsome i\n\tinput.groups[i] == \"y\"\n}\nelse := 3\n",
        "r := 1 if {\n\tinput.groups[_] == \"y\"\n}\nelse := 3\n",
        "r := 1 if {\n\tnot input.groups[_] == \"x\"\n}\nelse := 3\n",
        "r := 1 if {\n\tg := input.groups[_]\n\tg == \"y\"\n}\nelse := 3\n",
        "r := 1 if input.a == 1\nelse := 2 if {\n\tinput.labels[k] == \"z\"\n}\nelse := 3\n",
        "f(x) := 1 if {\n\tsome g in x\n\tg == \"y\"\n}\nelse := 3\nr := f(input.groups)\n",
    ];
    let without = [
        "r := 1 if input.a == 1\nelse := 2 if input.a == 2\nelse := 3\n",
        "r := 1 if {\n\tevery g in input.groups { g == \"y\" }\n}\nelse := 3\n",
        "r := 1 if {\n\tcount([g | some g in input.groups; g == \"y\"]) > 0\n}\nelse := 3\n",
        "r := 1 if y_member\nelse := 3\ny_member if {\n\tsome g in input.groups\n\tg == \"y\"\n}\n",
        "r := 1 if {\n\tsome g in input.groups\n\tg == \"y\"\n}\nr := 3 if input.a == 0\n",
    ];
    let input =
        regorus::Value::from(serde_json::json!({"a": 0, "groups": ["x"], "labels": {"team": "x"}}));
    for (rules, on_vm) in with_iteration
        .iter()
        .map(|r| (r, false))
        .chain(without.iter().map(|r| (r, true)))
    {
        let rego = format!("package berth.authz\nimport rego.v1\nallow := true\n{rules}");
        let mut c = inline(&rego);
        c.push(("query".into(), "data.berth.authz.r".into()));
        let mut p = Policy::load(&c).unwrap_or_else(|e| panic!("{rules}: {e}"));
        assert_eq!(p.uses_vm(), on_vm, "{rules}");
        // Every one of these is 3 in Rego; under auto berth gets that answer.
        assert_eq!(
            p.value_of(&input, "data.berth.authz.r").unwrap(),
            regorus::Value::from(3u64),
            "{rules}"
        );
    }
}

/// The requests and candidate lists of cases.json.
fn case_inputs() -> Vec<(Request, Option<Vec<Candidate>>)> {
    let cases: Vec<Json> =
        serde_json::from_str(&std::fs::read_to_string(examples().join("cases.json")).unwrap())
            .unwrap();
    cases
        .iter()
        .map(|case| {
            let list = case["candidates"].as_array().map(|all| {
                all.iter()
                    .map(|c| Candidate {
                        kind: kind(c["kind"].as_str().unwrap()),
                        id: opt(&c["id"]).unwrap(),
                        name: opt(&c["name"]),
                        labels: pairs(&c["labels"]),
                    })
                    .collect()
            });
            (request(&case["request"]), list)
        })
        .collect()
}

#[test]
fn reused_inputs_equal_fresh_ones() {
    let cases = case_inputs();
    assert!(cases.iter().any(|(_, c)| c.is_some()));
    let mut cache = InputCache::EMPTY;
    let mut n = 0;
    // Each request twice in a row (authorize, then filter with the same request id), then
    // again with a new id, and each case after another: hits and misses of both parts.
    for round in 0..2 {
        for (req, candidates) in &cases {
            for candidates in [None, candidates.as_deref()] {
                n += 1;
                let mut req = req.clone();
                req.request_id = format!("r{round}-{n}");
                let want = input_of(&req, candidates).unwrap();
                assert_eq!(cache.input(&req, candidates).unwrap(), want, "{req:?}");
                assert_eq!(cache.input(&req, candidates).unwrap(), want, "{req:?}");
            }
        }
    }
    // A change of any field but the id is a new input.
    let (req, _) = &cases[0];
    let mut changed = req.clone();
    changed.params = r#"{"changed":true}"#.into();
    let _ = cache.input(req, None).unwrap();
    assert_eq!(
        cache.input(&changed, None).unwrap(),
        input_of(&changed, None).unwrap()
    );
    let list = vec![Candidate {
        kind: ResourceKind::Volume,
        id: "v1".into(),
        name: None,
        labels: vec![("team".into(), "a".into())],
    }];
    let mut other = list.clone();
    other[0].labels[0].1 = "b".into();
    let _ = cache.input(req, Some(&list)).unwrap();
    assert_eq!(
        cache.input(req, Some(&other)).unwrap(),
        input_of(req, Some(&other)).unwrap()
    );
}
