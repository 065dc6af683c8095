//! `pedm mcp` driven by a real MCP client: the official Python SDK (PyPI `mcp`, pinned in
//! scripts/mcp-client/requirements.txt, installed into target/mcp-venv by
//! scripts/install-test-deps) runs scripts/mcp-client/mcp_client.py, which starts `pedm mcp`
//! through the SDK's stdio client and answers the JSON commands this test sends it.
//!
//! What an AI agent may do with its agent token, and what it may not: its requests carry
//! `context.via_agent` and wait for a person even where the person's own request is granted
//! at once; it approves nothing, mints nothing, breaks no glass, and sees only its person's
//! requests, whatever rights the person has.

mod common;

use common::*;
use pedm_api::{ApiError, Outcome, RequestState};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

/// How long one answer of the client may take (a waiting tool call is bounded by its own
/// `timeout_secs`, below this).
const ANSWER: Duration = Duration::from_secs(90);

fn venv_python() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let bin = target.join("mcp-venv/bin/python");
    assert!(
        bin.is_file(),
        "the MCP client (PyPI mcp) is not installed at {}: run scripts/install-test-deps",
        bin.display()
    );
    bin
}

/// The Python SDK's client session with `pedm mcp` behind it.
struct McpClient {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Value>,
    /// Answers that arrived while another was awaited.
    early: HashMap<String, Value>,
    next: u32,
}

impl McpClient {
    /// Starts the client, which starts `pedm mcp` with `token`; returns it with the first
    /// line it printed (`init`: the server's information, or the error that stopped it).
    fn start(s: &Server, token: &str) -> (McpClient, Value) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../scripts/mcp-client/mcp_client.py");
        let mut child = Command::new(venv_python())
            .arg(script)
            .arg(env!("CARGO_BIN_EXE_pedm"))
            .arg("mcp")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", std::env::var_os("HOME").unwrap_or_default())
            .env("PEDM_URL", &s.url)
            .env("PEDM_TOKEN", token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the MCP client");
        let stdout = child.stdout.take().expect("client stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("client printed {line:?}: {e}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let mut c = McpClient {
            stdin: child.stdin.take(),
            child,
            lines,
            early: HashMap::new(),
            next: 0,
        };
        let init = c.answer("init");
        (c, init)
    }

    /// Sends a command; returns its id (its answer comes with [`Self::answer`]).
    fn send(&mut self, mut cmd: Value) -> String {
        self.next += 1;
        let id = format!("c{}", self.next);
        cmd["id"] = json!(id);
        let stdin = self.stdin.as_mut().expect("client stdin open");
        writeln!(stdin, "{cmd}").expect("write to the client");
        stdin.flush().expect("flush");
        id
    }

    fn answer(&mut self, id: &str) -> Value {
        if let Some(v) = self.early.remove(id) {
            return v;
        }
        loop {
            match self.lines.recv_timeout(ANSWER) {
                Ok(v) if v["id"] == json!(id) => return v,
                Ok(v) => {
                    let other = v["id"].as_str().unwrap_or_default().to_string();
                    self.early.insert(other, v);
                }
                Err(RecvTimeoutError::Timeout) => panic!("no answer to {id} from the MCP client"),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("the MCP client ended before answering {id}")
                }
            }
        }
    }

    fn call(&mut self, tool: &str, args: Value) -> Value {
        let id = self.send(json!({"op": "call", "tool": tool, "args": args}));
        let v = self.answer(&id);
        assert!(
            v.get("protocol_error").is_none(),
            "{tool}: protocol error {v}"
        );
        v
    }

    /// A call that must succeed: its structured result.
    fn ok(&mut self, tool: &str, args: Value) -> Value {
        let v = self.call(tool, args);
        assert_eq!(v["is_error"], json!(false), "{tool} failed: {v}");
        assert!(v["structured"].is_object(), "{tool}: no result: {v}");
        v["structured"].clone()
    }

    /// A call that must fail as a tool error: its message.
    fn err(&mut self, tool: &str, args: Value) -> String {
        let v = self.call(tool, args);
        assert_eq!(v["is_error"], json!(true), "{tool} did not fail: {v}");
        let text = v["text"].as_str().unwrap_or_default().to_string();
        assert!(!text.is_empty(), "{tool}: an error without a message: {v}");
        text
    }
}

