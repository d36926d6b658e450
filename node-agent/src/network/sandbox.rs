//! Per-container sandboxes: the network namespace, its veths to the bridges, addresses,
//! published ports, the resolv.conf/hosts files; `network connect/disconnect`.

use super::standby::Taken;
use super::*;

impl Networks {
    /// The first address of a running container (its primary network).
    pub async fn primary_ip(&self, container_id: &str) -> Option<Ipv4Addr> {
        let inner = self.inner.lock().await;
        inner
            .sandboxes
            .get(container_id)
            .and_then(|sb| sb.attachments.first())
            .map(|a| a.ip)
    }

    /// The networks a container is (to be) attached to.
    pub fn endpoints_of(&self, r: &ContainerRecord) -> Vec<EndpointConfig> {
        if let Ok(Some(v)) = fsutil::read_json::<Vec<EndpointConfig>>(&self.conn_file(&r.id)) {
            return v;
        }
        match r.config.network_mode.as_str() {
            "none" | "host" => vec![],
            m if network_container(m).is_some() => vec![],
            "" | "default" => vec![EndpointConfig {
                network: "bridge".into(),
                ..Default::default()
            }],
            m => vec![EndpointConfig {
                network: m.to_string(),
                ipv4_address: r.config.net.ipv4_address.clone(),
                aliases: r.config.net.aliases.clone(),
            }],
        }
    }

    /// Whether a container's networks include `network_id` (for `network rm`).
    pub async fn uses(&self, r: &ContainerRecord, network_id: &str) -> bool {
        let inner = self.inner.lock().await;
        self.endpoints_of(r).iter().any(|e| {
            Self::find(&inner, &e.network)
                .map(|s| s.net.id == network_id)
                .unwrap_or(false)
        })
    }

