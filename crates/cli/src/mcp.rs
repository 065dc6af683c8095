//! `pedm mcp`: the Model Context Protocol over stdin/stdout (the official Rust SDK, `rmcp`),
//! so an AI agent acting for a person can see what that person may request, ask for it with a
//! justification, wait for the decision and see the person's grants.
//!
//! It runs only with an agent token (`pedm token create --for-agent`): the server lets such a
//! token do nothing else (its allow-list, `server/src/http/agent_scope.rs`) and marks its
//! requests `context.via_agent`, which the default policies send to a person for approval.
//! There is no tool to approve, deny, mint tokens or run anything, and nothing an agent passes
//! reaches a shell: every tool is one typed API call (or a few reads). Standard output is the
//! protocol channel; anything for people goes to standard error.

use crate::UsageError;
use pedm_api::{
    ApiError, Client, CreateRequest, GrantQuery, Reason, Request, RequestDetail, RequestQuery,
    RequestState,
};
use rmcp::handler::server::common::{schema_for_empty_input, schema_for_input};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, JsonObject, ServerCapabilities, ServerConfig,
};
use rmcp::{ErrorData, ServerHandler, ServiceExt, schemars, tool, tool_handler, tool_router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// The longest `wait_for_decision` waits in one call.
pub const MAX_WAIT_SECS: u64 = 600;
/// How long `wait_for_decision` waits when not told.
const DEFAULT_WAIT_SECS: u64 = 300;
/// How often a waiting call reads the request again (the API has no wait of its own).
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Why `pedm mcp` will not start with the token it was given.
pub const NOT_AN_AGENT_TOKEN: &str = "pedm mcp runs only with a token minted for an AI agent, \
    so that a person's own token (which can approve, administer and mint tokens) is never \
    handed to an agent: mint one with `pedm token create --for-agent --expires-in 8h` and put \
    it in the agent's MCP configuration as PEDM_TOKEN or in a file named by PEDM_TOKEN_FILE";

const INSTRUCTIONS: &str = "pedm grants privileges (a role on a target: root on a host, a \
    database role) for a bounded time, with a reason. You act for one person. Use \
    list_requestable to see what they may ask for, request_access with an honest, specific \
    justification (a person reads it and decides), then wait_for_decision. You cannot approve \
    requests or obtain tokens; requests you make always wait for a person's approval unless \
    policy says otherwise. Durations are written like 30m, 1h, 1h30m.";

/// Starts the server on stdin/stdout once the server confirmed `client`'s token is an agent
/// token; returns when the client closes the connection.
pub async fn serve(client: Client) -> anyhow::Result<()> {
    let me = client.whoami().await.map_err(|e| match e {
        ApiError::Server {
            status: 401,
            message,
            ..
        } => anyhow::Error::from(UsageError(format!(
            "pedm mcp: the server refused the token ({message}); {NOT_AN_AGENT_TOKEN}"
        ))),
        e => anyhow::Error::from(e),
    })?;
    match me.token.as_ref().map(|t| t.kind.as_str()) {
        Some("agent") => {}
        kind => {
            let what = match kind {
                None => "no token".to_string(),
                Some(k) => format!("a token of kind {k}"),
            };
            return Err(UsageError(format!(
                "pedm mcp: refusing to start with {what} (of {}); {NOT_AN_AGENT_TOKEN}",
                me.user.name
            ))
            .into());
        }
    }
    eprintln!(
        "pedm mcp: serving the Model Context Protocol on stdin/stdout for {} at {}",
        me.user.name,
        client.base_url()
    );
    let running = PedmMcp::new(client)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| anyhow::anyhow!("pedm mcp: the MCP session did not start: {e}"))?;
    running
        .waiting()
        .await
        .map_err(|e| anyhow::anyhow!("pedm mcp: the MCP session failed: {e}"))?;
    Ok(())
}

/// The MCP server: the pedm API client of the agent's token, and its tools.
#[derive(Clone)]
pub struct PedmMcp {
    client: Arc<Client>,
    tool_router: ToolRouter<Self>,
}

