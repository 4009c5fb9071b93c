//! The table of `[Container]` keys in docs/containers.md, made from
//! [`KEYS`] and `QUADLET_UNSUPPORTED` so that the two cannot drift: a test
//! fails when the table in the doc differs, and prints the table to paste.

use super::keys::{KEYS, QUADLET_UNSUPPORTED};

/// The line before the table in docs/containers.md.
pub const BEGIN: &str =
    "<!-- container-keys: begin (generated from proto/src/container/keys.rs) -->";
/// The line after it.
pub const END: &str = "<!-- container-keys: end -->";

/// Quadlet keys that only Podman can honour, and why; read with the hints
/// of `QUADLET_UNSUPPORTED`, which win when a key has one.
const PODMAN_ONLY: &[(&str, &str)] = &[
    (
        "AutoUpdate",
        "Podman's auto-update has no Docker counterpart; replace the unit to change its image",
    ),
    (
        "ContainersConfModule",
        "a Podman configuration file; Docker does not read it",
    ),
    (
        "GlobalArgs",
        "arguments of the podman command, which flotilla does not run",
    ),
    (
        "PodmanArgs",
        "arguments of the podman command, which flotilla does not run",
    ),
    ("Pod", "Podman pods have no Docker counterpart"),
    ("StartWithPod", "Podman pods have no Docker counterpart"),
    (
        "HealthLogDestination",
        "Docker keeps health check logs itself",
    ),
    ("HealthMaxLogCount", "Docker keeps health check logs itself"),
    ("HealthMaxLogSize", "Docker keeps health check logs itself"),
    ("HealthStartupCmd", "Docker has no startup health check"),
    (
        "HealthStartupInterval",
        "Docker has no startup health check",
    ),
    ("HealthStartupRetries", "Docker has no startup health check"),
    ("HealthStartupSuccess", "Docker has no startup health check"),
    ("HealthStartupTimeout", "Docker has no startup health check"),
    (
        "RemapGid",
        "deprecated in Quadlet; Docker maps user namespaces only daemon-wide",
    ),
    (
        "RemapUid",
        "deprecated in Quadlet; Docker maps user namespaces only daemon-wide",
    ),
    (
        "RemapUidSize",
        "deprecated in Quadlet; Docker maps user namespaces only daemon-wide",
    ),
    (
        "RemapUsers",
        "deprecated in Quadlet; Docker maps user namespaces only daemon-wide",
    ),
    (
        "UserNS",
        "Docker maps user namespaces only daemon-wide (userns-remap)",
    ),
    (
        "UIDMap",
        "Docker maps user namespaces only daemon-wide (userns-remap)",
    ),
    (
        "GIDMap",
        "Docker maps user namespaces only daemon-wide (userns-remap)",
    ),
    (
        "SubUIDMap",
        "Docker maps user namespaces only daemon-wide (userns-remap)",
    ),
    (
        "SubGIDMap",
        "Docker maps user namespaces only daemon-wide (userns-remap)",
    ),
    ("VolatileTmp", "deprecated in Quadlet"),
];

/// Why flotilla does not read `key`, a Quadlet key: its hint in
/// `QUADLET_UNSUPPORTED`, or why only Podman can; empty when neither says.
pub(super) fn unsupported_reason(key: &str) -> &'static str {
    let hint = QUADLET_UNSUPPORTED
        .iter()
        .find(|(k, _)| *k == key)
        .map_or("", |(_, hint)| hint.trim_start_matches("; "));
    if !hint.is_empty() {
        return hint;
    }
    PODMAN_ONLY
        .iter()
        .find(|(k, _)| *k == key)
        .map_or("", |(_, why)| why)
}

/// Every key flotilla reads or knows from Quadlet, in name order, and
/// whether flotilla supports it (or why not), as a Markdown table.
pub fn markdown_table() -> String {
    let mut rows: Vec<(&str, String)> = KEYS
        .iter()
        .map(|k| (*k, "supported".to_owned()))
        .chain(QUADLET_UNSUPPORTED.iter().map(|(k, _)| {
            let why = unsupported_reason(k);
            let text = if why.is_empty() {
                "not supported".to_owned()
            } else {
                format!("not supported: {why}")
            };
            (*k, text)
        }))
        .collect();
    rows.sort_by_key(|(k, _)| k.to_ascii_lowercase());
    let mut out = String::from("| key | in flotilla |\n|---|---|\n");
    for (key, text) in rows {
        out.push_str(&format!("| `{key}=` | {text} |\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> String {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/containers.md");
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// The table between the markers in docs/containers.md.
    fn doc_table(doc: &str) -> Option<&str> {
        let start = doc.find(BEGIN)? + BEGIN.len() + 1;
        let end = doc.find(END)?;
        doc.get(start..end)
    }

    #[test]
    fn the_doc_table_matches_the_code() {
        let doc = doc();
        assert_eq!(
            doc_table(&doc),
            Some(markdown_table().as_str()),
            "docs/containers.md's table of [Container] keys differs from proto/src/container/keys.rs; print the table with\n  cargo test -p flotilla-proto --lib print_container_keys_table -- --ignored --nocapture\nand paste it between the markers"
        );
    }

    #[test]
    fn every_key_is_in_one_list_once() {
        let mut all: Vec<&str> = KEYS
            .iter()
            .copied()
            .chain(QUADLET_UNSUPPORTED.iter().map(|(k, _)| *k))
            .collect();
        all.sort_unstable();
        let before = all.len();
        all.dedup();
        assert_eq!(all.len(), before, "a key is listed twice");
    }

    #[test]
    #[ignore = "prints the table for docs/containers.md"]
    fn print_container_keys_table() {
        println!("{BEGIN}\n{}{END}", markdown_table());
    }
}
