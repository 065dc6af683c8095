//! What AWS accepts as names, ARNs and account ids: checked before anything is sent, so a
//! hostile setting never reaches an API call.

use crate::ProvisionError;

/// IAM user, role and group names: `[\w+=,.@-]`, 1–64 (groups 128) characters.
pub(super) fn name_ok(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
}

pub(super) fn check_iam_name<'a>(what: &str, s: &'a str) -> Result<&'a str, ProvisionError> {
    let max = if what == "group" { 128 } else { 64 };
    if name_ok(s, max) {
        Ok(s)
    } else {
        Err(ProvisionError::invalid(format!(
            "{what} {s:?} is not an IAM name (letters, digits and _+=,.@-, at most {max})"
        )))
    }
}

/// Identity Center user names: up to 128 printable characters without spaces or controls.
pub(super) fn check_identity_center_name(s: &str) -> Result<&str, ProvisionError> {
    if !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_graphic()) {
        Ok(s)
    } else {
        Err(ProvisionError::invalid(format!(
            "login {s:?} is not an Identity Center user name"
        )))
    }
}

pub(super) fn arn_ok(s: &str, service: &str, resource: &str) -> bool {
    let parts: Vec<&str> = s.splitn(6, ':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == service
        && parts[5].starts_with(resource)
        && s.len() <= 2048
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || ":/_+=,.@-".contains(c))
}

pub(super) fn check_policy_arn(s: &str) -> Result<(), ProvisionError> {
    if arn_ok(s, "iam", "policy/") {
        Ok(())
    } else {
        Err(ProvisionError::invalid(format!(
            "{s:?} is not an IAM managed policy ARN (arn:aws:iam::ACCOUNT:policy/NAME)"
        )))
    }
}

pub(super) fn check_role_arn(s: &str) -> Result<(), ProvisionError> {
    if arn_ok(s, "iam", "role/") {
        Ok(())
    } else {
        Err(ProvisionError::invalid(format!(
            "assume_role_arn {s:?} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"
        )))
    }
}

pub(super) fn check_permission_set_arn(s: &str) -> Result<(), ProvisionError> {
    // AWS writes `permissionSet/ssoins-…/ps-…`; moto `instance/ssoins-…/ps-…`.
    if arn_ok(s, "sso", "") && s.contains("/ssoins-") && s.contains("/ps-") {
        Ok(())
    } else {
        Err(ProvisionError::invalid(format!(
            "{s:?} is not a permission set ARN (arn:aws:sso:::permissionSet/ssoins-…/ps-…)"
        )))
    }
}

pub(super) fn check_account_id(s: &str) -> Result<(), ProvisionError> {
    if s.len() == 12 && s.chars().all(|c| c.is_ascii_digit()) {
        Ok(())
    } else {
        Err(ProvisionError::invalid(format!(
            "{s:?} is not an AWS account id (12 digits)"
        )))
    }
}
