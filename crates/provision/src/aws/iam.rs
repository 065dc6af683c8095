//! IAM: managed policies attached to users and roles, group memberships, and who holds the
//! privileged policies.

use aws_sdk_iam::Client;

use super::{Principal, classify, code_of};
use crate::{ProvisionError, StandingPrivilege};

/// Whether `code` says the user, role, group or attachment does not exist.
fn gone(code: Option<&str>) -> bool {
    code == Some("NoSuchEntity")
}

pub(super) async fn attach(
    iam: &Client,
    principal: &Principal,
    arn: &str,
) -> Result<String, ProvisionError> {
    match principal {
        Principal::User(u) => {
            iam.attach_user_policy()
                .user_name(u)
                .policy_arn(arn)
                .send()
                .await
                .map_err(|e| classify("iam:AttachUserPolicy", e))?;
            Ok(format!("attached {arn} to IAM user {u}"))
        }
        Principal::Role(r) => {
            iam.attach_role_policy()
                .role_name(r)
                .policy_arn(arn)
                .send()
                .await
                .map_err(|e| classify("iam:AttachRolePolicy", e))?;
            Ok(format!("attached {arn} to IAM role {r}"))
        }
    }
}

/// Detaching what is not attached (or from a user or role that is gone) succeeds.
pub(super) async fn detach(
    iam: &Client,
    principal: &Principal,
    arn: &str,
) -> Result<(), ProvisionError> {
    // Gone already (the attachment, the user or the role) is what a detach wants.
    fn done_if_gone<
        O,
        E: aws_sdk_iam::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    >(
        what: &str,
        r: Result<O, aws_sdk_iam::error::SdkError<E, aws_sdk_iam::config::http::HttpResponse>>,
    ) -> Result<(), ProvisionError> {
        match r {
            Ok(_) => Ok(()),
            Err(e) if gone(code_of(&e)) => Ok(()),
            Err(e) => Err(classify(what, e)),
        }
    }
    match principal {
        Principal::User(u) => done_if_gone(
            "iam:DetachUserPolicy",
            iam.detach_user_policy()
                .user_name(u)
                .policy_arn(arn)
                .send()
                .await,
        )?,
        Principal::Role(r) => done_if_gone(
            "iam:DetachRolePolicy",
            iam.detach_role_policy()
                .role_name(r)
                .policy_arn(arn)
                .send()
                .await,
        )?,
    }
    // Some implementations answer a detach of an unattached policy with success and others
    // with NoSuchEntity; either way it must be gone now.
    if has_policy(iam, principal, arn).await? {
        return Err(ProvisionError::refused(format!(
            "{arn} is still attached to {} after detaching it",
            principal.account()
        )));
    }
    Ok(())
}

/// Collects the ARNs of a `ListAttached{User,Role}Policies` paginator; a principal that is
/// gone has none (`return Ok(false)` from the caller).
macro_rules! attached_arns {
    ($pages:expr, $what:literal) => {{
        let mut pages = $pages;
        let mut arns = Vec::new();
        while let Some(page) = pages.next().await {
            match page {
                Ok(p) => arns.extend(
                    p.attached_policies()
                        .iter()
                        .filter_map(|a| a.policy_arn().map(str::to_string)),
                ),
                Err(e) if gone(code_of(&e)) => return Ok(false),
                Err(e) => return Err(classify($what, e)),
            }
        }
        arns
    }};
}

pub(super) async fn has_policy(
    iam: &Client,
    principal: &Principal,
    arn: &str,
) -> Result<bool, ProvisionError> {
    let arns = match principal {
        Principal::User(u) => attached_arns!(
            iam.list_attached_user_policies()
                .user_name(u)
                .into_paginator()
                .send(),
            "iam:ListAttachedUserPolicies"
        ),
        Principal::Role(r) => attached_arns!(
            iam.list_attached_role_policies()
                .role_name(r)
                .into_paginator()
                .send(),
            "iam:ListAttachedRolePolicies"
        ),
    };
    Ok(arns.iter().any(|a| a == arn))
}

pub(super) async fn add_to_group(
    iam: &Client,
    user: &str,
    group: &str,
) -> Result<String, ProvisionError> {
    iam.add_user_to_group()
        .user_name(user)
        .group_name(group)
        .send()
        .await
        .map_err(|e| classify("iam:AddUserToGroup", e))?;
    Ok(format!("added IAM user {user} to group {group}"))
}

/// Removing a user who is not a member (or is gone, or from a group that is gone) succeeds.
pub(super) async fn remove_from_group(
    iam: &Client,
    user: &str,
    group: &str,
) -> Result<(), ProvisionError> {
    if !in_group(iam, user, group).await? {
        return Ok(());
    }
    match iam
        .remove_user_from_group()
        .user_name(user)
        .group_name(group)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if gone(code_of(&e)) => Ok(()),
        Err(e) => Err(classify("iam:RemoveUserFromGroup", e)),
    }
}

pub(super) async fn in_group(
    iam: &Client,
    user: &str,
    group: &str,
) -> Result<bool, ProvisionError> {
    let mut pages = iam
        .list_groups_for_user()
        .user_name(user)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        match page {
            Ok(p) => {
                if p.groups().iter().any(|g| g.group_name() == group) {
                    return Ok(true);
                }
            }
            Err(e) if gone(code_of(&e)) => return Ok(false),
            Err(e) => return Err(classify("iam:ListGroupsForUser", e)),
        }
    }
    Ok(false)
}

/// Users and roles with one of `policies` attached, and members of groups with one attached.
pub(super) async fn discover(
    iam: &Client,
    policies: &[String],
) -> Result<Vec<StandingPrivilege>, ProvisionError> {
    let mut out = Vec::new();
    for arn in policies {
        let mut groups = Vec::new();
        let mut pages = iam
            .list_entities_for_policy()
            .policy_arn(arn)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let p = match page {
                Ok(p) => p,
                // A customer policy listed in the configuration that does not exist.
                Err(e) if gone(code_of(&e)) => break,
                Err(e) => return Err(classify("iam:ListEntitiesForPolicy", e)),
            };
            for u in p.policy_users() {
                if let Some(name) = u.user_name() {
                    out.push(StandingPrivilege {
                        account: name.to_string(),
                        privilege: format!("policy:{arn}"),
                        source: "attached to the IAM user".into(),
                    });
                }
            }
            for r in p.policy_roles() {
                if let Some(name) = r.role_name() {
                    out.push(StandingPrivilege {
                        account: format!("role/{name}"),
                        privilege: format!("policy:{arn}"),
                        source: "attached to the IAM role".into(),
                    });
                }
            }
            groups.extend(
                p.policy_groups()
                    .iter()
                    .filter_map(|g| g.group_name())
                    .map(str::to_string),
            );
        }
        for group in groups {
            let mut pages = iam.get_group().group_name(&group).into_paginator().send();
            while let Some(page) = pages.next().await {
                let p = match page {
                    Ok(p) => p,
                    Err(e) if gone(code_of(&e)) => break,
                    Err(e) => return Err(classify("iam:GetGroup", e)),
                };
                for u in p.users() {
                    out.push(StandingPrivilege {
                        account: u.user_name().to_string(),
                        privilege: format!("group:{group}"),
                        source: format!("IAM group {group} has {arn} attached"),
                    });
                }
            }
        }
    }
    Ok(out)
}
