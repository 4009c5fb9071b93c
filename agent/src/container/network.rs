//! The network and mount keys of a container unit in Docker's terms:
//! [`attach_config`] turns the spec's `Attachments` into an
//! [`AttachConfig`] (engine-neutral, part of the
//! [`super::runtime::CreateConfig`]), and `apply_docker` writes it into
//! Docker's create request: `HostConfig` (network mode, extra hosts, DNS,
//! mounts, tmpfs), `NetworkingConfig` (each network's aliases and static
//! addresses), the host name and the exposed ports.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HostConfig, Mount as DockerMount,
    MountBindOptions, MountBindOptionsPropagationEnum, MountTmpfsOptions, MountType as DockerType,
    MountVolumeOptions, MountVolumeOptionsDriverConfig, NetworkConnectRequest, NetworkingConfig,
};
use flotilla_proto::container::{ContainerSpec, Mount, MountType, Network};

/// A network the container joins, with its endpoint settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Endpoint {
    /// The network's name (`bridge` for Docker's default).
    pub network: String,
    pub aliases: Vec<String>,
    pub ipv4: Option<String>,
    pub ipv6: Option<String>,
    pub mac: Option<String>,
}

/// The container's networks and the mounts beside `Volume=`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AttachConfig {
    /// Docker's `NetworkMode`: `host`, `none`, `container:NAME`, or the
    /// first network joined; `None` for Docker's default bridge.
    pub network_mode: Option<String>,
    /// Every network joined, for `NetworkingConfig` (empty for the modes
    /// without endpoints).
    pub endpoints: Vec<Endpoint>,
    pub hostname: Option<String>,
    /// `NAME:ADDRESS` lines for `/etc/hosts`.
    pub extra_hosts: Vec<String>,
    pub dns: Vec<String>,
    pub dns_options: Vec<String>,
    pub dns_search: Vec<String>,
    /// `PORT/PROTOCOL` exposed without being published.
    pub exposed: Vec<String>,
    /// `Mount=`, as read.
    pub mounts: Vec<Mount>,
    /// Docker's `Tmpfs`: path and mount options, from `Tmpfs=`,
    /// `ReadOnly=` and `VolatileTmp=`.
    pub tmpfs: Vec<(String, String)>,
}

/// The [`AttachConfig`] of a container unit's spec.
pub fn attach_config(spec: &ContainerSpec) -> AttachConfig {
    let net = &spec.attach.network;
    let mut endpoints = Vec::new();
    let mut network_mode = None;
    for n in &net.networks {
        let (name, options) = match n {
            Network::Host => {
                network_mode = Some("host".to_owned());
                continue;
            }
            Network::None => {
                network_mode = Some("none".to_owned());
                continue;
            }
            Network::Container { name } => {
                network_mode = Some(format!("container:{name}"));
                continue;
            }
            Network::Bridge { options } => ("bridge", options),
            Network::Named { name, options } => (name.as_str(), options),
        };
        let user = matches!(n, Network::Named { .. });
        let mut aliases = options.aliases.clone();
        if user {
            for a in &net.aliases {
                if !aliases.contains(a) {
                    aliases.push(a.clone());
                }
            }
        }
        // IP= and IP6= belong to the one user-defined network (checked in
        // proto); a per-network address wins.
        let ipv4 = options.ip.or(net.ip.filter(|_| user));
        let ipv6 = options.ip6.or(net.ip6.filter(|_| user));
        endpoints.push(Endpoint {
            network: name.to_owned(),
            aliases,
            ipv4: ipv4.map(|ip| ip.to_string()),
            ipv6: ipv6.map(|ip| ip.to_string()),
            mac: options.mac.clone(),
        });
        network_mode.get_or_insert_with(|| name.to_owned());
    }
    AttachConfig {
        network_mode,
        endpoints,
        hostname: net.hostname.clone(),
        extra_hosts: net
            .add_hosts
            .iter()
            .map(|h| format!("{}:{}", h.name, h.address))
            .collect(),
        dns: net.dns.iter().map(ToString::to_string).collect(),
        dns_options: net.dns_options.clone(),
        dns_search: net.dns_search.clone(),
        exposed: net.expose.iter().flat_map(|e| e.docker_keys()).collect(),
        mounts: spec.attach.mounts.mounts.clone(),
        tmpfs: spec
            .attach
            .mounts
            .tmpfs_mounts(spec.read_only, &spec.volumes),
    }
}

