//! What systemd's `PropertiesChanged` signals said of each unit, so that
//! the reporter reads a changed unit's state from the signal that told of
//! the change instead of asking systemd again (`LoadUnit` and two
//! `GetAll`, on the systemd that is busy running the jobs).
//!
//! systemd sends, for each change of a unit, one signal per interface
//! (`org.freedesktop.systemd1.Unit` and the type's own, `...Service` for
//! services) with the value of every property of that interface that
//! emits changes: `ActiveState`, `SubState` and `StateChangeTimestamp` on
//! the first; `MainPID`, `NRestarts`, `StatusText`, `Result` and
//! `ExecMainStatus` on the second. That is all a state report needs
//! ([`STATUS_FIELDS`]) but `LoadState`, which changes only when systemd
//! loads the unit and is not sent: the caller gives it (the D-Bus
//! implementation lists the units first, one call for all). A unit's entry
//! gives a status only once each interface it needs has sent all of those
//! in one signal; until then (a unit that has not changed since the agent
//! connected) the reporter reads the unit. A property
//! listed as invalidated rather than sent drops the interface's part. A
//! unit systemd frees (`UnitRemoved`) is forgotten.
//!
//! At most [`MAX_UNITS`] units are remembered; past that, units not yet
//! known are read, not remembered.

use std::collections::HashMap;

use zbus::OwnedVariant;

use super::UnitProperties;
use super::manager::{SERVICE_INTERFACE, UNIT_INTERFACE};

/// The most units remembered at once.
pub const MAX_UNITS: usize = 16_384;

/// What a state report needs of a unit, by interface: the fields of
/// [`UnitProperties`] a status from signals fills in (the others are left
/// empty).
pub const STATUS_FIELDS: [(&str, &[&str]); 2] = [
    (
        UNIT_INTERFACE,
        &["ActiveState", "SubState", "StateChangeTimestamp"],
    ),
    (
        SERVICE_INTERFACE,
        &[
            "MainPID",
            "NRestarts",
            "StatusText",
            "Result",
            "ExecMainStatus",
        ],
    ),
];

/// The `org.freedesktop.systemd1.Unit` part of a status.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UnitPart {
    active_state: String,
    sub_state: String,
    state_change_usec: u64,
}

/// The `org.freedesktop.systemd1.Service` part of a status.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServicePart {
    main_pid: u32,
    n_restarts: u32,
    status_text: String,
    result: String,
    exec_main_status: i32,
}

#[derive(Debug, Default, Clone)]
struct Entry {
    unit: Option<UnitPart>,
    service: Option<ServicePart>,
}

/// The statuses systemd's signals told of (see the [module
/// documentation](self)).
#[derive(Debug, Default)]
pub struct Signalled {
    units: HashMap<String, Entry>,
}

impl Signalled {
    /// Takes in one `PropertiesChanged` signal of `unit`.
    pub fn apply(
        &mut self,
        unit: &str,
        interface: &str,
        changed: &HashMap<String, OwnedVariant>,
        invalidated: &[String],
    ) {
        let Some((_, fields)) = STATUS_FIELDS.iter().find(|(i, _)| *i == interface) else {
            return;
        };
        if !self.units.contains_key(unit) && self.units.len() >= MAX_UNITS {
            return;
        }
        let entry = self.units.entry(unit.to_owned()).or_default();
        if invalidated.iter().any(|p| fields.contains(&p.as_str())) {
            match interface {
                UNIT_INTERFACE => entry.unit = None,
                _ => entry.service = None,
            }
            return;
        }
        let all = fields.iter().all(|f| changed.contains_key(*f));
        match interface {
            UNIT_INTERFACE => {
                let old = entry.unit.take();
                entry.unit = merge(old, all, |old| UnitPart {
                    active_state: string_or(changed, "ActiveState", old.map(|o| &o.active_state)),
                    sub_state: string_or(changed, "SubState", old.map(|o| &o.sub_state)),
                    state_change_usec: number_or(
                        changed,
                        "StateChangeTimestamp",
                        old.map(|o| o.state_change_usec),
                    ),
                });
            }
            _ => {
                let old = entry.service.take();
                entry.service = merge(old, all, |old| ServicePart {
                    main_pid: number_or(changed, "MainPID", old.map(|o| o.main_pid)),
                    n_restarts: number_or(changed, "NRestarts", old.map(|o| o.n_restarts)),
                    status_text: string_or(changed, "StatusText", old.map(|o| &o.status_text)),
                    result: string_or(changed, "Result", old.map(|o| &o.result)),
                    exec_main_status: number_or(
                        changed,
                        "ExecMainStatus",
                        old.map(|o| o.exec_main_status),
                    ),
                });
            }
        }
    }

