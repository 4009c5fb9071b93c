//! The cluster CA, the servers' certificates, client certificates, and the
//! servers' rustls configuration.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use flotilla_proto::trust::Role;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::{TlsError, fingerprint, provider};

/// The directory, inside a server's data directory, of its TLS material.
pub const TLS_DIR: &str = "tls";
/// The cluster CA's certificate, in [`TLS_DIR`].
pub const CA_CERT_FILE: &str = "ca.crt";
/// The cluster CA's private key, in [`TLS_DIR`] (mode 0600).
pub const CA_KEY_FILE: &str = "ca.key";

/// How long the cluster CA is valid.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a server certificate is valid; servers make a new one at
/// every start.
const SERVER_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long a server's peer certificate (replication between servers) is
/// valid. The peer transport makes a new one at every start and again when
/// half of this has passed, so a long-running server never holds an
/// expired one.
pub const PEER_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);
/// The organizational unit of every peer certificate, and of no other
/// certificate the CA signs: what admits a server to its peers' replication
/// port, beside the CA's signature.
pub const SERVER_OU: &str = "flotilla-server";
/// Certificates are valid from a little before they are made, for clocks
/// slightly behind.
const BACKDATE: Duration = Duration::from_secs(3600);

/// The cluster's certificate authority.
pub struct ClusterCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
    fingerprint: String,
}

impl std::fmt::Debug for ClusterCa {
    // The key is a secret: it never reaches a log through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// A certificate and its private key, ready for rustls.
pub struct IssuedCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

fn make(what: &str) -> impl Fn(rcgen::Error) -> TlsError + '_ {
    move |e| TlsError::Make {
        what: what.to_owned(),
        reason: e.to_string(),
    }
}

fn random_serial() -> Result<SerialNumber, TlsError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| TlsError::Make {
        what: "a serial number".into(),
        reason: e.to_string(),
    })?;
    // A positive INTEGER with no leading zero byte.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from(bytes.to_vec()))
}

