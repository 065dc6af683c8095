//! SSH certificates (see [`crate::ssh`]): a grant's holder gets a user certificate for a key
//! of theirs, an admin gets a host key signed, anyone gets the CA keys and the KRL.

use super::*;
use crate::ssh::{
    CertKind, CertRequest, MAX_HOST_PRINCIPALS, MAX_PUBLIC_KEY, RevokedCert, SshCa, SshCaError,
    SshCertificate, valid_host_name,
};

/// A user certificate issued for a grant, with what the client needs to use it.
#[derive(Debug, Clone)]
pub struct IssuedUserCert {
    pub certificate: String,
    pub record: SshCertificate,
    pub login: String,
    /// Where to connect: the target's `address` label, else its name.
    pub address: String,
    /// The target's `port` label, else 22.
    pub port: u16,
}

/// Where an `ssh` target is reached: its `address` and `port` labels, or its name and 22.
fn endpoint(target: &Target) -> Result<(String, u16)> {
    let address = target
        .labels
        .get("address")
        .cloned()
        .unwrap_or_else(|| target.name.clone());
    let port = match target.labels.get("port") {
        None => 22,
        Some(p) => p.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
            Error::unprocessable(
                "target",
                format!(
                    "target {} has the label port={:?}, which is not a port number",
                    target.name,
                    crate::text::terminal_safe(p)
                ),
            )
        })?,
    };
    Ok((address, port))
}

impl ControlPlane {
    /// Grants on `ssh` targets get certificates from `ca`; host certificates last at most
    /// `max_host_cert_secs`.
    pub fn with_ssh_ca(mut self, ca: Arc<dyn SshCa>, max_host_cert_secs: i64) -> Self {
        self.ssh_ca = Some(ca);
        self.max_host_cert_secs = max_host_cert_secs;
        self
    }

    fn ssh_ca(&self) -> Result<&Arc<dyn SshCa>> {
        self.ssh_ca
            .as_ref()
            .ok_or_else(|| Error::NotFound("this server has no SSH certificate authority".into()))
    }

    /// The CA keys (newest first) of `kind`.
    pub fn ssh_ca_keys(&self, kind: CertKind) -> Result<Vec<String>> {
        Ok(self.ssh_ca()?.public_keys(kind))
    }

    /// The KRL as of now: every user certificate still valid whose grant ended early.
    pub async fn ssh_krl(&self) -> Result<Vec<u8>> {
        let ca = self.ssh_ca()?;
        let now = self.now();
        let revoked: Vec<RevokedCert> = self
            .store
            .ssh_certificates_to_revoke(now)
            .await?
            .into_iter()
            .map(|c| RevokedCert {
                serial: c.serial,
                key_id: c.key_id,
                ca_fingerprint: c.ca_fingerprint,
            })
            .collect();
        ca.krl(&revoked, now).map_err(ca_error)
    }

