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

impl Client {
    pub async fn link_slack(&self, b: &SlackLink) -> Result<SlackLinked, ApiError> {
        self.send(Method::POST, "/me/links/slack", b).await
    }
}
