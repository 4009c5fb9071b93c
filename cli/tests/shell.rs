//! What the package ships beside the binary, checked as a shell and man
//! see them: the completion scripts (bash driven as on a Tab, zsh and fish
//! syntax-checked where installed), unit names completed from a real
//! server, the manual pages rendered by man-db, and `flotilla version`.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::process::{Command, Stdio};

use common::{BIN, ServerProcess, TempDir, ok, stdout};

/// `flotilla ARGS` with no client configuration and no cluster in the
/// environment.
fn flotilla(dir: &TempDir, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir.path())
        .env("FLOTILLA_CLIENT_CONFIG", dir.path().join("no-config.yaml"))
        .env_remove("FLOTILLA_ENDPOINT")
        .env_remove("FLOTILLA_CLUSTER")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn installed(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Completes the command line `words` (the last one being completed) as
/// bash does on a Tab: the script sourced, COMP_WORDS and COMP_CWORD set,
/// the function `complete` registered for flotilla called. Returns
/// COMPREPLY, one entry a line.
fn bash_complete(
    script: &std::path::Path,
    cwd: &std::path::Path,
    words: &[&str],
    env: &[(&str, &str)],
) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let prog = format!(
        r#"source '{script}' || exit 1
COMP_WORDS=({words})
COMP_CWORD={cword}
COMP_LINE="${{COMP_WORDS[*]}}"
COMP_POINT=${{#COMP_LINE}}
fn=$(complete -p flotilla | sed -n 's/.*-F \([^ ]*\).*/\1/p')
"$fn" flotilla "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}"
"#,
        script = script.display(),
        words = quoted.join(" "),
        cword = words.len() - 1,
    );
    let mut cmd = Command::new("bash");
    cmd.args(["--norc", "-c", &prog]).current_dir(cwd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "bash failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completes_commands_and_the_script_parses() {
    let dir = TempDir::new("complete-bash");
    let script = dir.write(
        "flotilla.bash",
        &ok(&flotilla(&dir, &["completion", "bash"])),
    );
    let check = Command::new("bash")
        .args(["-n"])
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let replies = bash_complete(&script, dir.path(), &["flotilla", "st"], &[]);
    for verb in ["start", "status", "stop"] {
        assert!(replies.iter().any(|r| r == verb), "{verb}: {replies:?}");
    }
    assert!(replies.iter().all(|r| r.starts_with("st")), "{replies:?}");
    // Options of a command.
    let replies = bash_complete(&script, dir.path(), &["flotilla", "start", "--no-b"], &[]);
    assert_eq!(replies, ["--no-block"]);
}

#[test]
fn unit_names_are_completed_from_the_cluster_and_silently_not_without_one() {
    let dir = TempDir::new("complete-units");
    let server = ServerProcess::start(&dir.path().join("data"), &[]);
    let unit = "[Service]\nExecStart=/bin/sleep 1000\n";
    dir.write("web.service", unit);
    dir.write("worker.service", unit);
    dir.write("db.service", unit);
    ok(&server.run(
        dir.path(),
        &["submit", "web.service", "worker.service", "db.service"],
    ));
    let units = ok(&server.run(dir.path(), &["__complete-units", "w"]));
    assert_eq!(units, "web.service\nworker.service\n");

    // Through bash, from an empty directory (no local files to offer).
    let script = dir.write(
        "flotilla.bash",
        &ok(&flotilla(&dir, &["completion", "bash"])),
    );
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let ca = server.ca_file();
    let token = server.admin_token_file();
    let env = [
        ("FLOTILLA_ENDPOINT", server.endpoint.as_str()),
        ("FLOTILLA_CA", ca.to_str().unwrap()),
        ("FLOTILLA_TOKEN_FILE", token.to_str().unwrap()),
    ];
    let complete = |cur: &str| bash_complete(&script, &empty, &[BIN, "status", cur], &env);
    assert_eq!(complete("w"), ["web.service", "worker.service"]);
    assert_eq!(complete("d"), ["db.service"]);
    // Local files are offered beside them.
    std::fs::write(empty.join("worker@.service"), unit).unwrap();
    assert_eq!(complete("wo"), ["worker.service", "worker@.service"]);

    // No cluster configured: nothing printed, exit 0, no error.
    let out = flotilla(&dir, &["__complete-units", "w"]);
    assert!(out.status.success());
    assert_eq!((stdout(&out).as_str(), out.stderr.len()), ("", 0));
    // A configured cluster that does not answer: the same.
    let out = Command::new(BIN)
        .args(["--endpoint", "https://127.0.0.1:9", "__complete-units", "w"])
        .env("FLOTILLA_CLIENT_CONFIG", dir.path().join("no-config.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!((stdout(&out).as_str(), out.stderr.len()), ("", 0));
}

#[test]
fn zsh_and_fish_scripts_are_generated() {
    let dir = TempDir::new("complete-zsh-fish");
    for (shell, check) in [("zsh", "zsh"), ("fish", "fish")] {
        let script = ok(&flotilla(&dir, &["completion", shell]));
        assert!(script.contains("__complete-units"), "{shell}");
        assert!(script.contains("status"), "{shell}");
        // Syntax-checked where the shell is installed (scripts/test
        // installs zsh).
        if installed(check) {
            let file = dir.write(&format!("flotilla.{shell}"), &script);
            let out = Command::new(check).arg("-n").arg(&file).output().unwrap();
            assert!(
                out.status.success(),
                "{shell} -n: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn man_pages_render_for_flotilla_and_each_command() {
    assert!(
        installed("man"),
        "man-db is needed (scripts/test installs it)"
    );
    let dir = TempDir::new("man");
    let pages = dir.path().join("man1");
    ok(&flotilla(&dir, &["man", pages.to_str().unwrap()]));
    let mut names: Vec<String> = std::fs::read_dir(&pages)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for page in [
        "flotilla.1",
        "flotilla-start.1",
        "flotilla-agent.1",
        "flotilla-server.1",
        "flotilla-list-machines.1",
        "flotilla-token-create.1",
        "flotilla-completion.1",
        "flotilla-version.1",
    ] {
        assert!(names.iter().any(|n| n == page), "{page} in {names:?}");
    }
    // Hidden commands have no page.
    assert!(
        !names
            .iter()
            .any(|n| n.contains("shim") || n.contains("complete"))
    );
    for page in &names {
        let out = Command::new("man")
            .args(["-l", "-P", "cat"])
            .arg(pages.join(page))
            .env("MANWIDTH", "80")
            .env("LC_ALL", "C.UTF-8")
            .output()
            .unwrap();
        let text = stdout(&out);
        assert!(
            out.status.success(),
            "{page}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("NAME"), "{page}: {text}");
        assert!(text.contains("SYNOPSIS"), "{page}: {text}");
    }
    // The same words as --help.
    let page = Command::new("man")
        .args(["-l", "-P", "cat"])
        .arg(pages.join("flotilla-start.1"))
        .env("MANWIDTH", "200")
        .output()
        .unwrap();
    let help = ok(&flotilla(&dir, &["start", "--help"]));
    assert!(help.contains("Schedule and start units"), "{help}");
    assert!(stdout(&page).contains("Schedule and start units"));
    assert!(stdout(&page).contains("--no-block"));
}

#[test]
fn version_prints_release_commit_and_build_date() {
    let dir = TempDir::new("version");
    let text = ok(&flotilla(&dir, &["version"]));
    let long = ok(&flotilla(&dir, &["--version"]));
    assert_eq!(text, long);
    let version = env!("CARGO_PKG_VERSION");
    let prefix = format!("flotilla {version} (commit ");
    assert!(text.starts_with(&prefix), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&flotilla(&dir, &["-o", "json", "version"]))).unwrap();
    assert_eq!(json["version"], version);
    let commit = json["commit"].as_str().unwrap();
    // This test runs from a git checkout: the commit is HEAD's.
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    if head.status.success() {
        assert!(
            stdout(&head).starts_with(commit) && commit.len() == 12,
            "{commit} vs {}",
            stdout(&head)
        );
    } else {
        assert_eq!(commit, "unknown");
    }
    let date = json["buildDate"].as_str().unwrap();
    let d: Vec<&str> = date.split('-').collect();
    assert!(
        d.len() == 3 && d[0].len() == 4 && d[1].len() == 2 && d[2].len() == 2,
        "{date}"
    );
    assert!(text.contains(&format!("{commit}, built {date})")), "{text}");
}
