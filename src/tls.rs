//! TLS with the rustls that is already linked for the registry client
//! (ring, no OpenSSL): the server's certificate and key for HTTPS
//! (`HEARTH_TLS_CERT`, `HEARTH_TLS_KEY`), and the roots a client trusts
//! (the compiled-in web roots plus a CA given by `HEARTH_TLS_CA`, for boxes
//! whose certificates a private CA signs).

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::ring::default_provider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Reads a PEM certificate chain and key into a server configuration
/// that speaks HTTP/1.1 over TLS 1.2 or 1.3. Errors name the file.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect)
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in the file", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the certificate and key do not go together: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration trusting the compiled-in web roots and, when
/// given, the CA certificates in `ca` (PEM).
pub fn client_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(ca) = ca {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
            .and_then(Iterator::collect)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!("{}: no usable CA certificate", ca.display()));
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A ureq agent builder that trusts `HEARTH_TLS_CA` as well as the web
/// roots (a CA that cannot be read is logged and left out).
pub fn agent_builder(ca: Option<&Path>) -> ureq::AgentBuilder {
    let builder = ureq::AgentBuilder::new();
    match ca.map(|p| client_config(Some(p))) {
        None => builder,
        Some(Ok(config)) => builder.tls_config(config),
        Some(Err(e)) => {
            log::warn!("HEARTH_TLS_CA not used: {e}");
            builder
        }
    }
}
