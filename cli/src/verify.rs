//! `flotilla verify FILE...`: checks unit files the way the server will,
//! without a server, for use in a repository's own CI.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use flotilla_proto::Diagnostic;
use serde::Serialize;

use crate::Output;
use crate::unit_source::{self, Found};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Unit files or directories (every unit file inside, recursively,
    /// skipping hidden entries); `-` reads one unit from standard input.
    /// A Podman Quadlet `NAME.container` is checked as `NAME.service`, with
    /// its Quadlet drop-ins.
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
    /// For a Quadlet drop-in: the file it was merged into.
    #[serde(skip_serializing_if = "Option::is_none")]
    dropin_of: Option<String>,
    /// A file flotilla does not read (a Quadlet `.network`...).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    skipped: bool,
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
            check_stdin(&args.stdin_name, &mut files);
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
    let files = report
        .files
        .iter()
        .filter(|f| f.dropin_of.is_none() && !f.skipped)
        .count();
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
/// only when their name ends in a unit type suffix or `.container` (a
/// Podman Quadlet file, checked as its `.service` with its drop-ins).
/// Quadlet's other files are reported, not checked.
fn collect(path: &Path, explicit: bool, out: &mut Vec<FileReport>) {
    let display = path.display().to_string();
    let metadata = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            out.push(unreadable(display, &e.to_string()));
            return;
        }
    };
    if !metadata.is_dir() {
        match unit_source::kind(path) {
            Found::Unsupported(suffix) => out.push(FileReport {
                file: display,
                unit: None,
                dropin_of: None,
                skipped: true,
                diagnostics: vec![Diagnostic::warning(
                    None,
                    unit_source::unsupported_message(suffix),
                )],
            }),
            Found::Unit => check_path(path, out),
            Found::Other if explicit => check_path(path, out),
            Found::Other => {}
        }
        return;
    }
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) => {
            out.push(unreadable(display, &e.to_string()));
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

fn unreadable(file: String, e: &str) -> FileReport {
    FileReport {
        file,
        unit: None,
        dropin_of: None,
        skipped: false,
        diagnostics: vec![Diagnostic::error(None, format!("cannot read: {e}"))],
    }
}

fn check_path(path: &Path, out: &mut Vec<FileReport>) {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Err(e) = unit_source::unit_name(&file_name) {
        out.push(FileReport {
            file: path.display().to_string(),
            unit: None,
            dropin_of: None,
            skipped: false,
            diagnostics: vec![Diagnostic::error(None, e.to_string())],
        });
        return;
    }
    match unit_source::read(path) {
        Ok(local) => report(local, out),
        Err(e) => out.push(FileReport {
            file: path.display().to_string(),
            unit: None,
            dropin_of: None,
            skipped: false,
            diagnostics: vec![Diagnostic::error(None, format!("{e:#}"))],
        }),
    }
}

fn check_stdin(name: &str, out: &mut Vec<FileReport>) {
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut bytes) {
        out.push(unreadable("<stdin>".to_owned(), &e.to_string()));
        return;
    }
    let fail = |message: String| FileReport {
        file: "<stdin>".to_owned(),
        unit: None,
        dropin_of: None,
        skipped: false,
        diagnostics: vec![Diagnostic::error(None, message)],
    };
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            out.push(fail(format!("not valid UTF-8 (at byte {at})")));
            return;
        }
    };
    match unit_source::from_text("<stdin>", name, text) {
        Ok(local) => report(local, out),
        Err(e) => out.push(fail(format!("{e:#}"))),
    }
}

/// The reports of a unit: one for its file, and one for each drop-in with
/// something to say.
fn report(local: unit_source::LocalUnit, out: &mut Vec<FileReport>) {
    let located = match local.check() {
        Ok((_, located)) => located,
        Err(e) => e.diagnostics,
    };
    let main = local.merged.main_file().to_owned();
    let unit = Some(local.name.to_string());
    let mut reports = vec![FileReport {
        file: main.clone(),
        unit: unit.clone(),
        dropin_of: None,
        skipped: false,
        diagnostics: Vec::new(),
    }];
    for l in located {
        let at = match reports.iter().position(|r| r.file == l.file) {
            Some(i) => i,
            None => {
                reports.push(FileReport {
                    file: l.file.clone(),
                    unit: unit.clone(),
                    dropin_of: Some(main.clone()),
                    skipped: false,
                    diagnostics: Vec::new(),
                });
                reports.len() - 1
            }
        };
        reports[at].diagnostics.push(l.diagnostic);
    }
    out.extend(reports);
}