// ------------------------------------------------------------------ tool inputs

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(deny_unknown_fields)]
pub struct RequestAccessArgs {
    /// The target's name, as list_requestable shows it (e.g. `web1`).
    pub target: String,
    /// The role's name on that target, as list_requestable shows it (e.g. `root`).
    pub role: String,
    /// How long the privilege is needed: `30m`, `1h`, `1h30m` (at most the role's maximum).
    pub duration: String,
    /// Why, specifically: what you will do with it and for which task. A person reads it,
    /// decides, and it is kept in the audit log.
    pub justification: String,
    /// A change or incident ticket reference, where the work has one (`CHG-1234`).
    #[serde(default)]
    pub ticket: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(deny_unknown_fields)]
pub struct RequestIdArgs {
    /// The request's id (a UUID, as request_access returned it).
    pub id: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(deny_unknown_fields)]
pub struct WaitArgs {
    /// The request's id (a UUID, as request_access returned it).
    pub id: String,
    /// How long to wait for a decision, in seconds: 1 to 600 (default 300).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(deny_unknown_fields)]
pub struct CancelArgs {
    /// The request's id (a UUID, as request_access returned it).
    pub id: String,
    /// Why it is no longer needed.
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(deny_unknown_fields)]
pub struct StateFilter {
    /// Only those in this state (requests: pending, approved, denied, cancelled, expired;
    /// grants: active, scheduled, released, revoked, expired).
    #[serde(default)]
    pub state: Option<String>,
}

/// The input schema of a tool taking `T` (an empty object's if the schema cannot be made,
/// which the tools' own checks make harmless).
fn schema<T: schemars::JsonSchema + 'static>() -> Arc<JsonObject> {
    schema_for_input::<T>().unwrap_or_else(|_| schema_for_empty_input())
}

/// The tool's arguments as `T`, or why not, naming what is wrong with them (MCP: input
/// errors are the tool's, so the agent can correct itself).
fn args<T: DeserializeOwned>(tool: &str, input: JsonObject) -> Result<T, String> {
    serde_json::from_value(Value::Object(input))
        .map_err(|e| format!("{tool}: invalid arguments: {e}"))
}

/// A tool's answer: its JSON object (as text, and as structured content), or a tool error
/// with the message; never an empty success.
fn finish(r: Result<Value, String>) -> Result<CallToolResult, ErrorData> {
    Ok(match r {
        Ok(value) => CallToolResult::structured(value),
        Err(message) => CallToolResult::error(vec![ContentBlock::text(message)]),
    })
}

/// What the server said, for the agent: its own message.
fn api_error(what: &str, e: ApiError) -> String {
    match e {
        ApiError::Server {
            status, message, ..
        } => format!("{what}: refused by pedm (HTTP {status}): {message}"),
        e => format!("{what}: {e}"),
    }
}

fn request_id(tool: &str, id: &str) -> Result<Uuid, String> {
    id.trim().parse::<Uuid>().map_err(|_| {
        format!(
            "{tool}: invalid id {id:?}: a request id is a UUID such as \
             0190d3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d (request_access returns it)"
        )
    })
}

fn request_json(r: &Request) -> Value {
    json!({
        "id": r.id,
        "state": r.state,
        "target": r.target,
        "role": r.role,
        "duration": pedm_api::format_duration(r.duration_secs),
        "justification": r.justification,
        "ticket": r.ticket,
        "created_at": r.created_at,
        "pending_until": r.pending_until,
        "decided_at": r.decided_at,
        "decided_by": r.decided_by,
        "decision_reason": r.decision_reason,
        "approvals_required": r.approvals_required,
        "policy": r.policy,
        "grant_id": r.grant_id,
        "via_agent": r.context.via_agent,
    })
}

fn grant_json(g: &pedm_api::Grant) -> Value {
    json!({
        "id": g.id,
        "request_id": g.request_id,
        "target": g.target,
        "role": g.role,
        "state": g.state,
        "starts_at": g.starts_at,
        "expires_at": g.expires_at,
        "ended_at": g.ended_at,
        "provision_state": g.provision_state,
    })
}

impl PedmMcp {
    pub fn new(client: Client) -> Self {
        PedmMcp {
            client: Arc::new(client),
            tool_router: Self::tool_router(),
        }
    }

