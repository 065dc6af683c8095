//! Trusted devices over HTTP: enrollment (a CSR for a key made on the device), listing,
//! approval by an admin, revocation.

use crate::client::{ApiError, Client};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub use pedm_core::device::{Device, Posture};

/// `POST /devices`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollDevice {
    /// A name for people (`laptop`).
    pub name: String,
    /// PEM certificate signing request for the key made on the device.
    pub csr: String,
    #[serde(default)]
    pub posture: Posture,
}

/// The enrolled device, its certificate and the CA that signed it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeviceEnrolled {
    pub device: Device,
    pub certificate: String,
    pub ca: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeviceQuery {
    /// Everyone's devices (manage_users), not only the caller's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<bool>,
}

impl Client {
    pub async fn enroll_device(&self, body: &EnrollDevice) -> Result<DeviceEnrolled, ApiError> {
        self.send(Method::POST, "/devices", body).await
    }
    pub async fn list_devices(&self, all: bool) -> Result<Vec<Device>, ApiError> {
        self.get_q(
            "/devices",
            &DeviceQuery {
                all: all.then_some(true),
            },
        )
        .await
    }
    pub async fn approve_device(&self, id: &str) -> Result<Device, ApiError> {
        self.send(Method::POST, &format!("/devices/{id}/approve"), &())
            .await
    }
    pub async fn revoke_device(&self, id: &str) -> Result<Device, ApiError> {
        self.send(Method::POST, &format!("/devices/{id}/revoke"), &())
            .await
    }
}
