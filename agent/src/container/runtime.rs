//! The container engine, behind the narrow seam the shim needs.
//!
//! [`ContainerRuntime`] is every call the shim makes to Docker: what the
//! engine is ([`ContainerRuntime::info`]), a container's life (create, start,
//! wait, stop, kill, remove), what it is ([`ContainerRuntime::inspect`]), its
//! output and its health events. [`super::docker::Docker`] is the real one
//! (Docker's Engine API over its socket, with bollard);
//! [`super::fake::FakeRuntime`] an in-memory engine for unit tests.
//!
//! Errors: [`RuntimeError::ImageNotFound`] and [`RuntimeError::Create`] are
//! the container's own fault (its image or its settings) and retrying does
//! not help; the pull's errors say what failed (the image is not in the
//! registry, the registry refused the credentials or could not be
//! reached); [`RuntimeError::Unavailable`] means the engine could not be
//! reached or failed, and may pass.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use flotilla_proto::Health;
use futures_util::Stream;

/// A stream the runtime hands out: boxed, so the trait stays object-free
/// and each implementation picks its own.
pub type BoxStream<T> = Pin<Box<dyn Stream<Item = T> + Send + 'static>>;

/// Why a call to the container engine failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The image is not in the local engine (it was removed after the
    /// pull, or `Pull=never`).
    #[error("image {image} is not in the local Docker engine")]
    ImageNotFound { image: String },
    /// The registry has no such image (or tag).
    #[error("image {image} is not in its registry: {message}")]
    ImageNotInRegistry { image: String, message: String },
    /// The registry refused the credentials, or wants some.
    #[error(
        "the registry refused to serve image {image} (wrong or missing credentials): {message}"
    )]
    RegistryDenied { image: String, message: String },
    /// The registry could not be reached.
    #[error("cannot reach the registry of image {image}: {message}")]
    RegistryUnreachable { image: String, message: String },
    /// A pull failed for another reason.
    #[error("pulling image {image} failed: {message}")]
    Pull { image: String, message: String },
    /// No container by that name or id.
    #[error("no container {0}")]
    NoSuchContainer(String),
    /// The engine refused the container's settings, or could not start it
    /// (an executable missing in the image, a port already taken).
    #[error("docker refused container {container}: {message}")]
    Create { container: String, message: String },
    /// The engine could not be reached, or failed; may be temporary.
    #[error("docker: {0}")]
    Unavailable(String),
}

/// Credentials for one registry. `Debug` does not show them.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    /// The registry, as its key in Docker's `auths`.
    pub server: String,
    pub username: String,
    pub password: String,
    /// An OAuth identity token, in place of the password.
    pub identity_token: Option<String>,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// One message of a pull's progress, as the engine sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullProgress {
    /// The layer (or tag) it is about, if any.
    pub id: Option<String>,
    /// `Pulling fs layer`, `Downloading`, `Pull complete`, ...
    pub status: String,
}

/// An image in the local engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalImage {
    pub id: String,
    /// The digests of the manifests it was pulled as: `NAME@sha256:...`.
    pub repo_digests: Vec<String>,
}

/// Docker's cgroup driver: where it puts a container's processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupDriver {
    /// Docker writes cgroups itself: a `cgroup_parent` path is used as is.
    Cgroupfs,
    /// Docker asks systemd for a scope unit `docker-<id>.scope` in the slice
    /// given as `cgroup_parent`.
    Systemd,
}

/// What the engine is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineInfo {
    pub cgroup_driver: CgroupDriver,
    /// The engine's version, for messages.
    pub version: String,
}

/// A container's health check, in Docker's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// Docker's `Test`: `["NONE"]`, `["CMD", ...]` or `["CMD-SHELL", cmd]`;
    /// empty keeps the image's.
    pub test: Vec<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub start_period: Option<Duration>,
    pub retries: Option<u32>,
}

/// A port published on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortBinding {
    /// `80/tcp`.
    pub container_port: String,
    /// Empty: every address.
    pub host_ip: String,
    /// Empty: a free port chosen by Docker.
    pub host_port: String,
}

