//! Wire types of access reviews (`/api/v1/reviews`): see `pedm_core::access_review`.

use crate::client::{ApiError, Client};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use pedm_core::access_review::{
    Campaign, CampaignStage, CampaignView, DefaultAction, ItemCounts, ItemKind, ItemState,
    ReviewDecision, ReviewItem, ReviewScope, Usage,
};

/// `POST /reviews`: open a campaign.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartReview {
    /// Unique, e.g. `2026-Q4`.
    pub name: String,
    /// Item kinds to cover (all when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<ItemKind>,
    /// Target names and label selectors (`env=prod`); every target when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    /// How long reviewers have (`14d`).
    pub due: String,
    /// What undecided items become at the due date (`revoke` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<DefaultAction>,
    /// The group that reviews what has no owner.
    pub reviewers: String,
    /// The group undecided items go to near the due date (the reviewers when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalate_to: Option<String>,
    /// The usage window in days; items unused in it are pre-marked for removal (90).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "pedm_core::syntax::whole_number"
    )]
    pub unused_days: Option<i64>,
}

/// `POST /review-items/{id}/decide`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideItem {
    pub decision: ReviewDecision,
    /// Why (kept in the audit log and the evidence).
    pub comment: String,
}

pub use pedm_core::decision::PolicyOwnership;

/// `GET /policies/owners?overdue=true`: only the policies past their review date.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OwnersQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overdue: Option<bool>,
}

/// `GET /reviews/{campaign}?mine=true`: only the caller's items.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReviewQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mine: Option<bool>,
}

impl Client {
    pub async fn policy_owners(&self, overdue: bool) -> Result<Vec<PolicyOwnership>, ApiError> {
        self.get_q(
            "/policies/owners",
            &OwnersQuery {
                overdue: overdue.then_some(true),
            },
        )
        .await
    }
    pub async fn start_review(&self, body: &StartReview) -> Result<CampaignView, ApiError> {
        self.send(Method::POST, "/reviews", body).await
    }
    pub async fn list_reviews(&self) -> Result<Vec<Campaign>, ApiError> {
        self.get("/reviews").await
    }
    pub async fn get_review(&self, campaign: &str, mine: bool) -> Result<CampaignView, ApiError> {
        self.get_q(
            &format!("/reviews/{}", campaign),
            &ReviewQuery {
                mine: mine.then_some(true),
            },
        )
        .await
    }
    pub async fn close_review(&self, campaign: &str) -> Result<CampaignView, ApiError> {
        self.send(
            Method::POST,
            &format!("/reviews/{}/close", campaign),
            &serde_json::json!({}),
        )
        .await
    }
    pub async fn decide_review_item(
        &self,
        id: uuid::Uuid,
        body: &DecideItem,
    ) -> Result<ReviewItem, ApiError> {
        self.send(Method::POST, &format!("/review-items/{id}/decide"), body)
            .await
    }
}
