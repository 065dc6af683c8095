//! Targets and the roles defined on them: created, read and changed by admins with
//! `manage_targets`. A change wakes the property watch (`directory_changed`).

use super::*;

impl ControlPlane {
    pub async fn create_target(
        &self,
        actor: &Actor,
        name: &str,
        kind: TargetKind,
        description: Option<String>,
        labels: BTreeMap<String, String>,
    ) -> Result<Target> {
        self.require_admin(actor, AdminAction::ManageTargets, "target.create")
            .await?;
        validate_name("target", name)?;
        for (k, v) in &labels {
            validate_name("label key", k)?;
            if v.chars().count() > 128 || v.chars().any(|c| c.is_control()) {
                return Err(Error::invalid(
                    "label value",
                    format!("value of label {k} must be at most 128 printable characters"),
                ));
            }
        }
        let target = Target {
            name: name.to_string(),
            kind,
            description: trimmed("description", description, 500)?,
            labels,
            created_at: self.now(),
        };
        let cs = Changeset::new()
            .write(Write::InsertTarget(target.clone()))
            .event(
                self.event(actor, "target.created", subject("target", name))
                    .data(json!({ "kind": kind, "labels": target.labels })),
            );
        self.store.commit(cs).await.map_err(|e| match e {
            StoreError::AlreadyExists(_) => Error::AlreadyExists(format!(
                "target {name} (an existing name equal to it without regard to case)"
            )),
            e => e.into(),
        })?;
        self.directory_changed.notify_one();
        Ok(target)
    }

    pub async fn list_targets(&self) -> Result<Vec<Target>> {
        Ok(self.store.targets().await?)
    }

