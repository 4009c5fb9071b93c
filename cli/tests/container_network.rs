//! The network and mount keys of container units on a real systemd host
//! with a real Docker engine: each unit is rendered as flotilla renders it,
//! started by the host's systemd (its main process this build's `flotilla
//! shim`), and its container checked with `docker inspect` and from inside.
//!
//! The mapping does not depend on Docker's cgroup driver: one host, with
//! the cgroupfs driver.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use common::TempDir;
use common::containers;
use flotilla_testbed::{CgroupDriver, Host};
use serde_json::Value;

/// A user-defined network made for the test, and its subnet (a static
/// address needs one the network was created with).
const NET: &str = "flotest-net";
const SUBNET: &str = "10.213.7.0/24";
/// A second one.
const NET2: &str = "flotest-net2";
const SUBNET2: &str = "10.213.10.0/24";
/// The Docker network of the test's `shop.network`.
const OBJECT_NET: &str = "flotilla-shop";

struct TestHost {
    host: Host,
    units: TempDir,
}

impl TestHost {
    fn boot() -> TestHost {
        let (host, units) = containers::boot("ct-network", CgroupDriver::Cgroupfs);
        TestHost { host, units }
    }

    /// Renders the file `file` as flotilla does and installs it; returns
    /// its unit name (`db.network` is `db-network.service`).
    fn install(&self, file: &str, text: &str) -> String {
        containers::install(&self.host, &self.units, file, text)
    }

    /// Installs `name` and starts it; on a failure, fails with what the
    /// unit said.
    fn run(&self, name: &str, text: &str) {
        self.install(name, text);
        let out = self.host.output(&["systemctl", "start", name]).unwrap();
        assert!(
            out.status.success(),
            "systemctl start {name}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.sh(&format!("journalctl -q -u {name} --no-pager -o cat"))
        );
    }

    fn stop(&self, name: &str) {
        self.sh(&format!("systemctl stop {name}"));
    }

    fn sh(&self, script: &str) -> String {
        self.host.sh(script).unwrap()
    }

    /// `docker inspect` of a container, as JSON.
    fn inspect(&self, container: &str) -> Value {
        containers::inspect(&self.host, container)
    }

    /// Whether `script` succeeds in the container.
    fn in_container(&self, container: &str, script: &str) -> bool {
        self.host
            .output(&["docker", "exec", container, "sh", "-c", script])
            .unwrap()
            .status
            .success()
    }
}

