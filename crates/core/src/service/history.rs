//! What approvers see of a requester's past: requests, decisions, sessions recorded.

use super::*;

/// What an approver wants to know about who is asking: how often, what, and whether the
/// access was used (sessions recorded), over the last [`HISTORY_DAYS`] days.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequesterHistory {
    pub requests: usize,
    pub approved: usize,
    pub denied: usize,
    /// Requests for the same role on the same target.
    pub same_role: usize,
    pub break_glass: usize,
    /// Sessions recorded on hosts under the requester's grants.
    pub sessions: usize,
    pub last_granted_at: Option<Timestamp>,
}

pub const HISTORY_DAYS: i64 = 90;

/// A session is far longer than usual at this many times its person's median on the host and
/// account (and at least [`LONG_SESSION_MIN_SECS`]), once they have [`LONG_SESSION_HISTORY`].
pub const LONG_SESSION_FACTOR: i64 = 3;
pub const LONG_SESSION_MIN_SECS: i64 = 30 * 60;
pub const LONG_SESSION_HISTORY: usize = 3;

impl ControlPlane {
    /// Whether `s` lasted far longer than its person's sessions as the same account on the same
    /// host in the last 90 days: `(their median, how many)` when so.
    pub(super) async fn session_far_longer(
        &self,
        s: &crate::host::Session,
    ) -> Result<Option<(i64, usize)>> {
        let secs = s.ended_at.duration_since(s.started_at).as_secs();
        if secs < LONG_SESSION_MIN_SECS {
            return Ok(None);
        }
        let since = self.now() - SignedDuration::from_hours(24 * crate::risk::RISK_HISTORY_DAYS);
        let mut usual: Vec<i64> = self
            .store
            .sessions(&crate::host::SessionFilter {
                user: Some(s.user.clone()),
                host: Some(s.host.clone()),
                since: Some(since),
                limit: Some(500),
                ..Default::default()
            })
            .await?
            .into_iter()
            .filter(|h| h.id != s.id && h.run_as == s.run_as && h.started_at >= since)
            .map(|h| h.ended_at.duration_since(h.started_at).as_secs())
            .collect();
        if usual.len() < LONG_SESSION_HISTORY {
            return Ok(None);
        }
        usual.sort_unstable();
        let median = usual[usual.len() / 2].max(1);
        Ok((secs > LONG_SESSION_FACTOR * median).then_some((median, usual.len())))
    }

    /// The risk of `new` for `actor` ([`crate::risk`]), from their own requests of the last
    /// [`crate::risk::RISK_HISTORY_DAYS`] days.
    pub(super) async fn assess_risk(
        &self,
        actor: &Actor,
        new: &NewRequest,
        context: &RequestContext,
    ) -> Result<crate::risk::Risk> {
        let now = self.now();
        let history = self
            .store
            .requests(&RequestFilter {
                requester: Some(actor.user.clone()),
                since: Some(now - SignedDuration::from_hours(24 * crate::risk::RISK_HISTORY_DAYS)),
                limit: Some(10_000),
                ..Default::default()
            })
            .await?;
        let asked = crate::risk::Asked {
            target: &new.target,
            role: &new.role,
            duration_secs: new.duration_secs,
            break_glass: new.break_glass,
            device_trusted: context.device.get("trusted").is_some_and(|v| v == "true"),
            source_addr: context.source_addr.as_deref(),
        };
        Ok(crate::risk::assess(&asked, &history, now))
    }

    /// The requester's recent history, for whoever may see request `id` (the same check,
    /// and refusal, as [`Self::get_request`]); the request itself is not counted.
    pub async fn requester_history(&self, actor: &Actor, id: Uuid) -> Result<RequesterHistory> {
        let (req, _) = self.get_request(actor, id).await?;
        let since = self.now() - SignedDuration::from_hours(24 * HISTORY_DAYS);
        let earlier = self
            .store
            .requests(&RequestFilter {
                requester: Some(req.requester.clone()),
                since: Some(since),
                limit: Some(10_000),
                ..Default::default()
            })
            .await?;
        let mut h = RequesterHistory::default();
        for r in earlier.iter().filter(|r| r.id != req.id) {
            h.requests += 1;
            match r.state {
                RequestState::Approved => h.approved += 1,
                RequestState::Denied => h.denied += 1,
                _ => {}
            }
            if r.target == req.target && r.role == req.role {
                h.same_role += 1;
            }
            if r.break_glass {
                h.break_glass += 1;
            }
            if r.grant_id.is_some() {
                h.last_granted_at = h.last_granted_at.max(r.decided_at);
            }
        }
        h.sessions = self
            .store
            .sessions(&crate::host::SessionFilter {
                user: Some(req.requester.clone()),
                limit: Some(10_000),
                ..Default::default()
            })
            .await?
            .iter()
            .filter(|s| s.started_at >= since && s.grant_id.is_some())
            .count();
        Ok(h)
    }
}
