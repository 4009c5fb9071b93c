//! An in-memory container engine that behaves like Docker where the shim
//! relies on it, for unit tests: names are unique, a missing image fails
//! `create`, `wait` resolves with the exit code once the container stops,
//! `stop` and `kill` end it with 128 + the signal, and health transitions
//! reach `health_events` subscribers. Tests drive the container from
//! outside ([`FakeRuntime::exit`], [`FakeRuntime::set_health`],
//! [`FakeRuntime::emit`]), read the calls made ([`FakeRuntime::calls`]),
//! and inject errors ([`FakeRuntime::fail_next`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use flotilla_proto::Health;
use tokio::sync::{broadcast, mpsc, watch};

use super::runtime::{
    BoxStream, CgroupDriver, ContainerInfo, ContainerRuntime, CreateConfig, EngineInfo, ExecResult,
    LocalImage, Output, PullProgress, RegistryAuth, RuntimeError,
};

/// A call made to the fake, with its main argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Info,
    LocalImage(String),
    RegistryDigest(String),
    Pull(String),
    Create(String),
    Start(String),
    Inspect(String),
    Wait(String),
    Stop(String, Duration),
    Kill(String, String),
    Exec(String, Vec<String>),
    Remove(String),
    Attach(String),
    HealthEvents(String),
}

impl Call {
    fn method(&self) -> &'static str {
        match self {
            Call::Info => "info",
            Call::LocalImage(_) => "local_image",
            Call::RegistryDigest(_) => "registry_digest",
            Call::Pull(_) => "pull",
            Call::Create(_) => "create",
            Call::Start(_) => "start",
            Call::Inspect(_) => "inspect",
            Call::Wait(_) => "wait",
            Call::Stop(..) => "stop",
            Call::Kill(..) => "kill",
            Call::Exec(..) => "exec",
            Call::Remove(_) => "remove",
            Call::Attach(_) => "attach",
            Call::HealthEvents(_) => "health_events",
        }
    }
}

#[derive(Debug)]
struct Container {
    id: String,
    config: CreateConfig,
    running: bool,
    started: bool,
    pid: u32,
    health: Health,
    /// The exit code once it has stopped.
    exited: watch::Sender<Option<i64>>,
    output: Vec<mpsc::UnboundedSender<Output>>,
    health_tx: broadcast::Sender<Health>,
}

#[derive(Debug)]
struct State {
    driver: CgroupDriver,
    /// Local images, with the digest each was pulled as.
    images: BTreeMap<String, String>,
    /// The registry's images, by reference, with their digests.
    registry: BTreeMap<String, String>,
    /// The credentials of the last pull or registry lookup.
    last_auth: Option<RegistryAuth>,
    /// Pulls never end (a registry that does not answer).
    hang_pulls: bool,
    containers: Vec<Container>,
    calls: Vec<Call>,
    faults: HashMap<&'static str, RuntimeError>,
    /// Containers whose stop signal is ignored: `stop` ends them with SIGKILL.
    ignore_stop_signal: bool,
    next: u32,
    on_start: Option<StartHook>,
}

/// A callback with a container's id and PID.
type OnStart = dyn Fn(&str, u32) + Send + Sync;

/// Runs when a container starts, with its id and PID.
#[derive(Clone)]
struct StartHook(Arc<OnStart>);

impl std::fmt::Debug for StartHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StartHook")
    }
}

/// The in-memory engine; clones share it.
#[derive(Debug, Clone)]
pub struct FakeRuntime {
    state: Arc<Mutex<State>>,
}

