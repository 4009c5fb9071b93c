//! Image references, checked against Docker's grammar.

/// Checks an image reference against Docker's grammar
/// (`distribution/reference`): `[HOST[:PORT]/]PATH[:TAG][@DIGEST]`.
pub(super) fn check_image(s: &str) -> Result<(), String> {
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("it contains whitespace".to_owned());
    }
    let (rest, digest) = match s.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (s, None),
    };
    if let Some(digest) = digest {
        check_digest(digest)?;
    }
    let tail = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[tail..].find(':') {
        Some(i) => (&rest[..tail + i], Some(&rest[tail + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        let mut chars = tag.chars();
        let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
        let valid = chars.next().is_some_and(word)
            && tag.len() <= 128
            && chars.all(|c| word(c) || c == '.' || c == '-');
        if !valid {
            return Err(format!(
                "the tag {tag:?} is not valid: up to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
            ));
        }
    }
    if name.is_empty() {
        return Err("the repository name is empty".to_owned());
    }
    if name.len() > 255 {
        return Err("the repository name is longer than 255 characters".to_owned());
    }
    let path = match name.split_once('/') {
        Some((first, path))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            check_domain(first)?;
            path
        }
        _ => name,
    };
    for component in path.split('/') {
        check_path_component(component)?;
    }
    Ok(())
}

/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or one or more `-`.
fn check_path_component(c: &str) -> Result<(), String> {
    if c.is_empty() {
        return Err("a path component between '/' is empty".to_owned());
    }
    if c.chars().any(|ch| ch.is_ascii_uppercase()) {
        return Err("repository names must be lowercase".to_owned());
    }
    let bad = || {
        Err(format!(
            "{c:?} is not a valid path component: use lowercase letters and digits, joined by '.', '_', '__' or '-'"
        ))
    };
    let alnum = |ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit();
    if !c.starts_with(alnum) || !c.ends_with(alnum) {
        return bad();
    }
    let mut separator = String::new();
    for ch in c.chars() {
        if alnum(ch) {
            let ok = separator.is_empty()
                || matches!(separator.as_str(), "." | "_" | "__")
                || separator.chars().all(|s| s == '-');
            if !ok {
                return bad();
            }
            separator.clear();
        } else {
            separator.push(ch);
        }
    }
    Ok(())
}

/// `HOST[:PORT]`, the host a DNS name or an IPv6 address in brackets.
fn check_domain(d: &str) -> Result<(), String> {
    let bad = || {
        Err(format!(
            "the registry {d:?} is not a valid host name or host:port"
        ))
    };
    let (host, port) = if let Some(inner) = d.strip_prefix('[') {
        let Some((ip, after)) = inner.split_once(']') else {
            return bad();
        };
        if ip.is_empty() || !ip.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return bad();
        }
        match after {
            "" => ("", None),
            _ => match after.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return bad(),
            },
        }
    } else {
        match d.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (d, None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return bad();
    }
    if !d.starts_with('[') {
        for label in host.split('.') {
            let valid = !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !valid {
                return bad();
            }
        }
    }
    Ok(())
}

/// `ALGORITHM:HEX`, as `sha256:` and 64 hex digits.
fn check_digest(d: &str) -> Result<(), String> {
    let bad = || {
        Err(format!(
            "the digest {d:?} is not valid: expected an algorithm and hex digits, as sha256:<64 hex digits>"
        ))
    };
    let Some((algorithm, hex)) = d.split_once(':') else {
        return bad();
    };
    let algorithm_ok = algorithm.split(['-', '_', '+', '.']).all(|part| {
        let mut chars = part.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric())
    });
    if !algorithm_ok || hex.len() < 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return bad();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references() {
        for good in [
            "nginx",
            "nginx:1.27",
            "library/nginx",
            "docker.io/library/nginx:1.27-alpine",
            "localhost/app",
            "localhost:5000/app:v1",
            "registry.example.com:5000/team/app_x/a__b/c---d:latest",
            "Registry.Example.com/app",
            "[::1]:5000/app",
            "app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "ghcr.io/o/app:1.0@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(check_image(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "Nginx",
            "nginx:",
            "nginx:-x",
            "a/B",
            "a//b",
            "a_.b",
            "a___b",
            "-a",
            "a-",
            "app@sha256:123",
            "app@sha256",
            "ex ample",
            "bad_host:5000/app",
            "host:port/app",
            ":tag",
        ] {
            assert!(check_image(bad).is_err(), "{bad:?}");
        }
    }
}
