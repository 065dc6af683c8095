//! The Linux group provisioner with real users and groups. Needs root: skipped otherwise.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use pedm_provision::{
    GrantSpec, LinuxGroupConfig, LinuxGroupProvisioner, ProvisionError, Provisioner,
    StandingPrivilege,
};
use serde_json::json;
use uuid::Uuid;

fn skip_unless_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        false
    } else {
        println!("SKIP: the Linux group provisioner tests need root (useradd, gpasswd)");
        true
    }
}

fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Users and groups made by a test, removed when it ends (also on panic).
#[derive(Default)]
struct Cleanup {
    users: Vec<String>,
    groups: Vec<String>,
}

impl Cleanup {
    fn group(&mut self, prefix: &str) -> String {
        let g = unique(prefix);
        run(&["groupadd", &g]);
        self.groups.push(g.clone());
        g
    }
    fn user(&mut self, prefix: &str, extra: &[&str]) -> String {
        let u = unique(prefix);
        let mut args = vec!["useradd", "-M", "-N", "-s", "/usr/sbin/nologin"];
        args.extend_from_slice(extra);
        args.push(&u);
        run(&args);
        self.users.push(u.clone());
        u
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // Users first: userdel also takes them out of every group (e.g. the real `sudo`).
        for u in &self.users {
            let _ = Command::new("userdel").args(["-f", u]).output();
        }
        for g in &self.groups {
            let _ = Command::new("groupdel").arg(g).output();
        }
    }
}

fn groups_of(user: &str) -> Vec<String> {
    let out = Command::new("id").args(["-Gn", user]).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect()
}

fn spec(user: &str, group: &str) -> GrantSpec {
    GrantSpec {
        grant_id: Uuid::now_v7(),
        user: user.into(),
        target: "host".into(),
        role: "docker".into(),
        run_as: None,
        expires_at: jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1),
        settings: json!({ "group": group }),
    }
}

fn provisioner() -> LinuxGroupProvisioner {
    LinuxGroupProvisioner::new(LinuxGroupConfig::default()).unwrap()
}

#[tokio::test]
async fn grant_and_revoke_membership() {
    if skip_unless_root() {
        return;
    }
    let mut c = Cleanup::default();
    let group = c.group("pedmtg");
    let user = c.user("pedmtu", &[]);
    let p = provisioner();
    let g = spec(&user, &group);

    assert!(!groups_of(&user).contains(&group));
    assert!(!p.observe(&g).await.unwrap().present);
    let out = p.grant(&g).await.unwrap();
    assert!(out.detail.contains(&group), "{}", out.detail);
    assert!(groups_of(&user).contains(&group), "{:?}", groups_of(&user));
    assert!(p.observe(&g).await.unwrap().present);
    // Granting twice succeeds.
    p.grant(&g).await.unwrap();

    p.revoke(&g).await.unwrap();
    assert!(!groups_of(&user).contains(&group));
    assert!(!p.observe(&g).await.unwrap().present);
    // Revoking what is gone succeeds.
    p.revoke(&g).await.unwrap();

    // No implicit mapping: a role named like the group, without `group`, is not provisioned
    // (refused as invalid, nothing changed); `login` maps the pedm user.
    let mut by_role = spec("ignored", "x");
    by_role.role = group.clone();
    by_role.user = user.trim_start_matches("pedmtu").to_string();
    by_role.settings = json!({ "login": "pedmtu{user}" });
    assert!(p.provisions(&by_role).is_err());
    let e = p.grant(&by_role).await.unwrap_err();
    assert!(matches!(e, ProvisionError::Invalid(_)), "{e:?}");
    assert!(!groups_of(&user).contains(&group));
    by_role.settings = json!({ "login": "pedmtu{user}", "group": group });
    assert!(p.provisions(&by_role).is_ok());
    p.grant(&by_role).await.unwrap();
    assert!(groups_of(&user).contains(&group));
    p.revoke(&by_role).await.unwrap();
    assert!(!groups_of(&user).contains(&group));

    // A privileged group (listed, or gid 0) only with allow_privileged.
    let strict = LinuxGroupProvisioner::new(LinuxGroupConfig {
        sensitive_groups: vec![group.clone()],
        ..LinuxGroupConfig::default()
    })
    .unwrap();
    let e = strict.grant(&g).await.unwrap_err();
    assert!(
        matches!(e, ProvisionError::Invalid(ref m) if m.contains("allow_privileged")),
        "{e:?}"
    );
    assert!(!groups_of(&user).contains(&group));
    let e = p.grant(&spec(&user, "root")).await.unwrap_err();
    assert!(
        matches!(e, ProvisionError::Invalid(ref m) if m.contains("gid 0")),
        "{e:?}"
    );
    let mut allowed = g.clone();
    allowed.settings = json!({ "group": group, "allow_privileged": true });
    strict.grant(&allowed).await.unwrap();
    assert!(groups_of(&user).contains(&group));
    strict.revoke(&allowed).await.unwrap();

    // Missing user or group: refused (permanent); revoking them succeeds.
    let e = p
        .grant(&spec("pedm_no_such_user", &group))
        .await
        .unwrap_err();
    assert!(matches!(e, ProvisionError::Refused(_)), "{e:?}");
    let e = p
        .grant(&spec(&user, "pedm_no_such_group"))
        .await
        .unwrap_err();
    assert!(matches!(e, ProvisionError::Refused(_)), "{e:?}");
    p.revoke(&spec("pedm_no_such_user", &group)).await.unwrap();

    // A primary group counts as held and cannot be taken away.
    let primary = c.user("pedmtp", &["-g", &group]);
    let gp = spec(&primary, &group);
    assert!(p.observe(&gp).await.unwrap().present);
    p.grant(&gp).await.unwrap();
    let e = p.revoke(&gp).await.unwrap_err();
    assert!(matches!(e, ProvisionError::Refused(_)), "{e:?}");
}

