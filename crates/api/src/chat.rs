//! Chat identities over HTTP: `POST /me/links/slack` redeems the code `/pedm link` showed a
//! Slack user, linking that Slack user to the caller (who then approves from Slack as
//! themselves).

use crate::client::{ApiError, Client};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SlackLink {
    /// The code from `/pedm link` (`pedm-slack.<team>.<user>.<expiry>.<tag>`), valid 10 minutes.
    pub code: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SlackLinked {
    /// The Slack workspace id.
    pub team: String,
    /// The Slack user id now linked.
    pub slack_user: String,
    /// The pedm user it is linked to (the caller).
    pub user: String,
}

/// One notification channel (a webhook or a Slack app) and its counts since this server
/// instance started (`GET /notify/status`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChannelStatus {
    pub name: String,
    /// `webhook` or `slack`.
    pub kind: String,
    /// Waiting to be sent now.
    pub queued: u64,
    pub delivered: u64,
    /// Given up on (refused, attempts exhausted, cut off at shutdown).
    pub failed: u64,
    /// Never queued: the queue was full.
    pub dropped: u64,
    /// Attempts beyond the first.
    pub retries: u64,
}

impl Client {
    /// Every notification channel of the instance answering (admins and auditors).
    pub async fn notify_status(&self) -> Result<Vec<ChannelStatus>, ApiError> {
        self.get("/notify/status").await
    }
    pub async fn link_slack(&self, b: &SlackLink) -> Result<SlackLinked, ApiError> {
        self.send(Method::POST, "/me/links/slack", b).await
    }
}
