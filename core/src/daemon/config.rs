//! berthd's configuration: a TOML file (`/etc/berth/berthd.toml` by default) whose every
//! key is also a command-line flag; flags win over the file, the file over defaults.

use std::path::{Path, PathBuf};

use clap::Parser;
use serde::{Deserialize, Serialize};

use super::Error;

/// Default location of the configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/berth/berthd.toml";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The effective configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Where images, containers, volumes and the state database live.
    pub data_root: PathBuf,
    /// The Unix socket the API is served on.
    pub socket: PathBuf,
    /// Group that owns the socket (mode 0660) when it exists.
    pub socket_group: String,
    /// Extra listeners, `tcp://ADDR:PORT`.
    pub listen: Vec<String>,
    /// `error`, `warn`, `info`, `debug`, `trace`, or a tracing filter directive.
    pub log_level: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// Largest request body (HTTP) or message (WebSocket) accepted, in bytes.
    pub max_request_body_size: u32,
    /// Largest number of calls in one batch.
    pub max_batch_len: u32,
    /// Seconds to let open connections finish on SIGTERM before closing them.
    pub shutdown_timeout: u64,
    /// Mirrors tried before Docker Hub for `docker.io` images (`host[:port]` or a URL;
    /// `http://` means plain HTTP).
    pub registry_mirrors: Vec<String>,
    /// Registries (`host[:port]`) reached over plain HTTP. Loopback registries always are.
    pub insecure_registries: Vec<String>,
    /// Layers downloaded and unpacked at once per pull.
    pub max_concurrent_downloads: u32,
    /// Let image layers create device nodes (refused by default).
    pub allow_layer_device_nodes: bool,
    /// Host directories under which `local` volumes may bind an existing directory
    /// (`volume create -o type=none -o o=bind -o device=DIR`); empty: such volumes are refused.
    pub volume_bind_roots: Vec<PathBuf>,
    /// The default `bridge` network's bridge (made on first start).
    pub bridge_name: String,
    /// The default `bridge` network's IPv4 subnet.
    pub bridge_subnet: String,
    /// Where the `bridge` driver carves user networks' subnets from.
    pub default_address_pool: String,
    /// Prefix length of those subnets.
    pub default_address_pool_size: u8,
    /// berthd's TLS certificate (PEM) for TCP listeners.
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// CA bundle (PEM) that TLS client certificates must chain to.
    pub tls_ca: Option<PathBuf>,
    /// Bearer tokens accepted on TCP: `NAME sha256:HEX` lines.
    pub tokens_file: Option<PathBuf>,
    /// Allow TCP listeners without TLS, and TCP callers that authenticate as nobody.
    pub insecure_tcp: bool,
    /// Authorization policy plugins every API call must pass, in order (all must allow).
    pub authz_plugins: Vec<String>,
    /// Rego files of the built-in `rego` policy (its `policy` setting, unless set).
    pub authz_policy: Vec<PathBuf>,
    /// JSON data files of the built-in `rego` policy (its `data` setting, unless set).
    pub authz_data: Vec<PathBuf>,
    /// Where authorization decisions are logged (JSON lines) [default:
    /// DATA_ROOT/authz/decisions.log].
    pub authz_decision_log: Option<PathBuf>,
    /// Logging driver of containers that name none: `local` (the local log only) or an
    /// installed logging plugin (`json-file`, `syslog`, ...).
    pub log_driver: String,
    /// `KEY=VALUE` options for that default driver (`--log-opt`s of containers that name no
    /// driver).
    pub log_opts: Vec<String>,
    /// Size at which a container's local log is rotated, in bytes.
    pub local_log_max_size: u64,
    /// Local log files kept per container, the live one included.
    pub local_log_max_files: u32,
    /// Line format of the local logs: `json-file` (docker's) or `cri` (containerd's).
    pub local_log_format: crate::runtime::logfile::LogFormat,
    /// OTLP/HTTP traces endpoint (e.g. `http://127.0.0.1:4318/v1/traces`, or `https://`);
    /// none: no export.
    pub otlp_endpoint: Option<String>,
    /// CA bundle (PEM) an `https://` collector's certificate must chain to; none: the
    /// system's roots.
    pub otlp_ca: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_root: PathBuf::from("/var/lib/berth"),
            socket: PathBuf::from("/run/berth/berthd.sock"),
            socket_group: "berth".to_owned(),
            listen: Vec::new(),
            log_level: "info".to_owned(),
            log_format: LogFormat::Text,
            max_request_body_size: 16 * 1024 * 1024,
            max_batch_len: 1000,
            shutdown_timeout: 10,
            registry_mirrors: Vec::new(),
            insecure_registries: Vec::new(),
            max_concurrent_downloads: 4,
            allow_layer_device_nodes: false,
            volume_bind_roots: Vec::new(),
            bridge_name: "berth0".to_owned(),
            bridge_subnet: "10.200.0.0/16".to_owned(),
            default_address_pool: "10.201.0.0/16".to_owned(),
            default_address_pool_size: 24,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            tokens_file: None,
            insecure_tcp: false,
            authz_plugins: Vec::new(),
            authz_policy: Vec::new(),
            authz_data: Vec::new(),
            authz_decision_log: None,
            log_driver: "local".to_owned(),
            log_opts: Vec::new(),
            local_log_max_size: 100 * 1024 * 1024,
            local_log_max_files: 2,
            local_log_format: Default::default(),
            otlp_endpoint: None,
            otlp_ca: None,
        }
    }
}

