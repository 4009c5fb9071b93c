//! One pass over a `[Container]` section's assignments, in file order.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::duration;
use crate::name::UnitName;
use crate::suggest;
use crate::unit_file::ValueRef;
use crate::value::{parse_bool, split_words};
use crate::work;

use super::attach::{self, AttachReader};
use super::capability::{CAPABILITIES, normalize_capability};
use super::image::check_image;
use super::keys::{KEYS, QUADLET_UNSUPPORTED};
use super::keys_doc::unsupported_reason;
use super::ports::{host_ports_clash, parse_port_mapping, protocol_name};
use super::specifiers::expand_specifiers;
use super::volumes::parse_volume;
use super::{
    ContainerSpec, DEFAULT_STOP_TIMEOUT, HealthCmd, HealthOnFailure, MAX_PUBLISHED_PORTS, Notify,
    SECTION, Signal, check_container_name, default_container_name,
};
use super::{host, inherit, reload, security};

/// The state of one pass over the section's assignments, in file order.
pub(super) struct Reader<'a> {
    name: &'a UnitName,
    diags: &'a mut Diagnostics,
    spec: ContainerSpec,
    /// Whether the effective `Image=` is set (even if it was bad, so that a
    /// bad image is not also reported as missing).
    image_set: bool,
    /// Whether the effective `HealthCmd=` is set to a check, even one
    /// deferred to instances.
    health_cmd_set: bool,
    /// The effective `Notify=` and `HealthOnFailure=` assignments, checked
    /// against `HealthCmd=` at the end.
    notify_at: Option<(u32, String)>,
    on_failure_at: Option<(u32, String)>,
    /// Health settings that have no effect with `HealthCmd=none`.
    health_tuning: Vec<(u32, String)>,
    /// Lines of the effective `PublishPort=` values, in the order of
    /// `spec.publish_ports`.
    port_lines: Vec<u32>,
    /// The line of each effective `Volume=`, by its path in the container.
    volume_targets: HashMap<String, u32>,
    /// The network and mount keys.
    attach: AttachReader,
}

/// A value after specifier expansion.
enum Expanded {
    Value(String),
    /// The value uses `%i` in a template: checked in each instance.
    Deferred,
    /// An error was reported.
    Failed,
}

impl<'a> Reader<'a> {
    pub(super) fn new(name: &'a UnitName, diags: &'a mut Diagnostics) -> Self {
        Reader {
            name,
            diags,
            spec: ContainerSpec {
                image: String::new(),
                exec: Vec::new(),
                entrypoint: None,
                environment: BTreeMap::new(),
                environment_files: Vec::new(),
                publish_ports: Vec::new(),
                volumes: Vec::new(),
                user: None,
                working_dir: None,
                container_name: default_container_name(name),
                labels: BTreeMap::new(),
                health_cmd: None,
                health_interval: None,
                health_timeout: None,
                health_retries: None,
                health_start_period: None,
                health_on_failure: HealthOnFailure::None,
                notify: Notify::Running,
                stop_signal: None,
                stop_timeout: DEFAULT_STOP_TIMEOUT,
                read_only: false,
                add_capabilities: Vec::new(),
                drop_capabilities: Vec::new(),
                init: false,
                host: Default::default(),
                security: Default::default(),
                inherit: Default::default(),
                reload: Default::default(),
                pull: Default::default(),
                secrets: Default::default(),
                attach: Default::default(),
                from_service: Default::default(),
            },
            image_set: false,
            health_cmd_set: false,
            notify_at: None,
            on_failure_at: None,
            health_tuning: Vec::new(),
            port_lines: Vec::new(),
            volume_targets: HashMap::new(),
            attach: AttachReader::default(),
        }
    }

    fn error(&mut self, v: &ValueRef<'_>, message: impl Into<String>) {
        self.diags.push(v.error(message));
    }

