//! Which versions of flotilla talk to each other: the rule the servers
//! apply to the `Flotilla-Version` header every flotilla client and agent
//! sends, and to the version an agent registers with
//! (docs/operations.md, "Versions").
//!
//! A version is `MAJOR.MINOR.PATCH`, with any pre-release or build suffix
//! ignored. Its API line is `MAJOR` from 1.0 on and `0.MINOR` before
//! (semver's convention: a 0.x minor release may break). Then:
//!
//! - a client (the CLI, any program using the API's typed client) is
//!   served by a server of the same API line, and refused (426) by others;
//! - an agent is served by a server whose line is the same or newer, as
//!   long as the agent is not older than the server's [`MIN_AGENT_VERSION`]:
//!   servers are upgraded first, then the agents;
//! - a request without the header (curl, fleet's clients) is served.

use std::fmt;

/// The header carrying the caller's version, and the server's in answers.
pub const HEADER: &str = "flotilla-version";

/// This build's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The oldest agent this server registers: agents before it lack
/// something the server relies on. Raised only with a release note.
pub const MIN_AGENT_VERSION: Version = Version {
    major: 0,
    minor: 1,
    patch: 0,
};

/// A release: `MAJOR.MINOR.PATCH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

/// A version string that is not `MAJOR.MINOR.PATCH`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid flotilla version {0:?}: expected MAJOR.MINOR.PATCH")]
pub struct VersionError(pub String);

impl Version {
    /// Parses `1.2.3`, `0.1.0-rc.1`, `0.1.0+build`.
    pub fn parse(s: &str) -> Result<Version, VersionError> {
        let bad = || VersionError(s.chars().take(64).collect());
        let core = s.trim().split(['-', '+', '~']).next().unwrap_or("");
        let mut parts = core.split('.').map(|p| {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            p.parse::<u64>().map_err(|_| bad())
        });
        let (Some(major), Some(minor), Some(patch), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        Ok(Version {
            major: major?,
            minor: minor?,
            patch: patch?,
        })
    }

    /// This build's version.
    pub fn current() -> Version {
        // Cargo's package version is MAJOR.MINOR.PATCH by definition.
        Version::parse(VERSION).unwrap_or(Version {
            major: 0,
            minor: 0,
            patch: 0,
        })
    }

    /// The API line: `(MAJOR, 0)` from 1.0 on, `(0, MINOR)` before.
    pub fn line(self) -> (u64, u64) {
        if self.major == 0 {
            (0, self.minor)
        } else {
            (self.major, 0)
        }
    }

    /// How the line is written: `1.x`, `0.3.x`.
    pub fn line_name(self) -> String {
        if self.major == 0 {
            format!("0.{}.x", self.minor)
        } else {
            format!("{}.x", self.major)
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Why a server refuses a caller's version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Incompatible {
    #[error(
        "this server runs flotilla {server} and serves clients of flotilla {line}; this client is {client}: use a client of the same release line"
    )]
    Client {
        client: Version,
        server: Version,
        line: String,
    },
    #[error(
        "this server runs flotilla {server} and registers agents from {min} up to its own release line; this agent is {agent}: {advice}"
    )]
    Agent {
        agent: Version,
        server: Version,
        min: Version,
        advice: &'static str,
    },
}

/// The rule for clients: the same API line.
pub fn check_client(client: Version, server: Version) -> Result<(), Incompatible> {
    if client.line() == server.line() {
        Ok(())
    } else {
        Err(Incompatible::Client {
            client,
            server,
            line: server.line_name(),
        })
    }
}

/// The rule for agents: not older than `min`, not of a newer line.
pub fn check_agent(agent: Version, server: Version, min: Version) -> Result<(), Incompatible> {
    let advice = if agent < min {
        "upgrade the agent"
    } else if agent.line() > server.line() {
        "upgrade the servers first"
    } else {
        return Ok(());
    };
    Err(Incompatible::Agent {
        agent,
        server,
        min,
        advice,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn versions_parse_with_suffixes_and_refuse_the_rest() {
        assert_eq!(
            v("0.1.0"),
            Version {
                major: 0,
                minor: 1,
                patch: 0
            }
        );
        assert_eq!(
            v("1.12.3-rc.1"),
            Version {
                major: 1,
                minor: 12,
                patch: 3
            }
        );
        assert_eq!(
            v("2.0.1+deb12"),
            Version {
                major: 2,
                minor: 0,
                patch: 1
            }
        );
        for bad in [
            "", "1", "1.2", "1.2.3.4", "a.b.c", "1..2", "-1.2.3", "1.2.x", " ",
        ] {
            assert!(Version::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(v(VERSION), Version::current());
    }

    #[test]
    fn clients_are_served_within_their_line() {
        assert!(check_client(v("0.1.0"), v("0.1.7")).is_ok());
        assert!(check_client(v("0.1.9"), v("0.1.0")).is_ok());
        assert!(check_client(v("1.0.0"), v("1.9.2")).is_ok());
        let e = check_client(v("0.1.0"), v("0.2.0")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "this server runs flotilla 0.2.0 and serves clients of flotilla 0.2.x; this client is 0.1.0: use a client of the same release line"
        );
        assert!(check_client(v("1.4.0"), v("2.0.0")).is_err());
        assert!(check_client(v("0.9.0"), v("1.0.0")).is_err());
    }

    #[test]
    fn agents_are_served_from_the_minimum_up_to_the_servers_line() {
        let min = v("0.3.0");
        assert!(check_agent(v("0.3.0"), v("0.4.1"), min).is_ok());
        assert!(check_agent(v("0.4.0"), v("0.4.1"), min).is_ok());
        let old = check_agent(v("0.2.9"), v("0.4.1"), min).unwrap_err();
        assert!(
            old.to_string()
                .ends_with("this agent is 0.2.9: upgrade the agent"),
            "{old}"
        );
        let new = check_agent(v("0.5.0"), v("0.4.1"), min).unwrap_err();
        assert!(
            new.to_string().ends_with("upgrade the servers first"),
            "{new}"
        );
    }
}
