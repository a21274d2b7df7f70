//! Authorization end to end: Rego policies in the `rego` component judging callers on the
//! Unix socket (users made by the test, the CLI run as them) and over TLS (two client
//! certificates, a bearer token), list filtering, the decision log, fail-closed start-up,
//! reload, and a suite of attempts to reach a handler past the gate.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use berth_tests::{
    Daemon, ensure_user, http_post, import_busybox, parse_http_response, plugin_component,
    raw_exchange, require_root, until_now,
};
use serde_json::{Value, json};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/authz/examples")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}", text(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn denied(out: &Output) -> String {
    let t = text(out);
    assert!(!out.status.success(), "expected a denial, got success: {t}");
    assert!(t.contains("permission denied"), "{t}");
    t
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path.to_str().unwrap().to_owned()
}

fn decisions(d: &Daemon) -> Vec<Value> {
    // The writer thread writes in batches (at most 50 ms apart): the log is read once it has
    // stopped growing for longer than that.
    let read =
        || std::fs::read_to_string(d.data_root.join("authz/decisions.log")).unwrap_or_default();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut text = read();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(150));
        let now = read();
        if now == text || std::time::Instant::now() > deadline {
            break;
        }
        text = now;
    }
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn rpc(d: &Daemon, method: &str, params: Value) -> Value {
    let (_, body) = d.post(
        json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
            .to_string()
            .as_bytes(),
    );
    serde_json::from_str(&body).unwrap()
}

/// Which of the containers `web-a` and `web-b` `user`'s `ps -a` lists.
fn sees(d: &Daemon, user: &str) -> (bool, bool) {
    let ps = ok(&d.cli_as(user, &["ps", "-a", "--format", "json"]));
    (ps.contains("web-a"), ps.contains("web-b"))
}

/// The events in the history `user` is sent (`events --since 1h`, until now).
fn event_history(d: &Daemon, user: &str) -> Vec<Value> {
    ok(&d.cli_as(
        user,
        &[
            "events",
            "--since",
            "1h",
            "--until",
            &until_now(),
            "--format",
            "json",
        ],
    ))
    .lines()
    .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
    .collect()
}

