//! [`ContainerRuntime`] over Docker's Engine API (its unix socket), with
//! bollard.
//!
//! The client negotiates the API version with the engine, so an older engine
//! (Docker 20.10 speaks API 1.41) is spoken to in its own version. Requests
//! time out after [`Docker::connect`]'s `timeout`, which must cover the
//! longest `stop` (the container's `StopTimeout` and then some); streams
//! (`wait`, `attach`, events) are not cut by it once they are open.

use std::collections::HashMap;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, HealthConfig as DockerHealth, HealthStatusEnum, HostConfig,
    HostConfigLogConfig, PortBinding as DockerPort, SystemInfoCgroupDriverEnum,
};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, EventsOptions, InspectContainerOptions,
    KillContainerOptions, RemoveContainerOptions, StopContainerOptions, WaitContainerOptions,
};
use flotilla_proto::Health;
use futures_util::StreamExt;

use super::docker_pull;
use super::runtime::{
    BoxStream, CgroupDriver, ContainerInfo, ContainerRuntime, CreateConfig, EngineInfo, ExecResult,
    LocalImage, MAX_EXEC_OUTPUT, Output, OutputStream, PullProgress, RegistryAuth, RuntimeError,
};

/// Where Docker listens unless `DOCKER_HOST` says otherwise.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// The Docker engine of this host.
#[derive(Debug, Clone)]
pub struct Docker {
    client: bollard::Docker,
}

impl Docker {
    /// Connects to the engine at `socket` (a path, or `unix://PATH`) and
    /// agrees on the API version; `timeout` bounds each request.
    pub async fn connect(socket: &str, timeout: Duration) -> Result<Docker, RuntimeError> {
        let client = bollard::Docker::connect_with_socket(
            socket,
            timeout.as_secs().max(1),
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(|e| RuntimeError::Unavailable(format!("cannot connect to {socket}: {e}")))?;
        let client = client.negotiate_version().await.map_err(|e| {
            RuntimeError::Unavailable(format!("cannot reach the engine at {socket}: {e}"))
        })?;
        Ok(Docker { client })
    }

    /// The engine's client, for calls outside [`ContainerRuntime`] (the
    /// networks and volumes of [`super::object`]).
    pub(crate) fn client(&self) -> &bollard::Docker {
        &self.client
    }

    /// The socket in `DOCKER_HOST` when it names a unix socket, else
    /// [`DEFAULT_SOCKET`].
    pub fn socket_from_env() -> String {
        match std::env::var("DOCKER_HOST") {
            Ok(host) if host.starts_with("unix://") => host,
            _ => DEFAULT_SOCKET.to_owned(),
        }
    }
}

/// The engine's answer as a [`RuntimeError`]: a 404 is a missing container
/// (the caller knows when it means a missing image).
fn error(what: &str, e: BollardError) -> RuntimeError {
    match e {
        BollardError::DockerResponseServerError {
            status_code: 404,
            message,
        } => RuntimeError::NoSuchContainer(format!("{what} ({message})")),
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } if (400..500).contains(&status_code) => RuntimeError::Create {
            container: what.to_owned(),
            message,
        },
        BollardError::DockerResponseServerError { message, .. } => {
            // A 500 from create or start is mostly the container's own
            // fault too (an executable missing in the image, a port taken).
            RuntimeError::Create {
                container: what.to_owned(),
                message,
            }
        }
        other => RuntimeError::Unavailable(format!("{what}: {other}")),
    }
}

