//! Conversions between the gRPC contract's objects (`skiff_proto`) and the model: the
//! one place that knows both. Model → proto cannot fail; proto → model names the field
//! that is missing or invalid, so a peer's bad message is refused, never guessed at.
//!
//! The raft log keeps storing the model types as JSON: these types are the wire only.

use super::node::{Member, NodeDescription, Role};
use super::object::Stored;
use super::overlay::{Endpoint, OverlayNetwork, OverlayView, ServiceEndpoints};
use super::services::*;
use super::stack::{NetAlloc, StackNetwork};
use skiff_proto::cluster as cpb;
use skiff_proto::orchestrator as pb;
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

/// Why a proto message does not make a model value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("{field} is invalid: {value:?}")]
    Invalid { field: &'static str, value: String },
}

type Result<T> = std::result::Result<T, WireError>;

fn required<T>(v: Option<T>, field: &'static str) -> Result<T> {
    v.ok_or(WireError::Missing(field))
}

fn invalid(field: &'static str, value: impl ToString) -> WireError {
    WireError::Invalid {
        field,
        value: value.to_string(),
    }
}

fn to_btree(m: HashMap<String, String>) -> BTreeMap<String, String> {
    m.into_iter().collect()
}

fn to_hash(m: BTreeMap<String, String>) -> HashMap<String, String> {
    m.into_iter().collect()
}

fn ip(field: &'static str, s: &str) -> Result<Ipv4Addr> {
    s.parse().map_err(|_| invalid(field, s))
}

fn ips_from(m: HashMap<String, String>, field: &'static str) -> Result<BTreeMap<String, Ipv4Addr>> {
    m.into_iter()
        .map(|(k, v)| Ok((k, ip(field, &v)?)))
        .collect()
}

fn ips_to(m: BTreeMap<String, Ipv4Addr>) -> HashMap<String, String> {
    m.into_iter().map(|(k, v)| (k, v.to_string())).collect()
}

fn lists_from(m: HashMap<String, pb::StringList>) -> BTreeMap<String, Vec<String>> {
    m.into_iter().map(|(k, v)| (k, v.values)).collect()
}

fn lists_to(m: BTreeMap<String, Vec<String>>) -> HashMap<String, pb::StringList> {
    m.into_iter()
        .map(|(k, values)| (k, pb::StringList { values }))
        .collect()
}

fn port(field: &'static str, v: u32) -> Result<u16> {
    u16::try_from(v).map_err(|_| invalid(field, v))
}

// ---- task state ----------------------------------------------------------------------

impl From<TaskState> for pb::TaskState {
    fn from(s: TaskState) -> Self {
        match s {
            TaskState::New => pb::TaskState::New,
            TaskState::Pending => pb::TaskState::Pending,
            TaskState::Assigned => pb::TaskState::Assigned,
            TaskState::Preparing => pb::TaskState::Preparing,
            TaskState::Starting => pb::TaskState::Starting,
            TaskState::Running => pb::TaskState::Running,
            TaskState::Complete => pb::TaskState::Complete,
            TaskState::Failed => pb::TaskState::Failed,
            TaskState::Shutdown => pb::TaskState::Shutdown,
            TaskState::Rejected => pb::TaskState::Rejected,
            TaskState::Orphaned => pb::TaskState::Orphaned,
        }
    }
}

/// The task state a wire value (`TaskStatus.state`) names; UNSPECIFIED and values this
/// version does not know are refused.
pub fn task_state(v: i32) -> Result<TaskState> {
    let bad = || invalid("TaskStatus.state", v);
    Ok(match pb::TaskState::try_from(v).map_err(|_| bad())? {
        pb::TaskState::Unspecified => return Err(bad()),
        pb::TaskState::New => TaskState::New,
        pb::TaskState::Pending => TaskState::Pending,
        pb::TaskState::Assigned => TaskState::Assigned,
        pb::TaskState::Preparing => TaskState::Preparing,
        pb::TaskState::Starting => TaskState::Starting,
        pb::TaskState::Running => TaskState::Running,
        pb::TaskState::Complete => TaskState::Complete,
        pb::TaskState::Failed => TaskState::Failed,
        pb::TaskState::Shutdown => TaskState::Shutdown,
        pb::TaskState::Rejected => TaskState::Rejected,
        pb::TaskState::Orphaned => TaskState::Orphaned,
    })
}

impl From<Desired> for pb::DesiredState {
    fn from(d: Desired) -> Self {
        match d {
            Desired::Running => pb::DesiredState::Running,
            Desired::Shutdown => pb::DesiredState::Shutdown,
        }
    }
}

