//! A server's TLS identity among its peers: its peer certificate (signed by
//! the cluster CA, `OU=flotilla-server`, renewed before it expires), the
//! rustls configurations of both sides, and the check that the other side
//! is a server of this cluster, not a user or a machine.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use rustls::client::WebPkiServerVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};

use crate::tls::{ClusterCa, PEER_VALIDITY, SERVER_OU, TlsError, provider};
use flotilla_store::raft::NodeId;

use super::PeerError;

/// The ALPN protocol of peer connections: a dialer that reaches the API's
/// port by mistake is refused in the handshake.
pub const ALPN: &[u8] = b"flotilla-peer";

/// This server's peer certificate and the TLS configurations made from it.
pub struct PeerTls {
    ca: Arc<ClusterCa>,
    node: NodeId,
    names: Vec<String>,
    fingerprint: [u8; 32],
    roots: Arc<RootCertStore>,
    current: Mutex<Configs>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls")
            .field("node", &self.node)
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

struct Configs {
    issued: SystemTime,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl PeerTls {
    /// The identity of node `node`, whose peers reach it at `peer_url`
    /// (`https://HOST:PORT`): its certificate names that host, and
    /// loopback.
    pub fn new(ca: Arc<ClusterCa>, node: NodeId, peer_url: &str) -> Result<PeerTls, PeerError> {
        let (host, _) = parse_peer_url(peer_url)?;
        let mut names = vec![host];
        for loopback in ["localhost", "127.0.0.1", "::1"] {
            if !names.iter().any(|n| n == loopback) {
                names.push(loopback.to_owned());
            }
        }
        PeerTls::with_names(ca, node, names)
    }

    /// The identity of node `node` for exactly `names` (host names and IP
    /// addresses).
    pub fn with_names(
        ca: Arc<ClusterCa>,
        node: NodeId,
        names: Vec<String>,
    ) -> Result<PeerTls, PeerError> {
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.cert_der().clone())
            .map_err(|e| TlsError::Invalid {
                what: "the cluster CA".into(),
                reason: e.to_string(),
            })?;
        let roots = Arc::new(roots);
        let fingerprint: [u8; 32] = Sha256::digest(ca.cert_der()).into();
        let current = Mutex::new(make_configs(&ca, node, &names, &roots)?);
        Ok(PeerTls {
            ca,
            node,
            names,
            fingerprint,
            roots,
            current,
        })
    }

    /// This server's node id.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The SHA-256 fingerprint of the cluster CA, as hellos carry it.
    pub fn ca_fingerprint(&self) -> &[u8; 32] {
        &self.fingerprint
    }

    /// The listening side's configuration, with a certificate renewed
    /// first if half its validity has passed.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.renewed().server)
    }

    /// The dialling side's configuration, likewise.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.renewed().client)
    }

    fn renewed(&self) -> std::sync::MutexGuard<'_, Configs> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if renewal_due(current.issued, SystemTime::now()) {
            match make_configs(&self.ca, self.node, &self.names, &self.roots) {
                Ok(fresh) => *current = fresh,
                // The old certificate is still valid for a while: tried
                // again at the next connection.
                Err(e) => tracing::warn!("cannot renew the peer certificate: {e}"),
            }
        }
        current
    }
}

/// Whether a certificate issued at `issued` is to be renewed at `now`: once
/// half of [`PEER_VALIDITY`] has passed (or the clock went back).
pub fn renewal_due(issued: SystemTime, now: SystemTime) -> bool {
    match now.duration_since(issued) {
        Ok(age) => age >= PEER_VALIDITY / 2,
        Err(_) => true,
    }
}

fn make_configs(
    ca: &ClusterCa,
    node: NodeId,
    names: &[String],
    roots: &Arc<RootCertStore>,
) -> Result<Configs, PeerError> {
    let invalid = |what: &'static str| {
        move |e: rustls::Error| TlsError::Invalid {
            what: what.to_owned(),
            reason: e.to_string(),
        }
    };
    let verifier_error = |what: &'static str| {
        move |e: rustls::server::VerifierBuilderError| TlsError::Invalid {
            what: what.to_owned(),
            reason: e.to_string(),
        }
    };
    let issued = SystemTime::now();
    let cert = ca.issue_peer(node, names)?;
    let provider = provider();

    // Client certificates are required, and must chain to the cluster CA;
    // the unit (`OU`) is checked after the handshake.
    let clients =
        WebPkiClientVerifier::builder_with_provider(Arc::clone(roots), Arc::clone(&provider))
            .build()
            .map_err(verifier_error("the peer certificate verifier"))?;
    let mut server = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(invalid("the TLS versions"))?
        .with_client_cert_verifier(clients)
        .with_single_cert(cert.chain.clone(), cert.key.clone_key())
        .map_err(invalid("the peer certificate"))?;
    server.alpn_protocols = vec![ALPN.to_vec()];

    let servers = WebPkiServerVerifier::builder_with_provider(Arc::clone(roots), provider.clone())
        .build()
        .map_err(verifier_error("the peer server verifier"))?;
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(invalid("the TLS versions"))?
        .with_webpki_verifier(servers)
        .with_client_auth_cert(cert.chain, cert.key)
        .map_err(invalid("the peer certificate"))?;
    client.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Configs {
        issued,
        server: Arc::new(server),
        client: Arc::new(client),
    })
}

