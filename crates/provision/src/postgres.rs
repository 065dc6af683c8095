//! PostgreSQL: grant a role to a login, or create a short-lived login.
//!
//! Role settings (`GrantSpec::settings`):
//!
//! ```json
//! {"mode": "grant_role", "pg_role": "readwrite", "login": "{user}", "terminate_sessions": false}
//! {"mode": "temp_login", "pg_role": "readwrite", "terminate_sessions": true}
//! ```
//!
//! - `grant_role`: `GRANT "<pg_role>" TO "<login>"`; revoke is `REVOKE`. `login` is a
//!   template (`{user}` = the pedm user name), default the pedm user name; the login must
//!   already exist. With `terminate_sessions` (default **false**: it ends every session of
//!   that login, not only the privileged ones) the login's sessions are terminated after the
//!   `REVOKE` — needed if a session may have done `SET ROLE "<pg_role>"`, which a `REVOKE`
//!   does not undo.
//! - `temp_login`: `CREATE ROLE "pedm_<user>_<8 hex of the grant id>" LOGIN PASSWORD …
//!   VALID UNTIL '<expires_at>' IN ROLE "<pg_role>"`; the generated password (32 characters
//!   of `[A-Za-z0-9]`) is returned once in [`GrantOutcome::secret`]. The server only ever
//!   receives its SCRAM-SHA-256 verifier, so the password is not in any server log. Granting
//!   again (a retry) resets the password and expiry. Revoke: `ALTER ROLE … NOLOGIN`, then
//!   (with `terminate_sessions`, default **true** here) `pg_terminate_backend` of the login's
//!   sessions (waiting up to 5 s each), then `DROP ROLE`; if the login came to own objects
//!   in the admin connection's database they are reassigned to the admin role first
//!   (objects in other databases make the drop fail: `Refused`). `VALID UNTIL` only stops
//!   password authentication; it is a backstop, not the revocation.
//!
//! Identifiers (logins, roles) must be plain lower-case identifiers, `[a-z_][a-z0-9_$]{0,62}`;
//! anything else is refused with [`ProvisionError::Invalid`] before any SQL is sent (names
//! are *not* lower-cased for you). For `temp_login` the login is derived from the pedm user
//! name: lower-cased, `.` and `-` turned into `_`, cut to 49 characters. They are quoted
//! server-side as well (`format('%I')`): identifiers and passwords cannot be bind parameters
//! in `CREATE ROLE`/`GRANT`, so each statement is built by `SELECT format(…)` with the names
//! bound as parameters, then run with the simple query protocol (nothing cached).
//!
//! Drift removal ([`Provisioner::remove_standing`]) takes away role memberships only
//! (`member:<role>` from discovery): `REVOKE "<role>" FROM "<account>"`, then checks with
//! `pg_has_role` that the account no longer holds the role (one held through another role is
//! `Refused`, naming the roles it comes through). Attributes (`superuser`, `createrole`, …)
//! are only reported. Never touched: the bootstrap superuser (OID 10), the login of the
//! admin URL and whatever the admin connection runs as (`current_user`, `session_user`),
//! and built-in `pg_*` roles; the first is known to [`Provisioner::removable`] once
//! [`Provisioner::discover`] has run, and all are checked again in the target before any
//! `REVOKE`.
//!
//! The admin URL is never logged or shown with its password ([`redact_url`]); statement
//! logging of the client library is off.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgConnection, PgPool, Row};

use crate::config::ConfigError;
use crate::{
    GrantOutcome, GrantSpec, Observed, ProvisionError, Provisioner, StandingPrivilege,
    check_settings, login_from_settings, scram, setting_bool, setting_str,
};

/// `kind = "postgres"` in the server configuration.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// Admin connection URL (`postgres://admin:pw@host:5432/db`): a superuser, or a role
    /// with CREATEROLE, ADMIN OPTION on the granted roles and membership in
    /// `pg_signal_backend`.
    pub url: String,
    /// Roles whose members [`Provisioner::discover`] reports (directly or indirectly), next
    /// to superusers and roles with CREATEROLE, CREATEDB, BYPASSRLS or REPLICATION.
    #[serde(default = "default_privileged_roles")]
    pub privileged_roles: Vec<String>,
    /// Connection and statement timeout (`"10s"` or seconds).
    #[serde(default = "default_timeout", with = "pedm_notify::duration")]
    pub timeout: Duration,
}

