//! The keys of `[Container]`: those flotilla reads, and the Podman Quadlet
//! keys it does not, with why.

/// The keys flotilla reads in `[Container]`.
pub const KEYS: &[&str] = &[
    "Image",
    "Exec",
    "Entrypoint",
    "Environment",
    "EnvironmentFile",
    "PublishPort",
    "Volume",
    "User",
    "WorkingDir",
    "ContainerName",
    "Label",
    "HealthCmd",
    "HealthInterval",
    "HealthTimeout",
    "HealthRetries",
    "HealthStartPeriod",
    "HealthOnFailure",
    "Notify",
    "StopSignal",
    "StopTimeout",
    "ReadOnly",
    "RunInit",
    "Init",
    "AddCapability",
    "DropCapability",
    "AddDevice",
    "Ulimit",
    "ShmSize",
    "Sysctl",
    "Annotation",
    "LogDriver",
    "Group",
    "GroupAdd",
    "NoNewPrivileges",
    "SeccompProfile",
    "AppArmor",
    "SecurityLabelDisable",
    "SecurityLabelType",
    "SecurityLabelLevel",
    "SecurityLabelFileType",
    "SecurityLabelNested",
    "Unmask",
    "UserNS",
    "Timezone",
    "EnvironmentHost",
    "HttpProxy",
    "ReloadCmd",
    "ReloadSignal",
    "Pull",
    "AuthFile",
    "AutoUpdate",
    "Secret",
    "Network",
    "NetworkAlias",
    "IP",
    "IP6",
    "HostName",
    "AddHost",
    "DNS",
    "DNSOption",
    "DNSSearch",
    "ExposeHostPort",
    "Mount",
    "Tmpfs",
    "ReadOnlyTmpfs",
    "VolatileTmp",
];

/// Podman Quadlet `[Container]` keys that flotilla does not implement, with
/// a hint where flotilla has another way to the same end.
pub(super) const QUADLET_UNSUPPORTED: &[(&str, &str)] = &[
    (
        "CgroupsMode",
        "; the container always runs in the unit's cgroup",
    ),
    (
        "ContainersConfModule",
        "; containers.conf(5) modules configure Podman, and flotilla runs the container with Docker, which reads its own daemon.json",
    ),
    (
        "GIDMap",
        "; Docker has no user namespace of a container's own: its daemon maps the users of all containers or of none (userns-remap in daemon.json), so only UserNS=host has a meaning",
    ),
    (
        "GlobalArgs",
        "; its arguments are Podman's, and flotilla runs the container with Docker: each supported setting has its own key",
    ),
    (
        "HealthLogDestination",
        "; Docker keeps the last five probe results in the container's state and cannot be told where or how many; flotilla reports each health change in the unit's status and journal",
    ),
    (
        "HealthMaxLogCount",
        "; Docker keeps the last five probe results in the container's state and cannot be told where or how many; flotilla reports each health change in the unit's status and journal",
    ),
    (
        "HealthMaxLogSize",
        "; Docker keeps the last five probe results in the container's state and cannot be told where or how many; flotilla reports each health change in the unit's status and journal",
    ),
    (
        "HealthStartupCmd",
        "; Docker has no separate startup health check: HealthStartPeriod= gives the container time to start before failed checks count",
    ),
    (
        "HealthStartupInterval",
        "; Docker has no separate startup health check: HealthStartPeriod= gives the container time to start before failed checks count",
    ),
    (
        "HealthStartupRetries",
        "; Docker has no separate startup health check: HealthStartPeriod= gives the container time to start before failed checks count",
    ),
    (
        "HealthStartupSuccess",
        "; Docker has no separate startup health check: HealthStartPeriod= gives the container time to start before failed checks count",
    ),
    (
        "HealthStartupTimeout",
        "; Docker has no separate startup health check: HealthStartPeriod= gives the container time to start before failed checks count",
    ),
    (
        "LogOpt",
        "; the container's output goes to the unit's journal through flotilla's shim, and Docker keeps no log of its own to tune",
    ),
    (
        "Mask",
        "; Docker has no option to mask one more path (its API only replaces the whole default list, which differs between Docker versions); bind an empty file or directory over the path with Volume= instead",
    ),
    (
        "Memory",
        "; the container runs in the unit's cgroup, so set MemoryMax= in [Service]",
    ),
    (
        "PidsLimit",
        "; the container runs in the unit's cgroup, so set TasksMax= in [Service]",
    ),
    (
        "Pod",
        "; Docker has no pods: run each container as a unit of its own, ordered with After= and BindsTo=",
    ),
    (
        "PodmanArgs",
        "; its arguments are Podman's, and flotilla runs the container with Docker: each supported setting has its own key",
    ),
    (
        "RemapGid",
        "; Docker has no user namespace of a container's own: its daemon maps the users of all containers or of none (userns-remap in daemon.json), so only UserNS=host has a meaning",
    ),
    (
        "RemapUid",
        "; Docker has no user namespace of a container's own: its daemon maps the users of all containers or of none (userns-remap in daemon.json), so only UserNS=host has a meaning",
    ),
    (
        "RemapUidSize",
        "; Docker has no user namespace of a container's own: its daemon maps the users of all containers or of none (userns-remap in daemon.json), so only UserNS=host has a meaning",
    ),
    (
        "RemapUsers",
        "; Docker has no user namespace of a container's own: its daemon maps the users of all containers or of none (userns-remap in daemon.json), so only UserNS=host has a meaning",
    ),
    ("Retry", ""),
    ("RetryDelay", ""),
    ("Rootfs", "; use Image="),
    ("ServiceName", "; the unit's own name is the service's name"),
    (
        "StartWithPod",
        "; Docker has no pods: run each container as a unit of its own, ordered with After= and BindsTo=",
    ),
    (
        "SubGIDMap",
        "; Docker has no user namespace of a container's own: its daemon maps the users of all containers or of none (userns-remap in daemon.json), so only UserNS=host has a meaning",
    ),
    (
        "SubUIDMap",
        "; Docker has no user namespace of a container's own: its daemon maps the users of all containers or of none (userns-remap in daemon.json), so only UserNS=host has a meaning",
    ),
    (
        "UIDMap",
        "; Docker has no user namespace of a container's own: its daemon maps the users of all containers or of none (userns-remap in daemon.json), so only UserNS=host has a meaning",
    ),
];
