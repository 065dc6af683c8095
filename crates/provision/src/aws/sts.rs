//! Role sessions for a grant's holder: STS credentials bounded by the grant, a console
//! sign-in through AWS's federation endpoint, and cutting a grant's sessions off when the
//! grant ends early.
//!
//! Sessions carry the session tag `pedm-grant`. STS sessions cannot be revoked one by one,
//! so an early end (a revoke or release before the grant's planned end) adds a statement to
//! an inline policy of the assumed role, `pedm-revoked-sessions`, that denies everything to
//! sessions tagged with that grant until its planned end (after which the session policy
//! denies them anyway, and the statement is pruned at the next write). IAM allows 10,240
//! characters of inline policy per role: past that, the statements merge into one listing
//! every such grant until the latest of their ends (about 200 grants fit); past that, the
//! revoke fails and is retried, so nothing is lost silently.

use std::time::Duration;

use aws_sdk_sts::types::Tag;
use jiff::Timestamp;
use serde_json::{Value, json};

use super::{classify, code_of};
use crate::{Credentials, GrantSpec, ProvisionError, transport_error, truncate};

/// The inline policy of an assumed role that holds the revoked grants' denials.
pub(super) const REVOKED_POLICY: &str = "pedm-revoked-sessions";
/// Where a statement names the grant(s) it denies.
const GRANT_TAG: &str = "/Condition/StringEquals/aws:PrincipalTag~1pedm-grant";
/// The statement that lists many grants once one statement each no longer fits.
const MERGED_SID: &str = "PedmRevokedGrants";
/// Room left under IAM's 10,240 characters of inline policy per role.
const REVOKED_POLICY_MAX: usize = 9_000;
/// The console session AWS's federation endpoint allows at most (12 hours).
const MAX_CONSOLE_SESSION: Duration = Duration::from_secs(12 * 3600);
/// What AWS documents for a sign-in URL's life.
pub(super) const SIGN_IN_URL_LIFE: &str = "15 minutes";

/// A role session's credentials (secrets: never logged) and what to record about them.
pub(super) struct Session {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// Never after the grant's end.
    pub expires_at: Timestamp,
    /// `arn:aws:sts::…:assumed-role/ROLE/pedm-USER-GRANT`.
    pub assumed: String,
}

fn time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `sts:AssumeRole` of `role_arn` for `g`'s holder for `duration`: source identity the pedm
/// user, session tags naming the grant, user and role, and a session policy that denies
/// everything after the grant's end (STS cannot issue shorter than 15 minutes; AWS enforces
/// this to the second).
pub(super) async fn assume(
    sts: &aws_sdk_sts::Client,
    g: &GrantSpec,
    role_arn: &str,
    duration: Duration,
) -> Result<Session, ProvisionError> {
    let id = g.grant_id.simple().to_string();
    // [\w+=,.@-]{2,64}: pedm user names are letters, digits and ._- already.
    let session_name: String = format!("pedm-{}-{}", g.user, &id[id.len() - 8..])
        .chars()
        .take(64)
        .collect();
    let session_policy = json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "PedmGrantWindow", "Effect": "Allow", "Action": "*", "Resource": "*"},
            {"Sid": "PedmGrantEnd", "Effect": "Deny", "Action": "*", "Resource": "*",
             "Condition": {"DateGreaterThan": {"aws:CurrentTime": time(g.expires_at)}}}
        ]
    })
    .to_string();
    let tag = |k: &str, v: &str| {
        Tag::builder()
            .key(k)
            .value(v)
            .build()
            .map_err(|e| ProvisionError::invalid(format!("session tag {k}: {e}")))
    };
    let out = sts
        .assume_role()
        .role_arn(role_arn)
        .role_session_name(session_name)
        .source_identity(&g.user)
        .duration_seconds(i32::try_from(duration.as_secs()).unwrap_or(3600))
        .policy(session_policy)
        .tags(tag("pedm-grant", &g.grant_id.to_string())?)
        .tags(tag("pedm-user", &g.user)?)
        .tags(tag("pedm-role", &g.role)?)
        .send()
        .await
        .map_err(|e| classify("sts:AssumeRole", e))?;
    let Some(creds) = out.credentials() else {
        return Err(ProvisionError::refused(
            "sts:AssumeRole answered without credentials",
        ));
    };
    let sts_end = Timestamp::from_second(creds.expiration().secs())
        .map_err(|e| ProvisionError::refused(format!("sts:AssumeRole expiration: {e}")))?;
    Ok(Session {
        access_key_id: creds.access_key_id().to_string(),
        secret_access_key: creds.secret_access_key().to_string(),
        session_token: creds.session_token().to_string(),
        // Callers (the AWS CLI, SDKs) ask again once this passes: never later than the grant.
        expires_at: sts_end.min(g.expires_at),
        assumed: out
            .assumed_role_user()
            .map(|u| u.arn().to_string())
            .unwrap_or_default(),
    })
}

