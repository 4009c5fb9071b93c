//! A count of the steps that reading and checking a unit file take, so that
//! tests can show that the work is linear in the size of the input without
//! timing anything.
//!
//! Unit files arrive from anyone who may submit a unit, and are checked on
//! the threads that serve the API: the parser and the validators charge the
//! bytes they scan and the items they compare here, and
//! [`measure`] reads what a call cost. Every pass over a piece of the input
//! charges its length once; a pass that looked at the same bytes again for
//! every line (the way a quadratic parse does) would show in the count.
//!
//! The count lives in a thread-local cell: it costs one add per line or
//! item, and nothing reads it outside tests and benchmarks.

use std::cell::Cell;

thread_local! {
    static STEPS: Cell<u64> = const { Cell::new(0) };
}

/// Adds `steps` to this thread's count.
pub(crate) fn charge(steps: usize) {
    STEPS.with(|s| s.set(s.get().saturating_add(steps as u64)));
}

/// Runs `f` and returns its result with the steps it charged on this
/// thread.
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let before = STEPS.with(Cell::get);
    let result = f();
    let after = STEPS.with(Cell::get);
    (result, after.saturating_sub(before))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measure_counts_only_what_the_call_charged() {
        charge(5);
        let ((), steps) = measure(|| {
            charge(3);
            charge(4);
        });
        assert_eq!(steps, 7);
        let ((), nested) = measure(|| {
            let ((), inner) = measure(|| charge(2));
            assert_eq!(inner, 2);
            charge(1);
        });
        assert_eq!(nested, 3);
    }
}
