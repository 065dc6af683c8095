//! Trusted devices (see [`crate::device`]): enrollment by their owner, approval by an admin
//! other than the owner, revocation, and what a request's context says about its device.

use super::*;
use crate::device::{Device, DeviceWrite, Posture};
use crate::workload::valid_claim;

/// Longest device name.
const MAX_DEVICE_NAME: usize = 64;

impl ControlPlane {
    /// Records a device `actor` enrolled (its certificate already issued by the server).
    pub async fn enroll_device(
        &self,
        actor: &Actor,
        id: &str,
        name: &str,
        posture: Posture,
        cert_serial: &str,
        cert_not_after: Timestamp,
    ) -> Result<Device> {
        let Some(name) = trimmed("name", Some(name.to_string()), MAX_DEVICE_NAME)? else {
            return Err(Error::invalid("name", "is empty"));
        };
        for (field, v) in [("os", &posture.os), ("os_version", &posture.os_version)] {
            if v.as_deref().is_some_and(|v| !valid_claim(v)) {
                return Err(Error::invalid(
                    field,
                    "must be printable, at most 256 characters",
                ));
            }
        }
        let now = self.now();
        let d = Device {
            id: id.into(),
            owner: actor.user.clone(),
            name,
            posture,
            cert_serial: cert_serial.into(),
            cert_not_after,
            enrolled_at: now,
            approved_at: None,
            approved_by: None,
            revoked_at: None,
        };
        let cs = Changeset::new()
            .write(Write::Device(DeviceWrite::Insert(d.clone())))
            .event(
                self.event(actor, "device.enrolled", subject("device", id))
                    .data(json!({
                        "name": d.name, "owner": d.owner, "posture": d.posture,
                        "serial": cert_serial, "not_after": cert_not_after,
                    })),
            );
        self.store.commit(cs).await?;
        Ok(d)
    }

    async fn load_device(&self, id: &str) -> Result<Device> {
        self.store
            .device(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("device {id}")))
    }

    /// Trusts a device (manage_users). Nobody approves their own device.
    pub async fn approve_device(&self, actor: &Actor, id: &str) -> Result<Device> {
        self.require_admin(actor, AdminAction::ManageUsers, "device.approve")
            .await?;
        let d = self.load_device(id).await?;
        if d.owner == actor.user {
            return Err(self
                .refuse(
                    actor,
                    "device.approve",
                    subject("device", id),
                    format!("{} cannot approve their own device", actor.user),
                )
                .await);
        }
        let cs = Changeset::new()
            .write(Write::Device(DeviceWrite::Approve {
                id: id.into(),
                at: self.now(),
                by: actor.user.clone(),
            }))
            .event(
                self.event(actor, "device.approved", subject("device", id))
                    .data(json!({ "owner": d.owner, "name": d.name })),
            );
        self.store.commit(cs).await.map_err(|e| match e {
            StoreError::Conflict(m) => Error::Conflict(m),
            e => e.into(),
        })?;
        self.load_device(id).await
    }

    /// Revokes a device (its owner, or manage_users).
    pub async fn revoke_device(&self, actor: &Actor, id: &str) -> Result<Device> {
        let d = self.load_device(id).await?;
        if d.owner != actor.user {
            self.require_admin(actor, AdminAction::ManageUsers, "device.revoke")
                .await?;
        }
        let cs = Changeset::new()
            .write(Write::Device(DeviceWrite::Revoke {
                id: id.into(),
                at: self.now(),
            }))
            .event(
                self.event(actor, "device.revoked", subject("device", id))
                    .data(json!({ "owner": d.owner, "name": d.name })),
            );
        self.store.commit(cs).await.map_err(|e| match e {
            StoreError::Conflict(m) => Error::Conflict(m),
            e => e.into(),
        })?;
        self.load_device(id).await
    }

    /// `actor`'s devices, or with `all` (manage_users) everyone's.
    pub async fn list_devices(&self, actor: &Actor, all: bool) -> Result<Vec<Device>> {
        if all {
            self.require_admin(actor, AdminAction::ManageUsers, "device.list")
                .await?;
            return Ok(self.store.devices(None).await?);
        }
        Ok(self.store.devices(Some(&actor.user)).await?)
    }

    /// Ids of the revoked devices (for the TLS handshake's refusal list).
    pub async fn revoked_devices(&self) -> Result<Vec<String>> {
        Ok(self
            .store
            .devices(None)
            .await?
            .into_iter()
            .filter(|d| d.revoked_at.is_some())
            .map(|d| d.id)
            .collect())
    }

    /// `context.device` of a request `actor` made over a connection that presented device
    /// `id`'s certificate: its claims when `actor` owns it, nothing otherwise (a device
    /// certificate used with someone else's token is recorded).
    pub async fn device_context(
        &self,
        actor: &Actor,
        id: Option<&str>,
    ) -> Result<BTreeMap<String, String>> {
        let Some(id) = id else {
            return Ok(BTreeMap::new());
        };
        match self.store.device(id).await? {
            Some(d) if d.owner == actor.user => Ok(d.context()),
            Some(d) => {
                let why = format!(
                    "device {id} belongs to {}, not {}: the request carries no device",
                    d.owner, actor.user
                );
                let _ = self
                    .refuse(actor, "device.use", subject("device", id), why)
                    .await;
                Ok(BTreeMap::new())
            }
            None => Ok(BTreeMap::new()),
        }
    }
}
