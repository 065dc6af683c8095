//! Tasks and delegations over HTTP: the bodies and the client methods.
//!
//! | route | what |
//! |---|---|
//! | `GET/POST /tasks`, `GET /tasks/{name}` | list, define (`manage_targets`), show tasks |
//! | `POST /tasks/{name}/check` | would this run be accepted: the delegation and the command |
//! | `GET/POST /delegations`, `GET /delegations/{id}` | list, create, show delegations |
//! | `POST /delegations/{id}/revoke` | end it and everything delegated from it |
//! | `POST /grants/{id}/delegate` | hand a grant on to a colleague (peer delegation) |

use crate::Grant;
use crate::client::{ApiError, Client};
use jiff::Timestamp;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

pub use pedm_core::delegation::{
    DelegateKind, Delegatee, Delegation, DelegationState, HostTask, ParamKind, RenderedTask,
    TaskDef, TaskDelegation, TaskError, TaskParam,
};

/// A task definition to store.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DefineTask {
    pub task: TaskDef,
    /// Replace the definition of an existing task of that name.
    #[serde(default)]
    pub replace: bool,
}

/// A delegation to create: for exactly one of `user` or `group`, at least one task or role,
/// a scope, and a deadline (`expires_at`, or `expires_in` from now).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDelegation {
    /// Pass on part of this delegation (you must be its delegate and it must allow it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default)]
    pub tasks: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    /// Target names and label selectors (`env=prod`, `env=prod,team=web`).
    pub scope: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// A duration from now: `8h`, `7d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<String>,
    /// Let the delegate pass on a subset.
    #[serde(default)]
    pub redelegate: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DelegationQuery {
    /// Also revoked and expired delegations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<bool>,
}

/// What revoking a delegation ended.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RevokedDelegations {
    /// The delegation first, then everything delegated from it.
    pub delegations: Vec<Delegation>,
    /// Grants they had pre-approved, and grants handed on from those.
    pub grants: Vec<Grant>,
}

/// A task run to check.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckTask {
    pub target: String,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

/// A run that would be accepted now.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskChecked {
    /// The delegation that allows it.
    pub delegation: Uuid,
    pub task: String,
    pub target: String,
    pub run_as: String,
    /// Exactly what would run (never through a shell).
    pub argv: Vec<String>,
    /// Whether input would be written to stdin (never shown: it may hold secrets).
    pub stdin: bool,
}

/// Hand a grant on to a colleague.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DelegateGrant {
    pub to: String,
    /// At most the grant's remaining time is given: `30m`.
    pub duration: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Client {
    pub async fn define_task(&self, body: &DefineTask) -> Result<TaskDef, ApiError> {
        self.send(Method::POST, "/tasks", body).await
    }
    pub async fn list_tasks(&self) -> Result<Vec<TaskDef>, ApiError> {
        self.get("/tasks").await
    }
    pub async fn get_task(&self, name: &str) -> Result<TaskDef, ApiError> {
        self.get(&format!("/tasks/{name}")).await
    }
    /// Whether the caller may run `name` with these parameters now, and what would run.
    pub async fn check_task(&self, name: &str, body: &CheckTask) -> Result<TaskChecked, ApiError> {
        self.send(Method::POST, &format!("/tasks/{name}/check"), body)
            .await
    }

    pub async fn create_delegation(&self, body: &CreateDelegation) -> Result<Delegation, ApiError> {
        self.send(Method::POST, "/delegations", body).await
    }
    pub async fn list_delegations(&self, q: &DelegationQuery) -> Result<Vec<Delegation>, ApiError> {
        self.get_q("/delegations", q).await
    }
    pub async fn get_delegation(&self, id: Uuid) -> Result<Delegation, ApiError> {
        self.get(&format!("/delegations/{id}")).await
    }
    /// Ends the delegation and everything delegated from it (a reason is required).
    pub async fn revoke_delegation(
        &self,
        id: Uuid,
        body: &crate::Reason,
    ) -> Result<RevokedDelegations, ApiError> {
        self.send(Method::POST, &format!("/delegations/{id}/revoke"), body)
            .await
    }

    /// Hands a grant the caller holds on to a colleague; returns the colleague's grant.
    pub async fn delegate_grant(&self, id: Uuid, body: &DelegateGrant) -> Result<Grant, ApiError> {
        self.send(Method::POST, &format!("/grants/{id}/delegate"), body)
            .await
    }
}