/// Writes `config` into Docker's create request, whose `host_config` is
/// set already.
pub(super) fn apply_docker(config: &AttachConfig, body: &mut ContainerCreateBody) {
    let non_empty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    body.hostname = config.hostname.clone();
    if !config.exposed.is_empty() {
        let exposed = body.exposed_ports.get_or_insert_with(Vec::new);
        for port in &config.exposed {
            if !exposed.contains(port) {
                exposed.push(port.clone());
            }
        }
    }
    // The first network only: engines before API 1.44 (Docker 25) refuse
    // more at create, so [`connect_others`] joins the rest.
    if let Some(first) = config.endpoints.first() {
        body.networking_config = Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                first.network.clone(),
                endpoint_settings(first),
            )])),
        });
    }
    let host = body.host_config.get_or_insert_with(HostConfig::default);
    host.network_mode = config.network_mode.clone();
    host.extra_hosts = non_empty(&config.extra_hosts);
    host.dns = non_empty(&config.dns);
    host.dns_options = non_empty(&config.dns_options);
    host.dns_search = non_empty(&config.dns_search);
    if !config.mounts.is_empty() {
        host.mounts = Some(config.mounts.iter().map(docker_mount).collect());
    }
    if !config.tmpfs.is_empty() {
        host.tmpfs = Some(config.tmpfs.iter().cloned().collect::<HashMap<_, _>>());
    }
}

/// Why an engine speaking Docker's API version `api` (major, minor) cannot
/// do what `config` asks: older engines ignore the fields they do not know,
/// which would mount a whole volume for a subpath, say.
pub(super) fn engine_refuses(config: &AttachConfig, api: (usize, usize)) -> Option<String> {
    let needs = |what: &str, docker: u32, minor: usize| {
        (api < (1, minor)).then(|| {
            format!(
                "{what} needs Docker {docker} (API 1.{minor}) or later; this engine speaks API {}.{}",
                api.0, api.1
            )
        })
    };
    let subpath = config.mounts.iter().any(|m| m.volume_subpath.is_some());
    let read_only_recursion = config
        .mounts
        .iter()
        .any(|m| matches!(m.bind_recursive.as_deref(), Some("writable" | "readonly")));
    let mac = config.endpoints.iter().any(|e| e.mac.is_some());
    None.or_else(|| {
        subpath
            .then(|| needs("Mount= volume-subpath", 26, 45))
            .flatten()
    })
    .or_else(|| {
        read_only_recursion
            .then(|| needs("Mount= bind-recursive=writable or readonly", 25, 44))
            .flatten()
    })
    .or_else(|| mac.then(|| needs("Network= mac=", 25, 44)).flatten())
}

fn endpoint_settings(e: &Endpoint) -> EndpointSettings {
    let ipam = (e.ipv4.is_some() || e.ipv6.is_some()).then(|| EndpointIpamConfig {
        ipv4_address: e.ipv4.clone(),
        ipv6_address: e.ipv6.clone(),
        link_local_ips: None,
    });
    EndpointSettings {
        ipam_config: ipam,
        aliases: (!e.aliases.is_empty()).then(|| e.aliases.clone()),
        mac_address: e.mac.clone(),
        ..Default::default()
    }
}

/// Joins the created container `id` to its networks after the first, each
/// with its own settings, before it starts.
pub(super) async fn connect_others(
    client: &bollard::Docker,
    config: &AttachConfig,
    id: &str,
) -> Result<(), bollard::errors::Error> {
    for e in config.endpoints.iter().skip(1) {
        let request = NetworkConnectRequest {
            container: id.to_owned(),
            endpoint_config: Some(endpoint_settings(e)),
        };
        client.connect_network(&e.network, request).await?;
    }
    Ok(())
}

