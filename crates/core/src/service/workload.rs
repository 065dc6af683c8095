//! Token exchange for workload identities (RFC 8693): a platform token the server verified
//! becomes a short-lived pedm token for the trust's service user, carrying what the platform
//! asserted (see [`crate::workload`]).

use super::*;
use crate::workload::WorkloadIdentity;

impl ControlPlane {
    /// Mints a token of `ttl_secs` for `user` carrying `identity`. The user is created on first
    /// use (never an admin); an existing user that is an admin, disabled or an external account
    /// is refused: a workload never acts with a person's powers.
    pub async fn exchange_workload_token(
        &self,
        identity: WorkloadIdentity,
        user: &str,
        ttl_secs: i64,
    ) -> Result<(TokenRecord, String)> {
        validate_name("user", user)?;
        for attempt in 0..2 {
            let now = self.now();
            let mut cs = Changeset::new();
            match self.store.user(user).await? {
                Some(u) if u.admin || u.disabled => {
                    let why = format!(
                        "the workload user {user} is {}; a workload token never acts as one",
                        if u.admin {
                            "an administrator"
                        } else {
                            "disabled"
                        }
                    );
                    return Err(self.workload_refuse(&identity.trust, &why).await);
                }
                Some(u) if self.store.external_account(&u.name).await?.is_some() => {
                    let why = format!("the workload user {user} is an external account");
                    return Err(self.workload_refuse(&identity.trust, &why).await);
                }
                Some(_) => {}
                None => {
                    cs = cs.write(Write::InsertUser(User {
                        name: user.to_string(),
                        display_name: Some(format!("workload ({})", identity.trust)),
                        email: None,
                        admin: false,
                        disabled: false,
                        created_at: now,
                    }));
                    cs = cs.event(
                        NewAuditEvent::new(
                            now,
                            SYSTEM_ACTOR,
                            "user.created",
                            subject("user", user),
                        )
                        .data(json!({ "admin": false, "workload": identity.trust })),
                    );
                }
            }
            let expires_at = now
                .checked_add(SignedDuration::from_secs(ttl_secs.max(1)))
                .map_err(|_| Error::invalid("token_lifetime", "is too large"))?;
            let minted = token::mint();
            let rec = TokenRecord {
                id: minted.id.clone(),
                user: user.to_string(),
                description: Some(format!("workload token ({})", identity.trust)),
                secret_hash: minted.secret_hash,
                created_at: now,
                expires_at: Some(expires_at),
                revoked_at: None,
                workload: Some(identity.clone()),
                agent: false,
            };
            let cs = cs.write(Write::InsertToken(rec.clone())).event(
                NewAuditEvent::new(now, user, "token.exchanged", subject("token", &rec.id))
                    .data(json!({ "user": user, "expires_at": expires_at, "workload": identity })),
            );
            match self.commit_identity(cs).await {
                Ok(_) => return Ok((rec, minted.token)),
                // Another exchange created the user at the same moment: it exists now.
                Err(StoreError::AlreadyExists(_)) if attempt == 0 => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Conflict(format!(
            "the workload user {user} kept changing; try again"
        )))
    }

    /// Records a refused exchange (`token.exchange`, denied, with the reason; never the
    /// token) and returns the error to answer with.
    pub async fn workload_refuse(&self, trust: &str, reason: &str) -> Error {
        let ev = NewAuditEvent::new(
            self.now(),
            "anonymous",
            "token.exchange",
            subject("trust", trust),
        )
        .outcome(Outcome::Denied)
        .data(json!({ "trust": trust, "reason": reason }));
        if let Err(e) = self.store.commit(Changeset::new().event(ev)).await {
            tracing::error!(error = %e, "could not record a refused token exchange");
        }
        Error::Unauthenticated(format!("token exchange refused: {reason}"))
    }
}