/// The session as the AWS CLI's `credential_process` JSON.
pub(super) fn credential_process(s: &Session, g: &GrantSpec, role_arn: &str) -> Credentials {
    Credentials {
        kind: "aws",
        expires_at: s.expires_at,
        value: json!({
            "Version": 1,
            "AccessKeyId": s.access_key_id,
            "SecretAccessKey": s.secret_access_key,
            "SessionToken": s.session_token,
            "Expiration": time(s.expires_at),
        }),
        detail: format!(
            "assumed {role_arn} as {} (access key {}, source identity {}), until {}",
            s.assumed, s.access_key_id, g.user, s.expires_at
        ),
    }
}

/// A console sign-in URL for the session: the session is exchanged for a sign-in token at
/// AWS's federation endpoint (`getSigninToken`, sent as a form in a POST body, never in a
/// URL), for a console session as long as the credentials (at least the 15 minutes AWS
/// allows; the session policy ends it at the grant's end either way).
pub(super) async fn console_sign_in(
    http: &reqwest::Client,
    federation_url: &str,
    destination: &str,
    s: &Session,
    now: Timestamp,
) -> Result<Credentials, ProvisionError> {
    let remaining = Duration::try_from(s.expires_at.duration_since(now)).unwrap_or(Duration::ZERO);
    let console_session = remaining.clamp(super::MIN_SESSION, MAX_CONSOLE_SESSION);
    let session = json!({
        "sessionId": s.access_key_id,
        "sessionKey": s.secret_access_key,
        "sessionToken": s.session_token,
    })
    .to_string();
    let duration = console_session.as_secs().to_string();
    let resp = http
        .post(federation_url)
        .form(&[
            ("Action", "getSigninToken"),
            ("SessionType", "json"),
            ("SessionDuration", duration.as_str()),
            ("Session", session.as_str()),
        ])
        .send()
        .await
        .map_err(|e| {
            ProvisionError::Unreachable(format!("federation endpoint: {}", transport_error(&e)))
        })?;
    let status = resp.status();
    let body = resp.text().await.map_err(|e| {
        ProvisionError::Unreachable(format!("federation endpoint: {}", transport_error(&e)))
    })?;
    if !status.is_success() {
        let msg = format!(
            "federation endpoint refused the session: HTTP {status}: {}",
            truncate(&body, 300)
        );
        return Err(if status.is_server_error() || status.as_u16() == 429 {
            ProvisionError::Unreachable(msg)
        } else {
            ProvisionError::Refused(msg)
        });
    }
    let token = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v.get("SigninToken")?.as_str().map(str::to_string))
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ProvisionError::refused("federation endpoint answered without a SigninToken")
        })?;
    let mut url = reqwest::Url::parse(federation_url)
        .map_err(|e| ProvisionError::invalid(format!("federation_url: {e}")))?;
    url.query_pairs_mut()
        .clear()
        .append_pair("Action", "login")
        .append_pair("Issuer", "pedm")
        .append_pair("Destination", destination)
        .append_pair("SigninToken", &token);
    let ends = s.expires_at;
    Ok(Credentials {
        kind: "aws-console",
        expires_at: ends,
        value: json!({
            "url": url.as_str(),
            "session_expires_at": time(ends),
        }),
        detail: format!(
            "console sign-in as {} (access key {}), console session until {ends}; the \
             sign-in URL works for {SIGN_IN_URL_LIFE}",
            s.assumed, s.access_key_id
        ),
    })
}

/// `arn:aws:iam::ACCOUNT:role/path/NAME` → `NAME`.
pub(super) fn role_name(role_arn: &str) -> &str {
    role_arn.rsplit('/').next().unwrap_or(role_arn)
}

fn statement_sid(grant: &uuid::Uuid) -> String {
    format!("PedmRevoked{}", grant.simple())
}

