//! MariaDB and MySQL: grant a role to an account, or create a short-lived account.
//!
//! Role settings (`GrantSpec::settings`):
//!
//! ```json
//! {"mode": "grant_role", "db_role": "readwrite", "login": "{user}", "host": "%"}
//! {"mode": "temp_user", "db_role": "readwrite", "host": "%"}
//! ```
//!
//! - `grant_role`: `GRANT readwrite TO 'login'@'host'` and `SET DEFAULT ROLE readwrite FOR
//!   …`, so the role is in force at the next login without `SET ROLE`; revoke is `REVOKE`
//!   and, if it was the default role, `SET DEFAULT ROLE NONE`. `login` is a template
//!   (`{user}` = the pedm user name), default the pedm user name; the account must exist.
//! - `temp_user`: `CREATE USER 'pedm_<user>_<8 hex of the grant id>'@'host' IDENTIFIED BY
//!   PASSWORD '<hash>'` in role `db_role` (its default role); the generated password (32
//!   characters of `[A-Za-z0-9]`) is returned once in [`GrantOutcome::secret`]. The server
//!   receives only its `mysql_native_password` hash, so the password is in no server log.
//!   Granting again (a retry) resets the password. Revoke: `ALTER USER … ACCOUNT LOCK`, then
//!   the account's connections are killed, then `DROP USER`.
//!
//! On revoke the holder's live connections are killed (`KILL CONNECTION` of every connection
//! of the login, whatever host it came from: a `REVOKE` does not end a session that already
//! uses the role); `"terminate_sessions": false` keeps them (grant_role only).
//!
//! Names are validated before any SQL is sent: logins and roles `[a-z_][a-z0-9_]{0,63}`,
//! hosts `%`, `localhost`, or address/name patterns of `[A-Za-z0-9.%_:-]`; anything else is
//! [`ProvisionError::Invalid`]. MariaDB has no server-side quoting function and account
//! statements take no bind parameters, so each statement is built from validated names in
//! quotes and sent with the text protocol (nothing cached).
//!
//! Discovery reports global privileges in the configured list (default `SUPER`, `CREATE
//! USER`, `FILE`, `SHUTDOWN`, and `GRANT OPTION`, which `ALL PRIVILEGES … WITH GRANT OPTION`
//! carries too) as `global:<PRIVILEGE>`, and members of the configured privileged roles as
//! `member:<role>`; accounts are `user@host`. Drift removal revokes exactly those
//! (`REVOKE … ON *.* FROM`, `REVOKE role FROM`) and checks they are gone. Never touched:
//! `root@localhost`, `mariadb.sys@localhost`, `mysql@localhost` and the account pedm
//! connects as (`CURRENT_USER()`, checked again in the target before any `REVOKE`).

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};
use sqlx::mysql::{MySqlConnectOptions, MySqlDatabaseError, MySqlPoolOptions};
use sqlx::{ConnectOptions, MySqlConnection, MySqlPool, Row};

use crate::config::ConfigError;
use crate::{
    GrantOutcome, GrantSpec, Observed, ProvisionError, Provisioner, StandingPrivilege,
    check_settings, login_from_settings, redact_url, scram, setting_bool, setting_str,
};

/// `kind = "mariadb"` in the server configuration.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MariaDbConfig {
    /// Admin connection URL (`mysql://admin:pw@host:3306/`): an account with `CREATE USER`,
    /// the granted roles `WITH ADMIN OPTION` (or `SUPER`), `CONNECTION ADMIN` to kill
    /// sessions, and `SELECT` on `mysql.*` for discovery.
    pub url: String,
    /// Global privileges [`Provisioner::discover`] reports (`GRANT OPTION` included).
    #[serde(default = "default_privileges")]
    pub privileges: Vec<String>,
    /// Roles whose members are reported.
    #[serde(default)]
    pub privileged_roles: Vec<String>,
    /// Connection timeout (`"10s"` or seconds).
    #[serde(default = "default_timeout", with = "pedm_notify::duration")]
    pub timeout: Duration,
}

