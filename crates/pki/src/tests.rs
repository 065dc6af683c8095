//! The CAs and the KRL checked by OpenSSH's own `ssh-keygen` where it is installed.

use super::*;
use pedm_core::ssh::CertRequest;
use std::process::Command;

fn authority(dir: &Path) -> SshAuthority {
    SshAuthority::load(&[dir.join("user_ca")], &[dir.join("host_ca")]).unwrap()
}

fn subject(dir: &Path) -> String {
    let k = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
    k.write_openssh_file(&dir.join("id"), LineEnding::LF)
        .unwrap();
    k.public_key().to_openssh().unwrap()
}

fn request(public_key: String, serial: u64) -> CertRequest {
    let now = Timestamp::now();
    CertRequest {
        kind: CertKind::User,
        public_key,
        key_id: "0190a4e6-grant".into(),
        serial,
        principals: vec!["root".into()],
        valid_after: now,
        valid_before: now + jiff::SignedDuration::from_secs(600),
        critical_options: vec![("force-command".into(), "/usr/bin/id -un".into())],
        extensions: vec!["permit-pty".into()],
    }
}

fn ssh_keygen() -> Option<&'static str> {
    Path::new("/usr/bin/ssh-keygen")
        .exists()
        .then_some("/usr/bin/ssh-keygen")
}

#[test]
fn keys_are_made_once_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let a = authority(dir.path());
    let b = authority(dir.path());
    assert_eq!(a.public_keys(CertKind::User), b.public_keys(CertKind::User));
    assert_ne!(a.public_keys(CertKind::User), a.public_keys(CertKind::Host));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("user_ca"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn older_keys_are_trusted_but_the_first_signs() {
    let dir = tempfile::tempdir().unwrap();
    let old = authority(dir.path());
    std::fs::write(
        dir.path().join("old.pub"),
        old.public_keys(CertKind::User)[0].as_bytes(),
    )
    .unwrap();
    let rotated = SshAuthority::load(
        &[dir.path().join("new_ca"), dir.path().join("old.pub")],
        &[dir.path().join("host_ca")],
    )
    .unwrap();
    let keys = rotated.public_keys(CertKind::User);
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[1], old.public_keys(CertKind::User)[0]);
    let signed = rotated.sign(&request(subject(dir.path()), 7)).unwrap();
    let ca = PublicKey::from_openssh(&keys[0]).unwrap();
    assert_eq!(
        signed.ca_fingerprint,
        ca.fingerprint(HashAlg::Sha256).to_string()
    );
}

#[test]
fn bad_and_weak_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = authority(dir.path());
    for bad in [
        "",
        "ssh-ed25519",
        "ssh-ed25519 AAAAnotbase64!",
        "hello world",
    ] {
        let e = a.sign(&request(bad.into(), 1)).unwrap_err();
        assert!(matches!(e, SshCaError::BadKey(_)), "{bad:?}: {e:?}");
    }
}

#[test]
fn certificates_say_what_was_asked_as_ssh_keygen_reads_them() {
    let Some(keygen) = ssh_keygen() else {
        eprintln!("skipped: /usr/bin/ssh-keygen is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = authority(dir.path());
    let signed = a
        .sign(&request(subject(dir.path()), 0xfeed_beef_1234))
        .unwrap();
    let cert = dir.path().join("id-cert.pub");
    std::fs::write(&cert, &signed.certificate).unwrap();
    let out = Command::new(keygen)
        .arg("-L")
        .arg("-f")
        .arg(&cert)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("user certificate"), "{text}");
    assert!(
        text.contains(&format!("Serial: {}", 0xfeed_beef_1234u64)),
        "{text}"
    );
    assert!(text.contains("Key ID: \"0190a4e6-grant\""), "{text}");
    assert!(text.contains("force-command /usr/bin/id -un"), "{text}");
    assert!(text.contains("permit-pty"), "{text}");
    assert!(!text.contains("permit-port-forwarding"), "{text}");
    assert!(text.contains(&signed.ca_fingerprint), "{text}");
}

#[test]
fn the_krl_revokes_by_serial_and_key_id_as_ssh_keygen_checks() {
    let Some(keygen) = ssh_keygen() else {
        eprintln!("skipped: /usr/bin/ssh-keygen is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = authority(dir.path());
    let sign = |serial: u64, key_id: &str, name: &str| {
        let mut r = request(subject(dir.path()), serial);
        r.key_id = key_id.into();
        let s = a.sign(&r).unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, &s.certificate).unwrap();
        (p, s)
    };
    let (by_serial, s1) = sign(11, "grant-a", "a-cert.pub");
    let (by_id, s2) = sign(12, "grant-b", "b-cert.pub");
    let (kept, _) = sign(13, "grant-c", "c-cert.pub");
    let revoked = [
        RevokedCert {
            serial: 11,
            key_id: "other-id".into(),
            ca_fingerprint: s1.ca_fingerprint.clone(),
        },
        RevokedCert {
            serial: 999,
            key_id: "grant-b".into(),
            ca_fingerprint: s2.ca_fingerprint.clone(),
        },
        // Another CA's certificate is not listed under ours.
        RevokedCert {
            serial: 13,
            key_id: "grant-c".into(),
            ca_fingerprint: "SHA256:someoneelse".into(),
        },
    ];
    let krl = dir.path().join("krl");
    std::fs::write(&krl, a.krl(&revoked, Timestamp::now()).unwrap()).unwrap();
    let check = |cert: &Path| {
        Command::new(keygen)
            .arg("-Q")
            .arg("-f")
            .arg(&krl)
            .arg(cert)
            .output()
            .unwrap()
    };
    for revoked in [&by_serial, &by_id] {
        let out = check(revoked);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{text}");
        assert!(text.contains("REVOKED"), "{text}");
    }
    let out = check(&kept);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // An empty KRL parses and revokes nothing.
    std::fs::write(&krl, a.krl(&[], Timestamp::now()).unwrap()).unwrap();
    assert!(check(&by_serial).status.success());
}
