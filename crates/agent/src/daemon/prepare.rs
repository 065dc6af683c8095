//! The decision: everything the agent checks before anything runs (the grant or delegation,
//! the run-as account, the binary and its interpreter, the working directory, shell-ness,
//! the size of what must be recorded, and policy), turning a caller's `Start` frame into a
//! [`Prepared`] session or a [`Refusal`].

use super::Agent;
use crate::command::resolve;
use crate::snapshot::{Enforced, Refusal};
use crate::user::TargetUser;
use jiff::Timestamp;
use pedm_api::agent::REPORT_ARGV_BYTES;
use pedm_api::socket::StartExec;
use pedm_policy::CommandRef;
use std::path::PathBuf;
use uuid::Uuid;

impl Agent {
    /// Everything checked before anything runs. Errors carry the binary's hash when known.
    pub(super) fn prepare(
        &self,
        caller: &TargetUser,
        start: StartExec,
    ) -> Result<Prepared, (Refusal, Option<String>)> {
        let now = Timestamp::now();
        let guard = self.enforced.read().unwrap_or_else(|e| e.into_inner());
        let Some(enforced) = guard.as_ref() else {
            return Err((
                Refusal("this host has not received its grants from the pedm server yet".into()),
                None,
            ));
        };
        if let Some(task) = &start.task {
            return self.prepare_task(caller, enforced, task, &start.env, now);
        }
        // Nothing runs that the server could not record in full.
        let argv_bytes: usize = start.argv.iter().map(|a| a.len() + 1).sum();
        if argv_bytes > REPORT_ARGV_BYTES {
            return Err((
                Refusal(format!(
                    "the command line is {argv_bytes} bytes, more than the {REPORT_ARGV_BYTES} \
                     pedm records; pass large data on standard input or in a file"
                )),
                None,
            ));
        }
        // Which grant first (and so which run-as user), then the command.
        let (program, args) = if start.shell {
            (None, vec![])
        } else {
            match start.argv.split_first() {
                Some((p, rest)) => (Some(p.clone()), rest.to_vec()),
                None => return Err((Refusal("no command given".into()), None)),
            }
        };
        let grant = enforced
            .pick_grant(&caller.name, start.grant, now)
            .map_err(|r| (r, None))?
            .clone();
        // A role without a run-as account grants a privilege in the target (a group, a
        // database role) that its holder uses as themselves: nothing to run as anyone else.
        let Some(run_as_name) = grant.run_as.clone() else {
            return Err((
                Refusal(format!(
                    "role {role} on {host} has no run-as user, so pedm exec runs nothing under \
                     it (its holder uses the privilege with their own account); an admin can \
                     give the role one: pedm role add {host} {role} --run-as USER ...",
                    role = grant.role,
                    host = self.cfg.host,
                )),
                None,
            ));
        };
        let run_as = TargetUser::lookup(&run_as_name).map_err(|e| {
            (
                Refusal(format!(
                    "run-as user {run_as_name} of role {}: {e}",
                    grant.role
                )),
                None,
            )
        })?;
        let program = match program {
            Some(p) => p,
            None => run_as.shell.to_string_lossy().into_owned(),
        };
        let resolved = resolve(&program, &self.cfg.secure_path, caller.uid)
            .map_err(|e| (Refusal(e.to_string()), None))?;
        let sha = resolved.sha256().to_string();
        let path = resolved.path().to_string_lossy().into_owned();
        let shell =
            start.shell || crate::shells::is_shell(resolved.path(), &args, start.tty.is_some());
        let cwd = match &start.cwd {
            None => None,
            Some(dir) => Some(
                crate::command::check_working_dir(dir, &run_as)
                    .map_err(|e| (Refusal(e.to_string()), Some(sha.clone())))?,
            ),
        };
        let command = CommandRef {
            path: path.clone(),
            args: args.join(" "),
            sha256: Some(sha.clone()),
            shell,
            cwd: cwd.as_ref().map(|c| c.to_string_lossy().into_owned()),
        };
        let allowed = enforced
            .authorize(&grant, &command, now)
            .map_err(|r| (r, Some(sha.clone())))?;
        let mut argv = vec![path.clone()];
        if start.shell {
            // A login shell, as `sudo -i`.
            argv = vec![path.clone(), "-l".into()];
        } else {
            argv.extend(args);
        }
        let env = crate::env::sanitise(
            &start.env,
            caller,
            &run_as,
            &argv.join(" "),
            &self.cfg.secure_path,
        );
        Ok(Prepared {
            authority: allowed.grant.id,
            task: None,
            stdin_data: None,
            expires_at: allowed.grant.expires_at,
            policies: allowed.policies,
            run_as,
            argv,
            resolved,
            env,
            cwd,
            tty: start.tty,
            shell,
            no_new_privs: !grant.allow_setuid,
            noexec: grant.noexec,
            record_input: grant.record_input,
            intercept: grant.intercept,
            limits: grant.limits,
            watch_paths: grant.watch_paths.clone(),
        })
    }