/// The desired state a wire value (`Task.desired`) names.
pub fn desired_state(v: i32) -> Result<Desired> {
    let bad = || invalid("Task.desired", v);
    match pb::DesiredState::try_from(v).map_err(|_| bad())? {
        pb::DesiredState::Running => Ok(Desired::Running),
        pb::DesiredState::Shutdown => Ok(Desired::Shutdown),
        pb::DesiredState::Unspecified => Err(bad()),
    }
}

impl From<TaskStatus> for pb::TaskStatus {
    fn from(s: TaskStatus) -> Self {
        pb::TaskStatus {
            state: pb::TaskState::from(s.state) as i32,
            message: s.message,
            error: s.error,
            container_id: s.container_id,
            exit_code: s.exit_code,
            timestamp_ms: s.timestamp_ms,
            health: s.health,
        }
    }
}

impl TryFrom<pb::TaskStatus> for TaskStatus {
    type Error = WireError;
    fn try_from(s: pb::TaskStatus) -> Result<Self> {
        Ok(TaskStatus {
            state: task_state(s.state)?,
            message: s.message,
            error: s.error,
            container_id: s.container_id,
            exit_code: s.exit_code,
            timestamp_ms: s.timestamp_ms,
            health: s.health,
        })
    }
}

// ---- task template -------------------------------------------------------------------

impl From<MountSpec> for pb::Mount {
    fn from(m: MountSpec) -> Self {
        pb::Mount {
            kind: m.kind,
            source: m.source,
            target: m.target,
            read_only: m.read_only,
        }
    }
}

impl From<pb::Mount> for MountSpec {
    fn from(m: pb::Mount) -> Self {
        MountSpec {
            kind: m.kind,
            source: m.source,
            target: m.target,
            read_only: m.read_only,
        }
    }
}

impl From<FileMount> for pb::FileMount {
    fn from(f: FileMount) -> Self {
        pb::FileMount {
            kind: f.kind,
            name: f.name,
            target: f.target,
            mode: f.mode,
        }
    }
}

impl From<pb::FileMount> for FileMount {
    fn from(f: pb::FileMount) -> Self {
        FileMount {
            kind: f.kind,
            name: f.name,
            target: f.target,
            mode: f.mode,
        }
    }
}

impl From<PortSpec> for pb::PortConfig {
    fn from(p: PortSpec) -> Self {
        pb::PortConfig {
            target: p.target.into(),
            published: p.published.into(),
            protocol: p.protocol,
            mode: p.mode,
        }
    }
}

impl TryFrom<pb::PortConfig> for PortSpec {
    type Error = WireError;
    fn try_from(p: pb::PortConfig) -> Result<Self> {
        Ok(PortSpec {
            target: port("PortConfig.target", p.target)?,
            published: port("PortConfig.published", p.published)?,
            protocol: p.protocol,
            mode: p.mode,
        })
    }
}

impl From<Healthcheck> for pb::Healthcheck {
    fn from(h: Healthcheck) -> Self {
        pb::Healthcheck {
            test: h.test,
            interval_ms: h.interval_ms,
            timeout_ms: h.timeout_ms,
            retries: h.retries,
            start_period_ms: h.start_period_ms,
        }
    }
}

impl From<pb::Healthcheck> for Healthcheck {
    fn from(h: pb::Healthcheck) -> Self {
        Healthcheck {
            test: h.test,
            interval_ms: h.interval_ms,
            timeout_ms: h.timeout_ms,
            retries: h.retries,
            start_period_ms: h.start_period_ms,
        }
    }
}

impl From<Limits> for pb::Resources {
    fn from(l: Limits) -> Self {
        pb::Resources {
            nano_cpus: l.nano_cpus,
            memory_bytes: l.memory_bytes,
            pids: l.pids,
        }
    }
}

impl From<pb::Resources> for Limits {
    fn from(l: pb::Resources) -> Self {
        Limits {
            nano_cpus: l.nano_cpus,
            memory_bytes: l.memory_bytes,
            pids: l.pids,
        }
    }
}

impl From<ContainerOptions> for pb::ContainerOptions {
    fn from(c: ContainerOptions) -> Self {
        pb::ContainerOptions {
            cap_add: c.cap_add,
            cap_drop: c.cap_drop,
            privileged: c.privileged,
            security_opt: c.security_opt,
            devices: c.devices,
            init: c.init,
            tty: c.tty,
            stdin_open: c.stdin_open,
            read_only: c.read_only,
            dns: c.dns,
            dns_search: c.dns_search,
            dns_options: c.dns_options,
            extra_hosts: c.extra_hosts,
            ulimits: c.ulimits,
            tmpfs: c.tmpfs,
            log_opts: c.log_opts,
            sysctls: to_hash(c.sysctls),
            shm_size: c.shm_size,
            ipc: c.ipc,
            pid: c.pid,
            network_mode: c.network_mode,
        }
    }
}

