//! Least privilege in the defaults (issue 23): a `linux_group` role is provisioned only where
//! its group is named (privileged groups only when allowed), overlapping grants of one
//! privilege do not break each other, a second live grant of one role is refused, drift is
//! explained per privilege, and the PROVISION state settles when a grant ends. The Linux
//! tests need root (real users and groups) and are skipped otherwise.

mod common;

use common::*;
use pedm_api::{AuditQuery, CreateRole, Grant, Reason};
use std::time::Duration;
use uuid::Uuid;

fn run(args: &[&str]) {
    let o = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn groups_of(u: &str) -> Vec<String> {
    let o = std::process::Command::new("id")
        .args(["-Gn", u])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Users and groups made by a test, removed when it ends (also on panic).
#[derive(Default)]
struct Cleanup {
    users: Vec<String>,
    groups: Vec<String>,
}

impl Cleanup {
    fn group(&mut self, name: String) -> String {
        run(&["groupadd", &name]);
        self.groups.push(name.clone());
        name
    }
    fn user(&mut self, name: String) -> String {
        run(&[
            "useradd",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            &name,
        ]);
        self.users.push(name.clone());
        name
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for u in &self.users {
            let _ = std::process::Command::new("userdel").arg(u).status();
        }
        for g in &self.groups {
            let _ = std::process::Command::new("groupdel").arg(g).status();
        }
    }
}

fn skip_unless_root() -> bool {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIP: creating Linux users and groups needs root");
        return true;
    }
    false
}

fn tag() -> String {
    Uuid::now_v7().simple().to_string()[20..].to_string()
}

async fn add_role(s: &Server, role: &str, auto: bool) {
    s.admin()
        .create_role(
            "web1",
            &CreateRole {
                auto_approve: auto,
                ..CreateRole::new(role, "1h")
            },
        )
        .await
        .expect("role");
}

async fn wait_provision(s: &Server, id: Uuid, state: &str) -> Grant {
    eventually(
        Duration::from_secs(20),
        &format!("grant {id} provision state {state}"),
        || async move {
            let g = s.admin().get_grant(id).await.unwrap();
            (g.provision_state.as_str() == state).then_some(g)
        },
    )
    .await
}

async fn events(s: &Server, action: &str, grant: Uuid) -> Vec<pedm_api::AuditEvent> {
    s.admin()
        .audit_events(&AuditQuery {
            action: Some(action.into()),
            subject: Some(format!("grant:{grant}")),
            ..Default::default()
        })
        .await
        .unwrap()
}

fn release() -> Reason {
    Reason {
        reason: Some("done".into()),
    }
}

/// No implicit role → group mapping: the README's `root` role on a `linux_group` target is
/// not provisioned (and the grant says so), `/etc/group` is untouched; a role mapped to a
/// privileged group (gid 0) without `allow_privileged` fails without changing anything; with
/// it, the membership is granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linux_group_roles_need_an_explicit_group_and_privileged_groups_an_explicit_allow() {
    if skip_unless_root() {
        return;
    }
    let t = tag();
    let mut c = Cleanup::default();
    let user = c.user(format!("lu{t}"));
    let group = c.group(format!("lg{t}"));
    // A group with gid 0 besides `root` is unusual; the real root group serves.
    let s = Server::start_with(Options {
        config: Some(format!(
            "[provision.targets.web1]\nkind = \"linux_group\"\n\
             sensitive_groups = [\"{group}\"]\n\n\
             [provision.roles.web1.wheel]\ngroup = \"root\"\n\n\
             [provision.roles.web1.ops]\ngroup = \"{group}\"\nallow_privileged = true\n"
        )),
        ..Default::default()
    });
    standard_targets(&s).await;
    add_role(&s, "wheel", true).await;
    add_role(&s, "ops", true).await;
    let etc_group = std::fs::read_to_string("/etc/group").unwrap();
    let root_line = |g: &str| {
        g.lines()
            .find(|l| l.starts_with("root:"))
            .unwrap_or_default()
            .to_string()
    };
    let tok = user_with_token(&s, &user, false).await;
    let me = s.client(&tok);

    // `docker` (auto-approved, no [provision.roles.web1.docker]): not provisioned.
    let g = me
        .create_request(&req("web1", "docker", "10m", "build"))
        .await
        .unwrap()
        .grant
        .expect("auto-approved");
    assert_eq!(g.provision_state.as_str(), "active");
    let detail = g.provision_detail.clone().unwrap_or_default();
    assert!(
        detail.contains("not provisioned") && detail.contains("[provision.roles.web1.docker]"),
        "{detail}"
    );
    let started = events(&s, "grant.started", g.id).await;
    assert!(
        started[0].data["provision"]
            .as_str()
            .is_some_and(|p| p.contains("not provisioned")),
        "{:?}",
        started[0].data
    );
    assert!(!groups_of(&user).contains(&"docker".to_string()));

    // `wheel` → group root (gid 0) without allow_privileged: refused, nothing changed.
    let g = me
        .create_request(&req("web1", "wheel", "10m", "admin work"))
        .await
        .unwrap()
        .grant
        .expect("auto-approved");
    let failed = wait_provision(&s, g.id, "failed").await;
    let why = failed.provision_detail.unwrap_or_default();
    assert!(
        why.contains("gid 0") && why.contains("allow_privileged"),
        "{why}"
    );
    assert!(!groups_of(&user).contains(&"root".to_string()));
    assert_eq!(
        root_line(&std::fs::read_to_string("/etc/group").unwrap()),
        root_line(&etc_group)
    );

    // `ops` → a sensitive group, explicitly allowed: granted.
    let g = me
        .create_request(&req("web1", "ops", "10m", "deploy"))
        .await
        .unwrap()
        .grant
        .expect("auto-approved");
    wait_provision(&s, g.id, "active").await;
    assert!(groups_of(&user).contains(&group), "{:?}", groups_of(&user));
    me.release_grant(g.id, &release()).await.unwrap();
    wait_provision(&s, g.id, "revoked").await;
    assert!(!groups_of(&user).contains(&group));
}

