//! SSH certificates over HTTP: a grant's user certificate, host certificates, the CA keys and
//! the KRL (see `pedm_core::ssh`). The CA keys and the KRL are public, like a CRL: hosts
//! fetch them without a token.

use super::AppState;
use super::error::ApiResult;
use super::extract::{Body, Caller, Path};
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use pedm_api::ErrorBody;
use pedm_api::ssh::*;
use pedm_core::ssh::CertKind;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// A host certificate's validity when none is asked.
const DEFAULT_HOST_CERT_VALIDITY: &str = "30d";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(issue_user_certificate))
        .routes(routes!(sign_host_key))
        .routes(routes!(ca_keys))
        .routes(routes!(krl))
}

/// A certificate for the caller's grant on an `ssh` target, for a public key of theirs:
/// valid for the grant's window, for the role's run-as login; key id = the grant id.
#[utoipa::path(post, path = "/grants/{id}/ssh-certificate", tag = "grants",
    request_body = IssueSshCertificate, params(("id" = Uuid, Path)),
    responses((status = 201, body = SshCertificateIssued), (status = 400, body = ErrorBody),
        (status = 403, description = "someone else's grant, or a grant not in force", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, description = "not an ssh target, no run-as, or an unusable key", body = ErrorBody)))]
async fn issue_user_certificate(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<Uuid>,
    Body(b): Body<IssueSshCertificate>,
) -> ApiResult<(StatusCode, Json<SshCertificateIssued>)> {
    let issued =
        s.cp.issue_ssh_user_certificate(&c.actor, id, &b.public_key)
            .await?;
    let (address, port) = (issued.address, issued.port);
    let host_pattern = if port == 22 {
        address.clone()
    } else {
        format!("[{address}]:{port}")
    };
    let known_hosts =
        s.cp.ssh_ca_keys(CertKind::Host)?
            .into_iter()
            .map(|k| format!("@cert-authority {host_pattern} {k}"))
            .collect();
    Ok((
        StatusCode::CREATED,
        Json(SshCertificateIssued {
            certificate: issued.certificate,
            record: issued.record,
            login: issued.login,
            address,
            port,
            known_hosts,
        }),
    ))
}

/// Signs a host's public key with the host CA, for `HostCertificate` in sshd_config
/// (needs `manage_targets`).
#[utoipa::path(post, path = "/ssh/host-certificates", tag = "targets",
    request_body = SignHostKey,
    responses((status = 201, body = HostCertificateIssued), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn sign_host_key(
    State(s): State<AppState>,
    c: Caller,
    Body(b): Body<SignHostKey>,
) -> ApiResult<(StatusCode, Json<HostCertificateIssued>)> {
    let validity = b.validity.as_deref().unwrap_or(DEFAULT_HOST_CERT_VALIDITY);
    let secs = super::routes::parse_duration_field("validity", validity)?;
    let (certificate, record) =
        s.cp.sign_ssh_host_key(&c.actor, &b.public_key, b.principals, secs)
            .await?;
    Ok((
        StatusCode::CREATED,
        Json(HostCertificateIssued {
            certificate,
            record,
        }),
    ))
}

/// The SSH CA public keys, the signing one first (no token needed): `user` for sshd's
/// `TrustedUserCAKeys`, `host` for clients' `@cert-authority` lines.
#[utoipa::path(get, path = "/ssh/ca", tag = "targets", security(()),
    responses((status = 200, body = SshCaKeys)))]
async fn ca_keys(State(s): State<AppState>) -> ApiResult<Json<SshCaKeys>> {
    Ok(Json(SshCaKeys {
        user: s.cp.ssh_ca_keys(CertKind::User)?,
        host: s.cp.ssh_ca_keys(CertKind::Host)?,
    }))
}

/// The OpenSSH KRL (binary, for sshd's `RevokedKeys`; no token needed): every certificate
/// still valid whose grant ended early, by serial and key id. Made on each call, so a
/// revocation is in it at once.
#[utoipa::path(get, path = "/ssh/krl", tag = "targets", security(()),
    responses((status = 200, description = "the KRL", content_type = "application/octet-stream")))]
async fn krl(State(s): State<AppState>) -> ApiResult<impl IntoResponse> {
    let body = s.cp.ssh_krl().await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    ))
}
