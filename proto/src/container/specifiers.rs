//! systemd's specifiers (`%n`, `%h`, ...) in `[Container]` values, as the
//! system manager expands them in a system service.
//!
//! flotilla expands specifiers when the unit is read, on the server, so a
//! value means the same on every host and is checked once. Three kinds:
//!
//! - the unit's name: `%n %N %p %P %i %I %j %J %f`, and `%%`;
//! - the system manager's fixed values, the same on every host (systemd.unit(5),
//!   "in case of the system manager"): `%h` `/root`, `%u` and `%g` `root`,
//!   `%U` and `%G` `0` (the manager's own user, whatever `User=` says),
//!   `%t` `/run`, `%S` `/var/lib`, `%C` `/var/cache`, `%L` `/var/log`,
//!   `%E` `/etc`, `%T` `/tmp`, `%V` `/var/tmp`, `%d` `/run/credentials/%n`;
//! - values of the host the unit lands on (`%H`, `%l`, `%q`, `%m`, `%b`,
//!   `%o`, `%v`, `%a`, `%A`, `%B`, `%M`, `%w`, `%W`, the shell `%s`, the
//!   unit file's path `%y` `%Y`): refused, because they are known only once
//!   the unit is placed, and a value that differs per host could be valid on
//!   one host and not on another after flotilla said the unit was good.
//!
//! In a template (`web@.service`), a value that uses the instance (`%i %I
//! %f`) is checked in each instance.

use crate::name::UnitName;

/// Expands the specifiers in `text` for unit `name`. `Ok(None)` when `name`
/// is a template and the text uses its instance: its value is known only
/// per instance.
pub(super) fn expand_specifiers(name: &UnitName, text: &str) -> Result<Option<String>, String> {
    if !text.contains('%') {
        return Ok(Some(text.to_owned()));
    }
    let mut out = String::with_capacity(text.len());
    let mut deferred = false;
    let mut chars = text.chars();
    let instance = name.instance();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(spec) = chars.next() else {
            return Err("the value ends in a lone '%': write %% for a literal %".to_owned());
        };
        if matches!(spec, 'i' | 'I' | 'f') && name.is_template() {
            deferred = true;
            continue;
        }
        match spec {
            'n' => out.push_str(name.as_str()),
            'N' => out.push_str(name.stem()),
            'p' => out.push_str(name.prefix()),
            'P' => out.push_str(&unescape(name.prefix())),
            'i' => out.push_str(instance.unwrap_or("")),
            'I' => out.push_str(&unescape(instance.unwrap_or(""))),
            'j' => out.push_str(last_dash_part(name.prefix())),
            'J' => out.push_str(&unescape(last_dash_part(name.prefix()))),
            'f' => {
                let base = unescape(instance.unwrap_or_else(|| name.prefix()));
                if !base.starts_with('/') {
                    out.push('/');
                }
                out.push_str(&base);
            }
            '%' => out.push('%'),
            'd' => {
                out.push_str("/run/credentials/");
                out.push_str(name.as_str());
            }
            other => match manager_value(other) {
                Some(value) => out.push_str(value),
                None => return Err(refusal(other)),
            },
        }
    }
    Ok((!deferred).then_some(out))
}

/// The system manager's values that are the same on every host.
fn manager_value(spec: char) -> Option<&'static str> {
    Some(match spec {
        'h' => "/root",
        'u' | 'g' => "root",
        'U' | 'G' => "0",
        't' => "/run",
        'S' => "/var/lib",
        'C' => "/var/cache",
        'L' => "/var/log",
        'E' => "/etc",
        'T' => "/tmp",
        'V' => "/var/tmp",
        _ => return None,
    })
}

/// Why a specifier is not expanded.
fn refusal(spec: char) -> String {
    const SUPPORTED: &str = "flotilla expands the unit's name (%n %N %p %P %i %I %j %J %f), the system manager's directories and user (%h %t %S %C %L %E %T %V %d %u %U %g %G) and %% (a literal %)";
    let host = match spec {
        'H' => Some("the host name"),
        'l' => Some("the short host name"),
        'q' => Some("the pretty host name"),
        'm' => Some("the machine ID"),
        'b' => Some("the boot ID"),
        'o' | 'w' | 'W' | 'B' | 'A' | 'M' => Some("the host's operating system"),
        'v' => Some("the host's kernel release"),
        'a' => Some("the host's architecture"),
        's' => Some("the host's shell for root"),
        'y' | 'Y' => Some("where the unit file lies on the host"),
        _ => None,
    };
    match host {
        Some(what) => format!(
            "specifier %{spec} ({what}) differs from host to host, and flotilla reads the unit once for all hosts: {SUPPORTED}"
        ),
        None => format!("specifier %{spec} is not supported: {SUPPORTED}"),
    }
}

/// systemd's `unit_name_unescape()` for the characters a flotilla unit name
/// may hold: `-` is `/`.
fn unescape(text: &str) -> String {
    text.replace('-', "/")
}

/// `%j`: the part of the prefix after its last `-`.
fn last_dash_part(prefix: &str) -> &str {
    prefix.rsplit('-').next().unwrap_or(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(name: &str, text: &str) -> Result<Option<String>, String> {
        expand_specifiers(&UnitName::parse(name).unwrap(), text)
    }

    #[test]
    fn names() {
        assert_eq!(
            expand("a-b-c@x-y.service", "%n %N %p %P %i %I %j %J %f %%"),
            Ok(Some(
                "a-b-c@x-y.service a-b-c@x-y a-b-c a/b/c x-y x/y c c /x/y %".to_owned()
            ))
        );
        assert_eq!(
            expand("srv-web.service", "%f %j %i|"),
            Ok(Some("/srv/web web |".to_owned()))
        );
        assert_eq!(expand("web@.service", "%p-%i"), Ok(None));
        assert_eq!(expand("web@.service", "%f"), Ok(None));
        assert_eq!(expand("web@.service", "%p"), Ok(Some("web".to_owned())));
    }

    #[test]
    fn system_manager() {
        assert_eq!(
            expand("web.service", "%h %u %U %g %G %t %S %C %L %E %T %V %d"),
            Ok(Some(
                "/root root 0 root 0 /run /var/lib /var/cache /var/log /etc /tmp /var/tmp /run/credentials/web.service"
                    .to_owned()
            ))
        );
    }

    #[test]
    fn per_host_and_unknown_are_refused() {
        for spec in ["%H", "%m", "%b", "%v", "%y", "%s", "%a", "%o"] {
            let e = expand("web.service", spec).unwrap_err();
            assert!(e.contains("differs from host to host"), "{spec}: {e}");
        }
        let e = expand("web.service", "%z").unwrap_err();
        assert!(
            e.starts_with("specifier %z is not supported: flotilla expands"),
            "{e}"
        );
        assert!(expand("web.service", "50%").is_err());
    }
}