fn default_privileges() -> Vec<String> {
    ["SUPER", "CREATE USER", "FILE", "SHUTDOWN", "GRANT OPTION"]
        .map(String::from)
        .to_vec()
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl MariaDbConfig {
    pub fn new(url: impl Into<String>) -> Self {
        MariaDbConfig {
            url: url.into(),
            privileges: default_privileges(),
            privileged_roles: vec![],
            timeout: default_timeout(),
        }
    }
}

impl std::fmt::Debug for MariaDbConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MariaDbConfig")
            .field("url", &redact_url(&self.url))
            .field("privileges", &self.privileges)
            .field("privileged_roles", &self.privileged_roles)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Accounts drift removal never touches.
const PROTECTED: [(&str, &str); 3] = [
    ("root", "localhost"),
    ("mariadb.sys", "localhost"),
    ("mysql", "localhost"),
];

/// A global privilege name as `SHOW PRIVILEGES` spells them: upper-case words.
fn check_privilege(p: &str) -> Result<(), ProvisionError> {
    let ok = !p.is_empty()
        && p.len() <= 32
        && p.bytes().all(|b| b.is_ascii_uppercase() || b == b' ')
        && !p.starts_with(' ')
        && !p.ends_with(' ')
        && !p.contains("  ");
    if ok {
        Ok(())
    } else {
        Err(ProvisionError::invalid(format!(
            "privilege {p:?} is not a MariaDB privilege name (upper-case words)"
        )))
    }
}

/// A plain login or role name: `[a-z_][a-z0-9_]{0,63}`.
fn check_name(what: &str, s: &str) -> Result<(), ProvisionError> {
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_');
    if ok {
        Ok(())
    } else {
        Err(ProvisionError::invalid(format!(
            "{what} {s:?} is not a plain MariaDB name ([a-z_][a-z0-9_]{{0,63}})"
        )))
    }
}

/// An account's host part: `%`, a name or an address pattern.
fn check_host(s: &str) -> Result<(), ProvisionError> {
    let ok = !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'%' | b'_' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ProvisionError::invalid(format!(
            "host {s:?} is not a host name, address or pattern ([A-Za-z0-9.%_:-])"
        )))
    }
}

/// `'login'@'host'`, from names that passed [`check_name`]/[`check_host`] (no quotes or
/// backslashes can be in them).
fn account(login: &str, host: &str) -> String {
    format!("'{login}'@'{host}'")
}

/// The `mysql_native_password` hash of `password`: `*` and the upper-case hex of
/// SHA1(SHA1(password)).
fn native_hash(password: &str) -> String {
    let inner = Sha1::digest(password.as_bytes());
    let outer = Sha1::digest(inner);
    let hex: String = outer.iter().map(|b| format!("{b:02X}")).collect();
    format!("*{hex}")
}

