//! Networks end to end, on loopback and namespaces only: containers on a user network
//! reaching each other by name and alias, the default bridge without names, published
//! ports from the host, `none`, `host` and internal networks, connect/disconnect, a
//! hostile network driver confined to its scope, and networking across a daemon restart.

use std::io::{Read, Write};
use std::time::Duration;

use berth_tests::{Daemon, import_busybox_with, plugin_component, require_root};

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(d: &Daemon, args: &[&str]) -> String {
    let o = d.cli(args);
    assert!(
        o.status.success(),
        "berth {args:?} failed: {}{}",
        out(&o),
        err(&o)
    );
    out(&o)
}

fn fails(d: &Daemon, args: &[&str]) -> String {
    let o = d.cli(args);
    assert!(
        !o.status.success(),
        "berth {args:?} should fail: {}",
        out(&o)
    );
    err(&o)
}

/// A busybox image whose /www/index.html says `page`, exposing port 80.
fn web_image(d: &Daemon) {
    import_busybox_with(d, "web", &["EXPOSE 80"]);
}

/// Serves `text` from a fresh directory: `-v DIR:/www`.
fn site(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("index.html"), text).expect("page");
    dir
}

/// GET / on 127.0.0.1:port from the host, retried while the server starts.
fn http_get(port: u16) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            Ok(body)
        })();
        match attempt {
            Ok(body) if body.contains("200") => return body,
            other => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no answer on 127.0.0.1:{port}: {other:?}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn host_port(d: &Daemon, container: &str, port: &str) -> u16 {
    let line = ok(d, &["port", container, port]);
    line.trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("bad port line {line:?}"))
}

