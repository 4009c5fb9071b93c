//! `flotilla version` and `--version`: the package version, the git commit
//! and the build date this binary was built with (stamped by build.rs).

use std::process::ExitCode;

use crate::Output;
use crate::client::print_json;

/// The release, as in Cargo.toml: what servers and agents report and what
/// the API's compatibility rule compares (docs/operations.md).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit the binary was built from, "unknown" outside a git checkout.
pub const COMMIT: &str = env!("FLOTILLA_GIT_COMMIT");
/// `YYYY-MM-DD`, from `SOURCE_DATE_EPOCH` when the build set it.
pub const BUILD_DATE: &str = env!("FLOTILLA_BUILD_DATE");

/// What `--version` prints after the program's name.
pub const LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("FLOTILLA_GIT_COMMIT"),
    ", built ",
    env!("FLOTILLA_BUILD_DATE"),
    ")"
);

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Info {
    version: &'static str,
    commit: &'static str,
    build_date: &'static str,
}

/// Prints the version: one line of text, or an object with `-o json`.
pub fn run(output: Output) -> anyhow::Result<ExitCode> {
    match output {
        Output::Text => println!("flotilla {LONG}"),
        Output::Json => print_json(&Info {
            version: VERSION,
            commit: COMMIT,
            build_date: BUILD_DATE,
        })?,
    }
    Ok(ExitCode::SUCCESS)
}
