//! The image pulled before the container is created, as the unit's
//! `Pull=` says ([`ensure_image`]).
//!
//! - `missing` (the default): pull only when the image is not local.
//! - `always`: pull before every start; a failed pull fails the start.
//! - `never`: the image must be local ([`PullError::Never`]).
//! - `newer`: ask the registry for the digest of the image's manifest and
//!   pull when it differs from the local image's; if the registry cannot
//!   answer, the local image runs (with a warning in the journal).
//!
//! Units on one host that need the same image share its pull: a pull holds
//! a lock file per image in [`LOCK_DIR`], and a second shim waits for the
//! first; if the image changed (or appeared) while it waited, the other's
//! pull counts as its own. Docker itself shares layers between images and
//! between concurrent pulls of the same layer; flotilla relies on that, not
//! on the lock, for layers. The lock files are never removed (a removed
//! lock could be taken twice); they are empty and `/run` is cleared at
//! boot.
//!
//! The whole of it (the wait for another shim's pull included) is bounded
//! by the unit's start timeout, less a margin ([`pull_budget`]), so that
//! the unit fails with [`PullError::Timeout`] naming the timeout rather
//! than being killed by systemd without a word.
//!
//! The pull's progress goes to the journal, one line per layer and state
//! (`Pulling fs layer`, `Downloading`, `Pull complete`), not one per
//! progress tick.

use std::collections::HashMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flotilla_proto::container::{ImagePull, PullPolicy};

use super::auth::{self, AuthError};
use super::runtime::{ContainerRuntime, LocalImage, PullProgress, RuntimeError};
use futures_util::StreamExt;

/// Where the per-image lock files are.
pub const LOCK_DIR: &str = "/run/flotilla/pull";

/// How often a shim waiting for another's pull tries the lock.
const LOCK_POLL: Duration = Duration::from_millis(100);

/// The most the margin between the pull's end and the start timeout is.
const MAX_MARGIN: Duration = Duration::from_secs(5);

/// Why the image could not be made ready. No variant carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(
        "image {image} is not on this host and Pull=never forbids pulling it: load it on the host, or set Pull=missing"
    )]
    Never { image: String },
    #[error(
        "pulling image {image} did not finish within the unit's start timeout (TimeoutStartSec={timeout}s): raise TimeoutStartSec= in [Service], or pull the image on the host beforehand"
    )]
    Timeout { image: String, timeout: u64 },
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("{source}{hint}")]
    Runtime {
        source: RuntimeError,
        /// What the shim knows that Docker did not say (no credentials
        /// were found), or empty.
        hint: String,
    },
    #[error("cannot take the lock {path} that shares pulls of an image: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl From<RuntimeError> for PullError {
    fn from(source: RuntimeError) -> Self {
        PullError::Runtime {
            source,
            hint: String::new(),
        }
    }
}

/// What [`ensure_image`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The local image is used without asking the registry.
    Local,
    /// The registry has the same image as the host (`Pull=newer`).
    UpToDate,
    /// The image was pulled.
    Pulled,
    /// Another unit pulled it while this one waited.
    Shared,
}

/// Where the shim keeps its locks and finds the host's credentials.
#[derive(Debug, Clone)]
pub struct PullSettings {
    /// [`LOCK_DIR`], elsewhere in tests.
    pub lock_dir: PathBuf,
    /// `DOCKER_CONFIG`: a directory with a `config.json`; `None` for
    /// [`auth::HOST_CONFIG`].
    pub docker_config: Option<PathBuf>,
}

impl Default for PullSettings {
    fn default() -> Self {
        PullSettings {
            lock_dir: PathBuf::from(LOCK_DIR),
            docker_config: std::env::var_os("DOCKER_CONFIG").map(PathBuf::from),
        }
    }
}

/// How long the pull may take for a unit whose start timeout is
/// `timeout` (`None`: no start timeout): the timeout less a fifth of it,
/// at most 5s, left for creating the container and reporting.
pub fn pull_budget(timeout: Option<Duration>) -> Option<Duration> {
    let timeout = timeout?;
    Some(timeout - (timeout / 5).min(MAX_MARGIN))
}

/// Makes `image` ready on the host as `pull` asks. When it must ask the
/// registry, it awaits `start_timeout` (the unit's, `None` without one)
/// and does the rest within [`pull_budget`] of it. `pulling` is called
/// when a pull starts.
pub async fn ensure_image<R: ContainerRuntime>(
    runtime: &R,
    image: &str,
    pull: &ImagePull,
    settings: &PullSettings,
    start_timeout: impl Future<Output = Option<Duration>>,
    pulling: impl FnOnce(),
) -> Result<Outcome, PullError> {
    let local = runtime.local_image(image).await?;
    match (pull.policy, &local) {
        (PullPolicy::Never, None) => {
            return Err(PullError::Never {
                image: image.to_owned(),
            });
        }
        (PullPolicy::Never | PullPolicy::Missing, Some(_)) => return Ok(Outcome::Local),
        _ => {}
    }
    let timeout = start_timeout.await;
    let work = from_registry(runtime, image, pull, settings, local, pulling);
    match pull_budget(timeout) {
        None => work.await,
        Some(budget) => tokio::time::timeout(budget, work)
            .await
            .unwrap_or_else(|_| {
                Err(PullError::Timeout {
                    image: image.to_owned(),
                    timeout: timeout.unwrap_or(budget).as_secs(),
                })
            }),
    }
}

