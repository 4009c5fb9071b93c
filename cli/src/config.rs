//! The client's configuration file, as kubectl has its kubeconfig: the
//! clusters this user talks to (endpoint, CA, credential), and which one is
//! current. `flotilla dev` and `deploy/local-cluster` write it, so the CLI
//! needs no flags or copy-paste; flags and `FLOTILLA_*` variables override
//! it.
//!
//! ```yaml
//! # ~/.config/flotilla/config.yaml
//! current: dev
//! clusters:
//!   dev:
//!     endpoint: [https://127.0.0.1:7070]
//!     ca: /var/lib/flotilla-dev/tls/ca.crt
//!     token-file: /var/lib/flotilla-dev/admin.token
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// The variable that names another configuration file.
pub const CONFIG_VAR: &str = "FLOTILLA_CLIENT_CONFIG";

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigFile {
    /// The cluster used when none is named (`--cluster`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    #[serde(default)]
    pub clusters: BTreeMap<String, ClusterEntry>,
}

/// One cluster: where it is, whom to trust, and what to show it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClusterEntry {
    /// The servers, tried in order.
    #[serde(default, deserialize_with = "one_or_many")]
    pub endpoint: Vec<String>,
    /// The cluster CA's certificate (PEM file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// A token, in the file itself (prefer `token-file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A file holding the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// A client certificate and its key (PEM files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s
            .split(',')
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty())
            .collect(),
        OneOrMany::Many(v) => v,
    })
}

/// Where the file is: `$FLOTILLA_CLIENT_CONFIG`, else
/// `$XDG_CONFIG_HOME/flotilla/config.yaml`, else
/// `~/.config/flotilla/config.yaml`.
pub fn default_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(CONFIG_VAR).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|p| !p.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })?;
    Some(base.join("flotilla").join("config.yaml"))
}

impl ConfigFile {
    /// Reads the file at `path`; an absent file is an empty configuration.
    pub fn load(path: &Path) -> anyhow::Result<ConfigFile> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_norway::from_str(&text)
                .with_context(|| format!("client configuration {} is not valid", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes the file (readable by its owner only: it may hold a token).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_norway::to_string(self).context("encoding the client configuration")?;
        let text = format!("# flotilla's client configuration (flotilla config --help)\n{text}");
        flotilla_api::files::write_atomically(path, text.as_bytes(), 0o600)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// The entry of `name`, or of the current cluster when `name` is
    /// `None`; `None` when there is no current cluster.
    pub fn entry(&self, name: Option<&str>) -> anyhow::Result<Option<&ClusterEntry>> {
        let Some(name) = name.or(self.current.as_deref()) else {
            return Ok(None);
        };
        match self.clusters.get(name) {
            Some(e) => Ok(Some(e)),
            None => bail!(
                "no cluster {name:?} in the client configuration (clusters: {})",
                if self.clusters.is_empty() {
                    "none".to_owned()
                } else {
                    self.clusters.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            ),
        }
    }
}

/// Adds or replaces the cluster `name` in the client configuration at
/// `path` (the default when `None`), and makes it current when `current`
/// or when there is no current cluster. Returns the file written.
pub fn set_cluster(
    path: Option<&Path>,
    name: &str,
    entry: ClusterEntry,
    current: bool,
) -> anyhow::Result<PathBuf> {
    let path = match path {
        Some(p) => p.to_owned(),
        None => default_path().context(
            "cannot tell where the client configuration goes: set HOME or FLOTILLA_CLIENT_CONFIG",
        )?,
    };
    let mut file = ConfigFile::load(&path)?;
    file.clusters.insert(name.to_owned(), entry);
    if current || file.current.is_none() {
        file.current = Some(name.to_owned());
    }
    file.save(&path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_writes_and_selects_clusters() {
        let dir = std::env::temp_dir().join(format!("flotilla-config-{}", std::process::id()));
        let path = dir.join("config.yaml");
        let entry = ClusterEntry {
            endpoint: vec!["https://a:1".into()],
            ca: Some("/ca.crt".into()),
            token_file: Some("/t".into()),
            ..ClusterEntry::default()
        };
        set_cluster(Some(&path), "dev", entry.clone(), false).unwrap();
        let mut other = entry.clone();
        other.endpoint = vec!["https://b:1".into()];
        set_cluster(Some(&path), "prod", other.clone(), false).unwrap();
        let file = ConfigFile::load(&path).unwrap();
        assert_eq!(
            file.current.as_deref(),
            Some("dev"),
            "the first stays current"
        );
        assert_eq!(file.entry(None).unwrap(), Some(&entry));
        assert_eq!(file.entry(Some("prod")).unwrap(), Some(&other));
        assert!(file.entry(Some("nope")).is_err());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let one: ConfigFile =
            serde_norway::from_str("clusters:\n  x:\n    endpoint: https://a:1, https://b:2\n")
                .unwrap();
        assert_eq!(one.clusters["x"].endpoint, ["https://a:1", "https://b:2"]);
        assert!(serde_norway::from_str::<ConfigFile>("clusters:\n  x:\n    tokn: y\n").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