    pub async fn get_target(&self, name: &str) -> Result<(Target, Vec<Role>)> {
        let t = self
            .store
            .target(name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("target {name}")))?;
        let roles = self.store.roles(Some(name)).await?;
        Ok((t, roles))
    }

    pub async fn create_role(&self, actor: &Actor, r: NewRole) -> Result<Role> {
        self.require_admin(actor, AdminAction::ManageTargets, "role.create")
            .await?;
        validate_name("role", &r.name)?;
        if self.store.target(&r.target).await?.is_none() {
            return Err(Error::NotFound(format!("target {}", r.target)));
        }
        self.check_role_duration(r.max_duration_secs)?;
        if let Some(u) = &r.run_as {
            validate_name("run_as", u)?;
        }
        check_limits(&r.limits)?;
        check_watch_paths(&r.watch_paths).map_err(|m| Error::unprocessable("watch_paths", m))?;
        r.ssh.check().map_err(|m| Error::unprocessable("ssh", m))?;
        let role = Role {
            target: r.target.clone(),
            name: r.name.clone(),
            description: trimmed("description", r.description, 500)?,
            max_duration_secs: r.max_duration_secs,
            auto_approve: r.auto_approve,
            run_as: r.run_as,
            noexec: r.noexec,
            allow_setuid: r.allow_setuid,
            record_input: r.record_input,
            intercept: r.intercept,
            limits: r.limits,
            watch_paths: r.watch_paths,
            ssh: r.ssh,
            created_at: self.now(),
        };
        let cs = Changeset::new()
            .write(Write::InsertRole(role.clone()))
            .event(
                self.event(
                    actor,
                    "role.created",
                    subject("role", format!("{}/{}", r.target, r.name)),
                )
                .data(json!({
                    "max_duration_secs": role.max_duration_secs,
                    "auto_approve": role.auto_approve,
                    "run_as": role.run_as,
                    "noexec": role.noexec,
                    "allow_setuid": role.allow_setuid,
                    "record_input": role.record_input,
                    "intercept": role.intercept,
                    "limits": role.limits,
                    "watch_paths": role.watch_paths,
                    "ssh": role.ssh,
                })),
            );
        self.store.commit(cs).await.map_err(|e| match e {
            StoreError::AlreadyExists(_) => {
                Error::AlreadyExists(format!("role {} on target {}", r.name, r.target))
            }
            e => e.into(),
        })?;
        self.directory_changed.notify_one();
        Ok(role)
    }

    /// Changes a role's settings (needs `manage_targets`). Host session controls apply to
    /// sessions started from then on, under grants already held too; the run-as account is
    /// not changed here (a different account is a different role).
    pub async fn update_role(
        &self,
        actor: &Actor,
        target: &str,
        name: &str,
        c: RoleChange,
    ) -> Result<Role> {
        self.require_admin(actor, AdminAction::ManageTargets, "role.update")
            .await?;
        let Some(before) = self
            .store
            .roles(Some(target))
            .await?
            .into_iter()
            .find(|r| r.name.eq_ignore_ascii_case(name))
        else {
            return Err(Error::NotFound(format!("role {name} on target {target}")));
        };
        // Under two-person control one admin does not switch approvals off for a role that
        // had them (a new auto-approved role stays possible, as before this change existed).
        if c.auto_approve == Some(true) && !before.auto_approve && self.policy_approvals > 0 {
            return Err(self
                .refuse(
                    actor,
                    "role.update",
                    subject("role", format!("{}/{}", before.target, before.name)),
                    format!(
                        "role {name} on {target} needs approvals; with policy.require_approvals \
                         on, auto-approval is given by a reviewed policy change, not by one admin"
                    ),
                )
                .await);
        }
        let mut role = before.clone();
        if let Some(d) = c.description {
            role.description = trimmed("description", Some(d), 500)?;
        }
        if let Some(secs) = c.max_duration_secs {
            self.check_role_duration(secs)?;
            role.max_duration_secs = secs;
        }
        let flags = [
            (&mut role.auto_approve, c.auto_approve),
            (&mut role.noexec, c.noexec),
            (&mut role.allow_setuid, c.allow_setuid),
            (&mut role.record_input, c.record_input),
            (&mut role.intercept, c.intercept),
        ];
        for (field, new) in flags {
            if let Some(v) = new {
                *field = v;
            }
        }
        if let Some(l) = c.limits {
            check_limits(&l)?;
            role.limits = l;
        }
        if let Some(w) = c.watch_paths {
            check_watch_paths(&w).map_err(|m| Error::unprocessable("watch_paths", m))?;
            role.watch_paths = w;
        }
        if let Some(a) = c.ssh {
            a.check().map_err(|m| Error::unprocessable("ssh", m))?;
            role.ssh = a;
        }
        if role == before {
            return Ok(role);
        }
        let settings = |r: &Role| {
            json!({
                "description": r.description,
                "max_duration_secs": r.max_duration_secs,
                "auto_approve": r.auto_approve,
                "noexec": r.noexec,
                "allow_setuid": r.allow_setuid,
                "record_input": r.record_input,
                "intercept": r.intercept,
                "limits": r.limits,
                "watch_paths": r.watch_paths,
                "ssh": r.ssh,
            })
        };
        let cs = Changeset::new()
            .write(Write::UpdateRole(role.clone()))
            .event(
                self.event(
                    actor,
                    "role.updated",
                    subject("role", format!("{}/{}", role.target, role.name)),
                )
                .data(json!({ "before": settings(&before), "after": settings(&role) })),
            );
        self.store.commit(cs).await?;
        self.directory_changed.notify_one();
        Ok(role)
    }

    fn check_role_duration(&self, secs: i64) -> Result<()> {
        if secs <= 0 {
            return Err(Error::invalid("max_duration", "must be greater than zero"));
        }
        if secs > self.limits.max_duration_secs {
            return Err(Error::unprocessable(
                "max_duration",
                format!(
                    "{} is over the server limit of {}",
                    format_duration(secs),
                    format_duration(self.limits.max_duration_secs)
                ),
            ));
        }
        Ok(())
    }

    pub async fn list_roles(&self, target: Option<&str>) -> Result<Vec<Role>> {
        if let Some(t) = target
            && self.store.target(t).await?.is_none()
        {
            return Err(Error::NotFound(format!("target {t}")));
        }
        Ok(self.store.roles(target).await?)
    }
}

fn check_limits(l: &SessionLimits) -> Result<()> {
    l.check()
        .map_err(|(field, problem)| Error::invalid(field, problem))
}
