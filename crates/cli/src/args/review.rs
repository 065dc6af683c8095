//! Access reviews: `pedm review`.

use super::*;

#[derive(Debug, Subcommand)]
pub enum ReviewCmd {
    /// Open a campaign (admin): every eligibility, group membership, delegation, external
    /// account and standing privilege in scope becomes an item for its reviewer (a target's
    /// `owner` label, a delegation's giver, an external account's sponsor, or --reviewers),
    /// with its use in the last --unused-days; unused items are pre-marked for removal.
    Start {
        /// A unique name, such as 2026-Q4.
        #[arg(long)]
        name: String,
        /// Item kinds to cover, comma-separated: eligibility, membership, delegation,
        /// external, standing (all when absent).
        #[arg(long, value_delimiter = ',', value_name = "KINDS")]
        kinds: Vec<String>,
        /// Target names and label selectors (env=prod) to cover (repeatable; all when absent).
        #[arg(long = "target", value_name = "TARGET|KEY=VALUE")]
        targets: Vec<String>,
        /// How long reviewers have, such as 14d.
        #[arg(long, value_name = "DURATION")]
        due: DurationArg,
        /// What items nobody decided become at the due date: revoke (the default) or flag.
        #[arg(long, value_name = "revoke|flag")]
        default: Option<String>,
        /// The group that reviews what has no owner.
        #[arg(long, value_name = "GROUP")]
        reviewers: String,
        /// The group undecided items go to near the due date (default: --reviewers).
        #[arg(long, value_name = "GROUP")]
        escalate_to: Option<String>,
        /// The usage window in days (default 90).
        #[arg(long, value_name = "DAYS")]
        unused_days: Option<i64>,
    },
    /// Campaigns (all for admins and auditors, those with items for you otherwise).
    List,
    /// A campaign's items (yours only with --mine, or when you are not an admin).
    Show {
        /// Its name or id.
        campaign: String,
        #[arg(long)]
        mine: bool,
    },
    /// Keep an item, with a comment.
    Keep {
        item: Uuid,
        #[arg(long, short = 'c', value_name = "TEXT")]
        comment: String,
    },
    /// Revoke an item, with a comment: takes effect at once (an eligibility becomes part of
    /// the campaign's policy proposal when it closes).
    Revoke {
        item: Uuid,
        #[arg(long, short = 'c', value_name = "TEXT")]
        comment: String,
    },
    /// End a campaign before its due date (admin): undecided items take its default.
    Close {
        /// Its name or id.
        campaign: String,
    },
}
