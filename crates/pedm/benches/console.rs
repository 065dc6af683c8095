//! The web console's server time at scale, against the JSON API answering the same question
//! in the same run: an approver's inbox with 10,000 pending requests (the console renders page
//! one of 50, the API returns every approvable request), and the audit page at 1,000,000 events
//! (the newest 100: `GET /ui/audit` against `GET /api/v1/audit/events?newest_first=true&limit=100`).
//!
//! `cargo bench -p pedm --bench console` (`PEDM_BENCH_EVENTS`, `PEDM_BENCH_PENDING`,
//! `PEDM_BENCH_RUNS` for a smaller run).
//!
//! Set-up (not measured): the real migrations, then 1M chained audit events in bulk SQL (as
//! the restart bench), `pedmd` started (it bootstraps its admin and checks the whole log
//! before its first checkpoint), a target and role through the API, then 10,000 pending
//! requests in bulk SQL from 500 requesters. Timed: each call from send to the last byte,
//! one client, alternating console and API.

#[path = "support/mod.rs"]
mod support;

use pedm_store::SqliteStore;
use std::time::Instant;
use support::*;

async fn timed(
    http: &reqwest::Client,
    url: &str,
    cookie: Option<&str>,
    bearer: Option<&str>,
) -> f64 {
    let mut rb = http.get(url);
    if let Some(c) = cookie {
        rb = rb.header("cookie", format!("__Host-pedm_session={c}"));
    }
    if let Some(t) = bearer {
        rb = rb.bearer_auth(t);
    }
    let t = Instant::now();
    let r = rb.send().await.expect("send");
    let status = r.status();
    let body = r.bytes().await.expect("body");
    let ms = t.elapsed().as_secs_f64() * 1e3;
    assert!(
        status.is_success(),
        "{url}: {status} {}",
        String::from_utf8_lossy(&body)
    );
    ms
}

fn p(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    quantile(v, q)
}

fn main() {
    block_on(run());
}

