//! `Secret=` on the host: the agent writes the values of a unit's secrets
//! to tmpfs, `/run/flotilla/secrets/UNIT/NAME` (mode 0400, root), and the
//! shim bind-mounts them read-only into the container, or reads them into
//! its environment (`type=env`).
//!
//! A mounted secret with its own `uid=`, `gid=` or `mode=` gets a file of
//! its own beside (`NAME.UID-GID-MODE`), owned and moded as asked: a bind
//! mount shows the host file's owner and mode in the container.
//!
//! Files are written whole to a temporary name and renamed, so that a
//! container never sees half a value; a unit's directory is removed when
//! no unit of the machine needs it.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use flotilla_api::client::{Client, ClientError, OpenedSecret};
use flotilla_proto::container::secret::DEFAULT_SECRET_MODE;
use flotilla_proto::container::{ContainerSecrets, ContainerSpec, SecretDelivery, SecretUse};
use flotilla_proto::wire::AssignedUnit;
use flotilla_proto::{MachineId, UnitName, UnitSpec};

/// Where the agent keeps secrets' values: tmpfs, never on disk.
pub const SECRETS_DIR: &str = "/run/flotilla/secrets";

/// Why secrets could not be put in place or read.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("cannot fetch the secrets of {unit}: {source}")]
    Fetch { unit: String, source: ClientError },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "secret {name} of {unit} is not on this host at {path}: the agent writes it before it starts the unit ({source})"
    )]
    Missing {
        name: String,
        unit: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "secret {name} is not UTF-8 text without NUL bytes, so it cannot be the environment variable {var}"
    )]
    NotText { name: String, var: String },
}

/// The directory of `unit`'s secrets under `root`.
pub fn unit_dir(root: &Path, unit: &str) -> PathBuf {
    root.join(unit)
}

/// The host file a use of a secret reads.
pub fn file_of(root: &Path, unit: &str, u: &SecretUse) -> PathBuf {
    let dir = unit_dir(root, unit);
    match &u.delivery {
        SecretDelivery::Mount { uid, gid, mode, .. }
            if (*uid, *gid, *mode) != (0, 0, DEFAULT_SECRET_MODE) =>
        {
            dir.join(format!("{}.{uid}-{gid}-{mode:o}", u.name))
        }
        _ => dir.join(&u.name),
    }
}

/// Docker binds of the unit's mounted secrets: read-only.
pub fn binds(spec: &ContainerSpec, unit: &UnitName) -> Vec<String> {
    let root = Path::new(SECRETS_DIR);
    spec.secrets
        .uses
        .iter()
        .filter_map(|u| match &u.delivery {
            SecretDelivery::Mount { target, .. } => Some(format!(
                "{}:{target}:ro",
                file_of(root, unit.as_str(), u).display()
            )),
            SecretDelivery::Env { .. } => None,
        })
        .collect()
}

/// Before the container is made: checks that every mounted secret's file
/// is there (Docker would make a directory in its place), and returns the
/// `VAR=value` of the `type=env` ones.
pub fn prepare(
    spec: &ContainerSpec,
    unit: &UnitName,
    root: &Path,
) -> Result<Vec<String>, SecretsError> {
    let mut env = Vec::new();
    for u in &spec.secrets.uses {
        let path = file_of(root, unit.as_str(), u);
        let missing = |source| SecretsError::Missing {
            name: u.name.clone(),
            unit: unit.to_string(),
            path: path.clone(),
            source,
        };
        match &u.delivery {
            SecretDelivery::Mount { .. } => {
                std::fs::metadata(&path).map_err(missing)?;
            }
            SecretDelivery::Env { target } => {
                let bytes = std::fs::read(&path).map_err(missing)?;
                let text = String::from_utf8(bytes)
                    .ok()
                    .filter(|t| !t.contains('\0'))
                    .ok_or_else(|| SecretsError::NotText {
                        name: u.name.clone(),
                        var: target.clone(),
                    })?;
                env.push(format!("{target}={text}"));
            }
        }
    }
    Ok(env)
}