    pub(super) fn entry(&mut self, v: ValueRef<'_>) {
        work::charge(v.key.len() + v.value.len() + 1);
        let v = self.quadlet_lookup(v);
        let value = v.value;
        match v.key {
            "Image" => self.image(&v),
            "Exec" => self.exec(&v),
            "Entrypoint" => self.entrypoint(&v),
            "Environment" => {
                if value.is_empty() {
                    self.spec.environment.clear();
                    self.spec.from_service.environment.clear();
                } else if let Some(pairs) = self.assignments(&v, Assignments::Environment) {
                    for (name, value) in pairs {
                        match value {
                            Some(value) => {
                                self.spec.from_service.environment.remove(&name);
                                self.spec.environment.insert(name, value);
                            }
                            None => {
                                self.spec.environment.remove(&name);
                                self.spec.from_service.environment.insert(name);
                            }
                        }
                    }
                }
            }
            "Label" => {
                if value.is_empty() {
                    self.spec.labels.clear();
                } else if let Some(pairs) = self.assignments(&v, Assignments::Label) {
                    let pairs = pairs.into_iter().filter_map(|(k, v)| v.map(|v| (k, v)));
                    self.spec.labels.extend(pairs);
                }
            }
            "EnvironmentFile" => self.environment_file(&v),
            "PublishPort" => self.publish_port(&v),
            "Volume" => self.volume(&v),
            "User" => {
                self.spec.user = None;
                if !value.is_empty()
                    && let Expanded::Value(user) = self.expand(&v, value)
                {
                    match check_user(&user) {
                        Ok(()) => self.spec.user = Some(user),
                        Err(reason) => self.error(&v, reason),
                    }
                }
            }
            "WorkingDir" => {
                self.spec.working_dir = None;
                if !value.is_empty()
                    && let Expanded::Value(dir) = self.expand(&v, value)
                {
                    if dir.starts_with('/') {
                        self.spec.working_dir = Some(dir);
                    } else {
                        self.error(
                            &v,
                            format!("expected an absolute path in the container, found {dir:?}"),
                        );
                    }
                }
            }
            "ContainerName" => {
                self.spec.container_name = default_container_name(self.name);
                if !value.is_empty()
                    && let Expanded::Value(name) = self.expand(&v, value)
                {
                    match check_container_name(&name) {
                        Ok(()) => self.spec.container_name = name,
                        Err(reason) => self.error(&v, reason),
                    }
                }
            }
            "Secret" => super::secret::read(&mut self.spec.secrets, &v, self.diags, self.name),
            "HealthCmd" => self.health_cmd(&v),
            "HealthInterval" if value == "disable" => self.error(
                &v,
                "Docker runs a health check at its interval always (its 0 means the default, 30s), and has no check that runs only when asked; HealthCmd=none runs none",
            ),
            "HealthInterval" => {
                self.spec.health_interval = self.health_duration(&v);
            }
            "HealthTimeout" => {
                self.spec.health_timeout = self.health_duration(&v);
            }
            "HealthStartPeriod" => {
                self.spec.health_start_period = self.health_duration(&v);
            }
            "HealthRetries" => {
                self.spec.health_retries = None;
                self.note_health_tuning(&v);
                if !value.is_empty() {
                    match value.parse::<u32>() {
                        Ok(n) if n > 0 && value.bytes().all(|b| b.is_ascii_digit()) => {
                            self.spec.health_retries = Some(n);
                        }
                        _ => self.error(
                            &v,
                            format!(
                                "expected a whole number of retries, at least 1, found {value:?}"
                            ),
                        ),
                    }
                }
            }
            "HealthOnFailure" => {
                self.spec.health_on_failure = HealthOnFailure::None;
                self.on_failure_at = None;
                let action = match value {
                    "" | "none" => Some(HealthOnFailure::None),
                    "kill" => Some(HealthOnFailure::Kill),
                    "restart" => Some(HealthOnFailure::Restart),
                    "stop" => Some(HealthOnFailure::Stop),
                    _ => None,
                };
                match action {
                    Some(action) => {
                        self.spec.health_on_failure = action;
                        if action != HealthOnFailure::None {
                            self.on_failure_at = Some((v.line, value.to_owned()));
                        }
                    }
                    None => self.error(
                        &v,
                        format!("expected none, kill, restart or stop, found {value:?}"),
                    ),
                }
            }
            "Notify" => {
                self.spec.notify = Notify::Running;
                self.notify_at = None;
                if value.eq_ignore_ascii_case("healthy") {
                    self.spec.notify = Notify::Healthy;
                    self.notify_at = Some((v.line, value.to_owned()));
                } else if !value.is_empty() {
                    match parse_bool(value) {
                        Some(true) => self.spec.notify = Notify::Container,
                        Some(false) => {}
                        None => {
                            self.error(&v, format!("expected yes, no or healthy, found {value:?}"))
                        }
                    }
                }
            }
            "StopSignal" => {
                self.spec.stop_signal = None;
                if !value.is_empty() {
                    match value.parse::<Signal>() {
                        Ok(signal) => self.spec.stop_signal = Some(signal),
                        Err(e) => self.error(&v, e.to_string()),
                    }
                }
            }
            "StopTimeout" => {
                self.spec.stop_timeout = DEFAULT_STOP_TIMEOUT;
                if !value.is_empty() {
                    match duration::parse_timespan(value) {
                        Ok(d) if d.subsec_nanos() == 0 => self.spec.stop_timeout = d,
                        Ok(_) => self.error(
                            &v,
                            format!(
                                "Docker counts the stop timeout in whole seconds, found {value:?}"
                            ),
                        ),
                        Err(e) => self.error(&v, e.to_string()),
                    }
                }
            }
            "ReadOnly" => self.spec.read_only = self.boolean(&v),
            "RunInit" | "Init" => self.spec.init = self.boolean(&v),
            "AddCapability" => {
                if value.is_empty() {
                    self.spec.add_capabilities.clear();
                } else {
                    let caps = self.capabilities(&v);
                    push_unique(&mut self.spec.add_capabilities, caps);
                }
            }
            "DropCapability" => {
                if value.is_empty() {
                    self.spec.drop_capabilities.clear();
                } else {
                    let caps = self.capabilities(&v);
                    push_unique(&mut self.spec.drop_capabilities, caps);
                }
            }
            key if host::KEYS.contains(&key) => self.own(&v, |s, k, x| host::read(&mut s.host, k, x)),
            key if security::KEYS.contains(&key) => {
                self.own(&v, |s, k, x| security::read(&mut s.security, k, x))
            }
            key if inherit::KEYS.contains(&key) => {
                self.own(&v, |s, k, x| inherit::read(&mut s.inherit, k, x))
            }
            key if reload::KEYS.contains(&key) => {
                self.own(&v, |s, k, x| reload::read(&mut s.reload, k, x))
            }
            "Pull" | "AuthFile" | "AutoUpdate" => self.pull(&v),
            key if attach::handles(key) => self.attach.entry(self.name, self.diags, &v),
            key => {
                let message = match QUADLET_UNSUPPORTED.iter().find(|(k, _)| *k == key) {
                    Some(_) => match unsupported_reason(key) {
                        "" => "this Podman Quadlet key is not supported by flotilla".to_owned(),
                        why => {
                            format!("this Podman Quadlet key is not supported by flotilla; {why}")
                        }
                    },
                    None => suggest::unknown_key_message(SECTION, key, KEYS.iter().copied()),
                };
                self.error(&v, message);
            }
        }
    }

