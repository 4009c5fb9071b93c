//! Which changed units roll out together: the rule `flotilla apply`,
//! `start --replace` and git sources share (docs/rollouts.md).
//!
//! Launched units that get new contents in one change roll out together
//! when `flotilla.yaml`'s `rollouts:` names them in one group (with that
//! group's settings), or when they are two or more instances of one
//! template. Every other unit is written alone, as before.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::duration::parse_timespan;
use crate::name::UnitName;
use crate::rollout::{MAX_GROUP_LEN, RolloutOptions, RolloutRequest, RolloutUnitPut};

/// Each unit of a `rollouts:` group, with its group and the group's
/// settings.
pub type Groups = BTreeMap<UnitName, (String, RolloutOptions)>;

/// A group of `flotilla.yaml`'s `rollouts:` section.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ManifestGroup {
    /// Units of the directory; a template stands for its instances.
    units: Vec<String>,
    #[serde(default)]
    max_parallel: Option<u32>,
    #[serde(default)]
    min_healthy_time: Option<Span>,
    #[serde(default)]
    auto_revert: Option<bool>,
    #[serde(default)]
    wave_timeout: Option<Span>,
}

/// A time span in YAML: systemd's words (`30s`, `1min 30s`) or seconds.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(untagged)]
enum Span {
    Seconds(u64),
    Text(String),
}

impl Span {
    fn duration(&self) -> Result<Duration, String> {
        match self {
            Span::Seconds(s) => Ok(Duration::from_secs(*s)),
            Span::Text(t) => parse_timespan(t).map_err(|e| e.to_string()),
        }
    }
}

/// Which group of `rollouts` (as the manifest at `manifest` wrote them,
/// see [`crate::bundle::Bundle::rollouts`]) each of `units` is in, with
/// the group's settings. A group that does not read, a unit in two
/// groups, or a group naming what `units` lacks is an error naming the
/// manifest and the group (`repo/flotilla.yaml: rollouts: web: ...`).
pub fn manifest_groups(
    manifest: &str,
    rollouts: &BTreeMap<String, serde_norway::Value>,
    units: &[UnitName],
) -> Result<Groups, String> {
    let mut of = Groups::new();
    for (group, value) in rollouts {
        let at = |what: &str| format!("{manifest}: rollouts: {group}: {what}");
        let g: ManifestGroup =
            serde_norway::from_value(value.clone()).map_err(|e| at(&e.to_string()))?;
        let span = |s: &Option<Span>, what: &str| {
            s.as_ref()
                .map(|s| s.duration().map_err(|e| at(&format!("{what}: {e}"))))
                .transpose()
        };
        let options = RolloutOptions {
            max_parallel: g.max_parallel,
            min_healthy_time: span(&g.min_healthy_time, "min-healthy-time")?,
            auto_revert: g.auto_revert,
            wave_timeout: span(&g.wave_timeout, "wave-timeout")?,
        };
        options.validate().map_err(|e| at(&e.to_string()))?;
        let name_ok = !group.is_empty()
            && group.len() <= MAX_GROUP_LEN
            && group
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ":_.@-".contains(c));
        if !name_ok {
            return Err(at("a group's name is 1 to 256 letters, digits and :_.@-"));
        }
        for entry in &g.units {
            let name = UnitName::parse(entry).map_err(|e| at(&e.to_string()))?;
            let members: Vec<&UnitName> = if name.is_template() {
                units
                    .iter()
                    .filter(|u| u.template().as_ref() == Some(&name))
                    .collect()
            } else {
                units.iter().filter(|u| **u == name).collect()
            };
            if members.is_empty() {
                return Err(at(&format!("{entry} is not a unit of the directory")));
            }
            for m in members {
                if let Some((other, _)) = of.insert(m.clone(), (group.clone(), options))
                    && other != *group
                {
                    return Err(at(&format!("{m} is in group {other} too")));
                }
            }
        }
    }
    Ok(of)
}

