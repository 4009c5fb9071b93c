//! `.network` and `.volume` units on the host (`proto`'s
//! `container::object` says what they are):
//!
//! - [`render_object`]: the oneshot service flotilla writes for one:
//!   `[Network]`/`[Volume]` kept as `[X-Network]`/`[X-Volume]`,
//!   `Type=oneshot`, `RemainAfterExit=yes`, `ExecStart=flotilla shim network
//!   --unit NAME` (or `volume`), and with `NetworkDeleteOnStop=yes` an
//!   `ExecStopPost=` that removes the network;
//! - [`add_requirements`]: `Requires=` and `After=` on them in a container
//!   unit that names them;
//! - [`resolve`]: the shim's view of those names: `db.network` becomes the
//!   Docker name the unit `db-network.service` on this host creates;
//! - [`run`]: `flotilla shim network|volume`, which creates the network or
//!   volume, labelled `flotilla.unit=UNIT`, unless it exists (as podman's
//!   `create --ignore`: an existing one is used as it is), or removes it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest, VolumeCreateRequest};
use flotilla_proto::container::object::{DockerObject, NetworkFile, VolumeFile, object_unit};
use flotilla_proto::container::{ContainerSpec, Network, VolumeSource};
use flotilla_proto::diagnostic::Diagnostics;
use flotilla_proto::unit_file::{Entry, Section, UnitFile};
use flotilla_proto::{UnitName, UnitSpec};

use super::config::{ConfigError, UNIT_LABEL};
use super::docker::Docker;

/// What `flotilla shim network|volume` could not do.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{unit} is a .{found} unit, not a .{wanted} one")]
    WrongKind {
        unit: String,
        found: &'static str,
        wanted: &'static str,
    },
    #[error("docker: {0}")]
    Docker(String),
    #[error("cannot start the shim's runtime: {0}")]
    Tokio(std::io::Error),
}

/// The section an object unit's settings are kept under on the host.
fn rendered_section(section: &str) -> String {
    format!("X-{section}")
}

/// Renders a `.network` or `.volume` unit; `None` for any other unit.
pub fn render_object(spec: &UnitSpec, shim: &Path) -> Option<UnitFile> {
    let object = spec.object.as_ref()?;
    let kind = object.kind();
    let mut file = spec.file.clone();
    for section in &mut file.sections {
        if section.name == "Network" || section.name == "Volume" {
            section.name = rendered_section(&section.name);
        }
    }
    let has = |key: &str| {
        spec.file
            .last_value("Service", key)
            .is_some_and(|v| !v.value.is_empty())
    };
    let name = spec.name.as_str();
    let shim = shim.display();
    let mut add = vec![("ExecStart", format!("{shim} shim {kind} --unit {name}"))];
    if !has("Type") {
        add.push(("Type", "oneshot".to_owned()));
    }
    if !has("RemainAfterExit") {
        add.push(("RemainAfterExit", "yes".to_owned()));
    }
    if matches!(object, DockerObject::Network(n) if n.delete_on_stop) {
        add.push((
            "ExecStopPost",
            format!("{shim} shim network --unit {name} --remove"),
        ));
    }
    let service = section_index(&mut file, "Service");
    push(&mut file.sections[service], add);
    Some(file)
}

/// `Requires=` and `After=` in `file`'s `[Unit]` on every `.network` and
/// `.volume` unit `container` names.
pub fn add_requirements(file: &mut UnitFile, container: &ContainerSpec) {
    let units = flotilla_proto::container::object::required_units(container);
    if units.is_empty() {
        return;
    }
    let unit = section_index(file, "Unit");
    for name in units {
        push(
            &mut file.sections[unit],
            vec![
                ("Requires", name.as_str().to_owned()),
                ("After", name.as_str().to_owned()),
            ],
        );
    }
}

fn section_index(file: &mut UnitFile, name: &str) -> usize {
    match file.sections.iter().position(|s| s.name == name) {
        Some(i) => i,
        None => {
            let section = Section {
                name: name.to_owned(),
                line: 0,
                entries: Vec::new(),
            };
            // [Unit] first, as systemd's own files have it.
            let at = if name == "Unit" {
                0
            } else {
                file.sections.len()
            };
            file.sections.insert(at, section);
            at
        }
    }
}

