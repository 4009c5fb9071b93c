//! What a container takes from its service's environment: `Environment=`
//! words that are a bare `NAME` (Quadlet's `Environment=FOO`, podman's
//! `--env FOO`).
//!
//! The shim is the service's main process, so its environment is the one
//! systemd gives the service (`[Service]` `Environment=`,
//! `EnvironmentFile=`, `PassEnvironment=`, and the manager's own), just as
//! it is for the `podman run` that Quadlet makes the service's
//! `ExecStart=`. A name not set there is not set in the container either.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Variables the container takes from the service's environment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FromService {
    /// Names of `Environment=` words without `=`; a later `NAME=value` of
    /// the same name takes it out again, as a later `NAME` takes out a
    /// `NAME=value`.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub environment: BTreeSet<String>,
}

impl FromService {
    /// Whether the container takes nothing from the service.
    pub fn is_empty(&self) -> bool {
        self.environment.is_empty()
    }

    /// `NAME=value` for each name `lookup` finds set, in name order.
    pub fn resolve(&self, lookup: impl Fn(&str) -> Option<String>) -> Vec<String> {
        self.environment
            .iter()
            .filter_map(|name| lookup(name).map(|value| format!("{name}={value}")))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_set_in_the_service_pass_the_others_do_not() {
        let from = FromService {
            environment: ["A", "UNSET", "EMPTY"].map(String::from).into(),
        };
        let env = from.resolve(|n| match n {
            "A" => Some("1 2".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        });
        assert_eq!(env, ["A=1 2", "EMPTY="]);
    }
}