#[tokio::test]
async fn hostile_names_are_refused() {
    if skip_unless_root() {
        return;
    }
    let mut c = Cleanup::default();
    let group = c.group("pedmth");
    let user = c.user("pedmth", &[]);
    let p = provisioner();
    // Other tests in this binary create and remove their own `pedm*` groups meanwhile:
    // compare everything else, and this test's group.
    let own = format!("{group}:");
    let relevant = || {
        std::fs::read_to_string("/etc/group")
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("pedm") || l.starts_with(&own))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let before = relevant();
    for (u, g) in [
        ("bob\"; rm -rf /; --", group.as_str()),
        ("a'b", group.as_str()),
        ("-a", group.as_str()),
        ("Alice", group.as_str()),
        (user.as_str(), "../etc"),
        (user.as_str(), "sudo root"),
        (user.as_str(), "$(id)"),
    ] {
        let g = spec(u, g);
        for e in [
            p.grant(&g).await.err(),
            p.revoke(&g).await.err(),
            p.observe(&g).await.err(),
        ] {
            assert!(
                matches!(e, Some(ProvisionError::Invalid(_))),
                "{g:?}: {e:?}"
            );
        }
    }
    assert_eq!(relevant(), before);
}

#[tokio::test]
async fn discover_finds_privileged_members_uid0_and_sudoers() {
    if skip_unless_root() {
        return;
    }
    let mut c = Cleanup::default();
    // The real `sudo` group, or one made for the test.
    let sudo_exists = nix::unistd::Group::from_name("sudo").unwrap().is_some();
    if !sudo_exists {
        run(&["groupadd", "sudo"]);
        c.groups.push("sudo".into());
    }
    let member = c.user("pedmts", &[]);
    let uid0 = c.user("pedmtz", &["-o", "-u", "0"]);
    let sudoer = c.user("pedmtr", &[]);
    let p = provisioner();
    let mut sudo = spec(&member, "sudo");
    sudo.settings = json!({ "group": "sudo", "allow_privileged": true });
    p.grant(&sudo).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let sudoers = dir.path().join("sudoers");
    let drop_ins = dir.path().join("sudoers.d");
    std::fs::create_dir(&drop_ins).unwrap();
    std::fs::write(
        &sudoers,
        "root ALL=(ALL:ALL) ALL\n%sudo ALL=(ALL:ALL) ALL\n",
    )
    .unwrap();
    std::fs::write(
        drop_ins.join("pedm"),
        format!("{sudoer} ALL=(ALL) NOPASSWD: ALL\n"),
    )
    .unwrap();
    // Skipped like sudo does: names with a dot or ending in ~.
    std::fs::write(drop_ins.join("old.bak"), "nobody ALL=(ALL) ALL\n").unwrap();
    let config = LinuxGroupConfig {
        sudoers: sudoers.clone(),
        sudoers_dir: drop_ins.clone(),
        ..LinuxGroupConfig::default()
    };
    let found = LinuxGroupProvisioner::new(config)
        .unwrap()
        .discover()
        .await
        .unwrap();
    let has = |account: &str, privilege: &str| {
        found
            .iter()
            .any(|s| s.account == account && s.privilege == privilege)
    };
    assert!(has(&member, "group:sudo"), "{found:#?}");
    assert!(has(&uid0, "uid0"), "{found:#?}");
    assert!(!has("root", "uid0"), "{found:#?}");
    assert!(has(&sudoer, "sudo:(ALL) NOPASSWD: ALL"), "{found:#?}");
    assert!(has("%sudo", "sudo:(ALL:ALL) ALL"), "{found:#?}");
    assert!(!found.iter().any(|s| s.account == "nobody"), "{found:#?}");
    let src = found.iter().find(|s| s.account == sudoer).unwrap();
    assert_eq!(src.source, format!("{}:1", drop_ins.join("pedm").display()));

    // The real files are readable as root: the default configuration works too.
    provisioner().discover().await.unwrap();

    p.revoke(&sudo).await.unwrap();
    assert!(!groups_of(&member).contains(&"sudo".to_string()));
}