impl From<pb::ContainerOptions> for ContainerOptions {
    fn from(c: pb::ContainerOptions) -> Self {
        ContainerOptions {
            cap_add: c.cap_add,
            cap_drop: c.cap_drop,
            privileged: c.privileged,
            security_opt: c.security_opt,
            devices: c.devices,
            init: c.init,
            tty: c.tty,
            stdin_open: c.stdin_open,
            read_only: c.read_only,
            dns: c.dns,
            dns_search: c.dns_search,
            dns_options: c.dns_options,
            extra_hosts: c.extra_hosts,
            ulimits: c.ulimits,
            tmpfs: c.tmpfs,
            log_opts: c.log_opts,
            sysctls: to_btree(c.sysctls),
            shm_size: c.shm_size,
            ipc: c.ipc,
            pid: c.pid,
            network_mode: c.network_mode,
        }
    }
}

impl From<TaskTemplate> for pb::TaskTemplate {
    fn from(t: TaskTemplate) -> Self {
        pb::TaskTemplate {
            image: t.image,
            entrypoint: t.entrypoint.map(|values| pb::StringList { values }),
            command: t.command.map(|values| pb::StringList { values }),
            env: t.env,
            labels: to_hash(t.labels),
            hostname: t.hostname,
            user: t.user,
            working_dir: t.working_dir,
            mounts: t.mounts.into_iter().map(Into::into).collect(),
            networks: lists_to(t.networks),
            limits: Some(t.limits.into()),
            reservations: Some(t.reservations.into()),
            healthcheck: t.healthcheck.map(Into::into),
            stop_signal: t.stop_signal,
            stop_grace_period_ms: t.stop_grace_period_ms,
            files: t.files.into_iter().map(Into::into).collect(),
            container: Some(t.container.into()),
        }
    }
}

/// Absent resources and container options are the zero values (no limits, no options).
impl TryFrom<pb::TaskTemplate> for TaskTemplate {
    type Error = WireError;
    fn try_from(t: pb::TaskTemplate) -> Result<Self> {
        Ok(TaskTemplate {
            image: t.image,
            entrypoint: t.entrypoint.map(|l| l.values),
            command: t.command.map(|l| l.values),
            env: t.env,
            labels: to_btree(t.labels),
            hostname: t.hostname,
            user: t.user,
            working_dir: t.working_dir,
            mounts: t.mounts.into_iter().map(Into::into).collect(),
            networks: lists_from(t.networks),
            limits: t.limits.map(Into::into).unwrap_or_default(),
            reservations: t.reservations.map(Into::into).unwrap_or_default(),
            healthcheck: t.healthcheck.map(Into::into),
            stop_signal: t.stop_signal,
            stop_grace_period_ms: t.stop_grace_period_ms,
            files: t.files.into_iter().map(Into::into).collect(),
            container: t.container.map(Into::into).unwrap_or_default(),
        })
    }
}

// ---- services ------------------------------------------------------------------------

impl From<RestartPolicy> for pb::RestartPolicy {
    fn from(r: RestartPolicy) -> Self {
        pb::RestartPolicy {
            condition: r.condition,
            delay_ms: r.delay_ms,
            max_attempts: r.max_attempts,
            window_ms: r.window_ms,
        }
    }
}

impl From<pb::RestartPolicy> for RestartPolicy {
    fn from(r: pb::RestartPolicy) -> Self {
        RestartPolicy {
            condition: r.condition,
            delay_ms: r.delay_ms,
            max_attempts: r.max_attempts,
            window_ms: r.window_ms,
        }
    }
}

impl From<UpdateConfig> for pb::UpdateConfig {
    fn from(u: UpdateConfig) -> Self {
        pb::UpdateConfig {
            parallelism: u.parallelism,
            delay_ms: u.delay_ms,
            failure_action: u.failure_action,
            monitor_ms: u.monitor_ms,
            max_failure_ratio: u.max_failure_ratio,
            order: u.order,
        }
    }
}

impl From<pb::UpdateConfig> for UpdateConfig {
    fn from(u: pb::UpdateConfig) -> Self {
        UpdateConfig {
            parallelism: u.parallelism,
            delay_ms: u.delay_ms,
            failure_action: u.failure_action,
            monitor_ms: u.monitor_ms,
            max_failure_ratio: u.max_failure_ratio,
            order: u.order,
        }
    }
}

impl From<Placement> for pb::Placement {
    fn from(p: Placement) -> Self {
        pb::Placement {
            constraints: p.constraints,
            spread: p.spread,
            max_replicas_per_node: p.max_replicas_per_node,
        }
    }
}

impl From<pb::Placement> for Placement {
    fn from(p: pb::Placement) -> Self {
        Placement {
            constraints: p.constraints,
            spread: p.spread,
            max_replicas_per_node: p.max_replicas_per_node,
        }
    }
}