    /// Unit-wide checks, once every assignment is read.
    pub(super) fn finish(mut self, header_line: Option<u32>) -> ContainerSpec {
        if !self.image_set {
            self.diags.push(Diagnostic::error(
                header_line,
                "[Container] needs Image=, the image to run, such as Image=docker.io/library/nginx:1.27",
            ));
        }
        self.spec.attach = std::mem::take(&mut self.attach).finish(
            self.port_lines.first().copied(),
            &self.volume_targets,
            self.diags,
        );
        let disabled = self.spec.health_cmd == Some(HealthCmd::None);
        let missing = if disabled {
            Some("HealthCmd=none disables it")
        } else if !self.health_cmd_set {
            // Even if the image defines one: the unit must say what it
            // waits for or acts on.
            Some("the unit sets no HealthCmd=")
        } else {
            None
        };
        if let Some(why) = missing {
            if let Some((line, value)) = self.notify_at.take() {
                self.diags.push(
                    Diagnostic::error(
                        Some(line).filter(|l| *l > 0),
                        format!(
                            "{value} waits for the container's health check to pass, but {why}"
                        ),
                    )
                    .at_option(SECTION, "Notify"),
                );
            }
            if let Some((line, value)) = self.on_failure_at.take() {
                self.diags.push(
                    Diagnostic::error(
                        Some(line).filter(|l| *l > 0),
                        format!("{value} acts on a failing health check, but {why}"),
                    )
                    .at_option(SECTION, "HealthOnFailure"),
                );
            }
        }
        if disabled {
            for (line, key) in std::mem::take(&mut self.health_tuning) {
                self.diags.push(
                    Diagnostic::warning(
                        Some(line).filter(|l| *l > 0),
                        "has no effect: HealthCmd=none disables the health check",
                    )
                    .at_option(SECTION, &key),
                );
            }
        }
        self.spec
    }

