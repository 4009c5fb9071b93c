//! Where everything lives in the store, under one prefix (default
//! `/flotilla/v1/`):
//!
//! | key | value | written by |
//! |---|---|---|
//! | `units/<unit>` | [`UnitRecord`](crate::records::UnitRecord) | any server (user writes) |
//! | `global/<unit>` | empty: marks a `Global` unit | any server, with the unit |
//! | `assign/<machine>/<unit>` | empty | the leader, fenced |
//! | `sched/<unit>` | [`SchedRecord`](crate::records::SchedRecord): where it is placed, or why not | the leader, fenced |
//! | `machines/<id>` | `Machine` JSON, on the machine's lease | the machine's agent (through a server) |
//! | `state/<unit>/<machine>` | `UnitState` JSON | the machine's agent (through a server) |
//! | `leader` | [`LeaderRecord`](crate::records::LeaderRecord), on the leader's lease | the leader |
//! | `servers/<id>` | [`LeaderRecord`](crate::records::LeaderRecord) of a live server, on its lease | each server |
//! | `auth/creds/<id>` | a credential ([`CredentialRecord`](crate::trust::CredentialRecord)): never its secret, only a hash | any server (admins, joining machines) |
//! | `auth/machine/<machine>` | the id of the credential bound to a machine | any server, with the credential |
//! | `auth/bootstrap` | when the first admin credential was made | the first server |
//! | `audit/<ms>-<random>` | an [`AuditEntry`](flotilla_proto::trust::AuditEntry) | any server, after each change |
//! | `events/<ms>-<seq>-<server>-<count>` | a chunk of up to 128 [`Event`](flotilla_proto::event::Event)s ([`crate::events`]) | any server: the leader's decisions, agents' reports, changes through the API |
//! | `secrets/meta/<name>` | a secret's version, size and times ([`SecretMeta`](crate::secrets::SecretMeta)) | any server (operators) |
//! | `secrets/value/<name>` | a secret's value, sealed with the cluster's secrets key ([`crate::secrets`]) | any server, with its meta |
//! | `sync/sources/<name>` | a git source ([`Source`](flotilla_proto::sync::Source)): repository, branch, interval, paused | any server (operators) |
//! | `sync/status/<name>` | what the source last did ([`SourceStatus`](flotilla_proto::sync::SourceStatus)): commits fetched and applied, errors, drift, the units it owns | the leader (and any server, when the source is removed) |
//! | `rollouts/<id>` | a [`RolloutRecord`](crate::rollout::RolloutRecord): a rolling update, its units' contents before and after, and its progress | any server creates it; the leader drives it, fenced |
//! | `rollouts-running` | [`RunningRollouts`](crate::rollout::RunningRollouts): the ids of the running rollouts, so that a new leader learns them with one read | any server, with a rollout; the leader, when it ends |
//! | `rolling/<unit>` | the id of the running rollout that holds the unit: its contents change only through it | any server, with the rollout; the leader deletes it when the rollout ends |
//! | `tls/ca` | the cluster CA's certificate (PEM; never its key) | the first server |
//! | `cluster` | the cluster's id (JSON, [`crate::identity`]), in stores shared by servers (etcd) | the first server, once |
//!
//! Assignments are under a per-machine prefix so that an agent's watch sees
//! only its own work (fleet woke every machine on every change).

use flotilla_proto::{MachineId, UnitName};

/// The default prefix of every key.
pub const DEFAULT_PREFIX: &str = "/flotilla/v1/";

/// Builds and parses keys under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Default for Keys {
    fn default() -> Self {
        Keys::new(DEFAULT_PREFIX)
    }
}

impl Keys {
    /// Keys under `prefix`; a missing trailing `/` is added.
    pub fn new(prefix: &str) -> Keys {
        let mut prefix = prefix.to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Keys { prefix }
    }

    /// The prefix every key starts with.
    pub fn root(&self) -> &str {
        &self.prefix
    }

    pub fn units(&self) -> String {
        format!("{}units/", self.prefix)
    }

    pub fn unit(&self, unit: &UnitName) -> String {
        format!("{}units/{unit}", self.prefix)
    }

    pub fn globals(&self) -> String {
        format!("{}global/", self.prefix)
    }

    pub fn global(&self, unit: &UnitName) -> String {
        format!("{}global/{unit}", self.prefix)
    }

    pub fn assignments(&self) -> String {
        format!("{}assign/", self.prefix)
    }

    pub fn machine_assignments(&self, machine: &MachineId) -> String {
        format!("{}assign/{machine}/", self.prefix)
    }

    pub fn assignment(&self, machine: &MachineId, unit: &UnitName) -> String {
        format!("{}assign/{machine}/{unit}", self.prefix)
    }

    pub fn scheds(&self) -> String {
        format!("{}sched/", self.prefix)
    }

    pub fn sched(&self, unit: &UnitName) -> String {
        format!("{}sched/{unit}", self.prefix)
    }

    pub fn machines(&self) -> String {
        format!("{}machines/", self.prefix)
    }

    pub fn machine(&self, machine: &MachineId) -> String {
        format!("{}machines/{machine}", self.prefix)
    }

    pub fn states(&self) -> String {
        format!("{}state/", self.prefix)
    }

    pub fn unit_states(&self, unit: &UnitName) -> String {
        format!("{}state/{unit}/", self.prefix)
    }

    pub fn state(&self, unit: &UnitName, machine: &MachineId) -> String {
        format!("{}state/{unit}/{machine}", self.prefix)
    }

    pub fn leader(&self) -> String {
        format!("{}leader", self.prefix)
    }

