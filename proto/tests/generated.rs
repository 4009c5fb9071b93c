//! The unit-file parser and validator fed generated input: arbitrary text,
//! and near-valid unit files built from the options flotilla reads
//! (`[Service]` resources, `[X-Fleet]`, `[Container]`) with their values
//! bent. Nothing may panic, and the work (steps counted by
//! `flotilla_proto::work`) stays in proportion to the input.
//!
//! A fuzzer for the normal `cargo test`: cargo-fuzz needs a nightly
//! toolchain, so this uses proptest with a fixed seed and a fixed number of
//! cases, so that every run (and CI) tries the same inputs and takes a few
//! seconds. To explore further, set `FLOTILLA_FUZZ_CASES` (more cases) and
//! `FLOTILLA_FUZZ_SEED` (another seed, 64 hex digits); a failure prints the
//! input, shrunk.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

use flotilla_proto::{UnitFile, UnitName, UnitSpec, work};

/// Cases per property in a normal run (a few seconds in a debug build);
/// the repeated units are larger, and get a sixth of these.
const CASES: u32 = 600;
/// The seed of a normal run: fixed, so that CI is deterministic.
const SEED: [u8; 32] = *b"flotilla unit-file parser seed 1";

/// Steps the parser may take per byte of input (see `parse_limits.rs`).
const PARSE_STEPS_PER_BYTE: u64 = 4;
/// Steps the whole check may take per byte: the validators split, expand
/// and compare values, match globs and look for near misses of unknown
/// names, each bounded per byte.
const CHECK_STEPS_PER_BYTE: u64 = 2_000;

fn runner(share: u32) -> TestRunner {
    let cases = std::env::var("FLOTILLA_FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(CASES)
        / share;
    let seed = std::env::var("FLOTILLA_FUZZ_SEED")
        .ok()
        .and_then(|s| {
            let bytes: Vec<u8> = (0..s.len())
                .step_by(2)
                .filter_map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
                .collect();
            <[u8; 32]>::try_from(bytes).ok()
        })
        .unwrap_or(SEED);
    let config = Config {
        cases,
        // No files of failed cases in the source tree: the seed is fixed,
        // so a failure comes back by itself.
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed))
}

/// Parses and checks `text` as unit `name`: no panic, bounded work.
fn check_text(name: &UnitName, text: &str) -> Result<(), TestCaseError> {
    let ((_, diagnostics), parse_steps) = work::measure(|| UnitFile::parse(text));
    let bytes = text.len() as u64 + 1;
    prop_assert!(
        parse_steps <= PARSE_STEPS_PER_BYTE * bytes,
        "parse: {parse_steps} steps for {bytes} bytes"
    );
    for d in &diagnostics {
        // Every message is one line: a line end in a message would forge
        // output lines in `flotilla verify`.
        prop_assert!(!d.message.contains(['\n', '\r', '\0']), "{:?}", d.message);
    }
    let (result, check_steps) = work::measure(|| UnitSpec::check_named("fuzz", name, text));
    prop_assert!(
        check_steps <= CHECK_STEPS_PER_BYTE * bytes,
        "check: {check_steps} steps for {bytes} bytes"
    );
    if let Ok(checked) = result {
        // What was accepted serialises to a file that reads back the same.
        let again = UnitFile::parse(&checked.spec.file.to_string());
        prop_assert_eq!(again.0.content_hash(), checked.spec.hash);
    }
    Ok(())
}