    /// The value of a single-valued key as Quadlet's `Lookup()` reads it:
    /// every `"` at either end removed (`Image="nginx"` is `nginx`). A
    /// warning when the quotes removed were not a pair.
    fn quadlet_lookup<'v>(&mut self, v: ValueRef<'v>) -> ValueRef<'v> {
        if !QUADLET_LOOKUP_KEYS.contains(&v.key) {
            return v;
        }
        let trimmed = v.value.trim_matches('"');
        if trimmed.len() != v.value.len() {
            let leading = v.value.len() - v.value.trim_start_matches('"').len();
            let trailing = v.value.len() - v.value.trim_end_matches('"').len();
            if leading != trailing || trimmed.is_empty() {
                self.diags.push(v.warning(format!(
                    "read as {trimmed:?}: as Podman Quadlet does, every '\"' at either end of the value is removed"
                )));
            }
        }
        ValueRef {
            value: trimmed,
            ..v
        }
    }

    /// Expands specifiers in `text`, part of value `v`; reports bad ones.
    fn expand(&mut self, v: &ValueRef<'_>, text: &str) -> Expanded {
        match expand_specifiers(self.name, text) {
            Ok(Some(s)) => Expanded::Value(s),
            Ok(None) => Expanded::Deferred,
            Err(message) => {
                self.error(v, message);
                Expanded::Failed
            }
        }
    }

    fn pull(&mut self, v: &ValueRef<'_>) {
        if let Err(reason) = self.spec.pull.entry(v) {
            self.error(v, reason);
        }
    }

    fn image(&mut self, v: &ValueRef<'_>) {
        self.spec.image.clear();
        self.image_set = !v.value.is_empty();
        if v.value.is_empty() {
            return;
        }
        match self.expand(v, v.value) {
            Expanded::Value(image) => {
                if image.ends_with(".image") || image.ends_with(".build") {
                    self.error(
                        v,
                        format!(
                            "{image:?} names a Podman Quadlet .image or .build unit, which flotilla does not support; name an image such as docker.io/library/nginx:1.27"
                        ),
                    );
                    return;
                }
                match check_image(&image) {
                    Ok(()) => self.spec.image = image,
                    Err(reason) => self.error(
                        v,
                        format!(
                            "expected an image reference such as docker.io/library/nginx:1.27, found {image:?}: {reason}"
                        ),
                    ),
                }
            }
            // The template keeps the value as written; each instance checks it.
            Expanded::Deferred => self.spec.image = v.value.to_owned(),
            Expanded::Failed => {}
        }
    }

    /// A key read by a module of its own: `read` gets the value with its
    /// specifiers expanded (empty for an empty assignment); a value that
    /// depends on a template's instance is checked in each instance.
    fn own(
        &mut self,
        v: &ValueRef<'_>,
        read: impl FnOnce(&mut ContainerSpec, &str, &str) -> Result<(), String>,
    ) {
        let value = if v.value.is_empty() {
            String::new()
        } else {
            match self.expand(v, v.value) {
                Expanded::Value(value) => value,
                Expanded::Deferred | Expanded::Failed => return,
            }
        };
        if let Err(reason) = read(&mut self.spec, v.key, &value) {
            self.error(v, reason);
        }
    }

    /// Splits a value into words as systemd does, reporting bad quoting.
    fn words(&mut self, v: &ValueRef<'_>) -> Option<Vec<String>> {
        match split_words(v.value) {
            Ok(words) => Some(words),
            Err(e) => {
                self.error(v, format!("bad quoting or escape: {e}"));
                None
            }
        }
    }

    /// The words of a value with specifiers expanded; `None` when a word
    /// is bad or depends on the instance of a template.
    fn expanded_words(&mut self, v: &ValueRef<'_>) -> Option<Vec<String>> {
        let mut out = Vec::new();
        let mut complete = true;
        for word in self.words(v)? {
            match self.expand(v, &word) {
                Expanded::Value(w) => out.push(w),
                Expanded::Deferred | Expanded::Failed => complete = false,
            }
        }
        complete.then_some(out)
    }

    fn exec(&mut self, v: &ValueRef<'_>) {
        self.spec.exec.clear();
        if let Some(words) = self.expanded_words(v) {
            self.spec.exec = words;
        }
    }

    fn entrypoint(&mut self, v: &ValueRef<'_>) {
        self.spec.entrypoint = None;
        if v.value.is_empty() {
            // Quadlet passes `--entrypoint=` on: the image's is cleared.
            self.spec.entrypoint = Some(Vec::new());
            return;
        }
        let Expanded::Value(text) = self.expand(v, v.value) else {
            return;
        };
        if text.starts_with('[') {
            match parse_json_strings(&text) {
                Ok(args) => self.spec.entrypoint = Some(args),
                Err(reason) => self.error(
                    v,
                    format!(
                        "expected a program, or a JSON array of strings such as [\"/bin/sh\", \"-c\"], found {text:?}: {reason}"
                    ),
                ),
            }
        } else {
            self.spec.entrypoint = Some(vec![text]);
        }
    }

    /// `NAME=value` words of `Environment=` or `Label=`, in order; a bare
    /// `NAME` of `Environment=` has no value.
    fn assignments(
        &mut self,
        v: &ValueRef<'_>,
        kind: Assignments,
    ) -> Option<Vec<(String, Option<String>)>> {
        let mut out = Vec::new();
        for word in self.words(v)? {
            let word = match self.expand(v, &word) {
                Expanded::Value(w) => w,
                Expanded::Deferred | Expanded::Failed => continue,
            };
            let Some((key, value)) = word.split_once('=') else {
                if matches!(kind, Assignments::Environment) && is_env_name(&word) {
                    // Quadlet's `Environment=FOO`: the service's own FOO.
                    out.push((word, None));
                    continue;
                }
                if matches!(kind, Assignments::Label) && !word.is_empty() {
                    // Quadlet's `Label=KEY` (`--label KEY`): an empty value.
                    out.push((word, Some(String::new())));
                    continue;
                }
                self.error(v, format!("expected {}, found {word:?}", kind.shape()));
                continue;
            };
            match kind {
                Assignments::Environment if !is_env_name(key) => {
                    self.error(
                        v,
                        format!(
                            "{key:?} is not a valid environment variable name: use letters, digits and '_', not starting with a digit"
                        ),
                    );
                    continue;
                }
                Assignments::Label if key.is_empty() => {
                    self.error(v, format!("expected {}, found {word:?}", kind.shape()));
                    continue;
                }
                _ => {}
            }
            out.push((key.to_owned(), Some(value.to_owned())));
        }
        Some(out)
    }

    fn environment_file(&mut self, v: &ValueRef<'_>) {
        if v.value.is_empty() {
            self.spec.environment_files.clear();
            return;
        }
        let Some(words) = self.words(v) else {
            return;
        };
        for word in words {
            let Expanded::Value(path) = self.expand(v, &word) else {
                continue;
            };
            if path.starts_with('/') {
                self.spec.environment_files.push(path);
            } else {
                self.error(
                    v,
                    format!(
                        "expected an absolute path on the host, found {path:?}: a flotilla unit has no directory for a relative path to start from"
                    ),
                );
            }
        }
    }

    fn publish_port(&mut self, v: &ValueRef<'_>) {
        if v.value.is_empty() {
            self.spec.publish_ports.clear();
            self.port_lines.clear();
            return;
        }
        let Expanded::Value(text) = self.expand(v, v.value) else {
            return;
        };
        if self.spec.publish_ports.len() == MAX_PUBLISHED_PORTS {
            self.error(
                v,
                format!(
                    "a container may publish at most {MAX_PUBLISHED_PORTS} ports or ranges of ports"
                ),
            );
            return;
        }
        let mapping = match parse_port_mapping(&text) {
            Ok(m) => m,
            Err(reason) => {
                self.error(
                    v,
                    format!(
                        "expected [[IP:][HOST-PORT]:]CONTAINER-PORT[/tcp|udp|sctp] such as 8080:80, found {text:?}: {reason}"
                    ),
                );
                return;
            }
        };
        // Each new mapping is compared with those before it: the limit
        // above keeps that to a bounded number of comparisons per line.
        work::charge(self.spec.publish_ports.len());
        let clash = self
            .spec
            .publish_ports
            .iter()
            .zip(&self.port_lines)
            .find(|(other, _)| host_ports_clash(&mapping, other))
            .map(|(other, line)| (other.protocol, *line));
        if let Some((protocol, line)) = clash {
            let host = mapping.host_port.map(|p| p.to_string()).unwrap_or_default();
            self.error(
                v,
                format!(
                    "host port {host}/{} is already published on line {line}",
                    protocol_name(protocol)
                ),
            );
            return;
        }
        self.spec.publish_ports.push(mapping);
        self.port_lines.push(v.line);
    }

    fn volume(&mut self, v: &ValueRef<'_>) {
        if v.value.is_empty() {
            self.spec.volumes.clear();
            self.volume_targets.clear();
            return;
        }
        let mut parts = Vec::new();
        for part in v.value.splitn(3, ':') {
            match self.expand(v, part) {
                Expanded::Value(p) => parts.push(p),
                Expanded::Deferred | Expanded::Failed => return,
            }
        }
        let volume = match parse_volume(&parts) {
            Ok(volume) => volume,
            Err(reason) => {
                self.error(v, reason);
                return;
            }
        };
        let same = self.volume_targets.get(&volume.target).copied();
        if let Some(line) = same {
            self.error(
                v,
                format!(
                    "{:?} in the container is already mounted on line {line}",
                    volume.target
                ),
            );
            return;
        }
        self.volume_targets.insert(volume.target.clone(), v.line);
        self.spec.volumes.push(volume);
    }

    fn health_cmd(&mut self, v: &ValueRef<'_>) {
        self.spec.health_cmd = None;
        self.health_cmd_set = false;
        if v.value.is_empty() {
            return;
        }
        let text = match self.expand(v, v.value) {
            Expanded::Value(text) => text,
            Expanded::Deferred => {
                self.health_cmd_set = true;
                return;
            }
            Expanded::Failed => return,
        };
        match parse_health_cmd(&text) {
            Ok(cmd) => {
                self.health_cmd_set = cmd != HealthCmd::None;
                self.spec.health_cmd = Some(cmd);
            }
            Err(reason) => {
                // Set, though bad: not also reported as missing.
                self.health_cmd_set = true;
                self.error(v, reason);
            }
        }
    }

    fn note_health_tuning(&mut self, v: &ValueRef<'_>) {
        self.health_tuning.retain(|(_, key)| key != v.key);
        if !v.value.is_empty() {
            self.health_tuning.push((v.line, v.key.to_owned()));
        }
    }

    /// A health-check time span: Docker takes 1ms or more.
    fn health_duration(&mut self, v: &ValueRef<'_>) -> Option<Duration> {
        self.note_health_tuning(v);
        if v.value.is_empty() {
            return None;
        }
        match duration::parse_timespan(v.value) {
            Ok(d) if d < Duration::from_millis(1) => {
                self.error(
                    v,
                    format!(
                        "Docker needs at least 1ms, found {:?}; leave it unset for the image's or Docker's default",
                        v.value
                    ),
                );
                None
            }
            Ok(d) if d.as_nanos() > i64::MAX as u128 => {
                self.error(v, format!("{:?} is longer than Docker can count", v.value));
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.error(v, e.to_string());
                None
            }
        }
    }

    fn boolean(&mut self, v: &ValueRef<'_>) -> bool {
        if v.value.is_empty() {
            return false;
        }
        match parse_bool(v.value) {
            Some(b) => b,
            None => {
                self.error(
                    v,
                    format!("expected a boolean (yes or no, true or false, on or off, 1 or 0), found {:?}", v.value),
                );
                false
            }
        }
    }

    fn capabilities(&mut self, v: &ValueRef<'_>) -> Vec<String> {
        let mut out = Vec::new();
        for word in self.expanded_words(v).unwrap_or_default() {
            match normalize_capability(&word) {
                Some(cap) => out.push(cap),
                None => {
                    let upper = word.to_ascii_uppercase();
                    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
                    let message = match suggest::nearest(bare, CAPABILITIES) {
                        Some(near) => {
                            format!("unknown capability {word:?}; did you mean CAP_{near}?")
                        }
                        None => format!(
                            "unknown capability {word:?}: expected a Linux capability such as CAP_NET_ADMIN or NET_ADMIN, or ALL"
                        ),
                    };
                    self.error(v, message);
                }
            }
        }
        out
    }
}

