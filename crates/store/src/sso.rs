//! Single sign-on state (migration 0010): linked identities, provider-sourced group
//! memberships, SSO sessions and login flows.

use crate::db::{Arg, Conn, Row, args};
use crate::engine::{Engine, backend, insert};
use jiff::Timestamp;
use pedm_core::sso::{SsoFlow, SsoSession, SsoWrite};
use pedm_core::store::StoreError;

fn ts(r: &Row, col: &str) -> Result<Timestamp, StoreError> {
    Timestamp::from_microsecond(r.get(col)?)
        .map_err(|e| StoreError::Corrupt(format!("column {col}: {e}")))
}

fn session(r: &Row) -> Result<SsoSession, StoreError> {
    Ok(SsoSession {
        token_id: r.get("token_id")?,
        provider: r.get("provider")?,
        issuer: r.get("issuer")?,
        subject: r.get("subject")?,
        refresh_token: r.get("refresh_token")?,
        created_at: ts(r, "created_at")?,
    })
}

fn flow(r: &Row) -> Result<SsoFlow, StoreError> {
    Ok(SsoFlow {
        id: r.get("id")?,
        provider: r.get("provider")?,
        kind: r.get("kind")?,
        nonce: r.get("nonce")?,
        redirect_uri: r.get("redirect_uri")?,
        device_code: r.get("device_code")?,
        created_at: ts(r, "created_at")?,
        expires_at: ts(r, "expires_at")?,
    })
}

pub(crate) async fn apply(c: &mut Conn<'_>, w: &SsoWrite) -> Result<(), StoreError> {
    match w {
        SsoWrite::LinkIdentity {
            issuer,
            subject,
            user,
        } => {
            insert(
                c,
                "INSERT INTO sso_identities (issuer, subject, user_name) VALUES ($1, $2, $3)",
                args![issuer, subject, user],
                || StoreError::AlreadyExists(format!("identity {subject} of {issuer} is linked")),
                || StoreError::NotFound(format!("user {user} does not exist")),
            )
            .await
        }
        SsoWrite::MarkIdpGroup { user, group } => {
            insert(
                c,
                "INSERT INTO sso_group_members (user_name, group_name) VALUES ($1, $2) \
                 ON CONFLICT DO NOTHING",
                args![user, group],
                || StoreError::Backend("unexpected duplicate".into()),
                || StoreError::NotFound(format!("user {user} or group {group} does not exist")),
            )
            .await
        }
        SsoWrite::UnmarkIdpGroup { user, group } => {
            c.execute(
                "DELETE FROM sso_group_members WHERE user_name = $1 AND group_name = $2",
                args![user, group],
            )
            .await
            .map_err(backend)?;
            Ok(())
        }
        SsoWrite::InsertSession(s) => {
            insert(
                c,
                "INSERT INTO sso_sessions (token_id, provider, issuer, subject, refresh_token, \
                 created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                args![
                    &s.token_id,
                    &s.provider,
                    &s.issuer,
                    &s.subject,
                    &s.refresh_token,
                    s.created_at
                ],
                || StoreError::AlreadyExists(format!("session {} exists", s.token_id)),
                || StoreError::NotFound(format!("token {} does not exist", s.token_id)),
            )
            .await
        }
        SsoWrite::DeleteSession { token_id } => {
            c.execute(
                "DELETE FROM sso_sessions WHERE token_id = $1",
                args![token_id],
            )
            .await
            .map_err(backend)?;
            Ok(())
        }
        SsoWrite::InsertFlow(f) => {
            insert(
                c,
                "INSERT INTO sso_flows (id, provider, kind, nonce, redirect_uri, device_code, \
                 created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                args![
                    &f.id,
                    &f.provider,
                    &f.kind,
                    &f.nonce,
                    &f.redirect_uri,
                    &f.device_code,
                    f.created_at,
                    f.expires_at
                ],
                || StoreError::AlreadyExists("login flow exists".into()),
                || StoreError::Backend("unexpected foreign key violation".into()),
            )
            .await
        }
        SsoWrite::PurgeFlows { now } => {
            c.execute("DELETE FROM sso_flows WHERE expires_at < $1", args![*now])
                .await
                .map_err(backend)?;
            Ok(())
        }
        SsoWrite::TakeFlow { id } => {
            let n = c
                .execute("DELETE FROM sso_flows WHERE id = $1", args![id])
                .await
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::Conflict(
                    "the login flow is unknown or already finished".into(),
                ));
            }
            Ok(())
        }
    }
}

impl Engine {
    pub(crate) async fn get_sso_identity(
        &self,
        issuer: &str,
        subject: &str,
    ) -> Result<Option<String>, StoreError> {
        self.fetch_optional(
            "SELECT user_name FROM sso_identities WHERE issuer = $1 AND subject = $2",
            args![issuer, subject],
            |r| r.get::<String>("user_name"),
        )
        .await
    }

    pub(crate) async fn get_identities_of(
        &self,
        user: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.fetch_all(
            "SELECT issuer, subject FROM sso_identities WHERE user_name = $1 \
             ORDER BY issuer, subject",
            args![user],
            |r| Ok((r.get::<String>("issuer")?, r.get::<String>("subject")?)),
        )
        .await
    }

    pub(crate) async fn get_sso_session(
        &self,
        token_id: &str,
    ) -> Result<Option<SsoSession>, StoreError> {
        self.fetch_optional(
            "SELECT token_id, provider, issuer, subject, refresh_token, created_at \
             FROM sso_sessions WHERE token_id = $1",
            args![token_id],
            session,
        )
        .await
    }

    pub(crate) async fn get_sso_session_ids(
        &self,
        user: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let (sql, a): (&str, Vec<Arg>) = match user {
            Some(u) => (
                "SELECT s.token_id AS id FROM sso_sessions s JOIN tokens t ON t.id = s.token_id \
                 WHERE t.user_name = $1",
                args![u],
            ),
            None => ("SELECT token_id AS id FROM sso_sessions", vec![]),
        };
        self.fetch_all(sql, a, |r| r.get::<String>("id")).await
    }

    pub(crate) async fn get_sso_groups(&self, user: &str) -> Result<Vec<String>, StoreError> {
        self.fetch_all(
            "SELECT group_name FROM sso_group_members WHERE user_name = $1 ORDER BY group_name",
            args![user],
            |r| r.get::<String>("group_name"),
        )
        .await
    }

    pub(crate) async fn get_sso_flow(&self, id: &str) -> Result<Option<SsoFlow>, StoreError> {
        self.fetch_optional(
            "SELECT id, provider, kind, nonce, redirect_uri, device_code, created_at, expires_at \
             FROM sso_flows WHERE id = $1",
            args![id],
            flow,
        )
        .await
    }
}
