//! Command rules learned from what people ran: for each role, the commands its holders ran
//! in a period (a session's first command, `exec.allowed`, and with `intercept` every command
//! inside it, `session.exec` allowed), with counts, and a Cedar policy that allows exactly
//! those under the role and refuses everything else, ready to apply.

use super::*;
use crate::store::AuditFilter;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One command as policy sees it: `resource.path` and `resource.args`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommandUse {
    pub path: String,
    /// The arguments joined by single spaces, as `resource.args` has them.
    pub args: String,
    pub count: u64,
    /// Who ran it.
    pub users: Vec<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub last_at: Timestamp,
}

/// The commands a role's holders ran, and the allowlist for them.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoleCommands {
    pub target: String,
    pub role: String,
    /// Most run first.
    pub commands: Vec<CommandUse>,
    /// A Cedar policy refusing every other command under this role.
    pub policy: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommandSuggestions {
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub since: Timestamp,
    /// Exec events read.
    pub events: u64,
    pub roles: Vec<RoleCommands>,
}

/// Audit events read per page.
const PAGE: u32 = 10_000;

impl ControlPlane {
    /// The commands each role's holders ran since `since` (optionally one target's, one
    /// role's), with the narrowest allowlist covering them. Needs `read_audit`.
    pub async fn suggest_commands(
        &self,
        actor: &Actor,
        since: Timestamp,
        target: Option<&str>,
        role: Option<&str>,
    ) -> Result<CommandSuggestions> {
        self.require_admin(actor, AdminAction::ReadAudit, "policy.suggest")
            .await?;
        if let Some(t) = target {
            validate_name("target", t)?;
        }
        if let Some(r) = role {
            validate_name("role", r)?;
        }
        // (target, role) -> (path, args) -> use
        let mut uses: BTreeMap<(String, String), HashMap<(String, String), CommandUse>> =
            BTreeMap::new();
        let mut grant_roles: HashMap<Uuid, Option<(String, String)>> = HashMap::new();
        let mut events = 0u64;
        for action in ["exec.allowed", "session.exec"] {
            let mut after = None;
            loop {
                let page = self
                    .store
                    .audit_events(&AuditFilter {
                        action: Some(action.into()),
                        since: Some(since),
                        after_seq: after,
                        limit: Some(PAGE),
                        ..Default::default()
                    })
                    .await?;
                let Some(last) = page.last() else { break };
                after = Some(last.seq);
                for ev in &page {
                    if ev.outcome != Outcome::Success {
                        continue;
                    }
                    let Some(grant) = ev.data["grant"]
                        .as_str()
                        .and_then(|g| g.parse::<Uuid>().ok())
                    else {
                        continue; // a delegated task: its command is its definition
                    };
                    if let std::collections::hash_map::Entry::Vacant(e) = grant_roles.entry(grant) {
                        let r = self.store.grant(grant).await?.map(|g| (g.target, g.role));
                        e.insert(r);
                    }
                    let Some(Some((t, r))) = grant_roles.get(&grant) else {
                        continue;
                    };
                    if target.is_some_and(|x| x != t) || role.is_some_and(|x| x != r) {
                        continue;
                    }
                    let argv: Vec<String> = ev.data["argv"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|v| v.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default();
                    // Policy sees the resolved path: inside a session the exec's, for
                    // the first command its argv[0] (the agent puts the resolved path
                    // there).
                    let path = match ev.data.get("exec") {
                        Some(x) => x["resolved"].as_str().map(str::to_string),
                        None => argv.first().cloned(),
                    };
                    let Some(path) = path.filter(|p| !p.is_empty()) else {
                        continue;
                    };
                    events += 1;
                    let args = argv.get(1..).unwrap_or_default().join(" ");
                    let u = uses
                        .entry((t.clone(), r.clone()))
                        .or_default()
                        .entry((path.clone(), args.clone()))
                        .or_insert_with(|| CommandUse {
                            path,
                            args,
                            count: 0,
                            users: vec![],
                            last_at: ev.at,
                        });
                    u.count += 1;
                    u.last_at = u.last_at.max(ev.at);
                    if !u.users.contains(&ev.actor) {
                        u.users.push(ev.actor.clone());
                    }
                }
                if page.len() < PAGE as usize {
                    break;
                }
            }
        }
        let roles = uses
            .into_iter()
            .map(|((target, role), cmds)| {
                let mut commands: Vec<CommandUse> = cmds.into_values().collect();
                for c in &mut commands {
                    c.users.sort();
                }
                commands.sort_by(|a, b| {
                    b.count
                        .cmp(&a.count)
                        .then_with(|| (&a.path, &a.args).cmp(&(&b.path, &b.args)))
                });
                let policy = allowlist(&target, &role, &commands, since);
                RoleCommands {
                    target,
                    role,
                    commands,
                    policy,
                }
            })
            .collect();
        Ok(CommandSuggestions {
            since,
            events,
            roles,
        })
    }
}

/// A Cedar policy refusing, under `role` on `target`, every command but `commands`.
fn allowlist(target: &str, role: &str, commands: &[CommandUse], since: Timestamp) -> String {
    let id: String = format!("commands-{target}-{role}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut out = format!(
        "// What holders of {role} on {target} ran since {since}: only these commands are\n\
         // allowed under the role from now on. Counts and users per command in the report.\n\
         @id({})\n\
         forbid (principal, action == Pedm::Action::\"exec\", resource)\n\
         when {{ resource.target == {} && resource.role == {} }}\n\
         unless {{\n",
        cedar_string(&id),
        cedar_string(target),
        cedar_string(role),
    );
    let distinct: BTreeSet<(&str, &str)> = commands
        .iter()
        .map(|c| (c.path.as_str(), c.args.as_str()))
        .collect();
    for (i, (path, args)) in distinct.iter().enumerate() {
        let or = if i + 1 < distinct.len() { " ||" } else { "" };
        out.push_str(&format!(
            "  (resource.path == {} && resource.args == {}){or}\n",
            cedar_string(path),
            cedar_string(args)
        ));
    }
    out.push_str("};\n");
    out
}

/// A Cedar string literal for any text (quotes, backslashes and control characters escaped).
fn cedar_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_stays_inside_its_string_literal() {
        assert_eq!(cedar_string("a\"b\\c\n\u{1b}"), "\"a\\\"b\\\\c\\n\\u{1b}\"");
        let c = |p: &str, a: &str| CommandUse {
            path: p.into(),
            args: a.into(),
            count: 1,
            users: vec![],
            last_at: Timestamp::UNIX_EPOCH,
        };
        let p = allowlist(
            "web1",
            "root",
            &[
                c("/usr/bin/id", ""),
                c("/bin/echo", "\" } permit(principal,action,resource);"),
            ],
            Timestamp::UNIX_EPOCH,
        );
        assert!(p.contains("(resource.path == \"/bin/echo\" && resource.args == \"\\\" } permit(principal,action,resource);\") ||"), "{p}");
        assert!(
            p.ends_with("(resource.path == \"/usr/bin/id\" && resource.args == \"\")\n};\n"),
            "{p}"
        );
    }
}
