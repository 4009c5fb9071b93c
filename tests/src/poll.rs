//! Waiting for a condition with a deadline, never for a fixed time.

use std::time::{Duration, Instant};

/// How often a condition is checked again.
pub const INTERVAL: Duration = Duration::from_millis(50);

/// How often an async check is made again: they ask the process they
/// run in, which is cheap, so more often.
#[cfg(feature = "async")]
pub const ASYNC_INTERVAL: Duration = Duration::from_millis(10);

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

/// As [`eventually`], for async checks (on a tokio runtime with its timer).
#[cfg(feature = "async")]
pub async fn eventually_async<T>(
    what: &str,
    deadline: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    eventually_async_or(what, deadline, async || {
        check().await.ok_or_else(String::new)
    })
    .await
}

/// As [`eventually_async`], for checks that say what they saw when the
/// condition does not hold yet: the panic message on timeout ends with the
/// last of those.
#[cfg(feature = "async")]
pub async fn eventually_async_or<T>(
    what: &str,
    deadline: Duration,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let until = Instant::now() + deadline;
    loop {
        let seen = match check().await {
            Ok(v) => return v,
            Err(seen) => seen,
        };
        if Instant::now() >= until {
            let sep = if seen.is_empty() { "" } else { "\n" };
            panic!(
                "timed out after {}s waiting for {what}{sep}{seen}",
                deadline.as_secs_f64()
            );
        }
        tokio::time::sleep(ASYNC_INTERVAL).await;
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

    #[cfg(feature = "async")]
    fn block_on<T>(f: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime")
            .block_on(f)
    }

    #[cfg(feature = "async")]
    #[test]
    fn async_returns_the_first_value() {
        let mut n = 0;
        let v = block_on(eventually_async(
            "n to reach 3",
            Duration::from_secs(5),
            || {
                n += 1;
                let now = n;
                async move { (now == 3).then_some(now) }
            },
        ));
        assert_eq!(v, 3);
    }

    #[cfg(feature = "async")]
    #[test]
    #[should_panic(expected = "timed out after 0.1s waiting for never\nseen 2")]
    fn async_times_out_with_the_last_thing_seen() {
        let mut n = 0;
        block_on(eventually_async_or(
            "never",
            Duration::from_millis(100),
            || {
                n = 2;
                async move { Err::<(), _>(format!("seen {n}")) }
            },
        ));
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
