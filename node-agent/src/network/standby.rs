//! Standby sandboxes: network namespaces made ahead of the starts that will use them.
//!
//! Making a container's namespace and its veth pair is about 2 ms of kernel work
//! (a thread that unshares, a bind mount, the pair's creation and its move into the
//! namespace), a tenth of a `run --rm`. So after a start on a local network the agent
//! makes the next one's in the background: a namespace with loopback up and, for a
//! network, a veth pair plugged into its bridge, both ends down and without an
//! address. A start that finds one moves the namespace to its own name, renames the
//! host end to its own link name and sets it up, and gives the container end its
//! MAC, address and route: five netlink requests and a bind mount, on a socket kept
//! inside the namespace. Starts that need something else (several networks, an
//! overlay) take a bare namespace if one waits, and wire the rest as before.
//!
//! A standby holds no address: addresses are taken when a container starts, in the
//! same order as without standbys, and `--ip` never meets one.
//!
//! Bounds and clean-up:
//! - at most [`PER_POOL`] standbys per network and for bare namespaces, for the
//!   [`MAX_NETWORKS`] networks last started on (the default bridge's from agent
//!   start); `network rm` removes the network's standbys first;
//! - namespaces wait in `<exec-root>/netns-standby/`, host ends are named
//!   `<prefix>s<random>`; once taken, the namespace is at `<exec-root>/netns/<id>`
//!   and the host end has the container's link name, so a running container's wiring
//!   looks the same whichever way it was made. The agent removes standbys at stop
//!   ([`Networks::drain_standbys`]) and, after a crash, at its next start with the
//!   other stray links and namespaces (`reconcile`). Nothing of one standby is ever
//!   shared by two containers: it is taken out of its pool under the network lock,
//!   once.

use super::*;
use std::collections::VecDeque;

/// Standbys kept ready per pool.
const PER_POOL: usize = 2;
/// Networks that keep prewired standbys (besides bare namespaces).
const MAX_NETWORKS: usize = 4;
/// The pool key of bare namespaces.
const BARE: &str = "";

/// One namespace made ahead.
pub(super) struct Standby {
    pub(super) netns: PathBuf,
    /// A socket inside the namespace: the start's two requests need no thread to
    /// enter it.
    sock: link::Netlink,
    wired: Option<Prewired>,
}

/// The veth pair of a standby made for a network.
struct Prewired {
    /// Its host end's name while it waits.
    host_if: String,
    /// The container end's index inside the namespace.
    index: u32,
    /// The host end's index.
    host_index: u32,
}

#[derive(Default)]
struct Pool {
    ready: VecDeque<Standby>,
    /// Being made in the background.
    making: usize,
    /// When a start last used (or wanted) this pool, for eviction.
    used_at: u64,
}

/// Every pool, by network ID ([`BARE`] for bare namespaces).
#[derive(Default)]
pub(super) struct Standbys {
    pools: HashMap<String, Pool>,
    clock: u64,
    /// Set at agent stop: nothing more is made, and what is still being made is
    /// removed as it arrives.
    closed: bool,
}

/// What a start got from the pools.
pub(super) enum Taken {
    /// A namespace bound at `netns`, with a veth pair into the start's one network.
    Wired {
        netns: PathBuf,
        sock: link::Netlink,
        /// The host end's name while it waited (the start renames it).
        host_if: String,
        index: u32,
        host_index: u32,
    },
    /// A namespace with loopback up, nothing else.
    Bare(PathBuf),
    None,
}

impl Networks {
    fn standby_dir(&self) -> PathBuf {
        self.netns_dir.with_file_name("netns-standby")
    }

