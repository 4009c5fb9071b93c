//! Commits signed by listed keys: a source with `signers` applies only
//! commits whose git SSH signature (`git commit -S` with
//! `gpg.format=ssh`) verifies with one of its keys. The check is
//! OpenSSH's `ssh-keygen -Y`, run by gitoxide as git runs it, with an
//! allowed-signers file made from the source's keys alone.

use std::path::Path;

use gix::objs::signature::Format;
use gix::objs::signature::verify::{Options, TrustLevel};

use crate::transport::{PrivateDir, key_lines};

/// Checks `text` as signer keys: `KEYTYPE KEY [COMMENT]` a line, blank
/// lines and `#` comments allowed, at least one key.
pub fn check_signers(text: &str) -> Result<(), String> {
    if signer_keys(text)?.is_empty() {
        return Err("no key in it".to_owned());
    }
    Ok(())
}

fn signer_keys(text: &str) -> Result<Vec<(&str, &str)>, String> {
    key_lines(
        text,
        |line| {
            let mut fields = line.split_whitespace();
            Some((fields.next()?, fields.next()?))
        },
        "KEYTYPE KEY [COMMENT]",
    )
}

/// The allowed-signers file of `keys`: each key its own principal
/// (`key-N`, N counting from 1 in the order given), for git signatures
/// only.
fn allowed_signers(keys: &[(&str, &str)]) -> String {
    keys.iter()
        .enumerate()
        .map(|(n, (kind, key))| format!("key-{} namespaces=\"git\" {kind} {key}\n", n + 1))
        .collect()
}

/// Checks that commit `commit` of the cache repository at `cache` is
/// signed by one of `signers`; returns which (`key-N SHA256:…`), or why
/// not.
pub fn verify(cache: &Path, commit: &str, signers: &str) -> Result<String, String> {
    let keys = signer_keys(signers)?;
    let repo = crate::git::open(cache).map_err(|e| e.to_string())?;
    let id = gix::ObjectId::from_hex(commit.as_bytes()).map_err(|e| e.to_string())?;
    let commit = repo
        .find_commit(id)
        .map_err(|e| format!("cannot read the commit: {e}"))?;
    let Some((signature, signed)) = commit
        .signature()
        .map_err(|e| format!("cannot read the commit's signature: {e}"))?
    else {
        return Err("it is not signed".to_owned());
    };
    match Format::from_signature(&signature) {
        Some(Format::Ssh) => {}
        Some(other) => {
            return Err(format!(
                "it is signed with {other:?}: only SSH signatures are checked"
            ));
        }
        None => return Err("its signature is of no known format".to_owned()),
    }
    let io = |e: std::io::Error| format!("cannot write the signer keys: {e}");
    let dir = PrivateDir::create(cache.join("flotilla-signers")).map_err(io)?;
    let file = dir
        .write("allowed_signers", allowed_signers(&keys).as_bytes())
        .map_err(io)?;
    let options = Options::Ssh {
        program: "ssh-keygen".into(),
        program_arguments: Vec::new(),
        environment: Vec::new(),
        allowed_signers: file,
        revocation_file: None,
        verify_time: commit
            .time()
            .map_err(|e| format!("cannot read the commit's time: {e}"))?,
        minimum_trust: TrustLevel::Fully,
    };
    let outcome = signed
        .verify(&signature, options)
        .map_err(|e| format!("cannot check its signature: {e}"))?;
    // A good signature by a key not listed is valid with no trust: only
    // a listed key's (a principal of the file) counts.
    if !outcome.is_valid() || outcome.trust_level < TrustLevel::Fully {
        return Err(format!(
            "its signature is not by a key the source lists ({:?})",
            outcome.status
        ));
    }
    let signer = outcome.signer.map(|s| s.to_string()).unwrap_or_default();
    let fingerprint = outcome
        .fingerprint
        .map(|f| f.to_string())
        .unwrap_or_default();
    Ok(format!("{signer} {fingerprint}").trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    #[test]
    fn each_key_is_its_own_principal_for_git_only() {
        let text = format!("# ops\nssh-ed25519 {KEY} alice@example\n\nssh-ed25519 {KEY}\n");
        check_signers(&text).unwrap();
        let keys = signer_keys(&text).unwrap();
        assert_eq!(
            allowed_signers(&keys),
            format!(
                "key-1 namespaces=\"git\" ssh-ed25519 {KEY}\nkey-2 namespaces=\"git\" ssh-ed25519 {KEY}\n"
            )
        );
        for (bad, why) in [
            ("# none\n", "no key"),
            ("ssh-ed25519\n", "line 1"),
            ("nope AAAA\n", "line 1"),
            // An option line of allowed_signers is not a key.
            (
                &format!("* namespaces=\"git\" ssh-ed25519 {KEY}\n")[..],
                "line 1",
            ),
        ] {
            let e = check_signers(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