async fn run() {
    let events = setting("PEDM_BENCH_EVENTS", 1_000_000) as i64;
    let pending = setting("PEDM_BENCH_PENDING", 10_000) as i64;
    let runs = setting("PEDM_BENCH_RUNS", 30) as usize;
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("data");
    std::fs::create_dir_all(&data_dir).expect("data dir");
    let db = data_dir.join("pedm.db");
    let started = Instant::now();
    drop(SqliteStore::open(&db).await.expect("migrations"));
    let mut c = raw(&db).await;
    exec(&mut c, "PRAGMA synchronous = OFF").await;
    exec(&mut c, "BEGIN").await;
    insert_chained_events(
        &mut c,
        events,
        jiff::Timestamp::now() - jiff::SignedDuration::from_hours(2),
    )
    .await;
    exec(
        &mut c,
        "UPDATE audit_head SET seq = (SELECT MAX(seq) FROM audit_events), \
         hash = (SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1) WHERE id = 1",
    )
    .await;
    exec(&mut c, "COMMIT").await;
    let url = format!("sqlite://{}", db.display());
    let server = Pedmd::start(&data_dir, &url, &[("PEDM_LOG", "warn")]);
    server.wait_healthy().await;
    let admin_token = std::fs::read_to_string(data_dir.join("admin.token"))
        .expect("admin token")
        .trim()
        .to_string();
    let admin = pedm_api::Client::new(&server.url, Some(admin_token.clone())).expect("client");
    admin
        .create_target(&pedm_api::CreateTarget {
            name: "web1".into(),
            kind: pedm_api::TargetKind::Host,
            description: None,
            labels: Default::default(),
        })
        .await
        .expect("target");
    admin
        .create_role(
            "web1",
            &pedm_api::CreateRole {
                run_as: Some("root".into()),
                ..pedm_api::CreateRole::new("root", "1h")
            },
        )
        .await
        .expect("role");
    let now = jiff::Timestamp::now().as_microsecond();
    exec(
        &mut c,
        &format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {pending}) \
             INSERT INTO requests (id, requester, target, role, duration_secs, justification, \
             context, state, created_at, pending_until, approvals_required, approval_tiers, \
             version, policy) \
             SELECT printf('00000000-0000-7000-8000-%012x', i), 'user' || (i % 500), 'web1', \
             'root', 1800, 'rotate the certificate', '{{\"source_addr\":\"10.0.0.1\"}}', \
             'pending', {now} - ({pending} - i) * 1000, {until}, 1, \
             '[{{\"group\":null,\"required\":1}}]', 1, 'request-with-approval' FROM n",
            until = now + 3_600_000_000
        ),
    )
    .await;
    println!(
        "set-up: {events} events, {pending} pending requests in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client");
    let signed = http
        .post(format!("{}/ui/sign-in", server.url))
        .header("content-type", "application/x-www-form-urlencoded")
        // A pedm token is URL-safe as it is.
        .body(format!("token={admin_token}"))
        .send()
        .await
        .expect("sign in");
    let cookie = signed
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("__Host-pedm_session="))
        .and_then(|v| v.split(';').next())
        .expect("a session cookie")
        .to_string();
    let check = http
        .get(format!("{}/ui/inbox", server.url))
        .header("cookie", format!("__Host-pedm_session={cookie}"))
        .send()
        .await
        .expect("inbox")
        .text()
        .await
        .expect("text");
    assert!(
        check.contains(&format!("1–50 of {pending} waiting")),
        "the inbox sees them all"
    );
    let load_before = load_average();

    let (mut ui_inbox, mut api_inbox, mut ui_audit, mut api_audit) =
        (vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        ui_inbox.push(
            timed(
                &http,
                &format!("{}/ui/inbox", server.url),
                Some(&cookie),
                None,
            )
            .await,
        );
        api_inbox.push(
            timed(
                &http,
                &format!("{}/api/v1/requests?approvable=true", server.url),
                None,
                Some(&admin_token),
            )
            .await,
        );
    }
    for _ in 0..runs * 10 {
        ui_audit.push(
            timed(
                &http,
                &format!("{}/ui/audit", server.url),
                Some(&cookie),
                None,
            )
            .await,
        );
        api_audit.push(
            timed(
                &http,
                &format!(
                    "{}/api/v1/audit/events?newest_first=true&limit=100",
                    server.url
                ),
                None,
                Some(&admin_token),
            )
            .await,
        );
    }
    // For reference: a signed-in page that reads little (the session check, two short lists).
    let mut access = vec![];
    for _ in 0..runs {
        let url = format!("{}/ui/access", server.url);
        access.push(timed(&http, &url, Some(&cookie), None).await);
    }
    println!("for reference: my access p50 {:.1} ms", p(&mut access, 0.5));
    let load_after = load_average();
    let rows = [
        (
            "console_inbox",
            "inbox, 10k pending (page 1 of 50)",
            &mut ui_inbox,
            &mut api_inbox,
        ),
        (
            "console_audit",
            "audit page, 1M events (newest 100)",
            &mut ui_audit,
            &mut api_audit,
        ),
    ];
    println!("load average before {load_before}, after {load_after}");
    for (name, figure, ui, api) in rows {
        let (u50, u99) = (p(ui, 0.5), p(ui, 0.99));
        let (a50, a99) = (p(api, 0.5), p(api, 0.99));
        println!(
            "{figure}: console p50 {u50:.1} ms p99 {u99:.1} ms; JSON API p50 {a50:.1} ms p99 {a99:.1} ms; ratio p99 {:.2}",
            u99 / a99
        );
        bench_line(
            name,
            "ms_p99",
            u99,
            Some((a99, "json_api_same_query")),
            "-",
            "lower",
            figure,
        );
    }
    server.stop();
}
