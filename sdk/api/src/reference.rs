//! Docker-style image references, parsed the same way by berthd and the CLI: `busybox`, `library/busybox:1.36`,
//! `registry:5000/ns/img@sha256:...`, normalized to registry + repository + tag/digest.

use std::fmt;

/// The registry of unqualified names.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag of references without tag or digest.
pub const DEFAULT_TAG: &str = "latest";

/// A parsed, normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// `docker.io`, `127.0.0.1:5000`, `ghcr.io`.
    pub registry: String,
    /// `library/busybox`, `ns/img`.
    pub repository: String,
    /// The tag, if given (or defaulted when neither tag nor digest was given).
    pub tag: Option<String>,
    /// `sha256:<hex>`, if given.
    pub digest: Option<String>,
}

/// Why a reference was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid reference format {input:?}: {reason}")]
pub struct ParseError {
    /// What was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

fn is_path_component(s: &str) -> bool {
    // lowercase alphanumerics separated by one of: `.`, `_`, `__`, or any run of `-`.
    let bytes = s.as_bytes();
    if bytes.is_empty()
        || !bytes[0].is_ascii_alphanumeric()
        || !bytes[bytes.len() - 1].is_ascii_alphanumeric()
    {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            i += 1;
            continue;
        }
        match c {
            b'.' => i += 1,
            b'_' => {
                i += if bytes.get(i + 1) == Some(&b'_') {
                    2
                } else {
                    1
                };
            }
            b'-' => {
                while bytes.get(i) == Some(&b'-') {
                    i += 1;
                }
                continue;
            }
            _ => return false,
        }
        // A separator must be followed by an alphanumeric.
        if !bytes
            .get(i)
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            return false;
        }
    }
    true
}

fn is_tag(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// `sha256:` followed by 64 lowercase hex digits (or `sha512:` and 128).
pub fn is_digest(s: &str) -> bool {
    let Some((alg, hex)) = s.split_once(':') else {
        return false;
    };
    let len = match alg {
        "sha256" => 64,
        "sha512" => 128,
        _ => return false,
    };
    hex.len() == len
        && hex
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

fn looks_like_registry(first: &str) -> bool {
    first.contains('.')
        || first.contains(':')
        || first == "localhost"
        || first.chars().any(|c| c.is_ascii_uppercase())
}

impl Reference {
    /// Parses and normalizes `input`.
    pub fn parse(input: &str) -> Result<Reference, ParseError> {
        let err = |reason| ParseError {
            input: input.to_owned(),
            reason,
        };
        if input.is_empty() || input.len() > 4096 {
            return Err(err("empty or too long"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => {
                if !is_digest(d) {
                    return Err(err("digest must be sha256:<64 hex> or sha512:<128 hex>"));
                }
                (r, Some(d.to_owned()))
            }
            None => (input, None),
        };
        // A tag is after the last ':' that follows the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let tag = &rest[last_slash + i + 1..];
                if !is_tag(tag) {
                    return Err(err("tag must be [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"));
                }
                (&rest[..last_slash + i], Some(tag.to_owned()))
            }
            None => (rest, None),
        };
        let (registry, path) = match name.split_once('/') {
            Some((first, path)) if looks_like_registry(first) => {
                (first.to_owned(), path.to_owned())
            }
            _ => (DEFAULT_REGISTRY.to_owned(), name.to_owned()),
        };
        if registry
            .chars()
            .any(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']')))
        {
            return Err(err("invalid registry host"));
        }
        let registry = if registry == "index.docker.io" || registry == "registry-1.docker.io" {
            DEFAULT_REGISTRY.to_owned()
        } else {
            registry
        };
        if path.is_empty() || !path.split('/').all(is_path_component) {
            return Err(err(
                "repository name must be lowercase alphanumerics separated by '/', '.', '_', '__' or '-'",
            ));
        }
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if repository.len() > 255 {
            return Err(err("repository name longer than 255 characters"));
        }
        let tag = match (&tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_owned()),
            _ => tag,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository` — the name under which tags live.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The short form docker shows: `busybox`, `ns/img`, `127.0.0.1:5000/img`.
    pub fn familiar_name(&self) -> String {
        if self.registry == DEFAULT_REGISTRY {
            self.repository
                .strip_prefix("library/")
                .unwrap_or(&self.repository)
                .to_owned()
        } else {
            self.name()
        }
    }

    /// `name:tag`, if this reference has a tag.
    pub fn tagged(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.name()))
    }

    /// The same repository, pinned to `digest`.
    pub fn with_digest(&self, digest: &str) -> Reference {
        Reference {
            digest: Some(digest.to_owned()),
            tag: None,
            ..self.clone()
        }
    }

    /// Whether the registry is on this machine, where plain HTTP is allowed by default.
    pub fn is_loopback_registry(&self) -> bool {
        let host = match self.registry.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|c| c.is_ascii_digit()) => h,
            _ => &self.registry,
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn normalizes_docker_style_names() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.familiar_name(), "busybox");
        let r = Reference::parse("library/busybox:1.36").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:1.36");
        let r = Reference::parse(&format!("registry:5000/ns/img@{D}")).unwrap();
        assert_eq!(r.registry, "registry:5000");
        assert_eq!(r.repository, "ns/img");
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(D));
        let r = Reference::parse(&format!("127.0.0.1:5000/img:v1@{D}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert!(r.is_loopback_registry());
        assert_eq!(r.familiar_name(), "127.0.0.1:5000/img");
        let r = Reference::parse("localhost/img").unwrap();
        assert_eq!(r.registry, "localhost");
        assert!(r.is_loopback_registry());
        let r = Reference::parse("index.docker.io/user/app").unwrap();
        assert_eq!(r.to_string(), "docker.io/user/app:latest");
        assert_eq!(r.familiar_name(), "user/app");
        assert!(
            !Reference::parse("ghcr.io/a/b")
                .unwrap()
                .is_loopback_registry()
        );
    }

    #[test]
    fn refuses_malformed_references() {
        for bad in [
            "",
            "UPPER",
            "a//b",
            "-lead",
            "trail-",
            "a:",
            "a:-tag",
            "a@sha256:abc",
            "a@md5:0123",
            "a b",
            "reg:5000/",
            "a/../b",
            "a:b:c",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let e = Reference::parse("Busy Box").unwrap_err();
        assert!(e.to_string().contains("Busy Box"));
    }

    #[test]
    fn path_components() {
        for ok in ["a", "a.b", "a_b", "a__b", "a---b", "a1"] {
            assert!(is_path_component(ok), "{ok}");
        }
        for bad in ["a..b", "a___b", "a.-b", "_a", "a_"] {
            assert!(!is_path_component(bad), "{bad}");
        }
    }
}