/// Characters that mean something to the parser or a validator, often;
/// any character, sometimes.
fn text_strategy(max: usize) -> impl Strategy<Value = String> {
    const SPECIAL: &[char] = &[
        '[', ']', '=', '\\', '#', ';', ' ', '\t', '\n', '\n', '\n', '\r', '\0', '\u{feff}', '%',
        '@', '*', '?', ':', '/', '.', '-', '"', '\'', 'a', 'Z', '0', '9',
    ];
    proptest::collection::vec(
        prop_oneof![
            6 => proptest::sample::select(SPECIAL),
            1 => any::<char>(),
        ],
        0..max,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

fn names() -> impl Strategy<Value = UnitName> {
    proptest::sample::select(vec![
        "web.service",
        "web@.service",
        "web@8080.service",
        "db.socket",
        "nightly.timer",
        "data.mount",
    ])
    .prop_map(|n| UnitName::parse(n).unwrap())
}

/// Keys and values flotilla reads, by section, with values near the edge
/// of what each accepts.
const SECTIONS: &[(&str, &[&str], &[&str])] = &[
    (
        "Unit",
        &["Description", "After", "Requires", "Descripton"],
        &["web server", "db.service", ""],
    ),
    (
        "Service",
        &[
            "ExecStart",
            "CPUQuota",
            "MemoryMax",
            "MemoryHigh",
            "Type",
            "KillMode",
            "Delegate",
            "NotifyAccess",
            "Restart",
        ],
        &[
            "/bin/true",
            "150%",
            "0%",
            "12.5%",
            "1.5",
            "512M",
            "7E",
            "16E",
            "infinity",
            "50%",
            "1Q",
            "notify",
            "mixed",
            "yes",
            "all",
            "",
        ],
    ),
    (
        "X-Fleet",
        &[
            "MachineID",
            "MachineOf",
            "MachineMetadata",
            "Conflicts",
            "Global",
            "Replaces",
            "StopAfterCutOff",
            "RolloutMaxParallel",
            "RolloutMinHealthyTime",
            "RolloutAutoRevert",
            "X-ConditionMachineOf",
            "MachineBootID",
            "Conflict",
        ],
        &[
            "0123456789abcdef0123456789abcdef",
            "01234567",
            "db.service",
            "web@%i.service",
            "region=eu",
            "region=eu region=us",
            "web@*.service",
            "[a-",
            "*\\",
            "%n %N %p %i %%",
            "%x",
            "true",
            "maybe",
            "10s",
            "\"quoted word\" other",
            "\"unclosed",
            "",
        ],
    ),
    (
        "Container",
        &[
            "Image",
            "Exec",
            "Entrypoint",
            "Environment",
            "PublishPort",
            "Volume",
            "User",
            "ContainerName",
            "Label",
            "HealthCmd",
            "HealthInterval",
            "HealthOnFailure",
            "Notify",
            "StopSignal",
            "StopTimeout",
            "ReadOnly",
            "AddCapability",
            "DropCapability",
            "Pod",
            "Imag",
        ],
        &[
            "docker.io/library/busybox:latest",
            "busybox@sha256:abc",
            "8080:80",
            "127.0.0.1::80/udp",
            "80-90:80-90",
            "/data:/data:ro",
            "vol:/v:z,rw",
            "A=1 B=\"two words\"",
            "1000:1000",
            "web-%i",
            "none",
            "/bin/check",
            "30s",
            "kill",
            "healthy",
            "SIGTERM",
            "NET_ADMIN",
            "CAP_SYS_TIME",
            "all",
            "",
        ],
    ),
    ("Bogus", &["Key"], &["value"]),
];

/// One line of a near-valid unit file.
fn line_strategy() -> impl Strategy<Value = String> {
    let assignment = (0..SECTIONS.len())
        .prop_flat_map(|s| {
            let (_, keys, values) = SECTIONS[s];
            (
                proptest::sample::select(keys),
                proptest::collection::vec(proptest::sample::select(values), 1..4),
                text_strategy(6),
            )
        })
        .prop_map(|(key, words, noise)| {
            let mut value = words.join(" ");
            value.push_str(&noise);
            format!("{key}={value}")
        });
    let header = proptest::sample::select(SECTIONS.iter().map(|(s, _, _)| *s).collect::<Vec<_>>())
        .prop_map(|s| format!("[{s}]"));
    prop_oneof![
        6 => assignment,
        2 => header,
        1 => Just("# a comment \\".to_owned()),
        1 => Just(String::new()),
        1 => text_strategy(12),
    ]
}

/// How a line ends: mostly `\n`, sometimes what systemd also reads as a
/// line end, or a continuation.
fn end_strategy() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        12 => Just("\n"),
        2 => Just("\r\n"),
        1 => Just("\r"),
        1 => Just("\0"),
        1 => Just("\n\r"),
        2 => Just("\\\n"),
        1 => Just(""),
    ]
}

fn unit_strategy() -> impl Strategy<Value = String> {
    (
        any::<bool>(),
        proptest::collection::vec((line_strategy(), end_strategy()), 0..60),
    )
        .prop_map(|(bom, lines)| {
            let mut text = String::new();
            if bom {
                text.push('\u{feff}');
            }
            for (line, end) in lines {
                text.push_str(&line);
                text.push_str(end);
            }
            text
        })
}

#[test]
fn arbitrary_text_never_panics_and_costs_work_in_proportion() {
    runner(1)
        .run(&(names(), text_strategy(2_000)), |(name, text)| {
            check_text(&name, &text)
        })
        .unwrap();
}

#[test]
fn near_valid_units_never_panic_and_cost_work_in_proportion() {
    runner(1)
        .run(&(names(), unit_strategy()), |(name, text)| {
            check_text(&name, &text)
        })
        .unwrap();
}

#[test]
fn near_valid_units_repeated_cost_work_in_proportion() {
    // The same lines many times: what is compared pairwise (duplicates,
    // clashes, patterns against peers) must not grow with the square.
    runner(6)
        .run(
            &(names(), unit_strategy(), 10usize..200),
            |(name, text, times)| check_text(&name, &text.repeat(times)),
        )
        .unwrap();
}
