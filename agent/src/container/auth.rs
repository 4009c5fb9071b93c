//! Registry credentials for pulls, from files in Docker's `config.json`
//! format.
//!
//! Where the shim looks, first found wins: the unit's `AuthFile=` (which
//! must exist), else the host's Docker configuration,
//! `$DOCKER_CONFIG/config.json` or [`HOST_CONFIG`]. A file is read as the
//! Docker CLI reads it: `auths` keyed by registry (`host[:port]`, with or
//! without `https://` and a path; Docker Hub as
//! `https://index.docker.io/v1/`), each entry with `auth`
//! (base64 of `user:password`), or `username` and `password`, or an
//! `identitytoken`. A registry without such an entry whose credentials a
//! helper keeps (`credHelpers`, else `credsStore`) gets them from the
//! helper (`credential_helper`), as with the Docker CLI.
//!
//! Secrets never appear in errors or logs: errors name the file, the
//! registry and what is wrong, never a value, and [`RegistryAuth`]'s
//! `Debug` hides them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;

use super::credential_helper::{self, Answer};
use super::runtime::RegistryAuth;

/// The host's Docker configuration when `DOCKER_CONFIG` is not set (the
/// shim runs as root).
pub const HOST_CONFIG: &str = "/root/.docker/config.json";

/// Docker Hub's key in `auths`.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// Why credentials could not be read. No variant carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read the registry credentials in {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the registry credentials in {path} are not valid JSON in Docker's config.json format ({what} at line {line}, column {column})"
    )]
    Parse {
        path: PathBuf,
        what: &'static str,
        line: usize,
        column: usize,
    },
    #[error("the credentials for registry {registry} in {path} are not usable: {reason}")]
    Entry {
        path: PathBuf,
        registry: String,
        reason: &'static str,
    },
    #[error(
        "registry {registry} uses the credential helper docker-credential-{helper} (in {path}), which failed: {reason}"
    )]
    Helper {
        path: PathBuf,
        registry: String,
        helper: String,
        reason: String,
    },
}

/// Where the credentials for a pull come from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The credentials, if the file has some for the registry.
    pub auth: Option<RegistryAuth>,
    /// The file read, if any existed.
    pub source: Option<PathBuf>,
}

/// The part of Docker's `config.json` the shim reads.
#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// The registry an image reference is pulled from: its first component
/// when that names a host (has a `.` or `:`, or is `localhost`), else
/// Docker Hub, `docker.io`.
pub fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// The registry an `auths` key names, as `host[:port]`: without a scheme
/// or a path, Docker Hub's aliases as `docker.io`.
fn normalize(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        _ => host,
    }
}

/// The credentials for `image`'s registry: from `auth_file` (the unit's
/// `AuthFile=`, which must exist), else from the host's Docker
/// configuration (`docker_config`, the value of `DOCKER_CONFIG`, or
/// [`HOST_CONFIG`]), if it exists.
pub async fn credentials(
    image: &str,
    auth_file: Option<&Path>,
    docker_config: Option<&Path>,
) -> Result<Found, AuthError> {
    let registry = registry_of(image);
    let (path, required) = match (auth_file, docker_config) {
        (Some(file), _) => (file.to_owned(), true),
        (None, Some(dir)) => (dir.join("config.json"), false),
        (None, None) => (PathBuf::from(HOST_CONFIG), false),
    };
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Found {
                auth: None,
                source: None,
            });
        }
        Err(source) => return Err(AuthError::Read { path, source }),
    };
    let auth = match lookup(&path, &text, registry)? {
        Lookup::Auth(auth) => auth,
        Lookup::Helper(helper) => from_helper(&path, registry, helper).await?,
    };
    Ok(Found {
        auth,
        source: Some(path),
    })
}

/// Where a file says the credentials for a registry are.
#[derive(Debug, PartialEq, Eq)]
enum Lookup {
    /// In the file (or none at all).
    Auth(Option<RegistryAuth>),
    /// With this credential helper.
    Helper(String),
}

/// Docker's key for a registry: its host for any but Docker Hub.
fn server_key(registry: &str) -> String {
    if registry == "docker.io" {
        DOCKER_HUB_KEY.to_owned()
    } else {
        registry.to_owned()
    }
}

