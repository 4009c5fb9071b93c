//! `Pull=` against the in-memory engine: when the registry is asked, the
//! credentials handed over, the start timeout, and pulls shared through
//! the lock.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use flotilla_proto::container::{ImagePull, PullPolicy};

use super::fake::{Call, FakeRuntime};
use super::pull::{Outcome, Progress, PullError, PullSettings, ensure_image, lock_path};
use super::runtime::{CgroupDriver, PullProgress, RuntimeError};

const IMAGE: &str = "reg.example.com:5000/app:1";

struct Setup {
    dir: tempfile::TempDir,
    runtime: FakeRuntime,
    settings: PullSettings,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let settings = PullSettings {
        lock_dir: dir.path().join("locks"),
        docker_config: Some(dir.path().join("docker")),
    };
    Setup {
        runtime: FakeRuntime::new(CgroupDriver::Cgroupfs, &[]),
        settings,
        dir,
    }
}

fn policy(policy: PullPolicy) -> ImagePull {
    ImagePull {
        policy,
        ..ImagePull::default()
    }
}

async fn ensure(s: &Setup, pull: &ImagePull) -> Result<Outcome, PullError> {
    ensure_image(&s.runtime, IMAGE, pull, &s.settings, async { None }, || {}).await
}

fn pulls(runtime: &FakeRuntime) -> usize {
    runtime
        .calls()
        .iter()
        .filter(|c| matches!(c, Call::Pull(_)))
        .count()
}

#[tokio::test]
async fn missing_pulls_only_an_image_that_is_not_local() {
    let s = setup();
    s.runtime.publish(IMAGE, "sha256:1");
    let pull = policy(PullPolicy::Missing);
    assert_eq!(ensure(&s, &pull).await.unwrap(), Outcome::Pulled);
    assert_eq!(s.runtime.local_digest(IMAGE).as_deref(), Some("sha256:1"));
    s.runtime.publish(IMAGE, "sha256:2");
    assert_eq!(ensure(&s, &pull).await.unwrap(), Outcome::Local);
    assert_eq!(pulls(&s.runtime), 1);
    assert!(
        !s.runtime
            .calls()
            .iter()
            .any(|c| matches!(c, Call::RegistryDigest(_))),
        "a local image is used without asking the registry"
    );
}

#[tokio::test]
async fn always_pulls_every_time() {
    let s = setup();
    s.runtime.add_image(IMAGE, "sha256:1");
    s.runtime.publish(IMAGE, "sha256:2");
    let pull = policy(PullPolicy::Always);
    assert_eq!(ensure(&s, &pull).await.unwrap(), Outcome::Pulled);
    assert_eq!(s.runtime.local_digest(IMAGE).as_deref(), Some("sha256:2"));
    assert_eq!(ensure(&s, &pull).await.unwrap(), Outcome::Pulled);
    assert_eq!(pulls(&s.runtime), 2);
}

#[tokio::test]
async fn newer_pulls_when_the_registrys_digest_differs() {
    let s = setup();
    let pull = policy(PullPolicy::Newer);
    s.runtime.add_image(IMAGE, "sha256:1");
    s.runtime.publish(IMAGE, "sha256:1");
    assert_eq!(ensure(&s, &pull).await.unwrap(), Outcome::UpToDate);
    assert_eq!(pulls(&s.runtime), 0);
    s.runtime.publish(IMAGE, "sha256:2");
    assert_eq!(ensure(&s, &pull).await.unwrap(), Outcome::Pulled);
    assert_eq!(s.runtime.local_digest(IMAGE).as_deref(), Some("sha256:2"));
    // The registry cannot answer: the local image runs.
    s.runtime.fail_next(
        "registry_digest",
        RuntimeError::RegistryUnreachable {
            image: IMAGE.into(),
            message: "connection refused".into(),
        },
    );
    assert_eq!(ensure(&s, &pull).await.unwrap(), Outcome::Local);
    assert_eq!(pulls(&s.runtime), 1);
}

#[tokio::test]
async fn never_uses_only_a_local_image() {
    let s = setup();
    s.runtime.publish(IMAGE, "sha256:1");
    let pull = policy(PullPolicy::Never);
    let e = ensure(&s, &pull).await.unwrap_err();
    assert!(matches!(e, PullError::Never { .. }), "{e}");
    s.runtime.add_image(IMAGE, "sha256:0");
    assert_eq!(ensure(&s, &pull).await.unwrap(), Outcome::Local);
    assert_eq!(pulls(&s.runtime), 0);
}

#[tokio::test(start_paused = true)]
async fn a_pull_that_does_not_end_fails_within_the_start_timeout() {
    let s = setup();
    s.runtime.hang_pulls();
    let started = tokio::time::Instant::now();
    let e = ensure_image(
        &s.runtime,
        IMAGE,
        &policy(PullPolicy::Missing),
        &s.settings,
        async { Some(Duration::from_secs(90)) },
        || {},
    )
    .await
    .unwrap_err();
    assert!(matches!(e, PullError::Timeout { timeout: 90, .. }), "{e}");
    assert!(e.to_string().contains("TimeoutStartSec=90s"), "{e}");
    // Before systemd's own timeout, leaving time to report.
    assert_eq!(started.elapsed(), Duration::from_secs(85));
}