/// berthd's command line. Every config key has a flag of the same name.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "berthd",
    version,
    about = "The berth container engine daemon",
    args_override_self = true
)]
pub struct Args {
    /// Configuration file; a missing default file means built-in defaults.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Where images, containers, volumes and the state database live [default: /var/lib/berth].
    #[arg(long, value_name = "DIR")]
    pub data_root: Option<PathBuf>,
    /// Unix socket to serve the API on [default: /run/berth/berthd.sock].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Group owning the socket when it exists [default: berth].
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// Also listen on tcp://ADDR:PORT (repeatable; replaces the file's list).
    #[arg(long, value_name = "URL")]
    pub listen: Vec<String>,
    /// Log level or tracing filter [default: info].
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log format [default: text].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Largest request body or WebSocket message in bytes [default: 16777216].
    #[arg(long, value_name = "BYTES")]
    pub max_request_body_size: Option<u32>,
    /// Largest number of calls in one batch [default: 1000].
    #[arg(long, value_name = "N")]
    pub max_batch_len: Option<u32>,
    /// Seconds to let connections finish on shutdown [default: 10].
    #[arg(long, value_name = "SECS")]
    pub shutdown_timeout: Option<u64>,
    /// Registry mirror for docker.io images (repeatable; replaces the file's list).
    #[arg(long, value_name = "HOST")]
    pub registry_mirrors: Vec<String>,
    /// Registry reached over plain HTTP (repeatable; replaces the file's list).
    #[arg(long, value_name = "HOST:PORT")]
    pub insecure_registries: Vec<String>,
    /// Layers downloaded and unpacked at once per pull [default: 4].
    #[arg(long, value_name = "N")]
    pub max_concurrent_downloads: Option<u32>,
    /// Let image layers create device nodes.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub allow_layer_device_nodes: Option<bool>,
    /// Host directory under which `local` volumes may bind a directory (repeatable;
    /// replaces the file's list).
    #[arg(long, value_name = "DIR")]
    pub volume_bind_roots: Vec<PathBuf>,
    /// The default `bridge` network's bridge name (it must start with `berth`).
    #[arg(long)]
    pub bridge_name: Option<String>,
    /// The default `bridge` network's IPv4 subnet.
    #[arg(long)]
    pub bridge_subnet: Option<String>,
    /// The pool user networks' subnets come from (IPv4 CIDR).
    #[arg(long)]
    pub default_address_pool: Option<String>,
    /// Prefix length of user networks' subnets.
    #[arg(long)]
    pub default_address_pool_size: Option<u8>,
    /// TLS certificate (PEM) for TCP listeners.
    #[arg(long, value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, value_name = "PATH")]
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) that client certificates must chain to.
    #[arg(long, value_name = "PATH")]
    pub tls_ca: Option<PathBuf>,
    /// Bearer tokens file (`NAME sha256:HEX` lines).
    #[arg(long, value_name = "PATH")]
    pub tokens_file: Option<PathBuf>,
    /// Allow plain TCP and unauthenticated TCP callers (dangerous: anyone who reaches the
    /// port controls berthd unless a policy says otherwise).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub insecure_tcp: Option<bool>,
    /// Authorization policy plugin every call must pass (repeatable, in order; replaces the
    /// file's list).
    #[arg(long, value_name = "PLUGIN")]
    pub authz_plugins: Vec<String>,
    /// Rego file for the built-in `rego` policy (repeatable; replaces the file's list).
    #[arg(long, value_name = "PATH")]
    pub authz_policy: Vec<PathBuf>,
    /// JSON data file for the built-in `rego` policy (repeatable; replaces the file's list).
    #[arg(long, value_name = "PATH")]
    pub authz_data: Vec<PathBuf>,
    /// Authorization decision log (JSON lines).
    #[arg(long, value_name = "PATH")]
    pub authz_decision_log: Option<PathBuf>,
    /// Default logging driver of containers [default: local].
    #[arg(long, value_name = "DRIVER")]
    pub log_driver: Option<String>,
    /// Option of the default logging driver, KEY=VALUE (repeatable; replaces the file's list).
    #[arg(long, value_name = "KEY=VALUE")]
    pub log_opts: Vec<String>,
    /// Size in bytes at which a container's local log rotates [default: 104857600].
    #[arg(long, value_name = "BYTES")]
    pub local_log_max_size: Option<u64>,
    /// Local log files kept per container [default: 2].
    #[arg(long, value_name = "N")]
    pub local_log_max_files: Option<u32>,
    /// Line format of the local logs: json-file or cri [default: json-file].
    #[arg(long, value_name = "FORMAT")]
    pub local_log_format: Option<crate::runtime::logfile::LogFormat>,
    /// Export traces over OTLP/HTTP (protobuf) to this URL, e.g.
    /// http://127.0.0.1:4318/v1/traces (or https://).
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// CA (PEM) an https:// OTLP collector's certificate must chain to (default: the
    /// system's roots).
    #[arg(long, value_name = "PATH")]
    pub otlp_ca: Option<PathBuf>,
}