/// Why the other side's certificate does not admit it as a peer (its
/// chain to the cluster CA was checked by the handshake already).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertRefusal {
    #[error("it presented no certificate")]
    Missing,
    #[error("its certificate does not parse")]
    Unparsable,
    #[error("its certificate is not a server's (OU={0:?}, want {SERVER_OU:?})")]
    NotAServer(Vec<String>),
}

/// Checks that `der` (the other side's certificate, whose chain the
/// handshake verified) names the servers' unit, `OU=flotilla-server`, and
/// no other; returns its common name (the node id it claims), for logs.
pub fn check_peer_cert(der: Option<&[u8]>) -> Result<String, CertRefusal> {
    let der = der.ok_or(CertRefusal::Missing)?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|_| CertRefusal::Unparsable)?;
    let units: Vec<String> = cert
        .subject()
        .iter_organizational_unit()
        .map(|ou| ou.as_str().unwrap_or("?").to_owned())
        .collect();
    if units.len() != 1 || units[0] != SERVER_OU {
        return Err(CertRefusal::NotAServer(units));
    }
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or("?")
        .to_owned();
    Ok(cn)
}

/// The host and port of a peer URL, `https://HOST:PORT` (an IPv6 address
/// in brackets); the host without brackets.
pub fn parse_peer_url(url: &str) -> Result<(String, u16), PeerError> {
    let bad = |reason: &str| PeerError::Url {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| bad("it does not start with https://"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("an IPv6 address without its closing bracket"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("the address in brackets is not an IPv6 address"));
        }
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| bad("it names no port"))?;
        (host, port)
    } else {
        rest.rsplit_once(':')
            .ok_or_else(|| bad("it names no port"))?
    };
    if host.is_empty() {
        return Err(bad("it names no host"));
    }
    if host.contains(['/', '@', '?', '#', ':']) && host.parse::<IpAddr>().is_err() {
        return Err(bad("it has a path, user or query, or a malformed host"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| bad("its port is not a number from 1 to 65535"))?;
    if port == 0 {
        return Err(bad("its port is not a number from 1 to 65535"));
    }
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn peer_urls_parse_to_host_and_port() {
        assert_eq!(
            parse_peer_url("https://db1.example:7443").unwrap(),
            ("db1.example".into(), 7443)
        );
        assert_eq!(
            parse_peer_url("https://10.0.0.5:7443/").unwrap(),
            ("10.0.0.5".into(), 7443)
        );
        assert_eq!(
            parse_peer_url("https://[fd00::5]:7443").unwrap(),
            ("fd00::5".into(), 7443)
        );
        for bad in [
            "http://a:1",
            "https://a",
            "https://:1",
            "https://a:0",
            "https://a:70000",
            "https://[fd00::5:1",
            "https://a/b:1",
            "https://u@a:1",
        ] {
            assert!(parse_peer_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_peer_certificate_names_the_servers_unit_and_its_node() {
        let ca = Arc::new(ClusterCa::generate().unwrap());
        let tls = PeerTls::new(Arc::clone(&ca), 42, "https://db1.example:7443").unwrap();
        assert_eq!(tls.names, ["db1.example", "localhost", "127.0.0.1", "::1"]);
        let cert = ca.issue_peer(42, &tls.names).unwrap();
        assert_eq!(check_peer_cert(Some(&cert.chain[0])), Ok("42".into()));
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert.chain[0]).unwrap();
        let eku = parsed.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        let validity = parsed.validity().time_to_expiration().unwrap();
        assert!(validity.whole_seconds() <= PEER_VALIDITY.as_secs() as i64);

        // The API's own certificate is no peer certificate.
        let api = ca.issue_server(&["db1.example".into()]).unwrap();
        assert!(matches!(
            check_peer_cert(Some(&api.chain[0])),
            Err(CertRefusal::NotAServer(_))
        ));
        assert_eq!(check_peer_cert(None), Err(CertRefusal::Missing));
        assert_eq!(check_peer_cert(Some(b"junk")), Err(CertRefusal::Unparsable));
    }

    #[test]
    fn renewal_is_due_at_half_the_validity() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert!(!renewal_due(t, t));
        assert!(!renewal_due(
            t,
            t + PEER_VALIDITY / 2 - Duration::from_secs(1)
        ));
        assert!(renewal_due(t, t + PEER_VALIDITY / 2));
        assert!(renewal_due(t, t - Duration::from_secs(1)));
    }
}