    /// The network a start of `eps` can take a prewired standby of: one endpoint, on
    /// a local (bridge) network.
    fn prewirable<'a>(inner: &'a Inner, eps: &[EndpointConfig]) -> Option<&'a NetState> {
        let [ep] = eps else { return None };
        Self::find(inner, &ep.network)
            .ok()
            .filter(|st| st.net.overlay.is_none())
    }

    /// Takes a standby for a start on `eps` (see [`Taken`]) and has the pool it came
    /// from (or should have come from) refilled in the background.
    pub(super) fn take_standby(&self, inner: &mut Inner, eps: &[EndpointConfig]) -> Taken {
        if inner.standbys.closed {
            return Taken::None;
        }
        if let Some(nid) = Self::prewirable(inner, eps).map(|st| st.net.id.clone()) {
            let taken = self.take_from(inner, &nid);
            self.refill(inner, &nid);
            return match taken {
                Some(Standby {
                    netns,
                    sock,
                    wired: Some(w),
                }) => Taken::Wired {
                    netns,
                    sock,
                    host_if: w.host_if,
                    index: w.index,
                    host_index: w.host_index,
                },
                // A network's pool holds only wired standbys.
                _ => Taken::None,
            };
        }
        let taken = self.take_from(inner, BARE);
        self.refill(inner, BARE);
        match taken {
            Some(s) => Taken::Bare(s.netns),
            None => Taken::None,
        }
    }

    fn take_from(&self, inner: &mut Inner, key: &str) -> Option<Standby> {
        inner.standbys.clock += 1;
        let now = inner.standbys.clock;
        let pool = inner.standbys.pools.entry(key.to_string()).or_default();
        pool.used_at = now;
        pool.ready.pop_front()
    }

    /// Starts making standbys for pool `key` up to [`PER_POOL`]; drops the pools of
    /// networks beyond the [`MAX_NETWORKS`] last used.
    pub(super) fn refill(&self, inner: &mut Inner, key: &str) {
        if inner.standbys.closed {
            return;
        }
        let Some(me) = self.me.upgrade() else { return };
        let networks = inner.standbys.pools.keys().filter(|k| *k != BARE).count();
        if networks > MAX_NETWORKS {
            let oldest = inner
                .standbys
                .pools
                .iter()
                .filter(|(k, _)| *k != BARE && *k != key)
                .min_by_key(|(_, p)| p.used_at)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.drop_pool(inner, &k);
            }
        }
        let Some(pool) = inner.standbys.pools.get_mut(key) else {
            return;
        };
        let missing = PER_POOL.saturating_sub(pool.ready.len() + pool.making);
        pool.making += missing;
        for _ in 0..missing {
            let me = me.clone();
            let key = key.to_string();
            tokio::spawn(
                async move { me.make_standby(key).await }
                    .instrument(tracing::debug_span!("standby")),
            );
        }
    }

    /// Makes one standby for pool `key` and adds it (or, if the pool went away
    /// meanwhile, removes it again).
    async fn make_standby(&self, key: String) {
        let name = hex::encode(rand::random::<[u8; 8]>());
        let netns = self.standby_dir().join(&name);
        let planned = if key == BARE {
            Ok(None)
        } else {
            let inner = self.inner.lock().await;
            match inner.nets.get(&key) {
                Some(st) if st.net.overlay.is_none() => Ok(Some(PlannedStandby {
                    bridge: st.net.bridge.clone(),
                    host_if: format!("{}s{}", self.prefix, &name[..14 - self.prefix.len()]),
                })),
                _ => Err(format!("network {key} keeps no standby")),
            }
        };
        let made = match planned {
            Ok(planned) => {
                let path = netns.clone();
                tokio::task::spawn_blocking(move || {
                    build_standby(path, planned).map_err(|e| e.to_string())
                })
                .await
                .unwrap_or_else(|e| Err(format!("standby thread: {e}")))
            }
            Err(e) => Err(e),
        };
        let mut inner = self.inner.lock().await;
        let live = key == BARE || inner.nets.contains_key(&key);
        let closed = inner.standbys.closed;
        let pool = inner.standbys.pools.get_mut(&key);
        match made {
            Ok(s) => match pool {
                Some(p) if !closed && live => {
                    p.making = p.making.saturating_sub(1);
                    p.ready.push_back(s);
                }
                _ => self.discard(s),
            },
            Err(e) => {
                tracing::debug!(error = %e, network_id = %key, "no standby sandbox");
                if let Some(p) = pool {
                    p.making = p.making.saturating_sub(1);
                }
            }
        }
    }

    /// Removes a standby that will not be used (see [`discard_parts`]).
    fn discard(&self, s: Standby) {
        discard_parts(s.sock, &s.netns, s.wired.map(|w| w.host_index));
    }

    /// Drops the standbys of pool `key` (a network's at its removal, or an evicted
    /// pool's).
    pub(super) fn drop_pool(&self, inner: &mut Inner, key: &str) {
        if let Some(p) = inner.standbys.pools.remove(key) {
            for s in p.ready {
                self.discard(s);
            }
        }
    }

    /// Prepares the default bridge's standbys (agent start).
    pub(super) fn prefill_default(&self, inner: &mut Inner) {
        if let Some(nid) = inner
            .nets
            .values()
            .find(|s| s.net.is_default())
            .map(|s| s.net.id.clone())
        {
            inner.standbys.clock += 1;
            let now = inner.standbys.clock;
            inner.standbys.pools.entry(nid.clone()).or_default().used_at = now;
            self.refill(inner, &nid);
        }
    }

    /// Removes every standby (agent stop): their namespaces and links.
    pub async fn drain_standbys(&self) {
        let mut inner = self.inner.lock().await;
        inner.standbys.closed = true;
        let pools: Vec<Pool> = inner.standbys.pools.drain().map(|(_, p)| p).collect();
        drop(inner);
        let mut links = vec![];
        for s in pools.into_iter().flat_map(|p| p.ready) {
            drop(s.sock);
            if let Err(e) = link::delete_netns(&s.netns) {
                tracing::warn!(error = %e, "removing a standby namespace");
            }
            links.extend(s.wired.map(|w| w.host_index));
        }
        // Waited for: the agent's stop leaves no link behind.
        let _ = tokio::task::spawn_blocking(move || {
            for index in links {
                let _ = link::delete_link_index(index);
            }
        })
        .await;
    }

    /// Removes the standby directory's namespaces (left by an agent that was killed;
    /// a start moves the namespace it takes out of it).
    pub(super) fn sweep_standbys(&self) {
        if let Ok(rd) = std::fs::read_dir(self.standby_dir()) {
            for ent in rd.flatten() {
                let _ = link::delete_netns(&ent.path());
            }
        }
    }
}