impl FakeRuntime {
    /// An engine with this cgroup driver and these local images.
    pub fn new(driver: CgroupDriver, images: &[&str]) -> FakeRuntime {
        FakeRuntime {
            state: Arc::new(Mutex::new(State {
                driver,
                images: images
                    .iter()
                    .map(|i| ((*i).to_owned(), "sha256:local".to_owned()))
                    .collect(),
                registry: BTreeMap::new(),
                last_auth: None,
                hang_pulls: false,
                containers: Vec::new(),
                calls: Vec::new(),
                faults: HashMap::new(),
                ignore_stop_signal: false,
                next: 1,
                on_start: None,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock fails anyway.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The registry serves `image` with manifest `digest`.
    pub fn publish(&self, image: &str, digest: &str) {
        self.lock()
            .registry
            .insert(image.to_owned(), digest.to_owned());
    }

    /// `image` is local, as pulled with manifest `digest`.
    pub fn add_image(&self, image: &str, digest: &str) {
        self.lock()
            .images
            .insert(image.to_owned(), digest.to_owned());
    }

    /// The local image's digest, if the image is local.
    pub fn local_digest(&self, image: &str) -> Option<String> {
        self.lock().images.get(image).cloned()
    }

    /// The credentials the last pull or registry lookup was given.
    pub fn last_auth(&self) -> Option<RegistryAuth> {
        self.lock().last_auth.clone()
    }

    /// Pulls hang from now on, as with a registry that does not answer.
    pub fn hang_pulls(&self) {
        self.lock().hang_pulls = true;
    }

    /// The calls made so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The next call of `method` (`"create"`, `"stop"`, ...) fails with
    /// `error`.
    pub fn fail_next(&self, method: &'static str, error: RuntimeError) {
        self.lock().faults.insert(method, error);
    }

    /// Containers ignore their stop signal from now on (as a busybox
    /// `sleep` as PID 1 ignores SIGTERM): `stop` kills them.
    pub fn ignore_stop_signal(&self) {
        self.lock().ignore_stop_signal = true;
    }

    /// Runs `f(id, pid)` whenever a container starts (tests lay out its
    /// `/proc` and cgroup files there).
    pub fn on_start(&self, f: impl Fn(&str, u32) + Send + Sync + 'static) {
        self.lock().on_start = Some(StartHook(Arc::new(f)));
    }

    /// Adds a container outside the shim (a leftover, a user's own).
    pub fn add_container(&self, name: &str, labels: &[(&str, &str)], running: bool) -> String {
        let mut s = self.lock();
        let config = CreateConfig {
            name: name.to_owned(),
            image: "leftover".to_owned(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        };
        let id = new_container(&mut s, config);
        if running {
            start_container(&mut s, &id);
        }
        id
    }

    /// The container with this name or id, as the engine has it.
    pub fn container(&self, name_or_id: &str) -> Option<ContainerInfo> {
        let s = self.lock();
        find(&s, name_or_id).map(|i| info(&s.containers[i]))
    }

    /// The configuration a container was created with.
    pub fn config(&self, name_or_id: &str) -> Option<CreateConfig> {
        let s = self.lock();
        find(&s, name_or_id).map(|i| s.containers[i].config.clone())
    }

    /// How many containers exist.
    pub fn len(&self) -> usize {
        self.lock().containers.len()
    }

    /// Whether there is no container.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The container's process exits with `code`.
    pub fn exit(&self, name_or_id: &str, code: i64) {
        let mut s = self.lock();
        if let Some(i) = find(&s, name_or_id) {
            end(&mut s.containers[i], code);
        }
    }

    /// The container's health check reports `health`.
    pub fn set_health(&self, name_or_id: &str, health: Health) {
        let mut s = self.lock();
        if let Some(i) = find(&s, name_or_id) {
            let c = &mut s.containers[i];
            if c.running && c.health != health {
                c.health = health;
                let _ = c.health_tx.send(health);
            }
        }
    }

    /// The container writes `output`.
    pub fn emit(&self, name_or_id: &str, output: Output) {
        let mut s = self.lock();
        if let Some(i) = find(&s, name_or_id) {
            s.containers[i]
                .output
                .retain(|tx| tx.send(output.clone()).is_ok());
        }
    }

    fn call(&self, call: Call) -> Result<MutexGuard<'_, State>, RuntimeError> {
        let mut s = self.lock();
        let method = call.method();
        s.calls.push(call);
        match s.faults.remove(method) {
            Some(e) => Err(e),
            None => Ok(s),
        }
    }
}

fn find(s: &State, name_or_id: &str) -> Option<usize> {
    s.containers
        .iter()
        .position(|c| c.config.name == name_or_id || c.id == name_or_id)
}

fn new_container(s: &mut State, config: CreateConfig) -> String {
    let id = format!("{:064x}", u64::from(s.next) * 0x1000_0001);
    s.next += 1;
    s.containers.push(Container {
        id: id.clone(),
        config,
        running: false,
        started: false,
        pid: 0,
        health: Health::None,
        exited: watch::channel(None).0,
        output: Vec::new(),
        health_tx: broadcast::channel(16).0,
    });
    id
}

fn start_container(s: &mut State, id: &str) {
    let pid = 1000 + s.next;
    s.next += 1;
    if let Some(i) = find(s, id) {
        let c = &mut s.containers[i];
        c.running = true;
        c.started = true;
        c.pid = pid;
        let checks = c
            .config
            .health
            .as_ref()
            .is_some_and(|h| h.test.first().is_some_and(|t| t != "NONE"));
        c.health = if checks {
            Health::Starting
        } else {
            Health::None
        };
        c.exited.send_replace(None);
    }
}

fn end(c: &mut Container, code: i64) {
    if c.running {
        c.running = false;
        c.pid = 0;
        c.exited.send_replace(Some(code));
        // Its output ends with it.
        c.output.clear();
    }
}

fn info(c: &Container) -> ContainerInfo {
    ContainerInfo {
        id: c.id.clone(),
        name: c.config.name.clone(),
        labels: c.config.labels.clone(),
        running: c.running,
        pid: c.pid,
        exit_code: if c.running || !c.started {
            None
        } else {
            *c.exited.borrow()
        },
        health: c.health,
        last_probe: None,
    }
}

/// Linux's number of a signal name the shim uses.
fn signal_number(signal: &str) -> i64 {
    match signal.trim_start_matches("SIG") {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "KILL" => 9,
        "USR1" => 10,
        "USR2" => 12,
        _ => 15,
    }
}

impl ContainerRuntime for FakeRuntime {
    async fn info(&self) -> Result<EngineInfo, RuntimeError> {
        let s = self.call(Call::Info)?;
        Ok(EngineInfo {
            cgroup_driver: s.driver,
            version: "fake".to_owned(),
        })
    }

    async fn local_image(&self, image: &str) -> Result<Option<LocalImage>, RuntimeError> {
        let s = self.call(Call::LocalImage(image.to_owned()))?;
        Ok(s.images.get(image).map(|digest| LocalImage {
            id: format!("image-{digest}"),
            repo_digests: vec![format!("{image}@{digest}")],
        }))
    }

    async fn registry_digest(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<String, RuntimeError> {
        let mut s = self.call(Call::RegistryDigest(image.to_owned()))?;
        s.last_auth = auth.cloned();
        s.registry
            .get(image)
            .cloned()
            .ok_or_else(|| RuntimeError::ImageNotInRegistry {
                image: image.to_owned(),
                message: "manifest unknown".to_owned(),
            })
    }

    fn pull(
        &self,
        image: &str,
        auth: Option<RegistryAuth>,
    ) -> BoxStream<Result<PullProgress, RuntimeError>> {
        let mut s = match self.call(Call::Pull(image.to_owned())) {
            Ok(s) => s,
            Err(e) => return Box::pin(futures_util::stream::iter([Err(e)])),
        };
        s.last_auth = auth;
        if s.hang_pulls {
            return Box::pin(futures_util::stream::pending());
        }
        let Some(digest) = s.registry.get(image).cloned() else {
            return Box::pin(futures_util::stream::iter([Err(
                RuntimeError::ImageNotInRegistry {
                    image: image.to_owned(),
                    message: "manifest unknown".to_owned(),
                },
            )]));
        };
        s.images.insert(image.to_owned(), digest);
        let layer = |status: &str| {
            Ok(PullProgress {
                id: Some("layer1".to_owned()),
                status: status.to_owned(),
            })
        };
        Box::pin(futures_util::stream::iter([
            layer("Pulling fs layer"),
            layer("Downloading"),
            layer("Downloading"),
            layer("Downloading"),
            layer("Pull complete"),
        ]))
    }

    async fn create(&self, config: &CreateConfig) -> Result<String, RuntimeError> {
        let mut s = self.call(Call::Create(config.name.clone()))?;
        if !s.images.contains_key(&config.image) {
            return Err(RuntimeError::ImageNotFound {
                image: config.image.clone(),
            });
        }
        if find(&s, &config.name).is_some() {
            return Err(RuntimeError::Create {
                container: config.name.clone(),
                message: format!("the container name \"/{}\" is already in use", config.name),
            });
        }
        Ok(new_container(&mut s, config.clone()))
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let (hook, pid) = {
            let mut s = self.call(Call::Start(id.to_owned()))?;
            let Some(i) = find(&s, id) else {
                return Err(RuntimeError::NoSuchContainer(id.to_owned()));
            };
            start_container(&mut s, id);
            (s.on_start.clone(), s.containers[i].pid)
        };
        if let Some(StartHook(f)) = hook {
            f(id, pid);
        }
        Ok(())
    }

    async fn inspect(&self, name_or_id: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
        let s = self.call(Call::Inspect(name_or_id.to_owned()))?;
        Ok(find(&s, name_or_id).map(|i| info(&s.containers[i])))
    }

    async fn wait(&self, id: &str) -> Result<i64, RuntimeError> {
        let mut exited = {
            let s = self.call(Call::Wait(id.to_owned()))?;
            let i = find(&s, id).ok_or_else(|| RuntimeError::NoSuchContainer(id.to_owned()))?;
            s.containers[i].exited.subscribe()
        };
        loop {
            if let Some(code) = *exited.borrow_and_update() {
                return Ok(code);
            }
            if exited.changed().await.is_err() {
                // Removed while waited for: Docker answers with an error.
                return Err(RuntimeError::NoSuchContainer(id.to_owned()));
            }
        }
    }

    async fn stop(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        let mut s = self.call(Call::Stop(id.to_owned(), timeout))?;
        let ignore = s.ignore_stop_signal;
        let i = find(&s, id).ok_or_else(|| RuntimeError::NoSuchContainer(id.to_owned()))?;
        let c = &mut s.containers[i];
        let signal = c.config.stop_signal.as_deref().unwrap_or("SIGTERM");
        let code = if ignore {
            137
        } else {
            128 + signal_number(signal)
        };
        end(c, code);
        Ok(())
    }

    async fn kill(&self, id: &str, signal: &str) -> Result<(), RuntimeError> {
        let mut s = self.call(Call::Kill(id.to_owned(), signal.to_owned()))?;
        let i = find(&s, id).ok_or_else(|| RuntimeError::NoSuchContainer(id.to_owned()))?;
        end(&mut s.containers[i], 128 + signal_number(signal));
        Ok(())
    }

    async fn exec(&self, id: &str, cmd: &[String]) -> Result<ExecResult, RuntimeError> {
        let s = self.call(Call::Exec(id.to_owned(), cmd.to_vec()))?;
        let i = find(&s, id).ok_or_else(|| RuntimeError::NoSuchContainer(id.to_owned()))?;
        if !s.containers[i].running {
            return Err(RuntimeError::Create {
                container: id.to_owned(),
                message: format!("container {id} is not running"),
            });
        }
        Ok(ExecResult {
            exit_code: 0,
            output: Vec::new(),
        })
    }

    async fn remove(&self, name_or_id: &str) -> Result<bool, RuntimeError> {
        let mut s = self.call(Call::Remove(name_or_id.to_owned()))?;
        match find(&s, name_or_id) {
            Some(i) => {
                let mut c = s.containers.remove(i);
                end(&mut c, 137);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn attach(
        &self,
        id: &str,
    ) -> Result<BoxStream<Result<Output, RuntimeError>>, RuntimeError> {
        let mut s = self.call(Call::Attach(id.to_owned()))?;
        let i = find(&s, id).ok_or_else(|| RuntimeError::NoSuchContainer(id.to_owned()))?;
        let (tx, rx) = mpsc::unbounded_channel();
        s.containers[i].output.push(tx);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|o| (Ok(o), rx))
        });
        Ok(Box::pin(stream))
    }

    fn health_events(&self, id: &str) -> BoxStream<Result<Health, RuntimeError>> {
        let rx = match self.call(Call::HealthEvents(id.to_owned())) {
            Ok(s) => find(&s, id).map(|i| s.containers[i].health_tx.subscribe()),
            Err(e) => return Box::pin(futures_util::stream::iter([Err(e)])),
        };
        let Some(rx) = rx else {
            return Box::pin(futures_util::stream::pending());
        };
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(h) => return Some((Ok(h), rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Box::pin(stream)
    }
}