    /// A request with its approvals and, once granted, its grant.
    async fn status(&self, what: &str, id: Uuid) -> Result<Value, String> {
        let RequestDetail { request, approvals } = self
            .client
            .get_request(id)
            .await
            .map_err(|e| api_error(what, e))?;
        let mut out = request_json(&request);
        out["approvals"] = json!(
            approvals
                .iter()
                .map(|a| json!({
                    "by": a.approver, "decision": a.decision, "comment": a.comment, "at": a.at,
                }))
                .collect::<Vec<_>>()
        );
        if let Some(g) = request.grant_id {
            let grant = self
                .client
                .get_grant(g)
                .await
                .map_err(|e| api_error(what, e))?;
            out["grant"] = grant_json(&grant);
        }
        Ok(out)
    }

    async fn request_access_(&self, input: JsonObject) -> Result<Value, String> {
        const TOOL: &str = "request_access";
        let a: RequestAccessArgs = args(TOOL, input)?;
        // Checked here too, so the agent hears what a duration looks like.
        if let Err(e) = pedm_api::parse_duration(a.duration.trim()) {
            return Err(format!(
                "{TOOL}: invalid duration {:?}: {e} (write it like 30m, 1h or 1h30m)",
                a.duration
            ));
        }
        let body = CreateRequest {
            target: a.target,
            role: a.role,
            duration: a.duration.trim().to_string(),
            justification: a.justification,
            task: None,
            ticket: a.ticket.filter(|t| !t.trim().is_empty()),
            break_glass: false,
            start: None,
        };
        let created = self
            .client
            .create_request(&body)
            .await
            .map_err(|e| api_error(TOOL, e))?;
        let mut out = request_json(&created.request);
        if let Some(g) = &created.grant {
            out["grant"] = grant_json(g);
        }
        out["next"] = json!(match created.request.state {
            RequestState::Pending =>
                "waiting for a person's approval: call wait_for_decision with this id",
            RequestState::Approved => "granted",
            _ => "not granted: see decision_reason",
        });
        Ok(out)
    }

    async fn wait_for_decision_(&self, input: JsonObject) -> Result<Value, String> {
        const TOOL: &str = "wait_for_decision";
        let a: WaitArgs = args(TOOL, input)?;
        let id = request_id(TOOL, &a.id)?;
        let secs = a.timeout_secs.unwrap_or(DEFAULT_WAIT_SECS);
        if !(1..=MAX_WAIT_SECS).contains(&secs) {
            return Err(format!(
                "{TOOL}: invalid timeout_secs {secs}: give 1 to {MAX_WAIT_SECS} seconds"
            ));
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let mut out = self.status(TOOL, id).await?;
            let pending = out["state"] == json!(RequestState::Pending);
            let now = tokio::time::Instant::now();
            if !pending || now >= deadline {
                out["timed_out"] = json!(pending);
                return Ok(out);
            }
            tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
        }
    }

    async fn cancel_request_(&self, input: JsonObject) -> Result<Value, String> {
        const TOOL: &str = "cancel_request";
        let a: CancelArgs = args(TOOL, input)?;
        let id = request_id(TOOL, &a.id)?;
        let reason = Reason {
            reason: a.reason.filter(|r| !r.trim().is_empty()),
        };
        let r = self
            .client
            .cancel_request(id, &reason)
            .await
            .map_err(|e| api_error(TOOL, e))?;
        Ok(request_json(&r))
    }
}