fn default_privileged_roles() -> Vec<String> {
    [
        "pg_execute_server_program",
        "pg_read_server_files",
        "pg_write_server_files",
        "pg_read_all_data",
        "pg_write_all_data",
        "pg_signal_backend",
    ]
    .map(String::from)
    .to_vec()
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl PostgresConfig {
    pub fn new(url: impl Into<String>) -> Self {
        PostgresConfig {
            url: url.into(),
            privileged_roles: default_privileged_roles(),
            timeout: default_timeout(),
        }
    }
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &redact_url(&self.url))
            .field("privileged_roles", &self.privileged_roles)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The URL with any password replaced by `***` (in the user-info part and in a
/// `password=` query parameter).
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let auth_end = out[rest_start..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| rest_start + i);
        if let Some(at) = out[rest_start..auth_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                let start = rest_start + colon + 1;
                out.replace_range(start..rest_start + at, "***");
            }
        }
    }
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect();
        out = format!("{head}{}", query.join("&"));
    }
    out
}

/// A plain PostgreSQL identifier: `[a-z_][a-z0-9_$]{0,62}`.
fn check_ident(what: &str, s: &str) -> Result<(), ProvisionError> {
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'$');
    if ok {
        Ok(())
    } else {
        Err(ProvisionError::invalid(format!(
            "{what} {s:?} is not a plain PostgreSQL identifier ([a-z_][a-z0-9_$]{{0,62}})"
        )))
    }
}

/// `pedm_<user>_<8 hex>` for a temporary login.
fn temp_login_name(g: &GrantSpec) -> Result<String, ProvisionError> {
    let name = crate::temp_account_name(g, 49)?;
    check_ident("temporary login", &name)?;
    Ok(name)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Plan {
    GrantRole {
        login: String,
        pg_role: String,
        terminate: bool,
    },
    TempLogin {
        login: String,
        pg_role: String,
        terminate: bool,
    },
}

fn plan(g: &GrantSpec) -> Result<Plan, ProvisionError> {
    check_settings(g, &["mode", "pg_role", "login", "terminate_sessions"])?;
    let pg_role = setting_str(g, "pg_role")?
        .ok_or_else(|| ProvisionError::invalid("settings.pg_role is required"))?
        .to_string();
    check_ident("pg_role", &pg_role)?;
    match setting_str(g, "mode")? {
        Some("grant_role") => {
            let login = login_from_settings(g)?;
            check_ident("login", &login)?;
            Ok(Plan::GrantRole {
                login,
                pg_role,
                terminate: setting_bool(g, "terminate_sessions", false)?,
            })
        }
        Some("temp_login") => {
            if setting_str(g, "login")?.is_some() {
                return Err(ProvisionError::invalid(
                    "settings.login does not apply to mode temp_login (the login is generated)",
                ));
            }
            Ok(Plan::TempLogin {
                login: temp_login_name(g)?,
                pg_role,
                terminate: setting_bool(g, "terminate_sessions", true)?,
            })
        }
        Some(other) => Err(ProvisionError::invalid(format!(
            "unknown settings.mode {other:?} (expected grant_role or temp_login)"
        ))),
        None => Err(ProvisionError::invalid(
            "settings.mode is required (grant_role or temp_login)",
        )),
    }
}

/// Sorts a database error into retry-later or permanent.
fn classify(what: &str, e: sqlx::Error) -> ProvisionError {
    crate::classify_sqlx(what, e, |db| {
        let code = db.code().map(|c| c.to_string()).unwrap_or_default();
        let transient = code.starts_with("08") // connection exception
            || code.starts_with("53") // insufficient resources
            || code.starts_with("57P") // admin/crash shutdown, cannot connect now
            || code == "57014" // statement timeout
            || code == "55P03" // lock not available
            || code == "40001" // serialization failure
            || code == "40P01"; // deadlock
        (format!("SQLSTATE {code}"), transient)
    })
}

/// Builds a statement server-side with `format(fmt, args…)` (`%I` identifiers, `%L`
/// literals, all bound as parameters) and runs it with the simple query protocol.
async fn exec_formatted(
    conn: &mut PgConnection,
    fmt: &'static str,
    args: &[&str],
) -> Result<(), sqlx::Error> {
    let mut select = String::from("SELECT format($1::text");
    for i in 0..args.len() {
        select.push_str(&format!(", ${}::text", i + 2));
    }
    select.push(')');
    let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(select)).bind(fmt);
    for a in args {
        q = q.bind(*a);
    }
    let sql: String = q.fetch_one(&mut *conn).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// `member` is directly a member of `role`.
async fn is_direct_member(
    conn: &mut PgConnection,
    role: &str,
    member: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_auth_members m \
         JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles u ON u.oid = m.member \
         WHERE r.rolname = $1 AND u.rolname = $2)",
    )
    .bind(role)
    .bind(member)
    .fetch_one(&mut *conn)
    .await
}

