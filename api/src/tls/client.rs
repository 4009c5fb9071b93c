//! How the typed client trusts the servers and shows its own certificate.

use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;

use super::{TlsError, certificates_from_pem, fingerprint, private_key_from_pem, provider};

/// Which certificates the client trusts to sign the servers'.
#[derive(Clone, Default)]
pub enum ServerTrust {
    /// The system's trust store: for servers with a certificate from a
    /// public CA (`--tls-cert`).
    #[default]
    System,
    /// These CA certificates (PEM) only: the cluster CA (`--ca`).
    CaPem(Vec<u8>),
}

impl std::fmt::Debug for ServerTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerTrust::System => f.write_str("System"),
            ServerTrust::CaPem(pem) => match certificates_from_pem("ca", pem) {
                Ok(certs) => write!(
                    f,
                    "CaPem({})",
                    certs
                        .iter()
                        .map(|c| fingerprint(c))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                Err(_) => f.write_str("CaPem(<invalid>)"),
            },
        }
    }
}

/// A client certificate and its key, PEM.
#[derive(Clone)]
pub struct ClientIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for ClientIdentity {
    // The key is a secret: it never reaches a log through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity").finish_non_exhaustive()
    }
}

/// Makes sure rustls has a process-wide crypto provider (ring), for the
/// configurations reqwest builds itself.
pub(crate) fn install_provider() {
    // Fails only when one is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A rustls configuration that trusts `ca_pem` only, presenting `identity`
/// when given.
pub(crate) fn client_config(
    ca_pem: &[u8],
    identity: Option<&ClientIdentity>,
) -> Result<ClientConfig, TlsError> {
    let invalid = |what: &str| {
        let what = what.to_owned();
        move |e: rustls::Error| TlsError::Invalid {
            what: what.clone(),
            reason: e.to_string(),
        }
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates_from_pem("the CA file", ca_pem)? {
        roots.add(cert).map_err(invalid("the CA file"))?;
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(invalid("the TLS versions"))?
        .with_root_certificates(Arc::new(roots));
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(
                certificates_from_pem("the client certificate", &id.cert_pem)?,
                private_key_from_pem("the client key", &id.key_pem)?,
            )
            .map_err(invalid("the client certificate"))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Why the cluster CA could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchCaError {
    #[error("cannot reach {url}: {cause}")]
    Unreachable { url: String, cause: String },
    #[error("{url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url} answered no CA certificate: {0}", .reason)]
    Invalid { url: String, reason: String },
    /// The CA served is not the one the join string names: someone is in
    /// the way, or the join string is for another cluster.
    #[error(
        "the CA served by {url} has fingerprint {found}, not {expected} as the join token says: refusing it"
    )]
    Mismatch {
        url: String,
        expected: String,
        found: String,
    },
}

/// Fetches the cluster CA from a server (`GET /v1/ca`), trusting it only if
/// its SHA-256 fingerprint is `expected` (from a join string). The fetch
/// itself cannot verify the server (the client does not trust it yet):
/// the fingerprint is what makes the answer trustworthy.
pub async fn fetch_ca(endpoint: &str, expected: &str) -> Result<Vec<u8>, FetchCaError> {
    install_provider();
    let url = format!("{}/v1/ca", endpoint.trim_end_matches('/'));
    let unreachable = |e: reqwest::Error| FetchCaError::Unreachable {
        url: url.clone(),
        cause: super::super::client::root_cause(&e),
    };
    let http = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(unreachable)?;
    let response = http.get(&url).send().await.map_err(unreachable)?;
    if !response.status().is_success() {
        return Err(FetchCaError::Status {
            url: url.clone(),
            status: response.status().as_u16(),
        });
    }
    let pem = response.bytes().await.map_err(unreachable)?.to_vec();
    let certs = certificates_from_pem("the CA", &pem).map_err(|e| FetchCaError::Invalid {
        url: url.clone(),
        reason: e.to_string(),
    })?;
    let found = fingerprint(&certs[0]);
    if found != expected {
        return Err(FetchCaError::Mismatch {
            url,
            expected: expected.to_owned(),
            found,
        });
    }
    Ok(pem)
}

/// A new key pair and a certificate signing request for it, both PEM, for
/// `flotilla cert create`: the key stays here, the request goes to the
/// server.
pub fn make_signing_request(name: &str) -> Result<(String, String), TlsError> {
    let make = |e: rcgen::Error| TlsError::Make {
        what: "a certificate signing request".into(),
        reason: e.to_string(),
    };
    let key = rcgen::KeyPair::generate().map_err(make)?;
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let csr = params.serialize_request(&key).map_err(make)?;
    Ok((key.serialize_pem(), csr.pem().map_err(make)?))
}
