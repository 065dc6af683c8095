//! The conformance fixtures of the `aws` kind, against moto in server mode: an IAM managed
//! policy attached to a user, and an IAM Identity Center permission-set assignment.

use super::*;
use crate::moto::{Moto, credentials_file};

const READ_ONLY: &str = "arn:aws:iam::aws:policy/ReadOnlyAccess";
const ADMIN: &str = "arn:aws:iam::aws:policy/AdministratorAccess";
/// The Identity Center store and the account assignments are made in.
const STORE: &str = "d-9067000000";
const MEMBER_ACCOUNT: &str = "111122223333";

/// Who the fixtures' AWS users are: the holders, the drift, the kept account, and `moto`,
/// the IAM user moto says every caller is (pedm's own identity, protected).
const USERS: [&str; 5] = ["alice", "bob", "eve", "ops", "moto"];

fn whom(w: Whom) -> &'static str {
    match w {
        Whom::Drift => "eve",
        Whom::Kept => "ops",
    }
}

// ---------------------------------------------------------------------------------------
// IAM: a managed policy attached to the holder's IAM user
// ---------------------------------------------------------------------------------------

pub(super) struct AwsIamFixture {
    _dir: tempfile::TempDir,
    moto: Moto,
    iam: aws_sdk_iam::Client,
    p: Arc<dyn Provisioner>,
}

impl AwsIamFixture {
    pub(super) async fn start() -> Self {
        let moto = Moto::start().await;
        let iam = aws_sdk_iam::Client::new(&moto.sdk().await);
        for u in USERS {
            iam.create_user()
                .user_name(u)
                .send()
                .await
                .unwrap_or_else(|e| panic!("creating IAM user {u}: {e:?}"));
        }
        let dir = tempfile::tempdir().expect("a temporary directory");
        let p = aws_target(&moto, dir.path(), "");
        AwsIamFixture {
            _dir: dir,
            moto,
            iam,
            p,
        }
    }
}

/// The `aws` target pedmd would build, through the relay, drift removal on, `ops` kept;
/// `extra` adds TOML lines.
fn aws_target(moto: &Moto, dir: &Path, extra: &str) -> Arc<dyn Provisioner> {
    target(&format!(
        "kind = \"aws\"\nendpoint_url = {}\ncredentials_file = {}\ntimeout = \"10s\"\n\
         remove_drift = true\nkeep = [\"ops\"]\n{extra}",
        q(&moto.url()),
        q(&credentials_file(dir).display().to_string()),
    ))
}

async fn attached(iam: &aws_sdk_iam::Client, user: &str, arn: &str) -> bool {
    iam.list_attached_user_policies()
        .user_name(user)
        .send()
        .await
        .unwrap_or_else(|e| panic!("listing {user}'s policies: {e:?}"))
        .attached_policies()
        .iter()
        .any(|p| p.policy_arn() == Some(arn))
}

async fn attach(iam: &aws_sdk_iam::Client, user: &str, arn: &str) {
    iam.attach_user_policy()
        .user_name(user)
        .policy_arn(arn)
        .send()
        .await
        .unwrap_or_else(|e| panic!("attaching {arn} to {user}: {e:?}"));
}

#[async_trait]
impl Fixture for AwsIamFixture {
    fn kind(&self) -> &'static str {
        "aws"
    }
    fn provisioner(&self) -> Arc<dyn Provisioner> {
        self.p.clone()
    }
    fn grant(&self, holder: &str) -> GrantSpec {
        spec(holder, "readonly", json!({"policy_arn": READ_ONLY}))
    }
    async fn holds(&self, g: &GrantSpec) -> bool {
        attached(&self.iam, &g.user, READ_ONLY).await
    }
    async fn remove_by_hand(&self, g: &GrantSpec) {
        self.iam
            .detach_user_policy()
            .user_name(&g.user)
            .policy_arn(READ_ONLY)
            .send()
            .await
            .expect("detaching by hand");
    }
    async fn plant_standing(&self, w: Whom) -> (String, String) {
        attach(&self.iam, whom(w), ADMIN).await;
        (whom(w).into(), format!("policy:{ADMIN}"))
    }
    async fn plant_protected(&self) -> Vec<Protected> {
        attach(&self.iam, "moto", ADMIN).await;
        vec![Protected {
            account: "moto".into(),
            privilege: format!("policy:{ADMIN}"),
            why: "the identity pedm calls AWS as",
        }]
    }
    async fn holds_standing(&self, account: &str, privilege: &str) -> bool {
        let arn = privilege
            .strip_prefix("policy:")
            .expect("a policy privilege");
        attached(&self.iam, account, arn).await
    }
    async fn take_down(&self) {
        self.moto.down();
    }
    async fn bring_up(&self) {
        self.moto.up().await;
    }
    fn down_says(&self) -> String {
        "dispatch failure".into()
    }
}