impl From<ServiceDependency> for pb::ServiceDependency {
    fn from(d: ServiceDependency) -> Self {
        pb::ServiceDependency {
            service: d.service,
            condition: d.condition,
        }
    }
}

impl From<pb::ServiceDependency> for ServiceDependency {
    fn from(d: pb::ServiceDependency) -> Self {
        ServiceDependency {
            service: d.service,
            condition: d.condition,
        }
    }
}

impl From<ServiceSpec> for pb::ServiceSpec {
    fn from(s: ServiceSpec) -> Self {
        use pb::service_spec::Mode as M;
        pb::ServiceSpec {
            name: s.name,
            stack: s.stack,
            labels: to_hash(s.labels),
            mode: Some(match s.mode {
                Mode::Replicated { replicas } => M::Replicated(pb::ReplicatedMode { replicas }),
                Mode::Global => M::Global(pb::GlobalMode {}),
            }),
            template: Some(s.template.into()),
            placement: Some(s.placement.into()),
            restart_policy: Some(s.restart_policy.into()),
            update_config: Some(s.update_config.into()),
            rollback_config: Some(s.rollback_config.into()),
            ports: s.ports.into_iter().map(Into::into).collect(),
            endpoint_mode: s.endpoint_mode,
            depends_on: s.depends_on.into_iter().map(Into::into).collect(),
            colocate_with: s.colocate_with,
        }
    }
}

/// The mode, template and policies are required: their zero values are not the
/// defaults a spec gets (one replica, restart `any`, update one at a time).
impl TryFrom<pb::ServiceSpec> for ServiceSpec {
    type Error = WireError;
    fn try_from(s: pb::ServiceSpec) -> Result<Self> {
        use pb::service_spec::Mode as M;
        Ok(ServiceSpec {
            name: s.name,
            stack: s.stack,
            labels: to_btree(s.labels),
            mode: match required(s.mode, "ServiceSpec.mode")? {
                M::Replicated(r) => Mode::Replicated {
                    replicas: r.replicas,
                },
                M::Global(_) => Mode::Global,
            },
            template: required(s.template, "ServiceSpec.template")?.try_into()?,
            placement: s.placement.map(Into::into).unwrap_or_default(),
            restart_policy: required(s.restart_policy, "ServiceSpec.restart_policy")?.into(),
            update_config: required(s.update_config, "ServiceSpec.update_config")?.into(),
            rollback_config: required(s.rollback_config, "ServiceSpec.rollback_config")?.into(),
            ports: s
                .ports
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_>>()?,
            endpoint_mode: s.endpoint_mode,
            depends_on: s.depends_on.into_iter().map(Into::into).collect(),
            colocate_with: s.colocate_with,
        })
    }
}

impl From<UpdateStatus> for pb::UpdateStatus {
    fn from(u: UpdateStatus) -> Self {
        pb::UpdateStatus {
            state: u.state,
            message: u.message,
            started_at_ms: u.started_at_ms,
            next_batch_at_ms: u.next_batch_at_ms,
        }
    }
}

impl From<pb::UpdateStatus> for UpdateStatus {
    fn from(u: pb::UpdateStatus) -> Self {
        UpdateStatus {
            state: u.state,
            message: u.message,
            started_at_ms: u.started_at_ms,
            next_batch_at_ms: u.next_batch_at_ms,
        }
    }
}

impl From<Stored<Service>> for pb::Service {
    fn from(s: Stored<Service>) -> Self {
        let v = s.value;
        pb::Service {
            id: s.id,
            version: s.version,
            spec: Some(v.spec.into()),
            previous: v.previous.map(Into::into),
            generation: v.generation,
            update: v.update.map(Into::into),
            vips: ips_to(v.vips),
            created_at_ms: v.created_at_ms,
            updated_at_ms: v.updated_at_ms,
        }
    }
}

impl TryFrom<pb::Service> for Stored<Service> {
    type Error = WireError;
    fn try_from(s: pb::Service) -> Result<Self> {
        Ok(Stored {
            id: s.id,
            version: s.version,
            value: Service {
                spec: required(s.spec, "Service.spec")?.try_into()?,
                previous: s.previous.map(TryInto::try_into).transpose()?,
                generation: s.generation,
                update: s.update.map(Into::into),
                vips: ips_from(s.vips, "Service.vips")?,
                created_at_ms: s.created_at_ms,
                updated_at_ms: s.updated_at_ms,
            },
        })
    }
}

// ---- tasks ---------------------------------------------------------------------------