    /// Forgets a unit systemd freed.
    pub fn remove(&mut self, unit: &str) {
        self.units.remove(unit);
    }

    /// The unit's status as the signals told it, once they told all of it
    /// ([`STATUS_FIELDS`]; a loaded service needs both parts), with the
    /// load state the caller found.
    pub fn status(&self, unit: &str, load_state: &str) -> Option<UnitProperties> {
        let entry = self.units.get(unit)?;
        let u = entry.unit.as_ref()?;
        let mut props = UnitProperties {
            load_state: load_state.to_owned(),
            active_state: u.active_state.clone(),
            sub_state: u.sub_state.clone(),
            state_change_usec: u.state_change_usec,
            ..UnitProperties::default()
        };
        if unit.ends_with(".service") && props.is_defined() {
            let s = entry.service.as_ref()?;
            props.main_pid = s.main_pid;
            props.n_restarts = s.n_restarts;
            props.status_text = s.status_text.clone();
            props.result = s.result.clone();
            props.exec_main_status = s.exec_main_status;
        }
        Some(props)
    }

    /// How many units are remembered.
    pub fn len(&self) -> usize {
        self.units.len()
    }

    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }
}

/// The new part: built from a signal that sent every field, or from an
/// older part updated with the fields this one sent; none otherwise.
fn merge<P>(old: Option<P>, all: bool, build: impl FnOnce(Option<&P>) -> P) -> Option<P> {
    match (old, all) {
        (_, true) => Some(build(None)),
        (Some(old), false) => Some(build(Some(&old))),
        (None, false) => None,
    }
}

fn string_or(changed: &HashMap<String, OwnedVariant>, key: &str, old: Option<&String>) -> String {
    match changed.get(key).and_then(|v| <&str>::try_from(v).ok()) {
        Some(s) => s.to_owned(),
        None => old.cloned().unwrap_or_default(),
    }
}

fn number_or<T: TryFrom<u64> + TryFrom<i64> + Default>(
    changed: &HashMap<String, OwnedVariant>,
    key: &str,
    old: Option<T>,
) -> T {
    if changed.contains_key(key) {
        number(changed, key)
    } else {
        old.unwrap_or_default()
    }
}

