//! Plugs the `pedm-provision` provisioners into the core's [`ProvisioningPort`]: one
//! provisioner per configured target (`[provision.targets.<name>]`, with its drift rules
//! `remove_drift` and `keep`) and each role's settings (`[provision.roles.<target>.<role>]`).

use async_trait::async_trait;
use pedm_core::model::{Grant, StandingPrivilege};
use pedm_core::provisioning::{
    CredentialsForm, DriftAction, FailureKind, GrantCredentials, ProvisionFailure, Provisioned,
    ProvisioningPort,
};
use pedm_provision::{GrantSpec, ProvisionError, Provisioner};
use std::collections::BTreeMap;
use std::sync::Arc;

pub struct Provisioners {
    by_target: BTreeMap<String, Arc<dyn Provisioner>>,
    /// target → role → settings (`GrantSpec::settings`).
    roles: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
}

impl Provisioners {
    pub fn new(
        by_target: BTreeMap<String, Arc<dyn Provisioner>>,
        roles: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
    ) -> Self {
        Provisioners { by_target, roles }
    }

    pub fn is_empty(&self) -> bool {
        self.by_target.is_empty()
    }

    fn get(&self, target: &str) -> Result<&Arc<dyn Provisioner>, ProvisionFailure> {
        self.by_target.get(target).ok_or_else(|| ProvisionFailure {
            kind: FailureKind::Invalid,
            message: format!("no provisioner is configured for target {target}"),
        })
    }

    fn spec(&self, g: &Grant, run_as: Option<&str>) -> GrantSpec {
        GrantSpec {
            grant_id: g.id,
            user: g.user.clone(),
            target: g.target.clone(),
            role: g.role.clone(),
            run_as: run_as.map(str::to_string),
            expires_at: g.expires_at,
            settings: self
                .roles
                .get(&g.target)
                .and_then(|r| r.get(&g.role))
                .cloned()
                .unwrap_or(serde_json::Value::Null),
        }
    }
}

fn failure(e: ProvisionError) -> ProvisionFailure {
    let kind = match &e {
        ProvisionError::Unreachable(_) => FailureKind::Unreachable,
        ProvisionError::Refused(_) => FailureKind::Refused,
        ProvisionError::Invalid(_) => FailureKind::Invalid,
    };
    ProvisionFailure {
        kind,
        message: e.to_string(),
    }
}

#[async_trait]
impl ProvisioningPort for Provisioners {
    fn handles(&self, target: &str) -> bool {
        self.by_target.contains_key(target)
    }

    fn targets(&self) -> Vec<String> {
        self.by_target.keys().cloned().collect()
    }

    async fn grant(
        &self,
        grant: &Grant,
        run_as: Option<&str>,
    ) -> Result<Provisioned, ProvisionFailure> {
        let p = self.get(&grant.target)?;
        let out = p.grant(&self.spec(grant, run_as)).await.map_err(failure)?;
        Ok(Provisioned {
            secret: out.secret,
            detail: out.detail,
        })
    }

    async fn revoke(&self, grant: &Grant, run_as: Option<&str>) -> Result<(), ProvisionFailure> {
        let p = self.get(&grant.target)?;
        p.revoke(&self.spec(grant, run_as)).await.map_err(failure)
    }

    fn keeps_expiry(&self, grant: &Grant) -> bool {
        self.get(&grant.target)
            .is_ok_and(|p| p.keeps_expiry(&self.spec(grant, None)))
    }

    async fn extend(&self, grant: &Grant) -> Result<String, ProvisionFailure> {
        let p = self.get(&grant.target)?;
        p.extend(&self.spec(grant, None)).await.map_err(failure)
    }

    async fn observe(&self, grant: &Grant) -> Result<(bool, String), ProvisionFailure> {
        let p = self.get(&grant.target)?;
        let o = p.observe(&self.spec(grant, None)).await.map_err(failure)?;
        Ok((o.present, o.detail))
    }

    async fn credentials(
        &self,
        grant: &Grant,
        form: CredentialsForm,
        now: jiff::Timestamp,
    ) -> Result<GrantCredentials, ProvisionFailure> {
        let p = self.get(&grant.target)?;
        let spec = self.spec(grant, None);
        let c = match form {
            CredentialsForm::Tools => p.credentials(&spec, now).await,
            CredentialsForm::Console => p.console_sign_in(&spec, now).await,
        }
        .map_err(failure)?;
        Ok(GrantCredentials {
            kind: c.kind.to_string(),
            expires_at: c.expires_at,
            value: c.value,
            detail: c.detail,
        })
    }

    async fn discover(&self, target: &str) -> Result<Vec<StandingPrivilege>, ProvisionFailure> {
        let p = self.get(target)?;
        let found = p.discover().await.map_err(failure)?;
        Ok(found
            .into_iter()
            .map(|s| StandingPrivilege {
                account: s.account,
                privilege: s.privilege,
                source: s.source,
            })
            .collect())
    }

    fn grant_account(&self, grant: &Grant) -> Option<String> {
        self.get(&grant.target)
            .ok()?
            .account(&self.spec(grant, None))
    }

    fn role_provisioned(&self, grant: &Grant) -> Result<(), String> {
        match self.get(&grant.target) {
            Ok(p) => p.provisions(&self.spec(grant, None)),
            Err(f) => Err(f.message),
        }
    }

    fn grant_privilege(&self, grant: &Grant) -> Option<String> {
        self.get(&grant.target)
            .ok()?
            .privilege(&self.spec(grant, None))
    }

    fn drift_action(&self, target: &str, p: &StandingPrivilege) -> DriftAction {
        let Ok(prov) = self.get(target) else {
            return DriftAction::Report;
        };
        if !prov.removes_drift() {
            return DriftAction::Report;
        }
        match prov.removable(&standing(p)) {
            Ok(()) => DriftAction::Remove,
            Err(why) => DriftAction::Keep(why),
        }
    }

    async fn remove_standing(
        &self,
        target: &str,
        p: &StandingPrivilege,
    ) -> Result<String, ProvisionFailure> {
        let prov = self.get(target)?;
        prov.remove_standing(&standing(p)).await.map_err(failure)
    }
}

fn standing(p: &StandingPrivilege) -> pedm_provision::StandingPrivilege {
    pedm_provision::StandingPrivilege {
        account: p.account.clone(),
        privilege: p.privilege.clone(),
        source: p.source.clone(),
    }
}

/// pedmd's OIDC issuer as the provisioners see it.
pub struct IdTokens(pub Arc<pedm_pki::oidc::OidcIssuer>);

impl pedm_provision::IdTokenSigner for IdTokens {
    fn issuer(&self) -> &str {
        self.0.issuer()
    }
    fn sign(&self, claims: serde_json::Map<String, serde_json::Value>) -> Result<String, String> {
        self.0.sign(claims).map_err(|e| e.to_string())
    }
}
