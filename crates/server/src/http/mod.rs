//! The HTTP transport: routes under `/api/v1/`, the OpenAPI document, health and metrics.

mod agent_scope;
mod agents;
pub mod audit;
mod contract;
mod delegation;
mod devices;
mod error;
mod external;
mod extract;
mod live;
mod locks;
mod parse_errors;
mod policy_review;
mod privacy;
mod retention;
mod reviews;
mod routes;
mod schema_rules;
mod scim;
pub mod serve;
pub mod slack;
mod ssh;
pub mod sso;
mod step_up;
mod tickets;
mod token_exchange;

pub use error::ApiErr;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use pedm_api::{API_PREFIX, Health};
use pedm_core::service::ControlPlane;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

#[derive(Clone)]
pub struct AppState {
    pub cp: Arc<ControlPlane>,
    pub metrics: Option<PrometheusHandle>,
    /// Signs audit checkpoints; `None` disables the checkpoint, proof and export routes.
    pub audit: Option<Arc<crate::audit_signer::AuditSigner>>,
    /// Signs agents' snapshots and keeps their recordings; `None` disables the agent routes.
    pub agents: Option<Arc<crate::agents::AgentHub>>,
    /// `[[auth.oidc]]` providers for single sign-on (none configured: the routes say so).
    pub sso: Arc<crate::oidc::Providers>,
    /// `[[auth.workload]]` trusts for token exchange (`POST /oauth/token`).
    pub workload: Arc<crate::workload::Trusts>,
    /// `[scim] enabled`: `/scim/v2` answers (else 404).
    pub scim: bool,
    /// `[[notify.slack]]` apps: their callbacks and link codes (none: those routes say so).
    pub slack: Arc<pedm_notify::slack::Slack>,
    /// `[notify.email]`'s relay (none configured: `None`).
    pub mailer: Option<Arc<pedm_notify::email::Mailer>>,
    /// `[[notify.webhook]]` sinks (none configured: `None`).
    pub notifier: Option<pedm_notify::Notifier>,
    /// How far each outbox channel is behind.
    pub outbox_backlog: Arc<crate::outbox::Backlog>,
    /// `[[tickets.system]]`: for the systems' pushes.
    pub tickets: Arc<crate::tickets::Tickets>,
    /// `[oidc_issuer]`: its discovery document and keys (none: those routes are 404).
    pub issuer: Option<Arc<pedm_pki::oidc::OidcIssuer>>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "pedm", description = "Privilege elevation and delegation management: \
        request a role on a target for a bounded time; policy or approvers decide; \
        the grant ends by itself."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "identity", description = "Users, groups, API tokens"),
        (name = "targets", description = "Targets and the roles defined on them"),
        (name = "requests", description = "Elevation requests and their approval"),
        (name = "grants", description = "Active and ended elevations"),
        (name = "policies", description = "Cedar policies: versions, apply, simulate, approval of changes"),
        (name = "audit", description = "The audit log"),
        (name = "reviews", description = "Access reviews: campaigns, their items, keep or revoke"),
        (name = "privacy", description = "Data subjects: erasure of sealed personal data, legal holds"),
        (name = "hosts", description = "Host agents, their grant snapshots and recorded sessions"),
        (name = "sso", description = "Single sign-on with OpenID Connect: login flows, session refresh, logout"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document of every route under `/api/v1`.
pub fn openapi() -> serde_json::Value {
    document(pedm_core::service::Limits::default().max_justification_chars)
}

/// The document as served: every status completed ([`contract`]) and what each field accepts
/// ([`schema_rules`], with the server's own justification limit).
fn document(max_justification: usize) -> serde_json::Value {
    let (_, mut api) = api_router().split_for_parts();
    contract::complete(&mut api);
    let mut doc = serde_json::to_value(api).expect("the OpenAPI document serialises");
    schema_rules::apply(&mut doc, max_justification);
    doc
}

fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi()).nest(
        API_PREFIX,
        routes::router()
            .merge(audit::router())
            .merge(retention::router())
            .merge(agents::router())
            .merge(live::router())
            .merge(step_up::router())
            .merge(ssh::router())
            .merge(delegation::router())
            .merge(devices::router())
            .merge(locks::router())
            .merge(reviews::router())
            .merge(privacy::router())
            .merge(external::router())
            .merge(scim::admin_router())
            .merge(sso::router())
            .routes(utoipa_axum::routes!(slack::link))
            .routes(utoipa_axum::routes!(slack::notify_status)),
    )
}

