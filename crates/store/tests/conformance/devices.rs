//! Trusted devices: kept as written, approved once, revoked once, listed by owner.

use super::*;
use pedm_core::device::{Device, DeviceWrite, Posture};

fn device(id: &str, owner: &str, at: i64) -> Device {
    Device {
        id: id.into(),
        owner: owner.into(),
        name: format!("laptop {id}"),
        posture: Posture {
            os: Some("linux".into()),
            os_version: Some("Debian GNU/Linux 13 (trixie)".into()),
            disk_encrypted: Some(true),
            screen_lock: None,
        },
        cert_serial: format!("{id}00"),
        cert_not_after: t(at + 1000),
        enrolled_at: t(at),
        approved_at: None,
        approved_by: None,
        revoked_at: None,
    }
}

fn dw(w: DeviceWrite) -> Changeset {
    cs(Write::Device(w))
}

pub(crate) async fn devices_enrolled_approved_revoked(db: Db) {
    let s = db.open().await;
    ok(&s, cs(Write::InsertUser(user("alice")))).await;
    ok(&s, cs(Write::InsertUser(user("bob")))).await;
    let a = device("00000000000000a1", "alice", 10);
    ok(&s, dw(DeviceWrite::Insert(a.clone()))).await;
    ok(
        &s,
        dw(DeviceWrite::Insert(device("00000000000000b1", "bob", 20))),
    )
    .await;
    exists(
        fails(&s, dw(DeviceWrite::Insert(a.clone()))).await,
        "00000000000000a1",
    );
    not_found(
        fails(
            &s,
            dw(DeviceWrite::Insert(device("00000000000000c1", "carol", 30))),
        )
        .await,
        "carol",
    );
    assert_eq!(s.device("00000000000000a1").await.unwrap(), Some(a));
    let ids = |v: Vec<Device>| v.into_iter().map(|d| d.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.devices(Some("alice")).await.unwrap()),
        ["00000000000000a1"]
    );
    assert_eq!(
        ids(s.devices(None).await.unwrap()),
        ["00000000000000b1", "00000000000000a1"]
    );
    let approve = || {
        dw(DeviceWrite::Approve {
            id: "00000000000000a1".into(),
            at: t(40),
            by: "admin".into(),
        })
    };
    ok(&s, approve()).await;
    conflict(fails(&s, approve()).await, "approved or revoked already");
    let revoke = || {
        dw(DeviceWrite::Revoke {
            id: "00000000000000a1".into(),
            at: t(50),
        })
    };
    ok(&s, revoke()).await;
    conflict(fails(&s, revoke()).await, "revoked already");
    let d = s.device("00000000000000a1").await.unwrap().unwrap();
    assert_eq!(
        (
            d.approved_at,
            d.approved_by.as_deref(),
            d.revoked_at,
            d.trusted()
        ),
        (Some(t(40)), Some("admin"), Some(t(50)), false)
    );
    not_found(
        fails(
            &s,
            dw(DeviceWrite::Revoke {
                id: "ffffffffffffffff".into(),
                at: t(50),
            }),
        )
        .await,
        "ffffffffffffffff",
    );
    whole_chain(&s).await;
}