/// A numeric property, whatever integer type systemd gives it (`u`, `i`,
/// `t`); absent or out of range reads as 0.
pub(super) fn number<T: TryFrom<u64> + TryFrom<i64> + Default>(
    props: &HashMap<String, OwnedVariant>,
    key: &str,
) -> T {
    let Some(v) = props.get(key) else {
        return T::default();
    };
    if let Ok(n) = u32::try_from(v) {
        return T::try_from(u64::from(n)).unwrap_or_default();
    }
    if let Ok(n) = i32::try_from(v) {
        return T::try_from(i64::from(n)).unwrap_or_default();
    }
    if let Ok(n) = u64::try_from(v) {
        return T::try_from(n).unwrap_or_default();
    }
    if let Ok(n) = i64::try_from(v) {
        return T::try_from(n).unwrap_or_default();
    }
    T::default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::Str;

    fn text(s: &str) -> OwnedVariant {
        OwnedVariant::from(Str::from(s.to_owned()))
    }

    fn props(pairs: Vec<(&str, OwnedVariant)>) -> HashMap<String, OwnedVariant> {
        pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    fn unit_signal(active: &str, sub: &str, at: u64) -> HashMap<String, OwnedVariant> {
        props(vec![
            ("ActiveState", text(active)),
            ("SubState", text(sub)),
            ("StateChangeTimestamp", at.into()),
            ("Description", text("ignored")),
        ])
    }

    fn service_signal(pid: u32, status: &str) -> HashMap<String, OwnedVariant> {
        props(vec![
            ("MainPID", pid.into()),
            ("NRestarts", 2u32.into()),
            ("StatusText", text(status)),
            ("Result", text("success")),
            ("ExecMainStatus", 0i32.into()),
        ])
    }

    #[test]
    fn a_service_needs_both_interfaces_in_full() {
        let mut s = Signalled::default();
        s.apply(
            "a.service",
            UNIT_INTERFACE,
            &unit_signal("active", "running", 7),
            &[],
        );
        assert_eq!(s.status("a.service", "loaded"), None);
        // A partial first signal is not enough.
        s.apply(
            "a.service",
            SERVICE_INTERFACE,
            &props(vec![("MainPID", 9u32.into())]),
            &[],
        );
        assert_eq!(s.status("a.service", "loaded"), None);
        s.apply(
            "a.service",
            SERVICE_INTERFACE,
            &service_signal(42, "up"),
            &[],
        );
        let st = s.status("a.service", "loaded").unwrap();
        assert_eq!(
            (
                st.active_state.as_str(),
                st.sub_state.as_str(),
                st.state_change_usec
            ),
            ("active", "running", 7)
        );
        assert_eq!(
            (st.main_pid, st.n_restarts, st.status_text.as_str()),
            (42, 2, "up")
        );
        // Later partial signals update what they send.
        s.apply(
            "a.service",
            SERVICE_INTERFACE,
            &props(vec![("StatusText", text("later"))]),
            &[],
        );
        let st = s.status("a.service", "loaded").unwrap();
        assert_eq!((st.main_pid, st.status_text.as_str()), (42, "later"));
        // A service that is not loaded needs no service part.
        assert!(s.status("a.service", "not-found").is_some());
        // Other units' interfaces need only the unit part.
        s.apply(
            "b.socket",
            UNIT_INTERFACE,
            &unit_signal("active", "listening", 1),
            &[],
        );
        assert_eq!(
            s.status("b.socket", "loaded").unwrap().sub_state,
            "listening"
        );
    }

    #[test]
    fn invalidated_and_removed_units_are_read_again() {
        let mut s = Signalled::default();
        s.apply(
            "a.service",
            UNIT_INTERFACE,
            &unit_signal("active", "running", 7),
            &[],
        );
        s.apply("a.service", SERVICE_INTERFACE, &service_signal(42, ""), &[]);
        assert!(s.status("a.service", "loaded").is_some());
        s.apply(
            "a.service",
            SERVICE_INTERFACE,
            &HashMap::new(),
            &["MainPID".to_owned()],
        );
        assert_eq!(s.status("a.service", "loaded"), None);
        // Invalidating something a report does not use changes nothing.
        s.apply("a.service", SERVICE_INTERFACE, &service_signal(43, ""), &[]);
        s.apply(
            "a.service",
            SERVICE_INTERFACE,
            &HashMap::new(),
            &["ExecStart".to_owned()],
        );
        assert_eq!(s.status("a.service", "loaded").unwrap().main_pid, 43);
        s.remove("a.service");
        assert_eq!(s.status("a.service", "loaded"), None);
        assert!(s.is_empty());
    }

    #[test]
    fn units_past_the_limit_are_not_remembered() {
        let mut s = Signalled::default();
        for i in 0..MAX_UNITS + 10 {
            s.apply(
                &format!("u{i}.socket"),
                UNIT_INTERFACE,
                &unit_signal("active", "x", 1),
                &[],
            );
        }
        assert_eq!(s.len(), MAX_UNITS);
        assert_eq!(
            s.status(&format!("u{}.socket", MAX_UNITS + 1), "loaded"),
            None
        );
        // Those remembered still follow their changes.
        s.apply(
            "u0.socket",
            UNIT_INTERFACE,
            &unit_signal("failed", "failed", 2),
            &[],
        );
        assert_eq!(
            s.status("u0.socket", "loaded").unwrap().active_state,
            "failed"
        );
    }
}
