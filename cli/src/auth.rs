//! Registry credentials on the client side, in docker's `config.json` format
//! (`{"auths": {"host": {"auth": base64("user:password")}}}`), file mode 0600, under
//! `$BERTH_CONFIG` or `~/.berth`. berthd never stores them; they travel with each call.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use berth_api::image::RegistryAuth;
use berth_api::reference::{DEFAULT_REGISTRY, Reference};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct AuthEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    identitytoken: Option<String>,
}

fn config_path() -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os("BERTH_CONFIG") {
        Some(dir) => PathBuf::from(dir),
        None => {
            PathBuf::from(std::env::var_os("HOME").context("HOME is not set; set BERTH_CONFIG")?)
                .join(".berth")
        }
    };
    Ok(dir.join("config.json"))
}

fn read() -> anyhow::Result<ConfigFile> {
    let path = config_path()?;
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not valid JSON", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write(config: &ConfigFile) -> anyhow::Result<()> {
    let path = config_path()?;
    let dir = path.parent().context("config path has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let temp = dir.join(".config.json.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .with_context(|| format!("writing {}", temp.display()))?;
    file.write_all(&serde_json::to_vec_pretty(config)?)?;
    file.sync_all()?;
    std::fs::rename(&temp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Normalizes a server argument (`docker.io`, `https://index.docker.io/v1/`, `reg:5000`).
pub fn server_key(server: Option<&str>) -> String {
    let s = server.unwrap_or(DEFAULT_REGISTRY);
    let s = s
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let s = s.split('/').next().unwrap_or(s);
    match s {
        "index.docker.io" | "registry-1.docker.io" | "" => DEFAULT_REGISTRY.to_owned(),
        other => other.to_owned(),
    }
}

/// Stored credentials for `registry`, if any.
pub fn for_registry(registry: &str) -> anyhow::Result<Option<RegistryAuth>> {
    let config = read()?;
    let Some(entry) = config.auths.get(registry) else {
        return Ok(None);
    };
    if let Some(token) = &entry.identitytoken {
        return Ok(Some(RegistryAuth {
            registry_token: Some(token.clone()),
            ..RegistryAuth::default()
        }));
    }
    let Some(encoded) = &entry.auth else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .context("stored credentials are not valid base64")?;
    let text = String::from_utf8(decoded).context("stored credentials are not UTF-8")?;
    let (user, pass) = text
        .split_once(':')
        .context("stored credentials lack a ':'")?;
    Ok(Some(RegistryAuth {
        username: Some(user.to_owned()),
        password: Some(pass.to_owned()),
        registry_token: None,
    }))
}

/// Stored credentials for the registry of `reference`.
pub fn for_reference(reference: &str) -> anyhow::Result<Option<RegistryAuth>> {
    match Reference::parse(reference) {
        Ok(r) => for_registry(&r.registry),
        // The daemon reports the malformed reference itself.
        Err(_) => Ok(None),
    }
}

/// Saves credentials that berthd accepted.
pub fn store(registry: &str, username: &str, password: &str) -> anyhow::Result<()> {
    if username.contains(':') {
        bail!("user names cannot contain ':'");
    }
    let mut config = read()?;
    config.auths.insert(
        registry.to_owned(),
        AuthEntry {
            auth: Some(
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}")),
            ),
            identitytoken: None,
        },
    );
    write(&config)
}

/// Forgets credentials; says whether there were any.
pub fn remove(registry: &str) -> anyhow::Result<bool> {
    let mut config = read()?;
    let had = config.auths.remove(registry).is_some();
    if had {
        write(&config)?;
    }
    Ok(had)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_keys() {
        assert_eq!(server_key(None), "docker.io");
        assert_eq!(server_key(Some("https://index.docker.io/v1/")), "docker.io");
        assert_eq!(server_key(Some("127.0.0.1:5000")), "127.0.0.1:5000");
        assert_eq!(server_key(Some("http://reg.lan:5000/")), "reg.lan:5000");
    }

    #[test]
    fn store_read_remove_with_private_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: this test is the only one touching BERTH_CONFIG.
        unsafe { std::env::set_var("BERTH_CONFIG", dir.path()) };
        store("reg:5000", "alice", "pa:ss").unwrap();
        let auth = for_registry("reg:5000").unwrap().unwrap();
        assert_eq!(auth.username.as_deref(), Some("alice"));
        assert_eq!(auth.password.as_deref(), Some("pa:ss"));
        let mode = std::fs::metadata(dir.path().join("config.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(for_reference("reg:5000/app:1").unwrap().is_some());
        assert!(for_reference("other/app").unwrap().is_none());
        assert!(remove("reg:5000").unwrap());
        assert!(!remove("reg:5000").unwrap());
        assert!(for_registry("reg:5000").unwrap().is_none());
    }
}