/// Writes `unit`'s secrets under `root`: each use's file, then removes
/// files of the unit no use needs any more.
pub fn write_unit(
    root: &Path,
    unit: &str,
    secrets: &ContainerSecrets,
    values: &[OpenedSecret],
) -> Result<(), SecretsError> {
    let dir = unit_dir(root, unit);
    let failed = |path: &Path| {
        let path = path.to_owned();
        move |source| SecretsError::Write { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(failed(&dir))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(failed(&dir))?;
    let mut wanted = Vec::new();
    for u in &secrets.uses {
        let Some(value) = values.iter().find(|v| v.name == u.name) else {
            continue;
        };
        let path = file_of(root, unit, u);
        let (uid, gid, mode) = match &u.delivery {
            SecretDelivery::Mount { uid, gid, mode, .. } => (*uid, *gid, *mode),
            SecretDelivery::Env { .. } => (0, 0, DEFAULT_SECRET_MODE),
        };
        let tmp = dir.join(format!(
            ".{}.tmp",
            path.file_name().unwrap_or_default().to_string_lossy()
        ));
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .open(&tmp)
            .map_err(failed(&tmp))?;
        file.write_all(&value.value).map_err(failed(&tmp))?;
        drop(file);
        std::os::unix::fs::chown(&tmp, Some(uid), Some(gid)).map_err(failed(&tmp))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
            .map_err(failed(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(failed(&path))?;
        wanted.push(path);
    }
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            if !wanted.contains(&entry.path()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    Ok(())
}

/// The agent's side: keeps the secrets of the machine's container units
/// on the host, as the feed's versions say.
#[derive(Debug)]
pub struct SecretSync {
    client: Client,
    machine: MachineId,
    root: PathBuf,
    /// The versions written for each unit.
    written: HashMap<String, BTreeMap<String, u64>>,
}

impl SecretSync {
    pub fn new(client: Client, machine: MachineId, root: PathBuf) -> SecretSync {
        SecretSync {
            client,
            machine,
            root,
            written: HashMap::new(),
        }
    }

    /// Before a pass: fetches and writes the secrets of every scheduled
    /// unit whose versions changed, and removes those of units no longer
    /// here (or that use none). Returns the units whose secrets could not
    /// be put in place, with why: the pass leaves them alone.
    pub async fn sync(&mut self, feed: &[AssignedUnit]) -> BTreeMap<String, String> {
        let mut failed = BTreeMap::new();
        let mut keep = Vec::new();
        for unit in feed {
            if !unit.desired_state.is_scheduled() || unit.secrets.is_empty() {
                continue;
            }
            // A unit that names a secret that does not exist is refused
            // by the pass (which says which); none of its secrets are kept.
            let Some(secrets) = uses_of(unit) else {
                continue;
            };
            if secrets
                .names()
                .iter()
                .any(|n| !unit.secrets.contains_key(*n))
            {
                continue;
            }
            keep.push(unit.name.clone());
            let dir = unit_dir(&self.root, &unit.name);
            if self.written.get(&unit.name) == Some(&unit.secrets) && dir.exists() {
                continue;
            }
            let written = match self.client.unit_secrets(&self.machine, &unit.name).await {
                Ok(values) => {
                    write_unit(&self.root, &unit.name, &secrets, &values).map(|()| values.len())
                }
                Err(source) => Err(SecretsError::Fetch {
                    unit: unit.name.clone(),
                    source,
                }),
            };
            match written {
                Ok(count) => {
                    tracing::info!(unit = %unit.name, secrets = count, "secrets written");
                    self.written.insert(unit.name.clone(), unit.secrets.clone());
                }
                Err(e) => {
                    tracing::warn!("{e}");
                    failed.insert(unit.name.clone(), e.to_string());
                }
            }
        }
        self.written.retain(|name, _| keep.contains(name));
        if let Ok(entries) = std::fs::read_dir(&self.root) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !keep.contains(&name) {
                    let _ = std::fs::remove_dir_all(entry.path());
                    tracing::info!(unit = %name, "secrets removed");
                }
            }
        }
        failed
    }
}

fn uses_of(unit: &AssignedUnit) -> Option<ContainerSecrets> {
    let name = UnitName::parse(&unit.name).ok()?;
    let checked = UnitSpec::check_named(name.as_str(), &name, &unit.text).ok()?;
    checked.spec.container.map(|c| c.secrets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_proto::container::secret::parse_secret;

    fn opened(name: &str, value: &[u8]) -> OpenedSecret {
        OpenedSecret {
            name: name.into(),
            version: 1,
            value: value.to_vec(),
        }
    }

    #[test]
    fn files_modes_and_env() {
        let root = tempfile::tempdir().unwrap();
        let spec_text = "[Container]\nImage=x\nSecret=a\nSecret=a,target=/b,mode=0440\nSecret=t,type=env,target=TOKEN\n";
        let unit = UnitName::parse("web.service").unwrap();
        let spec = UnitSpec::check_named("web.service", &unit, spec_text)
            .unwrap()
            .spec
            .container
            .unwrap();
        // Not there yet: the shim refuses to start.
        assert!(matches!(
            prepare(&spec, &unit, root.path()),
            Err(SecretsError::Missing { .. })
        ));
        write_unit(
            root.path(),
            "web.service",
            &spec.secrets,
            &[opened("a", b"va"), opened("t", b"tok")],
        )
        .unwrap();
        let dir = root.path().join("web.service");
        let mode = |p: &str| std::fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("a"), 0o400);
        assert_eq!(mode("a.0-0-440"), 0o440);
        assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"va");
        assert_eq!(
            prepare(&spec, &unit, root.path()).unwrap(),
            vec!["TOKEN=tok"]
        );
        let b = binds(&spec, &unit);
        assert_eq!(
            b,
            vec![
                "/run/flotilla/secrets/web.service/a:/run/secrets/a:ro",
                "/run/flotilla/secrets/web.service/a.0-0-440:/b:ro"
            ]
        );
        // A use dropped: its file goes.
        let fewer = ContainerSecrets {
            uses: vec![parse_secret("a").unwrap()],
        };
        write_unit(root.path(), "web.service", &fewer, &[opened("a", b"v2")]).unwrap();
        assert!(!dir.join("t").exists());
        assert!(!dir.join("a.0-0-440").exists());
        assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"v2");
    }
}