/// The part of [`ensure_image`] that asks the registry, under the lock.
async fn from_registry<R: ContainerRuntime>(
    runtime: &R,
    image: &str,
    pull: &ImagePull,
    settings: &PullSettings,
    local: Option<LocalImage>,
    pulling: impl FnOnce(),
) -> Result<Outcome, PullError> {
    let (_lock, waited) = lock(&settings.lock_dir, image).await?;
    if waited {
        let now = runtime.local_image(image).await?;
        if now.is_some() && now.as_ref().map(|i| &i.id) != local.as_ref().map(|i| &i.id) {
            tracing::info!("image {image} was pulled for another unit meanwhile");
            return Ok(Outcome::Shared);
        }
    }
    let found = auth::credentials(
        image,
        pull.auth_file.as_deref().map(Path::new),
        settings.docker_config.as_deref(),
    )
    .await?;
    if let (PullPolicy::Newer, Some(local)) = (pull.policy, &local) {
        match runtime.registry_digest(image, found.auth.as_ref()).await {
            Ok(digest) => {
                let suffix = format!("@{digest}");
                if local.repo_digests.iter().any(|d| d.ends_with(&suffix)) {
                    tracing::info!("image {image} is up to date with its registry ({digest})");
                    return Ok(Outcome::UpToDate);
                }
                tracing::info!("the registry has a newer image {image} ({digest})");
            }
            Err(e) => {
                tracing::warn!(
                    "cannot check the registry for a newer image {image}: {e}; running the local image"
                );
                return Ok(Outcome::Local);
            }
        }
    }
    pulling();
    match &found.source {
        Some(path) if found.auth.is_some() => tracing::info!(
            "pulling image {image} with the credentials for {} in {}",
            auth::registry_of(image),
            path.display()
        ),
        _ => tracing::info!("pulling image {image}"),
    }
    let mut progress = Progress::default();
    let mut stream = runtime.pull(image, found.auth.clone());
    while let Some(item) = stream.next().await {
        match item {
            Ok(p) => {
                if let Some(line) = progress.line(&p) {
                    tracing::info!("pull {image}: {line}");
                }
            }
            Err(source) => {
                let hint = match (&source, &found.auth) {
                    (RuntimeError::RegistryDenied { .. } | RuntimeError::Pull { .. }, None) => {
                        format!(
                            " (this host has no credentials for registry {}: {})",
                            auth::registry_of(image),
                            match &found.source {
                                Some(path) => format!("none in {}", path.display()),
                                None => format!(
                                    "no AuthFile= and no {}",
                                    settings
                                        .docker_config
                                        .as_ref()
                                        .map(|d| d.join("config.json"))
                                        .unwrap_or_else(|| PathBuf::from(auth::HOST_CONFIG))
                                        .display()
                                ),
                            }
                        )
                    }
                    _ => String::new(),
                };
                return Err(PullError::Runtime { source, hint });
            }
        }
    }
    tracing::info!("pulled image {image}");
    Ok(Outcome::Pulled)
}

/// The pull's progress, throttled: a line when a layer's state changes.
#[derive(Debug, Default)]
pub struct Progress {
    last: HashMap<String, String>,
}

impl Progress {
    /// The journal's line for this message, or `None` when it repeats the
    /// state of its layer (a progress tick).
    pub fn line(&mut self, p: &PullProgress) -> Option<String> {
        let key = p.id.clone().unwrap_or_default();
        if p.status.is_empty() || self.last.get(&key) == Some(&p.status) {
            return None;
        }
        self.last.insert(key, p.status.clone());
        Some(match &p.id {
            Some(id) => format!("{id}: {}", p.status),
            None => p.status.clone(),
        })
    }
}

/// The lock file of `image` in `dir`: its name readable, with a hash of
/// the whole reference so that two references never share one.
pub fn lock_path(dir: &Path, image: &str) -> PathBuf {
    // FNV-1a: stable across builds, unlike std's hasher.
    let hash = image.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let readable: String = image
        .chars()
        .take(100)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("{readable}-{hash:016x}.lock"))
}

/// Takes `image`'s lock, waiting while another process holds it; whether
/// it had to wait.
async fn lock(dir: &Path, image: &str) -> Result<(File, bool), PullError> {
    let path = lock_path(dir, image);
    let err = |source| PullError::Lock {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(err)?;
    let mut waited = false;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok((file, waited)),
            Err(TryLockError::WouldBlock) => {
                if !waited {
                    tracing::info!("waiting for another unit's pull of image {image}");
                }
                waited = true;
                tokio::time::sleep(LOCK_POLL).await;
            }
            Err(TryLockError::Error(e)) => return Err(err(e)),
        }
    }
}