fn links() -> String {
    let o = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("ip");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn user_networks_default_bridge_ports_none_host_and_internal() {
    require_root!();
    let d = Daemon::start();
    web_image(&d);
    let www = site("hello from web\n");
    let volume = format!("{}:/www", www.path().display());

    // The default network exists, on this daemon's bridge.
    let nets = ok(&d, &["network", "ls"]);
    assert!(nets.contains("bridge"), "{nets}");
    assert!(links().contains(&format!(": {}:", d.bridge)), "{}", links());

    // A user network: containers reach each other by name and alias.
    let appnet = ok(&d, &["network", "create", "appnet"]).trim().to_owned();
    // Names are compared exactly: one that is also the start of appnet's id is free.
    let prefix = &appnet[..4];
    ok(&d, &["network", "create", prefix]);
    ok(&d, &["network", "rm", prefix]);
    assert!(ok(&d, &["network", "ls"]).contains("appnet"));
    ok(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "server",
            "--network",
            "appnet",
            "--network-alias",
            "api",
            "-v",
            &volume,
            "web",
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/www",
        ],
    );
    for name in ["server", "api"] {
        let got = ok(
            &d,
            &[
                "run",
                "--rm",
                "--network",
                "appnet",
                "web",
                "wget",
                "-qO-",
                &format!("http://{name}/"),
            ],
        );
        assert_eq!(got, "hello from web\n", "by {name}");
    }
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&d, &["container", "inspect", "server"])).expect("json");
    let inspect = if inspect.is_array() {
        inspect[0].clone()
    } else {
        inspect
    };
    let ip = inspect["network_settings"]["networks"]["appnet"]["ipv4_address"]
        .as_str()
        .expect("address")
        .to_owned();
    assert!(ip.starts_with("172.21."), "{ip}");

    // The default bridge: /etc/hosts has the container's own address, names do not resolve.
    let hosts = ok(
        &d,
        &["run", "--rm", "--name", "plain", "web", "cat", "/etc/hosts"],
    );
    assert!(hosts.contains("172.20."), "{hosts}");
    ok(
        &d,
        &[
            "run", "-d", "--name", "other", "-v", &volume, "web", "httpd", "-f", "-p", "80", "-h",
            "/www",
        ],
    );
    let o = d.cli(&[
        "run",
        "--rm",
        "web",
        "wget",
        "-T",
        "2",
        "-qO-",
        "http://other/",
    ]);
    assert!(!o.status.success(), "default bridge must not resolve names");
    // Networks are isolated from each other.
    let server_ip = ip.split('/').next().expect("ip").to_owned();
    let o = d.cli(&[
        "run",
        "--rm",
        "web",
        "wget",
        "-T",
        "2",
        "-qO-",
        &format!("http://{server_ip}/"),
    ]);
    assert!(!o.status.success(), "bridge reached appnet: {}", out(&o));

    // Published ports answer on the host: fixed, ephemeral and -P.
    ok(
        &d,
        &[
            "run", "-d", "--name", "pub", "-p", "80", "-v", &volume, "web", "httpd", "-f", "-p",
            "80", "-h", "/www",
        ],
    );
    let port = host_port(&d, "pub", "80");
    assert!(http_get(port).contains("hello from web"));
    ok(
        &d,
        &[
            "run", "-d", "--name", "puball", "-P", "-v", &volume, "web", "httpd", "-f", "-p", "80",
            "-h", "/www",
        ],
    );
    let port_all = host_port(&d, "puball", "80/tcp");
    assert!(http_get(port_all).contains("hello from web"));
    // From a container through the gateway (DNAT, and hairpin NAT back into the bridge).
    let gateway = inspect["network_settings"]["networks"]["appnet"]["gateway"]
        .as_str()
        .map(str::to_owned);
    assert!(gateway.is_some());
    let pub_inspect: serde_json::Value =
        serde_json::from_str(&ok(&d, &["container", "inspect", "pub"])).expect("json");
    let pub_inspect = if pub_inspect.is_array() {
        pub_inspect[0].clone()
    } else {
        pub_inspect
    };
    let bridge_gateway = pub_inspect["network_settings"]["networks"]["bridge"]["gateway"]
        .as_str()
        .expect("gateway")
        .to_owned();
    let got = ok(
        &d,
        &[
            "run",
            "--rm",
            "web",
            "wget",
            "-qO-",
            &format!("http://{bridge_gateway}:{port}/"),
        ],
    );
    assert_eq!(got, "hello from web\n", "through the gateway");
    // From the host on one of its own non-loopback addresses, where it has one.
    let addrs = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .expect("ip");
    let own = String::from_utf8_lossy(&addrs.stdout)
        .lines()
        .filter(|l| !l.contains(" berth"))
        .find_map(|l| {
            l.split_whitespace()
                .skip_while(|w| *w != "inet")
                .nth(1)
                .and_then(|a| a.split('/').next())
                .map(str::to_owned)
        });
    if let Some(own) = own {
        let mut s = std::net::TcpStream::connect((own.as_str(), port)).expect("connect");
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("send");
        let mut body = String::new();
        s.read_to_string(&mut body).expect("read");
        assert!(body.contains("hello from web"), "via {own}: {body}");
    }
    // A taken host port is refused with the port named, and the container is not left running.
    let taken = format!("{port}:80");
    let e = fails(
        &d,
        &[
            "run", "-d", "--name", "clash", "-p", &taken, "web", "sleep", "30",
        ],
    );
    assert!(e.contains(&port.to_string()), "{e}");

    // --network none: only lo. --network host: the host's interfaces.
    let none = ok(
        &d,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "web",
            "ip",
            "-o",
            "link",
        ],
    );
    assert_eq!(none.lines().count(), 1, "{none}");
    assert!(none.contains(": lo: <LOOPBACK,UP"), "{none}");
    let host = ok(
        &d,
        &[
            "run",
            "--rm",
            "--network",
            "host",
            "web",
            "ip",
            "-o",
            "link",
        ],
    );
    assert!(host.contains(&d.bridge), "{host}");
    assert!(
        fails(
            &d,
            &[
                "run",
                "--rm",
                "--network",
                "none",
                "-p",
                "80",
                "web",
                "true"
            ]
        )
        .contains("published ports need a network")
    );
    assert!(fails(&d, &["run", "--rm", "--network", "nosuch", "web", "true"]).contains("nosuch"));

    // --add-host and --dns reach the container's files.
    let files = ok(
        &d,
        &[
            "run",
            "--rm",
            "--add-host",
            "db:10.9.9.9",
            "--dns",
            "10.1.1.1",
            "web",
            "cat",
            "/etc/hosts",
            "/etc/resolv.conf",
        ],
    );
    assert!(files.contains("10.9.9.9\tdb"), "{files}");
    assert!(files.contains("nameserver 10.1.1.1"), "{files}");

    // An internal network has no default route and no published ports.
    ok(&d, &["network", "create", "--internal", "inside"]);
    let routes = ok(
        &d,
        &["run", "--rm", "--network", "inside", "web", "ip", "route"],
    );
    assert!(!routes.contains("default"), "{routes}");
    assert!(
        fails(
            &d,
            &[
                "run",
                "--rm",
                "--network",
                "inside",
                "-p",
                "80",
                "web",
                "true"
            ]
        )
        .contains("internal")
    );

    // connect/disconnect a running container.
    ok(
        &d,
        &["network", "connect", "--alias", "late", "appnet", "other"],
    );
    let got = ok(
        &d,
        &[
            "run",
            "--rm",
            "--network",
            "appnet",
            "web",
            "wget",
            "-qO-",
            "http://late/",
        ],
    );
    assert_eq!(got, "hello from web\n");
    ok(&d, &["network", "disconnect", "appnet", "other"]);
    let o = d.cli(&[
        "run",
        "--rm",
        "--network",
        "appnet",
        "web",
        "wget",
        "-T",
        "2",
        "-qO-",
        "http://late/",
    ]);
    assert!(
        !o.status.success(),
        "disconnected container still reachable"
    );

    // A network with containers cannot go; the default never can.
    assert!(fails(&d, &["network", "rm", "appnet"]).contains("server"));
    assert!(fails(&d, &["network", "rm", "bridge"]).contains("cannot be removed"));
    ok(&d, &["rm", "-f", "server", "other", "pub", "puball"]);
    ok(&d, &["network", "rm", "appnet", "inside"]);
    assert_eq!(ok(&d, &["network", "ls", "-q"]).lines().count(), 1);
}

