//! Docker's credential helpers: `docker-credential-NAME get`, given the
//! registry on its stdin, answers `{"ServerURL", "Username", "Secret"}` on
//! its stdout (a `Username` of `<token>` makes `Secret` an identity
//! token). The shim runs the helper a Docker configuration names
//! (`credsStore`, `credHelpers`) as the Docker CLI does, found on the
//! shim's `PATH` (the unit's `Environment=PATH=...` changes it).
//!
//! A helper that answers `credentials not found` means no credentials (an
//! anonymous pull), as for the CLI. Its answer is never logged or put in
//! an error; a failing helper's own message is (cut to
//! [`MAX_MESSAGE`] bytes), since it is about the failure, not a secret.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::Deserialize;
use tokio::io::AsyncWriteExt;

/// The most of a failing helper's message an error quotes.
pub const MAX_MESSAGE: usize = 200;

/// What a helper answered.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// `Username` and `Secret`.
    Password { username: String, secret: String },
    /// An identity token (`Username` `<token>`).
    Token(String),
    /// It has none for the registry.
    NotFound,
}

#[derive(Deserialize)]
struct Reply {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// Whether `name` can be a helper's name (it becomes part of a program's
/// name: no `/`).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `docker-credential-NAME` on `path` (a `PATH` value).
pub fn find(name: &str, path: &std::ffi::OsStr) -> Option<PathBuf> {
    let program = format!("docker-credential-{name}");
    std::env::split_paths(path)
        .map(|dir| dir.join(&program))
        .find(|p| p.is_file())
}

/// Runs `program get` for `server`; the error is the reason, without any
/// of the helper's answer on success.
pub async fn get(program: &Path, server: &str) -> Result<Answer, String> {
    let mut child = tokio::process::Command::new(program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A pull that gives up (its time is over) ends the helper too.
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run it: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper need not read it (a broken pipe): its exit status and
        // answer tell.
        let _ = stdin.write_all(server.as_bytes()).await;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("cannot read its answer: {e}"))?;
    if !out.status.success() {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let message = [stdout.trim(), stderr.trim()]
            .into_iter()
            .find(|m| !m.is_empty())
            .unwrap_or("");
        if message.contains("credentials not found") {
            return Ok(Answer::NotFound);
        }
        let mut cut = message.len().min(MAX_MESSAGE);
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        return Err(format!(
            "it exited with {}: {}",
            out.status,
            &message[..cut]
        ));
    }
    let reply: Reply = serde_json::from_slice(&out.stdout).map_err(|_| {
        "its answer is not the JSON object a Docker credential helper gives".to_owned()
    })?;
    Ok(if reply.username == "<token>" {
        Answer::Token(reply.secret)
    } else {
        Answer::Password {
            username: reply.username,
            secret: reply.secret,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn helper(dir: &Path, name: &str, script: &str) -> PathBuf {
        let path = dir.join(format!("docker-credential-{name}"));
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// [`get`], again while the script is busy: another test's process may
    /// have forked while the script was open for writing (ETXTBSY).
    async fn ask(program: &Path, server: &str) -> Result<Answer, String> {
        for _ in 0..50 {
            match get(program, server).await {
                Err(e) if e.contains("Text file busy") => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                other => return other,
            }
        }
        get(program, server).await
    }

    #[tokio::test]
    async fn helpers_answer_as_dockers_do() {
        let dir = tempfile::tempdir().unwrap();
        let ok = helper(
            dir.path(),
            "ok",
            r#"read server; [ "$1" = get ] && printf '{"ServerURL":"%s","Username":"u","Secret":"s3"}' "$server""#,
        );
        assert_eq!(
            ask(&ok, "reg.example.com").await.unwrap(),
            Answer::Password {
                username: "u".into(),
                secret: "s3".into()
            }
        );
        let token = helper(
            dir.path(),
            "token",
            r#"printf '{"Username":"<token>","Secret":"t0k"}'"#,
        );
        assert_eq!(ask(&token, "r").await.unwrap(), Answer::Token("t0k".into()));
        let none = helper(
            dir.path(),
            "none",
            "echo credentials not found in native keychain; exit 1",
        );
        assert_eq!(ask(&none, "r").await.unwrap(), Answer::NotFound);
        let broken = helper(
            dir.path(),
            "broken",
            "echo the keychain is locked >&2; exit 3",
        );
        let e = ask(&broken, "r").await.unwrap_err();
        assert!(e.contains("the keychain is locked"), "{e}");
        let garbage = helper(dir.path(), "garbage", "echo secret-value-xyz");
        let e = ask(&garbage, "r").await.unwrap_err();
        assert!(!e.contains("secret-value-xyz"), "{e}");

        let path = std::env::join_paths([Path::new("/nonexistent"), dir.path()]).unwrap();
        assert_eq!(find("ok", &path), Some(ok));
        assert_eq!(find("missing", &path), None);
        assert!(valid_name("ecr-login"));
        assert!(!valid_name("../../bin/sh"));
        assert!(!valid_name(""));
    }
}
