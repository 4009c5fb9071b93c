//! Prometheus' own tooling as the judge of a metrics page: Debian's
//! `prometheus` package ships `promtool` (scripts/test installs it).

use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `promtool check metrics` on a page in Prometheus' text format and
/// panics, showing what promtool said, unless it parses and passes
/// promtool's lint (names, units, help texts).
pub fn check_metrics(page: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): install Debian's prometheus package (scripts/test does)"
            )
        });
    let mut stdin = child.stdin.take().expect("promtool's stdin is piped");
    stdin
        .write_all(page.as_bytes())
        .unwrap_or_else(|e| panic!("cannot write the page to promtool: {e}"));
    drop(stdin);
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("promtool did not finish: {e}"));
    assert!(
        out.status.success(),
        "promtool check metrics refused the page: {}{}\n{page}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