fn docker_mount(m: &Mount) -> DockerMount {
    let typ = match m.kind {
        MountType::Bind => DockerType::BIND,
        MountType::Volume => DockerType::VOLUME,
        MountType::Tmpfs => DockerType::TMPFS,
    };
    let bind = (m.kind == MountType::Bind
        && (m.bind_propagation.is_some() || m.bind_recursive.is_some()))
    .then(|| {
        let recursive = m.bind_recursive.as_deref();
        MountBindOptions {
            propagation: m.bind_propagation.as_deref().map(propagation),
            non_recursive: (recursive == Some("disabled")).then_some(true),
            read_only_non_recursive: (recursive == Some("writable")).then_some(true),
            read_only_force_recursive: (recursive == Some("readonly")).then_some(true),
            create_mountpoint: None,
        }
    });
    let volume = (m.kind == MountType::Volume
        && (m.volume_nocopy
            || m.volume_subpath.is_some()
            || m.volume_driver.is_some()
            || !m.volume_options.is_empty()
            || !m.volume_labels.is_empty()))
    .then(|| MountVolumeOptions {
        no_copy: m.volume_nocopy.then_some(true),
        labels: (!m.volume_labels.is_empty())
            .then(|| m.volume_labels.clone().into_iter().collect()),
        driver_config: (m.volume_driver.is_some() || !m.volume_options.is_empty()).then(|| {
            MountVolumeOptionsDriverConfig {
                name: m.volume_driver.clone(),
                options: (!m.volume_options.is_empty())
                    .then(|| m.volume_options.clone().into_iter().collect()),
            }
        }),
        subpath: m.volume_subpath.clone(),
    });
    let tmpfs = (m.kind == MountType::Tmpfs && (m.tmpfs_size.is_some() || m.tmpfs_mode.is_some()))
        .then(|| MountTmpfsOptions {
            // Checked in proto to fit an i64.
            size_bytes: m.tmpfs_size.and_then(|s| i64::try_from(s).ok()),
            mode: m.tmpfs_mode.map(i64::from),
            options: None,
        });
    DockerMount {
        target: Some(m.target.clone()),
        source: m.source.clone(),
        typ: Some(typ),
        read_only: m.read_only.then_some(true),
        consistency: m.consistency.clone(),
        bind_options: bind,
        volume_options: volume,
        tmpfs_options: tmpfs,
        image_options: None,
    }
}

