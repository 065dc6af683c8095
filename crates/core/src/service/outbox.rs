//! The outbox's readers: each integration channel (a webhook, a Slack app, mail, ticket
//! comments) reads the durable notices in order from its own cursor and moves the cursor
//! only past what it delivered or gave up on, so a crash repeats a delivery rather than
//! losing one (at least once; the entry's `seq` is the idempotency key). Of several
//! instances, the holder of a channel's lease delivers it; another takes over when the lease
//! runs out.

use super::{ControlPlane, Result};
use crate::integration::{IntegrationEntry, IntegrationWrite};
use crate::notice::OutboxItem;
use crate::store::{Changeset, StoreError, Write};
use jiff::{SignedDuration, Timestamp};

const INTEGRATION: &str = "outbox";

impl ControlPlane {
    /// Up to `limit` outbox entries after `after`, in order.
    pub async fn outbox_after(&self, after: i64, limit: i64) -> Result<Vec<OutboxItem>> {
        Ok(self.store.outbox_after(after, limit).await?)
    }

    /// The newest outbox entry's `seq` (0: none yet).
    pub async fn outbox_head(&self) -> Result<i64> {
        Ok(self.store.outbox_head().await?)
    }

    /// Where `channel` stands: the `seq` of the last entry it is done with. A channel seen
    /// for the first time starts at the head (it does not replay what came before it).
    pub async fn outbox_cursor(&self, channel: &str) -> Result<i64> {
        let key = format!("cursor:{channel}");
        if let Some(e) = self.store.integration_entry(INTEGRATION, &key).await?
            && let Ok(seq) = e.value.parse()
        {
            return Ok(seq);
        }
        let head = self.outbox_head().await?;
        self.store
            .commit(
                Changeset::new().write(Write::Integration(IntegrationWrite::Put(
                    IntegrationEntry {
                        integration: INTEGRATION.into(),
                        key,
                        value: head.to_string(),
                        expires_at: None,
                    },
                ))),
            )
            .await?;
        Ok(head)
    }

    /// Takes or renews `holder`'s lease on `channel` for `secs`, and with `done` moves the
    /// channel's cursor to it in the same transaction. False (nothing changed) while another
    /// holder's lease is live.
    pub async fn outbox_lease(
        &self,
        channel: &str,
        holder: &str,
        secs: i64,
        done: Option<i64>,
    ) -> Result<bool> {
        let now = self.now();
        let mut cs = Changeset::new().write(Write::Integration(IntegrationWrite::Lease {
            entry: IntegrationEntry {
                integration: INTEGRATION.into(),
                key: format!("lease:{channel}"),
                value: holder.into(),
                expires_at: Some(now + SignedDuration::from_secs(secs)),
            },
            now,
        }));
        if let Some(seq) = done {
            cs = cs.write(Write::Integration(IntegrationWrite::Put(
                IntegrationEntry {
                    integration: INTEGRATION.into(),
                    key: format!("cursor:{channel}"),
                    value: seq.to_string(),
                    expires_at: None,
                },
            )));
        }
        match self.store.commit(cs).await {
            Ok(_) => Ok(true),
            Err(StoreError::AlreadyExists(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes outbox entries written before `before`.
    pub async fn outbox_purge(&self, before: Timestamp) -> Result<()> {
        self.store
            .commit(Changeset::new().write(Write::PurgeOutbox { before }))
            .await?;
        Ok(())
    }
}