pub fn router(
    state: AppState,
    console: Option<pedm_console::Console>,
    max_body_bytes: usize,
    timeout: Duration,
) -> Router {
    let doc = Arc::new(document(state.cp.limits().max_justification_chars));
    let (api, _) = api_router().split_for_parts();
    api.route(
        &format!("{API_PREFIX}/openapi.json"),
        get(move || {
            let doc = doc.clone();
            async move { Json(doc.as_ref().clone()) }
        }),
    )
    .route(
        "/oauth/token",
        axum::routing::post(token_exchange::exchange),
    )
    .route(
        "/integrations/slack/interactions",
        axum::routing::post(slack::interactions),
    )
    .route(
        "/integrations/slack/commands",
        axum::routing::post(slack::commands),
    )
    .route(
        "/integrations/tickets/{system}",
        axum::routing::post(tickets::pushed),
    )
    .route("/.well-known/openid-configuration", get(oidc_discovery))
    .route(pedm_pki::oidc::JWKS_PATH, get(oidc_jwks))
    .nest("/scim/v2", scim::router())
    .route("/healthz", get(healthz))
    .route("/metrics", get(render_metrics))
    .fallback(not_found)
    .with_state(state)
    .merge(console.map(|c| c.router()).unwrap_or_default())
    .layer(DefaultBodyLimit::max(max_body_bytes))
    .layer(middleware::from_fn(serve::header_limits))
    .layer(middleware::from_fn(track_metrics))
    .layer(middleware::from_fn(move |req: Request, next: Next| {
        request_deadline(timeout, req, next)
    }))
    .layer(PropagateRequestIdLayer::x_request_id())
    .layer(TraceLayer::new_for_http())
    .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// How long an agent may take to upload one recording (they are streamed, up to
/// `agents.max_recording_bytes`): the general request timeout would cut large ones, and an
/// agent keeps a recording until the server has it.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(3600);

/// Every request gets `timeout`, recording uploads [`UPLOAD_TIMEOUT`]; past it, 408 with the
/// JSON error body.
async fn request_deadline(timeout: Duration, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let agent_session = path.starts_with(&format!("{API_PREFIX}/agent/sessions/"));
    // A live stream lasts as long as its session; its handler ends an idle one. The
    // console's event stream lasts as long as its page.
    if (agent_session && req.method() == axum::http::Method::POST && path.ends_with("/live"))
        || path == "/ui/events"
    {
        return next.run(req).await;
    }
    let limit = if agent_session && req.method() == axum::http::Method::PUT {
        UPLOAD_TIMEOUT.max(timeout)
    } else {
        timeout
    };
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiErr::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!("the request took longer than {}s", limit.as_secs()),
        )
        .into_response(),
    }
}

async fn healthz(State(s): State<AppState>) -> Response {
    // Healthy means the store answers, not just that the process runs.
    match s.cp.store().audit_head().await {
        Ok(_) => Json(Health {
            status: "ok".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        })
        .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "health check: storage unavailable");
            ApiErr::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage",
                "storage is unavailable",
            )
            .into_response()
        }
    }
}

async fn render_metrics(State(s): State<AppState>) -> Response {
    match &s.metrics {
        Some(h) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            h.render(),
        )
            .into_response(),
        None => ApiErr::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "metrics are not enabled",
        )
        .into_response(),
    }
}

/// `[oidc_issuer]`'s discovery document, for relying parties checking pedm's ID tokens.
async fn oidc_discovery(
    axum::extract::State(s): axum::extract::State<AppState>,
    uri: axum::http::Uri,
) -> Result<Json<serde_json::Value>, ApiErr> {
    match &s.issuer {
        Some(i) => Ok(Json(i.discovery())),
        None => Err(not_found(uri).await),
    }
}

/// `[oidc_issuer]`'s public keys (JWKS).
async fn oidc_jwks(
    axum::extract::State(s): axum::extract::State<AppState>,
    uri: axum::http::Uri,
) -> Result<Json<serde_json::Value>, ApiErr> {
    match &s.issuer {
        Some(i) => Ok(Json(i.jwks())),
        None => Err(not_found(uri).await),
    }
}

async fn not_found(uri: axum::http::Uri) -> ApiErr {
    ApiErr::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {}", uri.path()),
    )
}

async fn track_metrics(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("pedm_http_requests_total", &labels).increment(1);
    metrics::histogram!("pedm_http_request_duration_seconds", &labels)
        .record(start.elapsed().as_secs_f64());
    resp
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_response_in_the_openapi_document_has_a_description() {
        let doc = super::openapi();
        let mut missing = vec![];
        for (path, ops) in doc["paths"].as_object().expect("paths") {
            for (method, op) in ops.as_object().expect("operations") {
                let Some(responses) = op.get("responses").and_then(|r| r.as_object()) else {
                    continue;
                };
                for (status, r) in responses {
                    if r["description"]
                        .as_str()
                        .is_none_or(|d| d.trim().is_empty())
                    {
                        missing.push(format!("{method} {path} {status}"));
                    }
                }
            }
        }
        assert!(
            missing.is_empty(),
            "responses without a description: {missing:?}"
        );
    }

    /// The document is valid OpenAPI for an independent validator (`openapi-spec-validator`,
    /// installed by `scripts/install-test-deps`; skipped when it is not installed).
    #[test]
    fn the_openapi_document_passes_openapi_spec_validator() {
        let have = std::process::Command::new("python3")
            .args(["-c", "import openapi_spec_validator"])
            .status()
            .is_ok_and(|s| s.success());
        if !have {
            println!("SKIP: python3 module openapi_spec_validator is not installed");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("openapi.json");
        std::fs::write(&file, serde_json::to_vec(&super::openapi()).expect("json")).unwrap();
        let o = std::process::Command::new("python3")
            .args([
                "-c",
                "import json, sys\nfrom openapi_spec_validator import validate\n\
                 validate(json.load(open(sys.argv[1])))",
            ])
            .arg(&file)
            .output()
            .expect("python3");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}
