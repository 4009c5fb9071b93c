//! TLS of the API: the cluster CA and the certificates it makes (feature
//! `server`), and how clients trust the servers and present a client
//! certificate (feature `client`). Both use rustls with the ring crypto
//! provider; docs/security.md describes the model.
//!
//! - The **cluster CA** is made at a server's first start, in
//!   `DATA_DIR/tls/` (`ca.crt`, and `ca.key` readable by the server only).
//!   Servers that share an etcd share it by copying those two files:
//!   the key never travels through the store.
//! - Each server makes itself a **server certificate** signed by the CA
//!   at every start, for the names and addresses it is reached at (its
//!   listen address, host name, loopback, and `--tls-san`), unless the
//!   operator gives one (`--tls-cert`/`--tls-key`).
//! - **Client certificates** are signed from a signing request
//!   (`flotilla cert create`): the private key never leaves the machine
//!   that made it. Their serial number is a credential id, which the
//!   server looks up (and so can revoke) like a token's.

#[cfg(feature = "server")]
mod ca;
#[cfg(feature = "client")]
mod client;

#[cfg(feature = "server")]
pub use ca::{
    CA_CERT_FILE, CA_KEY_FILE, ClusterCa, IssuedCert, PEER_VALIDITY, SERVER_OU, TLS_DIR,
    certificate_serial, server_config,
};
#[cfg(feature = "client")]
pub use client::{ClientIdentity, FetchCaError, ServerTrust, fetch_ca, make_signing_request};
#[cfg(feature = "client")]
pub(crate) use client::{client_config, install_provider};

use sha2::{Digest, Sha256};

/// Why TLS material could not be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{what} is not valid: {reason}")]
    Invalid { what: String, reason: String },
    #[error("cannot make {what}: {reason}")]
    Make { what: String, reason: String },
}

/// The SHA-256 fingerprint of a certificate (DER), lowercase hex: what a
/// join string carries to pin the cluster CA.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every certificate in a PEM text, in order.
pub fn certificates_from_pem(
    what: &str,
    pem: &[u8],
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, TlsError> {
    use rustls_pki_types::pem::PemObject;
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid {
            what: what.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Invalid {
            what: what.to_owned(),
            reason: "it holds no PEM certificate".into(),
        });
    }
    Ok(certs)
}

/// The private key in a PEM text.
pub fn private_key_from_pem(
    what: &str,
    pem: &[u8],
) -> Result<rustls_pki_types::PrivateKeyDer<'static>, TlsError> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::Invalid {
        what: what.to_owned(),
        reason: e.to_string(),
    })
}

/// The ring crypto provider every TLS configuration of flotilla uses.
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
