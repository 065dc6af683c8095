//! The console in process, through its HTTP interface: a control plane on SQLite with a
//! manual clock (timeouts are tested without waiting), three people (bob the admin), a
//! target with a role, and helpers that sign in, send forms and read the audit log.

#![allow(dead_code)]

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, StatusCode, header};
use jiff::Timestamp;
use pedm_console::{Console, LiveChanges, Settings};
use pedm_core::clock::ManualClock;
use pedm_core::decision::BuiltinDecider;
use pedm_core::model::*;
use pedm_core::service::{ControlPlane, Limits, NewRequest, NewRole, TokenLifetime};
use pedm_core::store::AuditFilter;
use pedm_store::SqliteStore;
use std::net::SocketAddr;
use std::sync::Arc;
use tower::ServiceExt;

pub struct World {
    pub cp: Arc<ControlPlane>,
    pub clock: Arc<ManualClock>,
    pub app: axum::Router,
    pub _dir: tempfile::TempDir,
}

pub async fn world() -> World {
    world_with(|cp| cp).await
}

/// A world whose control plane `setup` may extend (a provisioning port, ...).
pub async fn world_with(setup: impl FnOnce(ControlPlane) -> ControlPlane) -> World {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("pedm.db"))
            .await
            .unwrap(),
    );
    let clock = Arc::new(ManualClock::new(
        Timestamp::from_second(1_800_000_000).unwrap(),
    ));
    let live = Arc::new(LiveChanges::default());
    let cp = Arc::new(setup(
        ControlPlane::new(
            store,
            Arc::new(BuiltinDecider),
            clock.clone(),
            Limits::default(),
        )
        .with_observer(live.clone()),
    ));
    let sys = Actor::system();
    for (u, admin) in [("alice", false), ("bob", true), ("carol", false)] {
        cp.create_user(&sys, u, None, None, admin).await.unwrap();
    }
    cp.create_target(&sys, "web1", TargetKind::Host, None, Default::default())
        .await
        .unwrap();
    cp.create_role(
        &sys,
        NewRole {
            target: "web1".into(),
            name: "root".into(),
            description: None,
            max_duration_secs: 3600,
            auto_approve: false,
            run_as: Some("root".into()),
            noexec: false,
            allow_setuid: false,
            record_input: false,
            intercept: false,
            limits: Default::default(),
            watch_paths: vec![],
            ssh: Default::default(),
        },
    )
    .await
    .unwrap();
    let settings = Settings {
        idle_secs: 15 * 60,
        session_secs: 3600,
        public_url: None,
    };
    let app = Console::new(cp.clone(), settings, live).router();
    World {
        cp,
        clock,
        app,
        _dir: dir,
    }
}

impl World {
    pub async fn token(&self, user: &str) -> String {
        self.cp
            .create_token(&Actor::system(), Some(user), None, TokenLifetime::Default)
            .await
            .unwrap()
            .1
    }

    pub async fn send(&self, req: Request<Body>) -> Response<Body> {
        let mut req = req;
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 7], 40000))));
        self.app.clone().oneshot(req).await.unwrap()
    }

    pub async fn get(&self, path: &str, cookie: &str) -> Response<Body> {
        self.send(
            Request::get(path)
                .header(header::COOKIE, format!("__Host-pedm_session={cookie}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    pub async fn post(
        &self,
        path: &str,
        cookie: &str,
        form: &str,
        extra: &[(&str, &str)],
    ) -> Response<Body> {
        let mut b = Request::post(path)
            .header(header::COOKIE, format!("__Host-pedm_session={cookie}"))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        self.send(b.body(Body::from(form.to_string())).unwrap())
            .await
    }

    /// Approves request `id` through the page with the session's CSRF token.
    pub async fn approve(&self, cookie: &str, id: uuid::Uuid) -> Response<Body> {
        let csrf = csrf_of(self, cookie).await;
        let path = format!("/ui/requests/{id}/decide");
        self.post(&path, cookie, &format!("decision=approve&csrf={csrf}"), &[])
            .await
    }

    /// Signs in with `user`'s token; returns the session cookie's value.
    pub async fn sign_in(&self, user: &str) -> String {
        let t = self.token(user).await;
        let r = self
            .send(
                Request::post("/ui/sign-in")
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(Body::from(format!("token={t}")))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let set = r.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .to_string();
        let value = set
            .strip_prefix("__Host-pedm_session=")
            .and_then(|v| v.split(';').next())
            .unwrap()
            .to_string();
        assert_ne!(value, t, "the session is a new token, not the pasted one");
        value
    }

    pub async fn events(&self, action: &str) -> Vec<pedm_core::audit::AuditEvent> {
        self.cp
            .audit_events(
                &Actor::system(),
                AuditFilter {
                    action: Some(action.into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
    }

    pub async fn ask(&self, user: &str) -> pedm_core::model::Request {
        let actor = self
            .cp
            .authenticate(&self.token(user).await, None)
            .await
            .unwrap();
        self.cp
            .create_request(
                &actor,
                NewRequest {
                    target: "web1".into(),
                    role: "root".into(),
                    duration_secs: 600,
                    justification: "rotate the certificate".into(),
                    task: None,
                    ticket: None,
                    break_glass: false,
                    starts_at: None,
                },
                Default::default(),
            )
            .await
            .unwrap()
            .0
    }
}

pub async fn body(r: Response<Body>) -> String {
    String::from_utf8(
        axum::body::to_bytes(r.into_body(), 1 << 20)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap()
}

pub async fn csrf_of(w: &World, cookie: &str) -> String {
    let page = body(w.get("/ui/access", cookie).await).await;
    let at = page.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    page[at..at + 64].to_string()
}
