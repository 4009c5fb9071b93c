//! The console's sessions: an opaque random id in a cookie, held by the
//! server in memory with an expiry, bounded in number.
//!
//! A session keeps the token it was opened with, in memory only, and every
//! request made with it authenticates that token again: a token revoked or
//! expired ends its sessions at once, and the session's role is always the
//! token's. A session lives on the server that opened it and ends when that
//! server stops (see docs/ui.md).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use flotilla_scheduler::trust::token::{hex, random_bytes};

/// The cookie's name. `__Host-` makes browsers accept it only with
/// `Secure`, `Path=/` and no `Domain`: no other host, and no plain-HTTP
/// page, can set or shadow it.
pub const COOKIE: &str = "__Host-flotilla-session";

/// The header every request of the console carries: a cross-site form or
/// link cannot set a custom header, so a request with the cookie and
/// without it is refused.
pub const CONSOLE_HEADER: &str = "x-flotilla-console";

/// How long a session lasts by default, from sign-in (not renewed by use).
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(8 * 3600);

/// How many sessions a server holds by default; signing in beyond it ends
/// the session closest to its expiry.
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;

/// The random bytes of a session id (hex in the cookie).
const ID_BYTES: usize = 32;

/// How the console's sessions behave.
#[derive(Debug, Clone, Copy)]
pub struct UiConfig {
    /// A session's lifetime from sign-in.
    pub session_ttl: Duration,
    /// The most sessions held at once.
    pub max_sessions: usize,
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig {
            session_ttl: DEFAULT_SESSION_TTL,
            max_sessions: DEFAULT_MAX_SESSIONS,
        }
    }
}

struct Session {
    token: String,
    expires: Instant,
}

/// The sessions one server holds.
pub(crate) struct Sessions {
    config: UiConfig,
    open: Mutex<HashMap<String, Session>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What a request's cookie says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Presented {
    /// No session cookie.
    None,
    /// A session cookie, without the console's header.
    WithoutHeader,
    /// A session cookie and the console's header.
    Session(String),
}

impl Sessions {
    pub(crate) fn new(config: UiConfig) -> Sessions {
        Sessions {
            config,
            open: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn ttl(&self) -> Duration {
        self.config.session_ttl
    }

    /// Opens a session for `token` (already authenticated); returns its id.
    pub(crate) fn open(&self, token: &str) -> Result<String, String> {
        let id = hex(&random_bytes(ID_BYTES).map_err(|e| e.to_string())?);
        let now = Instant::now();
        let mut open = self.lock();
        open.retain(|_, s| s.expires > now);
        while open.len() >= self.config.max_sessions.max(1) {
            let Some(soonest) = open
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            open.remove(&soonest);
        }
        open.insert(
            id.clone(),
            Session {
                token: token.to_owned(),
                expires: now + self.config.session_ttl,
            },
        );
        Ok(id)
    }

    /// The token of session `id`, unless it is unknown or has expired.
    pub(crate) fn token(&self, id: &str) -> Option<String> {
        let mut open = self.lock();
        let session = open.get(id)?;
        if session.expires <= Instant::now() {
            open.remove(id);
            return None;
        }
        Some(session.token.clone())
    }

    /// Ends session `id` (nothing when there is none).
    pub(crate) fn close(&self, id: &str) {
        self.lock().remove(id);
    }

    /// How many sessions are held now, expired ones included until the
    /// next sign-in sweeps them.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding the lock leaves only a map of sessions,
        // still consistent: carry on with it.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The session id of the request's cookie, and whether the console's
/// header came with it.
pub(crate) fn presented(headers: &HeaderMap) -> Presented {
    let Some(id) = cookie(headers) else {
        return Presented::None;
    };
    if headers.contains_key(CONSOLE_HEADER) {
        Presented::Session(id)
    } else {
        Presented::WithoutHeader
    }
}

/// The value of the session cookie, when the request has one.
pub(crate) fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The `Set-Cookie` value of a new session.
pub(crate) fn set_cookie(id: &str, ttl: Duration) -> String {
    format!(
        "{COOKIE}={id}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
        ttl.as_secs()
    )
}

/// The `Set-Cookie` value that removes the cookie.
pub(crate) fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn config(ttl: Duration, max: usize) -> UiConfig {
        UiConfig {
            session_ttl: ttl,
            max_sessions: max,
        }
    }

    #[test]
    fn a_session_holds_its_token_until_closed() {
        let s = Sessions::new(UiConfig::default());
        let id = s.open("flt1.secret").unwrap();
        assert_eq!(id.len(), 2 * ID_BYTES);
        assert_eq!(s.token(&id).as_deref(), Some("flt1.secret"));
        assert_eq!(s.token("other"), None);
        s.close(&id);
        assert_eq!(s.token(&id), None);
    }

    #[test]
    fn an_expired_session_is_gone() {
        let s = Sessions::new(config(Duration::ZERO, 10));
        let id = s.open("t").unwrap();
        assert_eq!(s.token(&id), None);
    }

    #[test]
    fn the_number_of_sessions_is_bounded() {
        let s = Sessions::new(config(Duration::from_secs(60), 3));
        let first = s.open("a").unwrap();
        for t in ["b", "c", "d", "e"] {
            s.open(t).unwrap();
        }
        assert_eq!(s.len(), 3);
        // The oldest (closest to expiry) went first.
        assert_eq!(s.token(&first), None);
    }

    #[test]
    fn the_cookie_counts_only_with_the_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(presented(&headers), Presented::None);
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; __Host-flotilla-session=abc; c=d"),
        );
        assert_eq!(presented(&headers), Presented::WithoutHeader);
        headers.insert(CONSOLE_HEADER, HeaderValue::from_static("1"));
        assert_eq!(presented(&headers), Presented::Session("abc".into()));
    }
}