    /// A delegated task: the delegation from the snapshot, the command rendered from the
    /// task's definition (parameters validated, never a shell), run as the task's user.
    pub(super) fn prepare_task(
        &self,
        caller: &TargetUser,
        enforced: &Enforced,
        run: &pedm_api::socket::TaskRun,
        caller_env: &[(String, String)],
        now: Timestamp,
    ) -> Result<Prepared, (Refusal, Option<String>)> {
        let (task, delegation) = enforced
            .task_for(&caller.name, &run.name, now)
            .map_err(|r| (r, None))?;
        let rendered = task
            .render(&run.params)
            .map_err(|e| (Refusal(format!("task {}: {e}", task.name)), None))?;
        let run_as = TargetUser::lookup(&task.run_as).map_err(|e| {
            (
                Refusal(format!(
                    "run-as user {} of task {}: {e}",
                    task.run_as, task.name
                )),
                None,
            )
        })?;
        let program = rendered
            .argv
            .first()
            .ok_or_else(|| (Refusal(format!("task {} has no command", task.name)), None))?;
        let resolved = resolve(program, &self.cfg.secure_path, caller.uid)
            .map_err(|e| (Refusal(format!("task {}: {e}", task.name)), None))?;
        let path = resolved.path().to_string_lossy().into_owned();
        let mut argv = vec![path];
        argv.extend(rendered.argv.iter().skip(1).cloned());
        let env = crate::env::sanitise(
            caller_env,
            caller,
            &run_as,
            &argv.join(" "),
            &self.cfg.secure_path,
        );
        Ok(Prepared {
            authority: delegation.delegation,
            task: Some((task.name.clone(), task.redacted(&run.params))),
            stdin_data: rendered.stdin.clone().map(String::into_bytes),
            expires_at: delegation.expires_at,
            policies: vec![format!("delegation {}", delegation.delegation)],
            run_as,
            argv,
            resolved,
            env,
            cwd: None,
            tty: None,
            shell: false,
            // A task's definition never needs a setuid program's powers: it runs as its
            // run-as user already.
            no_new_privs: true,
            noexec: false,
            // A task's input is its rendered parameters (fed, never typed): not recorded.
            record_input: false,
            intercept: false,
            limits: Default::default(),
            watch_paths: vec![],
        })
    }
}

/// A session the agent decided to run.
pub(super) struct Prepared {
    /// The grant, or for a task the delegation, it runs under.
    pub(super) authority: Uuid,
    /// For a task: its name and parameters with secrets redacted.
    pub(super) task: Option<(String, std::collections::BTreeMap<String, String>)>,
    /// For a task: its rendered input (may hold secrets; never recorded).
    pub(super) stdin_data: Option<Vec<u8>>,
    pub(super) expires_at: Timestamp,
    pub(super) policies: Vec<String>,
    pub(super) run_as: TargetUser,
    pub(super) argv: Vec<String>,
    pub(super) resolved: crate::command::ResolvedCommand,
    pub(super) env: Vec<(String, String)>,
    pub(super) cwd: Option<PathBuf>,
    pub(super) tty: Option<pedm_api::socket::WinSize>,
    pub(super) shell: bool,
    /// The role does not allow setuid programs (`allow_setuid`).
    pub(super) no_new_privs: bool,
    /// The role's `noexec`.
    pub(super) noexec: bool,
    /// The role's `record_input`.
    pub(super) record_input: bool,
    /// The role's `intercept`.
    pub(super) intercept: bool,
    /// The role's resource limits, on everything the grant's sessions run.
    pub(super) limits: pedm_api::SessionLimits,
    /// The role's watched paths.
    pub(super) watch_paths: Vec<String>,
}
