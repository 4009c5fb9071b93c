//! fleet's rolling restart (`fleetctl restart`), made to restart.
//!
//! fleetctl restarts a unit by setting it `loaded`, waiting until fleet
//! shows it `launched`, then setting it `launched` and waiting again.
//! Against fleet this works because fleet's agent acts on a change at its
//! next reconcile: for a moment after the change the unit still shows
//! `launched`. flotilla's agents act at once, so the unit would show
//! `loaded` before fleetctl first looks, and fleetctl would wait forever.
//! Two rules at `/fleet/v1/` keep the restart finite and real:
//!
//! - a unit that was launched and is set `loaded` through `/fleet/v1/`
//!   shows `launched` there for [`STOP_GRACE`] afterwards (on the server
//!   that took the change), as it would under fleet until its agent's next
//!   reconcile;
//! - setting `launched` a unit that is `loaded` but still reported active
//!   waits (up to [`STOP_WAIT`]) until its machine reports it stopped, so
//!   that the start that follows restarts it rather than finding it
//!   running.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use flotilla_proto::UnitName;
use flotilla_proto::state::DesiredState;
use flotilla_proto::wire::Unit;
use flotilla_scheduler::control::{ControlError, ControlPlane};

/// How long a unit set to stop through `/fleet/v1/` still shows
/// `launched` there.
pub const STOP_GRACE: Duration = Duration::from_secs(1);

/// How long setting `launched` waits for a stop in progress to be
/// reported.
pub const STOP_WAIT: Duration = Duration::from_secs(10);

/// At most this many units are remembered; older entries go first.
const MAX_REMEMBERED: usize = 10_000;

/// Units set to stop through `/fleet/v1/` in the last [`STOP_GRACE`].
#[derive(Debug, Default)]
pub struct Stopping {
    since: Mutex<HashMap<UnitName, Instant>>,
}

impl Stopping {
    /// Remembers that `name`, launched, was just set `loaded`.
    pub fn record(&self, name: &UnitName) {
        let now = Instant::now();
        let mut since = self.since.lock().unwrap_or_else(|e| e.into_inner());
        since.retain(|_, at| now.duration_since(*at) < STOP_GRACE);
        if since.len() >= MAX_REMEMBERED {
            return;
        }
        since.insert(name.clone(), now);
    }

    /// Whether `name` was set to stop less than [`STOP_GRACE`] ago.
    pub fn shows_launched(&self, name: &str) -> bool {
        let since = self.since.lock().unwrap_or_else(|e| e.into_inner());
        UnitName::parse(name)
            .ok()
            .and_then(|n| since.get(&n).copied())
            .is_some_and(|at| at.elapsed() < STOP_GRACE)
    }
}

/// Waits, up to [`STOP_WAIT`], until `name` is no longer reported active
/// while it is set `loaded`; returns at once for any other unit. `unit` is
/// the unit as the caller just read it.
pub async fn wait_for_stop<C: ControlPlane>(
    control: &C,
    name: &UnitName,
    mut unit: Unit,
) -> Result<(), ControlError> {
    let deadline = tokio::time::Instant::now() + STOP_WAIT;
    let mut index = unit.revision;
    loop {
        let stopping = unit.desired_state == DesiredState::Loaded
            && unit.current_state == Some(DesiredState::Launched);
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if !stopping || left.is_zero() {
            return Ok(());
        }
        index = control.wait_for_change(index, left).await?;
        unit = control.get_unit(name).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_shows_for_the_grace_only() {
        let s = Stopping::default();
        let name = UnitName::parse("a.service").unwrap_or_else(|e| panic!("{e}"));
        assert!(!s.shows_launched("a.service"));
        s.record(&name);
        assert!(s.shows_launched("a.service"));
        assert!(!s.shows_launched("b.service"));
        s.since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, Instant::now() - STOP_GRACE);
        assert!(!s.shows_launched("a.service"));
    }
}
