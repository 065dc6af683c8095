//! IAM Identity Center: account assignments of permission sets to users (and, found by
//! discovery, groups) of the identity store.
//!
//! Creating and deleting an assignment is asynchronous in AWS: the call answers with a
//! request id and `IN_PROGRESS`; pedm asks for the request's status until it succeeds or
//! fails (within the target's `timeout`), so a grant is reported done only when it is.

use std::time::{Duration, Instant};

use aws_sdk_identitystore::types::{AlternateIdentifier, UniqueAttribute};
use aws_sdk_ssoadmin::types::{
    AccountAssignmentOperationStatus, PrincipalType, StatusValues, TargetType,
};
use aws_smithy_types::Document;

use super::{Clients, IdentityCenterConfig, classify, code_of};
use crate::{ProvisionError, StandingPrivilege};

/// The identity store's id of the user (or group) with this user name (display name);
/// `None` when there is none.
async fn principal_id(
    c: &Clients,
    ic: &IdentityCenterConfig,
    kind: &PrincipalType,
    name: &str,
) -> Result<Option<String>, ProvisionError> {
    let (path, what) = match kind {
        PrincipalType::Group => ("displayName", "identitystore:GetGroupId"),
        _ => ("userName", "identitystore:GetUserId"),
    };
    let id = AlternateIdentifier::UniqueAttribute(
        UniqueAttribute::builder()
            .attribute_path(path)
            .attribute_value(Document::String(name.to_string()))
            .build()
            .map_err(|e| ProvisionError::invalid(format!("{what}: {e}")))?,
    );
    let found = match kind {
        PrincipalType::Group => c
            .ids
            .get_group_id()
            .identity_store_id(&ic.identity_store_id)
            .alternate_identifier(id)
            .send()
            .await
            .map(|o| o.group_id().to_string())
            .map_err(|e| {
                (
                    code_of(&e) == Some("ResourceNotFoundException"),
                    classify(what, e),
                )
            }),
        _ => c
            .ids
            .get_user_id()
            .identity_store_id(&ic.identity_store_id)
            .alternate_identifier(id)
            .send()
            .await
            .map(|o| o.user_id().to_string())
            .map_err(|e| {
                (
                    code_of(&e) == Some("ResourceNotFoundException"),
                    classify(what, e),
                )
            }),
    };
    match found {
        Ok(id) => Ok(Some(id)),
        Err((true, _)) => Ok(None),
        Err((false, e)) => Err(e),
    }
}

/// Principal ids of `kind` assigned `permission_set` in `account`.
async fn assigned(
    c: &Clients,
    ic: &IdentityCenterConfig,
    permission_set: &str,
    account: &str,
) -> Result<Vec<(PrincipalType, String)>, ProvisionError> {
    let mut out = Vec::new();
    let mut pages = c
        .sso
        .list_account_assignments()
        .instance_arn(&ic.instance_arn)
        .account_id(account)
        .permission_set_arn(permission_set)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let p = page.map_err(|e| classify("sso:ListAccountAssignments", e))?;
        for a in p.account_assignments() {
            if let (Some(t), Some(id)) = (a.principal_type(), a.principal_id()) {
                out.push((t.clone(), id.to_string()));
            }
        }
    }
    Ok(out)
}

pub(super) async fn user_assigned(
    c: &Clients,
    ic: &IdentityCenterConfig,
    user: &str,
    permission_set: &str,
    account: &str,
) -> Result<bool, ProvisionError> {
    let Some(id) = principal_id(c, ic, &PrincipalType::User, user).await? else {
        return Ok(false);
    };
    Ok(assigned(c, ic, permission_set, account)
        .await?
        .iter()
        .any(|(t, p)| *t == PrincipalType::User && *p == id))
}

pub(super) async fn assign(
    c: &Clients,
    ic: &IdentityCenterConfig,
    user: &str,
    permission_set: &str,
    account: &str,
    timeout: Duration,
) -> Result<String, ProvisionError> {
    let Some(id) = principal_id(c, ic, &PrincipalType::User, user).await? else {
        return Err(ProvisionError::refused(format!(
            "no Identity Center user named {user:?} in {}",
            ic.identity_store_id
        )));
    };
    let what = format!("{permission_set} in account {account} to Identity Center user {user}");
    if assigned(c, ic, permission_set, account)
        .await?
        .iter()
        .any(|(t, p)| *t == PrincipalType::User && *p == id)
    {
        return Ok(format!("already assigned {what}"));
    }
    let out = c
        .sso
        .create_account_assignment()
        .instance_arn(&ic.instance_arn)
        .target_id(account)
        .target_type(TargetType::AwsAccount)
        .permission_set_arn(permission_set)
        .principal_type(PrincipalType::User)
        .principal_id(&id)
        .send()
        .await
        .map_err(|e| classify("sso:CreateAccountAssignment", e))?;
    wait(
        c,
        ic,
        Op::Create,
        out.account_assignment_creation_status(),
        timeout,
    )
    .await?;
    Ok(format!("assigned {what}"))
}