/// `pedm_<user>_<8 hex>` for a temporary account.
fn temp_user_name(g: &GrantSpec) -> Result<String, ProvisionError> {
    let name = crate::temp_account_name(g, 50)?;
    check_name("temporary user", &name)?;
    Ok(name)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Plan {
    GrantRole {
        login: String,
        host: String,
        role: String,
        terminate: bool,
    },
    TempUser {
        login: String,
        host: String,
        role: String,
    },
}

impl Plan {
    fn login_host(&self) -> (&str, &str) {
        match self {
            Plan::GrantRole { login, host, .. } | Plan::TempUser { login, host, .. } => {
                (login, host)
            }
        }
    }
}

fn plan(g: &GrantSpec) -> Result<Plan, ProvisionError> {
    check_settings(
        g,
        &["mode", "db_role", "login", "host", "terminate_sessions"],
    )?;
    let role = setting_str(g, "db_role")?
        .ok_or_else(|| ProvisionError::invalid("settings.db_role is required"))?
        .to_string();
    check_name("db_role", &role)?;
    let host = setting_str(g, "host")?.unwrap_or("%").to_string();
    check_host(&host)?;
    match setting_str(g, "mode")? {
        Some("grant_role") => {
            let login = login_from_settings(g)?;
            check_name("login", &login)?;
            Ok(Plan::GrantRole {
                login,
                host,
                role,
                terminate: setting_bool(g, "terminate_sessions", true)?,
            })
        }
        Some("temp_user") => {
            if setting_str(g, "login")?.is_some() {
                return Err(ProvisionError::invalid(
                    "settings.login does not apply to mode temp_user (the user is generated)",
                ));
            }
            if g.settings.get("terminate_sessions").is_some() {
                return Err(ProvisionError::invalid(
                    "settings.terminate_sessions does not apply to mode temp_user (its \
                     connections are always ended)",
                ));
            }
            Ok(Plan::TempUser {
                login: temp_user_name(g)?,
                host,
                role,
            })
        }
        Some(other) => Err(ProvisionError::invalid(format!(
            "unknown settings.mode {other:?} (expected grant_role or temp_user)"
        ))),
        None => Err(ProvisionError::invalid(
            "settings.mode is required (grant_role or temp_user)",
        )),
    }
}

/// Sorts a database error into retry-later or permanent.
fn classify(what: &str, e: sqlx::Error) -> ProvisionError {
    crate::classify_sqlx(what, e, |db| {
        let number = db
            .try_downcast_ref::<MySqlDatabaseError>()
            .map_or(0, MySqlDatabaseError::number);
        // Too many connections, server shutting down, lock wait, deadlock, query
        // interrupted or timed out, connection killed.
        let transient = matches!(
            number,
            1040 | 1053 | 1205 | 1213 | 1317 | 1927 | 1969 | 3024
        );
        (format!("error {number}"), transient)
    })
}

/// Runs a statement built from validated names with the text protocol.
async fn exec(conn: &mut MySqlConnection, sql: String) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Whether the catalog query `sql` (a `SELECT COUNT(*)` with `?` for each of `binds`) finds
/// anything.
async fn any(
    conn: &mut MySqlConnection,
    sql: &'static str,
    binds: &[&str],
) -> Result<bool, sqlx::Error> {
    let mut q = sqlx::query_scalar::<_, i64>(sql);
    for b in binds {
        q = q.bind(*b);
    }
    Ok(q.fetch_one(&mut *conn).await? > 0)
}

async fn account_exists(
    conn: &mut MySqlConnection,
    login: &str,
    host: &str,
) -> Result<bool, sqlx::Error> {
    let sql = "SELECT COUNT(*) FROM mysql.user WHERE User = ? AND Host = ?";
    any(conn, sql, &[login, host]).await
}

async fn role_exists(conn: &mut MySqlConnection, role: &str) -> Result<bool, sqlx::Error> {
    let sql = "SELECT COUNT(*) FROM mysql.user WHERE User = ? AND Host = '' AND is_role = 'Y'";
    any(conn, sql, &[role]).await
}

/// `login@host` holds `role` directly.
async fn has_role(
    conn: &mut MySqlConnection,
    login: &str,
    host: &str,
    role: &str,
) -> Result<bool, sqlx::Error> {
    let sql = "SELECT COUNT(*) FROM mysql.roles_mapping WHERE User = ? AND Host = ? AND Role = ?";
    any(conn, sql, &[login, host, role]).await
}

async fn default_role(
    conn: &mut MySqlConnection,
    login: &str,
    host: &str,
) -> Result<Option<String>, sqlx::Error> {
    let r: Option<String> =
        sqlx::query_scalar("SELECT default_role FROM mysql.user WHERE User = ? AND Host = ?")
            .bind(login)
            .bind(host)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(r.filter(|r| !r.is_empty()))
}

/// Kills every connection of `login` but our own; how many.
async fn kill_sessions(conn: &mut MySqlConnection, login: &str) -> Result<u64, sqlx::Error> {
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = ? AND ID <> CONNECTION_ID()",
    )
    .bind(login)
    .fetch_all(&mut *conn)
    .await?;
    let mut killed = 0;
    for id in ids {
        match exec(conn, format!("KILL CONNECTION {id}")).await {
            Ok(()) => killed += 1,
            // Gone already (1094: unknown thread id).
            Err(sqlx::Error::Database(db))
                if db
                    .try_downcast_ref::<MySqlDatabaseError>()
                    .is_some_and(|d| d.number() == 1094) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(killed)
}

/// Grants and revokes MariaDB/MySQL roles and accounts through an admin connection.
pub struct MariaDbProvisioner {
    pool: MySqlPool,
    redacted_url: String,
    privileges: Vec<String>,
    privileged_roles: Vec<String>,
    /// The user name of the admin URL: drift removal never touches it.
    admin_login: String,
}

impl std::fmt::Debug for MariaDbProvisioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MariaDbProvisioner")
            .field("url", &self.redacted_url)
            .finish_non_exhaustive()
    }
}