/// The keys Quadlet reads with `Lookup()`, which removes every `"` at
/// either end of the value; the others are word lists, or read as written.
const QUADLET_LOOKUP_KEYS: &[&str] = &[
    "Image",
    "Entrypoint",
    "User",
    "WorkingDir",
    "ContainerName",
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
];

#[derive(Clone, Copy)]
enum Assignments {
    Environment,
    Label,
}

impl Assignments {
    fn shape(self) -> &'static str {
        match self {
            Assignments::Environment => "NAME=VALUE",
            Assignments::Label => "KEY=VALUE",
        }
    }
}

fn push_unique(list: &mut Vec<String>, items: Vec<String>) {
    for item in items {
        // Capability names: the list is never longer than the known ones.
        work::charge(list.len());
        if !list.contains(&item) {
            list.push(item);
        }
    }
}

/// `user[:group]`, each a name or a number.
fn check_user(text: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "expected user or user:group, each a name or a number, found {text:?}: {why}"
        ))
    };
    let (user, group) = match text.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (text, None),
    };
    for part in std::iter::once(user).chain(group) {
        if part.is_empty() {
            return bad("a part is empty");
        }
        if part.bytes().all(|b| b.is_ascii_digit()) {
            if part.parse::<u32>().is_err() {
                return bad("the number is too large for an ID");
            }
            continue;
        }
        let body = part.strip_suffix('$').unwrap_or(part);
        let mut chars = body.chars();
        let valid = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid {
            return bad(&format!("{part:?} is not a user or group name"));
        }
    }
    Ok(())
}