/// Deleting an assignment that is not there (or of a user or group that is gone) succeeds.
pub(super) async fn unassign(
    c: &Clients,
    ic: &IdentityCenterConfig,
    kind: PrincipalType,
    name: &str,
    permission_set: &str,
    account: &str,
    timeout: Duration,
) -> Result<String, ProvisionError> {
    let what = format!(
        "{permission_set} in account {account} from Identity Center {} {name}",
        kind.as_str().to_lowercase()
    );
    let Some(id) = principal_id(c, ic, &kind, name).await? else {
        return Ok(format!(
            "nothing to remove: no {name} in the identity store"
        ));
    };
    if !assigned(c, ic, permission_set, account)
        .await?
        .iter()
        .any(|(t, p)| *t == kind && *p == id)
    {
        return Ok(format!("nothing to remove: {what} is not assigned"));
    }
    let out = c
        .sso
        .delete_account_assignment()
        .instance_arn(&ic.instance_arn)
        .target_id(account)
        .target_type(TargetType::AwsAccount)
        .permission_set_arn(permission_set)
        .principal_type(kind)
        .principal_id(&id)
        .send()
        .await;
    let out = match out {
        Ok(o) => o,
        Err(e) if code_of(&e) == Some("ResourceNotFoundException") => {
            return Ok(format!("nothing to remove: {what} is gone"));
        }
        Err(e) => return Err(classify("sso:DeleteAccountAssignment", e)),
    };
    wait(
        c,
        ic,
        Op::Delete,
        out.account_assignment_deletion_status(),
        timeout,
    )
    .await?;
    Ok(format!("removed {what}"))
}

#[derive(Clone, Copy)]
enum Op {
    Create,
    Delete,
}

/// Follows an asynchronous assignment request until it is no longer in progress.
async fn wait(
    c: &Clients,
    ic: &IdentityCenterConfig,
    op: Op,
    first: Option<&AccountAssignmentOperationStatus>,
    timeout: Duration,
) -> Result<(), ProvisionError> {
    let mut status = first.and_then(|s| s.status()).cloned();
    let request_id = first.and_then(|s| s.request_id()).map(str::to_string);
    let mut reason = first.and_then(|s| s.failure_reason()).map(str::to_string);
    let started = Instant::now();
    let mut pause = Duration::from_millis(200);
    loop {
        match status {
            Some(StatusValues::Succeeded) | None => return Ok(()),
            Some(StatusValues::Failed) => {
                return Err(ProvisionError::refused(format!(
                    "Identity Center refused the assignment change: {}",
                    reason.as_deref().unwrap_or("no reason given")
                )));
            }
            _ => {}
        }
        let Some(id) = &request_id else {
            return Err(ProvisionError::refused(
                "Identity Center answered in progress without a request id",
            ));
        };
        if started.elapsed() > timeout {
            return Err(ProvisionError::unreachable(format!(
                "Identity Center request {id} still in progress after {timeout:?}"
            )));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
        let s = match op {
            Op::Create => c
                .sso
                .describe_account_assignment_creation_status()
                .instance_arn(&ic.instance_arn)
                .account_assignment_creation_request_id(id)
                .send()
                .await
                .map_err(|e| classify("sso:DescribeAccountAssignmentCreationStatus", e))?
                .account_assignment_creation_status()
                .cloned(),
            Op::Delete => c
                .sso
                .describe_account_assignment_deletion_status()
                .instance_arn(&ic.instance_arn)
                .account_assignment_deletion_request_id(id)
                .send()
                .await
                .map_err(|e| classify("sso:DescribeAccountAssignmentDeletionStatus", e))?
                .account_assignment_deletion_status()
                .cloned(),
        };
        status = s.as_ref().and_then(|s| s.status()).cloned();
        reason = s
            .as_ref()
            .and_then(|s| s.failure_reason())
            .map(str::to_string);
    }
}

/// Users and groups assigned the privileged permission sets in the configured accounts.
pub(super) async fn discover(
    c: &Clients,
    ic: &IdentityCenterConfig,
) -> Result<Vec<StandingPrivilege>, ProvisionError> {
    let mut out = Vec::new();
    for account in &ic.accounts {
        let sets = if ic.privileged_permission_sets.is_empty() {
            let mut sets = Vec::new();
            let mut pages = c
                .sso
                .list_permission_sets_provisioned_to_account()
                .instance_arn(&ic.instance_arn)
                .account_id(account)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let p =
                    page.map_err(|e| classify("sso:ListPermissionSetsProvisionedToAccount", e))?;
                sets.extend(p.permission_sets().iter().cloned());
            }
            sets
        } else {
            ic.privileged_permission_sets.clone()
        };
        for ps in sets {
            for (kind, id) in assigned(c, ic, &ps, account).await? {
                let name = match kind {
                    PrincipalType::Group => c
                        .ids
                        .describe_group()
                        .identity_store_id(&ic.identity_store_id)
                        .group_id(&id)
                        .send()
                        .await
                        .map(|g| g.display_name().map(|n| format!("group/{n}")))
                        .map_err(|e| classify("identitystore:DescribeGroup", e))?,
                    _ => c
                        .ids
                        .describe_user()
                        .identity_store_id(&ic.identity_store_id)
                        .user_id(&id)
                        .send()
                        .await
                        .map(|u| u.user_name().map(str::to_string))
                        .map_err(|e| classify("identitystore:DescribeUser", e))?,
                };
                out.push(StandingPrivilege {
                    account: name.unwrap_or_else(|| format!("id/{id}")),
                    privilege: format!("permission_set:{ps}@{account}"),
                    source: format!("Identity Center assignment ({})", kind.as_str()),
                });
            }
        }
    }
    Ok(out)
}