impl Drop for McpClient {
    fn drop(&mut self) {
        // End of input closes the session; the SDK ends `pedm mcp`.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("an id").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_asks_waits_and_sees_but_never_decides() {
    let s = Server::start();
    standard_targets(&s).await;
    // alice is an admin: her own token could approve others' requests; her agent's cannot.
    let alice = user_with_token(&s, "alice", true).await;
    let bob = user_with_token(&s, "bob", true).await;
    let carol = user_with_token(&s, "carol", false).await;

    // The person mints the agent's token; it is of kind agent.
    let out = s.cli(
        &alice,
        &[
            "token",
            "create",
            "--for-agent",
            "--expires-in",
            "8h",
            "--description",
            "coding agent",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let agent = stdout(&out).trim().to_string();
    let me = s.client(&agent).whoami().await.unwrap();
    assert_eq!(me.user.name, "alice");
    let agent_token_id = me.token.as_ref().expect("token").id.clone();
    assert_eq!(me.token.as_ref().unwrap().kind, "agent");
    let who = s.cli(&agent, &["whoami"]);
    assert!(stdout(&who).contains("(agent)"), "{}", stdout(&who));
    // An agent token must expire.
    let never = s.cli(
        &alice,
        &["token", "create", "--for-agent", "--expires-in", "never"],
    );
    assert_eq!(never.status.code(), Some(2), "{}", stderr(&never));
    assert!(stderr(&never).contains("must expire"), "{}", stderr(&never));

    // `pedm mcp` refuses to start with the person's own token, saying what to do.
    let refused = s.cli(&alice, &["mcp"]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("pedm token create --for-agent"),
        "{}",
        stderr(&refused)
    );
    assert!(stdout(&refused).is_empty(), "{}", stdout(&refused));

    // The person's own request for docker is granted at once.
    let own = s.cli(
        &alice,
        &[
            "--json",
            "request",
            "create",
            "--target",
            "web1",
            "--role",
            "docker",
            "--duration",
            "10m",
            "-r",
            "pull images",
        ],
    );
    assert!(own.status.success(), "{}", stderr(&own));
    let own: Value = serde_json::from_slice(&own.stdout).unwrap();
    assert_eq!(own["request"]["state"], json!("approved"), "{own}");
    let own_grant = own["grant"]["id"].as_str().unwrap().to_string();
    let released = s.cli(
        &alice,
        &["grant", "release", &own_grant, "--reason", "done"],
    );
    assert!(released.status.success(), "{}", stderr(&released));
    // carol waits for an approval that alice (an admin) could give.
    let carols = s
        .client(&carol)
        .create_request(&req("web1", "root", "30m", "rotate the TLS certificate"))
        .await
        .unwrap()
        .request;
    assert_eq!(carols.state, RequestState::Pending);

    // --- the agent, through a real MCP client
    let (mut mcp, init) = McpClient::start(&s, &agent);
    assert!(init.get("error").is_none(), "{init}");
    assert_eq!(init["server"]["name"], json!("pedm"), "{init}");

    // Its tools: none approves, denies, mints tokens or runs anything.
    let id = mcp.send(json!({"op": "list_tools"}));
    let tools = mcp.answer(&id);
    let mut names: Vec<&str> = tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
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
    for n in &names {
        for word in ["approve", "deny", "token", "exec", "delegate"] {
            assert!(!n.contains(word), "{n}");
        }
    }
    let request_tool = tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == json!("request_access"))
        .unwrap();
    assert_eq!(
        request_tool["input_schema"]["required"],
        json!(["target", "role", "duration", "justification"])
    );

    // What alice may request, as the agent would be treated: docker waits for a person too.
    let offer = mcp.ok("list_requestable", json!({}));
    let docker = offer["requestable"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["target"] == json!("web1") && r["role"] == json!("docker"))
        .unwrap_or_else(|| panic!("docker is not offered: {offer}"))
        .clone();
    assert_eq!(docker["outcome"], json!("needs_approval"), "{docker}");
    assert_eq!(docker["max_duration"], json!("1h"), "{docker}");

    // The agent asks for the same role: pending, marked via_agent, recorded as such.
    let asked = mcp.ok(
        "request_access",
        json!({"target": "web1", "role": "docker", "duration": "30m",
               "justification": "rebuild the CI image for PR 42", "ticket": "CHG-7"}),
    );
    assert_eq!(asked["state"], json!("pending"), "{asked}");
    assert_eq!(asked["via_agent"], json!(true), "{asked}");
    assert!(asked.get("grant").is_none(), "{asked}");
    let rid = id_of(&asked);
    let uuid: uuid::Uuid = rid.parse().unwrap();
    let stored = s.admin().get_request(uuid).await.unwrap().request;
    assert!(stored.context.via_agent);
    assert_eq!(stored.requester, "alice");
    let created = wait_event(&s, "request.created", &format!("request:{rid}")).await;
    assert_eq!(created.data["via_agent"], json!(true), "{:?}", created.data);
    assert_eq!(created.actor, "alice");

    // It waits; a person (bob) approves through the CLI; the wait reports the grant.
    let wait = mcp.send(json!({"op": "call", "tool": "wait_for_decision",
                               "args": {"id": rid, "timeout_secs": 60}}));
    let approve = s.cli(&bob, &["request", "approve", &rid, "--reason", "ok"]);
    assert!(approve.status.success(), "{}", stderr(&approve));
    let decided = mcp.answer(&wait);
    assert_eq!(decided["is_error"], json!(false), "{decided}");
    let decided = &decided["structured"];
    assert_eq!(decided["state"], json!("approved"), "{decided}");
    assert_eq!(decided["timed_out"], json!(false), "{decided}");
    assert_eq!(decided["decided_by"], json!("bob"), "{decided}");
    assert_eq!(decided["grant"]["state"], json!("active"), "{decided}");
    let grant = decided["grant"]["id"].as_str().unwrap().to_string();
    let status = mcp.ok("request_status", json!({"id": rid}));
    assert_eq!(status["state"], json!("approved"));
    assert_eq!(status["approvals"][0]["by"], json!("bob"), "{status}");
    assert_eq!(status["grant"]["id"], json!(grant));
    let grants = mcp.ok("list_my_grants", json!({"state": "active"}));
    assert!(
        grants["grants"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["id"] == json!(grant)),
        "{grants}"
    );

    // A second request, still pending when its short wait ends, then withdrawn.
    let second = mcp.ok(
        "request_access",
        json!({"target": "web1", "role": "root", "duration": "15m",
               "justification": "restart nginx after the config change"}),
    );
    let second_id = id_of(&second);
    let waited = mcp.ok(
        "wait_for_decision",
        json!({"id": second_id, "timeout_secs": 1}),
    );
    assert_eq!(waited["state"], json!("pending"), "{waited}");
    assert_eq!(waited["timed_out"], json!(true), "{waited}");

    // Only alice's requests, although alice may see everyone's.
    let mine = mcp.ok("list_my_requests", json!({}));
    let ids: Vec<&str> = mine["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&rid.as_str()) && ids.contains(&second_id.as_str()));
    assert!(!ids.contains(&carols.id.to_string().as_str()), "{ids:?}");

    // Bad input is a tool error naming the problem; nothing is asked for.
    let e = mcp.err(
        "request_access",
        json!({"target": "web1", "role": "root", "duration": "forever",
               "justification": "x"}),
    );
    assert!(
        e.contains("invalid duration") && e.contains("forever"),
        "{e}"
    );
    let e = mcp.err(
        "request_access",
        json!({"target": "web1", "role": "root", "duration": "10m"}),
    );
    assert!(e.contains("justification"), "{e}");
    let e = mcp.err("request_status", json!({"id": "42"}));
    assert!(e.contains("UUID"), "{e}");
    let e = mcp.err("wait_for_decision", json!({"id": rid, "timeout_secs": 601}));
    assert!(e.contains("timeout_secs"), "{e}");
    // The server's refusals come back with its message.
    let e = mcp.err(
        "request_access",
        json!({"target": "nope", "role": "root", "duration": "10m", "justification": "x"}),
    );
    assert!(e.contains("HTTP 404") && e.contains("nope"), "{e}");
    let e = mcp.err("request_status", json!({"id": carols.id.to_string()}));
    assert!(e.contains("HTTP 403"), "{e}");
    let before = s
        .admin()
        .list_requests(&pedm_api::RequestQuery::default())
        .await
        .unwrap()
        .len();
    assert_eq!(before, 4, "a refused or malformed call made a request");

    // Withdrawing its own request works.
    let cancelled = mcp.ok(
        "cancel_request",
        json!({"id": second_id, "reason": "not needed after all"}),
    );
    assert_eq!(cancelled["state"], json!("cancelled"), "{cancelled}");
    drop(mcp);

    // --- the same token on the HTTP API: everything off the allow-list is 403 and recorded.
    let api = s.client(&agent);
    let forbidden = |r: Result<_, ApiError>| match r {
        Err(ApiError::Server {
            status: 403,
            message,
            ..
        }) => message,
        Err(e) => panic!("expected 403, got {e}"),
        Ok(_) => panic!("expected 403, got success"),
    };
    let m = forbidden(
        api.approve_request(
            carols.id,
            &pedm_api::Decide {
                comment: Some("looks fine".into()),
            },
        )
        .await
        .map(|_| ()),
    );
    assert!(m.contains("AI agent"), "{m}");
    assert_eq!(
        s.admin()
            .get_request(carols.id)
            .await
            .unwrap()
            .request
            .state,
        RequestState::Pending
    );
    let refused = wait_event(&s, "auth.refused", &format!("token:{agent_token_id}")).await;
    assert_eq!(refused.outcome, Outcome::Denied);
    assert_eq!(refused.actor, "alice");
    assert_eq!(
        refused.data["operation"],
        json!("POST /api/v1/requests/{id}/approve"),
        "{:?}",
        refused.data
    );
    forbidden(
        api.create_token(&pedm_api::CreateToken::default())
            .await
            .map(|_| ()),
    );
    forbidden(api.list_users().await.map(|_| ()));
    forbidden(
        api.audit_events(&pedm_api::AuditQuery::default())
            .await
            .map(|_| ()),
    );
    forbidden(api.grant_secret(grant.parse().unwrap()).await.map(|_| ()));
    // No break-glass through an agent, even on an allowed route.
    let mut glass = req("web1", "root", "10m", "prod is down");
    glass.break_glass = true;
    let m = forbidden(api.create_request(&glass).await.map(|_| ()));
    assert!(m.contains("break the glass"), "{m}");
    let events = audit_of(&s, "auth.refused").await;
    assert!(events.len() >= 5, "{events:?}");
    assert!(
        events
            .iter()
            .all(|e| e.subject.as_deref() == Some(format!("token:{agent_token_id}").as_str())),
        "{events:?}"
    );
}
