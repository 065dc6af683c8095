//! Access reviews (recertification): a *campaign* lists everything that lets someone elevate or
//! act, as *items* each sent to a reviewer with how it was used, and every item ends kept or
//! revoked (or flagged) by its due date.
//!
//! What an item can be, and what revoking it does:
//!
//! | kind | what it is | revoke |
//! |---|---|---|
//! | `eligibility` | the policies let a user request a role on a target | a `forbid` for exactly that, drafted with the campaign's other ones as one policy proposal for two-person approval when the campaign closes |
//! | `membership` | a user is in a group pedm owns that a policy names | removes the membership |
//! | `delegation` | a live delegation | revokes it (and what was passed on from it) |
//! | `external` | an external account | ends the account now (its grants end with it) |
//! | `standing` | a privileged account discovery found in a target that no grant explains | queues its removal in the target |
//!
//! Items not decided by the due date take the campaign's default: `revoke` (as above) or
//! `flag` (recorded as not reviewed, nothing changes).

use crate::delegation::Delegatee;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! word_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident => $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vm])* $variant),+ }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str { match self { $($name::$variant => $s),+ } }
            pub fn parse(s: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s)
            }
            /// Every word, for error messages.
            pub fn words() -> String {
                Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

word_enum!(
    /// What an item is about (see the module's table).
    ItemKind {
        Eligibility => "eligibility",
        Membership => "membership",
        Delegation => "delegation",
        External => "external",
        Standing => "standing",
    }
);

word_enum!(
    /// A reviewer's answer.
    ReviewDecision {
        Keep => "keep",
        Revoke => "revoke",
    }
);

word_enum!(
    /// What happens to items nobody decided by the due date.
    DefaultAction {
        /// Revoked as if the reviewer had said so (fail closed: access nobody vouches for ends).
        Revoke => "revoke",
        /// Recorded as not reviewed; nothing changes.
        Flag => "flag",
    }
);

word_enum!(
    /// Where an item stands.
    ItemState {
        Pending => "pending",
        Kept => "kept",
        Revoked => "revoked",
        /// Not decided by the due date, under the `flag` default.
        Flagged => "flagged",
    }
);

word_enum!(
    /// How far a campaign went: each step happens once, across every instance.
    CampaignStage {
        Open => "open",
        /// Reviewers with undecided items were reminded.
        Reminded => "reminded",
        /// Undecided items went to the escalation group.
        Escalated => "escalated",
        Closed => "closed",
    }
);

/// What a campaign covers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReviewScope {
    /// Item kinds (empty: all of them).
    #[serde(default)]
    pub kinds: Vec<ItemKind>,
    /// Target names and label selectors (`env=prod`), as a delegation's scope; empty: every
    /// target. Items without a target (memberships, external accounts) are about people, and
    /// are kept in scope when the person can reach one of these targets.
    #[serde(default)]
    pub targets: Vec<String>,
}

impl ReviewScope {
    pub fn covers_kind(&self, k: ItemKind) -> bool {
        self.kinds.is_empty() || self.kinds.contains(&k)
    }
}

/// A campaign as stored; `counts` is filled in when read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Campaign {
    pub id: Uuid,
    pub name: String,
    pub scope: ReviewScope,
    pub created_by: String,
    pub created_at: Timestamp,
    /// Undecided items take `default_action` at this moment.
    pub due_at: Timestamp,
    pub default_action: DefaultAction,
    /// Who reviews what has no natural reviewer (a group), and items whose natural reviewer
    /// is the person under review.
    pub reviewers: String,
    /// Who gets undecided items near the due date (a group).
    pub escalate_to: String,
    /// The usage evidence covers this many days before the start; items unused in them are
    /// pre-marked for removal.
    pub unused_days: i64,
    pub stage: CampaignStage,
    pub closed_at: Option<Timestamp>,
    /// The policy proposal holding the campaign's revoked eligibilities, once drafted.
    pub proposal: Option<i64>,
    #[serde(default)]
    pub counts: ItemCounts,
}

impl Campaign {
    /// When reviewers with undecided items are reminded: a third of the way before the due
    /// date, at most three days before it.
    pub fn remind_at(&self) -> Timestamp {
        let span = self.due_at.as_second() - self.created_at.as_second();
        let lead = (span / 3).min(3 * 86_400);
        Timestamp::from_second(self.due_at.as_second() - lead).unwrap_or(self.due_at)
    }

    /// When undecided items go to the escalation group: a tenth of the way before the due
    /// date, at most one day before it.
    pub fn escalate_at(&self) -> Timestamp {
        let span = self.due_at.as_second() - self.created_at.as_second();
        let lead = (span / 10).min(86_400);
        Timestamp::from_second(self.due_at.as_second() - lead).unwrap_or(self.due_at)
    }