/// Two live grants that give one account the same group membership (two roles mapped to
/// one group): ending the first leaves the membership for the second (its state says why),
/// ending the second removes it. A second request for a role already held live is refused,
/// naming the grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_grants_keep_the_shared_privilege_until_the_last_one_ends() {
    if skip_unless_root() {
        return;
    }
    let t = tag();
    let mut c = Cleanup::default();
    let user = c.user(format!("ou{t}"));
    let group = c.group(format!("og{t}"));
    let s = Server::start_with(Options {
        config: Some(format!(
            "[provision.targets.web1]\nkind = \"linux_group\"\n\n\
             [provision.roles.web1.build]\ngroup = \"{group}\"\n\n\
             [provision.roles.web1.deploy]\ngroup = \"{group}\"\n"
        )),
        ..Default::default()
    });
    standard_targets(&s).await;
    add_role(&s, "build", true).await;
    add_role(&s, "deploy", true).await;
    let me = s.client(&user_with_token(&s, &user, false).await);
    let first = me
        .create_request(&req("web1", "build", "10m", "build"))
        .await
        .unwrap()
        .grant
        .unwrap();
    wait_provision(&s, first.id, "active").await;

    // The same role again while the first grant is live: refused, naming the grant.
    let e = me
        .create_request(&req("web1", "build", "10m", "build again"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(&first.id.to_string()) && msg.contains("pedm grant extend"),
        "{msg}"
    );

    let second = me
        .create_request(&req("web1", "deploy", "10m", "deploy"))
        .await
        .unwrap()
        .grant
        .unwrap();
    wait_provision(&s, second.id, "active").await;
    assert!(groups_of(&user).contains(&group));

    me.release_grant(first.id, &release()).await.unwrap();
    let ended = wait_provision(&s, first.id, "revoked").await;
    let detail = ended.provision_detail.unwrap_or_default();
    assert!(
        detail.contains("left in place") && detail.contains(&second.id.to_string()),
        "{detail}"
    );
    let released = events(&s, "grant.released", first.id).await;
    assert_eq!(
        released[0].data["privilege_kept_for"][0],
        second.id.to_string()
    );
    // The second grant tells the truth: it is active and the membership is there.
    assert_eq!(
        s.admin()
            .get_grant(second.id)
            .await
            .unwrap()
            .provision_state
            .as_str(),
        "active"
    );
    assert!(groups_of(&user).contains(&group), "{:?}", groups_of(&user));
    // `verify` asks the target, per grant: both tell the truth.
    for (g, why) in [
        (first.id, "still needed by live grant"),
        (second.id, "active"),
    ] {
        let v = me.verify_grant(g).await.unwrap();
        assert_eq!((v.expected, v.present), (Some(true), Some(true)), "{v:?}");
        assert!(v.consistent && v.detail.contains(why), "{v:?}");
    }
    let o = s.cli(&s.admin_token, &["grant", "verify", &first.id.to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("consistent:  yes"), "{}", stdout(&o));

    me.release_grant(second.id, &release()).await.unwrap();
    wait_provision(&s, second.id, "revoked").await;
    assert!(!groups_of(&user).contains(&group), "{:?}", groups_of(&user));
    assert_eq!(events(&s, "provision.revoked", second.id).await.len(), 1);
    let v = me.verify_grant(first.id).await.unwrap();
    assert_eq!((v.expected, v.present), (Some(false), Some(false)), "{v:?}");
    // Put back by hand: `verify` says the target disagrees (exit 1).
    run(&["gpasswd", "-a", &user, &group]);
    let o = s.cli(&s.admin_token, &["grant", "verify", &second.id.to_string()]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stderr(&o).contains("does not match"), "{}", stderr(&o));
    assert!(events(&s, "provision.revoked", first.id).await.is_empty());
}

/// A live grant explains exactly the membership it gives: carol's hand-added membership of
/// another privileged group is reported as drift although she holds a grant on the target;
/// `report standing` marks the membership pedm granted as temporary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_grant_explains_only_its_own_privilege() {
    if skip_unless_root() {
        return;
    }
    let t = tag();
    let mut c = Cleanup::default();
    let carol = c.user(format!("cu{t}"));
    let granted = c.group(format!("cg{t}"));
    let by_hand = c.group(format!("ch{t}"));
    run(&["gpasswd", "-a", &carol, &by_hand]);
    let s = Server::start_with(Options {
        config: Some(format!(
            "[provision]\nreconcile_interval = \"1s\"\n\n\
             [provision.targets.web1]\nkind = \"linux_group\"\n\
             privileged_groups = [\"{granted}\", \"{by_hand}\"]\n\n\
             [provision.roles.web1.build]\ngroup = \"{granted}\"\nallow_privileged = true\n"
        )),
        ..Default::default()
    });
    standard_targets(&s).await;
    add_role(&s, "build", true).await;
    let me = s.client(&user_with_token(&s, &carol, false).await);
    let g = me
        .create_request(&req("web1", "build", "10m", "build"))
        .await
        .unwrap()
        .grant
        .unwrap();
    wait_provision(&s, g.id, "active").await;

    let drift = eventually(
        Duration::from_secs(20),
        "drift about the hand-added membership",
        || async {
            let ev = s
                .admin()
                .audit_events(&AuditQuery {
                    action: Some("provision.drift".into()),
                    ..Default::default()
                })
                .await
                .unwrap();
            let mine: Vec<_> = ev
                .into_iter()
                .filter(|e| e.data["account"] == carol.as_str())
                .collect();
            (!mine.is_empty()).then_some(mine)
        },
    )
    .await;
    assert!(
        drift
            .iter()
            .all(|e| e.data["privilege"] == format!("group:{by_hand}")),
        "{drift:?}"
    );

    let report = s.admin().standing_report().await.unwrap();
    let row = |p: &str| {
        report
            .rows
            .iter()
            .find(|r| r.account == carol && r.privilege == p)
            .cloned()
            .unwrap_or_else(|| panic!("{p} in {report:?}"))
    };
    assert_eq!(row(&format!("group:{granted}")).temporary_grant, Some(g.id));
    assert_eq!(row(&format!("group:{by_hand}")).temporary_grant, None);
    let o = s.cli(&s.admin_token, &["report", "standing", "--format", "csv"]);
    let text = stdout(&o);
    assert!(
        text.lines()
            .any(|l| l.contains(&format!("group:{granted}")) && l.contains("temporary")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains(&format!("group:{by_hand}")) && l.contains("standing")),
        "{text}"
    );
}

/// On a target without a provisioner the PROVISION state does not stay `active` once the
/// grant has ended.
#[tokio::test]
async fn provision_state_settles_when_an_unprovisioned_grant_ends() {
    let s = Server::start();
    standard_targets(&s).await;
    let me = s.client(&user_with_token(&s, "alice", false).await);
    let g = me
        .create_request(&req("web1", "docker", "10m", "build"))
        .await
        .unwrap()
        .grant
        .unwrap();
    assert_eq!(g.provision_state.as_str(), "active");
    let ended = me.release_grant(g.id, &release()).await.unwrap();
    assert_eq!(ended.provision_state.as_str(), "revoked");
    let g = s.admin().get_grant(g.id).await.unwrap();
    assert_eq!(g.provision_state.as_str(), "revoked");
    let o = s.cli(&s.admin_token, &["grant", "show", &g.id.to_string()]);
    assert!(!stdout(&o).contains("provision: active"), "{}", stdout(&o));
}