impl MariaDbProvisioner {
    /// Checks the configuration; connects lazily (a target that is down now does not stop
    /// the server from starting). Call inside a Tokio runtime.
    pub fn new(config: &MariaDbConfig) -> Result<Self, ConfigError> {
        let redacted_url = redact_url(&config.url);
        if !(config.url.starts_with("mysql://") || config.url.starts_with("mariadb://")) {
            return Err(ConfigError(format!(
                "MariaDB URL {redacted_url} must start with mysql:// or mariadb://"
            )));
        }
        let url = config.url.replacen("mariadb://", "mysql://", 1);
        let opts: MySqlConnectOptions = url
            .parse()
            .map_err(|e| ConfigError(format!("invalid MariaDB URL {redacted_url}: {e}")))?;
        for p in &config.privileges {
            check_privilege(p).map_err(|e| ConfigError(e.to_string()))?;
        }
        for r in &config.privileged_roles {
            check_name("privileged role", r).map_err(|e| ConfigError(e.to_string()))?;
        }
        if config.timeout.is_zero() {
            return Err(ConfigError("timeout must be greater than zero".into()));
        }
        let admin_login = opts.get_username().to_string();
        // Statements may carry password hashes: never log them.
        let opts = opts.disable_statement_logging();
        let pool = MySqlPoolOptions::new()
            .max_connections(4)
            .min_connections(0)
            .acquire_timeout(config.timeout)
            .idle_timeout(Duration::from_secs(60))
            .test_before_acquire(true)
            .connect_lazy_with(opts);
        Ok(MariaDbProvisioner {
            pool,
            redacted_url,
            privileges: config.privileges.clone(),
            privileged_roles: config.privileged_roles.clone(),
            admin_login,
        })
    }

    async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::MySql>, ProvisionError> {
        self.pool
            .acquire()
            .await
            .map_err(|e| classify(&format!("connecting to {}", self.redacted_url), e))
    }

    /// `(user, host)` of `user@host` as discovery names accounts.
    fn split_account(account: &str) -> Result<(&str, &str), String> {
        let (user, host) = account
            .rsplit_once('@')
            .ok_or_else(|| format!("{account:?} is not user@host"))?;
        Ok((user, host))
    }
}

