//! External accounts: sponsor and expiry beside the user row (migration 0011).

use crate::db::{Arg, Conn, Row, args};
use crate::engine::{Engine, backend, exists, insert};
use crate::rows::{opt_ts, ts};
use pedm_core::external::{ExternalAccount, ExternalWrite};
use pedm_core::store::StoreError;

const COLS: &str =
    "user_name, sponsor, expires_at, created_at, created_by, notified_at, expired_at";

fn account(r: &Row) -> Result<ExternalAccount, StoreError> {
    Ok(ExternalAccount {
        user: r.get("user_name")?,
        sponsor: r.get("sponsor")?,
        expires_at: ts(r, "expires_at")?,
        created_at: ts(r, "created_at")?,
        created_by: r.get("created_by")?,
        notified_at: opt_ts(r, "notified_at")?,
        expired_at: opt_ts(r, "expired_at")?,
    })
}

/// Why a conditional update of `user`'s record matched nothing.
async fn not_updated(c: &mut Conn<'_>, user: &str, why: &str) -> StoreError {
    match exists(
        c,
        "SELECT 1 FROM external_accounts WHERE user_name = $1",
        args![user],
    )
    .await
    {
        Ok(true) => StoreError::Conflict(format!("external account {user} {why}")),
        Ok(false) => StoreError::NotFound(format!("external account {user} does not exist")),
        Err(e) => e,
    }
}

async fn update(
    c: &mut Conn<'_>,
    sql: &str,
    a: Vec<Arg>,
    user: &str,
    why: &str,
) -> Result<(), StoreError> {
    let n = c.execute(sql, a).await.map_err(backend)?;
    if n == 0 {
        return Err(not_updated(c, user, why).await);
    }
    Ok(())
}

pub(crate) async fn apply(c: &mut Conn<'_>, w: &ExternalWrite) -> Result<(), StoreError> {
    match w {
        ExternalWrite::Insert(a) => {
            insert(
                c,
                &format!(
                    "INSERT INTO external_accounts ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                ),
                args![
                    &a.user,
                    &a.sponsor,
                    a.expires_at,
                    a.created_at,
                    &a.created_by,
                    a.notified_at,
                    a.expired_at
                ],
                || StoreError::AlreadyExists(format!("external account {}", a.user)),
                || StoreError::NotFound(format!("user {} or sponsor {}", a.user, a.sponsor)),
            )
            .await
        }
        ExternalWrite::Extend {
            user,
            seen,
            expires_at,
        } => {
            update(
                c,
                "UPDATE external_accounts SET expires_at = $3, notified_at = NULL, \
                 expired_at = NULL WHERE user_name = $1 AND expires_at = $2",
                args![user, *seen, *expires_at],
                user,
                "was extended by someone else at the same moment",
            )
            .await
        }
        ExternalWrite::Notified {
            user,
            expires_at,
            at,
        } => {
            update(
                c,
                "UPDATE external_accounts SET notified_at = $3 \
                 WHERE user_name = $1 AND expires_at = $2 AND notified_at IS NULL",
                args![user, *expires_at, *at],
                user,
                "was already notified or extended",
            )
            .await
        }
        ExternalWrite::Expired {
            user,
            expires_at,
            at,
        } => {
            update(
                c,
                "UPDATE external_accounts SET expired_at = $3 \
                 WHERE user_name = $1 AND expires_at = $2 AND expired_at IS NULL",
                args![user, *expires_at, *at],
                user,
                "has already expired or was extended",
            )
            .await
        }
    }
}

impl Engine {
    pub(crate) async fn external_account_row(
        &self,
        user: &str,
    ) -> Result<Option<ExternalAccount>, StoreError> {
        let sql = format!("SELECT {COLS} FROM external_accounts WHERE user_name = $1");
        self.fetch_optional(&sql, args![user], account).await
    }

    pub(crate) async fn external_account_rows(&self) -> Result<Vec<ExternalAccount>, StoreError> {
        let sql = format!("SELECT {COLS} FROM external_accounts ORDER BY user_name");
        self.fetch_all(&sql, vec![], account).await
    }
}