// ---------------------------------------------------------------------------------------
// IAM Identity Center: a permission set assigned in a member account
// ---------------------------------------------------------------------------------------

pub(super) struct AwsIdentityCenterFixture {
    _dir: tempfile::TempDir,
    moto: Moto,
    sso: aws_sdk_ssoadmin::Client,
    ids: aws_sdk_identitystore::Client,
    instance: String,
    read_only: String,
    admin: String,
    p: Arc<dyn Provisioner>,
}

impl AwsIdentityCenterFixture {
    pub(super) async fn start() -> Self {
        let moto = Moto::start().await;
        let sdk = moto.sdk().await;
        let sso = aws_sdk_ssoadmin::Client::new(&sdk);
        let ids = aws_sdk_identitystore::Client::new(&sdk);
        let instance = sso
            .list_instances()
            .send()
            .await
            .expect("listing Identity Center instances")
            .instances()
            .first()
            .and_then(|i| i.instance_arn())
            .expect("moto has an Identity Center instance")
            .to_string();
        let mut sets = Vec::new();
        for name in ["ReadOnly", "Admin"] {
            let ps = sso
                .create_permission_set()
                .instance_arn(&instance)
                .name(name)
                // moto echoes these; left out it answers nulls and a number the SDK rejects.
                .description(format!("{name} (pedm tests)"))
                .session_duration("PT1H")
                .relay_state("https://console.aws.amazon.com/")
                .send()
                .await
                .expect("creating a permission set");
            sets.push(
                ps.permission_set()
                    .and_then(|p| p.permission_set_arn())
                    .expect("its ARN")
                    .to_string(),
            );
        }
        for u in USERS {
            ids.create_user()
                .identity_store_id(STORE)
                .user_name(u)
                .display_name(u)
                .name(
                    aws_sdk_identitystore::types::Name::builder()
                        .given_name(u)
                        .family_name("Example")
                        .build(),
                )
                .send()
                .await
                .unwrap_or_else(|e| panic!("creating Identity Center user {u}: {e:?}"));
        }
        let dir = tempfile::tempdir().expect("a temporary directory");
        let p = aws_target(
            &moto,
            dir.path(),
            &format!(
                "[identity_center]\ninstance_arn = {}\nidentity_store_id = {}\n\
                 accounts = [{}]\nprivileged_permission_sets = [{}]\n",
                q(&instance),
                q(STORE),
                q(MEMBER_ACCOUNT),
                q(&sets[1]),
            ),
        );
        let admin = sets.pop().expect("two sets");
        let read_only = sets.pop().expect("two sets");
        AwsIdentityCenterFixture {
            _dir: dir,
            moto,
            sso,
            ids,
            instance,
            read_only,
            admin,
            p,
        }
    }

    async fn user_id(&self, user: &str) -> String {
        use aws_sdk_identitystore::types::{AlternateIdentifier, UniqueAttribute};
        self.ids
            .get_user_id()
            .identity_store_id(STORE)
            .alternate_identifier(AlternateIdentifier::UniqueAttribute(
                UniqueAttribute::builder()
                    .attribute_path("userName")
                    .attribute_value(aws_smithy_types::Document::String(user.into()))
                    .build()
                    .expect("a unique attribute"),
            ))
            .send()
            .await
            .unwrap_or_else(|e| panic!("looking up {user}: {e:?}"))
            .user_id()
            .to_string()
    }

    async fn assigned(&self, user: &str, ps: &str) -> bool {
        let id = self.user_id(user).await;
        self.sso
            .list_account_assignments()
            .instance_arn(&self.instance)
            .account_id(MEMBER_ACCOUNT)
            .permission_set_arn(ps)
            .send()
            .await
            .expect("listing assignments")
            .account_assignments()
            .iter()
            .any(|a| a.principal_id() == Some(id.as_str()))
    }

