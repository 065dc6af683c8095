//! A request's ticket checked against the system it lives in, before policy decides: a
//! valid ticket's facts reach `context.ticket`; a ticket the system refuses (unknown, a state
//! not allowed, assigned to someone else) refuses the request; a system that cannot be asked
//! refuses it too (fail closed) unless configured to send such requests to people.

use super::*;
use crate::ticket::TicketCheck;

/// How a request's ticket stands after the check.
pub(super) enum TicketStanding {
    /// Not checked (no ticket, or no system for it), or valid (its facts are in the context).
    Settled,
    /// The system could not be asked and sends such requests to people: the request waits
    /// for an approval whatever policy says; the reason says why.
    NeedsApproval(String),
}

impl ControlPlane {
    /// Checks `ticket` for `actor`'s request, filling `context.ticket`; a refusal is
    /// recorded (`request.create` denied) and returned.
    pub(super) async fn check_ticket(
        &self,
        actor: &Actor,
        ticket: Option<&str>,
        context: &mut RequestContext,
    ) -> Result<TicketStanding> {
        let (Some(key), Some(checker)) = (ticket, &self.tickets) else {
            return Ok(TicketStanding::Settled);
        };
        let email = self.store.user(&actor.user).await?.and_then(|u| u.email);
        let why = match checker.check(key, &actor.user, email.as_deref()).await {
            TicketCheck::NotHandled => return Ok(TicketStanding::Settled),
            TicketCheck::Valid(facts) => {
                context.ticket = Some(facts);
                return Ok(TicketStanding::Settled);
            }
            TicketCheck::Unavailable {
                system,
                error,
                to_approvers: true,
            } => {
                return Ok(TicketStanding::NeedsApproval(format!(
                    "ticket {key} could not be checked in {system} ({error}): an approver decides"
                )));
            }
            TicketCheck::Unavailable { system, error, .. } => format!(
                "ticket {key} could not be checked in {system} ({error}); without the check the \
                 request is refused: try again when {system} answers"
            ),
            TicketCheck::Refused { reason, .. } => reason,
        };
        let ev = self
            .event(actor, "request.create", subject("ticket", key))
            .outcome(Outcome::Denied)
            .data(json!({ "reason": why, "ticket": key }));
        self.store.commit(Changeset::new().event(ev)).await?;
        Err(Error::unprocessable("ticket", why))
    }
}

impl ControlPlane {
    /// Active grants whose requests' tickets a system checked, with what it said then.
    pub async fn live_ticket_grants(&self) -> Result<Vec<(Grant, crate::ticket::TicketFacts)>> {
        Ok(self
            .live_grants_with_context()
            .await?
            .into_iter()
            .filter_map(|(g, c)| Some((g, c.ticket?)))
            .collect())
    }

    /// Active grants given by a `@while_on_call` permit: they end with their holder's shift.
    pub async fn live_on_call_grants(&self) -> Result<Vec<Grant>> {
        Ok(self
            .live_grants_with_context()
            .await?
            .into_iter()
            .filter_map(|(g, c)| c.while_on_call.then_some(g))
            .collect())
    }

    async fn live_grants_with_context(&self) -> Result<Vec<(Grant, crate::model::RequestContext)>> {
        let live = self
            .store
            .grants(&crate::model::GrantFilter {
                state: Some(GrantState::Active),
                limit: Some(100_000),
                ..Default::default()
            })
            .await?;
        let mut out = vec![];
        for g in live {
            if let Some(r) = self.store.request(g.request_id).await? {
                out.push((g, r.context));
            }
        }
        Ok(out)
    }

    /// Ends an active grant because something outside said so (its ticket closed, its
    /// holder's on-call shift ended): `grant.revoked` by `system`, with `why`.
    pub async fn end_grant_as_system(&self, id: Uuid, why: String) -> Result<Grant> {
        let g = self.load_grant(id).await?;
        self.end_grant(&Actor::system(), g, GrantState::Revoked, Some(why))
            .await
    }
}
