//! Pulls through Docker's Engine API: the image calls of
//! [`super::docker::Docker`], and what Docker's answers mean.
//!
//! Docker pulls with the credentials it is handed (`X-Registry-Auth`);
//! it does not read the host's `config.json` itself (the CLI does), so
//! [`super::auth`] finds them. Docker answers a failed pull with an HTTP
//! status and a message, or with an error in the progress stream;
//! [`classify`] turns both into the pull's [`RuntimeError`]s.

use bollard::auth::DockerCredentials;
use bollard::errors::Error as BollardError;
use bollard::query_parameters::CreateImageOptions;
use futures_util::StreamExt;

use super::runtime::{BoxStream, LocalImage, PullProgress, RegistryAuth, RuntimeError};

/// The reference with `:latest` when it names neither a tag nor a digest
/// (without a tag, Docker pulls every tag of the repository).
pub fn with_tag(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last.contains(':') {
        image.to_owned()
    } else {
        format!("{image}:latest")
    }
}

fn credentials(auth: &RegistryAuth) -> DockerCredentials {
    DockerCredentials {
        username: Some(auth.username.clone()).filter(|u| !u.is_empty()),
        password: Some(auth.password.clone()).filter(|p| !p.is_empty()),
        identitytoken: auth.identity_token.clone(),
        serveraddress: Some(auth.server.clone()),
        ..Default::default()
    }
}

/// What a failed pull (or registry lookup) of `image` means, from Docker's
/// HTTP status (if it answered with one) and message.
pub fn classify(image: &str, status: Option<u16>, message: String) -> RuntimeError {
    let lower = message.to_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    let image = image.to_owned();
    if status == Some(404) || has(&["manifest unknown", "name unknown", "not found: manifest"]) {
        RuntimeError::ImageNotInRegistry { image, message }
    } else if matches!(status, Some(401 | 403))
        || has(&[
            "unauthorized",
            "authentication required",
            "denied: ",
            "access denied",
            "access to the resource is denied",
            "forbidden",
        ])
    {
        RuntimeError::RegistryDenied { image, message }
    } else if has(&[
        "dial tcp",
        "connection refused",
        "no such host",
        "i/o timeout",
        "no route to host",
        "network is unreachable",
        "tls handshake timeout",
        "x509:",
        "connection reset",
    ]) {
        RuntimeError::RegistryUnreachable { image, message }
    } else {
        RuntimeError::Pull { image, message }
    }
}

fn pull_error(image: &str, e: BollardError) -> RuntimeError {
    match e {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => classify(image, Some(status_code), message),
        BollardError::DockerStreamError { error } => classify(image, None, error),
        other => RuntimeError::Unavailable(format!("pulling image {image}: {other}")),
    }
}

pub(super) async fn local_image(
    client: &bollard::Docker,
    image: &str,
) -> Result<Option<LocalImage>, RuntimeError> {
    match client.inspect_image(image).await {
        Ok(found) => Ok(Some(LocalImage {
            id: found.id.unwrap_or_default(),
            repo_digests: found.repo_digests.unwrap_or_default(),
        })),
        Err(BollardError::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(e) => Err(RuntimeError::Unavailable(format!(
            "inspecting image {image}: {e}"
        ))),
    }
}

pub(super) async fn registry_digest(
    client: &bollard::Docker,
    image: &str,
    auth: Option<&RegistryAuth>,
) -> Result<String, RuntimeError> {
    let image = with_tag(image);
    let found = client
        .inspect_registry_image(&image, auth.map(credentials))
        .await
        .map_err(|e| pull_error(&image, e))?;
    found.descriptor.digest.ok_or_else(|| RuntimeError::Pull {
        image,
        message: "the registry's answer has no digest".to_owned(),
    })
}

pub(super) fn pull(
    client: &bollard::Docker,
    image: &str,
    auth: Option<RegistryAuth>,
) -> BoxStream<Result<PullProgress, RuntimeError>> {
    let image = with_tag(image);
    let options = CreateImageOptions {
        from_image: Some(image.clone()),
        ..Default::default()
    };
    let stream = client
        .create_image(Some(options), None, auth.as_ref().map(credentials))
        .map(move |item| match item {
            Ok(info) => Ok(PullProgress {
                id: info.id,
                status: info.status.unwrap_or_default(),
            }),
            Err(e) => Err(pull_error(&image, e)),
        });
    Box::pin(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_get_a_tag() {
        assert_eq!(with_tag("nginx"), "nginx:latest");
        assert_eq!(with_tag("127.0.0.1:5000/app"), "127.0.0.1:5000/app:latest");
        assert_eq!(with_tag("127.0.0.1:5000/app:1"), "127.0.0.1:5000/app:1");
        assert_eq!(with_tag("app@sha256:00"), "app@sha256:00");
    }

    /// Docker 20.10's answers, as seen against a distribution registry.
    #[test]
    fn dockers_answers_are_told_apart() {
        let kind = |status, message: &str| match classify("r/app:1", status, message.to_owned()) {
            RuntimeError::ImageNotInRegistry { .. } => "missing",
            RuntimeError::RegistryDenied { .. } => "denied",
            RuntimeError::RegistryUnreachable { .. } => "unreachable",
            RuntimeError::Pull { .. } => "other",
            _ => "?",
        };
        assert_eq!(
            kind(
                Some(404),
                "manifest for 127.0.0.1:5599/app:nope not found: manifest unknown: manifest unknown"
            ),
            "missing"
        );
        assert_eq!(
            kind(Some(500), "unauthorized: authentication required"),
            "denied"
        );
        assert_eq!(
            kind(Some(401), "unauthorized: authentication required"),
            "denied"
        );
        assert_eq!(
            kind(
                Some(500),
                "Get \"http://127.0.0.1:1/v2/\": dial tcp 127.0.0.1:1: connect: connection refused"
            ),
            "unreachable"
        );
        assert_eq!(kind(None, "unexpected EOF"), "other");
        // Docker Hub's answer for a repository that is not there.
        assert_eq!(
            kind(
                Some(404),
                "pull access denied for nope, repository does not exist or may require 'docker login': denied: requested access to the resource is denied"
            ),
            "missing"
        );
        assert_eq!(
            kind(
                Some(500),
                "denied: requested access to the resource is denied"
            ),
            "denied"
        );
        // A local failure is not the registry refusing.
        assert_eq!(
            kind(
                Some(500),
                "failed to register layer: open /var/lib/docker/x: permission denied"
            ),
            "other"
        );
    }
}
