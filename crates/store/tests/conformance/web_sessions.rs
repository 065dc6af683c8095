//! Console sessions: one per token, touched forward only, ended once.

use super::*;
use pedm_core::web_session::{WebSession, WebSessionWrite};

pub(crate) async fn web_sessions_touched_and_ended(db: Db) {
    let s = db.open().await;
    ok(&s, cs(Write::InsertUser(user("alice")))).await;
    ok(&s, cs(Write::InsertToken(token("t1", "alice", 10)))).await;
    let session = WebSession {
        token_id: "t1".into(),
        user: "alice".into(),
        method: "sso".into(),
        provider: Some("corp".into()),
        source: Some("192.0.2.7".into()),
        created_at: t(10),
        last_seen_at: t(10),
        ended_at: None,
    };
    let w = |w: WebSessionWrite| cs(Write::WebSession(w));
    ok(&s, w(WebSessionWrite::Insert(session.clone()))).await;
    assert_eq!(s.web_session("t1").await.unwrap(), Some(session.clone()));
    assert_eq!(s.web_session("t2").await.unwrap(), None);
    exists(
        fails(&s, w(WebSessionWrite::Insert(session.clone()))).await,
        "t1",
    );
    let orphan = WebSession {
        token_id: "t9".into(),
        ..session.clone()
    };
    not_found(
        fails(&s, w(WebSessionWrite::Insert(orphan))).await,
        "token t9",
    );

    let touch = |at: i64| {
        w(WebSessionWrite::Touch {
            token_id: "t1".into(),
            at: t(at),
        })
    };
    ok(&s, touch(40)).await;
    ok(&s, touch(30)).await; // an older touch (a slower instance) never moves it back
    let seen = s.web_session("t1").await.unwrap().unwrap();
    assert_eq!(seen.last_seen_at, t(40));

    let end = |at: i64| {
        w(WebSessionWrite::End {
            token_id: "t1".into(),
            at: t(at),
        })
    };
    ok(&s, end(50)).await;
    conflict(fails(&s, end(60)).await, "t1");
    ok(&s, touch(70)).await; // no-op on an ended session
    let ended = s.web_session("t1").await.unwrap().unwrap();
    assert_eq!((ended.ended_at, ended.last_seen_at), (Some(t(50)), t(40)));
    conflict(
        fails(
            &s,
            w(WebSessionWrite::End {
                token_id: "nope".into(),
                at: t(60),
            }),
        )
        .await,
        "nope",
    );
}