#[tool_router]
impl PedmMcp {
    /// The roles the person may ask for now, on which targets, for how long at most, and
    /// whether a request would wait for approvers (requests made through this server always
    /// do under the default policies).
    #[tool(
        input_schema = schema_for_empty_input(),
        annotations(title = "What may I request?", read_only_hint = true)
    )]
    async fn list_requestable(&self) -> Result<CallToolResult, ErrorData> {
        finish(
            self.client
                .requestable()
                .await
                .map(|roles| json!({ "requestable": roles }))
                .map_err(|e| api_error("list_requestable", e)),
        )
    }

    /// Ask for a role on a target for a duration, with a justification a person will read.
    /// Returns the request's id and state (pending while it waits for approvers; approved
    /// with the grant if policy granted it at once; denied with the reason).
    #[tool(
        input_schema = schema::<RequestAccessArgs>(),
        annotations(title = "Request access", read_only_hint = false, destructive_hint = false)
    )]
    async fn request_access(&self, input: JsonObject) -> Result<CallToolResult, ErrorData> {
        finish(self.request_access_(input).await)
    }

    /// A request's state, its approvals so far and, once granted, its grant.
    #[tool(
        input_schema = schema::<RequestIdArgs>(),
        annotations(title = "Request status", read_only_hint = true)
    )]
    async fn request_status(&self, input: JsonObject) -> Result<CallToolResult, ErrorData> {
        const TOOL: &str = "request_status";
        let id = match args::<RequestIdArgs>(TOOL, input).and_then(|a| request_id(TOOL, &a.id)) {
            Ok(id) => id,
            Err(e) => return finish(Err(e)),
        };
        finish(self.status(TOOL, id).await)
    }

    /// Wait until a request is decided (approved, denied, cancelled or expired) or the
    /// timeout passes, then report it as request_status does, with `timed_out`.
    #[tool(
        input_schema = schema::<WaitArgs>(),
        annotations(title = "Wait for the decision", read_only_hint = true)
    )]
    async fn wait_for_decision(&self, input: JsonObject) -> Result<CallToolResult, ErrorData> {
        finish(self.wait_for_decision_(input).await)
    }

    /// The person's requests, newest first (optionally only those in one state).
    #[tool(
        input_schema = schema::<StateFilter>(),
        annotations(title = "My requests", read_only_hint = true)
    )]
    async fn list_my_requests(&self, input: JsonObject) -> Result<CallToolResult, ErrorData> {
        const TOOL: &str = "list_my_requests";
        let f: StateFilter = match args(TOOL, input) {
            Ok(f) => f,
            Err(e) => return finish(Err(e)),
        };
        let q = RequestQuery {
            state: f.state,
            ..Default::default()
        };
        finish(
            self.client
                .list_requests(&q)
                .await
                .map(|rs| json!({ "requests": rs.iter().map(request_json).collect::<Vec<_>>() }))
                .map_err(|e| api_error(TOOL, e)),
        )
    }

    /// The person's grants: active ones with their expiry, and past ones (optionally only
    /// those in one state).
    #[tool(
        input_schema = schema::<StateFilter>(),
        annotations(title = "My grants", read_only_hint = true)
    )]
    async fn list_my_grants(&self, input: JsonObject) -> Result<CallToolResult, ErrorData> {
        const TOOL: &str = "list_my_grants";
        let f: StateFilter = match args(TOOL, input) {
            Ok(f) => f,
            Err(e) => return finish(Err(e)),
        };
        let q = GrantQuery {
            state: f.state,
            ..Default::default()
        };
        finish(
            self.client
                .list_grants(&q)
                .await
                .map(|gs| json!({ "grants": gs.iter().map(grant_json).collect::<Vec<_>>() }))
                .map_err(|e| api_error(TOOL, e)),
        )
    }

    /// Withdraw one of the person's pending requests.
    #[tool(
        input_schema = schema::<CancelArgs>(),
        annotations(title = "Cancel a request", read_only_hint = false, destructive_hint = false)
    )]
    async fn cancel_request(&self, input: JsonObject) -> Result<CallToolResult, ErrorData> {
        finish(self.cancel_request_(input).await)
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for PedmMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("pedm", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tools_are_exactly_the_agents() {
        let router = PedmMcp::tool_router();
        let mut names: Vec<String> = router
            .list_all()
            .into_iter()
            .map(|t| t.name.to_string())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "cancel_request",
                "list_my_grants",
                "list_my_requests",
                "list_requestable",
                "request_access",
                "request_status",
                "wait_for_decision"
            ]
        );
        let request = router
            .list_all()
            .into_iter()
            .find(|t| t.name == "request_access")
            .expect("request_access");
        let required = request.input_schema["required"].clone();
        assert_eq!(
            required,
            json!(["target", "role", "duration", "justification"])
        );
    }

    #[test]
    fn bad_arguments_are_tool_errors_naming_the_field() {
        let mut input = JsonObject::new();
        input.insert("target".into(), json!("web1"));
        let e =
            finish(args::<RequestAccessArgs>("request_access", input).map(|_| json!({}))).unwrap();
        assert_eq!(e.is_error, Some(true));
        let text = serde_json::to_string(&e.content).unwrap();
        assert!(text.contains("missing field `role`"), "{text}");
        assert!(
            request_id("request_status", "42")
                .unwrap_err()
                .contains("UUID")
        );
    }
}
