//! Registry clients: one oci-client per registry host (connection reuse and token caching
//! across pulls), plain HTTP for loopback and configured insecure registries, mirrors for
//! Docker Hub, and mapping of registry errors to error kinds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use berth_api::ErrorKind;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;

use super::Error;
use super::reference::{DEFAULT_REGISTRY, Reference};

/// Registry settings from berthd.toml.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistrySettings {
    /// Mirrors tried, in order, before Docker Hub for `docker.io` images: `host[:port]`, or a
    /// URL (`http://` marks it plain HTTP).
    pub mirrors: Vec<String>,
    /// `host[:port]` registries reached over plain HTTP.
    pub insecure: Vec<String>,
}

/// One registry endpoint to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]`.
    pub host: String,
    /// Plain HTTP instead of HTTPS.
    pub plain_http: bool,
}

/// Registry clients, created on first use.
#[derive(Default)]
pub struct Registries {
    settings: RegistrySettings,
    /// Keyed by endpoint and credentials: oci-client keeps the first credentials it sees
    /// for a registry, so callers with different credentials must not share a client.
    clients: Mutex<HashMap<(Endpoint, String), Arc<oci_client::Client>>>,
}

impl std::fmt::Debug for Registries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registries")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl std::hash::Hash for Endpoint {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.host.hash(state);
        self.plain_http.hash(state);
    }
}

impl Registries {
    /// Clients for `settings`.
    pub fn new(settings: RegistrySettings) -> Registries {
        Registries {
            settings,
            clients: Mutex::default(),
        }
    }

    /// Where to fetch `reference` from, in order: mirrors first for Docker Hub.
    pub fn endpoints(&self, reference: &Reference) -> Vec<Endpoint> {
        let mut out = Vec::new();
        if reference.registry == DEFAULT_REGISTRY {
            for m in &self.settings.mirrors {
                let (plain, host) = match m.split_once("://") {
                    Some(("http", h)) => (true, h),
                    Some((_, h)) => (false, h),
                    None => (false, m.as_str()),
                };
                let host = host.trim_end_matches('/').to_owned();
                let plain = plain || self.is_insecure(&host);
                out.push(Endpoint {
                    host,
                    plain_http: plain,
                });
            }
        }
        out.push(Endpoint {
            host: reference.registry.clone(),
            plain_http: reference.is_loopback_registry() || self.is_insecure(&reference.registry),
        });
        out
    }

    fn is_insecure(&self, host: &str) -> bool {
        self.settings.insecure.iter().any(|h| h == host)
    }

    /// The client for an endpoint and a set of credentials.
    pub fn client(
        &self,
        endpoint: &Endpoint,
        auth: &oci_client::secrets::RegistryAuth,
    ) -> Arc<oci_client::Client> {
        use oci_client::secrets::RegistryAuth as A;
        use sha2::Digest as _;
        let identity = match auth {
            A::Anonymous => "anonymous".to_owned(),
            A::Basic(u, p) => hex::encode(sha2::Sha256::digest(format!("basic\0{u}\0{p}"))),
            A::Bearer(t) => hex::encode(sha2::Sha256::digest(format!("bearer\0{t}"))),
        };
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(
            clients
                .entry((endpoint.clone(), identity))
                .or_insert_with(|| Arc::new(new_client(endpoint))),
        )
    }

    /// Checks credentials against `registry` the way `docker login` does: the registry must
    /// accept them (a token is obtained where the registry uses the token flow).
    pub async fn check_login(
        &self,
        registry: &str,
        auth: &berth_api::image::RegistryAuth,
    ) -> Result<(), Error> {
        let reference = Reference::parse(&format!("{registry}/berth-login-check/probe:latest"))?;
        let endpoint = self.endpoints(&reference).pop().unwrap_or(Endpoint {
            host: reference.registry.clone(),
            plain_http: false,
        });
        // A fresh client: the shared ones cache credentials and tokens per registry, which
        // would let a wrong password pass after a right one.
        let client = new_client(&endpoint);
        let oref = oci_reference(&reference, &endpoint);
        let oci = super::pull::oci_auth(&Some(auth.clone()));
        client
            .auth(&oref, &oci, oci_client::RegistryOperation::Pull)
            .await
            .map_err(|e| registry_error(&endpoint, e))?;
        match client.fetch_manifest_digest(&oref, &oci).await {
            Ok(_) => Ok(()),
            Err(e) => match registry_error(&endpoint, e) {
                // The probe repository does not exist: the credentials got us that far.
                Error::Registry {
                    kind: ErrorKind::NotFound,
                    ..
                } => Ok(()),
                other => Err(other),
            },
        }
    }
}

