//! Starting the command for real (root only): the error of one that cannot start, the
//! wait for its note on disk, and the cgroup it is born in.

use super::super::pipe;
use super::super::tests::{root, skip, spec};
use super::*;
use crate::command::tests::secure_tempdir;
use std::fs::File;

#[test]
fn a_command_that_cannot_start_is_named_by_its_error() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec("/bin/true", &["true"], &root(), None, dir.path());
    let mut image = ExecImage::new(&mut s).unwrap();
    // A descriptor that is not open: the exec fails in the child.
    image.fd = 1_000_000;
    let (r, w) = pipe().unwrap();
    let e = spawn(&image, [r.as_raw_fd(), w.as_raw_fd(), w.as_raw_fd()])
        .err()
        .expect("spawned a closed descriptor");
    assert_eq!(e.raw_os_error(), Some(libc::EBADF), "{e}");
}

/// The command execs only once what must be on disk first is (a byte on `durable`); when
/// that fails (end of file), nothing runs and the error says why.
#[tokio::test]
async fn a_command_runs_only_once_its_note_is_on_disk() {
    if skip() {
        return;
    }
    let dir = secure_tempdir();
    let marker = dir.path().join("ran");
    let script = format!("echo > {}", marker.display());
    for synced in [false, true] {
        let mut s = spec("/bin/sh", &["sh", "-c", &script], &root(), None, dir.path());
        let (rd, wr) = pipe().unwrap();
        s.durable = Some(rd);
        if synced {
            nix::unistd::write(&wr, &[1]).unwrap();
        }
        drop(wr);
        let image = ExecImage::new(&mut s).unwrap();
        let (r, _w) = pipe().unwrap();
        let null = File::create("/dev/null").unwrap();
        let started = spawn(&image, [r.as_raw_fd(), null.as_raw_fd(), null.as_raw_fd()]);
        if synced {
            assert!(started.unwrap().wait().await.unwrap().success());
            assert!(marker.exists(), "the command did not run");
        } else {
            let e = started.err().expect("ran without its note on disk");
            assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
            assert!(!marker.exists(), "the command ran");
        }
    }
}

/// The command is in its session's cgroup when it starts: born there (`clone3` with
/// `CLONE_INTO_CGROUP`), or, where that is not offered, moved there by the child itself.
#[tokio::test]
async fn the_command_starts_in_its_sessions_cgroup_born_there_or_moved() {
    if skip() {
        return;
    }
    let Some(cg) = crate::contain::cgroup::tests::test_tree() else {
        return;
    };
    let (grant, session) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let dir = tempfile::tempdir().unwrap();
    for born in [true, false] {
        let mut s = spec(
            "/bin/cat",
            &["cat", "/proc/self/cgroup"],
            &root(),
            None,
            dir.path(),
        );
        s.cgroup = cg.session(grant, session, &Default::default()).unwrap();
        let mut image = ExecImage::new(&mut s).unwrap();
        if !born {
            // As on a kernel without CLONE_INTO_CGROUP.
            image.cgroup_dir = -1;
        }
        let (r, _w) = pipe().unwrap();
        let (out_r, out_w) = pipe().unwrap();
        let mut child = spawn(
            &image,
            [r.as_raw_fd(), out_w.as_raw_fd(), out_w.as_raw_fd()],
        )
        .expect("spawned");
        drop(out_w);
        let status = child.wait().await.unwrap();
        assert!(status.success());
        let mut text = String::new();
        std::io::Read::read_to_string(&mut File::from(out_r), &mut text).unwrap();
        let unified = text
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("a cgroup v2 line");
        assert!(
            unified.ends_with(&format!("/sessions/{grant}/{session}")),
            "born={born}: in {unified}, not in the session's cgroup"
        );
    }
    cg.kill_grant(grant);
    cg.remove();
}