fn nanos(d: Option<Duration>) -> Option<i64> {
    d.map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn create_body(config: &CreateConfig) -> ContainerCreateBody {
    let mut port_bindings: HashMap<String, Option<Vec<DockerPort>>> = HashMap::new();
    for p in &config.ports {
        port_bindings
            .entry(p.container_port.clone())
            .or_default()
            .get_or_insert_with(Vec::new)
            .push(DockerPort {
                host_ip: Some(p.host_ip.clone()),
                host_port: Some(p.host_port.clone()),
            });
    }
    let exposed: Vec<String> = port_bindings.keys().cloned().collect();
    let health = config.health.as_ref().map(|h| DockerHealth {
        test: (!h.test.is_empty()).then(|| h.test.clone()),
        interval: nanos(h.interval),
        timeout: nanos(h.timeout),
        retries: h.retries.map(i64::from),
        start_period: nanos(h.start_period),
        start_interval: None,
    });
    let non_empty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    let mut body = ContainerCreateBody {
        image: Some(config.image.clone()),
        cmd: non_empty(&config.cmd),
        entrypoint: config.entrypoint.clone(),
        env: non_empty(&config.env),
        labels: Some(config.labels.clone().into_iter().collect()),
        user: config.user.clone(),
        working_dir: config.working_dir.clone(),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        volumes: non_empty(&config.anonymous_volumes),
        healthcheck: health,
        stop_signal: config.stop_signal.clone(),
        stop_timeout: Some(i64::try_from(config.stop_timeout.as_secs()).unwrap_or(i64::MAX)),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        host_config: Some(HostConfig {
            binds: non_empty(&config.binds),
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            readonly_rootfs: Some(config.read_only),
            init: config.init.then_some(true),
            cap_add: non_empty(&config.cap_add),
            cap_drop: non_empty(&config.cap_drop),
            cgroup_parent: Some(config.cgroup_parent.clone()),
            // The output goes to the journal through the shim; Docker keeps
            // no copy of its own (which would grow without bound).
            log_config: Some(HostConfigLogConfig {
                typ: Some("none".to_owned()),
                config: None,
            }),
            ..super::host_config::docker_host_config(&config.host)
        }),
        ..Default::default()
    };
    super::network::apply_docker(&config.attach, &mut body);
    body
}

fn health(status: Option<&HealthStatusEnum>) -> Health {
    match status {
        Some(HealthStatusEnum::STARTING) => Health::Starting,
        Some(HealthStatusEnum::HEALTHY) => Health::Healthy,
        Some(HealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
        Some(HealthStatusEnum::NONE | HealthStatusEnum::EMPTY) | None => Health::None,
    }
}

/// The health in a `health_status: healthy` event's action.
fn event_health(action: &str) -> Option<Health> {
    match action.strip_prefix("health_status:")?.trim() {
        "starting" => Some(Health::Starting),
        "healthy" => Some(Health::Healthy),
        "unhealthy" => Some(Health::Unhealthy),
        _ => None,
    }
}

impl ContainerRuntime for Docker {
    async fn info(&self) -> Result<EngineInfo, RuntimeError> {
        let info = self
            .client
            .info()
            .await
            .map_err(|e| RuntimeError::Unavailable(format!("docker info: {e}")))?;
        let cgroup_driver = match info.cgroup_driver {
            Some(SystemInfoCgroupDriverEnum::CGROUPFS) => CgroupDriver::Cgroupfs,
            Some(SystemInfoCgroupDriverEnum::SYSTEMD) => CgroupDriver::Systemd,
            other => {
                return Err(RuntimeError::Unavailable(format!(
                    "the engine's cgroup driver is {:?}: flotilla needs cgroupfs or systemd",
                    other.map(|d| d.to_string()).unwrap_or_default()
                )));
            }
        };
        Ok(EngineInfo {
            cgroup_driver,
            version: info.server_version.unwrap_or_default(),
        })
    }

    async fn local_image(&self, image: &str) -> Result<Option<LocalImage>, RuntimeError> {
        docker_pull::local_image(&self.client, image).await
    }

    async fn registry_digest(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<String, RuntimeError> {
        docker_pull::registry_digest(&self.client, image, auth).await
    }

    fn pull(
        &self,
        image: &str,
        auth: Option<RegistryAuth>,
    ) -> BoxStream<Result<PullProgress, RuntimeError>> {
        docker_pull::pull(&self.client, image, auth)
    }

    async fn create(&self, config: &CreateConfig) -> Result<String, RuntimeError> {
        let api = self.client.client_version();
        super::host_config::check_engine(&config.host, (api.major_version, api.minor_version))
            .map_err(|message| RuntimeError::Create {
                container: config.name.clone(),
                message,
            })?;
        let options = CreateContainerOptions {
            name: Some(config.name.clone()),
            platform: String::new(),
        };
        let api = self.client.client_version();
        let api = (api.major_version, api.minor_version);
        if let Some(message) = super::network::engine_refuses(&config.attach, api) {
            return Err(RuntimeError::Create {
                container: config.name.clone(),
                message,
            });
        }
        match self
            .client
            .create_container(Some(options), create_body(config))
            .await
        {
            Ok(created) => {
                // Its networks after the first (see network::apply_docker).
                let joined =
                    super::network::connect_others(&self.client, &config.attach, &created.id).await;
                if let Err(e) = joined {
                    let _ = self.remove(&created.id).await;
                    return Err(error(&config.name, e));
                }
                Ok(created.id)
            }
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Err(RuntimeError::ImageNotFound {
                image: config.image.clone(),
            }),
            Err(e) => Err(error(&config.name, e)),
        }
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.client
            .start_container(id, None)
            .await
            .map_err(|e| error(id, e))
    }

    async fn inspect(&self, name_or_id: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
        let found = self
            .client
            .inspect_container(name_or_id, Some(InspectContainerOptions { size: false }))
            .await;
        let c = match found {
            Ok(c) => c,
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(None),
            Err(e) => return Err(error(name_or_id, e)),
        };
        let state = c.state.unwrap_or_default();
        let running = state.running.unwrap_or(false);
        Ok(Some(ContainerInfo {
            id: c.id.unwrap_or_default(),
            name: c
                .name
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned(),
            labels: c
                .config
                .and_then(|config| config.labels)
                .unwrap_or_default()
                .into_iter()
                .collect(),
            running,
            pid: state.pid.and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
            exit_code: (!running
                && state
                    .started_at
                    .as_deref()
                    .is_some_and(|s| !s.starts_with("0001")))
            .then_some(state.exit_code.unwrap_or(0)),
            health: health(state.health.as_ref().and_then(|h| h.status.as_ref())),
            last_probe: state
                .health
                .as_ref()
                .and_then(|h| h.log.as_ref())
                .and_then(|log| log.last())
                .and_then(|probe| probe.output.clone())
                .map(|out| {
                    let mut out = out.trim_end().to_owned();
                    let mut at = out.len().min(4096);
                    while !out.is_char_boundary(at) {
                        at -= 1;
                    }
                    out.truncate(at);
                    out
                }),
        }))
    }

    async fn wait(&self, id: &str) -> Result<i64, RuntimeError> {
        let options = WaitContainerOptions {
            condition: "not-running".to_owned(),
        };
        let mut stream = self.client.wait_container(id, Some(options));
        match stream.next().await {
            Some(Ok(response)) => Ok(response.status_code),
            // bollard turns a non-zero exit into an error.
            Some(Err(BollardError::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(error(id, e)),
            None => Err(RuntimeError::Unavailable(format!(
                "waiting for container {id}: the engine closed the connection"
            ))),
        }
    }

    async fn stop(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        let options = StopContainerOptions {
            signal: None,
            t: Some(i32::try_from(timeout.as_secs()).unwrap_or(i32::MAX)),
        };
        match self.client.stop_container(id, Some(options)).await {
            // 304: it was not running.
            Ok(()) => Ok(()),
            Err(e) => Err(error(id, e)),
        }
    }

    async fn kill(&self, id: &str, signal: &str) -> Result<(), RuntimeError> {
        let options = KillContainerOptions {
            signal: signal.to_owned(),
        };
        self.client
            .kill_container(id, Some(options))
            .await
            .map_err(|e| error(id, e))
    }

    async fn exec(&self, id: &str, cmd: &[String]) -> Result<ExecResult, RuntimeError> {
        use bollard::exec::{CreateExecOptions, StartExecResults};
        let options = CreateExecOptions {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            cmd: Some(cmd.to_vec()),
            ..Default::default()
        };
        let created = self
            .client
            .create_exec(id, options)
            .await
            .map_err(|e| error(id, e))?;
        let mut output = Vec::new();
        let mut kept = 0;
        if let StartExecResults::Attached {
            output: mut stream, ..
        } = self
            .client
            .start_exec(&created.id, None)
            .await
            .map_err(|e| error(id, e))?
        {
            while let Some(item) = stream.next().await {
                let (stream, bytes) = match item {
                    Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                        (OutputStream::Stdout, message)
                    }
                    Ok(LogOutput::StdErr { message }) => (OutputStream::Stderr, message),
                    Ok(LogOutput::StdIn { .. }) => continue,
                    Err(e) => return Err(RuntimeError::Unavailable(format!("exec in {id}: {e}"))),
                };
                // Read to the end, so that the command has finished; keep
                // only the first bytes.
                let room = MAX_EXEC_OUTPUT.saturating_sub(kept);
                let take = bytes.len().min(room);
                if take > 0 {
                    kept += take;
                    output.push(Output {
                        stream,
                        bytes: bytes[..take].to_vec(),
                    });
                }
            }
        }
        let inspected = self
            .client
            .inspect_exec(&created.id)
            .await
            .map_err(|e| error(id, e))?;
        Ok(ExecResult {
            exit_code: inspected.exit_code.unwrap_or(-1),
            output,
        })
    }

    async fn remove(&self, name_or_id: &str) -> Result<bool, RuntimeError> {
        let options = RemoveContainerOptions {
            v: true,
            force: true,
            link: false,
        };
        match self
            .client
            .remove_container(name_or_id, Some(options))
            .await
        {
            Ok(()) => Ok(true),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            // 409: a removal is already in progress (the cleanup and the
            // shim raced): it will be gone.
            Err(BollardError::DockerResponseServerError {
                status_code: 409,
                message,
            }) if message.contains("already in progress") => Ok(true),
            Err(e) => Err(error(name_or_id, e)),
        }
    }

    async fn attach(
        &self,
        id: &str,
    ) -> Result<BoxStream<Result<Output, RuntimeError>>, RuntimeError> {
        let options = AttachContainerOptions {
            detach_keys: None,
            logs: false,
            stream: true,
            stdin: false,
            stdout: true,
            stderr: true,
        };
        let attached = self
            .client
            .attach_container(id, Some(options))
            .await
            .map_err(|e| error(id, e))?;
        // The write half stays open as long as the stream is read: closing
        // it could end the attachment early.
        let input = attached.input;
        let id = id.to_owned();
        let stream = attached.output.filter_map(move |item| {
            let _keep = &input;
            let out = match item {
                Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                    Some(Ok(Output {
                        stream: OutputStream::Stdout,
                        bytes: message.to_vec(),
                    }))
                }
                Ok(LogOutput::StdErr { message }) => Some(Ok(Output {
                    stream: OutputStream::Stderr,
                    bytes: message.to_vec(),
                })),
                Ok(LogOutput::StdIn { .. }) => None,
                Err(e) => Some(Err(RuntimeError::Unavailable(format!(
                    "output of container {id}: {e}"
                )))),
            };
            std::future::ready(out)
        });
        Ok(Box::pin(stream))
    }

    fn health_events(&self, id: &str) -> BoxStream<Result<Health, RuntimeError>> {
        let filters = HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            ("container".to_owned(), vec![id.to_owned()]),
            ("event".to_owned(), vec!["health_status".to_owned()]),
        ]);
        let options = EventsOptions {
            since: None,
            until: None,
            filters: Some(filters),
        };
        let stream = self.client.events(Some(options)).filter_map(|event| {
            std::future::ready(match event {
                Ok(event) => event.action.as_deref().and_then(event_health).map(Ok),
                Err(e) => Some(Err(RuntimeError::Unavailable(format!(
                    "docker events: {e}"
                )))),
            })
        });
        Box::pin(stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::runtime::{HealthConfig, PortBinding};

    #[test]
    fn health_events_are_read_from_the_action() {
        assert_eq!(
            event_health("health_status: healthy"),
            Some(Health::Healthy)
        );
        assert_eq!(
            event_health("health_status: unhealthy"),
            Some(Health::Unhealthy)
        );
        assert_eq!(
            event_health("health_status: starting"),
            Some(Health::Starting)
        );
        assert_eq!(event_health("exec_start: sh -c true"), None);
    }

    #[test]
    fn the_create_body_carries_every_setting() {
        let config = CreateConfig {
            name: "flotilla-web".into(),
            image: "local/busybox:latest".into(),
            cmd: vec!["httpd".into(), "-f".into()],
            ports: vec![
                PortBinding {
                    container_port: "80/tcp".into(),
                    host_ip: String::new(),
                    host_port: "8080".into(),
                },
                PortBinding {
                    container_port: "80/tcp".into(),
                    host_ip: "::1".into(),
                    host_port: "8080".into(),
                },
            ],
            health: Some(HealthConfig {
                test: vec!["CMD-SHELL".into(), "true".into()],
                interval: Some(Duration::from_millis(1500)),
                timeout: None,
                start_period: None,
                retries: Some(2),
            }),
            stop_timeout: Duration::from_secs(3),
            cgroup_parent: "/system.slice/web.service".into(),
            ..Default::default()
        };
        let body = create_body(&config);
        assert_eq!(
            body.cmd.as_deref(),
            Some(&["httpd".to_owned(), "-f".to_owned()][..])
        );
        assert_eq!(body.exposed_ports, Some(vec!["80/tcp".to_owned()]));
        assert_eq!(body.stop_timeout, Some(3));
        let health = body.healthcheck.unwrap();
        assert_eq!(health.interval, Some(1_500_000_000));
        assert_eq!(health.retries, Some(2));
        let host = body.host_config.unwrap();
        assert_eq!(
            host.cgroup_parent.as_deref(),
            Some("/system.slice/web.service")
        );
        assert_eq!(
            host.port_bindings.unwrap()["80/tcp"]
                .as_ref()
                .unwrap()
                .len(),
            2
        );
        assert_eq!(host.log_config.unwrap().typ.as_deref(), Some("none"));
        assert!(body.entrypoint.is_none());
        assert!(body.env.is_none());
    }
}
