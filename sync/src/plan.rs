//! What a source changes: the difference between the units a commit asks
//! for and the cluster's (as `flotilla apply` computes it), and the drift
//! of the units it owns from what it last applied.

use std::collections::BTreeMap;

use flotilla_proto::DesiredState;
use flotilla_proto::bundle::Wanted;
use flotilla_proto::sync::{Drifted, Owned};

/// A unit as the cluster has it: its content hash and desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Have {
    pub hash: String,
    pub desired: DesiredState,
}

/// One change a source makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The unit is not in the cluster.
    Create { unit: String },
    /// Its contents differ.
    Replace { unit: String },
    /// Only its desired state differs.
    State { unit: String, to: DesiredState },
    /// The source owns it and the commit no longer names it (prune).
    Destroy { unit: String },
}

impl Change {
    pub fn unit(&self) -> &str {
        match self {
            Change::Create { unit }
            | Change::Replace { unit }
            | Change::State { unit, .. }
            | Change::Destroy { unit } => unit,
        }
    }
}

/// The changes that make the cluster hold `wanted`; with `prune`, also
/// the destruction of the units in `prune` (the source's own) that
/// `wanted` does not name, first, so that a commit that swaps units fits
/// in the cluster's quotas. Units of the cluster that are in neither are
/// never touched.
pub fn changes(
    wanted: &BTreeMap<String, Wanted>,
    cluster: &BTreeMap<String, Have>,
    prune: Option<&BTreeMap<String, Owned>>,
) -> Vec<Change> {
    let mut out = Vec::new();
    for name in prune.into_iter().flat_map(BTreeMap::keys) {
        if !wanted.contains_key(name) && cluster.contains_key(name) {
            out.push(Change::Destroy { unit: name.clone() });
        }
    }
    for (name, w) in wanted {
        let unit = name.clone();
        match cluster.get(name) {
            None => out.push(Change::Create { unit }),
            Some(h) if h.hash != w.hash => out.push(Change::Replace { unit }),
            Some(h) if h.desired != w.desired => out.push(Change::State {
                unit,
                to: w.desired,
            }),
            Some(_) => {}
        }
    }
    out
}

/// The units of `owned` that the cluster no longer has as they were
/// applied.
pub fn drift(owned: &BTreeMap<String, Owned>, cluster: &BTreeMap<String, Have>) -> Vec<Drifted> {
    owned
        .iter()
        .filter_map(|(unit, o)| {
            let how = match cluster.get(unit) {
                None => "destroyed".to_owned(),
                Some(h) if h.hash != o.hash => "contents".to_owned(),
                Some(h) if h.desired != o.desired => {
                    format!("desired state {}, not {}", h.desired, o.desired)
                }
                Some(_) => return None,
            };
            Some(Drifted {
                unit: unit.clone(),
                how,
            })
        })
        .collect()
}

/// What a source records of the units a commit asks for.
pub fn owned(wanted: &BTreeMap<String, Wanted>) -> BTreeMap<String, Owned> {
    wanted
        .iter()
        .map(|(name, w)| {
            (
                name.clone(),
                Owned {
                    hash: w.hash.clone(),
                    desired: w.desired,
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(hash: &str, desired: DesiredState) -> Wanted {
        Wanted {
            text: String::new(),
            hash: hash.to_owned(),
            desired,
        }
    }

    fn have(hash: &str, desired: DesiredState) -> Have {
        Have {
            hash: hash.to_owned(),
            desired,
        }
    }

    #[test]
    fn changes_touch_only_what_differs_and_prune_only_what_is_owned() {
        use DesiredState::*;
        let w: BTreeMap<String, Wanted> = [
            ("a".to_owned(), wanted("1", Launched)),
            ("b".to_owned(), wanted("2", Launched)),
            ("c".to_owned(), wanted("3", Loaded)),
            ("d".to_owned(), wanted("4", Launched)),
        ]
        .into();
        let cluster: BTreeMap<String, Have> = [
            ("b".to_owned(), have("x", Launched)),
            ("c".to_owned(), have("3", Launched)),
            ("d".to_owned(), have("4", Launched)),
            ("old".to_owned(), have("5", Launched)),
            ("theirs".to_owned(), have("6", Launched)),
        ]
        .into();
        let mine: BTreeMap<String, Owned> = [(
            "old".to_owned(),
            Owned {
                hash: "5".into(),
                desired: Launched,
            },
        )]
        .into();
        let expected = vec![
            Change::Create { unit: "a".into() },
            Change::Replace { unit: "b".into() },
            Change::State {
                unit: "c".into(),
                to: Loaded,
            },
        ];
        assert_eq!(changes(&w, &cluster, None), expected);
        let mut pruned = vec![Change::Destroy { unit: "old".into() }];
        pruned.extend(expected);
        assert_eq!(changes(&w, &cluster, Some(&mine)), pruned);
    }

    #[test]
    fn drift_names_what_differs() {
        use DesiredState::*;
        let owned = owned(
            &[
                ("a".to_owned(), wanted("1", Launched)),
                ("b".to_owned(), wanted("2", Launched)),
                ("c".to_owned(), wanted("3", Launched)),
                ("d".to_owned(), wanted("4", Launched)),
            ]
            .into(),
        );
        let cluster: BTreeMap<String, Have> = [
            ("b".to_owned(), have("x", Launched)),
            ("c".to_owned(), have("3", Loaded)),
            ("d".to_owned(), have("4", Launched)),
        ]
        .into();
        let got: Vec<(String, String)> = drift(&owned, &cluster)
            .into_iter()
            .map(|d| (d.unit, d.how))
            .collect();
        assert_eq!(
            got,
            [
                ("a".to_owned(), "destroyed".to_owned()),
                ("b".to_owned(), "contents".to_owned()),
                (
                    "c".to_owned(),
                    "desired state loaded, not launched".to_owned()
                )
            ]
        );
    }
}
