//! The whole check of a unit (syntax, `[X-Fleet]`, `[Container]`,
//! resources, sections) costs work in proportion to the unit's size, also
//! for the shapes that compare values with each other: many list items,
//! many patterns against many peers, many near misses to suggest for.
//! Work is counted in steps (`flotilla_proto::work`), never timed.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use flotilla_proto::unit_file::MAX_UNIT_FILE_BYTES;
use flotilla_proto::{UnitName, UnitSpec, work};

/// As in `generated.rs`.
const CHECK_STEPS_PER_BYTE: u64 = 2_000;

/// Lines `line(i)` for i = 0, 1, ... after `head`, up to about `bytes`.
fn unit(head: &str, bytes: usize, line: impl Fn(usize) -> String) -> String {
    let mut text = head.to_owned();
    let mut i = 0;
    while text.len() < bytes {
        text.push_str(&line(i));
        text.push('\n');
        i += 1;
    }
    text
}

fn steps_of(name: &str, text: &str) -> u64 {
    let name = UnitName::parse(name).unwrap();
    let (_, steps) = work::measure(|| UnitSpec::check_named("test", &name, text));
    steps
}

#[test]
fn every_shape_costs_steps_in_proportion_to_its_size() {
    type Shape = (
        &'static str,
        &'static str,
        &'static str,
        fn(usize) -> String,
    );
    let shapes: [Shape; 11] = [
        (
            "distinct MachineOf peers",
            "web.service",
            "[X-Fleet]\n",
            |i| format!("MachineOf=peer-{i}.service\nConflicts=other-{i}-*"),
        ),
        (
            "distinct Replaces patterns",
            "web.service",
            "[X-Fleet]\n",
            |i| format!("MachineOf=p{i}.service\nReplaces=*-{i}*x*y*z"),
        ),
        (
            "long patterns",
            "web.service",
            "[X-Fleet]\nMachineOf=a.service\n",
            |i| format!("Conflicts={}{i}", "*a".repeat(400)),
        ),
        ("metadata pairs", "web.service", "[X-Fleet]\n", |i| {
            format!("MachineMetadata=k{i}=v{i} k{i}=w{i}")
        }),
        (
            "published ports",
            "web.service",
            "[Container]\nImage=busybox\n",
            |i| format!("PublishPort=10.0.{}.{}:80:80", i / 250, i % 250),
        ),
        (
            "volumes",
            "web.service",
            "[Container]\nImage=busybox\n",
            |i| format!("Volume=/src/{i}:/dst/{i}"),
        ),
        (
            "environment",
            "web.service",
            "[Container]\nImage=busybox\n",
            |i| format!("Environment=V{i}=x L{i}=y"),
        ),
        (
            "unknown [Container] keys",
            "web.service",
            "[Container]\nImage=busybox\n",
            |i| format!("HealthIntervall{}=1", i % 10),
        ),
        ("unknown sections", "web.service", "", |i| {
            format!("[Servce{i}]\nA=1")
        }),
        (
            "unsupported specifiers",
            "web.service",
            "[X-Fleet]\n",
            |i| {
                let c = char::from_u32(0x100 + i as u32).unwrap_or('x');
                format!("Conflicts=a%{c}")
            },
        ),
        (
            "capabilities",
            "web.service",
            "[Container]\nImage=busybox\n",
            |_| "AddCapability=NET_ADMIN SYS_TIME CHOWN KILL".to_owned(),
        ),
    ];
    for (what, name, head, line) in shapes {
        for bytes in [1_000, 10_000, 100_000, MAX_UNIT_FILE_BYTES - 100] {
            let text = unit(head, bytes, line);
            let steps = steps_of(name, &text);
            let bound = CHECK_STEPS_PER_BYTE * text.len() as u64;
            assert!(
                steps <= bound,
                "{what}: {steps} steps for {} bytes (at most {bound})",
                text.len()
            );
        }
    }
}

#[test]
fn matching_patterns_against_peers_is_bounded() {
    use flotilla_proto::fleet::{MAX_PATTERN_LEN, MAX_PEER_PATTERN_PAIRS};
    // The costliest patterns within the limits, against the longest names:
    // each match tries every position of the name, and at each most of the
    // pattern.
    let side = (MAX_PEER_PATTERN_PAIRS as f64).sqrt() as usize;
    let mut text = String::from("[X-Fleet]\n");
    for i in 0..side {
        let name = format!("{i:02}{}.service", "a".repeat(245));
        text.push_str(&format!("MachineOf={name}\n"));
        let pattern = format!("*{}b{i:02}", "a".repeat(MAX_PATTERN_LEN - 4));
        text.push_str(&format!("Conflicts={pattern}\n"));
    }
    let steps = steps_of("web.service", &text);
    let bound = CHECK_STEPS_PER_BYTE * text.len() as u64;
    assert!(steps <= bound, "{steps} steps for {} bytes", text.len());
    // One pair more is refused without matching.
    text.push_str("Replaces=x*\n");
    let name = UnitName::parse("web.service").unwrap();
    let err = UnitSpec::check_named("test", &name, &text).unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.contains(&format!(
            "[X-Fleet] MachineOf: {side} units to run beside and {} Conflicts and Replaces patterns make {} pairs",
            side + 1,
            side * (side + 1)
        )),
        "{shown}"
    );
}

#[test]
fn a_list_option_holds_a_bounded_number_of_values() {
    use flotilla_proto::fleet::MAX_VALUES;
    let words: Vec<String> = (0..=MAX_VALUES).map(|i| format!("u{i}*")).collect();
    let text = format!("[X-Fleet]\nConflicts={}\n", words.join(" "));
    let name = UnitName::parse("web.service").unwrap();
    let err = UnitSpec::check_named("test", &name, &text).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "test:2: error: [X-Fleet] Conflicts: more than {MAX_VALUES} values, the most flotilla accepts for one option"
        )
    );
    // Repeats count once.
    let text = format!("[X-Fleet]\nConflicts={}\n", "same* ".repeat(2 * MAX_VALUES));
    assert!(UnitSpec::check_named("test", &name, &text).is_ok());
}

#[test]
fn a_long_value_costs_steps_in_proportion_to_its_length() {
    use flotilla_proto::unit_file::MAX_LINE_BYTES;
    // Distinct specifiers, each looked up among those seen before it.
    let mut value = String::from("a");
    let mut c = 0x100;
    while value.len() + 8 < MAX_LINE_BYTES - 20 {
        value.push('%');
        value.push(char::from_u32(c).unwrap());
        c += 1;
    }
    let text = format!("[X-Fleet]\nConflicts={value}\n");
    let steps = steps_of("web.service", &text);
    let bound = CHECK_STEPS_PER_BYTE * text.len() as u64;
    assert!(steps <= bound, "{steps} steps for {} bytes", text.len());
}