impl From<Stored<Task>> for pb::Task {
    fn from(t: Stored<Task>) -> Self {
        let v = t.value;
        pb::Task {
            id: t.id,
            version: t.version,
            service_id: v.service_id,
            service_name: v.service_name,
            stack: v.stack,
            slot: v.slot,
            node_id: v.node_id,
            generation: v.generation,
            template: Some(v.template.into()),
            desired: pb::DesiredState::from(v.desired) as i32,
            status: Some(v.status.into()),
            created_at_ms: v.created_at_ms,
            not_before_ms: v.not_before_ms,
            attempt: v.attempt,
            addresses: ips_to(v.addresses),
        }
    }
}

impl TryFrom<pb::Task> for Stored<Task> {
    type Error = WireError;
    fn try_from(t: pb::Task) -> Result<Self> {
        Ok(Stored {
            id: t.id,
            version: t.version,
            value: Task {
                service_id: t.service_id,
                service_name: t.service_name,
                stack: t.stack,
                slot: t.slot,
                node_id: t.node_id,
                generation: t.generation,
                template: required(t.template, "Task.template")?.try_into()?,
                desired: desired_state(t.desired)?,
                status: required(t.status, "Task.status")?.try_into()?,
                created_at_ms: t.created_at_ms,
                not_before_ms: t.not_before_ms,
                attempt: t.attempt,
                addresses: ips_from(t.addresses, "Task.addresses")?,
            },
        })
    }
}

// ---- networks ------------------------------------------------------------------------

impl From<NetAlloc> for pb::NetworkAllocation {
    fn from(a: NetAlloc) -> Self {
        pb::NetworkAllocation {
            subnet: a.subnet.to_string(),
            gateway: a.gateway.to_string(),
            vni: a.vni,
            nodes: ips_to(a.nodes),
        }
    }
}

impl TryFrom<pb::NetworkAllocation> for NetAlloc {
    type Error = WireError;
    fn try_from(a: pb::NetworkAllocation) -> Result<Self> {
        Ok(NetAlloc {
            subnet: a
                .subnet
                .parse()
                .map_err(|_| invalid("NetworkAllocation.subnet", &a.subnet))?,
            gateway: ip("NetworkAllocation.gateway", &a.gateway)?,
            vni: a.vni,
            nodes: ips_from(a.nodes, "NetworkAllocation.nodes")?,
        })
    }
}

impl From<StackNetwork> for pb::Network {
    fn from(n: StackNetwork) -> Self {
        pb::Network {
            name: n.name,
            driver: n.driver,
            internal: n.internal,
            attachable: n.attachable,
            subnet: n.subnet,
            external: n.external,
            stack: n.stack,
            alloc: n.alloc.map(Into::into),
        }
    }
}

impl TryFrom<pb::Network> for StackNetwork {
    type Error = WireError;
    fn try_from(n: pb::Network) -> Result<Self> {
        Ok(StackNetwork {
            name: n.name,
            driver: n.driver,
            internal: n.internal,
            attachable: n.attachable,
            subnet: n.subnet,
            external: n.external,
            stack: n.stack,
            alloc: n.alloc.map(TryInto::try_into).transpose()?,
        })
    }
}

// ---- the overlay view ----------------------------------------------------------------

impl From<OverlayNetwork> for pb::OverlayNetwork {
    fn from(n: OverlayNetwork) -> Self {
        pb::OverlayNetwork {
            id: n.id,
            name: n.name,
            internal: n.internal,
            attachable: n.attachable,
            alloc: Some(n.alloc.into()),
            peers: to_hash(n.peers),
        }
    }
}

impl TryFrom<pb::OverlayNetwork> for OverlayNetwork {
    type Error = WireError;
    fn try_from(n: pb::OverlayNetwork) -> Result<Self> {
        Ok(OverlayNetwork {
            id: n.id,
            name: n.name,
            internal: n.internal,
            attachable: n.attachable,
            alloc: required(n.alloc, "OverlayNetwork.alloc")?.try_into()?,
            peers: to_btree(n.peers),
        })
    }
}

impl From<Endpoint> for pb::Endpoint {
    fn from(e: Endpoint) -> Self {
        pb::Endpoint {
            network: e.network,
            ip: e.ip.to_string(),
            node_id: e.node_id,
            task_id: e.task_id,
            service: e.service,
            running: e.running,
            names: e.names,
        }
    }
}

impl TryFrom<pb::Endpoint> for Endpoint {
    type Error = WireError;
    fn try_from(e: pb::Endpoint) -> Result<Self> {
        Ok(Endpoint {
            ip: ip("Endpoint.ip", &e.ip)?,
            network: e.network,
            node_id: e.node_id,
            task_id: e.task_id,
            service: e.service,
            running: e.running,
            names: e.names,
        })
    }
}