impl ClusterCa {
    /// A new CA, in memory.
    pub fn generate() -> Result<ClusterCa, TlsError> {
        let key = KeyPair::generate().map_err(make("the CA's key"))?;
        let mut params = CertificateParams::default();
        let serial = random_serial()?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "flotilla");
        // Each cluster's CA has a name of its own, so that a client given
        // another cluster's CA is told "unknown issuer".
        let tag: String = serial.as_ref()[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        dn.push(DnType::CommonName, format!("flotilla cluster CA {tag}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + CA_VALIDITY).into();
        params.serial_number = Some(serial);
        let cert = params
            .self_signed(&key)
            .map_err(make("the CA's certificate"))?;
        let key_pem = key.serialize_pem();
        Ok(ClusterCa {
            cert_pem: cert.pem(),
            fingerprint: fingerprint(cert.der()),
            cert_der: cert.der().clone(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA from its certificate and key, PEM.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<ClusterCa, TlsError> {
        let invalid = |what: &str| {
            let what = what.to_owned();
            move |e: rcgen::Error| TlsError::Invalid {
                what: what.clone(),
                reason: e.to_string(),
            }
        };
        let key = KeyPair::from_pem(key_pem).map_err(invalid("the CA's key"))?;
        let cert_der = super::certificates_from_pem("the CA's certificate", cert_pem.as_bytes())?
            .into_iter()
            .next()
            .ok_or_else(|| TlsError::Invalid {
                what: "the CA's certificate".into(),
                reason: "it holds no certificate".into(),
            })?;
        let issuer =
            Issuer::from_ca_cert_pem(cert_pem, key).map_err(invalid("the CA's certificate"))?;
        Ok(ClusterCa {
            cert_pem: cert_pem.to_owned(),
            fingerprint: fingerprint(&cert_der),
            cert_der,
            key_pem: key_pem.to_owned(),
            issuer,
        })
    }

    /// The CA kept in `dir` (`ca.crt` and `ca.key`), if both are there; an
    /// error if only one is, or they do not read.
    pub fn load(dir: &Path) -> Result<Option<ClusterCa>, TlsError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        match (cert_path.exists(), key_path.exists()) {
            (false, false) => Ok(None),
            (true, true) => {
                let cert = read(&cert_path)?;
                let key = read(&key_path)?;
                ClusterCa::from_pem(&cert, &key).map(Some)
            }
            (true, false) => Err(TlsError::Invalid {
                what: dir.display().to_string(),
                reason: format!("it holds {CA_CERT_FILE} but not {CA_KEY_FILE}"),
            }),
            (false, true) => Err(TlsError::Invalid {
                what: dir.display().to_string(),
                reason: format!("it holds {CA_KEY_FILE} but not {CA_CERT_FILE}"),
            }),
        }
    }

    /// Writes the CA to `dir` (made 0700 if absent): the key readable by
    /// its owner only.
    pub fn save(&self, dir: &Path) -> Result<(), TlsError> {
        for (file, text, mode) in [
            (CA_KEY_FILE, &self.key_pem, 0o600),
            (CA_CERT_FILE, &self.cert_pem, 0o644),
        ] {
            let path = dir.join(file);
            crate::files::write_atomically(&path, text.as_bytes(), mode)
                .map_err(|source| TlsError::Write { path, source })?;
        }
        Ok(())
    }

    /// The CA kept in `dir`, or a new one written there. Returns whether it
    /// was made now.
    pub fn load_or_create(dir: &Path) -> Result<(ClusterCa, bool), TlsError> {
        if let Some(ca) = ClusterCa::load(dir)? {
            return Ok((ca, false));
        }
        let ca = ClusterCa::generate()?;
        ca.save(dir)?;
        Ok((ca, true))
    }

    /// The CA's certificate, PEM: public, for clients to trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// SHA-256 of the CA's certificate, hex.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// A server certificate for `names` (host names and IP addresses),
    /// with a new key.
    pub fn issue_server(&self, names: &[String]) -> Result<IssuedCert, TlsError> {
        let key = KeyPair::generate().map_err(make("a server key"))?;
        let mut params =
            CertificateParams::new(names.to_vec()).map_err(make("a server certificate"))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "flotilla");
        dn.push(
            DnType::CommonName,
            names
                .first()
                .map(String::as_str)
                .unwrap_or("flotilla server"),
        );
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + SERVER_VALIDITY).into();
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(make("a server certificate"))?;
        Ok(IssuedCert {
            chain: vec![cert.der().clone(), self.cert_der.clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }

    /// A server's peer certificate, with a new key: subject
    /// `O=flotilla, OU=flotilla-server, CN=<node>`, good as a server and
    /// as a client certificate (the servers of a cluster dial each other),
    /// for `names` (the host names and addresses of its peer address),
    /// valid for [`PEER_VALIDITY`] from now.
    pub fn issue_peer(&self, node: u64, names: &[String]) -> Result<IssuedCert, TlsError> {
        let key = KeyPair::generate().map_err(make("a peer key"))?;
        let mut params =
            CertificateParams::new(names.to_vec()).map_err(make("a peer certificate"))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "flotilla");
        dn.push(DnType::OrganizationalUnitName, SERVER_OU);
        dn.push(DnType::CommonName, node.to_string());
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + PEER_VALIDITY).into();
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(make("a peer certificate"))?;
        Ok(IssuedCert {
            chain: vec![cert.der().clone(), self.cert_der.clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }

    /// Signs a client certificate for the public key of `csr_pem` (whose
    /// own signature is checked). Only the key is taken from the request:
    /// the subject (`CN=name`, `OU=role`), the serial number (`serial`, the
    /// credential's id) and the validity are the CA's choice.
    pub fn sign_client(
        &self,
        csr_pem: &str,
        serial: &[u8],
        name: &str,
        role: Role,
        not_after: SystemTime,
    ) -> Result<String, TlsError> {
        let request =
            CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| TlsError::Invalid {
                what: "the certificate signing request".into(),
                reason: e.to_string(),
            })?;
        // No role is named like the servers' unit (a test checks it), so a
        // client certificate never admits its holder among the servers.
        debug_assert_ne!(role.as_str(), SERVER_OU);
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "flotilla");
        dn.push(DnType::OrganizationalUnitName, role.as_str());
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = (SystemTime::now() - BACKDATE).into();
        params.not_after = not_after.into();
        params.serial_number = Some(SerialNumber::from(serial.to_vec()));
        params.use_authority_key_identifier_extension = true;
        let signed = CertificateSigningRequestParams {
            params,
            public_key: request.public_key,
        }
        .signed_by(&self.issuer)
        .map_err(make("a client certificate"))?;
        Ok(signed.pem())
    }
}

/// The serial number of a certificate (DER), hex, as credential ids are
/// written; `None` if it does not parse.
pub fn certificate_serial(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let raw = cert.tbs_certificate.raw_serial();
    let trimmed = match raw {
        [0, rest @ ..] if !rest.is_empty() => rest,
        _ => raw,
    };
    Some(trimmed.iter().map(|b| format!("{b:02x}")).collect())
}

/// The servers' rustls configuration: `cert` as the server's, and client
/// certificates signed by `client_ca` accepted (not required: requests
/// without one authenticate with a token).
pub fn server_config(
    cert: IssuedCert,
    client_ca: &CertificateDer<'static>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let invalid = |what: &str| {
        let what = what.to_owned();
        move |e: rustls::Error| TlsError::Invalid {
            what: what.clone(),
            reason: e.to_string(),
        }
    };
    let provider = provider();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(client_ca.clone())
        .map_err(invalid("the cluster CA"))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Invalid {
            what: "the client certificate verifier".into(),
            reason: e.to_string(),
        })?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(invalid("the TLS versions"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(cert.chain, cert.key)
        .map_err(invalid("the server certificate"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_reads_back_and_signs_servers_and_clients() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, made) = ClusterCa::load_or_create(dir.path()).unwrap();
        assert!(made);
        let (again, made) = ClusterCa::load_or_create(dir.path()).unwrap();
        assert!(!made);
        assert_eq!(again.fingerprint(), ca.fingerprint());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let server = again
            .issue_server(&["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        assert_eq!(server.chain.len(), 2);
        server_config(server, ca.cert_der()).unwrap();

        let key = KeyPair::generate().unwrap();
        let csr = CertificateParams::default()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let serial = [0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0];
        let pem = again
            .sign_client(
                &csr,
                &serial,
                "alice",
                Role::Operator,
                SystemTime::now() + Duration::from_secs(60),
            )
            .unwrap();
        let der = super::super::certificates_from_pem("c", pem.as_bytes()).unwrap();
        assert_eq!(
            certificate_serial(&der[0]).as_deref(),
            Some("123456789abcdef0")
        );
        assert!(
            again
                .sign_client("junk", &serial, "x", Role::Viewer, SystemTime::now())
                .is_err()
        );
    }

    #[test]
    fn no_role_is_named_like_the_servers_unit() {
        for role in Role::ALL {
            assert_ne!(role.as_str(), SERVER_OU, "{role:?}");
            assert!(!role.as_str().eq_ignore_ascii_case(SERVER_OU), "{role:?}");
        }
    }

    #[test]
    fn half_a_ca_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CA_CERT_FILE), "x").unwrap();
        assert!(ClusterCa::load(dir.path()).is_err());
    }
}