    /// Validates `--network` and the container's network options at create time.
    pub async fn check_mode(
        &self,
        mode: &str,
        net: &skiff_runtime::network::ContainerNet,
    ) -> Result<()> {
        skiff_runtime::network::hosts_file("x", &[], &net.extra_hosts).map_err(net_err)?;
        let user_defined = match mode {
            "none" | "host" => false,
            // Another container's namespace: `containers::namespaces::check_create` checks it.
            m if network_container(m).is_some() => false,
            m => {
                let found = {
                    let inner = self.inner.lock().await;
                    Self::find(&inner, m).map(|s| !s.net.is_default())
                };
                match found {
                    Ok(user) => user,
                    Err(e @ AgentError::NotFound(_)) => {
                        if !self.cluster_network_ok(m).await? {
                            return Err(e);
                        }
                        true
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        if (!net.ipv4_address.is_empty() || !net.aliases.is_empty()) && !user_defined {
            return Err(AgentError::Invalid(
                "user specified IP address and network aliases are supported on user defined networks only".into(),
            ));
        }
        if !net.ipv4_address.is_empty() && net.ipv4_address.parse::<Ipv4Addr>().is_err() {
            return Err(AgentError::Invalid(format!(
                "invalid IPv4 address: {}",
                net.ipv4_address
            )));
        }
        Ok(())
    }

    /// Wires a container's network before its shim starts; returns how its namespace is
    /// made. Writes its resolv.conf and hosts. On error nothing is left behind.
    pub async fn setup(
        &self,
        r: &ContainerRecord,
        paths: &Paths,
        exposed: &[String],
    ) -> Result<NetworkNamespace> {
        let mode = r.config.network_mode.as_str();
        if mode == "host" {
            return Ok(NetworkNamespace::Host);
        }
        let mut eps = self.endpoints_of(r);
        let attached = self.attach_standalone(r, &mut eps).await?;
        if eps.is_empty() {
            let hosts = skiff_runtime::network::hosts_file(
                &r.config.hostname,
                &[],
                &r.config.net.extra_hosts,
            )
            .map_err(net_err)?;
            fsutil::write_atomic(&paths.hosts(), hosts.as_bytes())?;
            return Ok(NetworkNamespace::New);
        }
        let mut inner = self.inner.lock().await;
        // A leftover from a run whose exit we did not see.
        self.teardown_locked(&mut inner, &r.id);
        let mut sb = Sandbox {
            container_id: r.id.clone(),
            name: r.name.clone(),
            netns: self.netns_dir.join(&r.id),
            dns: r.config.net.dns.clone(),
            attached,
            ..Default::default()
        };
        // A namespace made ahead (see standby.rs), perhaps with its veth pair.
        let made = match self.take_standby(&mut inner, &eps) {
            Taken::Wired {
                netns,
                sock,
                host_if,
                index,
                host_index,
            } => Made::Wired {
                from: netns,
                sock,
                standby_if: host_if,
                index,
                host_index,
            },
            Taken::Bare(netns) => Made::Namespace(netns),
            Taken::None => Made::Nothing,
        };
        // Under the lock only what other starts must see at once: addresses taken and
        // links named. The kernel work (namespace, veths: 2-5 ms) runs without it, so
        // the starts of a deploy wire side by side instead of one at a time.
        let planned = match self.plan(&mut inner, &sb, &eps) {
            Ok(p) => p,
            Err(e) => {
                made.discard();
                self.undo(&mut inner, sb);
                return Err(e);
            }
        };
        let embedded =
            Self::embedded_dns(&inner, planned.iter().map(|p| p.link.network_id.as_str()));
        drop(inner);
        let wired = self
            .wire(&mut sb, &planned, made, embedded, r, paths, exposed)
            .await;
        let mut inner = self.inner.lock().await;
        // A network removed meanwhile (it had no sandbox on it yet) takes this start
        // down with it, as if it had been removed first.
        let wired = wired.and_then(|()| {
            match planned
                .iter()
                .find(|p| !inner.nets.contains_key(&p.link.network_id))
            {
                Some(p) => Err(AgentError::NotFound(format!(
                    "network {} not found",
                    p.link.network_id
                ))),
                None => Ok(()),
            }
        });
        if let Err(e) = wired {
            // Addresses planned but never wired go back; wired ones go with their links.
            for p in planned.iter().skip(sb.attachments.len()) {
                release(&mut inner, &p.link.network_id, p.link.ip);
            }
            self.undo(&mut inner, sb);
            return Err(e);
        }
        let path = sb.netns.clone();
        if let Err(e) = fsutil::write_json_atomic(&self.sandbox_file(&r.id), &sb) {
            self.undo(&mut inner, sb);
            return Err(e.into());
        }
        inner.sandboxes.insert(r.id.clone(), sb);
        inner.sandboxes_added += 1;
        let mine = inner.sandboxes_added;
        // Group commit: the lock is let go so that starts queued behind this one add
        // their sandboxes too, and the first refresh after that covers all of them (a
        // deploy's starts each ran `nft` one after the other). Whoever finds its
        // sandbox covered by a refresh that already succeeded returns at once.
        drop(inner);
        let mut inner = self.inner.lock().await;
        if inner.refreshed_upto < mine {
            let refreshed =
                tracing::debug_span!("firewall").in_scope(|| self.refresh_locked(&mut inner));
            if let Err(e) = refreshed {
                self.teardown_locked(&mut inner, &r.id);
                return Err(e);
            }
        }
        Ok(NetworkNamespace::Join(path))
    }

    /// Takes an address and a link name on every network of `eps`, in order; on error
    /// what it took is given back.
    fn plan(
        &self,
        inner: &mut Inner,
        sb: &Sandbox,
        eps: &[EndpointConfig],
    ) -> Result<Vec<PlannedLink>> {
        let mut resolved = vec![];
        for ep in eps {
            resolved.push((Self::find(inner, &ep.network)?.net.id.clone(), ep));
        }
        let mut routed = false;
        let mut planned: Vec<PlannedLink> = vec![];
        for (i, (nid, ep)) in resolved.iter().enumerate() {
            match self.plan_one(inner, sb, nid, ep, i, &mut routed) {
                Ok(p) => planned.push(p),
                Err(e) => {
                    for p in &planned {
                        release(inner, &p.link.network_id, p.link.ip);
                    }
                    return Err(e);
                }
            }
        }
        Ok(planned)
    }

    /// The kernel side of a start, without the network lock: the namespace, each
    /// planned veth (pushed onto `sb.attachments` as it is made), published ports, the
    /// resolv.conf and hosts files. On error the caller undoes `sb`.
    #[allow(clippy::too_many_arguments)]
    async fn wire(
        &self,
        sb: &mut Sandbox,
        planned: &[PlannedLink],
        made: Made,
        embedded: Option<String>,
        r: &ContainerRecord,
        paths: &Paths,
        exposed: &[String],
    ) -> Result<()> {
        match (made, planned) {
            (
                Made::Wired {
                    from,
                    mut sock,
                    standby_if,
                    index,
                    host_index,
                },
                [p],
            ) => {
                let _span = tracing::debug_span!("standby").entered();
                // Recorded first, under the standby's link name: on failure `undo`
                // removes the link and gives its address back.
                sb.attachments.push(Attachment {
                    host_if: standby_if,
                    ..p.link.clone()
                });
                let bound =
                    tracing::debug_span!("bind").in_scope(|| link::bind_netns(&from, &sb.netns));
                forget_standby_path(from);
                bound.map_err(net_err)?;
                tracing::debug_span!("rename")
                    .in_scope(|| {
                        link::Netlink::open()
                            .and_then(|mut host| host.rename_up(host_index, &p.link.host_if))
                    })
                    .map_err(net_err)?;
                if let Some(a) = sb.attachments.last_mut() {
                    a.host_if = p.link.host_if.clone();
                }
                tracing::debug_span!("inside")
                    .in_scope(|| {
                        sock.configure_standby(index, &p.link.mac, p.link.ip, p.subnet, p.gateway)
                    })
                    .map_err(net_err)?;
            }
            (made, planned) => {
                match made {
                    Made::Namespace(from) => {
                        let bound = tracing::debug_span!("standby")
                            .in_scope(|| link::bind_netns(&from, &sb.netns));
                        forget_standby_path(from);
                        bound.map_err(net_err)?;
                    }
                    made => {
                        // A pair made for one network cannot serve another plan.
                        made.discard();
                        tracing::debug_span!("netns")
                            .in_scope(|| link::create_netns(&sb.netns))
                            .map_err(net_err)?;
                    }
                }
                for p in planned {
                    let a = tracing::debug_span!("veth", network_id = %p.link.network_id)
                        .in_scope(|| p.wire(&sb.netns))?;
                    sb.attachments.push(a);
                }
            }
        }
        // Published ports go to the first network's address, as with Docker.
        let mut bindings = r.config.net.ports.clone();
        if r.config.net.publish_all {
            for key in exposed {
                let (port, proto) = skiff_runtime::network::parse_exposed(key).map_err(net_err)?;
                if !bindings
                    .iter()
                    .any(|b| b.container_port == port && b.proto == proto)
                {
                    bindings.push(PortBinding {
                        host_ip: String::new(),
                        host_port: 0,
                        container_port: port,
                        proto,
                    });
                }
            }
        }
        if let Some(first) = sb.attachments.first().map(|a| a.ip) {
            for b in bindings {
                let bound = proxy::bind(&b).await.map_err(net_err)?;
                let mut actual = b.clone();
                actual.host_port = bound.port();
                sb.proxies.push(proxy::serve(
                    bound,
                    SocketAddr::from((first, b.container_port)),
                ));
                sb.ports.push(Published {
                    binding: actual,
                    container_ip: first,
                });
            }
        }
        tracing::debug_span!("files").in_scope(|| self.write_files_with(embedded, sb, r, paths))
    }

    /// The host end's name of a container's interface on network `nid`.
    fn host_if_name(&self, container_id: &str, nid: &str) -> String {
        format!(
            "{}v{}",
            self.prefix,
            short_hash(&format!("{container_id}{nid}"), 14 - self.prefix.len())
        )
    }

    fn net_mut<'a>(inner: &'a mut Inner, nid: &str) -> Result<&'a mut NetState> {
        inner
            .nets
            .get_mut(nid)
            .ok_or_else(|| AgentError::internal("network vanished"))
    }

    /// Takes the address of one interface and names its link; a restart's old link
    /// (and address) goes first.
    fn plan_one(
        &self,
        inner: &mut Inner,
        sb: &Sandbox,
        nid: &str,
        ep: &EndpointConfig,
        index: usize,
        routed: &mut bool,
    ) -> Result<PlannedLink> {
        let host_if = self.host_if_name(&sb.container_id, nid);
        // A restart of the same container: its old link (and address) must go first.
        self.unreap(inner, &host_if);
        let st = Self::net_mut(inner, nid)?;
        if st.net.overlay.is_some() && ep.ipv4_address.is_empty() {
            // Addresses on an overlay are the controller's to hand out.
            return Err(AgentError::Invalid(format!(
                "network {} is a cluster overlay: only service tasks can attach to it for now",
                st.net.name
            )));
        }
        let ip = if ep.ipv4_address.is_empty() {
            st.ipam.allocate().map_err(net_err)?
        } else {
            let ip: Ipv4Addr = ep.ipv4_address.parse().map_err(|_| {
                AgentError::Invalid(format!("invalid IP address {:?}", ep.ipv4_address))
            })?;
            st.ipam.reserve(ip).map_err(net_err)?;
            ip
        };
        let gateway = (!st.net.internal && !*routed).then_some(st.net.gateway);
        *routed |= gateway.is_some();
        Ok(PlannedLink {
            link: Attachment {
                network_id: nid.to_string(),
                ip,
                mac: link::mac_for(ip),
                ifname: format!("eth{index}"),
                host_if,
                aliases: ep.aliases.clone(),
            },
            bridge: st.net.bridge.clone(),
            subnet: st.net.subnet,
            gateway,
            // Lowered on overlays for the VXLAN encapsulation, set as the pair is made.
            mtu: st.net.overlay.is_some().then_some(vxlan::OVERLAY_MTU),
        })
    }

    /// The embedded DNS server (the gateway of the first user network among
    /// `networks`), if any: the default bridge has none.
    fn embedded_dns<'a>(inner: &Inner, networks: impl Iterator<Item = &'a str>) -> Option<String> {
        networks
            .filter_map(|nid| inner.nets.get(nid))
            .find(|st| !st.net.is_default())
            .map(|st| st.net.gateway.to_string())
    }

    /// resolv.conf and hosts: user networks use the embedded DNS on their gateway; the
    /// default bridge gets the configured (or the host's non-loopback) resolvers.
    pub(super) fn write_files(
        &self,
        inner: &Inner,
        sb: &Sandbox,
        r: &ContainerRecord,
        paths: &Paths,
    ) -> Result<()> {
        let embedded =
            Self::embedded_dns(inner, sb.attachments.iter().map(|a| a.network_id.as_str()));
        self.write_files_with(embedded, sb, r, paths)
    }

    /// [`Self::write_files`] with the embedded DNS server already looked up.
    fn write_files_with(
        &self,
        embedded: Option<String>,
        sb: &Sandbox,
        r: &ContainerRecord,
        paths: &Paths,
    ) -> Result<()> {
        let c = &r.config.net;
        let (host_ns, host_search, host_opts) = host_resolv();
        let nameservers: Vec<String> = match embedded {
            Some(gw) => vec![gw],
            None if !c.dns.is_empty() => c.dns.clone(),
            None if !self.settings.dns.is_empty() => self.settings.dns.clone(),
            None => host_ns,
        };
        let nameservers: Vec<String> = nameservers
            .into_iter()
            .filter(|n| !skiff_runtime::network::is_loopback(n))
            .collect();
        let search = if !c.dns_search.is_empty() {
            c.dns_search.clone()
        } else if !self.settings.dns_search.is_empty() {
            self.settings.dns_search.clone()
        } else {
            host_search
        };
        let opts = if c.dns_options.is_empty() {
            host_opts
        } else {
            c.dns_options.clone()
        };
        let resolv = skiff_runtime::network::resolv_conf(&nameservers, &search, &opts);
        let own: Vec<Ipv4Addr> = sb.attachments.first().map(|a| a.ip).into_iter().collect();
        let hosts = skiff_runtime::network::hosts_file(&r.config.hostname, &own, &c.extra_hosts)
            .map_err(net_err)?;
        // Generated again at every start: no fsync.
        fsutil::replace(&paths.resolv_conf(), resolv.as_bytes())?;
        fsutil::replace(&paths.hosts(), hosts.as_bytes())?;
        Ok(())
    }

    /// Undoes a sandbox. Its host-side veths go to the background reaper: deleting a
    /// link waits for kernel RCU grace periods (~20 ms each here), which would
    /// otherwise be most of a `run --rm`, and hold every other container's network
    /// set-up behind this lock. Each address stays taken until its link is gone, so it
    /// is never on two live interfaces at once.
    pub(super) fn undo(&self, inner: &mut Inner, sb: Sandbox) {
        if sb.attached {
            self.detach_standalone(&sb.container_id);
        }
        for p in &sb.proxies {
            p.abort();
        }
        for a in &sb.attachments {
            self.reap(inner, a);
        }
        if let Err(e) = link::delete_netns(&sb.netns) {
            tracing::warn!(error = %e, "removing network namespace");
        }
        let _ = std::fs::remove_file(self.sandbox_file(&sb.container_id));
    }

    pub(super) fn teardown_locked(&self, inner: &mut Inner, id: &str) {
        let sb = inner.sandboxes.remove(id).or_else(|| {
            fsutil::read_json::<Sandbox>(&self.sandbox_file(id))
                .ok()
                .flatten()
        });
        if let Some(sb) = sb {
            self.undo(inner, sb);
        }
        // A namespace made by a setup that crashed before recording it.
        let _ = link::delete_netns(&self.netns_dir.join(id));
    }

    /// Undoes a container's network after it exits; idempotent.
    pub async fn teardown(&self, id: &str) {
        let mut inner = self.inner.lock().await;
        let had = inner.sandboxes.contains_key(id) || self.sandbox_file(id).exists();
        tracing::debug_span!("unwire").in_scope(|| self.teardown_locked(&mut inner, id));
        if had {
            let refreshed =
                tracing::debug_span!("firewall").in_scope(|| self.refresh_locked(&mut inner));
            if let Err(e) = refreshed {
                tracing::warn!(error = %e, "refreshing firewall after teardown");
            }
        }
    }

    /// Forgets a removed container.
    pub async fn forget(&self, id: &str) {
        self.teardown(id).await;
        let _ = std::fs::remove_file(self.conn_file(id));
    }

    /// Docker's `NetworkSettings` for inspect.
    pub async fn settings_json(&self, r: &ContainerRecord) -> Value {
        let inner = self.inner.lock().await;
        let sb = inner.sandboxes.get(&r.id);
        let mut nets = serde_json::Map::new();
        let mut primary =
            json!({"IPAddress": "", "Gateway": "", "IPPrefixLen": 0, "MacAddress": ""});
        for ep in self.endpoints_of(r) {
            let Ok(st) = Self::find(&inner, &ep.network) else {
                continue;
            };
            let a = sb.and_then(|s| s.attachments.iter().find(|a| a.network_id == st.net.id));
            let v = json!({
                "NetworkID": st.net.id,
                "IPAddress": a.map(|a| a.ip.to_string()).unwrap_or_default(),
                "IPPrefixLen": if a.is_some() { st.net.subnet.prefix_len() } else { 0 },
                "Gateway": if a.is_some() { st.net.gateway.to_string() } else { String::new() },
                "MacAddress": a.map(|a| a.mac.clone()).unwrap_or_default(),
                "Aliases": ep.aliases,
                "IPAMConfig": if ep.ipv4_address.is_empty() { Value::Null } else { json!({"IPv4Address": ep.ipv4_address}) },
            });
            if nets.is_empty() {
                primary = v.clone();
            }
            nets.insert(st.net.name.clone(), v);
        }
        let mut ports = serde_json::Map::new();
        if let Some(sb) = sb {
            for p in &sb.ports {
                let key = format!("{}/{}", p.binding.container_port, p.binding.proto);
                let host_ip = if p.binding.host_ip.is_empty() {
                    "0.0.0.0".to_string()
                } else {
                    p.binding.host_ip.clone()
                };
                let entry = ports.entry(key).or_insert_with(|| json!([]));
                if let Some(arr) = entry.as_array_mut() {
                    arr.push(
                        json!({"HostIp": host_ip, "HostPort": p.binding.host_port.to_string()}),
                    );
                }
            }
        }
        json!({
            "SandboxKey": sb.map(|s| s.netns.display().to_string()).unwrap_or_default(),
            "IPAddress": primary["IPAddress"],
            "IPPrefixLen": primary["IPPrefixLen"],
            "Gateway": primary["Gateway"],
            "MacAddress": primary["MacAddress"],
            "Ports": ports,
            "Networks": nets,
        })
    }

    /// `network connect`: records the network for the container and, when it runs,
    /// wires the new interface live.
    pub async fn connect(
        &self,
        r: &ContainerRecord,
        paths: &Paths,
        running: bool,
        ep: EndpointConfig,
    ) -> Result<()> {
        if matches!(r.config.network_mode.as_str(), "host" | "none") {
            return Err(AgentError::Invalid(format!(
                "container cannot be disconnected from host network or connected to host network ({})",
                r.config.network_mode
            )));
        }
        if network_container(&r.config.network_mode).is_some() {
            return Err(AgentError::Invalid(
                "container sharing network namespace with another container or host cannot be connected to any other network".into(),
            ));
        }
        let mut inner = self.inner.lock().await;
        let nid = Self::find(&inner, &ep.network)?.net.id.clone();
        let mut eps = self.endpoints_of(r);
        for e in eps.iter_mut() {
            if let Ok(s) = Self::find(&inner, &e.network) {
                e.network = s.net.id.clone();
            }
        }
        if eps.iter().any(|e| e.network == nid) {
            return Err(AgentError::Conflict(format!(
                "endpoint with name {} already exists in network {}",
                r.name, ep.network
            )));
        }
        let ep = EndpointConfig {
            network: nid.clone(),
            ..ep
        };
        if running {
            if let Some(mut sb) = inner.sandboxes.remove(&r.id) {
                let mut routed = true;
                let idx = sb.attachments.len();
                // Planned and wired at once, under the lock: one interface, no burst.
                let res = self
                    .plan_one(&mut inner, &sb, &nid, &ep, idx, &mut routed)
                    .and_then(|p| {
                        p.wire(&sb.netns)
                            .inspect_err(|_| release(&mut inner, &p.link.network_id, p.link.ip))
                    });
                let res = res.and_then(|a| {
                    sb.attachments.push(a);
                    self.write_files(&inner, &sb, r, paths)?;
                    fsutil::write_json_atomic(&self.sandbox_file(&r.id), &sb)?;
                    Ok(())
                });
                inner.sandboxes.insert(r.id.clone(), sb);
                res?;
            }
        }
        eps.push(ep);
        fsutil::write_json_atomic(&self.conn_file(&r.id), &eps)?;
        self.refresh_locked(&mut inner)
    }

    /// `network disconnect`.
    pub async fn disconnect(&self, r: &ContainerRecord, network: &str) -> Result<()> {
        let mut inner = self.inner.lock().await;
        let nid = Self::find(&inner, network)?.net.id.clone();
        let mut eps = self.endpoints_of(r);
        let before = eps.len();
        eps.retain(|e| {
            Self::find(&inner, &e.network)
                .map(|s| s.net.id != nid)
                .unwrap_or(true)
        });
        if eps.len() == before {
            return Err(AgentError::Invalid(format!(
                "container {} is not connected to network {network}",
                r.name
            )));
        }
        if let Some(sb) = inner.sandboxes.get_mut(&r.id) {
            if let Some(pos) = sb.attachments.iter().position(|a| a.network_id == nid) {
                let a = sb.attachments.remove(pos);
                // Synchronous, unlike a stopped container's (see `undo`): the container
                // is still running and must be off the network when disconnect returns.
                let _ = link::delete_link(&a.host_if);
                release(&mut inner, &nid, a.ip);
            }
            if let Some(sb) = inner.sandboxes.get(&r.id) {
                fsutil::write_json_atomic(&self.sandbox_file(&r.id), sb)?;
            }
        }
        fsutil::write_json_atomic(&self.conn_file(&r.id), &eps)?;
        self.refresh_locked(&mut inner)
    }
}

/// Unmounts a taken standby's old path in the background: the namespace lives on at
/// its container's path (or, if that bind failed, goes with it), and an unmount waits
/// for an RCU grace period.
fn forget_standby_path(from: PathBuf) {
    tokio::task::spawn_blocking(move || {
        if let Err(e) = link::delete_netns(&from) {
            tracing::warn!(error = %e, "removing a standby namespace's old path");
        }
    });
}

/// What a start found made ahead of it (see standby.rs).
enum Made {
    Nothing,
    /// A namespace only, bound at this path.
    Namespace(PathBuf),
    /// A namespace (bound at `from`) with a veth pair for the start's one network:
    /// both ends down, the host end named `standby_if`.
    Wired {
        from: PathBuf,
        sock: link::Netlink,
        standby_if: String,
        index: u32,
        host_index: u32,
    },
}

impl Made {
    /// Removes what was made ahead but will not be used.
    fn discard(self) {
        match self {
            Made::Nothing => {}
            Made::Namespace(from) => {
                let _ = link::delete_netns(&from);
            }
            Made::Wired {
                from,
                sock,
                host_index,
                ..
            } => super::standby::discard_parts(sock, &from, Some(host_index)),
        }
    }
}

/// One interface of a start, planned under the network lock (address taken, link
/// named) and made without it.
pub(super) struct PlannedLink {
    /// What the interface will be once made.
    link: Attachment,
    bridge: String,
    subnet: ipnet::Ipv4Net,
    gateway: Option<Ipv4Addr>,
    mtu: Option<u32>,
}

impl PlannedLink {
    /// Creates the veth pair into `netns`; on failure nothing of it is left (the
    /// address stays taken: the caller gives it back under the lock).
    fn wire(&self, netns: &Path) -> Result<Attachment> {
        let a = &self.link;
        let spec = link::VethSpec {
            netns,
            bridge: &self.bridge,
            host_if: &a.host_if,
            ifname: &a.ifname,
            addr: a.ip,
            subnet: self.subnet,
            mac: &a.mac,
            gateway: self.gateway,
            mtu: self.mtu,
        };
        if let Err(e) = link::attach_veth(&spec) {
            let _ = link::delete_link(&a.host_if);
            return Err(net_err(e));
        }
        Ok(a.clone())
    }
}
