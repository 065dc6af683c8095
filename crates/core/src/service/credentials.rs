//! Short-lived target credentials for a grant's holder (`pedm aws credentials`): issued by the
//! target's provisioner for the grant's remaining time, to the holder only, while the grant
//! is in force, each issue an audit event (`grant.credentials_issued`, with what was issued
//! but never the secret).

use super::*;
use crate::lock::LockKind;
use crate::provisioning::{CredentialsForm, FailureKind, GrantCredentials};

impl ControlPlane {
    /// `actor`'s own grant `grant_id`, in force now and with neither its holder nor its target
    /// locked; anything else is refused and recorded under `action` (a missing grant is
    /// `NotFound`). What the holder may then be handed (credentials, certificates) is the
    /// caller's to check.
    pub(super) async fn holders_grant_in_force(
        &self,
        actor: &Actor,
        grant_id: Uuid,
        action: &str,
    ) -> Result<Grant> {
        let refused = |why: String| self.refuse(actor, action, subject("grant", grant_id), why);
        let grant = match self.store.grant(grant_id).await? {
            Some(g) => g.as_of(self.now()),
            None => return Err(Error::NotFound(format!("grant {grant_id}"))),
        };
        if grant.user != actor.user {
            return Err(refused(format!(
                "grant {grant_id} belongs to {}, not {}",
                grant.user, actor.user
            ))
            .await);
        }
        if grant.state != GrantState::Active {
            return Err(
                refused(format!("grant {grant_id} is {}, not in force", grant.state)).await,
            );
        }
        for (kind, name) in [
            (LockKind::User, grant.user.as_str()),
            (LockKind::Host, grant.target.as_str()),
        ] {
            if let Some(l) = self.lock_on(kind, name).await? {
                return Err(refused(l.refusal()).await);
            }
        }
        Ok(grant)
    }

    /// Credentials (or a console sign-in, by `form`) for `actor`'s grant `grant_id` from its
    /// target. Refused (and recorded)
    /// for someone else's grant, a grant not in force or not yet switched on, or a lock on
    /// the user or target; `Unprocessable` where the target issues none for the role;
    /// `Upstream` where the target's API failed or refused.
    pub async fn issue_grant_credentials(
        &self,
        actor: &Actor,
        grant_id: Uuid,
        form: CredentialsForm,
    ) -> Result<GrantCredentials> {
        let now = self.now();
        let grant = self
            .holders_grant_in_force(actor, grant_id, "grant.credentials")
            .await?;
        let refused =
            |why: String| self.refuse(actor, "grant.credentials", subject("grant", grant_id), why);
        let Some(port) = self
            .provisioning
            .as_ref()
            .filter(|p| p.handles(&grant.target))
        else {
            return Err(Error::unprocessable(
                "grant",
                format!(
                    "target {} has no provisioner: it issues no credentials",
                    grant.target
                ),
            ));
        };
        // Whatever the role switches on in the target must be there before credentials
        // that may rely on it are handed out; a credentials-only role switches nothing on.
        if port.role_provisioned(&grant).is_ok() && grant.provision_state != ProvisionState::Active
        {
            return Err(refused(format!(
                "grant {grant_id} is {} in its target, not yet in force there",
                grant.provision_state
            ))
            .await);
        }
        let issued = match port.credentials(&grant, form, now).await {
            Ok(c) => c,
            Err(f) => {
                return Err(match f.kind {
                    FailureKind::Invalid => Error::unprocessable("grant", f.message),
                    FailureKind::Unreachable | FailureKind::Refused => {
                        Error::Upstream(format!("target {}: {}", grant.target, f.message))
                    }
                });
            }
        };
        let ev = self
            .event(
                actor,
                "grant.credentials_issued",
                subject("grant", grant.id),
            )
            .data(json!({
                "target": grant.target,
                "role": grant.role,
                "kind": issued.kind,
                "expires_at": issued.expires_at,
                "detail": issued.detail,
            }));
        self.store.commit(Changeset::new().event(ev)).await?;
        Ok(issued)
    }
}