/// Asks `helper` for `registry`'s credentials.
async fn from_helper(
    path: &Path,
    registry: &str,
    helper: String,
) -> Result<Option<RegistryAuth>, AuthError> {
    let fail = |helper: String, reason: String| AuthError::Helper {
        path: path.to_owned(),
        registry: registry.to_owned(),
        helper,
        reason,
    };
    if !credential_helper::valid_name(&helper) {
        return Err(fail(helper, "its name is not a program's name".to_owned()));
    }
    let search = std::env::var_os("PATH").unwrap_or_default();
    let Some(program) = credential_helper::find(&helper, &search) else {
        return Err(fail(helper, "it is not on the shim's PATH".to_owned()));
    };
    let server = server_key(registry);
    let answer = credential_helper::get(&program, &server)
        .await
        .map_err(|reason| fail(helper, reason))?;
    Ok(match answer {
        Answer::NotFound => None,
        Answer::Password { username, secret } => Some(RegistryAuth {
            server,
            username,
            password: secret,
            identity_token: None,
        }),
        Answer::Token(token) => Some(RegistryAuth {
            server,
            username: String::new(),
            password: String::new(),
            identity_token: Some(token),
        }),
    })
}

/// The credentials for `registry` in a file's `text`.
fn lookup(path: &Path, text: &[u8], registry: &str) -> Result<Lookup, AuthError> {
    let config: ConfigFile = serde_json::from_slice(text).map_err(|e| AuthError::Parse {
        path: path.to_owned(),
        // Not the error's own message: it may quote a value.
        what: match e.classify() {
            serde_json::error::Category::Io => "a read error",
            serde_json::error::Category::Syntax => "a syntax error",
            serde_json::error::Category::Data => "a value of the wrong type",
            serde_json::error::Category::Eof => "an unexpected end",
        },
        line: e.line(),
        column: e.column(),
    })?;
    let entry = config
        .auths
        .iter()
        .find(|(key, _)| normalize(key) == registry);
    let helper = config
        .cred_helpers
        .iter()
        .find(|(key, _)| normalize(key) == registry)
        .map(|(_, helper)| helper)
        .or(config.creds_store.as_ref());
    let usable = entry.filter(|(_, e)| {
        e.auth.as_deref().is_some_and(|a| !a.is_empty())
            || e.username.is_some()
            || e.identitytoken.is_some()
    });
    let Some((key, entry)) = usable else {
        // An entry without credentials is what `docker login` writes when
        // a helper keeps them.
        return Ok(match helper {
            Some(helper) => Lookup::Helper(helper.clone()),
            None => Lookup::Auth(None),
        });
    };
    let bad = |reason| AuthError::Entry {
        path: path.to_owned(),
        registry: registry.to_owned(),
        reason,
    };
    let server = if registry == "docker.io" {
        DOCKER_HUB_KEY.to_owned()
    } else {
        key.clone()
    };
    if let Some(token) = entry.identitytoken.as_ref().filter(|t| !t.is_empty()) {
        return Ok(Lookup::Auth(Some(RegistryAuth {
            server,
            username: entry.username.clone().unwrap_or_default(),
            password: String::new(),
            identity_token: Some(token.clone()),
        })));
    }
    let (username, password) = match entry.auth.as_deref().filter(|a| !a.is_empty()) {
        Some(encoded) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|_| bad("its auth is not base64"))?;
            let decoded =
                String::from_utf8(decoded).map_err(|_| bad("its auth is not UTF-8 text"))?;
            let (user, password) = decoded
                .split_once(':')
                .ok_or_else(|| bad("its auth is not base64 of user:password"))?;
            (user.to_owned(), password.to_owned())
        }
        None => (
            entry.username.clone().unwrap_or_default(),
            entry.password.clone().unwrap_or_default(),
        ),
    };
    if username.is_empty() {
        return Err(bad("it has no user name"));
    }
    Ok(Lookup::Auth(Some(RegistryAuth {
        server,
        username,
        password,
        identity_token: None,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn find(text: &str, registry: &str) -> Result<Option<RegistryAuth>, AuthError> {
        match lookup(Path::new("/auth.json"), text.as_bytes(), registry)? {
            Lookup::Auth(auth) => Ok(auth),
            Lookup::Helper(h) => panic!("helper {h}"),
        }
    }

    #[test]
    fn registries_of_image_references() {
        assert_eq!(registry_of("nginx"), "docker.io");
        assert_eq!(registry_of("library/nginx:1"), "docker.io");
        assert_eq!(registry_of("docker.io/library/nginx"), "docker.io");
        assert_eq!(registry_of("127.0.0.1:5000/app:1"), "127.0.0.1:5000");
        assert_eq!(registry_of("localhost/app"), "localhost");
        assert_eq!(registry_of("ghcr.io/o/app@sha256:00"), "ghcr.io");
    }

    #[test]
    fn auths_entries_by_registry() {
        let text = format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "https://127.0.0.1:5000/v2/": {{"auth": "{}"}},
                "reg.example.com": {{"username": "bob", "password": "pw"}},
                "tok.example.com": {{"identitytoken": "t0k"}}
            }}}}"#,
            b64("hub:hubpw"),
            b64("alice:a:b")
        );
        let hub = find(&text, "docker.io").unwrap().unwrap();
        assert_eq!(
            (
                hub.server.as_str(),
                hub.username.as_str(),
                hub.password.as_str()
            ),
            ("https://index.docker.io/v1/", "hub", "hubpw")
        );
        let local = find(&text, "127.0.0.1:5000").unwrap().unwrap();
        assert_eq!(
            (local.username.as_str(), local.password.as_str()),
            ("alice", "a:b")
        );
        let plain = find(&text, "reg.example.com").unwrap().unwrap();
        assert_eq!(
            (plain.username.as_str(), plain.password.as_str()),
            ("bob", "pw")
        );
        let token = find(&text, "tok.example.com").unwrap().unwrap();
        assert_eq!(token.identity_token.as_deref(), Some("t0k"));
        assert_eq!(find(&text, "other.example.com").unwrap(), None);
        assert_eq!(find("{}", "docker.io").unwrap(), None);
    }

    #[test]
    fn registries_kept_by_a_helper_name_it() {
        let helper = |text: &str, registry: &str| {
            lookup(Path::new("/auth.json"), text.as_bytes(), registry).unwrap()
        };
        let text = r#"{"auths": {"ghcr.io": {}}, "credHelpers": {"ghcr.io": "gh"}}"#;
        assert_eq!(helper(text, "ghcr.io"), Lookup::Helper("gh".into()));
        let store = r#"{"credsStore": "desktop", "credHelpers": {"ghcr.io": "gh"}}"#;
        assert_eq!(helper(store, "docker.io"), Lookup::Helper("desktop".into()));
        assert_eq!(helper(store, "ghcr.io"), Lookup::Helper("gh".into()));
        // A registry with its own credentials does not need the store.
        let both = format!(
            r#"{{"credsStore": "desktop", "auths": {{"a.io": {{"auth": "{}"}}}}}}"#,
            b64("u:p")
        );
        assert!(find(&both, "a.io").unwrap().is_some());
    }

    #[tokio::test]
    async fn a_helper_that_is_not_on_the_path_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("auth.json");
        std::fs::write(
            &file,
            r#"{"credHelpers": {"a.io": "flotilla-test-absent"}}"#,
        )
        .unwrap();
        let e = credentials("a.io/x:1", Some(&file), None)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("docker-credential-flotilla-test-absent")
                && e.contains("not on the shim's PATH"),
            "{e}"
        );
    }

    #[test]
    fn errors_never_show_a_secret() {
        let secret = "c3VwZXJzZWNyZXQ";
        for text in [
            format!(r#"{{"auths": {{"a.io": {{"auth": "{secret}!"}}}}}}"#),
            format!(r#"{{"auths": {{"a.io": {{"auth": ["{secret}"]}}}}}}"#),
            format!(r#"{{"auths": {{"a.io": {{"auth": "{secret}" "#),
            format!(r#"{{"auths": {{"a.io": {{"auth": "{}"}}}}}}"#, b64(secret)),
        ] {
            let e = find(&text, "a.io").unwrap_err();
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains(secret), "{shown}");
            assert!(shown.contains("/auth.json"), "{shown}");
        }
    }

    #[tokio::test]
    async fn a_missing_host_config_is_no_credentials_but_a_missing_auth_file_is_an_error() {
        let none = Path::new("/nonexistent/flotilla-auth");
        let found = credentials("a.io/x", None, Some(none)).await.unwrap();
        assert_eq!(found.auth, None);
        assert_eq!(found.source, None);
        let e = credentials("a.io/x", Some(&none.join("auth.json")), None)
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("/nonexistent/flotilla-auth/auth.json")
        );
    }
}