#[test]
fn a_hostile_network_driver_touches_only_what_it_made() {
    require_root!();
    let Some(wasm) = plugin_component("fixtures/netescape.wasm") else {
        return;
    };
    let d = Daemon::start();
    let before = links();
    ok(
        &d,
        &[
            "plugin",
            "install",
            "--name",
            "netescape",
            wasm.to_str().expect("utf-8"),
        ],
    );
    let target = format!("target={}", d.bridge);
    let e = fails(
        &d,
        &[
            "network",
            "create",
            "-d",
            "netescape",
            "-o",
            &target,
            "evil",
        ],
    );
    for what in [
        "delete-lo=permission-denied",
        "delete-target=permission-denied",
        "mtu-target=permission-denied",
        "unprefixed=permission-denied",
        "foreign-sandbox=permission-denied",
        "unreserved-port=permission-denied",
        "sysctl=permission-denied",
    ] {
        assert!(e.contains(what), "{what} not refused: {e}");
    }
    // Other tests add and remove links meanwhile: compare the ones the driver went for.
    let line_of = |all: &str, name: &str| {
        all.lines()
            .find(|l| l.contains(&format!(": {name}:")))
            .map(|l| l.split("link/").next().unwrap_or(l).to_owned())
    };
    let after = links();
    for name in ["lo", d.bridge.as_str()] {
        let (was, now) = (line_of(&before, name), line_of(&after, name));
        assert!(was.is_some(), "{name} missing before");
        assert_eq!(was, now, "{name} changed");
    }
    assert!(!after.contains("evil0"), "{after}");
    ok(&d, &["plugin", "rm", "netescape"]);
}

#[test]
fn containers_keep_their_network_across_a_daemon_restart() {
    require_root!();
    let mut d = Daemon::start();
    web_image(&d);
    let www = site("still here\n");
    let volume = format!("{}:/www", www.path().display());
    ok(&d, &["network", "create", "keep"]);
    ok(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "kept",
            "--network",
            "keep",
            "-p",
            "80",
            "-v",
            &volume,
            "web",
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/www",
        ],
    );
    let port = host_port(&d, "kept", "80");
    assert!(http_get(port).contains("still here"));
    d.kill9();
    d.restart();
    assert!(
        http_get(port).contains("still here"),
        "published port after restart"
    );
    let got = ok(
        &d,
        &[
            "run",
            "--rm",
            "--network",
            "keep",
            "web",
            "wget",
            "-qO-",
            "http://kept/",
        ],
    );
    assert_eq!(got, "still here\n", "name resolution after restart");
    ok(&d, &["rm", "-f", "kept"]);
    ok(&d, &["network", "rm", "keep"]);
}

/// Removes a test's own link when dropped, whatever happens.
struct TestLink(String);

impl Drop for TestLink {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.0])
            .output();
    }
}

fn subnet_of(d: &Daemon, network: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&ok(d, &["network", "inspect", network])).unwrap();
    v[0]["subnet"].as_str().unwrap().to_owned()
}

#[test]
fn pool_subnets_go_around_routes_already_on_the_host() {
    require_root!();
    let d = Daemon::start();
    // The pool's first subnet, as an empty host gives it.
    ok(&d, &["network", "create", "probe"]);
    let first = subnet_of(&d, "probe");
    ok(&d, &["network", "rm", "probe"]);
    // Another program's interface takes that subnet (a bridge left behind, a VPN): a network
    // there would lose its traffic to it. The next network goes around it.
    let (address, prefix) = first.split_once('/').unwrap();
    let gateway = {
        let mut octets: Vec<u8> = address.split('.').map(|o| o.parse().unwrap()).collect();
        octets[3] += 1;
        format!(
            "{}.{}.{}.{}/{prefix}",
            octets[0], octets[1], octets[2], octets[3]
        )
    };
    let link = TestLink(format!("{}x", d.bridge));
    for args in [
        vec!["link", "add", &link.0, "type", "bridge"],
        vec!["addr", "add", &gateway, "dev", &link.0],
        vec!["link", "set", &link.0, "up"],
    ] {
        let o = std::process::Command::new("ip")
            .args(&args)
            .output()
            .unwrap();
        assert!(o.status.success(), "ip {args:?}: {}", err(&o));
    }
    ok(&d, &["network", "create", "around"]);
    let next = subnet_of(&d, "around");
    assert_ne!(next, first, "the network took the subnet of {}", link.0);
    // Once the interface is gone, its subnet is free again.
    ok(&d, &["network", "rm", "around"]);
    drop(link);
    ok(&d, &["network", "create", "again"]);
    assert_eq!(subnet_of(&d, "again"), first);
    ok(&d, &["network", "rm", "again"]);
}
