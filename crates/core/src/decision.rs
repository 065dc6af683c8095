//! Who may get what, and who may approve it: one interface, so the Cedar engine replaces the
//! interim rule without touching the workflow.

use crate::model::{Actor, Request, Role, Target};

/// What is being asked for, with everything a policy may look at.
#[derive(Debug, Clone)]
pub struct RequestInput<'a> {
    pub principal: &'a Actor,
    pub target: &'a Target,
    pub role: &'a Role,
    pub duration_secs: i64,
    pub justification: &'a str,
    pub task: Option<&'a str>,
    pub ticket: Option<&'a str>,
    pub source_addr: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestDecision {
    /// Refused; `reason` names the rule or policy that refused.
    Deny { reason: String },
    /// Granted at once; `reason` names the rule that allowed it.
    AutoApprove { reason: String },
    /// Needs `approvals` approvals from eligible approvers.
    NeedsApproval { approvals: u32 },
}

pub trait Decider: Send + Sync + 'static {
    fn decide_request(&self, input: &RequestInput<'_>) -> RequestDecision;
    /// Whether `approver` may approve or deny `request`. `Err` names why not. Self-approval is
    /// refused by the workflow before this is asked.
    fn may_approve(&self, approver: &Actor, request: &Request) -> Result<(), String>;
}

/// The interim rule until policies decide: any user may request any role; roles marked
/// `auto_approve` are granted at once; everything else needs one approval by an admin.
#[derive(Debug, Default, Clone, Copy)]
pub struct BuiltinDecider;

impl Decider for BuiltinDecider {
    fn decide_request(&self, input: &RequestInput<'_>) -> RequestDecision {
        if input.role.auto_approve {
            RequestDecision::AutoApprove {
                reason: format!(
                    "role {}/{} is auto-approved",
                    input.target.name, input.role.name
                ),
            }
        } else {
            RequestDecision::NeedsApproval { approvals: 1 }
        }
    }

    fn may_approve(&self, approver: &Actor, _request: &Request) -> Result<(), String> {
        if approver.admin {
            Ok(())
        } else {
            Err(format!(
                "{} is not an approver (only admins approve)",
                approver.user
            ))
        }
    }
}
