//! `StopAfterCutOff=`: stopping a unit while its machine is cut off from
//! the servers.
//!
//! By default a cut-off agent keeps every unit running: nobody can tell it
//! to stop, and its units may be all that still serves. A unit that must
//! never run twice (a singleton, a lock holder) says
//! `[X-Fleet] StopAfterCutOff=30s`: once the agent has not renewed its
//! machine's lease for that long, it stops the unit (its file stays, as for
//! a `loaded` unit).
//!
//! The clock runs from the last renewal the agent saw succeed, and counts
//! only once a renewal has failed: the agent renews every third of the
//! machine TTL and gives each renewal at most that long, so it notices a
//! cut-off within two thirds of the TTL. The leader moves a unit only once
//! the lease has run out, a whole TTL after the last renewal; so a unit
//! whose `StopAfterCutOff` (plus the time it takes to stop) is shorter than
//! the TTL is stopped before another machine starts it.
//!
//! A held unit runs again only on word from the servers: a feed that was
//! asked for after the unit was stopped. If the unit is still the
//! machine's, the next pass starts it; if it moved, the pass removes it.
//! A renewal alone is not enough, since the unit may have moved meanwhile.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use flotilla_proto::DesiredState;
use flotilla_proto::UnitName;
use flotilla_proto::diagnostic::Diagnostics;
use flotilla_proto::fleet::FleetOptions;
use flotilla_proto::unit_file::UnitFile;
use flotilla_proto::wire::AssignedUnit;

/// What the agent knows of its machine's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contact {
    /// When the lease was last registered or renewed (or when the agent
    /// started, before the first registration).
    pub renewed: Instant,
    /// Whether the latest attempt to register or renew failed.
    pub failing: bool,
}

impl Contact {
    /// Contact as of an agent that starts now.
    pub fn starting(now: Instant) -> Contact {
        Contact {
            renewed: now,
            failing: false,
        }
    }
}

/// The machine's units as the servers last gave them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feed {
    pub units: Vec<AssignedUnit>,
    /// When the request that returned them was sent.
    pub asked_at: Instant,
}

/// The feed to reconcile, after the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The feed's units, held ones as `loaded`.
    pub units: Vec<AssignedUnit>,
    /// When the outcome may change while nothing else does: the next unit's
    /// deadline while the agent is cut off.
    pub wake_at: Option<Instant>,
}

/// The policy's memory: which units it holds stopped, since when.
#[derive(Debug, Default)]
pub struct CutOff {
    held: BTreeMap<String, Instant>,
    /// `StopAfterCutOff` of each unit content seen, by content hash.
    limits: HashMap<String, Option<Duration>>,
}

impl CutOff {
    /// Applies the policy to `feed` at `now`.
    pub fn apply(&mut self, feed: &Feed, contact: Contact, now: Instant) -> Applied {
        self.limits
            .retain(|hash, _| feed.units.iter().any(|u| u.hash == *hash));
        // Word from the servers after a unit was stopped releases it; a unit
        // gone from the feed is the reconciler's to remove.
        self.held.retain(|name, since| {
            if !feed.units.iter().any(|u| u.name == *name) {
                tracing::info!("{name}, held stopped, is no longer this machine's");
                return false;
            }
            if feed.asked_at > *since {
                tracing::info!("the servers answered again: {name} may run again");
                return false;
            }
            true
        });
        let mut wake_at: Option<Instant> = None;
        let mut units = feed.units.clone();
        for unit in &mut units {
            if unit.desired_state != DesiredState::Launched {
                continue;
            }
            if !self.held.contains_key(&unit.name) {
                let limit = *self
                    .limits
                    .entry(unit.hash.clone())
                    .or_insert_with(|| limit_of(unit));
                let Some(limit) = limit else {
                    continue;
                };
                if !contact.failing {
                    continue;
                }
                let deadline = contact.renewed + limit;
                if now < deadline {
                    wake_at = Some(wake_at.map_or(deadline, |w| w.min(deadline)));
                    continue;
                }
                let cut_off_for = Duration::from_millis(
                    u64::try_from((now - contact.renewed).as_millis()).unwrap_or(u64::MAX),
                );
                tracing::warn!(
                    "no lease renewal for {}: stopping {} (StopAfterCutOff={}) until the servers answer",
                    flotilla_proto::duration::format_timespan(cut_off_for),
                    unit.name,
                    flotilla_proto::duration::format_timespan(limit),
                );
                self.held.insert(unit.name.clone(), now);
            }
            unit.desired_state = DesiredState::Loaded;
        }
        Applied { units, wake_at }
    }

    /// The units held stopped.
    pub fn held(&self) -> impl Iterator<Item = &str> {
        self.held.keys().map(String::as_str)
    }
}