fn push(section: &mut Section, entries: Vec<(&str, String)>) {
    for (key, value) in entries {
        section.entries.push(Entry {
            key: key.to_owned(),
            value,
            line: 0,
        });
    }
}

/// Reads the object of the rendered unit `unit` at `path`.
pub fn read_object(unit: &UnitName, path: &Path) -> Result<DockerObject, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadUnit {
        path: path.to_owned(),
        source,
    })?;
    let (file, syntax) = UnitFile::parse(&text);
    let sections: Vec<Section> = file
        .sections
        .into_iter()
        .filter_map(|s| {
            let name = match s.name.as_str() {
                "X-Network" => "Network",
                "X-Volume" => "Volume",
                _ => return None,
            };
            Some(Section {
                name: name.to_owned(),
                ..s
            })
        })
        .collect();
    let mut diags = Diagnostics::new();
    diags.extend(syntax);
    let object = DockerObject::from_unit_file(unit, &UnitFile { sections }, &mut diags);
    let problems: Vec<String> = diags
        .into_sorted()
        .into_iter()
        .filter(|d| d.is_error())
        .map(|d| d.to_string())
        .collect();
    match object {
        Some(object) if problems.is_empty() => Ok(object),
        None => Err(ConfigError::Invalid {
            path: path.to_owned(),
            problems: vec![format!(
                "{unit} has no [X-Network] or [X-Volume] section: it is not a .network or .volume unit rendered by flotilla"
            )],
        }),
        Some(_) => Err(ConfigError::Invalid {
            path: path.to_owned(),
            problems,
        }),
    }
}

/// Replaces each `NAME.network` and `NAME.volume` that `spec` names with
/// the Docker name the unit it stands for creates, read from that unit's
/// file in `dir` (systemd started it first: the container unit requires
/// it).
pub fn resolve(spec: &mut ContainerSpec, dir: &Path) -> Result<(), ConfigError> {
    let mut names: HashMap<String, String> = HashMap::new();
    let mut lookup = |reference: &str| -> Result<Option<String>, ConfigError> {
        let Some(unit) = object_unit(reference) else {
            return Ok(None);
        };
        if let Some(found) = names.get(reference) {
            return Ok(Some(found.clone()));
        }
        let path = dir.join(unit.as_str());
        let object = read_object(&unit, &path).map_err(|e| match e {
            ConfigError::ReadUnit { path, source } => ConfigError::Invalid {
                path: path.clone(),
                problems: vec![format!(
                    "{reference} stands for the unit {unit}, which is not on this machine ({source}): submit and load {reference}"
                )],
            },
            other => other,
        })?;
        let name = object.docker_name().to_owned();
        names.insert(reference.to_owned(), name.clone());
        Ok(Some(name))
    };
    for n in &mut spec.attach.network.networks {
        if let Network::Named { name, .. } = n
            && let Some(docker) = lookup(name)?
        {
            *name = docker;
        }
    }
    for v in &mut spec.volumes {
        if let Some(VolumeSource::Named(name)) = &mut v.source
            && let Some(docker) = lookup(name)?
        {
            *name = docker;
        }
    }
    for m in &mut spec.attach.mounts.mounts {
        if let Some(source) = &mut m.source
            && let Some(docker) = lookup(source)?
        {
            *source = docker;
        }
    }
    Ok(())
}

/// The create request for a network of unit `unit`.
fn network_request(unit: &UnitName, n: &NetworkFile) -> NetworkCreateRequest {
    let mut labels: HashMap<String, String> = n.labels.clone().into_iter().collect();
    labels.insert(UNIT_LABEL.to_owned(), unit.as_str().to_owned());
    let pools: Vec<IpamConfig> = n
        .subnets
        .iter()
        .map(|p| IpamConfig {
            subnet: Some(p.subnet.clone()),
            gateway: p.gateway.map(|g| g.to_string()),
            ip_range: p.ip_range.clone(),
            auxiliary_addresses: None,
        })
        .collect();
    let ipam = (n.ipam_driver.is_some() || !pools.is_empty()).then(|| Ipam {
        driver: n.ipam_driver.clone(),
        config: (!pools.is_empty()).then_some(pools),
        options: None,
    });
    NetworkCreateRequest {
        name: n.name.clone(),
        driver: n.driver.clone(),
        internal: n.internal.then_some(true),
        enable_ipv6: n.ipv6.then_some(true),
        ipam,
        options: (!n.options.is_empty()).then(|| n.options.clone().into_iter().collect()),
        labels: Some(labels),
        ..Default::default()
    }
}