/// Everything needed to create a container: [`super::config`] builds it
/// from a unit's `[Container]` section.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateConfig {
    pub name: String,
    pub image: String,
    /// Arguments after the image; empty keeps the image's `CMD`.
    pub cmd: Vec<String>,
    /// `None` keeps the image's entrypoint; `Some(vec![])` clears it.
    pub entrypoint: Option<Vec<String>>,
    /// `NAME=value`, in order (a later one wins).
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub ports: Vec<PortBinding>,
    /// Docker's bind and volume strings, `SOURCE:TARGET[:OPTIONS]`.
    pub binds: Vec<String>,
    /// Targets of new anonymous volumes.
    pub anonymous_volumes: Vec<String>,
    pub health: Option<HealthConfig>,
    /// A signal name (`SIGTERM`); `None` keeps the image's.
    pub stop_signal: Option<String>,
    pub stop_timeout: Duration,
    pub read_only: bool,
    pub init: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// A cgroup path (cgroupfs driver) or a slice name (systemd driver).
    pub cgroup_parent: String,
    /// Devices, limits, kernel settings, groups and security options.
    pub host: super::host_config::HostSettings,
    /// Networks, and the mounts beside `binds`.
    pub attach: super::network::AttachConfig,
}

/// What a command run in a container did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecResult {
    pub exit_code: i64,
    /// Its output, cut at [`MAX_EXEC_OUTPUT`] bytes.
    pub output: Vec<Output>,
}

/// The most output of a command run in a container that is kept.
pub const MAX_EXEC_OUTPUT: usize = 64 * 1024;

/// What the engine says about a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub running: bool,
    /// The host PID of its init process while it runs (0 when not).
    pub pid: u32,
    /// Its exit code once it has run and stopped.
    pub exit_code: Option<i64>,
    /// [`Health::None`] when it has no health check.
    pub health: Health,
    /// What the last health probe printed (cut to 4 KiB), if it ran.
    pub last_probe: Option<String>,
}

/// Which of the container's streams a piece of output comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// A piece of the container's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub stream: OutputStream,
    pub bytes: Vec<u8>,
}

/// Docker's engine, as the shim uses it. Every method is one call to the
/// engine; none retries.
pub trait ContainerRuntime: Send + Sync + 'static {
    /// The engine's cgroup driver and version.
    fn info(&self) -> impl Future<Output = Result<EngineInfo, RuntimeError>> + Send;

    /// The image in the local engine, or `None`.
    fn local_image(
        &self,
        image: &str,
    ) -> impl Future<Output = Result<Option<LocalImage>, RuntimeError>> + Send;

    /// The digest of the image's manifest in its registry
    /// (`sha256:...`), without pulling it.
    fn registry_digest(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;

    /// Pulls the image (a reference with a tag or digest): its progress,
    /// ending with an error if the pull fails. Dropping the stream cancels
    /// the pull.
    fn pull(
        &self,
        image: &str,
        auth: Option<RegistryAuth>,
    ) -> BoxStream<Result<PullProgress, RuntimeError>>;

    /// Creates (does not start) a container; returns its id.
    /// [`RuntimeError::ImageNotFound`] when the image is not local.
    fn create(
        &self,
        config: &CreateConfig,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;

    /// Starts a created container.
    fn start(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// The container with this name or id, or `None`.
    fn inspect(
        &self,
        name_or_id: &str,
    ) -> impl Future<Output = Result<Option<ContainerInfo>, RuntimeError>> + Send;

    /// Resolves with the container's exit code once it is not running
    /// (at once if it has already stopped).
    fn wait(&self, id: &str) -> impl Future<Output = Result<i64, RuntimeError>> + Send;

    /// Sends the container's stop signal, then SIGKILL after `timeout`;
    /// returns once it has stopped.
    fn stop(
        &self,
        id: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Sends `signal` (a name such as `SIGKILL`) to the container.
    fn kill(&self, id: &str, signal: &str)
    -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Runs `cmd` in the running container and waits for it to end.
    fn exec(
        &self,
        id: &str,
        cmd: &[String],
    ) -> impl Future<Output = Result<ExecResult, RuntimeError>> + Send;

    /// Removes the container, killing it first if it runs. `Ok(false)` when
    /// there was none.
    fn remove(&self, name_or_id: &str) -> impl Future<Output = Result<bool, RuntimeError>> + Send;

    /// The container's output from now on, until it exits. Attach before
    /// starting it to miss nothing.
    fn attach(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<BoxStream<Result<Output, RuntimeError>>, RuntimeError>> + Send;

    /// The container's health transitions from now on, as the engine
    /// reports them (events, not polling).
    fn health_events(&self, id: &str) -> BoxStream<Result<Health, RuntimeError>>;
}
