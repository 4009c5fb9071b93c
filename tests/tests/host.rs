//! The test hosts themselves work: they boot their own systemd with their
//! own machine id, run commands, run Docker with either cgroup driver, and
//! leave nothing behind.

use flotilla_testbed::{CgroupDriver, Host, HostOptions};

#[test]
fn two_hosts_boot_with_their_own_machine_ids() {
    let a = Host::boot("tb-a", &HostOptions::default()).unwrap();
    let b = Host::boot("tb-b", &HostOptions::default()).unwrap();
    let (ia, ib) = (a.machine_id().unwrap(), b.machine_id().unwrap());
    assert_eq!(ia.len(), 32);
    assert_ne!(ia, ib);
    assert_eq!(a.run(&["hostname"]).unwrap().trim(), "tb-a");
    let leader = a.leader_pid();
    drop(a);
    assert!(
        !std::path::Path::new(&format!("/proc/{leader}")).exists(),
        "host a left running"
    );
}

#[test]
fn docker_runs_in_a_host_with_either_cgroup_driver() {
    for driver in [CgroupDriver::Cgroupfs, CgroupDriver::Systemd] {
        let host = Host::boot(
            &format!("tb-docker-{}", driver.as_str()),
            &HostOptions::default(),
        )
        .unwrap();
        host.start_docker(driver).unwrap();
        let reported = host
            .run(&["docker", "info", "--format", "{{.CgroupDriver}}"])
            .unwrap();
        assert_eq!(reported.trim(), driver.as_str());
        host.load_busybox().unwrap();
        let out = host
            .run(&[
                "docker",
                "run",
                "--rm",
                "local/busybox:latest",
                "echo",
                "hello",
            ])
            .unwrap();
        assert_eq!(out.trim(), "hello");
    }
}