async fn role_exists(conn: &mut PgConnection, role: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
        .bind(role)
        .fetch_one(&mut *conn)
        .await
}

/// Terminates the sessions of `login` (waiting up to 5 s for each to end); how many.
async fn terminate_sessions(conn: &mut PgConnection, login: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) FROM pg_stat_activity \
         WHERE usename = $1 AND pid <> pg_backend_pid()",
    )
    .bind(login)
    .fetch_one(&mut *conn)
    .await
}

/// Grants and revokes PostgreSQL roles through an admin connection.
pub struct PostgresProvisioner {
    pool: PgPool,
    redacted_url: String,
    privileged_roles: Vec<String>,
    /// The login of the admin URL: drift removal never touches it.
    admin_login: String,
    /// Roles drift removal never touches, as last seen by [`Provisioner::discover`]: the
    /// bootstrap superuser and the roles the admin connection runs as, with why.
    protected: std::sync::Mutex<std::collections::BTreeMap<String, &'static str>>,
}

impl std::fmt::Debug for PostgresProvisioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresProvisioner")
            .field("url", &self.redacted_url)
            .finish_non_exhaustive()
    }
}

impl PostgresProvisioner {
    /// Checks the configuration; connects lazily (a target that is down now does not stop
    /// the server from starting). Call inside a Tokio runtime.
    pub fn new(config: &PostgresConfig) -> Result<Self, ConfigError> {
        let redacted_url = redact_url(&config.url);
        if !(config.url.starts_with("postgres://") || config.url.starts_with("postgresql://")) {
            return Err(ConfigError(format!(
                "PostgreSQL URL {redacted_url} must start with postgres:// or postgresql://"
            )));
        }
        let opts: PgConnectOptions = config
            .url
            .parse()
            .map_err(|e| ConfigError(format!("invalid PostgreSQL URL {redacted_url}: {e}")))?;
        for r in &config.privileged_roles {
            check_ident("privileged role", r).map_err(|e| ConfigError(e.to_string()))?;
        }
        if config.timeout.is_zero() {
            return Err(ConfigError("timeout must be greater than zero".into()));
        }
        let admin_login = opts.get_username().to_string();
        let ms = config.timeout.as_millis().to_string();
        let opts = opts
            .application_name("pedm-provision")
            .options([
                ("statement_timeout", ms.as_str()),
                ("lock_timeout", ms.as_str()),
            ])
            // Statements may carry password verifiers: never log them.
            .disable_statement_logging();
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .min_connections(0)
            .acquire_timeout(config.timeout)
            .idle_timeout(Duration::from_secs(60))
            .test_before_acquire(true)
            .connect_lazy_with(opts);
        Ok(PostgresProvisioner {
            pool,
            redacted_url,
            privileged_roles: config.privileged_roles.clone(),
            admin_login,
            protected: Default::default(),
        })
    }

    async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>, ProvisionError> {
        self.pool
            .acquire()
            .await
            .map_err(|e| classify(&format!("connecting to {}", self.redacted_url), e))
    }
}