/// A unit's `StopAfterCutOff`, read from its text. A unit that does not
/// read has none (the reconciler reports it as it is).
fn limit_of(unit: &AssignedUnit) -> Option<Duration> {
    let name = UnitName::parse(&unit.name).ok()?;
    let (file, _) = UnitFile::parse(&unit.text);
    let mut diags = Diagnostics::new();
    FleetOptions::from_unit_file(&name, &file, &mut diags).stop_after_cut_off
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(name: &str, extra: &str) -> AssignedUnit {
        let text = format!("[Service]\nExecStart=/bin/sleep infinity\n{extra}");
        AssignedUnit {
            name: name.to_owned(),
            hash: format!("hash-of-{name}-{}", text.len()),
            text,
            desired_state: DesiredState::Launched,
            global: false,
            secrets: Default::default(),
        }
    }

    fn states(applied: &Applied) -> Vec<(&str, DesiredState)> {
        applied
            .units
            .iter()
            .map(|u| (u.name.as_str(), u.desired_state))
            .collect()
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn nothing_is_held_while_the_lease_is_renewed() {
        let t0 = Instant::now();
        let feed = Feed {
            units: vec![unit("a.service", "[X-Fleet]\nStopAfterCutOff=5s\n")],
            asked_at: t0,
        };
        let mut policy = CutOff::default();
        // Long after the last renewal, but no renewal has failed yet.
        let applied = policy.apply(
            &feed,
            Contact {
                renewed: t0,
                failing: false,
            },
            t0 + 60 * S,
        );
        assert_eq!(states(&applied), [("a.service", DesiredState::Launched)]);
        assert_eq!(applied.wake_at, None);
    }

    #[test]
    fn a_unit_is_held_at_its_deadline_and_only_units_with_the_policy() {
        let t0 = Instant::now();
        let feed = Feed {
            units: vec![
                unit("a.service", "[X-Fleet]\nStopAfterCutOff=5s\n"),
                unit("b.service", "[X-Fleet]\nStopAfterCutOff=10s\n"),
                unit("c.service", ""),
            ],
            asked_at: t0,
        };
        let cut = Contact {
            renewed: t0,
            failing: true,
        };
        let mut policy = CutOff::default();
        let before = policy.apply(&feed, cut, t0 + 2 * S);
        assert!(
            states(&before)
                .iter()
                .all(|(_, s)| *s == DesiredState::Launched)
        );
        assert_eq!(before.wake_at, Some(t0 + 5 * S));

        let after = policy.apply(&feed, cut, t0 + 5 * S);
        assert_eq!(
            states(&after),
            [
                ("a.service", DesiredState::Loaded),
                ("b.service", DesiredState::Launched),
                ("c.service", DesiredState::Launched),
            ]
        );
        assert_eq!(after.wake_at, Some(t0 + 10 * S));
        let later = policy.apply(&feed, cut, t0 + 11 * S);
        assert_eq!(
            states(&later),
            [
                ("a.service", DesiredState::Loaded),
                ("b.service", DesiredState::Loaded),
                ("c.service", DesiredState::Launched),
            ]
        );
        assert_eq!(later.wake_at, None);
        assert_eq!(
            policy.held().collect::<Vec<_>>(),
            ["a.service", "b.service"]
        );
    }

    #[test]
    fn a_renewal_alone_does_not_release_a_held_unit_a_newer_feed_does() {
        let t0 = Instant::now();
        let units = vec![unit("a.service", "[X-Fleet]\nStopAfterCutOff=5s\n")];
        let old_feed = Feed {
            units: units.clone(),
            asked_at: t0,
        };
        let mut policy = CutOff::default();
        let cut = Contact {
            renewed: t0,
            failing: true,
        };
        policy.apply(&old_feed, cut, t0 + 6 * S);
        // Back in touch, but the feed is still the one from before.
        let renewed = Contact {
            renewed: t0 + 20 * S,
            failing: false,
        };
        let applied = policy.apply(&old_feed, renewed, t0 + 20 * S);
        assert_eq!(states(&applied), [("a.service", DesiredState::Loaded)]);
        // A feed asked for after the unit was stopped releases it.
        let new_feed = Feed {
            units,
            asked_at: t0 + 21 * S,
        };
        let applied = policy.apply(&new_feed, renewed, t0 + 21 * S);
        assert_eq!(states(&applied), [("a.service", DesiredState::Launched)]);
        assert_eq!(policy.held().count(), 0);
    }

    #[test]
    fn a_unit_that_is_not_launched_is_left_as_the_feed_says() {
        let t0 = Instant::now();
        let mut loaded = unit("a.service", "[X-Fleet]\nStopAfterCutOff=5s\n");
        loaded.desired_state = DesiredState::Loaded;
        let feed = Feed {
            units: vec![loaded],
            asked_at: t0,
        };
        let mut policy = CutOff::default();
        let applied = policy.apply(
            &feed,
            Contact {
                renewed: t0,
                failing: true,
            },
            t0 + 60 * S,
        );
        assert_eq!(states(&applied), [("a.service", DesiredState::Loaded)]);
        assert_eq!(policy.held().count(), 0);
    }
}
