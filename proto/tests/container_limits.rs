//! The bounds on the repeatable keys of container units and of `.network`
//! files: a value past the limit is an error on its own line, naming the
//! key and the limit, and the limit itself is accepted.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use flotilla_proto::container::{MAX_MOUNTS, MAX_NETWORK_VALUES};
use flotilla_proto::{Diagnostic, UnitName, UnitSpec};

/// The errors of unit `name` whose `section` holds `head` and then one
/// line made by `line` for each of `0..n`.
fn errors(
    name: &str,
    section: &str,
    head: &str,
    n: usize,
    line: impl Fn(usize) -> String,
) -> Vec<Diagnostic> {
    let mut text = format!("[{section}]\n{head}");
    for i in 0..n {
        text.push_str(&line(i));
        text.push('\n');
    }
    let (_, diagnostics) = UnitSpec::read(&UnitName::parse(name).unwrap(), &text);
    diagnostics.into_iter().filter(|d| d.is_error()).collect()
}

/// `limit` values are accepted; one more is an error on its line saying
/// `says`. `first_line` is the line of value 0.
fn bounded(
    name: &str,
    section: &str,
    head: &str,
    limit: usize,
    says: &str,
    line: impl Fn(usize) -> String,
) {
    let first_line = 2 + head.lines().count();
    let at_limit = errors(name, section, head, limit, &line);
    assert!(at_limit.is_empty(), "{says}: {at_limit:?}");
    let past = errors(name, section, head, limit + 1, &line);
    assert_eq!(past.len(), 1, "{says}: {past:?}");
    assert_eq!(past[0].line, Some((first_line + limit) as u32), "{past:?}");
    assert!(past[0].message.contains(says), "{past:?}");
}

#[test]
fn repeatable_container_keys_are_bounded() {
    bounded(
        "web.service",
        "Container",
        "Image=nginx\n",
        MAX_NETWORK_VALUES,
        &format!("a container may have at most {MAX_NETWORK_VALUES} values of DNS="),
        |i| format!("DNS=10.0.{}.{}", i / 250, i % 250 + 1),
    );
    bounded(
        "web.service",
        "Container",
        "Image=nginx\n",
        MAX_MOUNTS,
        &format!("a container may have at most {MAX_MOUNTS} Mount= and Tmpfs= together"),
        |i| format!("Tmpfs=/scratch/{i}"),
    );
    bounded(
        "web.service",
        "Container",
        "Image=nginx\n",
        flotilla_proto::container::host::MAX_HOST_ENTRIES,
        "a container may have at most 256 of these",
        |i| format!("Annotation=key{i}=value"),
    );
    bounded(
        "web.service",
        "Container",
        "Image=nginx\n",
        flotilla_proto::container::secret::MAX_SECRETS_PER_CONTAINER,
        "a container may use at most 64 secrets",
        |i| format!("Secret=secret{i}"),
    );
}

#[test]
fn repeatable_network_file_keys_are_bounded() {
    bounded(
        "shop.network",
        "Network",
        "",
        flotilla_proto::container::object::MAX_OBJECT_VALUES,
        "at most 256 values of Label= are accepted",
        |i| format!("Label=key{i}=value"),
    );
}
