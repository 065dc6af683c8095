//! The conformance fixtures of the database kinds: `postgres` and `mariadb`, each a real server of its own.

use super::*;

// ---------------------------------------------------------------------------------------
// postgres
// ---------------------------------------------------------------------------------------

/// A cluster of its own (it is stopped), with role `ct_rw` to grant, `ct_priv` reported as
/// privileged, and logins `ct_alice`, `ct_bob`, `ct_eve` and `ct_keeper` (kept).
pub(super) struct PostgresFixture {
    pg: TestPostgres,
    url: String,
    p: Arc<dyn Provisioner>,
}

async fn pg_exec(url: &str, sql: String) {
    let mut c = PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
        .execute(&mut c)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// `member` is directly a member of `role` (pg_auth_members).
async fn pg_member(url: &str, role: &str, member: &str) -> bool {
    let mut c = PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_auth_members m \
         JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles u ON u.oid = m.member \
         WHERE r.rolname = $1 AND u.rolname = $2)",
    )
    .bind(role)
    .bind(member)
    .fetch_one(&mut c)
    .await
    .unwrap_or_else(|e| panic!("checking {member} in {role}: {e}"))
}

impl PostgresFixture {
    pub(super) async fn start() -> Option<Self> {
        // Prints `SKIP: …` when PostgreSQL is not installed.
        let pg = TestPostgres::start_or_skip()?;
        let url = pg.url();
        pg_exec(
            &url,
            "CREATE ROLE ct_rw NOLOGIN; CREATE ROLE ct_priv NOLOGIN; \
             CREATE ROLE ct_alice LOGIN; CREATE ROLE ct_bob LOGIN; \
             CREATE ROLE ct_eve LOGIN; CREATE ROLE ct_keeper LOGIN"
                .into(),
        )
        .await;
        let p = target(&format!(
            "kind = \"postgres\"\nurl = {}\nprivileged_roles = [\"ct_priv\"]\ntimeout = \"3s\"\n\
             remove_drift = true\nkeep = [\"ct_keeper\"]\n",
            q(&url)
        ));
        Some(PostgresFixture { pg, url, p })
    }
}

#[async_trait]
impl Fixture for PostgresFixture {
    fn kind(&self) -> &'static str {
        "postgres"
    }
    fn provisioner(&self) -> Arc<dyn Provisioner> {
        self.p.clone()
    }
    fn grant(&self, holder: &str) -> GrantSpec {
        spec(
            holder,
            "rw",
            json!({"mode": "grant_role", "pg_role": "ct_rw", "login": "ct_{user}"}),
        )
    }
    async fn holds(&self, g: &GrantSpec) -> bool {
        pg_member(&self.url, "ct_rw", &format!("ct_{}", g.user)).await
    }
    async fn remove_by_hand(&self, g: &GrantSpec) {
        pg_exec(&self.url, format!("REVOKE ct_rw FROM ct_{}", g.user)).await;
    }
    async fn plant_standing(&self, whom: Whom) -> (String, String) {
        let account = match whom {
            Whom::Drift => "ct_eve",
            Whom::Kept => "ct_keeper",
        };
        pg_exec(&self.url, format!("GRANT ct_priv TO {account}")).await;
        (account.into(), "member:ct_priv".into())
    }
    async fn plant_protected(&self) -> Vec<Protected> {
        // The admin URL's login (here also the bootstrap superuser).
        pg_exec(&self.url, "GRANT ct_priv TO postgres".into()).await;
        vec![Protected {
            account: "postgres".into(),
            privilege: "member:ct_priv".into(),
            why: "connects as",
        }]
    }
    async fn holds_standing(&self, account: &str, privilege: &str) -> bool {
        let role = privilege
            .strip_prefix("member:")
            .expect("a role membership");
        pg_member(&self.url, role, account).await
    }
    async fn take_down(&self) {
        self.pg.stop().expect("stopping the cluster");
    }
    async fn bring_up(&self) {
        self.pg.start_again().expect("starting the cluster again");
    }
    fn down_says(&self) -> String {
        format!("connecting to {}", self.url)
    }
}

// ---------------------------------------------------------------------------------------
// mariadb
// ---------------------------------------------------------------------------------------