/// The revoked-sessions policy of `role`, or an empty one.
async fn revoked_policy(iam: &aws_sdk_iam::Client, role: &str) -> Result<Value, ProvisionError> {
    match iam
        .get_role_policy()
        .role_name(role)
        .policy_name(REVOKED_POLICY)
        .send()
        .await
    {
        Ok(out) => {
            // IAM answers the document URL-encoded (RFC 3986).
            let doc = percent_encoding::percent_decode_str(out.policy_document())
                .decode_utf8()
                .map_err(|e| ProvisionError::refused(format!("{REVOKED_POLICY}: {e}")))?;
            serde_json::from_str(&doc)
                .map_err(|e| ProvisionError::refused(format!("{REVOKED_POLICY} is not JSON: {e}")))
        }
        Err(e) if code_of(&e) == Some("NoSuchEntity") => {
            Ok(json!({"Version": "2012-10-17", "Statement": []}))
        }
        Err(e) => Err(classify("iam:GetRolePolicy", e)),
    }
}

/// When a statement stops mattering: its `aws:CurrentTime` bound (the grant's planned end,
/// or the latest of them for the catch-all).
fn statement_end(st: &Value) -> Option<Timestamp> {
    st.pointer("/Condition/DateLessThan/aws:CurrentTime")?
        .as_str()?
        .parse()
        .ok()
}

/// Denies everything to `g`'s sessions of `role_arn` from now until the grant's planned end:
/// what an early end needs, since STS sessions already issued run on otherwise. Idempotent;
/// statements whose end has passed are pruned.
pub(super) async fn deny_sessions(
    iam: &aws_sdk_iam::Client,
    role_arn: &str,
    g: &GrantSpec,
    now: Timestamp,
) -> Result<String, ProvisionError> {
    let role = role_name(role_arn);
    let doc = revoked_policy(iam, role).await?;
    let (text, how) = revoked_document(&doc, g, now).map_err(|n| {
        ProvisionError::refused(format!(
            "{n} grants on role {role} ended early and are still within their windows: more \
             than IAM's inline policy size allows to deny"
        ))
    })?;
    iam.put_role_policy()
        .role_name(role)
        .policy_name(REVOKED_POLICY)
        .policy_document(text)
        .send()
        .await
        .map_err(|e| classify("iam:PutRolePolicy", e))?;
    Ok(format!("{how} on role {role}"))
}

/// `doc` with `g`'s sessions denied and ended statements pruned, and what was done; or, when
/// even one statement listing every grant is too large, how many grants it would list.
fn revoked_document(doc: &Value, g: &GrantSpec, now: Timestamp) -> Result<(String, String), usize> {
    let sid = statement_sid(&g.grant_id);
    let mut statements: Vec<Value> = doc
        .get("Statement")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|st| statement_end(st).is_none_or(|end| end > now))
        .filter(|st| st.get("Sid").and_then(Value::as_str) != Some(&sid))
        .collect();
    statements.push(json!({
        "Sid": sid,
        "Effect": "Deny",
        "Action": "*",
        "Resource": "*",
        "Condition": {
            "StringEquals": {"aws:PrincipalTag/pedm-grant": g.grant_id.to_string()},
            "DateLessThan": {"aws:CurrentTime": time(g.expires_at)},
        }
    }));
    let text = json!({"Version": "2012-10-17", "Statement": statements}).to_string();
    if text.len() <= REVOKED_POLICY_MAX {
        return Ok((text, format!("denied sessions of grant {}", g.grant_id)));
    }
    // Too many early ends at once for one statement each: one statement lists every grant,
    // until the latest of their ends.
    let mut grants: Vec<String> = Vec::new();
    for st in &statements {
        match st.pointer(GRANT_TAG) {
            Some(Value::String(id)) => grants.push(id.clone()),
            Some(Value::Array(ids)) => {
                grants.extend(ids.iter().filter_map(Value::as_str).map(str::to_string))
            }
            _ => {}
        }
    }
    grants.sort();
    grants.dedup();
    let until = statements
        .iter()
        .filter_map(statement_end)
        .max()
        .unwrap_or(g.expires_at);
    let text = json!({"Version": "2012-10-17", "Statement": [{
        "Sid": MERGED_SID,
        "Effect": "Deny",
        "Action": "*",
        "Resource": "*",
        "Condition": {
            "StringEquals": {"aws:PrincipalTag/pedm-grant": grants},
            "DateLessThan": {"aws:CurrentTime": time(until)},
        }
    }]})
    .to_string();
    if text.len() > REVOKED_POLICY_MAX {
        return Err(grants.len());
    }
    Ok((
        text,
        format!(
            "denied sessions of {} early-ended grants, grant {} among them, until {until}",
            grants.len(),
            g.grant_id
        ),
    ))
}

