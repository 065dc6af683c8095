//! SCIM: clients' tokens revoked once, links of users and groups replaced whole, a group
//! released, links only to users and groups that exist.

use super::*;
use pedm_core::scim::{ScimGroupLink, ScimLink, ScimToken, ScimWrite};

fn sw(w: ScimWrite) -> Changeset {
    cs(Write::Scim(w))
}

pub(crate) async fn scim_tokens_and_links(db: Db) {
    let s = db.open().await;
    ok(&s, cs(Write::InsertUser(user("alice")))).await;
    let token = ScimToken {
        id: "00000000000000a1".into(),
        name: "okta".into(),
        secret_hash: [7; 32],
        created_at: t(10),
        created_by: "admin".into(),
        revoked_at: None,
    };
    ok(&s, sw(ScimWrite::InsertToken(token.clone()))).await;
    exists(
        fails(&s, sw(ScimWrite::InsertToken(token.clone()))).await,
        "00000000000000a1",
    );
    assert_eq!(s.scim_token("00000000000000a1").await.unwrap(), Some(token));
    let revoke = |id: &str| {
        sw(ScimWrite::RevokeToken {
            id: id.into(),
            at: t(20),
        })
    };
    ok(&s, revoke("00000000000000a1")).await;
    conflict(
        fails(&s, revoke("00000000000000a1")).await,
        "already revoked",
    );
    not_found(
        fails(&s, revoke("ffffffffffffffff")).await,
        "ffffffffffffffff",
    );
    let tokens = s.scim_tokens().await.unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].revoked_at, Some(t(20)));

    let mut link = ScimLink {
        user: "alice".into(),
        client: "okta".into(),
        external_id: Some("00u1".into()),
        deleted_at: None,
    };
    ok(&s, sw(ScimWrite::Link(link.clone()))).await;
    link.deleted_at = Some(t(30));
    link.external_id = None;
    ok(&s, sw(ScimWrite::Link(link.clone()))).await;
    assert_eq!(s.scim_link("alice").await.unwrap(), Some(link.clone()));
    assert_eq!(s.scim_links().await.unwrap(), vec![link]);
    not_found(
        fails(
            &s,
            sw(ScimWrite::Link(ScimLink {
                user: "carol".into(),
                client: "okta".into(),
                external_id: None,
                deleted_at: None,
            })),
        )
        .await,
        "carol",
    );

    let group = Group {
        name: "ops".into(),
        description: None,
        members: vec![],
        created_at: t(40),
    };
    ok(&s, cs(Write::InsertGroup(group))).await;
    let glink = ScimGroupLink {
        group: "ops".into(),
        client: "okta".into(),
        external_id: Some("g1".into()),
    };
    ok(&s, sw(ScimWrite::LinkGroup(glink.clone()))).await;
    assert_eq!(s.scim_group_link("ops").await.unwrap(), Some(glink.clone()));
    assert_eq!(s.scim_group_links().await.unwrap(), vec![glink]);
    not_found(
        fails(
            &s,
            sw(ScimWrite::LinkGroup(ScimGroupLink {
                group: "nobody".into(),
                client: "okta".into(),
                external_id: None,
            })),
        )
        .await,
        "nobody",
    );
    ok(
        &s,
        sw(ScimWrite::UnlinkGroup {
            group: "ops".into(),
        }),
    )
    .await;
    assert_eq!(s.scim_group_link("ops").await.unwrap(), None);
    // Still there after a reopen (the rows are not a cache).
    let s = db.open().await;
    assert_eq!(s.scim_tokens().await.unwrap().len(), 1);
    assert_eq!(s.scim_links().await.unwrap().len(), 1);
    whole_chain(&s).await;
}