    /// Signs `public_key` for `actor`'s grant `grant_id` on an `ssh` target: valid for the
    /// grant's window, for the role's run-as login, with the role's SSH settings. Refusals
    /// (someone else's grant, a grant not in force, a lock) are audit events.
    pub async fn issue_ssh_user_certificate(
        &self,
        actor: &Actor,
        grant_id: Uuid,
        public_key: &str,
    ) -> Result<IssuedUserCert> {
        let ca = self.ssh_ca()?.clone();
        check_public_key(public_key)?;
        let grant = self
            .holders_grant_in_force(actor, grant_id, "ssh.certificate")
            .await?;
        let refused =
            |why: String| self.refuse(actor, "ssh.certificate", subject("grant", grant_id), why);
        if grant.provision_state != ProvisionState::Active {
            return Err(refused(format!(
                "grant {grant_id} is {} in its target, not in force there",
                grant.provision_state
            ))
            .await);
        }
        let (Some(target), Some(role)) = (
            self.store.target(&grant.target).await?,
            self.store.role(&grant.target, &grant.role).await?,
        ) else {
            return Err(Error::NotFound(format!(
                "grant {grant_id}: its target or role is gone"
            )));
        };
        if target.kind != TargetKind::Ssh {
            return Err(Error::unprocessable(
                "grant",
                format!(
                    "target {} is of kind {}: only ssh targets get SSH certificates",
                    target.name, target.kind
                ),
            ));
        }
        let (address, port) = endpoint(&target)?;
        let Some(login) = role.run_as.clone() else {
            return Err(Error::unprocessable(
                "grant",
                format!(
                    "role {} on {} has no run_as: the login the certificate is for",
                    role.name, target.name
                ),
            ));
        };
        let mut critical_options = vec![];
        if let Some(c) = &role.ssh.force_command {
            critical_options.push(("force-command".to_string(), c.clone()));
        }
        if role.ssh.bind_source_address {
            let request = self.store.request(grant.request_id).await?;
            let Some(addr) = request.and_then(|r| r.context.source_addr) else {
                return Err(refused(format!(
                    "role {} binds certificates to the request's address, and grant \
                     {grant_id}'s request has none",
                    role.name
                ))
                .await);
            };
            critical_options.push(("source-address".to_string(), addr));
        }
        let req = CertRequest {
            kind: CertKind::User,
            public_key: public_key.trim().to_string(),
            key_id: grant.id.to_string(),
            serial: crate::ssh::new_serial(),
            principals: vec![login.clone()],
            valid_after: grant.starts_at,
            valid_before: grant.expires_at,
            critical_options,
            extensions: role.ssh.extensions(),
        };
        let extra = json!({
            "target": grant.target, "role": grant.role,
            "critical_options": req.critical_options
                .iter()
                .map(|(k, v)| json!({ "name": k, "value": v }))
                .collect::<Vec<_>>(),
            "extensions": req.extensions,
        });
        let (certificate, record) = self
            .sign_and_record(
                &ca,
                actor,
                &req,
                Some(grant.id),
                "ssh.certificate_issued",
                subject("grant", grant.id),
                extra,
            )
            .await?;
        Ok(IssuedUserCert {
            certificate,
            record,
            login,
            address,
            port,
        })
    }
    /// Signs a host key for `principals` (the names clients use), valid from now for
    /// `validity_secs` (needs `manage_targets`).
    pub async fn sign_ssh_host_key(
        &self,
        actor: &Actor,
        public_key: &str,
        principals: Vec<String>,
        validity_secs: i64,
    ) -> Result<(String, SshCertificate)> {
        self.require_admin(actor, AdminAction::ManageTargets, "ssh.host_certificate")
            .await?;
        let ca = self.ssh_ca()?.clone();
        check_public_key(public_key)?;
        if principals.is_empty() {
            return Err(Error::invalid("principals", "is empty: name the host"));
        }
        if principals.len() > MAX_HOST_PRINCIPALS {
            return Err(Error::invalid(
                "principals",
                format!("has more than {MAX_HOST_PRINCIPALS} names"),
            ));
        }
        if let Some(p) = principals.iter().find(|p| !valid_host_name(p)) {
            return Err(Error::invalid(
                "principals",
                format!(
                    "{:?} is not a host name or address",
                    crate::text::terminal_safe(p)
                ),
            ));
        }
        // The bound is the server's setting, not in the API's schema: 422.
        if validity_secs <= 0 || validity_secs > self.max_host_cert_secs {
            return Err(Error::unprocessable(
                "validity",
                format!(
                    "must be more than 0 and at most {}",
                    crate::duration::format_duration(self.max_host_cert_secs)
                ),
            ));
        }
        let now = self.now();
        let req = CertRequest {
            kind: CertKind::Host,
            public_key: public_key.trim().to_string(),
            key_id: format!("host:{}", principals[0]),
            serial: crate::ssh::new_serial(),
            principals,
            valid_after: now,
            valid_before: now + jiff::SignedDuration::from_secs(validity_secs),
            critical_options: vec![],
            extensions: vec![],
        };
        let about = subject("ssh_host", &req.principals[0]);
        self.sign_and_record(
            &ca,
            actor,
            &req,
            None,
            "ssh.host_certificate_issued",
            about,
            json!({}),
        )
        .await
    }

    /// Signs `req`, then records the certificate and its audit event (`action` about
    /// `about`, with what the certificate says and `extra`) in one commit.
    #[allow(clippy::too_many_arguments)]
    async fn sign_and_record(
        &self,
        ca: &Arc<dyn SshCa>,
        actor: &Actor,
        req: &CertRequest,
        grant_id: Option<Uuid>,
        action: &str,
        about: Option<String>,
        extra: serde_json::Value,
    ) -> Result<(String, SshCertificate)> {
        let signed = ca.sign(req).map_err(ca_error)?;
        let record = SshCertificate {
            serial: req.serial,
            kind: req.kind,
            grant_id,
            key_id: req.key_id.clone(),
            principals: req.principals.clone(),
            key_fingerprint: signed.key_fingerprint,
            ca_fingerprint: signed.ca_fingerprint,
            valid_after: req.valid_after,
            valid_before: req.valid_before,
            issued_by: actor.user.clone(),
            issued_at: self.now(),
        };
        let mut data = json!({
            "serial": record.serial.to_string(),
            "principals": record.principals,
            "key_fingerprint": record.key_fingerprint,
            "ca_fingerprint": record.ca_fingerprint,
            "valid_after": record.valid_after,
            "valid_before": record.valid_before,
        });
        if let (Some(m), Some(e)) = (data.as_object_mut(), extra.as_object()) {
            m.extend(e.clone());
        }
        let cs = Changeset::new()
            .write(Write::SshCertificate(record.clone()))
            .event(self.event(actor, action, about).data(data));
        self.store.commit(cs).await?;
        Ok((signed.certificate, record))
    }
}

fn check_public_key(k: &str) -> Result<()> {
    if k.trim().is_empty() {
        return Err(Error::invalid("public_key", "is empty"));
    }
    if k.len() > MAX_PUBLIC_KEY {
        return Err(Error::invalid(
            "public_key",
            format!("is longer than {MAX_PUBLIC_KEY} bytes"),
        ));
    }
    if k.trim().contains(['\n', '\r', '\0']) {
        return Err(Error::invalid("public_key", "must be one line"));
    }
    Ok(())
}

fn ca_error(e: SshCaError) -> Error {
    match e {
        SshCaError::BadKey(m) => Error::unprocessable("public_key", m),
        SshCaError::Signing(m) => Error::Internal(format!("SSH certificate: {m}")),
    }
}