/// `kind name` of each event in the history `user` is sent.
fn events_heard(d: &Daemon, user: &str) -> Vec<String> {
    event_history(d, user)
        .iter()
        .map(|event| {
            format!(
                "{} {}",
                event["type"].as_str().unwrap_or_default(),
                event["attributes"]["name"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

/// Users and groups of the Unix-socket tests.
const ADMIN: &str = "bt-admin";
const ALICE: &str = "bt-alice";
const BOB: &str = "bt-bob";

#[test]
fn unix_users_are_judged_by_name_and_group_and_see_only_their_team() {
    require_root!();
    let Some(rego) = plugin_component("rego.wasm") else {
        return;
    };
    ensure_user(ADMIN, &["bt-admins", "bt-sock"]);
    ensure_user(ALICE, &["bt-team-a", "bt-sock"]);
    ensure_user(BOB, &["bt-team-b", "bt-sock"]);
    let policy_dir = tempfile::tempdir().unwrap();
    let data = write(
        policy_dir.path(),
        "data.json",
        r#"{"admins": ["root"], "admin_groups": ["bt-admins"], "registries": ["127.0.0.1:5000"]}"#,
    );
    let readonly = examples().join("readonly.rego");
    let teams = examples().join("team-labels.rego");

    // The second policy is installed before the chain names it.
    let mut d = Daemon::start_with(&["--socket-group", "bt-sock"]);
    import_busybox(&d, "busybox");
    ok(&d.cli(&[
        "plugin",
        "install",
        "--name",
        "teams",
        rego.to_str().unwrap(),
        &format!("policy={}", teams.display()),
        &format!("data={data}"),
    ]));
    ok(&d.cli(&[
        "create",
        "--name",
        "web-a",
        "-l",
        "team=bt-team-a",
        "busybox",
        "sleep",
        "60",
    ]));
    ok(&d.cli(&[
        "create",
        "--name",
        "web-b",
        "-l",
        "team=bt-team-b",
        "busybox",
        "sleep",
        "60",
    ]));
    // Volumes and networks of each team: their lists are narrowed by the same scope.
    for team in ["a", "b"] {
        let label = format!("team=bt-team-{team}");
        ok(&d.cli(&[
            "volume",
            "create",
            "--label",
            &label,
            &format!("vol-{team}"),
        ]));
        ok(&d.cli(&[
            "network",
            "create",
            "--label",
            &label,
            &format!("net-{team}"),
        ]));
    }
    d.stop();
    d.restart_with(&[
        "--socket-group",
        "bt-sock",
        "--authz-plugins",
        "rego",
        "--authz-plugins",
        "teams",
        "--authz-policy",
        readonly.to_str().unwrap(),
        "--authz-data",
        &data,
    ]);

    // Readers see their own team's containers only, and change nothing.
    assert_eq!(sees(&d, ALICE), (true, false));
    assert_eq!(sees(&d, BOB), (false, true));
    for (user, own, other) in [(ALICE, "a", "b"), (BOB, "b", "a")] {
        for kind in ["volume", "network"] {
            let listed = ok(&d.cli_as(user, &[kind, "ls", "--format", "json"]));
            assert!(
                listed.contains(&format!("{}-{own}", &kind[..3])),
                "{user}: {listed}"
            );
            assert!(
                !listed.contains(&format!("{}-{other}", &kind[..3])),
                "{user}: {listed}"
            );
        }
    }
    // Tests remove the networks they create (root is an admin here).
    ok(&d.cli(&["network", "rm", "net-a", "net-b"]));
    ok(&d.cli_as(ALICE, &["container", "inspect", "web-a"]));
    let t = denied(&d.cli_as(ALICE, &["container", "inspect", "web-b"]));
    assert!(t.contains("teams"), "the denying policy is named: {t}");
    let t = denied(&d.cli_as(ALICE, &["rm", "web-a"]));
    assert!(t.contains("rego"), "{t}");
    denied(&d.cli_as(BOB, &["run", "--rm", "busybox", "true"]));
    // The root of the host and members of bt-admins do everything.
    assert_eq!(sees(&d, ADMIN), (true, true));
    assert_eq!(
        ok(&d.cli_as(ADMIN, &["run", "--rm", "busybox", "echo", "hi"])).trim(),
        "hi"
    );

    // The same team policy without its list scopes: lists are then filtered object by
    // object through the policy's `filter`, with the same result.
    let per_object = write(
        policy_dir.path(),
        "teams-per-object.rego",
        &std::fs::read_to_string(&teams)
            .unwrap()
            .replace("list_scope :=", "unused_scope :="),
    );
    ok(&d.cli(&["plugin", "set", "teams", &format!("policy={per_object}")]));
    assert_eq!(sees(&d, ALICE), (true, false));
    assert_eq!(sees(&d, ADMIN), (true, true));
    // Calls into the teams policy so far, this inspect's own authorization included.
    let policy_calls = |d: &Daemon| -> u64 {
        let inspect: Value =
            serde_json::from_str(&ok(&d.cli(&["plugin", "inspect", "teams"]))).unwrap();
        inspect[0]["calls"]
            .as_u64()
            .unwrap_or_else(|| panic!("{inspect}"))
    };
    let before = policy_calls(&d);
    ok(&d.cli_as(BOB, &["ps", "-a"]));
    // The list's authorize and filter, and the second inspect's authorize.
    assert_eq!(policy_calls(&d) - before, 3);
    ok(&d.cli(&[
        "plugin",
        "set",
        "teams",
        &format!("policy={}", teams.display()),
    ]));
    let before = policy_calls(&d);
    assert_eq!(sees(&d, BOB), (false, true));
    // One call decides a scoped list.
    assert_eq!(policy_calls(&d) - before, 2);

    // Events tell a user only of what their lists show. The team policy states no label
    // scope for the stream, which mixes kinds: its `visible` judges each event's object, so
    // alice hears of her team's container and of images, not of bob's container.
    let heard = events_heard(&d, ALICE);
    assert!(heard.contains(&"container web-a".to_owned()), "{heard:?}");
    assert!(heard.iter().any(|e| e.starts_with("image ")), "{heard:?}");
    assert!(!heard.iter().any(|e| e.contains("web-b")), "{heard:?}");
    let heard = events_heard(&d, ADMIN);
    assert!(heard.contains(&"container web-a".to_owned()), "{heard:?}");
    assert!(heard.contains(&"container web-b".to_owned()), "{heard:?}");
    // A label scope for the stream is checked by berthd on each event's attributes: only
    // events that carry the caller's team are sent, which leaves out the image's.
    let stream_scoped = write(
        policy_dir.path(),
        "teams-stream-scoped.rego",
        &format!(
            "{}\nlist_scope := {{\"team\": input.groups}} if {{\n\tnot admin\n\tinput.method == \"events.subscribe\"\n}}\n",
            std::fs::read_to_string(&teams).unwrap()
        ),
    );
    ok(&d.cli(&["plugin", "set", "teams", &format!("policy={stream_scoped}")]));
    let before = policy_calls(&d);
    let heard = events_heard(&d, ALICE);
    assert!(heard.contains(&"container web-a".to_owned()), "{heard:?}");
    assert!(
        !heard
            .iter()
            .any(|e| e.contains("web-b") || e.starts_with("image ")),
        "{heard:?}"
    );
    // The stream's authorize and the inspect's: no call per event.
    assert_eq!(policy_calls(&d) - before, 2);
    ok(&d.cli(&[
        "plugin",
        "set",
        "teams",
        &format!("policy={}", teams.display()),
    ]));
    ok(&d.cli(&["rm", "web-b"]));

    // Every decision is logged with who, what, on which object, and why.
    let log = decisions(&d);
    let alice_rm = log
        .iter()
        .find(|r| r["method"] == "container.remove" && r["identity"]["unix"]["user"] == ALICE)
        .unwrap_or_else(|| panic!("no decision for alice's rm in {log:?}"));
    assert_eq!(alice_rm["decision"], "deny");
    assert_eq!(alice_rm["resource"]["name"], "web-a");
    assert_eq!(alice_rm["resource"]["labels"]["team"], "bt-team-a");
    assert_eq!(alice_rm["policy"], "rego");
    assert!(alice_rm["reason"].as_str().is_some_and(|r| !r.is_empty()));
    assert!(alice_rm["latency_us"].is_u64());
    assert!(
        alice_rm["identity"]["unix"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g == "bt-team-a"),
        "{alice_rm}"
    );
    assert!(log.iter().any(|r| r["decision"] == "allow"
        && r["method"] == "container.create"
        && r["identity"]["unix"]["user"] == ADMIN));

    // Work inside one's own container, with the read-only policy swapped for one that lets
    // users act: the calls that follow an exec's start or a copy's start name a session, not
    // the container, and the team policy judges them by the session's container.
    ok(&d.cli(&[
        "plugin",
        "set",
        "rego",
        &format!("policy={}", examples().join("no-privileged.rego").display()),
    ]));
    ok(&d.cli_as(ALICE, &["start", "web-a"]));
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        shared.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let note = write(shared.path(), "note.txt", "from alice\n");
    // `exec -i` sends its (empty) stdin through exec_input, `cp` its archive through
    // archive_put_data.
    assert_eq!(ok(&d.cli_as(ALICE, &["exec", "-i", "web-a", "cat"])), "");
    ok(&d.cli_as(ALICE, &["cp", &note, "web-a:/tmp/note.txt"]));
    assert_eq!(
        ok(&d.cli_as(ALICE, &["exec", "web-a", "cat", "/tmp/note.txt"])),
        "from alice\n"
    );
    denied(&d.cli_as(BOB, &["exec", "web-a", "true"]));

    // What a call uses besides its target is judged too: a container mounts only its team's
    // volumes, a network connects only its team's containers.
    ok(&d.cli_as(
        ALICE,
        &["volume", "create", "--label", "team=bt-team-a", "data-a"],
    ));
    let mount_a = |user: &str, team: &str| {
        d.cli_as(
            user,
            &[
                "create",
                "--name",
                "mounts-a",
                "-l",
                team,
                "-v",
                "data-a:/data",
                "busybox",
                "true",
            ],
        )
    };
    let t = denied(&mount_a(BOB, "team=bt-team-b"));
    assert!(t.contains("volume data-a belongs to another team"), "{t}");
    ok(&mount_a(ALICE, "team=bt-team-a"));
    ok(&d.cli_as(
        BOB,
        &["network", "create", "--label", "team=bt-team-b", "net-b"],
    ));
    let t = denied(&d.cli_as(BOB, &["network", "connect", "net-b", "web-a"]));
    assert!(t.contains("container web-a belongs to another team"), "{t}");
    ok(&d.cli_as(BOB, &["network", "rm", "net-b"]));
    ok(&d.cli_as(ALICE, &["rm", "mounts-a"]));
    ok(&d.cli_as(ALICE, &["volume", "rm", "data-a"]));

    // A policy in the chain can be neither disabled nor removed through the API.
    let t = text(&d.cli(&["plugin", "disable", "teams"]));
    assert!(t.contains("authorization chain"), "{t}");
    ok(&d.cli(&["rm", "-f", "web-a"]));
}

#[test]
fn a_broken_or_missing_policy_denies_everything_but_roots_ping_until_repaired() {
    require_root!();
    if plugin_component("rego.wasm").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let policy = write(
        dir.path(),
        "p.rego",
        "package berth.authz\nallow := tru e\n",
    );
    // berthd starts although its policy does not compile.
    let d = Daemon::start_with(&["--authz-plugins", "rego", "--authz-policy", &policy]);
    let refused = rpc(&d, "system.version", json!({}));
    assert_eq!(refused["error"]["code"], -32023, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("not running"), "{message}");
    assert_eq!(rpc(&d, "system.ping", json!({}))["result"], "OK");
    assert!(
        d.log_text().contains("p.rego"),
        "the parse error names the file"
    );

    // Repaired on disk and reloaded with SIGHUP: no restart.
    write(
        dir.path(),
        "p.rego",
        "package berth.authz\nimport rego.v1\ndefault allow := false\nallow if input.method != \"system.df\"\nreason := \"df is off\" if input.method == \"system.df\"\n",
    );
    berth_tests::signal(d.pid(), libc::SIGHUP);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while rpc(&d, "system.version", json!({})).get("result").is_none() {
        assert!(std::time::Instant::now() < deadline, "{}", d.log_text());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let df = rpc(&d, "system.df", json!({}));
    assert!(
        df["error"]["message"]
            .as_str()
            .unwrap()
            .contains("df is off"),
        "{df}"
    );

    // A policy that does not parse is refused with its error; the one in force stays.
    let bad = write(dir.path(), "bad.rego", "package berth.authz\nallow if {\n");
    let out = d.cli(&["plugin", "set", "rego", &format!("policy={bad}")]);
    let t = text(&out);
    assert!(!out.status.success() && t.contains("bad.rego"), "{t}");
    assert!(rpc(&d, "system.version", json!({})).get("result").is_some());

    // A chain naming a plugin that does not exist fails closed too.
    let d2 = Daemon::start_with(&["--authz-plugins", "nosuch"]);
    let refused = rpc(&d2, "container.list", json!({}));
    assert_eq!(refused["error"]["code"], -32023, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nosuch"),
        "{refused}"
    );
    assert_eq!(rpc(&d2, "system.ping", json!({}))["result"], "OK");
}

/// berthd whose socket group `bt-sock` may call it, judged by the Rego file `policy`, with a
/// busybox image.
fn judged_by(policy: &str) -> Daemon {
    let d = Daemon::start_with(&[
        "--socket-group",
        "bt-sock",
        "--authz-plugins",
        "rego",
        "--authz-policy",
        policy,
    ]);
    import_busybox(&d, "busybox");
    d
}

/// Lets everyone do everything, except a container call whose params do not name the
/// container the policy is shown by its full id.
const PINNED_POLICY: &str = r#"package berth.authz
import rego.v1

default allow := false
allow if input.target.kind != "container"
allow if {
	input.target.kind == "container"
	not input.params.id
}
allow if {
	input.target.kind == "container"
	input.params.id == input.target.id
}
"#;

#[test]
fn those_a_policy_judges_cannot_replace_it_read_host_files_or_swap_its_objects() {
    require_root!();
    let Some(rego) = plugin_component("rego.wasm") else {
        return;
    };
    ensure_user(ALICE, &["bt-team-a", "bt-sock"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let policy = write(dir.path(), "pinned.rego", PINNED_POLICY);
    let allow_all = write(
        dir.path(),
        "all.rego",
        "package berth.authz\nallow := true\n",
    );
    let d = judged_by(&policy);
    let id = ok(&d.cli(&["create", "--name", "web-a", "busybox", "true"]));
    let id = id.trim();

    // The handler gets the params the policy saw, with the container named by its id
    // whatever key the caller gave: it acts on the object that was judged.
    for key in ["web-a", &id[..8], id] {
        let inspect = ok(&d.cli_as(ALICE, &["container", "inspect", key]));
        assert!(inspect.contains(id), "{inspect}");
    }
    // Prefixes are hex: `LIKE` wildcards match nothing (with one container, they named it).
    for key in ["%", "_", ""] {
        let v = rpc(&d, "container.inspect", json!({ "id": key }));
        assert!(v.get("error").is_some(), "{key:?}: {v}");
    }
    // A full id names its container even where another's name is spelled the same.
    let shadow = ok(&d.cli(&["create", "--name", id, "busybox", "true"]));
    let inspect: Value = serde_json::from_str(&ok(&d.cli(&["container", "inspect", id]))).unwrap();
    assert_eq!(inspect[0]["name"], "web-a", "{inspect}");

    // A caller the policy lets manage plugins still cannot change the policy judging it,
    // nor have berthd read a host file as root through a policy's parse error.
    let t = denied(&d.cli_as(
        ALICE,
        &["plugin", "set", "rego", &format!("policy={allow_all}")],
    ));
    assert!(t.contains("only root on berthd's Unix socket"), "{t}");
    denied(&d.cli_as(ALICE, &["plugin", "set", "rego", "engine=interp"]));
    // Nor grant a plugin what only the host's owner may (reaching addresses from berthd's
    // network namespace).
    let t = denied(&d.cli_as(
        ALICE,
        &[
            "plugin",
            "set",
            "mine",
            "berth.allow-connect=tcp:127.0.0.1:6379",
        ],
    ));
    assert!(t.contains("`berth.*`"), "{t}");
    let t = denied(&d.cli_as(
        ALICE,
        &[
            "plugin",
            "install",
            "--name",
            "mine",
            rego.to_str().unwrap(),
            "policy=/etc/shadow",
        ],
    ));
    assert!(!t.contains("root:"), "a host file leaked: {t}");
    let t = text(&d.cli_as(ALICE, &["plugin", "inspect", "mine"]));
    assert!(t.contains("no such plugin"), "{t}");
    let log = decisions(&d);
    let refusal = log
        .iter()
        .find(|r| r["method"] == "plugin.set" && r["identity"]["unix"]["user"] == ALICE)
        .unwrap_or_else(|| panic!("no decision for alice's plugin set in {log:?}"));
    assert_eq!(refusal["decision"], "deny");
    assert_eq!(refusal["policy"], "berthd");
    // Root on the Unix socket repairs and changes policies as before.
    ok(&d.cli(&["plugin", "set", "rego", &format!("policy={allow_all}")]));
    denied(&d.cli_as(ALICE, &["plugin", "set", "rego", "engine=interp"]));
    ok(&d.cli(&["rm", "web-a", shadow.trim()]));
}

/// A JSON-RPC call over berthd's Unix socket as `user` (python3, run by `setpriv` with the
/// user's groups); the reply.
fn rpc_as(d: &Daemon, user: &str, method: &str, params: Value) -> Value {
    const CLIENT: &str = r#"
import socket, sys
body = sys.argv[2].encode()
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
reply = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    reply += chunk
sys.stdout.buffer.write(reply)
"#;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    let gid = Command::new("id")
        .args(["-g", user])
        .output()
        .unwrap()
        .stdout;
    let out = Command::new("setpriv")
        .arg(format!("--reuid={user}"))
        .arg(format!("--regid={}", String::from_utf8_lossy(&gid).trim()))
        .arg("--init-groups")
        // Debian's python3 (CI installs it): root's PATH may name one the user cannot run.
        .args(["/usr/bin/python3", "-c", CLIENT])
        .arg(&d.socket)
        .arg(&body)
        .output()
        .expect("run python3 as the user");
    assert!(out.status.success(), "{}", text(&out));
    let (_, body) = parse_http_response(&out.stdout).unwrap();
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{body}: {e}"))
}

/// Lets everyone do everything, but for what the test shows berthd puts to it: a tag may not
/// take a name an image already holds, and volumes of team b are root's.
const WHAT_IT_TOUCHES_POLICY: &str = r#"package berth.authz
import rego.v1

default allow := false
allow if input.user == "root"
allow if not input.target.kind in {"image", "volume"}
allow if {
	input.target.kind == "image"
	input.method != "image.tag"
}
allow if {
	input.method == "image.tag"
	input.target.name == input.params.source
}
allow if {
	input.method == "image.tag"
	input.target.id == null
}
allow if {
	input.target.kind == "volume"
	object.get(input.target.labels, "team", "") != "b"
}
reason := sprintf("%s %s is not yours", [input.target.kind, input.target.name]) if not allow
"#;

#[test]
fn sessions_tags_and_existing_volumes_are_judged_on_what_they_touch() {
    require_root!();
    if plugin_component("rego.wasm").is_none() {
        return;
    }
    ensure_user(ALICE, &["bt-team-a", "bt-sock"]);
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "touches.rego", WHAT_IT_TOUCHES_POLICY);
    let d = judged_by(&policy);

    // A tag that would move a name off the image holding it is judged on that image too.
    ok(&d.cli_as(ALICE, &["tag", "busybox", "alice-tools:1"]));
    let t = denied(&d.cli_as(ALICE, &["tag", "busybox", "alice-tools:1"]));
    assert!(t.contains("image alice-tools:1 is not yours"), "{t}");
    let t = denied(&d.cli_as(ALICE, &["tag", "alice-tools:1", "busybox"]));
    assert!(t.contains("image busybox is not yours"), "{t}");

    // Creating a volume that exists answers with that volume: it is judged, not the labels
    // the caller asked for.
    ok(&d.cli(&["volume", "create", "--label", "team=b", "vol-b"]));
    let t = denied(&d.cli_as(ALICE, &["volume", "create", "--label", "team=a", "vol-b"]));
    assert!(t.contains("volume vol-b is not yours"), "{t}");
    ok(&d.cli_as(ALICE, &["volume", "create", "--label", "team=a", "vol-a"]));

    // The policy lets alice act on any container, but an exec session is its opener's: its
    // id is in the events, and alice cannot type into root's.
    ok(&d.cli(&["run", "-d", "--name", "held", "busybox", "sleep", "300"]));
    let mut exec = Command::new(berth_tests::bin("berth"))
        .args(["-H", &d.host(), "exec", "-i", "held", "cat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let exec_id = loop {
        let events = event_history(&d, ALICE);
        let found = events
            .iter()
            .find_map(|event| event["attributes"]["execID"].as_str().map(str::to_owned));
        if let Some(id) = found {
            break id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exec event: {events:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let input = |data: &str| json!({"exec_id": exec_id, "data": data});
    let resize = json!({"exec_id": exec_id, "rows": 1, "cols": 1});
    for (method, params) in [
        ("container.exec_input", input("ZWNobyBtaW5lCg==")),
        ("container.exec_resize", resize),
    ] {
        let v = rpc_as(&d, ALICE, method, params);
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("belongs to the caller who opened it"),
            "{method}: {v}"
        );
    }
    let log = decisions(&d);
    let refusal = log
        .iter()
        .find(|r| r["method"] == "container.exec_input" && r["identity"]["unix"]["user"] == ALICE)
        .unwrap_or_else(|| panic!("no decision for alice's exec_input in {log:?}"));
    assert_eq!(refusal["decision"], "deny");
    assert_eq!(refusal["policy"], "berthd");
    // Its opener's input still reaches it.
    {
        use std::io::Write;
        let mut stdin = exec.stdin.take().unwrap();
        stdin.write_all(b"from root\n").unwrap();
    }
    let out = exec.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from root\n");
    ok(&d.cli(&["rm", "-f", "held"]));
}

const BYPASS_POLICY: &str = r#"package berth.authz
import rego.v1

# Everything but these, for everyone (root included: only system.ping is exempt).
refused := {"container.remove", "container.kill", "container.stop", "container.logs_follow", "container.pause", "container.restart"}

default allow := false
allow if not input.method in refused
reason := sprintf("%s is refused in this test", [input.method]) if input.method in refused
"#;

fn running(d: &Daemon, name: &str) -> bool {
    let v = rpc(d, "container.inspect", json!({"id": name}));
    assert!(v.get("result").is_some(), "{v}");
    v["result"]["state"]["status"] == "running"
}

#[test]
fn no_encoding_size_batch_or_naming_trick_reaches_a_handler_unchecked() {
    require_root!();
    if plugin_component("rego.wasm").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "p.rego", BYPASS_POLICY);
    let d = Daemon::start_with(&[
        "--authz-plugins",
        "rego",
        "--authz-policy",
        &policy,
        "--max-request-body-size",
        "65536",
    ]);
    import_busybox(&d, "busybox");
    ok(&d.cli(&["run", "-d", "--name", "victim", "busybox", "sleep", "600"]));
    assert!(running(&d, "victim"));

    let denied_code = |v: &Value| v["error"]["code"] == -32023;
    // The plain call is denied, with the policy's reason.
    let v = rpc(&d, "container.kill", json!({"id": "victim"}));
    assert!(denied_code(&v), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("refused in this test")
    );
    // Positional params are normalized, then judged.
    let v = rpc(&d, "container.kill", json!(["victim", "KILL"]));
    assert!(denied_code(&v), "{v}");

    // Empty body, and an empty object.
    for body in [&b""[..], b"{}", b"[]", b"null", b" "] {
        let (_, resp) = d.post(body);
        assert!(resp.contains("\"error\""), "{body:?}: {resp}");
    }
    // Oversized body holding a denied call: refused whole, never cut to fit.
    let pad = "x".repeat(70_000);
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"container.kill","params":{{"id":"victim","signal":"KILL"}},"pad":"{pad}"}}"#
    );
    let (status, resp) = d.post(big.as_bytes());
    assert_eq!(status, 413, "{resp}");
    // The same, announced small but sent chunked.
    let mut req = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for chunk in big.as_bytes().chunks(8192) {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let (status, resp) = parse_http_response(&raw_exchange(&d.socket, &req).unwrap()).unwrap();
    assert_eq!(status, 413, "{resp}");
    // A small chunked request is judged like any other.
    let small = r#"{"jsonrpc":"2.0","id":1,"method":"container.kill","params":{"id":"victim"}}"#;
    let mut req = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    req.extend_from_slice(format!("{:x}\r\n{small}\r\n0\r\n\r\n", small.len()).as_bytes());
    let (_, resp) = parse_http_response(&raw_exchange(&d.socket, &req).unwrap()).unwrap();
    assert!(resp.contains("-32023"), "{resp}");

    // A batch mixing allowed and denied calls: each entry judged on its own.
    let (_, resp) = d.post(
        json!([
            {"jsonrpc": "2.0", "id": 1, "method": "system.version"},
            {"jsonrpc": "2.0", "id": 2, "method": "container.remove", "params": {"id": "victim", "force": true}},
            {"jsonrpc": "2.0", "method": "container.kill", "params": {"id": "victim"}},
            {"jsonrpc": "2.0", "id": 3, "method": "container.list"}
        ])
        .to_string()
        .as_bytes(),
    );
    let answers: Vec<Value> = serde_json::from_str(&resp).unwrap();
    let by_id = |id: i64| answers.iter().find(|a| a["id"] == id).unwrap().clone();
    assert!(by_id(1).get("result").is_some(), "{resp}");
    assert!(denied_code(&by_id(2)), "{resp}");
    assert!(by_id(3).get("result").is_some(), "{resp}");
    // A denied call sent as a notification does nothing either.
    let (status, _) =
        d.post(br#"{"jsonrpc":"2.0","method":"container.stop","params":{"id":"victim"}}"#);
    assert_eq!(status, 204);

    // Duplicate keys: in the request object, in params, and a param under both spellings.
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"method":"system.ping","method":"container.kill","params":{"id":"victim"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"container.inspect","params":{"id":"nothing","id":"victim"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"container.remove","params":{"id":"victim","force":false,"force":true}}"#,
    ] {
        let (_, resp) = d.post(body.as_bytes());
        let v: Value = serde_json::from_str(&resp).unwrap();
        assert!(v.get("error").is_some(), "{body}: {resp}");
        assert!(v.get("result").is_none(), "{body}: {resp}");
    }
    // Method names that are not exactly a method: never routed anywhere.
    for name in [
        "Container.kill",
        "container.Kill",
        " container.kill",
        "container.kill ",
        "container.kill\u{0}",
        "container..kill",
        "container.kill\n",
        "CONTAINER.KILL",
    ] {
        let v = rpc(&d, name, json!({"id": "victim"}));
        assert!(
            v["error"]["code"] == -32601 || denied_code(&v),
            "{name:?}: {v}"
        );
    }
    // Unknown extra params are refused before anything runs.
    let v = rpc(
        &d,
        "container.remove",
        json!({"id": "victim", "force": true, "everything": true}),
    );
    assert_eq!(v["error"]["code"], -32602, "{v}");

    // Over the WebSocket: a denied call and a denied subscription, message by message.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use berth_api::jsonrpsee::core::client::{ClientT, SubscriptionClientT};
        use berth_api::jsonrpsee::rpc_params;
        let client = d.client().await;
        let v: Result<Value, _> = client
            .request("container.kill", rpc_params!["victim"])
            .await;
        let e = v.unwrap_err().to_string();
        assert!(e.contains("refused in this test"), "{e}");
        let sub: Result<berth_api::jsonrpsee::core::client::Subscription<Value>, _> = client
            .subscribe(
                "container.logs_follow",
                rpc_params!["victim"],
                "container.logs_unfollow",
            )
            .await;
        let e = match sub {
            Ok(_) => panic!("the subscription was opened"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("refused in this test"), "{e}");
        let ok: Value = client
            .request("system.version", rpc_params![])
            .await
            .unwrap();
        assert!(ok.is_object());
    });

    // After all of that the container was never touched.
    assert!(running(&d, "victim"), "{}", d.log_text());
    let log = decisions(&d);
    assert!(
        log.iter()
            .filter(|r| r["method"] == "container.kill" && r["decision"] == "deny")
            .count()
            >= 4,
        "{log:?}"
    );
    assert!(
        log.iter()
            .all(|r| r["method"] != "container.kill" || r["decision"] == "deny")
    );
    // Cleanup goes around the policy: the test's own daemon without it.
    drop(d);
}

fn tcp_listener(d: &Daemon) -> String {
    let (_, body) = http_post(
        &d.socket,
        br#"{"jsonrpc":"2.0","id":1,"method":"system.info"}"#,
    )
    .unwrap();
    let info: Value = serde_json::from_str(&body).unwrap();
    info["result"]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|l| l.as_str()?.strip_prefix("tcp://").map(str::to_owned))
        .expect("a tcp listener")
}

#[test]
fn tls_callers_are_told_apart_by_certificate_and_token() {
    require_root!();
    if plugin_component("rego.wasm").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    berth_tests::test_certificates(&certs, &["alice", "bob"]);
    let c = |f: &str| certs.join(f).to_str().unwrap().to_owned();
    let secret = "tok-0123456789abcdef";
    let tokens = write(
        dir.path(),
        "tokens",
        &format!(
            "# test robots\nci sha256:{}\n",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(secret.as_bytes()))
        ),
    );
    let data = write(
        dir.path(),
        "data.json",
        r#"{"admins": ["root", "alice"], "admin_groups": []}"#,
    );
    let readonly = examples().join("readonly.rego");
    let d = Daemon::start_with(&[
        "--listen",
        "tcp://127.0.0.1:0",
        "--tls-cert",
        &c("server-cert.pem"),
        "--tls-key",
        &c("server-key.pem"),
        "--tls-ca",
        &c("ca.pem"),
        "--tokens-file",
        &tokens,
        "--authz-plugins",
        "rego",
        "--authz-policy",
        readonly.to_str().unwrap(),
        "--authz-data",
        &data,
    ]);
    let host = format!("tcp://{}", tcp_listener(&d));
    let as_cert = |who: &str, args: &[&str]| {
        let mut cmd = Command::new(berth_tests::bin("berth"));
        cmd.args(["-H", &host, "--tlscacert", &c("ca.pem")])
            .args(["--tlscert", &c(&format!("{who}-cert.pem"))])
            .args(["--tlskey", &c(&format!("{who}-key.pem"))])
            .args(args);
        berth_tests::output_with_timeout(cmd, std::time::Duration::from_secs(60))
    };
    // alice is an admin by her certificate's CN, bob only reads.
    ok(&as_cert("alice", &["network", "create", "tls-net"]));
    ok(&as_cert("bob", &["network", "ls"]));
    denied(&as_cert("bob", &["network", "rm", "tls-net"]));
    ok(&as_cert("alice", &["network", "rm", "tls-net"]));
    // A bearer token names the caller; a wrong one is refused before any call.
    let with_token = |token: &str, args: &[&str]| {
        let mut cmd = Command::new(berth_tests::bin("berth"));
        cmd.env("BERTH_TOKEN", token)
            .args(["-H", &host, "--tlscacert", &c("ca.pem")])
            .args(args);
        berth_tests::output_with_timeout(cmd, std::time::Duration::from_secs(60))
    };
    ok(&with_token(secret, &["version"]));
    denied(&with_token(secret, &["network", "create", "nope"]));
    assert!(!with_token("wrong", &["version"]).status.success());
    // Without certificate or token: nothing.
    let mut cmd = Command::new(berth_tests::bin("berth"));
    cmd.args(["-H", &host, "--tlscacert", &c("ca.pem"), "version"]);
    let out = berth_tests::output_with_timeout(cmd, std::time::Duration::from_secs(60));
    assert!(!out.status.success(), "{}", text(&out));
    // Plain TCP to the TLS port gets nowhere either.
    let mut cmd = Command::new(berth_tests::bin("berth"));
    cmd.args(["-H", &host, "version"]);
    let out = berth_tests::output_with_timeout(cmd, std::time::Duration::from_secs(60));
    assert!(!out.status.success(), "{}", text(&out));

    let log = decisions(&d);
    let bob = log
        .iter()
        .find(|r| r["identity"]["tls"]["subject_cn"] == "bob" && r["decision"] == "deny")
        .unwrap_or_else(|| panic!("{log:?}"));
    assert_eq!(bob["transport"], "tcp-tls");
    assert!(
        bob["remote_address"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert_eq!(
        bob["identity"]["tls"]["fingerprint_sha256"]
            .as_str()
            .unwrap()
            .len(),
        64
    );
    assert!(log.iter().any(|r| r["identity"]["token"]["name"] == "ci"));
    assert!(
        log.iter().all(|r| !r.to_string().contains(secret)),
        "the secret never reaches the log"
    );
}

#[test]
fn tcp_without_tls_needs_the_insecure_flag() {
    let d = Daemon::start();
    let out = d.run_second(&["--listen", "tcp://127.0.0.1:0"]);
    let t = text(&out);
    assert!(!out.status.success() && t.contains("insecure-tcp"), "{t}");
}

#[tokio::test]
async fn a_token_revoked_on_sighup_ends_the_websocket_it_opened_and_its_subscriptions() {
    use jsonrpsee::core::client::{ClientT, Subscription, SubscriptionClientT};
    use jsonrpsee::rpc_params;
    use jsonrpsee::ws_client::{HeaderMap, HeaderValue, WsClientBuilder};
    let dir = tempfile::tempdir().unwrap();
    let secret = "tok-revoke-0123456789abcdef";
    let kept_secret = "tok-kept-0123456789abcdef";
    let line = |name: &str, secret: &str| {
        let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(secret.as_bytes()));
        format!("{name} sha256:{digest}\n")
    };
    let tokens = write(
        dir.path(),
        "tokens",
        &(line("ci", secret) + &line("kept", kept_secret)),
    );
    let d = Daemon::start_with(&[
        "--listen",
        "tcp://127.0.0.1:0",
        "--insecure-tcp",
        "--tokens-file",
        &tokens,
    ]);
    let connect = async |secret: &str| {
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {secret}")).unwrap(),
        );
        WsClientBuilder::default()
            .set_headers(headers)
            .build(format!("ws://{}/", tcp_listener(&d)))
            .await
            .expect("WebSocket with a token")
    };
    let client = connect(secret).await;
    let kept = connect(kept_secret).await;
    let mut events: Subscription<Value> = client
        .subscribe("events.subscribe", rpc_params![], "events.unsubscribe")
        .await
        .expect("events over the token's WebSocket");
    for c in [&client, &kept] {
        let version: Result<Value, _> = c.request("system.version", rpc_params![]).await;
        assert!(version.is_ok(), "{version:?}");
    }

    // The token leaves the file; SIGHUP reloads it. The socket opened with it is closed, and
    // its subscription with it (a call that slips in first is refused as revoked).
    write(dir.path(), "tokens", &line("kept", kept_secret));
    berth_tests::signal(d.pid(), libc::SIGHUP);
    let ended = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        loop {
            match events.next().await {
                Some(Ok(_event)) => continue,
                end => break end,
            }
        }
    })
    .await;
    assert!(
        matches!(ended, Ok(None) | Ok(Some(Err(_)))),
        "the subscription outlived its revoked token: {ended:?}\n{}",
        d.log_text()
    );
    match client
        .request::<Value, _>("system.version", rpc_params![])
        .await
    {
        Ok(v) => panic!("the revoked token still works on its WebSocket: {v}"),
        Err(e) => {
            let e = e.to_string();
            assert!(e.contains("revoked") || !client.is_connected(), "{e}");
        }
    }
    // A connection whose token stays keeps working.
    let version: Result<Value, _> = kept.request("system.version", rpc_params![]).await;
    assert!(version.is_ok(), "{version:?}");
}