fn propagation(mode: &str) -> MountBindOptionsPropagationEnum {
    match mode {
        "private" => MountBindOptionsPropagationEnum::PRIVATE,
        "shared" => MountBindOptionsPropagationEnum::SHARED,
        "rshared" => MountBindOptionsPropagationEnum::RSHARED,
        "slave" => MountBindOptionsPropagationEnum::SLAVE,
        "rslave" => MountBindOptionsPropagationEnum::RSLAVE,
        // rprivate, Docker's default; proto admits no other value.
        _ => MountBindOptionsPropagationEnum::RPRIVATE,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use flotilla_proto::UnitName;

    use super::*;
    use crate::container::config::parse_spec;

    fn config(section: &str) -> AttachConfig {
        let unit = UnitName::parse("web.service").unwrap();
        let text = format!("[X-Container]\nImage=a\n{section}\n");
        let spec = parse_spec(&unit, Path::new("/x/web.service"), &text).unwrap();
        attach_config(&spec)
    }

    #[test]
    fn networks_become_a_mode_and_endpoints() {
        let c = config(
            "Network=front:alias=api\nNetwork=back:ip=10.1.0.9\nNetworkAlias=web\nHostName=w1\n\
             AddHost=db:10.0.0.5\nDNS=10.0.0.2\nDNSOption=ndots:2\nDNSSearch=example.com\nExposeHostPort=90-91/udp",
        );
        assert_eq!(c.network_mode.as_deref(), Some("front"));
        assert_eq!(c.endpoints.len(), 2);
        assert_eq!(c.endpoints[0].aliases, ["api", "web"]);
        assert_eq!(c.endpoints[1].ipv4.as_deref(), Some("10.1.0.9"));
        assert_eq!(c.extra_hosts, ["db:10.0.0.5"]);
        assert_eq!(c.exposed, ["90/udp", "91/udp"]);
        let mut body = ContainerCreateBody::default();
        apply_docker(&c, &mut body);
        assert_eq!(body.hostname.as_deref(), Some("w1"));
        // The first network at create; the others are connected after.
        let endpoints = body.networking_config.unwrap().endpoints_config.unwrap();
        assert_eq!(endpoints.len(), 1);
        assert_eq!(
            endpoints["front"].aliases.as_deref(),
            Some(&["api".to_owned(), "web".to_owned()][..])
        );
        assert_eq!(
            endpoint_settings(&c.endpoints[1]).aliases.as_deref(),
            Some(&["web".to_owned()][..])
        );
        let host = body.host_config.unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("front"));
        assert_eq!(host.dns.unwrap(), ["10.0.0.2"]);
        assert_eq!(host.dns_search.unwrap(), ["example.com"]);

        let c = config("Network=front\nIP=10.0.0.7\nIP6=fd00::7");
        assert_eq!(c.endpoints[0].ipv4.as_deref(), Some("10.0.0.7"));
        assert_eq!(c.endpoints[0].ipv6.as_deref(), Some("fd00::7"));
        let c = config("Network=container:flotilla-db");
        assert_eq!(c.network_mode.as_deref(), Some("container:flotilla-db"));
        assert!(c.endpoints.is_empty());
        assert_eq!(config("").network_mode, None);
    }

    #[test]
    fn settings_an_old_engine_would_ignore_are_refused() {
        let c = config("Mount=type=volume,source=vv,destination=/v,volume-subpath=a");
        let why = engine_refuses(&c, (1, 41)).unwrap();
        assert!(
            why.starts_with("Mount= volume-subpath needs Docker 26 (API 1.45)"),
            "{why}"
        );
        assert_eq!(engine_refuses(&c, (1, 45)), None);
        let c = config("Network=n:mac=02:42:ac:11:00:02");
        assert!(engine_refuses(&c, (1, 43)).is_some());
        assert_eq!(engine_refuses(&c, (1, 44)), None);
        assert_eq!(engine_refuses(&config("Network=n"), (1, 24)), None);
    }

    #[test]
    fn mounts_and_tmpfs_in_dockers_terms() {
        let c = config(
            "Mount=type=bind,source=/srv,destination=/srv,ro,bind-propagation=rslave,bind-recursive=readonly\n\
             Mount=type=volume,source=cache,destination=/cache,volume-nocopy,volume-opt=o=x\n\
             Mount=type=tmpfs,destination=/scratch,tmpfs-size=1m,tmpfs-mode=700\n\
             Tmpfs=/run:size=8m\nReadOnly=yes",
        );
        // /run is the unit's own; /tmp and /var/tmp come with ReadOnly=.
        assert_eq!(
            c.tmpfs,
            [
                ("/run".to_owned(), "size=8m".to_owned()),
                ("/tmp".to_owned(), "rw,nosuid,nodev".to_owned()),
                ("/var/tmp".to_owned(), "rw,nosuid,nodev".to_owned()),
            ]
        );
        let mounts: Vec<DockerMount> = c.mounts.iter().map(docker_mount).collect();
        let bind = mounts[0].bind_options.as_ref().unwrap();
        assert_eq!(
            bind.propagation,
            Some(MountBindOptionsPropagationEnum::RSLAVE)
        );
        assert_eq!(bind.read_only_force_recursive, Some(true));
        assert_eq!(mounts[0].read_only, Some(true));
        let volume = mounts[1].volume_options.as_ref().unwrap();
        assert_eq!(volume.no_copy, Some(true));
        assert_eq!(
            volume
                .driver_config
                .as_ref()
                .unwrap()
                .options
                .as_ref()
                .unwrap()["o"],
            "x"
        );
        let tmpfs = mounts[2].tmpfs_options.as_ref().unwrap();
        assert_eq!((tmpfs.size_bytes, tmpfs.mode), (Some(1 << 20), Some(0o700)));
        assert!(config("ReadOnly=yes\nReadOnlyTmpfs=no").tmpfs.is_empty());
        assert_eq!(
            config("VolatileTmp=yes").tmpfs,
            [("/tmp".to_owned(), "rw,size=512M,mode=1777".to_owned())]
        );
    }
}
