//! Host links of stopped containers, deleted in the background: their addresses are
//! released once the link is gone, and the agent waits for them at shutdown.

use super::*;

impl Networks {
    /// Deletes `a`'s host link in the background, then releases its address.
    pub(super) fn reap(&self, inner: &mut Inner, a: &Attachment) {
        let index = match link::link_index(&a.host_if) {
            Ok(Some(i)) => i,
            Ok(None) => {
                release(inner, &a.network_id, a.ip);
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, link = %a.host_if, "finding link to delete");
                let _ = link::delete_link(&a.host_if);
                release(inner, &a.network_id, a.ip);
                return;
            }
        };
        let Some(me) = self.me.upgrade() else {
            let _ = link::delete_link_index(index);
            release(inner, &a.network_id, a.ip);
            return;
        };
        inner.reaping.insert(
            a.host_if.clone(),
            Reaping {
                network_id: a.network_id.clone(),
                ip: a.ip,
                index,
            },
        );
        let host_if = a.host_if.clone();
        tokio::spawn(
            async move {
                let deleted =
                    tokio::task::spawn_blocking(move || link::delete_link_index(index)).await;
                if let Ok(Err(e)) = deleted {
                    tracing::warn!(error = %e, "deleting link");
                }
                let mut inner = me.inner.lock().await;
                // Absent or another index: a new set-up of the same container took the
                // name over (see unreap) and released this address itself.
                if inner
                    .reaping
                    .get(&host_if)
                    .is_some_and(|r| r.index == index)
                {
                    if let Some(r) = inner.reaping.remove(&host_if) {
                        release(&mut inner, &r.network_id, r.ip);
                    }
                }
            }
            .instrument(tracing::debug_span!("reap", link = %a.host_if)),
        );
    }

    /// Finishes a pending deletion of `host_if` now (a restarted container reuses its
    /// link name), releasing the address it held.
    pub(super) fn unreap(&self, inner: &mut Inner, host_if: &str) {
        if let Some(r) = inner.reaping.remove(host_if) {
            if let Err(e) = link::delete_link_index(r.index) {
                tracing::warn!(error = %e, link = %host_if, "deleting link");
            }
            release(inner, &r.network_id, r.ip);
        }
    }

    /// Waits (up to `limit`) for background link deletions to finish.
    pub async fn flush_reaper(&self, limit: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.inner.lock().await.reaping.is_empty() {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!("links still being deleted at shutdown");
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}
