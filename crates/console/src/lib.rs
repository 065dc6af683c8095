//! pedmd's web console: server-rendered pages under `/ui/` for requesters, approvers, admins
//! and auditors, over the same [`ControlPlane`] services as the HTTP API (no rule lives here:
//! every decision, refusal and audit event is the core's).
//!
//! Security shape: a console session is a pedm token minted at sign-in and held in a
//! `__Host-` cookie (`Secure; HttpOnly; SameSite=Lax`); the idle timeout is checked by the
//! core on every request. Every state change is a POST carrying a CSRF token derived from the
//! session token. Responses carry a strict Content-Security-Policy (no inline script),
//! `X-Frame-Options: DENY` and `Cache-Control: no-store`; templates escape everything.
//! Live updates are Server-Sent Events telling the page which region to fetch again.

mod admin;
mod assets;
mod audit;
mod breakglass;
mod catalog;
pub mod charts;
mod delegations;
mod error;
mod live;
mod mail;
mod pages;
mod policies;
mod reports;
mod reviews;
mod session;
mod sessions;
mod sso;
mod tasks;
mod view;
mod watch;

pub use admin::{ChannelInfo, NotificationChannels};
pub use audit::{AuditIntegrity, AuditStatus, CheckpointInfo};
pub use live::LiveChanges;
pub use sso::{SingleSignOn, SsoError, SsoStart};
pub use watch::{HostAgents, LiveInfo, LiveItem, LiveWatch, TaskRunView};

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use pedm_core::service::ControlPlane;
use std::sync::Arc;

/// The console's settings (`[console]` in pedmd's configuration).
#[derive(Debug, Clone)]
pub struct Settings {
    /// A session unused this long is ended.
    pub idle_secs: i64,
    /// A session ends this long after sign-in, used or not.
    pub session_secs: i64,
    /// The console's own address as browsers reach it (`https://pedm.example.com`): the
    /// identity provider sends people back to `<public_url>/ui/auth/callback`. Without it,
    /// single sign-on is not offered in the console.
    pub public_url: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            idle_secs: 30 * 60,
            session_secs: 8 * 3600,
            public_url: None,
        }
    }
}

#[derive(Clone)]
pub struct Console {
    cp: Arc<ControlPlane>,
    settings: Arc<Settings>,
    sso: Option<Arc<dyn SingleSignOn>>,
    audit: Option<Arc<dyn AuditIntegrity>>,
    /// Where the host agents' recordings are kept (`agents.recordings_dir`).
    recordings: Option<std::path::PathBuf>,
    live: Arc<LiveChanges>,
    /// The host agents' hub: its key, the sessions streaming here as they run.
    agents: Option<Arc<dyn HostAgents>>,
    /// The notification channels (webhooks, chat, mail) and how their deliveries go.
    channels: Option<Arc<dyn NotificationChannels>>,
}

impl Console {
    /// `live` must also be registered as an observer of `cp` (it learns of changes there).
    pub fn new(cp: Arc<ControlPlane>, settings: Settings, live: Arc<LiveChanges>) -> Self {
        Console {
            cp,
            settings: Arc::new(settings),
            sso: None,
            audit: None,
            recordings: None,
            live,
            agents: None,
            channels: None,
        }
    }

    /// Offers single sign-on (with `Settings::public_url`).
    pub fn with_sso(mut self, sso: Arc<dyn SingleSignOn>) -> Self {
        self.sso = Some(sso);
        self
    }

    /// Replays the recordings kept in `dir`.
    pub fn with_recordings(mut self, dir: std::path::PathBuf) -> Self {
        self.recordings = Some(dir);
        self
    }

    /// Registers hosts with the agents' server key; lists the sessions streaming here, lets
    /// people watch them and admins end them.
    pub fn with_agents(mut self, hub: Arc<dyn HostAgents>) -> Self {
        self.agents = Some(hub);
        self
    }

    /// Shows the notification channels and their deliveries on the admin page.
    pub fn with_channels(mut self, channels: Arc<dyn NotificationChannels>) -> Self {
        self.channels = Some(channels);
        self
    }

    /// Shows the log's verification status and offers its exports.
    pub fn with_audit(mut self, audit: Arc<dyn AuditIntegrity>) -> Self {
        self.audit = Some(audit);
        self
    }

    /// Every route under `/ui`, with the console's security headers.
    pub fn router(self) -> Router {
        pages::router()
            .merge(sso::router())
            .merge(audit::router())
            .merge(policies::router())
            .merge(sessions::router())
            .merge(watch::router())
            .merge(tasks::router())
            .merge(breakglass::router())
            .merge(reviews::router())
            .merge(admin::router())
            .merge(catalog::router())
            .merge(reports::router())
            .merge(delegations::router())
            .merge(live::router())
            .merge(mail::router())
            .merge(assets::router())
            .with_state(self)
            .layer(middleware::from_fn(security_headers))
    }
}

/// No inline script or style, nothing from elsewhere, never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, k: header::HeaderName, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    // A page may narrow or extend it for itself (the player's WebAssembly).
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        set(h, header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY);
    }
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::REFERRER_POLICY, "no-referrer");
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, header::CACHE_CONTROL, "no-store");
    }
    h.insert(
        header::HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    resp
}
