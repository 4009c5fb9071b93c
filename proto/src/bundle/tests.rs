use super::*;

fn file(path: &str, text: &str) -> BundleFile {
    BundleFile {
        path: path.to_owned(),
        bytes: text.as_bytes().to_vec(),
    }
}

fn names(b: &Bundle) -> Vec<(String, DesiredState)> {
    b.units
        .iter()
        .map(|(n, w)| (n.to_string(), w.desired))
        .collect()
}

#[test]
fn units_states_and_instances() {
    let b = read(
        "repo",
        &[
            file("web.service", "[Service]\nExecStart=/bin/sleep 1\n"),
            file("sub/db.service", "[Service]\nExecStart=/bin/sleep 2\n"),
            file("worker@.service", "[Service]\nExecStart=/bin/echo %i\n"),
            file(
                MANIFEST,
                "states:\n  db.service: loaded\ninstances:\n  worker@.service: [1, two]\n",
            ),
            file("README.md", "notes\n"),
            file("app.pod", "[Pod]\n"),
        ],
    )
    .unwrap();
    assert_eq!(
        names(&b),
        [
            ("db.service".to_owned(), DesiredState::Loaded),
            ("web.service".to_owned(), DesiredState::Launched),
            ("worker@.service".to_owned(), DesiredState::Inactive),
            ("worker@1.service".to_owned(), DesiredState::Launched),
            ("worker@two.service".to_owned(), DesiredState::Launched),
        ]
    );
    assert_eq!(
        b.warnings,
        ["repo/app.pod: warning: Podman Quadlet .pod files are not read by flotilla: skipped"]
    );
    let w = &b.units[&UnitName::parse("web.service").unwrap()];
    assert_eq!(w.hash, UnitFile::parse(&w.text).0.content_hash());
}

#[test]
fn containers_take_their_dropins() {
    let b = read(
        "",
        &[
            file("db.container", "[Container]\nImage=postgres:16\n"),
            file("db.container.d/10.conf", "[Service]\nRestart=always\n"),
        ],
    )
    .unwrap();
    assert_eq!(
        b.units[&UnitName::parse("db.service").unwrap()].text,
        "[Container]\nImage=postgres:16\n\n[Service]\nRestart=always\n"
    );
}

#[test]
fn every_bad_file_is_reported_with_its_line() {
    let e = read(
        "repo",
        &[
            file(
                "a.service",
                "[Service]\nExecStart=/bin/true\n[X-Fleet]\nConflict=x\n",
            ),
            file("b.service", "[Service]\nExecStart=/bin/true\nBogus\n"),
            file("c.service", "[Service]\nExecStart=/bin/true\n"),
        ],
    )
    .unwrap_err();
    assert_eq!(e.errors.len(), 2, "{e}");
    assert!(e.errors[0].starts_with("repo/a.service:4: error:"), "{e}");
    assert!(e.errors[1].starts_with("repo/b.service:3: error:"), "{e}");
}

#[test]
fn manifest_errors_name_their_line() {
    let unit = file("web.service", "[Service]\nExecStart=/bin/true\n");
    let bad_yaml = read(
        "r",
        &[
            unit.clone(),
            file(MANIFEST, "states:\n  web.service: running\n"),
        ],
    )
    .unwrap_err();
    assert!(
        bad_yaml.errors[0].starts_with("r/flotilla.yaml:2: error:"),
        "{bad_yaml}"
    );
    let unknown = read(
        "r",
        &[
            unit.clone(),
            file(
                MANIFEST,
                "default-state: loaded\nstates:\n  db.service: loaded\n",
            ),
        ],
    )
    .unwrap_err();
    assert!(
        unknown.errors[0].starts_with("r/flotilla.yaml:3: error: states names db.service"),
        "{unknown}"
    );
    let not_template = read(
        "r",
        &[unit, file(MANIFEST, "instances:\n  web.service: [1]\n")],
    )
    .unwrap_err();
    assert!(
        not_template.errors[0].starts_with("r/flotilla.yaml:2: error: instances of web.service"),
        "{not_template}"
    );
}

#[test]
fn an_empty_manifest_is_no_manifest() {
    let b = read(
        "",
        &[
            file("web.service", "[Service]\nExecStart=/bin/true\n"),
            file(MANIFEST, ""),
        ],
    );
    assert_eq!(
        names(&b.unwrap()),
        [("web.service".to_owned(), DesiredState::Launched)]
    );
}

#[test]
fn what_is_read() {
    assert!(reads("web.service"));
    assert!(reads("a/b/web.timer"));
    assert!(reads("db.container.d/10.conf"));
    assert!(reads(MANIFEST));
    assert!(reads("app.pod"));
    assert!(!reads("sub/flotilla.yaml"));
    assert!(!reads(".git/config"));
    assert!(!reads("a/.hidden.service"));
    assert!(!reads("README.md"));
}

#[test]
fn rollout_groups_are_passed_on_as_written() {
    let b = read(
        "repo",
        &[
            file("web.service", "[Service]\nExecStart=/bin/sleep 1\n"),
            file(
                MANIFEST,
                "rollouts:\n  front:\n    units: [web.service]\n    max-parallel: 2\n",
            ),
        ],
    )
    .unwrap();
    let front = &b.rollouts["front"];
    assert_eq!(front["max-parallel"].as_u64(), Some(2));
    assert_eq!(front["units"][0].as_str(), Some("web.service"));
    // Without the section, none.
    let b = read(
        "repo",
        &[file("web.service", "[Service]\nExecStart=/bin/sleep 1\n")],
    )
    .unwrap();
    assert!(b.rollouts.is_empty());
}