    /// The cluster's id, in a store shared by servers (etcd).
    pub fn cluster(&self) -> String {
        format!("{}cluster", self.prefix)
    }

    pub fn servers(&self) -> String {
        format!("{}servers/", self.prefix)
    }

    pub fn server(&self, id: &str) -> String {
        format!("{}servers/{id}", self.prefix)
    }

    pub fn credentials(&self) -> String {
        format!("{}auth/creds/", self.prefix)
    }

    pub fn credential(&self, id: &str) -> String {
        format!("{}auth/creds/{id}", self.prefix)
    }

    pub fn machine_credential(&self, machine: &MachineId) -> String {
        format!("{}auth/machine/{machine}", self.prefix)
    }

    pub fn bootstrap(&self) -> String {
        format!("{}auth/bootstrap", self.prefix)
    }

    pub fn audit(&self) -> String {
        format!("{}audit/", self.prefix)
    }

    /// The cluster's history ([`crate::events`]).
    pub fn events(&self) -> String {
        format!("{}events/", self.prefix)
    }

    /// The id of the key the cluster's secrets are sealed with, recorded by
    /// the first server to start so that a server with another key is
    /// refused at its start.
    pub fn secrets_key_id(&self) -> String {
        format!("{}secrets/key", self.prefix)
    }

    pub fn secret_metas(&self) -> String {
        format!("{}secrets/meta/", self.prefix)
    }

    pub fn secret_meta(&self, name: &str) -> String {
        format!("{}secrets/meta/{name}", self.prefix)
    }

    pub fn secret_value(&self, name: &str) -> String {
        format!("{}secrets/value/{name}", self.prefix)
    }

    pub fn sync_sources(&self) -> String {
        format!("{}sync/sources/", self.prefix)
    }

    pub fn sync_source(&self, name: &str) -> String {
        format!("{}sync/sources/{name}", self.prefix)
    }

    pub fn sync_statuses(&self) -> String {
        format!("{}sync/status/", self.prefix)
    }

    pub fn sync_status(&self, name: &str) -> String {
        format!("{}sync/status/{name}", self.prefix)
    }

    pub fn rollouts(&self) -> String {
        format!("{}rollouts/", self.prefix)
    }

    pub fn rollout(&self, id: &str) -> String {
        format!("{}rollouts/{id}", self.prefix)
    }

    /// The ids of the running rollouts.
    pub fn running_rollouts(&self) -> String {
        format!("{}rollouts-running", self.prefix)
    }

    /// The locks of the units that running rollouts hold.
    pub fn rolling(&self) -> String {
        format!("{}rolling/", self.prefix)
    }

    pub fn rolling_unit(&self, unit: &UnitName) -> String {
        format!("{}rolling/{unit}", self.prefix)
    }

    pub fn ca(&self) -> String {
        format!("{}tls/ca", self.prefix)
    }

    /// What a key under this prefix is, or `None` for keys flotilla does
    /// not write (or that do not parse).
    pub fn parse(&self, key: &str) -> Option<Key> {
        let rest = key.strip_prefix(&self.prefix)?;
        let (kind, rest) = rest.split_once('/').unwrap_or((rest, ""));
        let unit = |s: &str| UnitName::parse(s).ok();
        let machine = |s: &str| MachineId::parse(s).ok();
        Some(match kind {
            "units" => Key::Unit(unit(rest)?),
            "global" => Key::Global(unit(rest)?),
            "sched" => Key::Sched(unit(rest)?),
            "machines" => Key::Machine(machine(rest)?),
            "assign" => {
                let (m, u) = rest.split_once('/')?;
                Key::Assignment(machine(m)?, unit(u)?)
            }
            "state" => {
                let (u, m) = rest.split_once('/')?;
                Key::State(unit(u)?, machine(m)?)
            }
            "leader" if rest.is_empty() => Key::Leader,
            "cluster" if rest.is_empty() => Key::Cluster,
            _ => return None,
        })
    }
}

/// A parsed key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Unit(UnitName),
    Global(UnitName),
    Assignment(MachineId, UnitName),
    Sched(UnitName),
    Machine(MachineId),
    State(UnitName, MachineId),
    Leader,
    Cluster,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let keys = Keys::new("/x");
        let u = UnitName::parse("web@1.service").unwrap();
        let m = MachineId::parse("0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(keys.unit(&u), "/x/units/web@1.service");
        assert_eq!(keys.parse(&keys.unit(&u)), Some(Key::Unit(u.clone())));
        assert_eq!(keys.parse(&keys.global(&u)), Some(Key::Global(u.clone())));
        assert_eq!(keys.parse(&keys.sched(&u)), Some(Key::Sched(u.clone())));
        assert_eq!(keys.parse(&keys.machine(&m)), Some(Key::Machine(m.clone())));
        assert_eq!(
            keys.parse(&keys.assignment(&m, &u)),
            Some(Key::Assignment(m.clone(), u.clone()))
        );
        assert_eq!(
            keys.parse(&keys.state(&u, &m)),
            Some(Key::State(u, m.clone()))
        );
        assert_eq!(keys.parse(&keys.leader()), Some(Key::Leader));
        assert_eq!(keys.cluster(), "/x/cluster");
        assert_eq!(keys.parse(&keys.cluster()), Some(Key::Cluster));
        assert_eq!(keys.parse("/x/units/bad name"), None);
        assert_eq!(keys.parse("/y/units/a.service"), None);
        assert_eq!(keys.parse("/x/other/a"), None);
        assert!(keys.machine_assignments(&m).ends_with('/'));
    }
}