    /// The next step of an open campaign and when it is due.
    pub fn next_step(&self) -> Option<(CampaignStage, Timestamp)> {
        match self.stage {
            CampaignStage::Open => Some((CampaignStage::Reminded, self.remind_at())),
            CampaignStage::Reminded => Some((CampaignStage::Escalated, self.escalate_at())),
            CampaignStage::Escalated => Some((CampaignStage::Closed, self.due_at)),
            CampaignStage::Closed => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ItemCounts {
    pub pending: u64,
    pub kept: u64,
    pub revoked: u64,
    pub flagged: u64,
}

/// How an item was used in the campaign's evidence window.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Usage {
    pub requests: u64,
    pub grants: u64,
    pub sessions: u64,
    /// The latest grant (or session) it gave; `None`: not used in the window.
    pub last_used: Option<Timestamp>,
}

/// One thing to keep or revoke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReviewItem {
    pub id: Uuid,
    pub campaign: Uuid,
    pub kind: ItemKind,
    /// Whose access it is: a user, or the account in the target (`standing`).
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The role (`eligibility`) or the privilege (`standing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The group (`membership`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegation: Option<Uuid>,
    /// What it allows, in words.
    pub detail: String,
    pub reviewer: Delegatee,
    pub usage: Usage,
    /// `revoke` when it was not used in the evidence window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggested: Option<ReviewDecision>,
    pub state: ItemState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<Timestamp>,
    /// What deciding it did (or why it could not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// What starting a campaign takes (see `ControlPlane::start_review`).
#[derive(Debug, Clone)]
pub struct NewCampaign {
    pub name: String,
    pub scope: ReviewScope,
    pub due_in_secs: i64,
    pub default_action: DefaultAction,
    /// A group.
    pub reviewers: String,
    /// A group; the reviewers when `None`.
    pub escalate_to: Option<String>,
    /// [`DEFAULT_UNUSED_DAYS`] when `None`.
    pub unused_days: Option<i64>,
}

/// The evidence window when a campaign does not say.
pub const DEFAULT_UNUSED_DAYS: i64 = 90;

/// A campaign and the items its reader may see (all of them for admins and auditors, their
/// own for a reviewer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CampaignView {
    pub campaign: Campaign,
    pub items: Vec<ReviewItem>,
}

/// Row changes about access reviews (see [`crate::store::Write::Review`]).
#[derive(Debug, Clone)]
pub enum ReviewWrite {
    /// A campaign and its items. Fails with AlreadyExists if the id or the name is taken.
    Start {
        campaign: Box<Campaign>,
        items: Vec<ReviewItem>,
    },
    /// Records an item's end; fails with Conflict unless it is still pending, NotFound if
    /// absent.
    Decide {
        id: Uuid,
        state: ItemState,
        comment: Option<String>,
        by: String,
        at: Timestamp,
        outcome: Option<String>,
    },
    /// Moves a campaign from `from` to `to`; fails with Conflict unless it is at `from` (each
    /// step once across instances). With `escalate_to`, the campaign's pending items go to
    /// that reviewer.
    Advance {
        id: Uuid,
        from: CampaignStage,
        to: CampaignStage,
        at: Timestamp,
        escalate_to: Option<Delegatee>,
    },
    /// Records the proposal drafted for the campaign's revoked eligibilities.
    SetProposal { id: Uuid, proposal: i64 },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_come_before_the_due_date_in_order() {
        let t = |s: i64| Timestamp::from_second(s).unwrap();
        let mut c = Campaign {
            id: Uuid::nil(),
            name: "q".into(),
            scope: ReviewScope::default(),
            created_by: "a".into(),
            created_at: t(0),
            due_at: t(14 * 86_400),
            default_action: DefaultAction::Revoke,
            reviewers: "r".into(),
            escalate_to: "e".into(),
            unused_days: 90,
            stage: CampaignStage::Open,
            closed_at: None,
            proposal: None,
            counts: ItemCounts::default(),
        };
        assert_eq!(c.remind_at(), t(11 * 86_400));
        assert_eq!(c.escalate_at(), t(13 * 86_400));
        c.due_at = t(100);
        assert!(c.remind_at() < c.escalate_at() && c.escalate_at() < c.due_at);
        c.stage = CampaignStage::Escalated;
        assert_eq!(c.next_step(), Some((CampaignStage::Closed, t(100))));
        assert_eq!(ItemKind::parse("standing"), Some(ItemKind::Standing));
        assert_eq!(ItemKind::parse("x"), None);
    }
}