/// A server of its own (it is stopped), with role `ct_rw` to grant, `ct_priv` reported as
/// privileged, and accounts `ct_alice`, `ct_bob`, `ct_eve` and `ct_keeper` (kept), all `@'%'`.
pub(super) struct MariaDbFixture {
    db: TestMariaDb,
    p: Arc<dyn Provisioner>,
}

impl MariaDbFixture {
    pub(super) fn start() -> Option<Self> {
        if !Path::new("/usr/sbin/mariadbd").exists() {
            println!("SKIP: MariaDB is not installed (/usr/sbin/mariadbd)");
            return None;
        }
        let db = TestMariaDb::start_or_skip()?;
        // Root, who creates the roles, holds them WITH ADMIN OPTION (needed to grant them by
        // hand); pedm's admin account gets them that way too.
        db.root_sql(
            "CREATE ROLE ct_rw; CREATE ROLE ct_priv; \
             GRANT ct_rw TO 'pedm_admin'@'127.0.0.1' WITH ADMIN OPTION; \
             GRANT ct_priv TO 'pedm_admin'@'127.0.0.1' WITH ADMIN OPTION; \
             CREATE USER 'ct_alice'@'%', 'ct_bob'@'%', 'ct_eve'@'%', 'ct_keeper'@'%';",
        );
        let p = target(&format!(
            "kind = \"mariadb\"\nurl = {}\nprivileged_roles = [\"ct_priv\"]\ntimeout = \"3s\"\n\
             remove_drift = true\nkeep = [\"ct_keeper@%\"]\n",
            q(&db.url())
        ));
        Some(MariaDbFixture { db, p })
    }

    /// `user@host` holds `role` directly (mysql.roles_mapping), asked as root.
    fn member(&self, account: &str, role: &str) -> bool {
        let (user, host) = account.rsplit_once('@').expect("user@host");
        let n = self.db.root_sql(&format!(
            "SELECT COUNT(*) FROM mysql.roles_mapping \
             WHERE User = '{user}' AND Host = '{host}' AND Role = '{role}'"
        ));
        n.trim() != "0"
    }
}

#[async_trait]
impl Fixture for MariaDbFixture {
    fn kind(&self) -> &'static str {
        "mariadb"
    }
    fn provisioner(&self) -> Arc<dyn Provisioner> {
        self.p.clone()
    }
    fn grant(&self, holder: &str) -> GrantSpec {
        spec(
            holder,
            "rw",
            json!({"mode": "grant_role", "db_role": "ct_rw", "login": "ct_{user}", "host": "%"}),
        )
    }
    async fn holds(&self, g: &GrantSpec) -> bool {
        self.member(&format!("ct_{}@%", g.user), "ct_rw")
    }
    async fn remove_by_hand(&self, g: &GrantSpec) {
        self.db
            .root_sql(&format!("REVOKE ct_rw FROM 'ct_{}'@'%'", g.user));
    }
    async fn plant_standing(&self, whom: Whom) -> (String, String) {
        let user = match whom {
            Whom::Drift => "ct_eve",
            Whom::Kept => "ct_keeper",
        };
        self.db.root_sql(&format!("GRANT ct_priv TO '{user}'@'%'"));
        (format!("{user}@%"), "member:ct_priv".into())
    }
    async fn plant_protected(&self) -> Vec<Protected> {
        // Already there: MariaDB makes the creator of a role (root) a member WITH ADMIN
        // OPTION, and pedm's admin account was given it that way at the start.
        vec![
            Protected {
                account: "root@localhost".into(),
                privilege: "member:ct_priv".into(),
                why: "system account",
            },
            Protected {
                account: "pedm_admin@127.0.0.1".into(),
                privilege: "member:ct_priv".into(),
                why: "connects as",
            },
        ]
    }
    async fn holds_standing(&self, account: &str, privilege: &str) -> bool {
        let role = privilege
            .strip_prefix("member:")
            .expect("a role membership");
        self.member(account, role)
    }
    async fn take_down(&self) {
        self.db.stop();
    }
    async fn bring_up(&self) {
        self.db.start_again();
    }
    fn down_says(&self) -> String {
        format!(
            "connecting to mysql://pedm_admin:***@127.0.0.1:{}/",
            self.db.port
        )
    }
}