#[async_trait]
impl Provisioner for MariaDbProvisioner {
    fn kind(&self) -> &'static str {
        "mariadb"
    }

    async fn grant(&self, g: &GrantSpec) -> Result<GrantOutcome, ProvisionError> {
        let plan = plan(g)?;
        let mut conn = self.conn().await?;
        match plan {
            Plan::GrantRole {
                login, host, role, ..
            } => {
                let who = account(&login, &host);
                let what = format!("granting {role:?} to {who}");
                exec(&mut conn, format!("GRANT `{role}` TO {who}"))
                    .await
                    .map_err(|e| classify(&what, e))?;
                exec(&mut conn, format!("SET DEFAULT ROLE `{role}` FOR {who}"))
                    .await
                    .map_err(|e| classify(&what, e))?;
                tracing::info!(grant = %g.grant_id, account = %who, %role, "mariadb role granted");
                Ok(GrantOutcome {
                    secret: None,
                    detail: format!("granted role {role} to {login}@{host} (its default role)"),
                })
            }
            Plan::TempUser { login, host, role } => {
                let password = scram::random_password(32)
                    .map_err(|e| ProvisionError::unreachable(format!("random source: {e}")))?;
                let hash = native_hash(&password);
                let who = account(&login, &host);
                let what = format!("creating user {who} in role {role:?}");
                let created = !account_exists(&mut conn, &login, &host)
                    .await
                    .map_err(|e| classify(&what, e))?;
                if created {
                    exec(
                        &mut conn,
                        format!("CREATE USER IF NOT EXISTS {who} IDENTIFIED BY PASSWORD '{hash}'"),
                    )
                    .await
                    .map_err(|e| classify(&what, e))?;
                }
                // A retry (or a concurrent first try): the same password for everyone from here.
                exec(
                    &mut conn,
                    format!("ALTER USER {who} IDENTIFIED BY PASSWORD '{hash}' ACCOUNT UNLOCK"),
                )
                .await
                .map_err(|e| classify(&what, e))?;
                exec(&mut conn, format!("GRANT `{role}` TO {who}"))
                    .await
                    .map_err(|e| classify(&what, e))?;
                exec(&mut conn, format!("SET DEFAULT ROLE `{role}` FOR {who}"))
                    .await
                    .map_err(|e| classify(&what, e))?;
                tracing::info!(grant = %g.grant_id, account = %who, %role, created, "mariadb temporary user ready");
                Ok(GrantOutcome {
                    secret: Some(password),
                    detail: format!(
                        "{} user {login}@{host} in role {role}",
                        if created { "created" } else { "reset" }
                    ),
                })
            }
        }
    }

    async fn revoke(&self, g: &GrantSpec) -> Result<(), ProvisionError> {
        let plan = plan(g)?;
        let mut conn = self.conn().await?;
        match plan {
            Plan::GrantRole {
                login,
                host,
                role,
                terminate,
            } => {
                let who = account(&login, &host);
                let what = format!("revoking {role:?} from {who}");
                // From an account or a role that no longer exists: nothing to take away.
                if !account_exists(&mut conn, &login, &host)
                    .await
                    .map_err(|e| classify(&what, e))?
                    || !role_exists(&mut conn, &role)
                        .await
                        .map_err(|e| classify(&what, e))?
                {
                    return Ok(());
                }
                if has_role(&mut conn, &login, &host, &role)
                    .await
                    .map_err(|e| classify(&what, e))?
                {
                    exec(&mut conn, format!("REVOKE `{role}` FROM {who}"))
                        .await
                        .map_err(|e| classify(&what, e))?;
                }
                if default_role(&mut conn, &login, &host)
                    .await
                    .map_err(|e| classify(&what, e))?
                    .as_deref()
                    == Some(role.as_str())
                {
                    exec(&mut conn, format!("SET DEFAULT ROLE NONE FOR {who}"))
                        .await
                        .map_err(|e| classify(&what, e))?;
                }
                if has_role(&mut conn, &login, &host, &role)
                    .await
                    .map_err(|e| classify(&what, e))?
                {
                    return Err(ProvisionError::refused(format!(
                        "{who} still holds role {role:?} after REVOKE"
                    )));
                }
                let killed = if terminate {
                    kill_sessions(&mut conn, &login)
                        .await
                        .map_err(|e| classify(&what, e))?
                } else {
                    0
                };
                tracing::info!(grant = %g.grant_id, account = %who, %role, sessions_ended = killed, "mariadb role revoked");
                Ok(())
            }
            Plan::TempUser { login, host, .. } => {
                let who = account(&login, &host);
                let what = format!("dropping user {who}");
                if account_exists(&mut conn, &login, &host)
                    .await
                    .map_err(|e| classify(&what, e))?
                {
                    // No new logins while its connections are ended.
                    exec(&mut conn, format!("ALTER USER {who} ACCOUNT LOCK"))
                        .await
                        .map_err(|e| classify(&what, e))?;
                }
                let killed = kill_sessions(&mut conn, &login)
                    .await
                    .map_err(|e| classify(&what, e))?;
                exec(&mut conn, format!("DROP USER IF EXISTS {who}"))
                    .await
                    .map_err(|e| classify(&what, e))?;
                tracing::info!(grant = %g.grant_id, account = %who, sessions_ended = killed, "mariadb temporary user dropped");
                Ok(())
            }
        }
    }

    async fn observe(&self, g: &GrantSpec) -> Result<Observed, ProvisionError> {
        let plan = plan(g)?;
        let mut conn = self.conn().await?;
        let (login, host) = plan.login_host();
        let role = match &plan {
            Plan::GrantRole { role, .. } | Plan::TempUser { role, .. } => role,
        };
        let what = format!("checking {login}@{host}");
        let exists = account_exists(&mut conn, login, host)
            .await
            .map_err(|e| classify(&what, e))?;
        if !exists {
            return Ok(Observed {
                present: false,
                detail: format!("no account {login}@{host}"),
            });
        }
        let member = has_role(&mut conn, login, host, role)
            .await
            .map_err(|e| classify(&what, e))?;
        let default = default_role(&mut conn, login, host)
            .await
            .map_err(|e| classify(&what, e))?;
        let locked = match plan {
            Plan::TempUser { .. } => {
                let v: Option<String> = sqlx::query_scalar(
                    "SELECT JSON_VALUE(Priv, '$.account_locked') FROM mysql.global_priv \
                     WHERE User = ? AND Host = ?",
                )
                .bind(login)
                .bind(host)
                .fetch_optional(&mut *conn)
                .await
                .map_err(|e| classify(&what, e))?
                .flatten();
                v.as_deref() == Some("true")
            }
            Plan::GrantRole { .. } => false,
        };
        Ok(Observed {
            present: member && !locked,
            detail: format!(
                "{login}@{host}: holds role {role} {member}, default role {}{}",
                default.as_deref().unwrap_or("none"),
                if locked { ", locked" } else { "" }
            ),
        })
    }

    fn account(&self, g: &GrantSpec) -> Option<String> {
        let p = plan(g).ok()?;
        let (login, host) = p.login_host();
        Some(format!("{login}@{host}"))
    }

    fn privilege(&self, g: &GrantSpec) -> Option<String> {
        match plan(g).ok()? {
            Plan::GrantRole { role, .. } => Some(format!("member:{role}")),
            // Each grant has an account of its own: nothing is shared.
            Plan::TempUser { .. } => None,
        }
    }

    fn removable(&self, p: &StandingPrivilege) -> Result<(), String> {
        let (user, host) = Self::split_account(&p.account)?;
        check_host(host).map_err(|e| e.to_string())?;
        if user.is_empty() || user.len() > 128 || user.contains(['\'', '\\', '`', '\0']) {
            return Err(format!("{:?} is not an account pedm can name", p.account));
        }
        if let Some(role) = p.privilege.strip_prefix("member:") {
            check_name("role", role).map_err(|e| e.to_string())?;
        } else if let Some(privilege) = p.privilege.strip_prefix("global:") {
            check_privilege(privilege).map_err(|e| e.to_string())?;
            if !self.privileges.iter().any(|q| q == privilege) {
                return Err(format!(
                    "{privilege} is not a privilege this target reports"
                ));
            }
        } else {
            return Err(format!(
                "{}: only global privileges and role memberships are removed",
                p.privilege
            ));
        }
        if user == self.admin_login {
            return Err(format!(
                "{user} is the account pedm connects as: never removed"
            ));
        }
        if PROTECTED.contains(&(user, host)) {
            return Err(format!("{} is a system account: never removed", p.account));
        }
        Ok(())
    }

    async fn remove_standing(&self, p: &StandingPrivilege) -> Result<String, ProvisionError> {
        self.removable(p).map_err(ProvisionError::Invalid)?;
        let (user, host) = Self::split_account(&p.account).map_err(ProvisionError::Invalid)?;
        let who = account(user, host);
        let what = format!("removing {} from {who}", p.privilege);
        let mut conn = self.conn().await?;
        let current: String = sqlx::query_scalar("SELECT CURRENT_USER()")
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| classify(&what, e))?;
        if current == format!("{user}@{host}") {
            return Err(ProvisionError::invalid(format!(
                "{who} is the account pedm's admin connection runs as: never removed"
            )));
        }
        if !account_exists(&mut conn, user, host)
            .await
            .map_err(|e| classify(&what, e))?
        {
            return Ok(format!(
                "no account {user}@{host} any more: nothing to remove"
            ));
        }
        if let Some(role) = p.privilege.strip_prefix("member:") {
            if !has_role(&mut conn, user, host, role)
                .await
                .map_err(|e| classify(&what, e))?
            {
                return Ok(format!(
                    "{user}@{host} no longer holds role {role}: nothing to remove"
                ));
            }
            exec(&mut conn, format!("REVOKE `{role}` FROM {who}"))
                .await
                .map_err(|e| classify(&what, e))?;
            if has_role(&mut conn, user, host, role)
                .await
                .map_err(|e| classify(&what, e))?
            {
                return Err(ProvisionError::refused(format!(
                    "{who} still holds role {role:?} after REVOKE"
                )));
            }
            tracing::info!(account = %who, %role, "mariadb drift removed");
            return Ok(format!("revoked role {role} from {user}@{host}"));
        }
        let privilege = &p.privilege["global:".len()..];
        if !global_privileges(&mut conn, user, host)
            .await
            .map_err(|e| classify(&what, e))?
            .iter()
            .any(|q| q == privilege)
        {
            return Ok(format!(
                "{user}@{host} no longer holds {privilege}: nothing to remove"
            ));
        }
        exec(&mut conn, format!("REVOKE {privilege} ON *.* FROM {who}"))
            .await
            .map_err(|e| classify(&what, e))?;
        if global_privileges(&mut conn, user, host)
            .await
            .map_err(|e| classify(&what, e))?
            .iter()
            .any(|q| q == privilege)
        {
            return Err(ProvisionError::refused(format!(
                "{who} still holds {privilege} after REVOKE"
            )));
        }
        tracing::info!(account = %who, %privilege, "mariadb drift removed");
        Ok(format!("revoked {privilege} on *.* from {user}@{host}"))
    }

    async fn discover(&self) -> Result<Vec<StandingPrivilege>, ProvisionError> {
        let mut conn = self.conn().await?;
        let what = "listing privileged accounts";
        let rows = sqlx::query(
            "SELECT GRANTEE, PRIVILEGE_TYPE, IS_GRANTABLE FROM information_schema.USER_PRIVILEGES \
             ORDER BY GRANTEE, PRIVILEGE_TYPE",
        )
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| classify(what, e))?;
        let mut out = std::collections::BTreeSet::new();
        for row in rows {
            let grantee: String = row.get("GRANTEE");
            let Some(account) = grantee_account(&grantee) else {
                continue;
            };
            let privilege: String = row.get("PRIVILEGE_TYPE");
            let grantable: String = row.get("IS_GRANTABLE");
            if self.privileges.contains(&privilege) {
                out.insert(StandingPrivilege {
                    account: account.clone(),
                    privilege: format!("global:{privilege}"),
                    source: "information_schema.USER_PRIVILEGES".into(),
                });
            }
            if grantable == "YES" && self.privileges.iter().any(|p| p == "GRANT OPTION") {
                out.insert(StandingPrivilege {
                    account,
                    privilege: "global:GRANT OPTION".into(),
                    source: "information_schema.USER_PRIVILEGES".into(),
                });
            }
        }
        for role in &self.privileged_roles {
            let members: Vec<(String, String)> = sqlx::query_as(
                "SELECT User, Host FROM mysql.roles_mapping WHERE Role = ? ORDER BY User, Host",
            )
            .bind(role)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| classify("listing members of privileged roles", e))?;
            for (user, host) in members {
                out.insert(StandingPrivilege {
                    account: format!("{user}@{host}"),
                    privilege: format!("member:{role}"),
                    source: "mysql.roles_mapping".into(),
                });
            }
        }
        Ok(out.into_iter().collect())
    }
}