impl Args {
    /// Reads the config file named by `--config` (or the default one, if present) and lays
    /// the flags over it. Blocking.
    pub fn load(&self) -> Result<Config, Error> {
        let file = match &self.config {
            Some(path) => Some(read_file(path)?),
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                Some(read_file(Path::new(DEFAULT_CONFIG_PATH))?)
            }
            None => None,
        };
        let mut cfg = file.unwrap_or_default();
        self.apply(&mut cfg);
        cfg.validate()?;
        Ok(cfg)
    }

    fn apply(&self, cfg: &mut Config) {
        let Args {
            config: _,
            data_root,
            socket,
            socket_group,
            listen,
            log_level,
            log_format,
            max_request_body_size,
            max_batch_len,
            shutdown_timeout,
            registry_mirrors,
            insecure_registries,
            max_concurrent_downloads,
            allow_layer_device_nodes,
            volume_bind_roots,
            bridge_name,
            bridge_subnet,
            default_address_pool,
            default_address_pool_size,
            tls_cert,
            tls_key,
            tls_ca,
            tokens_file,
            insecure_tcp,
            authz_plugins,
            authz_policy,
            authz_data,
            authz_decision_log,
            log_driver,
            log_opts,
            local_log_max_size,
            local_log_max_files,
            local_log_format,
            otlp_endpoint,
            otlp_ca,
        } = self.clone();
        macro_rules! over {
            ($($field:ident),*) => { $( if let Some(v) = $field { cfg.$field = v; } )* };
        }
        over!(
            data_root,
            socket,
            socket_group,
            log_level,
            log_format,
            max_request_body_size,
            max_batch_len,
            shutdown_timeout,
            max_concurrent_downloads,
            allow_layer_device_nodes,
            bridge_name,
            bridge_subnet,
            default_address_pool,
            default_address_pool_size,
            insecure_tcp,
            log_driver,
            local_log_max_size,
            local_log_max_files,
            local_log_format
        );
        for (flag, field) in [
            (tls_cert, &mut cfg.tls_cert),
            (tls_key, &mut cfg.tls_key),
            (tls_ca, &mut cfg.tls_ca),
            (tokens_file, &mut cfg.tokens_file),
            (authz_decision_log, &mut cfg.authz_decision_log),
            (otlp_ca, &mut cfg.otlp_ca),
        ] {
            if flag.is_some() {
                *field = flag;
            }
        }
        if !authz_plugins.is_empty() {
            cfg.authz_plugins = authz_plugins;
        }
        for (flag, field) in [
            (authz_policy, &mut cfg.authz_policy),
            (authz_data, &mut cfg.authz_data),
        ] {
            if !flag.is_empty() {
                *field = flag;
            }
        }
        for (flag, field) in [
            (listen, &mut cfg.listen),
            (registry_mirrors, &mut cfg.registry_mirrors),
            (insecure_registries, &mut cfg.insecure_registries),
            (log_opts, &mut cfg.log_opts),
        ] {
            if !flag.is_empty() {
                *field = flag;
            }
        }
        if !volume_bind_roots.is_empty() {
            cfg.volume_bind_roots = volume_bind_roots;
        }
        if otlp_endpoint.is_some() {
            cfg.otlp_endpoint = otlp_endpoint;
        }
    }
}

