//! Caller identities: Unix peers with their user and group names, TLS client certificates,
//! and bearer tokens checked against a file of their SHA-256 digests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Error;
use crate::plugin_host::{TlsClient, UnixPeer};

/// How long a uid's names are remembered: group changes show within this time.
const NAMES_TTL: Duration = Duration::from_secs(10);

type Names = (Option<String>, Vec<String>);

type NameCache = HashMap<(u32, u32), (Instant, Names)>;

static NAME_CACHE: Mutex<Option<NameCache>> = Mutex::new(None);

/// The peer of a Unix socket connection, named from the host's user and group databases.
/// Blocking (NSS lookups); answers are cached for a few seconds.
pub fn unix_peer(uid: u32, gid: u32, pid: u32) -> UnixPeer {
    let cached = NAME_CACHE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(HashMap::new)
        .get(&(uid, gid))
        .filter(|(at, _)| at.elapsed() < NAMES_TTL)
        .map(|(_, names)| names.clone());
    let (user, groups) = cached.unwrap_or_else(|| {
        let names = look_up_names(uid, gid);
        let mut cache = NAME_CACHE.lock().unwrap_or_else(|p| p.into_inner());
        let map = cache.get_or_insert_with(HashMap::new);
        if map.len() > 4096 {
            map.clear();
        }
        map.insert((uid, gid), (Instant::now(), names.clone()));
        names
    });
    UnixPeer {
        uid,
        gid,
        pid,
        user,
        groups,
    }
}

fn look_up_names(uid: u32, gid: u32) -> Names {
    use nix::unistd::{Gid, Group, Uid, User};
    let user = User::from_uid(Uid::from_raw(uid)).ok().flatten();
    let mut gids = vec![Gid::from_raw(gid)];
    if let Some(u) = &user
        && let Ok(name) = std::ffi::CString::new(u.name.clone())
        && let Ok(list) = nix::unistd::getgrouplist(&name, u.gid)
    {
        gids.extend(list);
    }
    gids.sort_by_key(|g| g.as_raw());
    gids.dedup();
    // A gid without a name still counts, by number, so a policy can match it.
    let groups = gids
        .into_iter()
        .map(|g| match Group::from_gid(g) {
            Ok(Some(group)) => group.name,
            _ => g.as_raw().to_string(),
        })
        .collect();
    (user.map(|u| u.name), groups)
}

/// The identity in a verified client certificate (DER).
pub fn tls_client(der: &[u8]) -> TlsClient {
    use x509_parser::prelude::*;
    let fingerprint_sha256 = hex::encode(Sha256::digest(der));
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        // rustls verified it, so this does not happen; the fingerprint still identifies it.
        return TlsClient {
            subject_cn: String::new(),
            sans: Vec::new(),
            fingerprint_sha256,
        };
    };
    let subject_cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                    sans.push((*s).to_owned())
                }
                GeneralName::IPAddress(bytes) => match bytes.len() {
                    4 => sans.push(
                        std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*bytes).unwrap_or_default())
                            .to_string(),
                    ),
                    16 => sans.push(
                        std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*bytes).unwrap_or_default())
                            .to_string(),
                    ),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    TlsClient {
        subject_cn,
        sans,
        fingerprint_sha256,
    }
}

/// Bearer tokens: names and the SHA-256 digests of their secrets, from a file of
/// `NAME sha256:HEX` lines (`#` starts a comment). The secrets themselves are never stored.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    path: Option<PathBuf>,
    entries: Vec<(String, [u8; 32])>,
}

impl Tokens {
    /// No tokens: every bearer token is refused.
    pub fn none() -> Tokens {
        Tokens::default()
    }

    /// Reads a tokens file. Blocking.
    pub fn load(path: &Path) -> Result<Tokens, Error> {
        let bad = |message: String| Error::Tokens {
            path: path.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(name), Some(digest), None) = (words.next(), words.next(), words.next())
            else {
                return Err(bad(format!(
                    "line {}: expected `NAME sha256:HEX` (the digest of the token, e.g. from `printf %s TOKEN | sha256sum`)",
                    n + 1
                )));
            };
            let valid_name = name.len() <= 128
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.@-".contains(&b));
            if !valid_name {
                return Err(bad(format!("line {}: bad token name {name:?}", n + 1)));
            }
            let hex_digest = digest.strip_prefix("sha256:").unwrap_or(digest);
            let mut bytes = [0u8; 32];
            hex::decode_to_slice(hex_digest, &mut bytes).map_err(|_| {
                bad(format!(
                    "line {}: {digest:?} is not a SHA-256 digest (64 hex digits)",
                    n + 1
                ))
            })?;
            if entries.iter().any(|(other, _)| other == name) {
                return Err(bad(format!("line {}: token name {name} repeated", n + 1)));
            }
            entries.push((name.to_owned(), bytes));
        }
        Ok(Tokens {
            path: Some(path.to_owned()),
            entries,
        })
    }

    /// Where these tokens came from.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Whether any token is configured.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What the tokens file stores of `secret`.
    pub fn digest(secret: &str) -> [u8; 32] {
        Sha256::digest(secret.as_bytes()).into()
    }

    /// The name of the token with this digest (`None` once it is gone from the file). Every
    /// entry is compared, in constant time, so timing tells nothing about which digest came
    /// close.
    pub fn name_of(&self, digest: &[u8; 32]) -> Option<String> {
        let mut found = None;
        for (name, stored) in &self.entries {
            if bool::from(stored.ct_eq(digest)) {
                found = Some(name.clone());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_file_round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let digest = hex::encode(Sha256::digest(b"s3cret"));
        std::fs::write(
            &path,
            format!(
                "# CI robots\nci sha256:{digest}\n\nops {}  # ops\n",
                "0".repeat(64)
            ),
        )
        .unwrap();
        let tokens = Tokens::load(&path).unwrap();
        assert_eq!(
            tokens.name_of(&Tokens::digest("s3cret")).as_deref(),
            Some("ci")
        );
        assert_eq!(tokens.name_of(&Tokens::digest("s3cret ")), None);
        assert_eq!(tokens.name_of(&Tokens::digest("")), None);
        for (text, needle) in [
            ("ci\n", "expected `NAME sha256:HEX`"),
            ("ci sha256:abc\n", "not a SHA-256 digest"),
            ("c/i 00\n", "bad token name"),
            (&format!("a {digest}\na {digest}\n") as &str, "repeated"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = Tokens::load(&path).unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains("tokens"), "{text}: {e}");
        }
    }

    #[test]
    fn root_is_named_with_its_groups() {
        let peer = unix_peer(0, 0, 1);
        assert_eq!(peer.user.as_deref(), Some("root"));
        assert!(peer.groups.iter().any(|g| g == "root"), "{:?}", peer.groups);
        let nobody = unix_peer(4_000_000, 4_000_000, 1);
        assert_eq!(nobody.user, None);
        assert_eq!(nobody.groups, vec!["4000000".to_owned()]);
    }
}
