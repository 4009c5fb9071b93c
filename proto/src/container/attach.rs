//! What the container is attached to beyond its image: its networks
//! ([`super::network`]) and the mounts beside `Volume=`
//! ([`super::mounts`]), kept together as one field of [`super::ContainerSpec`].

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::diagnostic::Diagnostics;
use crate::name::UnitName;
use crate::unit_file::ValueRef;

use super::mounts::{MOUNT_KEYS, MountReader, MountSpec};
use super::network::{NETWORK_KEYS, NetworkReader, NetworkSpec};

/// The network and mount keys of `[Container]`. Serialised, parts at their
/// default are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachments {
    #[serde(default, skip_serializing_if = "NetworkSpec::is_empty")]
    pub network: NetworkSpec,
    #[serde(default, skip_serializing_if = "MountSpec::is_empty")]
    pub mounts: MountSpec,
}

impl Attachments {
    pub fn is_empty(&self) -> bool {
        self.network.is_empty() && self.mounts.is_empty()
    }
}

/// Whether `key` is one of the keys read here.
pub(super) fn handles(key: &str) -> bool {
    NETWORK_KEYS.contains(&key) || MOUNT_KEYS.contains(&key)
}

/// The network and mount keys' part of a pass over `[Container]`.
#[derive(Default)]
pub(super) struct AttachReader {
    network: NetworkReader,
    mounts: MountReader,
}

impl AttachReader {
    pub(super) fn entry(&mut self, name: &UnitName, diags: &mut Diagnostics, v: &ValueRef<'_>) {
        if NETWORK_KEYS.contains(&v.key) {
            self.network.entry(name, diags, v);
        } else {
            self.mounts.entry(name, diags, v);
        }
    }

    /// The checks once the section is read, against `PublishPort=` (the
    /// line of its first effective value) and `Volume=` (the line of each
    /// effective one by its target).
    pub(super) fn finish(
        self,
        publish_line: Option<u32>,
        volume_lines: &HashMap<String, u32>,
        diags: &mut Diagnostics,
    ) -> Attachments {
        Attachments {
            network: self.network.finish(publish_line, diags),
            mounts: self.mounts.finish(volume_lines, diags),
        }
    }
}