fn read_file(path: &Path) -> Result<Config, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
        path: path.to_owned(),
        source,
    })?;
    parse(&text).map_err(|message| Error::ConfigParse {
        path: path.to_owned(),
        message,
    })
}

/// Parses TOML config text.
pub fn parse(text: &str) -> Result<Config, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

impl Config {
    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |key: &'static str, message: String| Err(Error::ConfigInvalid { key, message });
        if !self.data_root.is_absolute() {
            return bad(
                "data-root",
                format!("{} is not an absolute path", self.data_root.display()),
            );
        }
        if !self.socket.is_absolute() {
            return bad(
                "socket",
                format!("{} is not an absolute path", self.socket.display()),
            );
        }
        for url in &self.listen {
            if let Err(message) = parse_tcp_listen(url) {
                return bad("listen", message);
            }
        }
        if self.max_request_body_size < 1024 {
            return bad(
                "max-request-body-size",
                "must be at least 1024 bytes".to_owned(),
            );
        }
        if self.max_concurrent_downloads == 0 {
            return bad("max-concurrent-downloads", "must be at least 1".to_owned());
        }
        if self.max_batch_len == 0 {
            return bad("max-batch-len", "must be at least 1".to_owned());
        }
        if let Some(opt) = self.log_opts.iter().find(|o| !o.contains('=')) {
            return bad("log-opts", format!("{opt:?} is not KEY=VALUE"));
        }
        if self.local_log_max_size < 4096 {
            return bad(
                "local-log-max-size",
                "must be at least 4096 bytes".to_owned(),
            );
        }
        if !(1..=100).contains(&self.local_log_max_files) {
            return bad("local-log-max-files", "must be from 1 to 100".to_owned());
        }
        if let Some(url) = &self.otlp_endpoint
            && !url.starts_with("http://")
            && !url.starts_with("https://")
        {
            return bad(
                "otlp-endpoint",
                format!(
                    "{url:?}: use an http:// or https:// URL such as http://127.0.0.1:4318/v1/traces"
                ),
            );
        }
        if self.otlp_ca.is_some()
            && !self
                .otlp_endpoint
                .as_deref()
                .is_some_and(|url| url.starts_with("https://"))
        {
            return bad(
                "otlp-ca",
                "is only for an https:// otlp-endpoint".to_owned(),
            );
        }
        if !self.bridge_name.starts_with("berth")
            || self.bridge_name.len() > 15
            || !self.bridge_name.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return bad(
                "bridge-name",
                format!(
                    "{:?}: use berth and up to 10 letters or digits",
                    self.bridge_name
                ),
            );
        }
        for (key, value) in [
            ("bridge-subnet", &self.bridge_subnet),
            ("default-address-pool", &self.default_address_pool),
        ] {
            let ok = value.split_once('/').is_some_and(|(ip, p)| {
                ip.parse::<std::net::Ipv4Addr>().is_ok() && p.parse::<u8>().is_ok_and(|p| p <= 30)
            });
            if !ok {
                return bad(key, format!("{value:?} is not an IPv4 subnet (a.b.c.d/n)"));
            }
        }
        if !(8..=30).contains(&self.default_address_pool_size) {
            return bad("default-address-pool-size", "must be 8 to 30".to_owned());
        }
        for root in &self.volume_bind_roots {
            if !root.is_absolute() || root == Path::new("/") {
                return bad(
                    "volume-bind-roots",
                    format!(
                        "{} must be an absolute directory other than /",
                        root.display()
                    ),
                );
            }
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => return bad("tls-key", "tls-cert needs tls-key".to_owned()),
            (None, Some(_)) => return bad("tls-cert", "tls-key needs tls-cert".to_owned()),
            _ => {}
        }
        if !self.listen.is_empty() && self.tls_cert.is_none() && !self.insecure_tcp {
            return bad(
                "listen",
                "TCP listeners need TLS (tls-cert and tls-key), or insecure-tcp = true to serve plain TCP"
                    .to_owned(),
            );
        }
        if self.tls_cert.is_some()
            && self.tls_ca.is_none()
            && self.tokens_file.is_none()
            && !self.insecure_tcp
        {
            return bad(
                "tls-ca",
                "with TLS, callers authenticate with a client certificate (tls-ca) or a bearer token (tokens-file): set at least one".to_owned(),
            );
        }
        for name in &self.authz_plugins {
            if !crate::plugin::valid_name(name) {
                return bad("authz-plugins", format!("{name:?} is not a plugin name"));
            }
        }
        let paths = [
            ("authz-policy", self.authz_policy.iter().collect::<Vec<_>>()),
            ("authz-data", self.authz_data.iter().collect()),
            ("tls-cert", self.tls_cert.iter().collect()),
            ("tls-key", self.tls_key.iter().collect()),
            ("tls-ca", self.tls_ca.iter().collect()),
            ("tokens-file", self.tokens_file.iter().collect()),
            (
                "authz-decision-log",
                self.authz_decision_log.iter().collect(),
            ),
        ];
        for (key, list) in paths {
            for path in list {
                if !path.is_absolute() || path.to_string_lossy().contains(',') {
                    return bad(
                        key,
                        format!("{} must be an absolute path without commas", path.display()),
                    );
                }
            }
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            return bad("log-level", format!("{:?}: {e}", self.log_level));
        }
        Ok(())
    }
}