/// Removes what was made ahead but will not be used: the namespace (which takes the
/// container end, and with it the pair) and, in the background (a link deletion
/// waits for RCU grace periods), the host end.
pub(super) fn discard_parts(sock: link::Netlink, netns: &Path, host_index: Option<u32>) {
    drop(sock);
    if let Err(e) = link::delete_netns(netns) {
        tracing::warn!(error = %e, "removing a standby namespace");
    }
    if let Some(index) = host_index {
        tokio::task::spawn_blocking(move || link::delete_link_index(index));
    }
}

/// A standby's veth pair, as planned under the network lock.
struct PlannedStandby {
    bridge: String,
    host_if: String,
}

/// The kernel side of a standby, off the async threads; on failure nothing is left.
fn build_standby(
    netns: PathBuf,
    planned: Option<PlannedStandby>,
) -> std::result::Result<Standby, NetError> {
    let mut sock = link::create_netns(&netns)?;
    let Some(p) = planned else {
        return Ok(Standby {
            netns,
            sock,
            wired: None,
        });
    };
    let wired = link::Netlink::open()
        .and_then(|mut host| host.standby_veth(&netns, &p.bridge, &p.host_if, "eth0", &mut sock));
    match wired {
        Ok((index, host_index)) => Ok(Standby {
            wired: Some(Prewired {
                host_if: p.host_if,
                index,
                host_index,
            }),
            netns,
            sock,
        }),
        Err(e) => {
            drop(sock);
            let _ = link::delete_netns(&netns);
            Err(e)
        }
    }
}