/// The create request for a volume of unit `unit`.
fn volume_request(unit: &UnitName, v: &VolumeFile) -> VolumeCreateRequest {
    let mut labels: HashMap<String, String> = v.labels.clone().into_iter().collect();
    labels.insert(UNIT_LABEL.to_owned(), unit.as_str().to_owned());
    VolumeCreateRequest {
        name: Some(v.name.clone()),
        driver: v.driver.clone(),
        driver_opts: (!v.options.is_empty()).then(|| v.options.clone().into_iter().collect()),
        labels: Some(labels),
        cluster_volume_spec: None,
    }
}

fn status(e: &BollardError) -> Option<u16> {
    match e {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// `flotilla shim network|volume --unit UNIT [--remove]`: `kind` is what
/// the command line said, `path` the rendered unit file.
pub fn run(unit: &UnitName, path: &Path, kind: &str, remove: bool) -> Result<(), ObjectError> {
    let object = read_object(unit, path)?;
    if object.kind() != kind {
        return Err(ObjectError::WrongKind {
            unit: unit.to_string(),
            found: object.kind(),
            wanted: if kind == "network" {
                "network"
            } else {
                "volume"
            },
        });
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ObjectError::Tokio)?;
    runtime.block_on(async {
        let docker = Docker::connect(&Docker::socket_from_env(), Duration::from_secs(60))
            .await
            .map_err(|e| ObjectError::Docker(e.to_string()))?;
        let client = docker.client();
        match (&object, remove) {
            (DockerObject::Network(n), false) => ensure_network(client, unit, n).await,
            (DockerObject::Network(n), true) => remove_network(client, unit, &n.name).await,
            (DockerObject::Volume(v), _) => ensure_volume(client, unit, v).await,
        }
    })
}

async fn ensure_network(
    client: &bollard::Docker,
    unit: &UnitName,
    n: &NetworkFile,
) -> Result<(), ObjectError> {
    match client.create_network(network_request(unit, n)).await {
        Ok(created) => {
            tracing::info!("created the network {} ({})", n.name, created.id);
            Ok(())
        }
        Err(e) if status(&e) == Some(409) => {
            let found = client
                .inspect_network(&n.name, None)
                .await
                .map_err(|e| ObjectError::Docker(format!("network {}: {e}", n.name)))?;
            let owner = found.labels.as_ref().and_then(|l| l.get(UNIT_LABEL));
            if owner.map(String::as_str) == Some(unit.as_str()) {
                tracing::info!("the network {} is there already", n.name);
            } else {
                tracing::info!(
                    "the network {} exists and flotilla did not create it for {unit}: used as it is",
                    n.name
                );
            }
            Ok(())
        }
        Err(e) => Err(ObjectError::Docker(format!(
            "cannot create the network {}: {e}",
            n.name
        ))),
    }
}

async fn remove_network(
    client: &bollard::Docker,
    unit: &UnitName,
    name: &str,
) -> Result<(), ObjectError> {
    let found = match client.inspect_network(name, None).await {
        Ok(found) => found,
        Err(e) if status(&e) == Some(404) => return Ok(()),
        Err(e) => return Err(ObjectError::Docker(format!("network {name}: {e}"))),
    };
    let owner = found.labels.as_ref().and_then(|l| l.get(UNIT_LABEL));
    if owner.map(String::as_str) != Some(unit.as_str()) {
        tracing::info!("left the network {name} alone: flotilla did not create it for {unit}");
        return Ok(());
    }
    match client.remove_network(name).await {
        Ok(()) => {
            tracing::info!("removed the network {name}");
            Ok(())
        }
        Err(e) if status(&e) == Some(404) => Ok(()),
        // Still in use: containers of units that did not stop with it.
        Err(e) => {
            tracing::warn!("the network {name} is not removed: {e}");
            Ok(())
        }
    }
}

async fn ensure_volume(
    client: &bollard::Docker,
    unit: &UnitName,
    v: &VolumeFile,
) -> Result<(), ObjectError> {
    // Docker creates a volume once: asked again, it returns the existing
    // one.
    let found = client
        .create_volume(volume_request(unit, v))
        .await
        .map_err(|e| ObjectError::Docker(format!("cannot create the volume {}: {e}", v.name)))?;
    if found.labels.get(UNIT_LABEL).map(String::as_str) == Some(unit.as_str()) {
        tracing::info!("the volume {} is ready", v.name);
    } else {
        tracing::info!(
            "the volume {} exists and flotilla did not create it for {unit}: used as it is",
            v.name
        );
    }
    Ok(())
}

/// The rendered unit file of `unit`: `path`, or its file in `dir`.
pub fn unit_path(dir: &Path, unit: &UnitName, path: Option<&PathBuf>) -> PathBuf {
    path.cloned().unwrap_or_else(|| dir.join(unit.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(name: &str, text: &str) -> UnitSpec {
        UnitSpec::check(name, name, text).unwrap().spec
    }

    #[test]
    fn an_object_unit_becomes_a_oneshot_shim_service() {
        let spec = checked(
            "db.network",
            "[Unit]\nDescription=db\n[Network]\nSubnet=10.9.0.0/24\nNetworkDeleteOnStop=yes\n",
        );
        let file = render_object(&spec, Path::new("/f")).unwrap();
        assert_eq!(
            file.to_string(),
            "[Unit]\nDescription=db\n\n[X-Network]\nSubnet=10.9.0.0/24\nNetworkDeleteOnStop=yes\n\n\
             [Service]\nExecStart=/f shim network --unit db-network.service\nType=oneshot\nRemainAfterExit=yes\n\
             ExecStopPost=/f shim network --unit db-network.service --remove\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db-network.service");
        std::fs::write(&path, file.to_string()).unwrap();
        let DockerObject::Network(n) = read_object(&spec.name, &path).unwrap() else {
            panic!("not a network");
        };
        assert_eq!(n.name, "flotilla-db");
        let request = network_request(&spec.name, &n);
        assert_eq!(request.labels.unwrap()[UNIT_LABEL], "db-network.service");
        assert_eq!(
            request.ipam.unwrap().config.unwrap()[0].subnet.as_deref(),
            Some("10.9.0.0/24")
        );
        assert!(
            render_object(
                &checked("a.service", "[Service]\nExecStart=/x\n"),
                Path::new("/f")
            )
            .is_none()
        );
    }

    #[test]
    fn a_container_requires_and_resolves_its_objects() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [
            ("db.network", "[Network]\nNetworkName=shop\n"),
            ("data.volume", "[Volume]\n"),
        ] {
            let spec = checked(name, text);
            let file = render_object(&spec, Path::new("/f")).unwrap();
            std::fs::write(dir.path().join(spec.name.as_str()), file.to_string()).unwrap();
        }
        let spec = checked(
            "web.service",
            "[Container]\nImage=a\nNetwork=db.network\nVolume=data.volume:/data\n\
             Mount=type=volume,source=data.volume,destination=/more\n",
        );
        let mut file = spec.file.clone();
        let mut container = spec.container.unwrap();
        add_requirements(&mut file, &container);
        assert_eq!(
            file.to_string(),
            "[Unit]\nRequires=db-network.service\nAfter=db-network.service\n\
             Requires=data-volume.service\nAfter=data-volume.service\n\n\
             [Container]\nImage=a\nNetwork=db.network\nVolume=data.volume:/data\n\
             Mount=type=volume,source=data.volume,destination=/more\n"
        );
        resolve(&mut container, dir.path()).unwrap();
        assert!(
            matches!(&container.attach.network.networks[0], Network::Named { name, .. } if name == "shop")
        );
        assert_eq!(
            container.volumes[0].source,
            Some(VolumeSource::Named("flotilla-data".into()))
        );
        assert_eq!(
            container.attach.mounts.mounts[0].source.as_deref(),
            Some("flotilla-data")
        );
        std::fs::remove_file(dir.path().join("db-network.service")).unwrap();
        let mut again = checked("web.service", "[Container]\nImage=a\nNetwork=db.network\n")
            .container
            .unwrap();
        let err = resolve(&mut again, dir.path()).unwrap_err().to_string();
        assert!(err.contains("submit and load db.network"), "{err}");
    }
}