    async fn assign(&self, user: &str, ps: &str) {
        use aws_sdk_ssoadmin::types::{PrincipalType, TargetType};
        let id = self.user_id(user).await;
        self.sso
            .create_account_assignment()
            .instance_arn(&self.instance)
            .target_id(MEMBER_ACCOUNT)
            .target_type(TargetType::AwsAccount)
            .permission_set_arn(ps)
            .principal_type(PrincipalType::User)
            .principal_id(id)
            .send()
            .await
            .expect("assigning by hand");
    }

    fn privilege(&self, ps: &str) -> String {
        format!("permission_set:{ps}@{MEMBER_ACCOUNT}")
    }
}

#[async_trait]
impl Fixture for AwsIdentityCenterFixture {
    fn kind(&self) -> &'static str {
        "aws"
    }
    fn provisioner(&self) -> Arc<dyn Provisioner> {
        self.p.clone()
    }
    fn grant(&self, holder: &str) -> GrantSpec {
        spec(
            holder,
            "readonly",
            json!({"permission_set_arn": self.read_only, "account_id": MEMBER_ACCOUNT}),
        )
    }
    async fn holds(&self, g: &GrantSpec) -> bool {
        self.assigned(&g.user, &self.read_only).await
    }
    async fn remove_by_hand(&self, g: &GrantSpec) {
        use aws_sdk_ssoadmin::types::{PrincipalType, TargetType};
        let id = self.user_id(&g.user).await;
        self.sso
            .delete_account_assignment()
            .instance_arn(&self.instance)
            .target_id(MEMBER_ACCOUNT)
            .target_type(TargetType::AwsAccount)
            .permission_set_arn(&self.read_only)
            .principal_type(PrincipalType::User)
            .principal_id(id)
            .send()
            .await
            .expect("unassigning by hand");
    }
    async fn plant_standing(&self, w: Whom) -> (String, String) {
        self.assign(whom(w), &self.admin).await;
        (whom(w).into(), self.privilege(&self.admin))
    }
    async fn plant_protected(&self) -> Vec<Protected> {
        Vec::new()
    }
    async fn holds_standing(&self, account: &str, privilege: &str) -> bool {
        assert_eq!(privilege, self.privilege(&self.admin));
        self.assigned(account, &self.admin).await
    }
    async fn take_down(&self) {
        self.moto.down();
    }
    async fn bring_up(&self) {
        self.moto.up().await;
    }
    fn down_says(&self) -> String {
        "dispatch failure".into()
    }
}

/// AWS's throttling error (moto never throttles: the relay answers it as AWS does) is retried
/// by the SDK's standard retry with backoff, and the change then goes through; throttled past
/// the three attempts it is retryable, says so, and changes nothing. Both protocols: IAM's
/// query XML, Identity Center's JSON.
#[tokio::test]
async fn aws_throttling_is_honoured() {
    use std::sync::atomic::Ordering::SeqCst;
    let f = AwsIamFixture::start().await;
    let g = f.grant("alice");
    f.moto.throttle_next(2);
    f.p.grant(&g)
        .await
        .expect("granted after two throttled attempts");
    assert_eq!(f.moto.throttled.load(SeqCst), 2);
    assert!(f.holds(&g).await);
    f.moto.throttle_next(50);
    match f.p.revoke(&g).await {
        Err(ProvisionError::Unreachable(m)) if m.contains("Throttling") => {}
        other => panic!("a revoke throttled past the SDK's attempts: {other:?}"),
    }
    f.moto.throttle_next(0);
    assert!(f.holds(&g).await, "the throttled revoke changed something");
    f.p.revoke(&g)
        .await
        .expect("revoke once AWS stops throttling");
    assert!(!f.holds(&g).await);

    let ic = AwsIdentityCenterFixture::start().await;
    let g = ic.grant("bob");
    ic.moto.throttle_next(2);
    ic.p.grant(&g)
        .await
        .expect("assigned after two throttled attempts");
    assert_eq!(ic.moto.throttled.load(SeqCst), 2);
    assert!(ic.holds(&g).await);
}
