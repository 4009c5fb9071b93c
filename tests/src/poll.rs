//! Waiting for a condition with a deadline, never for a fixed time.

use std::time::{Duration, Instant};

/// How often a condition is checked again.
pub const INTERVAL: Duration = Duration::from_millis(50);

/// Checks `check` every [`INTERVAL`] until it gives a value, and returns
/// it; panics naming `what` when `deadline` passes first.
pub fn eventually<T>(what: &str, deadline: Duration, check: impl FnMut() -> Option<T>) -> T {
    eventually_or(what, deadline, check, String::new)
}

/// As [`eventually`], and on timeout the panic message ends with what
/// `context` says (a log, the last output seen).
pub fn eventually_or<T>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> Option<T>,
    context: impl FnOnce() -> String,
) -> T {
    let until = Instant::now() + deadline;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() >= until {
            let context = context();
            let sep = if context.is_empty() { "" } else { "\n" };
            panic!(
                "timed out after {}s waiting for {what}{sep}{context}",
                deadline.as_secs_f64()
            );
        }
        std::thread::sleep(INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_value() {
        let mut n = 0;
        let v = eventually("n to reach 3", Duration::from_secs(5), || {
            n += 1;
            (n == 3).then_some(n)
        });
        assert_eq!(v, 3);
    }

    #[test]
    #[should_panic(expected = "timed out after 0.1s waiting for never\nthe log")]
    fn times_out_with_context() {
        eventually_or(
            "never",
            Duration::from_millis(100),
            || None::<()>,
            || "the log".to_owned(),
        );
    }
}
