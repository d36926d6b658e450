//! The nftables table: recomputed from the whole network state after every change,
//! and re-applied when something else (firewalld, `nft flush ruleset`) removed it.

use super::*;

impl Networks {
    /// Re-applies the firewall if someone (a firewall reload) removed it.
    pub async fn check_firewall(&self) {
        let mut inner = self.inner.lock().await;
        let missing = !nft::table_exists(self.nft.as_ref(), &self.table);
        let added = nft::ensure_forward_accept(self.nft.as_ref(), &self.table, &self.prefix)
            .unwrap_or(false);
        if missing {
            tracing::warn!(table = %self.table, "nftables table was removed; re-applying");
            inner.fw_applied = None;
            if let Err(e) = self.refresh_locked(&mut inner) {
                tracing::warn!(error = %e, "re-applying firewall");
            }
        } else if added {
            tracing::info!("re-inserted FORWARD accept rules");
        }
    }

    /// Rebuilds DNS names and the nftables table from the whole state.
    pub(super) fn refresh_locked(&self, inner: &mut Inner) -> Result<()> {
        let covers = inner.sandboxes_added;
        let mut table = DnsTable::default();
        let ups: Vec<String> = if self.settings.dns.is_empty() {
            host_resolv().0
        } else {
            self.settings.dns.clone()
        };
        table.upstreams = ups.iter().filter_map(|s| dns::upstream_addr(s)).collect();
        let mut fw = FwState::default();
        for st in inner.nets.values() {
            fw.networks.push(FwNetwork {
                bridge: st.net.bridge.clone(),
                subnet: st.net.subnet,
                internal: st.net.internal,
            });
        }
        for (nid, names) in &inner.overlay_names {
            let m = table.names.entry(nid.clone()).or_default();
            for (k, v) in names {
                m.entry(k.clone()).or_default().extend(v.iter().copied());
            }
        }
        for st in inner.nets.values() {
            if let Some(o) = &st.net.overlay {
                let local = inner
                    .sandboxes
                    .values()
                    .flat_map(|sb| sb.attachments.iter())
                    .filter(|a| a.network_id == st.net.id)
                    .map(|a| a.ip)
                    .collect();
                fw.overlays.push(nft::FwOverlay {
                    bridge: st.net.bridge.clone(),
                    subnet: st.net.subnet,
                    node_ip: o.node_ip,
                    local,
                });
            }
        }
        fw.vips = inner.vips.clone();
        for sb in inner.sandboxes.values() {
            let own: Vec<SocketAddr> = sb
                .dns
                .iter()
                .filter_map(|s| dns::upstream_addr(s))
                .collect();
            let nets: Vec<String> = sb
                .attachments
                .iter()
                .map(|a| a.network_id.clone())
                .collect();
            for a in &sb.attachments {
                table.source_networks.insert(a.ip, nets.clone());
                let names = table.names.entry(a.network_id.clone()).or_default();
                let keys = [sb.name.clone(), sb.container_id[..12].to_string()]
                    .into_iter()
                    .chain(a.aliases.iter().cloned());
                for k in keys {
                    names.entry(k.to_ascii_lowercase()).or_default().push(a.ip);
                }
                if !own.is_empty() {
                    table.per_source.insert(a.ip, own.clone());
                }
            }
            for p in &sb.ports {
                fw.ports.push(FwPort {
                    proto: p.binding.proto,
                    host_ip: p.binding.host_ip.parse().ok(),
                    host_port: p.binding.host_port,
                    container_ip: p.container_ip,
                    container_port: p.binding.container_port,
                });
            }
        }
        fw.services = inner.services.values().map(|p| p.fw.clone()).collect();
        if let Ok(mut t) = self.dns.write() {
            *t = table;
        }
        // Most refreshes (a container without published ports starting or stopping)
        // leave the table as it is: `update` then runs no `nft` at all.
        let applied = inner.fw_applied.take();
        let done =
            nft::update(self.nft.as_ref(), &self.table, applied.as_ref(), &fw).map_err(net_err)?;
        tracing::debug!(update = ?done, "firewall");
        // A whole-table reload (networks or services changed; rare since task starts and
        // stops refill chains instead) also makes sure of the accept rules in
        // `ip filter FORWARD`, which a Docker started after us may have just created
        // with a DROP policy; the watcher checks them every 10 s besides.
        if done == nft::Update::Table {
            nft::ensure_forward_accept(self.nft.as_ref(), &self.table, &self.prefix)
                .map_err(net_err)?;
        }
        inner.fw_applied = Some(fw);
        inner.refreshed_upto = covers;
        Ok(())
    }
}

/// Re-applies our firewall every 10 s if a firewall reload (firewalld, `nft flush
/// ruleset`, Docker restarting) removed it.
pub fn spawn_firewall_watch(n: Arc<Networks>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
            n.check_firewall().await;
        }
    });
}