/// Drift removal: a supplementary membership added by hand is removed (`id -Gn`); primary
/// groups, root, uid 0 and sudoers rules are not.
#[tokio::test]
async fn remove_standing_takes_supplementary_memberships_away() {
    if skip_unless_root() {
        return;
    }
    let mut c = Cleanup::default();
    let group = c.group("pedmrg");
    let user = c.user("pedmru", &[]);
    let primary = c.user("pedmrp", &["-g", &group]);
    run(&["gpasswd", "-a", &user, &group]);
    let p = LinuxGroupProvisioner::new(LinuxGroupConfig {
        privileged_groups: vec![group.clone()],
        ..LinuxGroupConfig::default()
    })
    .unwrap();
    let found = p.discover().await.unwrap();
    let privilege = format!("group:{group}");
    let of = |account: &str| {
        found
            .iter()
            .find(|s| s.account == account && s.privilege == privilege)
            .unwrap_or_else(|| panic!("{account} not in {found:#?}"))
            .clone()
    };
    assert!(groups_of(&user).contains(&group));
    assert_eq!(p.removable(&of(&user)), Ok(()));
    let detail = p.remove_standing(&of(&user)).await.unwrap();
    assert!(detail.contains("removed"), "{detail}");
    assert!(!groups_of(&user).contains(&group), "{:?}", groups_of(&user));
    // Removing what is gone succeeds.
    p.remove_standing(&of(&user)).await.unwrap();

    assert!(p.removable(&of(&primary)).unwrap_err().contains("primary"));
    assert!(groups_of(&primary).contains(&group));
    let other = |account: &str, privilege: &str| StandingPrivilege {
        account: account.into(),
        privilege: privilege.into(),
        source: "test".into(),
    };
    assert!(p.removable(&other("root", &privilege)).is_err());
    assert!(p.removable(&other("toor", "uid0")).is_err());
    assert!(p.removable(&other("%ops", "sudo:(ALL) ALL")).is_err());
    let e = p
        .remove_standing(&other("a;b", &privilege))
        .await
        .unwrap_err();
    assert!(matches!(e, ProvisionError::Invalid(_)), "{e:?}");
}
