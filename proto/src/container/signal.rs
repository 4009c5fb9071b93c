//! Signals by name or number, as `StopSignal=` takes them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A signal, by number, shown and serialised by its name (`SIGTERM`,
/// `SIGRTMIN+3`) with Linux's numbering on x86 and ARM. Signals 32 and 33,
/// which the C library reserves and which have no name, show as numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Signal(u8);

/// Standard signals 1..=31, by number.
const SIGNAL_NAMES: [&str; 31] = [
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
    "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
    "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
];
const SIGNAL_ALIASES: [(&str, u8); 3] = [("IOT", 6), ("CLD", 17), ("POLL", 29)];
/// glibc's SIGRTMIN (the kernel's 32 and 33 are taken by the C library).
const SIGRTMIN: u8 = 34;
const SIGRTMAX: u8 = 64;

/// Why a value is not a signal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected a signal name such as SIGTERM or TERM, or a number from 1 to 64, found {0:?}")]
pub struct SignalError(pub String);

impl Signal {
    /// The signal with this number, if it is one (1..=64).
    pub fn from_number(n: u8) -> Option<Signal> {
        (1..=SIGRTMAX).contains(&n).then_some(Signal(n))
    }

    /// The signal's number.
    pub fn number(self) -> u8 {
        self.0
    }
}

impl FromStr for Signal {
    type Err = SignalError;

    /// Reads a name with or without `SIG`, in any case, an alias (`IOT`,
    /// `CLD`, `POLL`), `RTMIN+n`/`RTMAX-n`, or a number.
    fn from_str(s: &str) -> Result<Signal, SignalError> {
        let bad = || SignalError(s.to_owned());
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return s.parse().ok().and_then(Signal::from_number).ok_or_else(bad);
        }
        let upper = s.to_ascii_uppercase();
        let name = upper.strip_prefix("SIG").unwrap_or(&upper);
        if let Some(i) = SIGNAL_NAMES.iter().position(|n| *n == name) {
            // Safe: the table has 31 entries.
            return Ok(Signal(u8::try_from(i + 1).unwrap_or(0)));
        }
        if let Some(&(_, n)) = SIGNAL_ALIASES.iter().find(|(a, _)| *a == name) {
            return Ok(Signal(n));
        }
        let offset = |text: &str| -> Option<u8> {
            if text.is_empty() {
                return Some(0);
            }
            if !text.bytes().all(|b| b.is_ascii_digit()) || text.len() > 2 {
                return None;
            }
            text.parse().ok()
        };
        let number = if let Some(rest) = name.strip_prefix("RTMIN") {
            let k = match rest.strip_prefix('+') {
                Some(k) if !k.is_empty() => offset(k),
                Some(_) => None,
                None => offset(rest).filter(|_| rest.is_empty()),
            };
            k.and_then(|k| SIGRTMIN.checked_add(k))
        } else if let Some(rest) = name.strip_prefix("RTMAX") {
            let k = match rest.strip_prefix('-') {
                Some(k) if !k.is_empty() => offset(k),
                Some(_) => None,
                None => offset(rest).filter(|_| rest.is_empty()),
            };
            k.and_then(|k| SIGRTMAX.checked_sub(k))
        } else {
            None
        };
        number
            .filter(|n| (SIGRTMIN..=SIGRTMAX).contains(n))
            .map(Signal)
            .ok_or_else(bad)
    }
}

impl fmt::Display for Signal {
    /// `SIGTERM`; real-time signals as `SIGRTMIN`, `SIGRTMIN+1` ..
    /// `SIGRTMIN+15`, `SIGRTMAX-14` .. `SIGRTMAX` (the names Docker
    /// knows); 32 and 33 as numbers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        match n {
            1..=31 => write!(f, "SIG{}", SIGNAL_NAMES[usize::from(n - 1)]),
            SIGRTMIN => f.write_str("SIGRTMIN"),
            SIGRTMAX => f.write_str("SIGRTMAX"),
            35..=49 => write!(f, "SIGRTMIN+{}", n - SIGRTMIN),
            50..=63 => write!(f, "SIGRTMAX-{}", SIGRTMAX - n),
            _ => write!(f, "{n}"),
        }
    }
}

impl Serialize for Signal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Signal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Signal, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        for (text, name, number) in [
            ("SIGTERM", "SIGTERM", 15),
            ("term", "SIGTERM", 15),
            ("15", "SIGTERM", 15),
            ("SIGIOT", "SIGABRT", 6),
            ("cld", "SIGCHLD", 17),
            ("1", "SIGHUP", 1),
            ("31", "SIGSYS", 31),
            ("32", "32", 32),
            ("33", "33", 33),
            ("34", "SIGRTMIN", 34),
            ("RTMIN", "SIGRTMIN", 34),
            ("SIGRTMIN+3", "SIGRTMIN+3", 37),
            ("rtmin+15", "SIGRTMIN+15", 49),
            ("RTMIN+16", "SIGRTMAX-14", 50),
            ("SIGRTMAX-1", "SIGRTMAX-1", 63),
            ("64", "SIGRTMAX", 64),
            ("RTMAX", "SIGRTMAX", 64),
        ] {
            let signal: Signal = text.parse().unwrap();
            assert_eq!(signal.to_string(), name, "{text}");
            assert_eq!(signal.number(), number, "{text}");
            assert_eq!(name.parse::<Signal>(), Ok(signal), "{name} reads back");
        }
        for bad in [
            "",
            "0",
            "65",
            "256",
            "SIG",
            "TERMINATE",
            "RTMIN+31",
            "RTMAX-31",
            "RTMIN+",
            "RTMIN3",
            "+15",
            "-1",
        ] {
            assert!(bad.parse::<Signal>().is_err(), "{bad:?}");
        }
    }
}