/// POSIX shell variable names, as systemd requires in `Environment=`.
fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_health_cmd(text: &str) -> Result<HealthCmd, String> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(HealthCmd::None);
    }
    if !text.starts_with('[') {
        return Ok(HealthCmd::Shell(text.to_owned()));
    }
    let bad = |reason: &str| {
        format!(
            "expected a shell command, none, or a JSON array of strings such as [\"curl\", \"-f\", \"http://localhost/\"], found {text:?}: {reason}"
        )
    };
    let args = parse_json_strings(text).map_err(|reason| bad(&reason))?;
    match args.first().map(String::as_str) {
        None => Err(bad("the array is empty")),
        Some("NONE") if args.len() == 1 => Ok(HealthCmd::None),
        Some("CMD-SHELL") if args.len() == 2 => Ok(HealthCmd::Shell(args[1].clone())),
        Some("CMD-SHELL") => Err(bad("[\"CMD-SHELL\", ...] takes exactly one command")),
        Some("CMD") if args.len() > 1 => Ok(HealthCmd::Exec(args[1..].to_vec())),
        Some("CMD") => Err(bad("[\"CMD\", ...] needs a program after \"CMD\"")),
        Some("NONE") => Err(bad("[\"NONE\"] takes nothing more")),
        Some(_) => Ok(HealthCmd::Exec(args)),
    }
}

/// A JSON array of strings, as `Entrypoint=` and `HealthCmd=` take.
pub(super) fn parse_json_strings(text: &str) -> Result<Vec<String>, String> {
    serde_json::from_str(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_arrays() {
        assert_eq!(
            parse_json_strings(r#"["a", "b c"]"#),
            Ok(vec!["a".to_owned(), "b c".to_owned()])
        );
        assert_eq!(parse_json_strings("[]"), Ok(vec![]));
        assert_eq!(parse_json_strings(" [ ] "), Ok(vec![]));
        assert_eq!(
            parse_json_strings(r#"["\"q\"\\\/\n\u00e9\ud83d\ude00"]"#),
            Ok(vec!["\"q\"\\/\né😀".to_owned()])
        );
        for bad in [
            r#"["a""#,
            r#"["a",]"#,
            r#"["a"] x"#,
            r#"[1]"#,
            r#"['a']"#,
            r#"["\x"]"#,
            r#"["\ud83d"]"#,
            "[\"\t\"]",
        ] {
            assert!(parse_json_strings(bad).is_err(), "{bad:?}");
        }
    }
}
