//! A certificate authority made for one test server and a certificate it
//! signs for IP 127.0.0.1: what the kit's TLS servers (the registry, the
//! git server over HTTPS) present, and what their clients are told to
//! trust. Made with the `openssl` command line.

use std::path::Path;

use crate::HostError;
use crate::process::run;

/// Makes a CA named `ca_name` (`ca.crt`, `ca.key`) in `dir` and a certificate it signs
/// for IP 127.0.0.1 (`server.crt`, `server.key`), valid for two days,
/// with the key usages a strict verifier (RFC 5280, as rustls' webpki
/// or `openssl verify -x509_strict`) wants.
pub(crate) fn loopback_certificate(dir: &Path, ca_name: &str) -> Result<(), HostError> {
    let openssl = |args: &[&str]| run("openssl", args, dir).map(drop);
    let subject = format!("/CN={ca_name}");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &subject,
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ])?;
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ])?;
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(|e| HostError::Setup(format!("cannot write server.ext: {e}")))?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.crt",
    ])?;
    Ok(())
}