/// `'user'@'host'` (as information_schema spells grantees) → `user@host`; a role's grantee
/// (`'role'`, no host) → `role`.
fn grantee_account(g: &str) -> Option<String> {
    let (user, host) = match g.rsplit_once("'@'") {
        Some((u, h)) => (u.strip_prefix('\'')?, h.strip_suffix('\'')?),
        None => (g.strip_prefix('\'')?.strip_suffix('\'')?, ""),
    };
    Some(if host.is_empty() {
        user.to_string()
    } else {
        format!("{user}@{host}")
    })
}

/// The global privileges `user@host` holds (`GRANT OPTION` when grantable).
async fn global_privileges(
    conn: &mut MySqlConnection,
    user: &str,
    host: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT PRIVILEGE_TYPE, IS_GRANTABLE FROM information_schema.USER_PRIVILEGES \
         WHERE GRANTEE = ?",
    )
    .bind(format!("'{user}'@'{host}'"))
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row.get::<String, _>("PRIVILEGE_TYPE"));
        if row.get::<String, _>("IS_GRANTABLE") == "YES" {
            out.push("GRANT OPTION".into());
        }
    }
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(user: &str, settings: serde_json::Value) -> GrantSpec {
        crate::test_spec(user, settings)
    }

    #[test]
    fn the_native_hash_is_mysqls() {
        // SELECT PASSWORD('password') on MariaDB and MySQL 5.7.
        assert_eq!(
            native_hash("password"),
            "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"
        );
    }

    #[test]
    fn plans_and_hostile_names() {
        let p = plan(&spec(
            "alice",
            json!({"mode": "grant_role", "db_role": "rw"}),
        ))
        .unwrap();
        assert_eq!(
            p,
            Plan::GrantRole {
                login: "alice".into(),
                host: "%".into(),
                role: "rw".into(),
                terminate: true
            }
        );
        let p = plan(&spec(
            "Al.ice",
            json!({"mode": "temp_user", "db_role": "rw", "host": "10.0.%"}),
        ))
        .unwrap();
        assert_eq!(
            p,
            Plan::TempUser {
                login: "pedm_al_ice_456789ab".into(),
                host: "10.0.%".into(),
                role: "rw".into()
            }
        );
        for bad in [
            json!({"db_role": "rw"}),
            json!({"mode": "grant_role"}),
            json!({"mode": "grant_role", "db_role": "r`w"}),
            json!({"mode": "grant_role", "db_role": "rw", "login": "a'b"}),
            json!({"mode": "grant_role", "db_role": "rw", "host": "x' OR '1"}),
            json!({"mode": "grant_role", "db_role": "rw", "host": ""}),
            json!({"mode": "temp_user", "db_role": "rw", "login": "x"}),
            json!({"mode": "temp_user", "db_role": "rw", "terminate_sessions": false}),
            json!({"mode": "nope", "db_role": "rw"}),
            json!({"mode": "grant_role", "db_role": "rw", "extra": 1}),
        ] {
            assert!(
                matches!(
                    plan(&spec("alice", bad.clone())),
                    Err(ProvisionError::Invalid(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn grantees_become_accounts() {
        assert_eq!(
            grantee_account("'root'@'localhost'").unwrap(),
            "root@localhost"
        );
        assert_eq!(grantee_account("'a@b'@'%'").unwrap(), "a@b@%");
        assert_eq!(grantee_account("'dba'").unwrap(), "dba");
        assert_eq!(grantee_account("root"), None);
    }

    #[test]
    fn privilege_names() {
        for ok in ["SUPER", "CREATE USER", "GRANT OPTION"] {
            assert!(check_privilege(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "super",
            "ALL; DROP",
            "CREATE  USER",
            " SUPER",
            "SUPER,FILE",
        ] {
            assert!(check_privilege(bad).is_err(), "{bad}");
        }
    }
}
