//! SCIM clients' tokens and the users they manage (migration 0018).

use crate::db::{Conn, Row, args};
use crate::engine::{Engine, backend, exists, insert};
use crate::rows::{corrupt, opt_ts, ts};
use pedm_core::scim::{ScimGroupLink, ScimLink, ScimToken, ScimWrite};
use pedm_core::store::StoreError;

const TOKEN_COLS: &str = "id, name, secret_hash, created_at, created_by, revoked_at";
const LINK_COLS: &str = "user_name, client, external_id, deleted_at";
const GROUP_COLS: &str = "group_name, client, external_id";

fn token(r: &Row) -> Result<ScimToken, StoreError> {
    let hash: String = r.get("secret_hash")?;
    let mut secret_hash = [0u8; 32];
    hex::decode_to_slice(&hash, &mut secret_hash).map_err(|e| corrupt("secret_hash", e))?;
    Ok(ScimToken {
        id: r.get("id")?,
        name: r.get("name")?,
        secret_hash,
        created_at: ts(r, "created_at")?,
        created_by: r.get("created_by")?,
        revoked_at: opt_ts(r, "revoked_at")?,
    })
}

fn link(r: &Row) -> Result<ScimLink, StoreError> {
    Ok(ScimLink {
        user: r.get("user_name")?,
        client: r.get("client")?,
        external_id: r.get("external_id")?,
        deleted_at: opt_ts(r, "deleted_at")?,
    })
}

fn group_link(r: &Row) -> Result<ScimGroupLink, StoreError> {
    Ok(ScimGroupLink {
        group: r.get("group_name")?,
        client: r.get("client")?,
        external_id: r.get("external_id")?,
    })
}

pub(crate) async fn apply(c: &mut Conn<'_>, w: &ScimWrite) -> Result<(), StoreError> {
    match w {
        ScimWrite::InsertToken(t) => {
            insert(
                c,
                &format!("INSERT INTO scim_tokens ({TOKEN_COLS}) VALUES ($1, $2, $3, $4, $5, $6)"),
                args![
                    &t.id,
                    &t.name,
                    hex::encode(t.secret_hash),
                    t.created_at,
                    &t.created_by,
                    t.revoked_at
                ],
                || StoreError::AlreadyExists(format!("SCIM token {}", t.id)),
                || StoreError::Backend("unexpected foreign key violation".into()),
            )
            .await
        }
        ScimWrite::RevokeToken { id, at } => {
            let n = c
                .execute(
                    "UPDATE scim_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                    args![id, *at],
                )
                .await
                .map_err(backend)?;
            if n == 0 {
                return Err(
                    match exists(c, "SELECT 1 FROM scim_tokens WHERE id = $1", args![id]).await? {
                        true => StoreError::Conflict(format!("SCIM token {id} is already revoked")),
                        false => StoreError::NotFound(format!("SCIM token {id}")),
                    },
                );
            }
            Ok(())
        }
        ScimWrite::Link(l) => {
            c.execute(
                "DELETE FROM scim_users WHERE user_name = $1",
                args![&l.user],
            )
            .await
            .map_err(backend)?;
            insert(
                c,
                &format!("INSERT INTO scim_users ({LINK_COLS}) VALUES ($1, $2, $3, $4)"),
                args![&l.user, &l.client, &l.external_id, l.deleted_at],
                || StoreError::AlreadyExists(format!("SCIM link of {}", l.user)),
                || StoreError::NotFound(format!("user {}", l.user)),
            )
            .await
        }
        ScimWrite::LinkGroup(l) => {
            c.execute(
                "DELETE FROM scim_groups WHERE group_name = $1",
                args![&l.group],
            )
            .await
            .map_err(backend)?;
            insert(
                c,
                &format!("INSERT INTO scim_groups ({GROUP_COLS}) VALUES ($1, $2, $3)"),
                args![&l.group, &l.client, &l.external_id],
                || StoreError::AlreadyExists(format!("SCIM link of group {}", l.group)),
                || StoreError::NotFound(format!("group {}", l.group)),
            )
            .await
        }
        ScimWrite::UnlinkGroup { group } => {
            c.execute(
                "DELETE FROM scim_groups WHERE group_name = $1",
                args![group],
            )
            .await
            .map_err(backend)?;
            Ok(())
        }
    }
}

impl Engine {
    pub(crate) async fn scim_group_link_row(
        &self,
        group: &str,
    ) -> Result<Option<ScimGroupLink>, StoreError> {
        let sql = format!("SELECT {GROUP_COLS} FROM scim_groups WHERE group_name = $1");
        self.fetch_optional(&sql, args![group], group_link).await
    }
    pub(crate) async fn scim_group_link_rows(&self) -> Result<Vec<ScimGroupLink>, StoreError> {
        let sql = format!("SELECT {GROUP_COLS} FROM scim_groups ORDER BY group_name");
        self.fetch_all(&sql, vec![], group_link).await
    }
    pub(crate) async fn scim_token_row(&self, id: &str) -> Result<Option<ScimToken>, StoreError> {
        let sql = format!("SELECT {TOKEN_COLS} FROM scim_tokens WHERE id = $1");
        self.fetch_optional(&sql, args![id], token).await
    }
    pub(crate) async fn scim_token_rows(&self) -> Result<Vec<ScimToken>, StoreError> {
        let sql = format!("SELECT {TOKEN_COLS} FROM scim_tokens ORDER BY created_at, id");
        self.fetch_all(&sql, vec![], token).await
    }
    pub(crate) async fn scim_link_row(&self, user: &str) -> Result<Option<ScimLink>, StoreError> {
        let sql = format!("SELECT {LINK_COLS} FROM scim_users WHERE user_name = $1");
        self.fetch_optional(&sql, args![user], link).await
    }
    pub(crate) async fn scim_link_rows(&self) -> Result<Vec<ScimLink>, StoreError> {
        let sql = format!("SELECT {LINK_COLS} FROM scim_users ORDER BY user_name");
        self.fetch_all(&sql, vec![], link).await
    }
}