#[async_trait]
impl Provisioner for PostgresProvisioner {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn grant(&self, g: &GrantSpec) -> Result<GrantOutcome, ProvisionError> {
        let plan = plan(g)?;
        let mut conn = self.conn().await?;
        match plan {
            Plan::GrantRole { login, pg_role, .. } => {
                exec_formatted(&mut conn, "GRANT %I TO %I", &[&pg_role, &login])
                    .await
                    .map_err(|e| classify(&format!("granting {pg_role:?} to {login:?}"), e))?;
                tracing::info!(grant = %g.grant_id, %login, %pg_role, "postgres role granted");
                Ok(GrantOutcome {
                    secret: None,
                    detail: format!("granted role \"{pg_role}\" to login \"{login}\""),
                })
            }
            Plan::TempLogin { login, pg_role, .. } => {
                let password = scram::random_password(32)
                    .map_err(|e| ProvisionError::unreachable(format!("random source: {e}")))?;
                let verifier = scram::verifier(&password)
                    .map_err(|e| ProvisionError::unreachable(format!("random source: {e}")))?;
                let until = g.expires_at.to_string();
                let what = format!("creating login {login:?} in role {pg_role:?}");
                let exists = role_exists(&mut conn, &login)
                    .await
                    .map_err(|e| classify(&what, e))?;
                let created = if exists {
                    false
                } else {
                    match exec_formatted(
                        &mut conn,
                        "CREATE ROLE %I LOGIN PASSWORD %L VALID UNTIL %L IN ROLE %I",
                        &[&login, &verifier, &until, &pg_role],
                    )
                    .await
                    {
                        Ok(()) => true,
                        // Created concurrently (a retry racing the first try): update it.
                        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42710") => {
                            false
                        }
                        Err(e) => return Err(classify(&what, e)),
                    }
                };
                if !created {
                    exec_formatted(
                        &mut conn,
                        "ALTER ROLE %I LOGIN PASSWORD %L VALID UNTIL %L",
                        &[&login, &verifier, &until],
                    )
                    .await
                    .map_err(|e| classify(&what, e))?;
                    exec_formatted(&mut conn, "GRANT %I TO %I", &[&pg_role, &login])
                        .await
                        .map_err(|e| classify(&what, e))?;
                }
                tracing::info!(grant = %g.grant_id, %login, %pg_role, %until, created, "postgres temporary login ready");
                Ok(GrantOutcome {
                    secret: Some(password),
                    detail: format!(
                        "{} login \"{login}\" in role \"{pg_role}\", valid until {until}",
                        if created { "created" } else { "reset" }
                    ),
                })
            }
        }
    }

    fn keeps_expiry(&self, g: &GrantSpec) -> bool {
        matches!(plan(g), Ok(Plan::TempLogin { .. }))
    }

    async fn extend(&self, g: &GrantSpec) -> Result<String, ProvisionError> {
        let Plan::TempLogin { login, .. } = plan(g)? else {
            return Err(ProvisionError::invalid(
                "only a temporary login keeps an expiry (VALID UNTIL)",
            ));
        };
        let until = g.expires_at.to_string();
        let what = format!("moving VALID UNTIL of {login:?}");
        let mut conn = self.conn().await?;
        if !role_exists(&mut conn, &login)
            .await
            .map_err(|e| classify(&what, e))?
        {
            return Err(ProvisionError::refused(format!(
                "login {login:?} is gone from the target (dropped by hand?)"
            )));
        }
        exec_formatted(&mut conn, "ALTER ROLE %I VALID UNTIL %L", &[&login, &until])
            .await
            .map_err(|e| classify(&what, e))?;
        tracing::info!(grant = %g.grant_id, %login, %until, "postgres temporary login extended");
        Ok(format!("login \"{login}\" valid until {until}"))
    }

    async fn revoke(&self, g: &GrantSpec) -> Result<(), ProvisionError> {
        let plan = plan(g)?;
        let mut conn = self.conn().await?;
        match plan {
            Plan::GrantRole {
                login,
                pg_role,
                terminate,
            } => {
                let what = format!("revoking {pg_role:?} from {login:?}");
                // Revoking from a login or role that no longer exists: nothing to take away.
                if !role_exists(&mut conn, &login)
                    .await
                    .map_err(|e| classify(&what, e))?
                    || !role_exists(&mut conn, &pg_role)
                        .await
                        .map_err(|e| classify(&what, e))?
                {
                    return Ok(());
                }
                // "is not a member" is only a warning: revoking twice succeeds.
                exec_formatted(&mut conn, "REVOKE %I FROM %I", &[&pg_role, &login])
                    .await
                    .map_err(|e| classify(&what, e))?;
                if is_direct_member(&mut conn, &pg_role, &login)
                    .await
                    .map_err(|e| classify(&what, e))?
                {
                    return Err(ProvisionError::refused(format!(
                        "{login:?} is still a member of {pg_role:?} after REVOKE (granted by \
                         another role?)"
                    )));
                }
                let ended = if terminate {
                    terminate_sessions(&mut conn, &login)
                        .await
                        .map_err(|e| classify(&what, e))?
                } else {
                    0
                };
                tracing::info!(grant = %g.grant_id, %login, %pg_role, sessions_ended = ended, "postgres role revoked");
                Ok(())
            }
            Plan::TempLogin {
                login, terminate, ..
            } => {
                let what = format!("dropping login {login:?}");
                if !role_exists(&mut conn, &login)
                    .await
                    .map_err(|e| classify(&what, e))?
                {
                    return Ok(());
                }
                // No new sessions from here on.
                exec_formatted(&mut conn, "ALTER ROLE %I NOLOGIN", &[&login])
                    .await
                    .map_err(|e| classify(&what, e))?;
                let ended = if terminate {
                    terminate_sessions(&mut conn, &login)
                        .await
                        .map_err(|e| classify(&what, e))?
                } else {
                    0
                };
                match exec_formatted(&mut conn, "DROP ROLE IF EXISTS %I", &[&login]).await {
                    Ok(()) => {}
                    // It owns objects (or holds privileges) here: hand them to the admin role.
                    Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("2BP01") => {
                        exec_formatted(
                            &mut conn,
                            "REASSIGN OWNED BY %I TO CURRENT_USER",
                            &[&login],
                        )
                        .await
                        .map_err(|e| classify(&what, e))?;
                        exec_formatted(&mut conn, "DROP OWNED BY %I", &[&login])
                            .await
                            .map_err(|e| classify(&what, e))?;
                        exec_formatted(&mut conn, "DROP ROLE IF EXISTS %I", &[&login])
                            .await
                            .map_err(|e| classify(&what, e))?;
                    }
                    Err(e) => return Err(classify(&what, e)),
                }
                tracing::info!(grant = %g.grant_id, %login, sessions_ended = ended, "postgres temporary login dropped");
                Ok(())
            }
        }
    }

    async fn observe(&self, g: &GrantSpec) -> Result<Observed, ProvisionError> {
        let plan = plan(g)?;
        let mut conn = self.conn().await?;
        match plan {
            Plan::GrantRole { login, pg_role, .. } => {
                let what = format!("checking {login:?} in {pg_role:?}");
                let present = is_direct_member(&mut conn, &pg_role, &login)
                    .await
                    .map_err(|e| classify(&what, e))?;
                let detail = if present {
                    format!("\"{login}\" is a member of \"{pg_role}\"")
                } else {
                    format!("\"{login}\" is not a direct member of \"{pg_role}\"")
                };
                Ok(Observed { present, detail })
            }
            Plan::TempLogin { login, pg_role, .. } => {
                let what = format!("checking login {login:?}");
                let row = sqlx::query(
                    "SELECT rolcanlogin, rolvaliduntil::text AS until, \
                     (rolvaliduntil IS NULL OR rolvaliduntil > now()) AS valid \
                     FROM pg_roles WHERE rolname = $1",
                )
                .bind(&login)
                .fetch_optional(&mut *conn)
                .await
                .map_err(|e| classify(&what, e))?;
                let Some(row) = row else {
                    return Ok(Observed {
                        present: false,
                        detail: format!("no login \"{login}\""),
                    });
                };
                let can_login: bool = row.get("rolcanlogin");
                let until: Option<String> = row.get("until");
                let valid: bool = row.get("valid");
                let member = is_direct_member(&mut conn, &pg_role, &login)
                    .await
                    .map_err(|e| classify(&what, e))?;
                Ok(Observed {
                    present: can_login && valid && member,
                    detail: format!(
                        "login \"{login}\": can log in {can_login}, member of \"{pg_role}\" \
                         {member}, valid until {}",
                        until.as_deref().unwrap_or("forever")
                    ),
                })
            }
        }
    }

    fn account(&self, g: &GrantSpec) -> Option<String> {
        match plan(g).ok()? {
            Plan::GrantRole { login, .. } | Plan::TempLogin { login, .. } => Some(login),
        }
    }

    fn privilege(&self, g: &GrantSpec) -> Option<String> {
        match plan(g).ok()? {
            Plan::GrantRole { pg_role, .. } => Some(format!("member:{pg_role}")),
            // Each grant has a login of its own: nothing is shared.
            Plan::TempLogin { .. } => None,
        }
    }

    fn removable(&self, p: &StandingPrivilege) -> Result<(), String> {
        let Some(role) = p.privilege.strip_prefix("member:") else {
            return Err(format!(
                "{}: only role memberships are removed; attributes are reported",
                p.privilege
            ));
        };
        check_ident("role", role).map_err(|e| e.to_string())?;
        check_ident("account", &p.account).map_err(|e| e.to_string())?;
        if p.account == self.admin_login {
            return Err(format!(
                "{} is the login pedm connects as: never removed",
                p.account
            ));
        }
        if p.account.starts_with("pg_") {
            return Err(format!("{} is a built-in role: never removed", p.account));
        }
        if let Some(why) = self
            .protected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&p.account)
        {
            return Err(format!("{} is {why}: never removed", p.account));
        }
        Ok(())
    }

    async fn remove_standing(&self, p: &StandingPrivilege) -> Result<String, ProvisionError> {
        self.removable(p).map_err(ProvisionError::Invalid)?;
        let (account, role) = (&p.account, &p.privilege["member:".len()..]);
        let what = format!("revoking {role:?} from {account:?}");
        let mut conn = self.conn().await?;
        let row = sqlx::query(
            "SELECT oid = 10 AS bootstrap, \
             rolname IN (current_user, session_user) AS connected FROM pg_roles \
             WHERE rolname = $1",
        )
        .bind(account)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| classify(&what, e))?;
        let Some(row) = row else {
            return Ok(format!("no role \"{account}\" any more: nothing to remove"));
        };
        if row.get::<bool, _>("bootstrap") {
            return Err(ProvisionError::invalid(format!(
                "{account:?} is the bootstrap superuser: never removed"
            )));
        }
        if row.get::<bool, _>("connected") {
            return Err(ProvisionError::invalid(format!(
                "{account:?} is the role pedm's admin connection runs as: never removed"
            )));
        }
        if !role_exists(&mut conn, role)
            .await
            .map_err(|e| classify(&what, e))?
        {
            return Ok(format!("no role \"{role}\" any more: nothing to remove"));
        }
        let direct = is_direct_member(&mut conn, role, account)
            .await
            .map_err(|e| classify(&what, e))?;
        if direct {
            exec_formatted(&mut conn, "REVOKE %I FROM %I", &[role, account])
                .await
                .map_err(|e| classify(&what, e))?;
        }
        let still: bool = sqlx::query_scalar("SELECT pg_has_role($1::name, $2::name, 'MEMBER')")
            .bind(account)
            .bind(role)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| classify(&what, e))?;
        if still {
            let through: Vec<String> = sqlx::query_scalar(
                "SELECT r.rolname::text FROM pg_auth_members m \
                 JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles u ON u.oid = m.member \
                 WHERE u.rolname = $1 AND pg_has_role(r.oid, $2::name, 'MEMBER') ORDER BY 1",
            )
            .bind(account)
            .bind(role)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| classify(&what, e))?;
            return Err(ProvisionError::refused(format!(
                "{account:?} still holds {role:?} after REVOKE, through {}",
                through.join(", ")
            )));
        }
        if direct {
            tracing::info!(%account, %role, "postgres drift removed");
            Ok(format!("revoked role \"{role}\" from \"{account}\""))
        } else {
            Ok(format!(
                "\"{account}\" no longer holds role \"{role}\": nothing to remove"
            ))
        }
    }

    async fn discover(&self) -> Result<Vec<StandingPrivilege>, ProvisionError> {
        let mut conn = self.conn().await?;
        let what = "listing privileged roles";
        let protected: Vec<(String, bool)> = sqlx::query_as(
            "SELECT rolname::text, oid = 10 FROM pg_roles \
             WHERE oid = 10 OR rolname IN (current_user, session_user)",
        )
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| classify(what, e))?;
        *self.protected.lock().unwrap_or_else(|e| e.into_inner()) = protected
            .into_iter()
            .map(|(name, bootstrap)| {
                let why = if bootstrap {
                    "the bootstrap superuser"
                } else {
                    "the role pedm's admin connection runs as"
                };
                (name, why)
            })
            .collect();
        let rows = sqlx::query(
            "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolreplication, \
             rolcanlogin FROM pg_roles \
             WHERE (rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls OR rolreplication) \
             AND rolname !~ '^pg_' ORDER BY rolname",
        )
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| classify(what, e))?;
        let mut out = Vec::new();
        for row in rows {
            let name: String = row.get("rolname");
            let login: bool = row.get("rolcanlogin");
            let source = if login {
                "pg_roles (can log in)"
            } else {
                "pg_roles (NOLOGIN)"
            };
            for (col, privilege) in [
                ("rolsuper", "superuser"),
                ("rolcreaterole", "createrole"),
                ("rolcreatedb", "createdb"),
                ("rolbypassrls", "bypassrls"),
                ("rolreplication", "replication"),
            ] {
                if row.get::<bool, _>(col) {
                    out.push(StandingPrivilege {
                        account: name.clone(),
                        privilege: privilege.to_string(),
                        source: source.to_string(),
                    });
                }
            }
        }
        if !self.privileged_roles.is_empty() {
            let rows = sqlx::query(
                "WITH RECURSIVE m(member, via) AS ( \
                   SELECT am.member, r.rolname::text FROM pg_auth_members am \
                   JOIN pg_roles r ON r.oid = am.roleid WHERE r.rolname = ANY($1) \
                   UNION \
                   SELECT am.member, m.via FROM pg_auth_members am JOIN m ON am.roleid = m.member) \
                 SELECT DISTINCT u.rolname::text AS account, m.via FROM m \
                 JOIN pg_roles u ON u.oid = m.member ORDER BY 1, 2",
            )
            .bind(&self.privileged_roles)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| classify("listing members of privileged roles", e))?;
            for row in rows {
                let via: String = row.get("via");
                out.push(StandingPrivilege {
                    account: row.get("account"),
                    privilege: format!("member:{via}"),
                    source: "pg_auth_members".to_string(),
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(user: &str, settings: serde_json::Value) -> GrantSpec {
        crate::test_spec(user, settings)
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://admin:s3cr%40t@db:5432/x?sslmode=require"),
            "postgres://admin:***@db:5432/x?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://db/x?user=a&password=pw"),
            "postgres://db/x?user=a&password=***"
        );
        assert_eq!(redact_url("postgres://admin@db/x"), "postgres://admin@db/x");
    }

    #[test]
    fn identifiers() {
        for ok in ["readwrite", "_x", "a$1", &"a".repeat(63)] {
            assert!(check_ident("r", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Readwrite",
            "1a",
            "a-b",
            "a b",
            "a'b",
            "bob\"; DROP ROLE x; --",
            &"a".repeat(64),
        ] {
            assert!(
                matches!(check_ident("r", bad), Err(ProvisionError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn plans() {
        let p = plan(&spec(
            "alice",
            json!({"mode": "grant_role", "pg_role": "rw"}),
        ))
        .unwrap();
        assert_eq!(
            p,
            Plan::GrantRole {
                login: "alice".into(),
                pg_role: "rw".into(),
                terminate: false
            }
        );
        let p = plan(&spec(
            "alice",
            json!({"mode": "grant_role", "pg_role": "rw", "login": "{user}_db"}),
        ))
        .unwrap();
        assert!(matches!(p, Plan::GrantRole { login, .. } if login == "alice_db"));
        let p = plan(&spec(
            "Al.ice-X",
            json!({"mode": "temp_login", "pg_role": "rw"}),
        ))
        .unwrap();
        assert_eq!(
            p,
            Plan::TempLogin {
                login: "pedm_al_ice_x_456789ab".into(),
                pg_role: "rw".into(),
                terminate: true
            }
        );
        for bad in [
            json!({"pg_role": "rw"}),
            json!({"mode": "grant_role"}),
            json!({"mode": "nope", "pg_role": "rw"}),
            json!({"mode": "grant_role", "pg_role": "rw", "extra": 1}),
            json!({"mode": "grant_role", "pg_role": "r\"w"}),
            json!({"mode": "temp_login", "pg_role": "rw", "login": "x"}),
            json!("grant_role"),
        ] {
            assert!(
                matches!(
                    plan(&spec("alice", bad.clone())),
                    Err(ProvisionError::Invalid(_))
                ),
                "{bad}"
            );
        }
        let long = "a".repeat(64);
        let p = plan(&spec(&long, json!({"mode": "temp_login", "pg_role": "rw"}))).unwrap();
        assert!(matches!(p, Plan::TempLogin { login, .. } if login.len() == 63));
    }
}
