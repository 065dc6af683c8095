//! Trusted devices: `pedm device enroll|list|approve|revoke` (see `pedm_core::device`).

use super::AppState;
use super::error::{ApiErr, ApiResult};
use super::extract::{Body, Caller, Path, Query};
use crate::tls::client_ca::Peer;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use pedm_api::ErrorBody;
use pedm_api::device::*;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(enroll_device, list_devices))
        .routes(routes!(approve_device))
        .routes(routes!(revoke_device))
}

/// Enrolls the caller's device: a certificate from pedmd's client CA for the key in the CSR
/// (made on the device; it never leaves it). Trusted once an admin approves it. HTTPS only.
#[utoipa::path(post, path = "/devices", tag = "identity", request_body = EnrollDevice,
    responses((status = 201, body = DeviceEnrolled), (status = 400, body = ErrorBody),
        (status = 422, description = "the CSR is not a valid certificate signing request", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "plain HTTP: no device certificates", body = ErrorBody)))]
async fn enroll_device(
    State(s): State<AppState>,
    c: Caller,
    Body(b): Body<EnrollDevice>,
) -> ApiResult<(StatusCode, Json<DeviceEnrolled>)> {
    let hub = s.agents.as_ref();
    let (Some(ca), Some(lifetime)) = (
        hub.and_then(|h| h.tls.client_ca.clone()),
        hub.map(|h| h.tls.device_cert_lifetime_secs),
    ) else {
        return Err(ApiErr::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "this server speaks plain HTTP: devices enroll only over HTTPS",
        ));
    };
    if b.csr.len() > 16 * 1024 {
        return Err(ApiErr::invalid("invalid csr: longer than 16 KiB"));
    }
    let id = hex::encode(pedm_core::token::random_bytes::<8>());
    let issued = ca
        .issue(&b.csr, &Peer::Device(id.clone()), lifetime)
        .map_err(|e| ApiErr::from(pedm_core::Error::unprocessable("csr", e)))?;
    let device =
        s.cp.enroll_device(
            &c.actor,
            &id,
            &b.name,
            b.posture,
            &issued.serial,
            issued.not_after,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(DeviceEnrolled {
            device,
            certificate: issued.cert_pem,
            ca: ca.cert_pem.clone(),
        }),
    ))
}

/// The caller's devices, or with `all=true` everyone's (manage_users).
#[utoipa::path(get, path = "/devices", tag = "identity", params(DeviceQuery),
    responses((status = 200, body = Vec<Device>), (status = 403, body = ErrorBody)))]
async fn list_devices(
    State(s): State<AppState>,
    c: Caller,
    Query(q): Query<DeviceQuery>,
) -> ApiResult<Json<Vec<Device>>> {
    Ok(Json(
        s.cp.list_devices(&c.actor, q.all.unwrap_or(false)).await?,
    ))
}

/// Trusts a device (manage_users; never one's own).
#[utoipa::path(post, path = "/devices/{id}/approve", tag = "identity",
    params(("id" = String, Path)),
    responses((status = 200, body = Device), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn approve_device(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Device>> {
    Ok(Json(s.cp.approve_device(&c.actor, &id).await?))
}

/// Revokes a device (its owner or manage_users): its certificate fails the TLS handshake
/// from then on.
#[utoipa::path(post, path = "/devices/{id}/revoke", tag = "identity",
    params(("id" = String, Path)),
    responses((status = 200, body = Device), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn revoke_device(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Device>> {
    let d = s.cp.revoke_device(&c.actor, &id).await?;
    if let Some(hub) = &s.agents {
        hub.tls.revoked.insert(&format!("device:{}", d.id));
    }
    Ok(Json(d))
}