impl From<ServiceEndpoints> for pb::ServiceEndpoints {
    fn from(s: ServiceEndpoints) -> Self {
        pb::ServiceEndpoints {
            name: s.name,
            dnsrr: s.dnsrr,
            vips: ips_to(s.vips),
            aliases: lists_to(s.aliases),
            ports: s.ports.into_iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<pb::ServiceEndpoints> for ServiceEndpoints {
    type Error = WireError;
    fn try_from(s: pb::ServiceEndpoints) -> Result<Self> {
        Ok(ServiceEndpoints {
            name: s.name,
            dnsrr: s.dnsrr,
            vips: ips_from(s.vips, "ServiceEndpoints.vips")?,
            aliases: lists_from(s.aliases),
            ports: s
                .ports
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_>>()?,
        })
    }
}

impl From<OverlayView> for pb::OverlayView {
    fn from(v: OverlayView) -> Self {
        pb::OverlayView {
            all: v.all,
            networks: v.networks.into_iter().map(Into::into).collect(),
            endpoints: v.endpoints.into_iter().map(Into::into).collect(),
            services: v.services.into_iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<pb::OverlayView> for OverlayView {
    type Error = WireError;
    fn try_from(v: pb::OverlayView) -> Result<Self> {
        Ok(OverlayView {
            all: v.all,
            networks: v
                .networks
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_>>()?,
            endpoints: v
                .endpoints
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_>>()?,
            services: v
                .services
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_>>()?,
        })
    }
}

// ---- nodes ---------------------------------------------------------------------------

impl From<NodeDescription> for cpb::NodeDescription {
    fn from(d: NodeDescription) -> Self {
        cpb::NodeDescription {
            nano_cpus: d.nano_cpus,
            memory_bytes: d.memory_bytes,
            engine_labels: to_hash(d.engine_labels),
            os: d.os,
            arch: d.arch,
            image_share_port: u32::from(d.image_share_port),
        }
    }
}

impl From<cpb::NodeDescription> for NodeDescription {
    fn from(d: cpb::NodeDescription) -> Self {
        NodeDescription {
            nano_cpus: d.nano_cpus,
            memory_bytes: d.memory_bytes,
            engine_labels: to_btree(d.engine_labels),
            os: d.os,
            arch: d.arch,
            // A port past 65535 is no port.
            image_share_port: u16::try_from(d.image_share_port).unwrap_or(0),
        }
    }
}

impl From<Member> for cpb::Member {
    fn from(m: Member) -> Self {
        cpb::Member {
            node_id: m.node_id,
            role: m.role.as_str().into(),
            ready: m.ready,
            image_addr: m.image_addr,
            data_addr: m.data_addr,
        }
    }
}

/// A role this version does not know reads as a worker: the member is listed (it may
/// still fetch), and only its role is not trusted.
impl From<cpb::Member> for Member {
    fn from(m: cpb::Member) -> Self {
        Member {
            node_id: m.node_id,
            role: Role::parse(&m.role).unwrap_or_default(),
            ready: m.ready,
            image_addr: m.image_addr,
            data_addr: m.data_addr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Every field set, and set to something other than its default, so a field one
    /// direction forgets comes back different.
    fn template() -> TaskTemplate {
        TaskTemplate {
            image: "nginx:1".into(),
            entrypoint: Some(strs(&["/init"])),
            command: Some(vec![]),
            env: strs(&["A=1", "B=2"]),
            labels: map(&[("l", "v")]),
            hostname: "web-1".into(),
            user: "www".into(),
            working_dir: "/srv".into(),
            mounts: vec![MountSpec {
                kind: "volume".into(),
                source: "data".into(),
                target: "/data".into(),
                read_only: true,
            }],
            networks: [("front".to_string(), strs(&["web", "www"]))].into(),
            limits: Limits {
                nano_cpus: 500_000_000,
                memory_bytes: 1 << 28,
                pids: 100,
            },
            reservations: Limits {
                nano_cpus: 1,
                memory_bytes: 2,
                pids: 3,
            },
            healthcheck: Some(Healthcheck {
                test: strs(&["CMD", "true"]),
                interval_ms: 1000,
                timeout_ms: 2000,
                retries: 3,
                start_period_ms: 4000,
            }),
            stop_signal: "SIGQUIT".into(),
            stop_grace_period_ms: 7000,
            files: vec![FileMount {
                kind: "secret".into(),
                name: "s_pw".into(),
                target: "/run/secrets/pw".into(),
                mode: 0o400,
            }],
            container: ContainerOptions {
                cap_add: strs(&["NET_ADMIN"]),
                cap_drop: strs(&["MKNOD"]),
                privileged: true,
                security_opt: strs(&["no-new-privileges"]),
                devices: strs(&["/dev/fuse"]),
                init: true,
                tty: true,
                stdin_open: true,
                read_only: true,
                dns: strs(&["1.1.1.1"]),
                dns_search: strs(&["example.com"]),
                dns_options: strs(&["ndots:2"]),
                extra_hosts: strs(&["db:10.0.0.9"]),
                ulimits: strs(&["nofile=10:20"]),
                tmpfs: strs(&["/tmp:size=1m"]),
                log_opts: strs(&["max-size=1m"]),
                sysctls: map(&[("net.core.somaxconn", "1024")]),
                shm_size: 1 << 20,
                ipc: "shareable".into(),
                pid: "host".into(),
                network_mode: "service:app_db".into(),
            },
        }
    }

    fn spec(mode: Mode) -> ServiceSpec {
        ServiceSpec {
            name: "app_web".into(),
            stack: "app".into(),
            labels: map(&[("com.docker.stack.namespace", "app")]),
            mode,
            template: template(),
            placement: Placement {
                constraints: strs(&["node.role==worker"]),
                spread: strs(&["zone"]),
                max_replicas_per_node: 2,
            },
            restart_policy: RestartPolicy {
                condition: "on-failure".into(),
                delay_ms: 1,
                max_attempts: 2,
                window_ms: 3,
            },
            update_config: UpdateConfig {
                parallelism: 2,
                delay_ms: 10,
                failure_action: "rollback".into(),
                monitor_ms: 20,
                max_failure_ratio: 0.25,
                order: "start-first".into(),
            },
            rollback_config: UpdateConfig {
                parallelism: 3,
                delay_ms: 30,
                failure_action: "continue".into(),
                monitor_ms: 40,
                max_failure_ratio: 0.5,
                order: "stop-first".into(),
            },
            ports: vec![PortSpec {
                target: 80,
                published: 8080,
                protocol: "tcp".into(),
                mode: "ingress".into(),
            }],
            endpoint_mode: "dnsrr".into(),
            depends_on: vec![ServiceDependency {
                service: "app_db".into(),
                condition: "service_healthy".into(),
            }],
            colocate_with: strs(&["app_data"]),
        }
    }

    fn service() -> Stored<Service> {
        Stored {
            id: "svc1".into(),
            version: 7,
            value: Service {
                spec: spec(Mode::Replicated { replicas: 3 }),
                previous: Some(spec(Mode::Global)),
                generation: 4,
                update: Some(UpdateStatus {
                    state: "updating".into(),
                    message: "batch 1".into(),
                    started_at_ms: 11,
                    next_batch_at_ms: 12,
                }),
                vips: [("front".to_string(), Ipv4Addr::new(10, 0, 1, 2))].into(),
                created_at_ms: 100,
                updated_at_ms: 200,
            },
        }
    }

    fn task() -> Stored<Task> {
        Stored {
            id: "task1".into(),
            version: 9,
            value: Task {
                service_id: "svc1".into(),
                service_name: "app_web".into(),
                stack: "app".into(),
                slot: 2,
                node_id: "node1".into(),
                generation: 4,
                template: template(),
                desired: Desired::Shutdown,
                status: TaskStatus {
                    state: TaskState::Running,
                    message: "started".into(),
                    error: "none".into(),
                    container_id: "c0ffee".into(),
                    exit_code: 3,
                    timestamp_ms: 123,
                    health: "healthy".into(),
                },
                created_at_ms: 5,
                not_before_ms: 6,
                attempt: 1,
                addresses: [("front".to_string(), Ipv4Addr::new(10, 0, 1, 5))].into(),
            },
        }
    }

    fn alloc() -> NetAlloc {
        NetAlloc {
            subnet: "10.0.1.0/24".parse().expect("subnet"),
            gateway: Ipv4Addr::new(10, 0, 1, 1),
            vni: 4097,
            nodes: [("node1".to_string(), Ipv4Addr::new(10, 0, 1, 3))].into(),
        }
    }

    #[test]
    fn services_round_trip() {
        let s = service();
        let back: Stored<Service> = pb::Service::from(s.clone()).try_into().expect("service");
        assert_eq!(back, s);
        // A service never updated, with nothing to roll back to.
        let mut plain = service();
        plain.value.previous = None;
        plain.value.update = None;
        plain.value.spec.template.entrypoint = None;
        plain.value.spec.template.command = None;
        plain.value.spec.template.healthcheck = None;
        let back: Stored<Service> = pb::Service::from(plain.clone())
            .try_into()
            .expect("service");
        assert_eq!(back, plain);
    }

    #[test]
    fn tasks_round_trip_in_every_state() {
        let states = TaskState::ALL;
        for (state, desired) in states
            .into_iter()
            .zip([Desired::Running, Desired::Shutdown].into_iter().cycle())
        {
            let mut t = task();
            t.value.status.state = state;
            t.value.desired = desired;
            let back: Stored<Task> = pb::Task::from(t.clone()).try_into().expect("task");
            assert_eq!(back, t);
        }
    }

    #[test]
    fn networks_and_overlay_view_round_trip() {
        let n = StackNetwork {
            name: "app_front".into(),
            driver: "overlay".into(),
            internal: true,
            attachable: true,
            subnet: Some("10.9.0.0/24".into()),
            external: true,
            stack: "app".into(),
            alloc: Some(alloc()),
        };
        let back: StackNetwork = pb::Network::from(n.clone()).try_into().expect("network");
        assert_eq!(back, n);

        let view = OverlayView {
            all: strs(&["app_front", "other"]),
            networks: vec![OverlayNetwork {
                id: "net1".into(),
                name: "app_front".into(),
                internal: true,
                attachable: true,
                alloc: alloc(),
                peers: map(&[("node1", "192.168.1.1")]),
            }],
            endpoints: vec![Endpoint {
                network: "app_front".into(),
                ip: Ipv4Addr::new(10, 0, 1, 5),
                node_id: "node1".into(),
                task_id: "task1".into(),
                service: "app_web".into(),
                running: true,
                names: strs(&["c1"]),
            }],
            services: vec![ServiceEndpoints {
                name: "app_web".into(),
                dnsrr: true,
                vips: [("app_front".to_string(), Ipv4Addr::new(10, 0, 1, 2))].into(),
                aliases: [("app_front".to_string(), strs(&["app_web", "web"]))].into(),
                ports: spec(Mode::Global).ports,
            }],
        };
        let back: OverlayView = pb::OverlayView::from(view.clone())
            .try_into()
            .expect("view");
        assert_eq!(back, view);
    }

    #[test]
    fn members_round_trip() {
        let m = Member {
            node_id: "n1".into(),
            role: Role::Manager,
            ready: true,
            image_addr: "10.0.0.1:2377".into(),
            data_addr: "10.0.0.1".into(),
        };
        assert_eq!(Member::from(cpb::Member::from(m.clone())), m);
    }

    #[test]
    fn node_descriptions_round_trip() {
        let d = NodeDescription {
            nano_cpus: 2_000_000_000,
            memory_bytes: 1 << 30,
            engine_labels: map(&[("zone", "a")]),
            os: "linux".into(),
            arch: "x86_64".into(),
            image_share_port: 7946,
        };
        assert_eq!(
            NodeDescription::from(cpb::NodeDescription::from(d.clone())),
            d
        );
    }

    #[test]
    fn bad_enums_and_missing_fields_are_named() {
        let mut t = pb::Task::from(task());
        t.status = Some(pb::TaskStatus {
            state: pb::TaskState::Unspecified as i32,
            ..Default::default()
        });
        assert_eq!(
            Stored::<Task>::try_from(t.clone()),
            Err(invalid("TaskStatus.state", 0))
        );
        t.status = Some(pb::TaskStatus {
            state: 99,
            ..Default::default()
        });
        assert_eq!(
            Stored::<Task>::try_from(t.clone()),
            Err(invalid("TaskStatus.state", 99))
        );
        t.status = None;
        assert_eq!(
            Stored::<Task>::try_from(t.clone()),
            Err(WireError::Missing("Task.status"))
        );
        let mut t = pb::Task::from(task());
        t.desired = 0;
        assert_eq!(Stored::<Task>::try_from(t), Err(invalid("Task.desired", 0)));
        let mut t = pb::Task::from(task());
        t.template = None;
        assert_eq!(
            Stored::<Task>::try_from(t),
            Err(WireError::Missing("Task.template"))
        );

        let mut s = pb::ServiceSpec::from(spec(Mode::Global));
        s.mode = None;
        assert_eq!(
            ServiceSpec::try_from(s),
            Err(WireError::Missing("ServiceSpec.mode"))
        );
        let mut s = pb::ServiceSpec::from(spec(Mode::Global));
        s.restart_policy = None;
        assert_eq!(
            ServiceSpec::try_from(s),
            Err(WireError::Missing("ServiceSpec.restart_policy"))
        );
        let mut s = pb::ServiceSpec::from(spec(Mode::Global));
        s.ports[0].published = 70000;
        assert_eq!(
            ServiceSpec::try_from(s),
            Err(invalid("PortConfig.published", 70000))
        );
        let mut svc = pb::Service::from(service());
        svc.vips.insert("x".into(), "not-an-ip".into());
        assert_eq!(
            Stored::<Service>::try_from(svc),
            Err(invalid("Service.vips", "not-an-ip"))
        );
        let mut a = pb::NetworkAllocation::from(alloc());
        a.subnet = "10.0.1.0/99".into();
        assert_eq!(
            NetAlloc::try_from(a),
            Err(invalid("NetworkAllocation.subnet", "10.0.1.0/99"))
        );
    }
}
