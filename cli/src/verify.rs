//! `flotilla verify FILE...`: checks unit files the way the server will,
//! without a server, for use in a repository's own CI.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use flotilla_proto::{Diagnostic, UnitName, UnitSpec};
use serde::Serialize;

use crate::Output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Unit files or directories (every unit file inside, recursively,
    /// skipping hidden entries); `-` reads one unit from standard input.
    #[arg(required = true, value_name = "FILE")]
    paths: Vec<PathBuf>,

    /// Treat warnings as errors for the exit status.
    #[arg(long)]
    strict: bool,

    /// The unit name to check standard input as.
    #[arg(long, value_name = "NAME", default_value = "stdin.service")]
    stdin_name: String,
}

/// What was found in one file.
#[derive(Debug, Serialize)]
struct FileReport {
    file: String,
    /// The unit name the file was checked as, when its name is valid.
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<String>,
    diagnostics: Vec<Diagnostic>,
}

#[derive(Debug, Serialize)]
struct Report {
    files: Vec<FileReport>,
    errors: usize,
    warnings: usize,
}

pub fn run(args: &Args, output: Output) -> ExitCode {
    let mut files = Vec::new();
    for path in &args.paths {
        if path.as_os_str() == "-" {
            files.push(check_stdin(&args.stdin_name));
        } else {
            collect(path, true, &mut files);
        }
    }
    let count = |severity_is_error: bool| {
        files
            .iter()
            .flat_map(|f| &f.diagnostics)
            .filter(|d| d.is_error() == severity_is_error)
            .count()
    };
    let report = Report {
        errors: count(true),
        warnings: count(false),
        files,
    };
    match output {
        Output::Text => print_text(&report),
        Output::Json => match serde_json::to_string_pretty(&report) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("flotilla verify: cannot encode the report: {e}");
                return ExitCode::FAILURE;
            }
        },
    }
    if report.errors > 0 || (args.strict && report.warnings > 0) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn print_text(report: &Report) {
    for file in &report.files {
        for d in &file.diagnostics {
            println!("{}", d.display_with(&file.file));
        }
    }
    let files = report.files.len();
    println!(
        "{} unit file{} checked: {} error{}, {} warning{}",
        files,
        plural(files),
        report.errors,
        plural(report.errors),
        report.warnings,
        plural(report.warnings)
    );
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Adds the report of `path`, or of every unit file under it when it is a
/// directory. `explicit` is true for paths named on the command line: those
/// are checked whatever their name; files found in directories are checked
/// only when their name ends in a unit type suffix.
fn collect(path: &Path, explicit: bool, out: &mut Vec<FileReport>) {
    let display = path.display().to_string();
    let metadata = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            out.push(unreadable(display, &e));
            return;
        }
    };
    if !metadata.is_dir() {
        if explicit || has_unit_suffix(path) {
            out.push(check_path(path));
        }
        return;
    }
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) => {
            out.push(unreadable(display, &e));
            return;
        }
    };
    let mut children: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    children.sort();
    for child in children {
        collect(&child, false, out);
    }
}

fn has_unit_suffix(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|ext| {
            flotilla_proto::UnitType::ALL
                .iter()
                .any(|t| t.suffix() == ext)
                || flotilla_proto::name::QUADLET_OBJECT_SUFFIXES.contains(&ext)
        })
}

fn unreadable(file: String, e: &std::io::Error) -> FileReport {
    FileReport {
        file,
        unit: None,
        diagnostics: vec![Diagnostic::error(None, format!("cannot read: {e}"))],
    }
}

fn check_path(path: &Path) -> FileReport {
    let display = path.display().to_string();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return unreadable(display, &e),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    check_bytes(display, &name, bytes)
}

fn check_stdin(name: &str) -> FileReport {
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut bytes) {
        return unreadable("<stdin>".to_owned(), &e);
    }
    check_bytes("<stdin>".to_owned(), name, bytes)
}

fn check_bytes(file: String, name: &str, bytes: Vec<u8>) -> FileReport {
    let fail = |file, message: String| FileReport {
        file,
        unit: None,
        diagnostics: vec![Diagnostic::error(None, message)],
    };
    let name = match UnitName::parse(name) {
        Ok(n) => n,
        Err(e) => return fail(file, e.to_string()),
    };
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            return fail(file, format!("not valid UTF-8 (at byte {at})"));
        }
    };
    let (_, diagnostics) = UnitSpec::read(&name, &text);
    FileReport {
        file,
        unit: Some(name.to_string()),
        diagnostics,
    }
}