impl Drop for TestHost {
    /// The test's containers and network go before the host does, pass or
    /// fail: a network's bridge lives in the network namespace the host
    /// shares with the machine.
    fn drop(&mut self) {
        let _ = self.host.sh(&format!(
            "docker ps -aq | xargs -r docker rm -f; docker network rm {NET} {NET2} {OBJECT_NET} 2>/dev/null; true"
        ));
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A container that runs until stopped.
const SLEEP: &str = "[Container]\nImage=local/busybox:latest\nExec=sleep 1000\nStopTimeout=1s\n";

/// Every network key on a user-defined network: mode, alias, static
/// address, host name, extra hosts, DNS settings and exposed ports, in
/// `docker inspect` and in the container's own files.
fn user_network(t: &TestHost) {
    t.sh(&format!("docker network create --subnet {SUBNET} {NET}"));
    t.run(
        "netweb.service",
        &format!(
            "{SLEEP}Network={NET}\nNetworkAlias=web\nIP=10.213.7.10\nHostName=web-1\n\
             AddHost=db:10.0.0.5\nDNS=10.0.0.2\nDNSOption=ndots:2\nDNSSearch=example.com\n\
             ExposeHostPort=9000/udp\n"
        ),
    );
    let c = t.inspect("flotilla-netweb");
    let host = &c["HostConfig"];
    assert_eq!(host["NetworkMode"], NET);
    let endpoint = &c["NetworkSettings"]["Networks"][NET];
    assert_eq!(endpoint["IPAddress"], "10.213.7.10", "{endpoint}");
    assert!(
        strings(&endpoint["Aliases"]).contains(&"web".to_owned()),
        "{endpoint}"
    );
    assert_eq!(c["Config"]["Hostname"], "web-1");
    assert_eq!(strings(&host["ExtraHosts"]), ["db:10.0.0.5"]);
    assert_eq!(strings(&host["Dns"]), ["10.0.0.2"]);
    assert_eq!(strings(&host["DnsOptions"]), ["ndots:2"]);
    assert_eq!(strings(&host["DnsSearch"]), ["example.com"]);
    assert!(
        c["Config"]["ExposedPorts"].get("9000/udp").is_some(),
        "{}",
        c["Config"]["ExposedPorts"]
    );
    let inside = |script: &str| t.in_container("flotilla-netweb", script);
    assert!(inside("test \"$(busybox hostname)\" = web-1"));
    assert!(inside("busybox grep -q '10.0.0.5.*db' /etc/hosts"));
    assert!(inside(
        "busybox grep -q 'search example.com' /etc/resolv.conf"
    ));
    assert!(inside("busybox grep -q 'ndots:2' /etc/resolv.conf"));
    assert!(inside("busybox ip addr | busybox grep -q 10.213.7.10"));

    // Another container shares its network stack.
    t.run(
        "netside.service",
        &format!("{SLEEP}Network=container:flotilla-netweb\n"),
    );
    let side = t.inspect("flotilla-netside");
    let id = c["Id"].as_str().unwrap();
    assert_eq!(side["HostConfig"]["NetworkMode"], format!("container:{id}"));
    assert!(t.in_container("flotilla-netside", "test \"$(busybox hostname)\" = web-1"));
    t.stop("netside.service");
    t.stop("netweb.service");

    // Two user-defined networks, each with its own settings.
    t.sh(&format!("docker network create --subnet {SUBNET2} {NET2}"));
    t.run(
        "nettwo.service",
        &format!("{SLEEP}Network={NET}:alias=one\nNetwork={NET2}:ip=10.213.10.5,alias=two\n"),
    );
    let c = t.inspect("flotilla-nettwo");
    assert_eq!(c["HostConfig"]["NetworkMode"], NET);
    let networks = &c["NetworkSettings"]["Networks"];
    assert!(
        strings(&networks[NET]["Aliases"]).contains(&"one".to_owned()),
        "{networks}"
    );
    assert_eq!(networks[NET2]["IPAddress"], "10.213.10.5", "{networks}");
    assert!(
        strings(&networks[NET2]["Aliases"]).contains(&"two".to_owned()),
        "{networks}"
    );
    t.stop("nettwo.service");
    t.sh(&format!("docker network rm {NET} {NET2}"));
}

/// `Network=host` and `Network=none`.
fn host_and_none(t: &TestHost) {
    t.run("nethost.service", &format!("{SLEEP}Network=host\n"));
    t.run("netnone.service", &format!("{SLEEP}Network=none\n"));
    assert_eq!(
        t.inspect("flotilla-nethost")["HostConfig"]["NetworkMode"],
        "host"
    );
    assert_eq!(
        t.inspect("flotilla-netnone")["HostConfig"]["NetworkMode"],
        "none"
    );
    let host_name = t.sh("hostname");
    assert!(t.in_container(
        "flotilla-nethost",
        &format!("test \"$(busybox hostname)\" = {}", host_name.trim())
    ));
    // Only a loopback interface.
    assert!(t.in_container(
        "flotilla-netnone",
        "test \"$(busybox ls /sys/class/net)\" = lo"
    ));
    t.stop("nethost.service");
    t.stop("netnone.service");
}

/// `Mount=` of each type and `Tmpfs=`, with `ReadOnly=yes`: a writable
/// tmpfs on /run, /tmp and /var/tmp beside them, the root read-only.
fn mounts_and_read_only(t: &TestHost) {
    t.sh("mkdir -p /srv/ro-data && echo hi > /srv/ro-data/f");
    t.run(
        "mounts.service",
        &format!(
            "{SLEEP}ReadOnly=yes\n\
             Mount=type=bind,source=/srv/ro-data,destination=/data,readonly\n\
             Mount=type=volume,source=flotest-vol,destination=/vol\n\
             Mount=type=tmpfs,destination=/scratch,tmpfs-size=1m\n\
             Tmpfs=/cache:size=2m\n"
        ),
    );
    let c = t.inspect("flotilla-mounts");
    let host = &c["HostConfig"];
    assert_eq!(host["ReadonlyRootfs"], true);
    let mounts = host["Mounts"].as_array().unwrap();
    let kinds: Vec<(&str, &str)> = mounts
        .iter()
        .map(|m| (m["Type"].as_str().unwrap(), m["Target"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [("bind", "/data"), ("volume", "/vol"), ("tmpfs", "/scratch")]
    );
    assert_eq!(mounts[0]["ReadOnly"], true);
    assert_eq!(mounts[2]["TmpfsOptions"]["SizeBytes"], 1 << 20);
    let mut tmpfs: Vec<&String> = host["Tmpfs"].as_object().unwrap().keys().collect();
    tmpfs.sort();
    assert_eq!(tmpfs, ["/cache", "/run", "/tmp", "/var/tmp"]);
    assert_eq!(host["Tmpfs"]["/cache"], "size=2m");
    let inside = |script: &str| t.in_container("flotilla-mounts", script);
    assert!(inside("busybox grep -q hi /data/f"));
    assert!(
        !inside("busybox touch /data/g"),
        "the bind mount is read-only"
    );
    assert!(!inside("busybox touch /root-file"), "the root is read-only");
    for dir in ["/tmp", "/var/tmp", "/run", "/cache", "/scratch", "/vol"] {
        assert!(
            inside(&format!("busybox touch {dir}/x")),
            "{dir} is writable"
        );
    }
    assert!(inside("busybox grep -q ' /scratch tmpfs ' /proc/mounts"));
    assert!(
        t.sh("docker volume ls -q")
            .lines()
            .any(|v| v == "flotest-vol")
    );
    t.stop("mounts.service");
    t.sh("docker volume rm flotest-vol; rm -rf /srv/ro-data");

    // volume-subpath: older engines would ignore it and mount the whole
    // volume, so the shim refuses it there, saying why.
    let api = t.sh("docker version -f '{{.Server.APIVersion}}'");
    let (major, minor) = api.trim().split_once('.').unwrap();
    let new_enough = (major.parse::<u32>().unwrap(), minor.parse::<u32>().unwrap()) >= (1, 45);
    t.sh("docker volume create flotest-sub && docker run --rm -v flotest-sub:/v local/busybox:latest sh -c 'mkdir /v/a && echo sub > /v/a/f'");
    let unit = "subpath.service";
    t.install(
        unit,
        &format!("{SLEEP}Mount=type=volume,source=flotest-sub,destination=/sub,volume-subpath=a\n"),
    );
    let started = t.host.output(&["systemctl", "start", unit]).unwrap();
    if new_enough {
        assert!(started.status.success());
        assert!(t.in_container("flotilla-subpath", "busybox grep -q sub /sub/f"));
        t.stop(unit);
    } else {
        assert!(!started.status.success());
        let journal = t.sh(&format!("journalctl -q -u {unit} --no-pager -o cat"));
        assert!(
            journal.contains("Mount= volume-subpath needs Docker 26 (API 1.45) or later"),
            "{journal}"
        );
        t.sh(&format!("systemctl reset-failed {unit}"));
    }
    t.sh("docker volume rm flotest-sub");

    // ReadOnlyTmpfs=no: nothing is writable.
    t.run(
        "rofull.service",
        &format!("{SLEEP}ReadOnly=yes\nReadOnlyTmpfs=no\n"),
    );
    let c = t.inspect("flotilla-rofull");
    assert!(
        c["HostConfig"]["Tmpfs"].is_null(),
        "{}",
        c["HostConfig"]["Tmpfs"]
    );
    assert!(!t.in_container("flotilla-rofull", "busybox touch /tmp/x"));
    t.stop("rofull.service");

    // VolatileTmp=yes without ReadOnly=: a fresh /tmp only.
    t.run("volatile.service", &format!("{SLEEP}VolatileTmp=yes\n"));
    let c = t.inspect("flotilla-volatile");
    assert_eq!(
        c["HostConfig"]["Tmpfs"],
        serde_json::json!({"/tmp": "rw,size=512M,mode=1777"})
    );
    assert!(t.in_container(
        "flotilla-volatile",
        "busybox grep -q ' /tmp tmpfs ' /proc/mounts"
    ));
    t.stop("volatile.service");
}

/// A `.network` and a `.volume` file used by a container unit: starting the
/// container starts both (Requires=), which create the network and the
/// volume, labelled as flotilla's; the container joins the network with
/// its static address and mounts the volume. Created once: starting the
/// units again finds them there. `NetworkDeleteOnStop=yes` removes the
/// network when its unit stops.
fn network_and_volume_files(t: &TestHost) {
    let net = t.install(
        "shop.network",
        "[Network]\nSubnet=10.213.8.0/24\nGateway=10.213.8.1\nLabel=app=shop\nNetworkDeleteOnStop=yes\n",
    );
    let vol = t.install("shop.volume", "[Volume]\nLabel=app=shop\n");
    assert_eq!(
        (net.as_str(), vol.as_str()),
        ("shop-network.service", "shop-volume.service")
    );
    t.run(
        "shopweb.service",
        &format!(
            "{SLEEP}Network=shop.network:alias=shop-web\nIP=10.213.8.20\nVolume=shop.volume:/data\n"
        ),
    );
    for unit in [&net, &vol] {
        assert_eq!(
            t.sh(&format!("systemctl show -P ActiveState {unit}"))
                .trim(),
            "active",
            "{unit}"
        );
    }
    let network: Value =
        serde_json::from_str(&t.sh(&format!("docker network inspect {OBJECT_NET}"))).unwrap();
    let network = &network[0];
    assert_eq!(network["Labels"]["flotilla.unit"], "shop-network.service");
    assert_eq!(network["Labels"]["app"], "shop");
    assert_eq!(network["IPAM"]["Config"][0]["Subnet"], "10.213.8.0/24");
    let volume: Value = serde_json::from_str(&t.sh("docker volume inspect flotilla-shop")).unwrap();
    assert_eq!(volume[0]["Labels"]["flotilla.unit"], "shop-volume.service");
    let c = t.inspect("flotilla-shopweb");
    let endpoint = &c["NetworkSettings"]["Networks"][OBJECT_NET];
    assert_eq!(endpoint["IPAddress"], "10.213.8.20", "{endpoint}");
    assert!(strings(&endpoint["Aliases"]).contains(&"shop-web".to_owned()));
    let mounts = c["Mounts"].as_array().unwrap();
    assert!(
        mounts.iter().any(|m| m["Type"] == "volume"
            && m["Name"] == "flotilla-shop"
            && m["Destination"] == "/data"),
        "{mounts:?}"
    );
    assert!(t.in_container("flotilla-shopweb", "echo kept > /data/f"));

    // Again: both are found, nothing is created twice, the data is kept.
    t.stop("shopweb.service");
    t.sh(&format!("systemctl restart {vol}"));
    t.run(
        "shopweb.service",
        &format!("{SLEEP}Network=shop.network\nVolume=shop.volume:/data\n"),
    );
    assert!(t.in_container("flotilla-shopweb", "test \"$(cat /data/f)\" = kept"));
    assert_eq!(
        t.sh("docker volume ls -q | grep -c flotilla-shop").trim(),
        "1"
    );
    t.stop("shopweb.service");
    t.stop(&net);
    assert!(
        !t.sh("docker network ls --format '{{.Name}}'")
            .lines()
            .any(|n| n == OBJECT_NET),
        "NetworkDeleteOnStop=yes removes the network"
    );
    t.stop(&vol);
    t.sh("docker volume rm flotilla-shop");
}

#[test]
fn network_and_mount_keys_on_a_real_docker_engine() {
    let t = TestHost::boot();
    user_network(&t);
    host_and_none(&t);
    mounts_and_read_only(&t);
    network_and_volume_files(&t);
    let left = t.sh("docker ps -a --format '{{.Names}}'");
    assert!(left.trim().is_empty(), "{left}");
}

/// Removes the test's containers and networks before the host goes, pass
/// or fail (see [`TestHost`]'s drop).
struct DockerCleanup<'a>(&'a Host, &'a str);

impl Drop for DockerCleanup<'_> {
    fn drop(&mut self) {
        let _ = self.0.sh(&format!(
            "docker ps -aq | xargs -r docker rm -f; docker network rm {} 2>/dev/null; true",
            self.1
        ));
    }
}

/// Through the cluster: a server, and an agent on a real host. The
/// `.network` and `.volume` files are only loaded (Global units: their
/// files on every machine); starting the container unit that names them
/// makes the host's systemd start them first, and the container runs on
/// the network they made.
#[test]
fn network_and_volume_files_through_a_server_and_an_agent() {
    use common::hosts::{boot, journal, start_agent, wait_active, wait_for};
    use common::{ServerProcess, ok};

    let dir = TempDir::new("container-objects");
    let server = ServerProcess::start(&dir.path().join("data"), &[]);
    let host = boot("ct-objects");
    host.start_docker(CgroupDriver::Cgroupfs).unwrap();
    host.load_busybox().unwrap();
    let _cleanup = DockerCleanup(&host, "flotilla-market");
    start_agent(&host, &server, "role=web");

    dir.write("market.network", "[Network]\nSubnet=10.213.9.0/24\n");
    dir.write("market.volume", "[Volume]\n");
    dir.write(
        "stall.service",
        &format!("{SLEEP}Network=market.network\nIP=10.213.9.7\nVolume=market.volume:/data\n"),
    );
    ok(&server.run(
        dir.path(),
        &["load", "--no-block", "market.network", "market.volume"],
    ));
    ok(&server.run(dir.path(), &["start", "--no-block", "stall.service"]));
    wait_active(&host, "stall.service");
    for unit in ["market-network.service", "market-volume.service"] {
        let state = host
            .sh(&format!("systemctl show -P ActiveState {unit}"))
            .unwrap();
        assert_eq!(state.trim(), "active", "{unit}\n{}", journal(&host));
    }
    let ip = wait_for(&host, "the container on the network", || {
        let out = host
            .sh("docker inspect -f '{{json .NetworkSettings.Networks}}' flotilla-stall")
            .ok()?;
        let networks: Value = serde_json::from_str(&out).ok()?;
        networks["flotilla-market"]["IPAddress"]
            .as_str()
            .map(str::to_owned)
    });
    assert_eq!(ip, "10.213.9.7");
    let mounts = host
        .sh("docker inspect -f '{{range .Mounts}}{{.Name}}:{{.Destination}} {{end}}' flotilla-stall")
        .unwrap();
    assert!(mounts.contains("flotilla-market:/data"), "{mounts}");
    let listed = ok(&server.run(dir.path(), &["list-unit-files", "-o", "json"]));
    assert!(listed.contains("market-network.service"), "{listed}");

    ok(&server.run(
        dir.path(),
        &[
            "destroy",
            "stall.service",
            "market.network",
            "market.volume",
        ],
    ));
    wait_for(&host, "the container gone", || {
        host.sh("docker ps -aq")
            .is_ok_and(|o| o.trim().is_empty())
            .then_some(())
    });
}