/// The launched units with new contents of one change, grouped: by
/// `groups` (a unit's named group, from `flotilla.yaml`), else by their
/// template when two or more instances of it change. Returns the
/// requests and the units left to write one by one.
pub fn group(
    changed: Vec<(UnitName, String)>,
    groups: &dyn Fn(&UnitName) -> Option<(String, RolloutOptions)>,
) -> (Vec<RolloutRequest>, Vec<UnitName>) {
    let mut by_group: BTreeMap<String, (RolloutOptions, Vec<RolloutUnitPut>)> = BTreeMap::new();
    let mut named = Vec::new();
    for (name, text) in changed {
        let (key, options) = match groups(&name) {
            Some((g, options)) => {
                named.push(g.clone());
                (g, options)
            }
            None => match name.template() {
                Some(t) => (t.to_string(), RolloutOptions::default()),
                None => (name.to_string(), RolloutOptions::default()),
            },
        };
        let entry = by_group.entry(key).or_insert((options, Vec::new()));
        entry.1.push(RolloutUnitPut { name, text });
    }
    let mut requests = Vec::new();
    let mut alone = Vec::new();
    for (group, (settings, units)) in by_group {
        if units.len() >= 2 || named.contains(&group) {
            requests.push(RolloutRequest {
                group,
                units,
                settings,
            });
        } else {
            alone.extend(units.into_iter().map(|u| u.name));
        }
    }
    (requests, alone)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> UnitName {
        UnitName::parse(s).unwrap()
    }

    #[test]
    fn instances_of_one_template_change_together_from_two() {
        let changed = vec![
            (n("w@1.service"), "a".into()),
            (n("w@2.service"), "a".into()),
            (n("v@1.service"), "b".into()),
            (n("db.service"), "c".into()),
        ];
        let (requests, alone) = group(changed, &|_| None);
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].group, "w@.service");
        assert_eq!(requests[0].units.len(), 2);
        assert_eq!(alone, vec![n("db.service"), n("v@1.service")]);
    }

    fn groups(yaml: &str) -> BTreeMap<String, serde_norway::Value> {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn manifest_groups_name_their_units_and_a_template_its_instances() {
        let units = [n("w@1.service"), n("w@2.service"), n("api.service")];
        let path = "repo/flotilla.yaml";
        let of = manifest_groups(
            path,
            &groups(
                "b:\n  units: [w@.service]\n  min-healthy-time: 1min 30s\n  wave-timeout: 90\n",
            ),
            &units,
        )
        .unwrap();
        assert_eq!(of.len(), 2);
        let (group, options) = &of[&n("w@2.service")];
        assert_eq!(group, "b");
        assert_eq!(options.min_healthy_time, Some(Duration::from_secs(90)));
        assert_eq!(options.wave_timeout, Some(Duration::from_secs(90)));

        let twice = groups("a:\n  units: [api.service]\nb:\n  units: [api.service]\n");
        let e = manifest_groups(path, &twice, &units).unwrap_err();
        assert_eq!(
            e,
            "repo/flotilla.yaml: rollouts: b: api.service is in group a too"
        );
        let bad = groups("a:\n  units: [api.service]\n  max-parallel: 0\n");
        let e = manifest_groups(path, &bad, &units).unwrap_err();
        assert!(
            e.contains("rollouts: a: maxParallel 0 is out of range"),
            "{e}"
        );
        let span = groups("a:\n  units: [api.service]\n  min-healthy-time: soon\n");
        let e = manifest_groups(path, &span, &units).unwrap_err();
        assert!(
            e.starts_with("repo/flotilla.yaml: rollouts: a: min-healthy-time: "),
            "{e}"
        );
        let unknown = groups("a:\n  units: [api.service]\n  parallel: 2\n");
        let e = manifest_groups(path, &unknown, &units).unwrap_err();
        assert!(
            e.starts_with("repo/flotilla.yaml: rollouts: a: unknown field"),
            "{e}"
        );
        let missing = groups("a:\n  units: [db.service]\n");
        let e = manifest_groups(path, &missing, &units).unwrap_err();
        assert_eq!(
            e,
            "repo/flotilla.yaml: rollouts: a: db.service is not a unit of the directory"
        );
    }

    #[test]
    fn a_named_group_rolls_out_even_one_unit_with_its_settings() {
        let options = RolloutOptions {
            max_parallel: Some(2),
            ..RolloutOptions::default()
        };
        let changed = vec![
            (n("db.service"), "c".into()),
            (n("w@1.service"), "a".into()),
        ];
        let (requests, alone) = group(changed, &|u| {
            (u.as_str() == "db.service").then(|| ("backend".to_owned(), options))
        });
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].group, "backend");
        assert_eq!(requests[0].settings, options);
        assert_eq!(alone, vec![n("w@1.service")]);
    }
}
