//! The TLS configuration of berthd's TCP listeners: its certificate and key, and the CA that
//! client certificates must chain to.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::Error;

fn tls_error(what: &str, path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Tls {
        what: format!("{what} {}", path.display()),
        message: e.to_string(),
    }
}

/// Builds the server side. With `client_ca`, client certificates are verified against it;
/// `require_client_cert` makes them mandatory at the handshake (otherwise a client without
/// one may still authenticate with a bearer token). Blocking (reads the files).
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
    require_client_cert: bool,
) -> Result<Arc<ServerConfig>, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| tls_error("read the certificate", cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_error("parse the certificate", cert, e))?;
    if chain.is_empty() {
        return Err(tls_error("use", cert, "no certificate in the file"));
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| tls_error("read the key", key, e))?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("configure TLS for", cert, e))?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca)
                .map_err(|e| tls_error("read the client CA", ca, e))?
            {
                let c = c.map_err(|e| tls_error("parse the client CA", ca, e))?;
                roots
                    .add(c)
                    .map_err(|e| tls_error("use the client CA", ca, e))?;
            }
            if roots.is_empty() {
                return Err(tls_error("use", ca, "no CA certificate in the file"));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| tls_error("use the client CA", ca, e))?,
            )
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key_der)
        .map_err(|e| tls_error("use the key", key, e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