/// Whether `g`'s sessions of `role_arn` are denied (by a statement of its own or the
/// merged one).
pub(super) async fn sessions_denied(
    iam: &aws_sdk_iam::Client,
    role_arn: &str,
    g: &GrantSpec,
) -> Result<bool, ProvisionError> {
    let doc = revoked_policy(iam, role_name(role_arn)).await?;
    let sid = statement_sid(&g.grant_id);
    let id = g.grant_id.to_string();
    Ok(doc
        .get("Statement")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|st| match st.get("Sid").and_then(Value::as_str) {
            Some(s) if s == sid => true,
            Some(MERGED_SID) => st
                .pointer(GRANT_TAG)
                .and_then(Value::as_array)
                .is_some_and(|ids| ids.iter().any(|v| v.as_str() == Some(&id))),
            _ => false,
        }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_spec;

    fn ended_early(n: u128, end: Timestamp) -> GrantSpec {
        let mut g = test_spec("alice", serde_json::json!({}));
        g.grant_id = uuid::Uuid::from_u128(n);
        g.expires_at = end;
        g
    }

    #[test]
    fn early_ends_deny_their_own_sessions_and_ended_ones_are_pruned() {
        let now: Timestamp = "2026-12-07T10:00:00Z".parse().unwrap();
        let hour = jiff::SignedDuration::from_hours(1);
        let empty = json!({"Version": "2012-10-17", "Statement": []});
        let a = ended_early(1, now + hour);
        let (text, how) = revoked_document(&empty, &a, now).unwrap();
        assert!(how.contains(&a.grant_id.to_string()), "{how}");
        let doc: Value = serde_json::from_str(&text).unwrap();
        let st = &doc["Statement"][0];
        assert_eq!(st["Effect"], "Deny");
        assert_eq!(
            st.pointer(GRANT_TAG).unwrap(),
            &json!(a.grant_id.to_string())
        );
        assert_eq!(statement_end(st), Some(a.expires_at));

        // Again: idempotent. Another grant: a second statement.
        let (again, _) = revoked_document(&doc, &a, now).unwrap();
        assert_eq!(again, text);
        let b = ended_early(2, now + hour + hour);
        let (two, _) = revoked_document(&doc, &b, now).unwrap();
        let two: Value = serde_json::from_str(&two).unwrap();
        assert_eq!(two["Statement"].as_array().unwrap().len(), 2);

        // Once a's planned end has passed, its statement goes at the next write.
        let later = now + hour + jiff::SignedDuration::from_mins(1);
        let c = ended_early(3, later + hour);
        let (pruned, _) = revoked_document(&two, &c, later).unwrap();
        let pruned: Value = serde_json::from_str(&pruned).unwrap();
        let ids: Vec<&Value> = pruned["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .map(|st| st.pointer(GRANT_TAG).unwrap())
            .collect();
        assert_eq!(
            ids,
            [
                &json!(b.grant_id.to_string()),
                &json!(c.grant_id.to_string())
            ]
        );
    }

    #[test]
    fn too_many_early_ends_merge_into_one_statement_then_refuse() {
        let now: Timestamp = "2026-12-07T10:00:00Z".parse().unwrap();
        let mut doc = json!({"Version": "2012-10-17", "Statement": []});
        let mut merged_at = None;
        let mut n = 0;
        let refused = loop {
            n += 1;
            let g = ended_early(n, now + jiff::SignedDuration::from_mins(n as i64));
            match revoked_document(&doc, &g, now) {
                Ok((text, how)) => {
                    assert!(text.len() <= REVOKED_POLICY_MAX);
                    doc = serde_json::from_str(&text).unwrap();
                    if how.contains("early-ended grants") && merged_at.is_none() {
                        merged_at = Some(n);
                    }
                }
                Err(count) => break count,
            }
            assert!(n < 1000, "never refused");
        };
        let merged_at = merged_at.expect("merged");
        assert!(merged_at > 20, "merged after {merged_at}");
        // Every grant so far is still denied, each at least until its own end.
        let statements = doc["Statement"].as_array().unwrap();
        assert_eq!(statements[0]["Sid"], MERGED_SID);
        let mut denied = Vec::new();
        for st in statements {
            match st.pointer(GRANT_TAG).unwrap() {
                Value::String(id) => denied.push((id.clone(), statement_end(st).unwrap())),
                Value::Array(ids) => denied.extend(
                    ids.iter()
                        .map(|id| (id.as_str().unwrap().to_string(), statement_end(st).unwrap())),
                ),
                other => panic!("{other}"),
            }
        }
        assert_eq!(denied.len() as u128, n - 1);
        for i in 1..n {
            let id = uuid::Uuid::from_u128(i).to_string();
            let (_, until) = denied.iter().find(|(d, _)| *d == id).expect("denied");
            assert!(*until >= now + jiff::SignedDuration::from_mins(i as i64));
        }
        assert!(refused as u128 >= n - 1, "{refused} of {n}");
    }
}