fn new_client(endpoint: &Endpoint) -> oci_client::Client {
    let protocol = if endpoint.plain_http {
        ClientProtocol::HttpsExcept(vec![endpoint.host.clone()])
    } else {
        ClientProtocol::Https
    };
    oci_client::Client::new(ClientConfig {
        protocol,
        platform_resolver: None,
        connect_timeout: Some(std::time::Duration::from_secs(15)),
        read_timeout: Some(std::time::Duration::from_secs(120)),
        ..ClientConfig::default()
    })
}

/// The oci-client reference for `reference` at `endpoint`.
pub fn oci_reference(reference: &Reference, endpoint: &Endpoint) -> oci_client::Reference {
    match (&reference.digest, &reference.tag) {
        (Some(d), _) => oci_client::Reference::with_digest(
            endpoint.host.clone(),
            reference.repository.clone(),
            d.clone(),
        ),
        (None, Some(t)) => oci_client::Reference::with_tag(
            endpoint.host.clone(),
            reference.repository.clone(),
            t.clone(),
        ),
        (None, None) => oci_client::Reference::with_tag(
            endpoint.host.clone(),
            reference.repository.clone(),
            super::reference::DEFAULT_TAG.to_owned(),
        ),
    }
}

/// Classifies a registry error.
pub fn registry_error(endpoint: &Endpoint, e: OciDistributionError) -> Error {
    use OciDistributionError as E;
    let kind = match &e {
        E::AuthenticationFailure(_) | E::UnauthorizedError { .. } => ErrorKind::PermissionDenied,
        E::ImageManifestNotFoundError(_) => ErrorKind::NotFound,
        E::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|x| {
                matches!(
                    x.code,
                    oci_client::errors::OciErrorCode::ManifestUnknown
                        | oci_client::errors::OciErrorCode::NameUnknown
                        | oci_client::errors::OciErrorCode::BlobUnknown
                )
            }) =>
        {
            ErrorKind::NotFound
        }
        E::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|x| {
                matches!(
                    x.code,
                    oci_client::errors::OciErrorCode::Unauthorized
                        | oci_client::errors::OciErrorCode::Denied
                )
            }) =>
        {
            ErrorKind::PermissionDenied
        }
        _ => ErrorKind::Unavailable,
    };
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    Error::Registry {
        registry: endpoint.host.clone(),
        message,
        kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_plain_http_and_hub_tries_mirrors_first() {
        let regs = Registries::new(RegistrySettings {
            mirrors: vec!["http://127.0.0.1:5001".into(), "mirror.example".into()],
            insecure: vec!["reg.lan:5000".into()],
        });
        let local = Reference::parse("127.0.0.1:5000/a").unwrap();
        assert_eq!(
            regs.endpoints(&local),
            vec![Endpoint {
                host: "127.0.0.1:5000".into(),
                plain_http: true
            }]
        );
        let lan = Reference::parse("reg.lan:5000/a").unwrap();
        assert!(regs.endpoints(&lan)[0].plain_http);
        let hub = Reference::parse("busybox").unwrap();
        let eps = regs.endpoints(&hub);
        assert_eq!(eps.len(), 3);
        assert_eq!(
            eps[0],
            Endpoint {
                host: "127.0.0.1:5001".into(),
                plain_http: true
            }
        );
        assert_eq!(
            eps[1],
            Endpoint {
                host: "mirror.example".into(),
                plain_http: false
            }
        );
        assert_eq!(
            eps[2],
            Endpoint {
                host: "docker.io".into(),
                plain_http: false
            }
        );
    }
}
