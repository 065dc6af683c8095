//! Trusted devices: the machine a person's `pedm` runs on, enrolled with a key made there and a
//! certificate from pedmd's client CA (`urn:pedm:device:<id>`), trusted once an admin approves
//! it. Requests that come over a connection with that certificate, from the device's owner,
//! carry `context.device` (id, trusted, enrolled_at, os and the posture the device reported), so
//! policy can ask for a trusted device; a token used from another machine carries none.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the device said about itself when it enrolled (self-reported: the certificate proves
/// which device, not how it is configured).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Posture {
    /// `linux`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// `PRETTY_NAME` of `/etc/os-release` on Linux.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    /// The root file system is on an encrypted (dm-crypt) device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_encrypted: Option<bool>,
    /// A screen lock is configured (unknown on most Linux set-ups: absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screen_lock: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Device {
    /// Random, 16 hex digits.
    pub id: String,
    /// The user who enrolled it; only their requests get its trust.
    pub owner: String,
    pub name: String,
    pub posture: Posture,
    pub cert_serial: String,
    pub cert_not_after: Timestamp,
    pub enrolled_at: Timestamp,
    pub approved_at: Option<Timestamp>,
    pub approved_by: Option<String>,
    pub revoked_at: Option<Timestamp>,
}

impl Device {
    /// Approved and not revoked.
    pub fn trusted(&self) -> bool {
        self.approved_at.is_some() && self.revoked_at.is_none()
    }

    /// What policy sees as `context.device` (the claims map of a request's context).
    pub fn context(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert("id".into(), self.id.clone());
        m.insert("trusted".into(), self.trusted().to_string());
        m.insert("managed".into(), self.trusted().to_string());
        m.insert(
            "enrolled_at".into(),
            self.enrolled_at.as_second().to_string(),
        );
        let p = &self.posture;
        if let Some(v) = &p.os {
            m.insert("os".into(), v.clone());
        }
        if let Some(v) = &p.os_version {
            m.insert("os_version".into(), v.clone());
        }
        if let Some(v) = p.disk_encrypted {
            m.insert("disk_encrypted".into(), v.to_string());
        }
        if let Some(v) = p.screen_lock {
            m.insert("screen_lock".into(), v.to_string());
        }
        m
    }
}

/// Row changes about devices (see [`crate::store::Write::Device`]).
#[derive(Debug, Clone)]
pub enum DeviceWrite {
    /// Fails with AlreadyExists if the id is taken, NotFound if the owner is absent.
    Insert(Device),
    /// Fails with Conflict unless it is neither approved nor revoked; NotFound if absent.
    Approve {
        id: String,
        at: Timestamp,
        by: String,
    },
    /// Fails with Conflict if it is revoked already; NotFound if absent.
    Revoke { id: String, at: Timestamp },
}
