//! Credentials, joining machines, removing them, the audit log and the
//! cluster CA: `/v1/tokens`, `/v1/certs`, `/v1/agent/join`,
//! `DELETE /v1/machines/{id}`, `/v1/audit`, `/v1/whoami`, `/v1/ca`.

use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use flotilla_proto::trust::{
    AuditPage, CertCreate, CertIssued, CredentialInfo, CredentialList, JoinRequest, Role,
    TokenCreate, TokenCreated, WhoAmI,
};
use flotilla_scheduler::control::ControlPlane;
use flotilla_scheduler::trust::token::{ID_HEX_LEN, hex, random_bytes};
use flotilla_scheduler::trust::{JoinString, TrustError, now_ms};
use serde::Deserialize;

use super::extract::{CallerOf, JsonBody, MachinePath, PageParams, QueryParams};
use super::{ApiError, AppState};

/// How long a client certificate is valid when its request says nothing.
pub const DEFAULT_CERT_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// `GET /v1/whoami`: the caller's credential.
pub(super) async fn whoami(CallerOf(caller): CallerOf) -> Json<WhoAmI> {
    Json(WhoAmI {
        id: caller.id,
        name: caller.name,
        role: caller.role,
        machine_id: caller.machine,
    })
}

/// `GET /v1/tokens`: every credential (tokens, certificates, machines),
/// never a secret.
pub(super) async fn list_tokens<C: ControlPlane>(
    State(s): State<AppState<C>>,
) -> Result<Json<CredentialList>, ApiError> {
    Ok(Json(CredentialList {
        credentials: s.trust.credentials.list().await?,
    }))
}

/// `POST /v1/tokens`: 201 with the token, shown this once.
pub(super) async fn create_token<C: ControlPlane>(
    State(s): State<AppState<C>>,
    CallerOf(caller): CallerOf,
    JsonBody(create): JsonBody<TokenCreate>,
) -> Result<(StatusCode, Json<TokenCreated>), ApiError> {
    let (credential, token) = s.trust.credentials.create_token(&create, &caller).await?;
    let join = (credential.role == Role::Join)
        .then(|| JoinString::format(&token, s.trust.ca.fingerprint()));
    Ok((
        StatusCode::CREATED,
        Json(TokenCreated {
            credential,
            token: token.expose(),
            join,
        }),
    ))
}

/// `DELETE /v1/tokens/{id}`: revokes a token or certificate; answers with
/// what was revoked.
pub(super) async fn revoke_token<C: ControlPlane>(
    State(s): State<AppState<C>>,
    Path(id): Path<String>,
) -> Result<Json<CredentialInfo>, ApiError> {
    let well_formed = id.len() == ID_HEX_LEN && id.bytes().all(|b| b.is_ascii_hexdigit());
    if !well_formed {
        return Err(ApiError::InvalidPath(format!(
            "a credential id is {ID_HEX_LEN} hex digits (see flotilla token list)"
        )));
    }
    Ok(Json(s.trust.credentials.revoke(&id).await?))
}

/// `POST /v1/certs`: signs a client certificate for the request's key;
/// 201.
pub(super) async fn create_cert<C: ControlPlane>(
    State(s): State<AppState<C>>,
    CallerOf(caller): CallerOf,
    JsonBody(create): JsonBody<CertCreate>,
) -> Result<(StatusCode, Json<CertIssued>), ApiError> {
    if create.csr_pem.len() > 16 * 1024 {
        return Err(ApiError::BadRequest(
            "a certificate signing request is at most 16 KiB".into(),
        ));
    }
    let ttl = create
        .ttl_ms
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_CERT_TTL);
    if ttl.is_zero() {
        return Err(ApiError::BadRequest("a ttl must be positive".into()));
    }
    let not_after = SystemTime::now()
        .checked_add(ttl)
        .ok_or_else(|| ApiError::BadRequest("the ttl is too long".into()))?;
    // The serial number is the credential's id: a positive integer with no
    // leading zero byte, 16 hex digits.
    let mut serial = random_bytes(ID_HEX_LEN / 2).map_err(TrustError::from)?;
    serial[0] = (serial[0] & 0x7f) | 0x01;
    let id = hex(&serial);
    let expires_ms = now_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
    let credential = s
        .trust
        .credentials
        .create_certificate(&id, &create.name, create.role, expires_ms, &caller)
        .await?;
    let signed = s.trust.ca.sign_client(
        &create.csr_pem,
        &serial,
        &credential.name,
        create.role,
        not_after,
    );
    let certificate_pem = match signed {
        Ok(pem) => pem,
        Err(e) => {
            // Nothing was issued: take the record back.
            let _ = s.trust.credentials.revoke(&id).await;
            return Err(ApiError::BadRequest(e.to_string()));
        }
    };
    Ok((
        StatusCode::CREATED,
        Json(CertIssued {
            credential,
            certificate_pem,
            ca_pem: s.trust.ca.cert_pem().to_owned(),
        }),
    ))
}

/// `POST /v1/agent/join`: exchanges the caller's join token for the
/// credential of the machine in the body; 201.
pub(super) async fn join<C: ControlPlane>(
    State(s): State<AppState<C>>,
    CallerOf(caller): CallerOf,
    JsonBody(request): JsonBody<JoinRequest>,
) -> Result<(StatusCode, Json<TokenCreated>), ApiError> {
    let (credential, token) = s
        .trust
        .credentials
        .join(&caller, &request.machine_id)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(TokenCreated {
            credential,
            token: token.expose(),
            join: None,
        }),
    ))
}

/// `DELETE /v1/machines/{id}`: the machine leaves the cluster (its units
/// are placed elsewhere) and its credential is revoked; 204.
pub(super) async fn remove_machine<C: ControlPlane>(
    State(s): State<AppState<C>>,
    MachinePath(id): MachinePath,
    CallerOf(caller): CallerOf,
) -> Result<StatusCode, ApiError> {
    s.trust.credentials.remove_machine(&id).await?;
    super::events::machine_removed(&s, &caller, &id);
    Ok(StatusCode::NO_CONTENT)
}

/// The query of `GET /v1/audit`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct AuditParams {
    since_ms: Option<String>,
    next_page_token: Option<String>,
    limit: Option<String>,
}

/// `GET /v1/audit?sinceMs=&nextPageToken=&limit=`: the audit log, oldest
/// first.
pub(super) async fn audit<C: ControlPlane>(
    State(s): State<AppState<C>>,
    QueryParams(params): QueryParams<AuditParams>,
) -> Result<Json<AuditPage>, ApiError> {
    let since = match params.since_ms.as_deref() {
        None | Some("") => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            ApiError::InvalidQuery(format!(
                "sinceMs must be milliseconds since the Unix epoch, not {v:?}"
            ))
        })?),
    };
    let page = PageParams {
        next_page_token: params.next_page_token,
        limit: params.limit,
    }
    .page()?;
    if page
        .token
        .as_deref()
        .is_some_and(|t| t.len() > 64 || t.contains('/'))
    {
        return Err(ApiError::InvalidQuery(
            "nextPageToken is not one this server gave".into(),
        ));
    }
    Ok(Json(
        s.trust
            .audit
            .list(since, page.token.as_deref(), page.limit.unwrap_or(100))
            .await?,
    ))
}

/// `GET /v1/ca`: the cluster CA's certificate (public), PEM.
pub(super) async fn ca<C: ControlPlane>(State(s): State<AppState<C>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        s.trust.ca.cert_pem().to_owned(),
    )
}