/// `tcp://127.0.0.1:2375` → the socket address.
pub fn parse_tcp_listen(url: &str) -> Result<std::net::SocketAddr, String> {
    let rest = url
        .strip_prefix("tcp://")
        .ok_or_else(|| format!("{url:?}: only tcp://ADDR:PORT listeners are supported"))?;
    rest.parse()
        .map_err(|e| format!("{url:?}: not an ADDR:PORT: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_config_key_has_a_flag() {
        let keys = serde_json::to_value(Config::default()).unwrap();
        let cmd = Args::command();
        for key in keys.as_object().unwrap().keys() {
            assert!(
                cmd.get_arguments()
                    .any(|a| a.get_long() == Some(key.as_str())),
                "config key {key} has no --{key} flag"
            );
        }
    }

    #[test]
    fn file_then_flags() {
        let mut cfg = parse(
            "data-root = \"/srv/berth\"\nlog-level = \"debug\"\nlisten = [\"tcp://127.0.0.1:2375\"]\n",
        )
        .unwrap();
        assert_eq!(cfg.data_root, PathBuf::from("/srv/berth"));
        assert_eq!(cfg.socket, Config::default().socket);
        let args = Args::try_parse_from(["berthd", "--log-level", "warn", "--max-batch-len", "5"])
            .unwrap();
        args.apply(&mut cfg);
        assert_eq!(cfg.log_level, "warn");
        assert_eq!(cfg.max_batch_len, 5);
        assert_eq!(cfg.listen, vec!["tcp://127.0.0.1:2375"]);
        let refused = cfg.validate().unwrap_err().to_string();
        assert!(refused.contains("insecure-tcp"), "{refused}");
        let args = Args::try_parse_from(["berthd", "--insecure-tcp"]).unwrap();
        args.apply(&mut cfg);
        assert!(cfg.insecure_tcp);
        cfg.validate().unwrap();
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        let e = parse("data_rot = \"/x\"").unwrap_err();
        assert!(e.contains("data_rot"), "{e}");
        let e = parse("max-request-body-size = \"big\"").unwrap_err();
        assert!(e.contains("max-request-body-size"), "{e}");
        let cfg = Config {
            listen: vec!["http://0.0.0.0:1".into()],
            ..Config::default()
        };
        assert!(cfg.validate().unwrap_err().to_string().contains("listen"));
        let cfg = Config {
            data_root: "relative".into(),
            ..Config::default()
        };
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("data-root")
        );
    }

    #[test]
    fn otlp_takes_http_or_https_and_a_ca_only_for_https() {
        let with = |endpoint: &str, ca: Option<&str>| {
            Config {
                otlp_endpoint: Some(endpoint.to_owned()),
                otlp_ca: ca.map(PathBuf::from),
                ..Config::default()
            }
            .validate()
            .map_err(|e| e.to_string())
        };
        with("http://127.0.0.1:4318/v1/traces", None).unwrap();
        with("https://collector:4318/v1/traces", None).unwrap();
        with("https://collector:4318/v1/traces", Some("/etc/ca.pem")).unwrap();
        let e = with("grpc://collector:4317", None).unwrap_err();
        assert!(e.contains("otlp-endpoint"), "{e}");
        let e = with("http://127.0.0.1:4318/v1/traces", Some("/etc/ca.pem")).unwrap_err();
        assert!(e.contains("otlp-ca"), "{e}");
    }

    #[test]
    fn explicit_missing_config_file_is_an_error() {
        let args = Args {
            config: Some("/nonexistent/berthd.toml".into()),
            ..Args::default()
        };
        let e = args.load().unwrap_err().to_string();
        assert!(e.contains("/nonexistent/berthd.toml"), "{e}");
    }

    #[test]
    fn example_config_in_deploy_parses() {
        let text = include_str!("../../../deploy/berthd.toml");
        let cfg = parse(text).unwrap();
        cfg.validate().unwrap();
    }
}
