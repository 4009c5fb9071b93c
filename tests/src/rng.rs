//! A small deterministic random source for tests that must repeat from a
//! fixed seed: xorshift64* (Vigna), with no dependency.

/// xorshift64*: enough randomness for a test, from a fixed seed.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from `seed`, mixed so that nearby seeds give unrelated
    /// sequences.
    pub fn new(seed: u64) -> XorShift {
        // Never zero, which xorshift cannot leave.
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A generator whose state is `state` as given (not zero): the
    /// sequence of a test written against the bare algorithm.
    pub fn from_state(state: u64) -> XorShift {
        XorShift(state.max(1))
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` not zero).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True `per_mille` times in a thousand.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}
