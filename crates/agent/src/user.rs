//! The run-as account.
//!
//! Everything the child needs to become the user (uid, gid, the full group list) is read
//! here, before the fork, because the child may only call async-signal-safe functions and
//! NSS lookups are not.

use crate::error::ExecError;
use nix::unistd::{Gid, Uid, User, getgrouplist};
use std::ffi::CString;
use std::path::PathBuf;

/// A user as the session will run it: resolved once, so the checks and the spawn see the
/// same ids even if the passwd database changes in between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Every group the user is in (primary included), as `initgroups` would set them.
    pub groups: Vec<u32>,
    pub home: PathBuf,
    pub shell: PathBuf,
}

impl TargetUser {
    /// Looks a user up by name, the way grants and roles name the run-as user.
    pub fn lookup(name: &str) -> Result<TargetUser, ExecError> {
        let user = User::from_name(name)
            .map_err(|source| ExecError::UserLookup {
                user: name.to_string(),
                source,
            })?
            .ok_or_else(|| ExecError::UnknownUser(name.to_string()))?;
        Self::from_passwd(user)
    }

    /// Looks a user up by uid, the way the agent knows its caller (peer credentials).
    pub fn from_uid(uid: u32) -> Result<TargetUser, ExecError> {
        Self::from_passwd(Self::passwd_of(uid)?)
    }

    /// The caller behind a connection's peer credentials: name, ids, home and shell. Its
    /// groups are not looked up (`groups` is empty): what a caller may do comes from its
    /// grants, never from its local groups, and the group lookup is the slow part.
    pub fn caller(uid: u32) -> Result<TargetUser, ExecError> {
        let user = Self::passwd_of(uid)?;
        Ok(TargetUser {
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups: vec![],
            home: user.dir,
            shell: user.shell,
            name: user.name,
        })
    }

    /// The caller of a task run ordered through the server: the pedm user the server's
    /// signed order names, who has no account here and needs none, so it carries the ids of
    /// the unprivileged `nobody` (65534 where there is no such account).
    pub fn remote(name: &str) -> TargetUser {
        let nobody = User::from_name("nobody").ok().flatten();
        TargetUser {
            name: name.to_string(),
            uid: nobody.as_ref().map_or(65534, |u| u.uid.as_raw()),
            gid: nobody.as_ref().map_or(65534, |u| u.gid.as_raw()),
            groups: vec![],
            home: PathBuf::from("/"),
            shell: PathBuf::from("/usr/sbin/nologin"),
        }
    }

    fn passwd_of(uid: u32) -> Result<User, ExecError> {
        User::from_uid(Uid::from_raw(uid))
            .map_err(|source| ExecError::UserLookup {
                user: format!("uid {uid}"),
                source,
            })?
            .ok_or(ExecError::UnknownUid(uid))
    }

    fn from_passwd(user: User) -> Result<TargetUser, ExecError> {
        let lookup_err = |source| ExecError::UserLookup {
            user: user.name.clone(),
            source,
        };
        let cname =
            CString::new(user.name.as_bytes()).map_err(|_| lookup_err(nix::Error::EINVAL))?;
        let mut groups: Vec<u32> = getgrouplist(&cname, user.gid)
            .map_err(lookup_err)?
            .into_iter()
            .map(Gid::as_raw)
            .collect();
        if !groups.contains(&user.gid.as_raw()) {
            groups.insert(0, user.gid.as_raw());
        }
        groups.dedup();
        Ok(TargetUser {
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups,
            home: user.dir,
            shell: user.shell,
            name: user.name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_found_by_name_and_uid() {
        let by_name = TargetUser::lookup("root").unwrap();
        assert_eq!(by_name.uid, 0);
        assert_eq!(by_name.gid, 0);
        assert!(by_name.groups.contains(&0));
        assert_eq!(by_name, TargetUser::from_uid(0).unwrap());
        let caller = TargetUser::caller(0).unwrap();
        assert_eq!(
            caller,
            TargetUser {
                groups: vec![],
                ..by_name
            }
        );
    }

    #[test]
    fn unknown_users_are_named_in_the_error() {
        let e = TargetUser::lookup("pedm-no-such-user").unwrap_err();
        assert_eq!(e.to_string(), "unknown user pedm-no-such-user");
        let e = TargetUser::from_uid(4_000_000_000).unwrap_err();
        assert_eq!(e.to_string(), "no user has uid 4000000000");
        let e = TargetUser::caller(4_000_000_000).unwrap_err();
        assert_eq!(e.to_string(), "no user has uid 4000000000");
    }
}
