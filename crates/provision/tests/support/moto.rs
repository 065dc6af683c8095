//! A real AWS API emulator for the tests: `moto` in server mode (PyPI, installed into
//! target/aws-venv by scripts/install-aws-emulator), on a free loopback port, behind an HTTP
//! relay the test can cut (connections refused, open ones dropped) and restore without
//! losing moto's state, as an AWS endpoint that became unreachable would look, or have
//! answer AWS's throttling error (moto never throttles): `Throttling` in the query protocol's
//! XML (IAM, STS) or `ThrottlingException` in the JSON protocols (Identity Center), HTTP 400
//! as AWS answers it.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use std::sync::atomic::{AtomicU32, Ordering};

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::task::JoinSet;

/// moto's default account, and the access key it accepts (any).
pub const ACCOUNT: &str = "123456789012";

/// The virtualenv the install script made.
pub fn venv_bin(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let bin = target.join("aws-venv/bin").join(name);
    assert!(
        bin.is_file(),
        "{} is not installed at {}: run scripts/install-test-deps",
        name,
        bin.display()
    );
    bin
}

pub struct Moto {
    _child: Child,
    /// moto's own address.
    backend: String,
    /// The relay's address: what pedm is configured with.
    relay_port: u16,
    relay: Arc<Mutex<Option<JoinSet<()>>>>,
    /// Requests still to be answered with AWS's throttling error.
    throttle: Arc<AtomicU32>,
    /// Requests answered so.
    pub throttled: Arc<AtomicU32>,
}

impl Moto {
    pub async fn start() -> Moto {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            l.local_addr().expect("its address").port()
        };
        let mut child = Command::new(venv_bin("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            // AWS's managed policies (AdministratorAccess, ReadOnlyAccess, …), as in an account.
            .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("starting moto_server");
        // Werkzeug says when it listens.
        let mut lines = BufReader::new(child.stderr.take().expect("moto's stderr")).lines();
        let mut seen = Vec::new();
        loop {
            match lines.next_line().await.expect("reading moto's stderr") {
                Some(l) if l.contains("Running on") => break,
                Some(l) => seen.push(l),
                None => panic!("moto_server exited before listening: {}", seen.join("\n")),
            }
        }
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let relay_port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            l.local_addr().expect("its address").port()
        };
        let m = Moto {
            _child: child,
            backend: format!("127.0.0.1:{port}"),
            relay_port,
            relay: Arc::new(Mutex::new(None)),
            throttle: Arc::new(AtomicU32::new(0)),
            throttled: Arc::new(AtomicU32::new(0)),
        };
        m.up().await;
        m
    }

    /// The endpoint pedm and the test's clients use (through the relay).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.relay_port)
    }

    /// moto itself, bypassing the relay (for checking the target while pedm's way is cut).
    pub fn direct_url(&self) -> String {
        format!("http://{}", self.backend)
    }

    /// Cuts the way to moto: new connections are refused, open ones dropped.
    pub fn down(&self) {
        if let Some(mut set) = self.relay.lock().expect("relay").take() {
            set.abort_all();
        }
    }

    /// Restores the way to moto on the same port.
    pub async fn up(&self) {
        let listener = TcpListener::bind(("127.0.0.1", self.relay_port))
            .await
            .expect("binding the relay's port");
        let backend = format!("http://{}", self.backend);
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("the relay's client");
        let (throttle, throttled) = (self.throttle.clone(), self.throttled.clone());
        let mut set = JoinSet::new();
        let conns = Arc::new(Mutex::new(JoinSet::new()));
        let held = conns.clone();
        set.spawn(async move {
            // The connection tasks live as long as the accept loop (aborted together).
            let _held = held;
            while let Ok((inbound, _)) = listener.accept().await {
                let (backend, http) = (backend.clone(), http.clone());
                let (throttle, throttled) = (throttle.clone(), throttled.clone());
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (backend, http) = (backend.clone(), http.clone());
                        let (throttle, throttled) = (throttle.clone(), throttled.clone());
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                relay(req, &backend, &http, &throttle, &throttled).await,
                            )
                        }
                    });
                conns.lock().expect("connections").spawn(async move {
                    let _ = Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(inbound), service)
                        .await;
                });
            }
        });
        *self.relay.lock().expect("relay") = Some(set);
    }

    /// Answers the next `n` requests with AWS's throttling error.
    pub fn throttle_next(&self, n: u32) {
        self.throttle.store(n, Ordering::SeqCst);
    }

    /// An SDK configuration for the test's own calls to moto (direct, not through the relay).
    pub async fn sdk(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(self.direct_url())
            .credentials_provider(aws_sdk_sts::config::Credentials::new(
                "testing", "testing", None, None, "tests",
            ))
            .load()
            .await
    }
}

/// A credentials file moto accepts, for pedm's `credentials_file`.
pub fn credentials_file(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("aws-credentials");
    std::fs::write(
        &path,
        "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
    )
    .expect("writing the credentials file");
    path
}

/// One request through the relay: AWS's throttling error while armed, else moto's answer.
async fn relay(
    req: Request<hyper::body::Incoming>,
    backend: &str,
    http: &reqwest::Client,
    throttle: &AtomicU32,
    throttled: &AtomicU32,
) -> Response<Body> {
    use http_body_util::BodyExt;
    let json_protocol = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if throttle
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        throttled.fetch_add(1, Ordering::SeqCst);
        let (content_type, body) = if json_protocol {
            (
                "application/x-amz-json-1.1",
                r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.to_string(),
            )
        } else {
            (
                "text/xml",
                "<ErrorResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><Error>\
                 <Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message>\
                 </Error><RequestId>pedm-test</RequestId></ErrorResponse>"
                    .to_string(),
            )
        };
        let mut r = Response::new(Body::from(body));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        r.headers_mut().insert(
            "content-type",
            content_type.parse().expect("a header value"),
        );
        if json_protocol {
            r.headers_mut().insert(
                "x-amzn-errortype",
                "ThrottlingException".parse().expect("a header value"),
            );
        }
        return r;
    }
    let (parts, body) = req.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return Response::new(Body::empty());
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut out = http.request(parts.method, format!("{backend}{path}"));
    for (k, v) in &parts.headers {
        if k != "host" && k != "content-length" && k != "connection" {
            out = out.header(k, v);
        }
    }
    let Ok(answer) = out.body(body).send().await else {
        let mut r = Response::new(Body::from("moto is not answering"));
        *r.status_mut() = StatusCode::BAD_GATEWAY;
        return r;
    };
    let mut r = Response::builder().status(answer.status());
    for (k, v) in answer.headers() {
        if k != "content-length" && k != "transfer-encoding" && k != "connection" {
            r = r.header(k, v);
        }
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    r.body(Body::from(bytes)).expect("a response")
}