#[tokio::test(start_paused = true)]
async fn a_second_unit_waits_for_the_first_ones_pull() {
    let s = setup();
    s.runtime.publish(IMAGE, "sha256:1");
    std::fs::create_dir_all(&s.settings.lock_dir).unwrap();
    let held = std::fs::File::create(lock_path(&s.settings.lock_dir, IMAGE)).unwrap();
    held.lock().unwrap();
    let pull = policy(PullPolicy::Missing);
    let waiting = ensure(&s, &pull);
    tokio::pin!(waiting);
    // It waits as long as the lock is held.
    tokio::select! {
        _ = &mut waiting => panic!("did not wait for the lock"),
        () = tokio::time::sleep(Duration::from_secs(30)) => {}
    }
    // The first unit's pull ends.
    s.runtime.add_image(IMAGE, "sha256:1");
    held.unlock().unwrap();
    assert_eq!(waiting.await.unwrap(), Outcome::Shared);
    assert_eq!(pulls(&s.runtime), 0, "the image is pulled once");
}

#[test]
fn lock_files_differ_per_image() {
    let dir = Path::new("/run/flotilla/pull");
    let a = lock_path(dir, "a/b:c");
    assert_ne!(a, lock_path(dir, "a_b:c"));
    assert_eq!(a, lock_path(dir, "a/b:c"));
    assert!(a.starts_with(dir));
    assert!(a.to_string_lossy().contains("a_b_c-"), "{}", a.display());
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn credentials_come_from_the_auth_file_else_the_docker_configuration() {
    let s = setup();
    s.runtime.publish(IMAGE, "sha256:1");
    let config = s.dir.path().join("docker/config.json");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(
        &config,
        format!(
            r#"{{"auths": {{"reg.example.com:5000": {{"auth": "{}"}}}}}}"#,
            b64("host:hostpw")
        ),
    )
    .unwrap();
    let always = policy(PullPolicy::Always);
    ensure(&s, &always).await.unwrap();
    let auth = s.runtime.last_auth().unwrap();
    assert_eq!(
        (auth.username.as_str(), auth.password.as_str()),
        ("host", "hostpw")
    );
    assert_eq!(auth.server, "reg.example.com:5000");
    assert!(!format!("{auth:?}").contains("hostpw"));

    let unit_file = s.dir.path().join("unit-auth.json");
    std::fs::write(
        &unit_file,
        format!(
            r#"{{"auths": {{"https://reg.example.com:5000": {{"auth": "{}"}}}}}}"#,
            b64("unit:unitpw")
        ),
    )
    .unwrap();
    let with_file = ImagePull {
        policy: PullPolicy::Always,
        auth_file: Some(unit_file.to_string_lossy().into_owned()),
        ..ImagePull::default()
    };
    ensure(&s, &with_file).await.unwrap();
    assert_eq!(s.runtime.last_auth().unwrap().username, "unit");

    // A registry the files have nothing for: no credentials.
    std::fs::write(&config, "{}").unwrap();
    ensure(&s, &always).await.unwrap();
    assert_eq!(s.runtime.last_auth(), None);
}

#[tokio::test]
async fn a_refused_pull_without_credentials_says_so() {
    let s = setup();
    s.runtime.fail_next(
        "pull",
        RuntimeError::Pull {
            image: IMAGE.into(),
            message: "Client sent an HTTP request to an HTTPS server.".into(),
        },
    );
    let e = ensure(&s, &policy(PullPolicy::Missing))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("this host has no credentials for registry reg.example.com:5000"),
        "{e}"
    );
    assert!(e.contains("docker/config.json"), "{e}");
}

#[test]
fn progress_is_a_line_per_layer_state_not_per_tick() {
    let mut p = Progress::default();
    let msg = |id: Option<&str>, status: &str| PullProgress {
        id: id.map(str::to_owned),
        status: status.to_owned(),
    };
    let lines: Vec<String> = [
        msg(Some("1"), "Pulling from app"),
        msg(Some("l1"), "Pulling fs layer"),
        msg(Some("l2"), "Pulling fs layer"),
        msg(Some("l1"), "Downloading"),
        msg(Some("l1"), "Downloading"),
        msg(Some("l2"), "Downloading"),
        msg(Some("l1"), "Downloading"),
        msg(Some("l1"), "Pull complete"),
        msg(Some("l2"), "Pull complete"),
        msg(None, "Digest: sha256:1"),
        msg(None, "Status: Downloaded newer image for app:1"),
    ]
    .iter()
    .filter_map(|m| p.line(m))
    .collect();
    assert_eq!(
        lines,
        [
            "1: Pulling from app",
            "l1: Pulling fs layer",
            "l2: Pulling fs layer",
            "l1: Downloading",
            "l2: Downloading",
            "l1: Pull complete",
            "l2: Pull complete",
            "Digest: sha256:1",
            "Status: Downloaded newer image for app:1",
        ]
    );
}
