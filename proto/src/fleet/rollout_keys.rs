//! flotilla's own `[X-Fleet]` keys of rolling updates
//! ([`crate::rollout`]): how a group of units whose contents change
//! together is restarted.
//!
//! | key | value | default |
//! |---|---|---|
//! | `RolloutMaxParallel` | units restarted at once, 1 to 100 | 1 |
//! | `RolloutMinHealthyTime` | a time span a wave must run its new contents before the next | 10s |
//! | `RolloutAutoRevert` | a boolean: on failure, give the changed units their old contents back | no |
//! | `RolloutWaveTimeout` | a time span a wave may take to run its new contents | 5min |
//!
//! Each takes one value; the last assignment wins, and an empty one resets
//! it. Time spans are systemd's (`30s`, `1min 30s`; a bare number is
//! seconds), at most a day.

use crate::diagnostic::Diagnostics;
use crate::duration::parse_timespan;
use crate::rollout::{MAX_PARALLEL, MAX_ROLLOUT_TIME, RolloutOptions};
use crate::unit_file::ValueRef;
use crate::value::parse_bool;

/// The keys, as the unknown-key message suggests them.
pub(super) const KEYS: [&str; 4] = [
    "RolloutMaxParallel",
    "RolloutMinHealthyTime",
    "RolloutAutoRevert",
    "RolloutWaveTimeout",
];

/// Reads one entry into `options` when its key is a rollout key; returns
/// whether it was one.
pub(super) fn entry(
    options: &mut RolloutOptions,
    v: ValueRef<'_>,
    diags: &mut Diagnostics,
) -> bool {
    let raw = v.value.trim();
    match v.key {
        "RolloutMaxParallel" => {
            options.max_parallel = None;
            if raw.is_empty() {
                return true;
            }
            match raw.parse::<u32>() {
                Ok(n) if (1..=MAX_PARALLEL).contains(&n) => options.max_parallel = Some(n),
                _ => diags.push(v.error(format!(
                    "expected a number of units from 1 to {MAX_PARALLEL}, found {raw:?}"
                ))),
            }
        }
        "RolloutMinHealthyTime" | "RolloutWaveTimeout" => {
            let slot = if v.key == "RolloutMinHealthyTime" {
                &mut options.min_healthy_time
            } else {
                &mut options.wave_timeout
            };
            *slot = None;
            if raw.is_empty() {
                return true;
            }
            match parse_timespan(raw) {
                Ok(d) if d > MAX_ROLLOUT_TIME => diags
                    .push(v.error("longer than a day, the longest flotilla accepts".to_owned())),
                Ok(d) if d.is_zero() && v.key == "RolloutWaveTimeout" => diags.push(v.error(
                    "a wave cannot time out at once: give a time span longer than zero".to_owned(),
                )),
                Ok(d) => *slot = Some(d),
                Err(e) => diags.push(v.error(e.to_string())),
            }
        }
        "RolloutAutoRevert" => {
            options.auto_revert = None;
            if raw.is_empty() {
                return true;
            }
            match parse_bool(raw) {
                Some(b) => options.auto_revert = Some(b),
                None => diags.push(v.error(format!(
                    "expected a boolean (yes or no, true or false, on or off, 1 or 0), found {raw:?}"
                ))),
            }
        }
        _ => return false,
    }
    true
}
