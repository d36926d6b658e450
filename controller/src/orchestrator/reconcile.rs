//! The reconciler: compares desired state (services) with actual state (tasks, nodes)
//! and returns the operations that move one towards the other, as one batch.
//!
//! It is a pure function of a [`World`] (which includes the time), so every rule is
//! table-tested. The leader runs it after every change and on a tick, and proposes
//! the result through raft. Rules, in order:
//! 1. tasks of removed services are shut down, then deleted once terminal;
//! 2. tasks on nodes that are down, or drained, are shut down and replaced;
//! 3. finished tasks are replaced per the restart policy (condition, delay, attempts);
//! 4. replicas are kept at the spec (missing slots created, surplus shut down); global
//!    services get one task per eligible node;
//! 5. rolling updates replace outdated tasks `parallelism` at a time, `stop-first` or
//!    `start-first`, pausing or rolling back when updated tasks fail;
//! 6. unassigned tasks are placed by the [`scheduler`](crate::scheduler) in one plan;
//! 7. task history beyond five per slot is deleted.

use crate::model::*;
use crate::model::{Availability, Node, NodeStatus, Op, Role};
use crate::scheduler::{
    self, Availability as SAvail, Constraint, NodeInfo, PendingTask, PlacedTask, Resources,
    Role as SRole,
};
pub use crate::store::Stored;
use std::collections::{BTreeMap, HashMap};

/// History kept per slot, as Swarm's default task history retention.
pub const HISTORY: usize = 5;

/// Everything the reconciler looks at.
pub struct World<'a> {
    pub services: &'a [Stored<Service>],
    pub tasks: &'a [Stored<Task>],
    pub nodes: &'a [Node],
    pub now_ms: i64,
}

fn is_live(t: &Task) -> bool {
    t.desired == Desired::Running
}

fn node_ready(n: &Node) -> bool {
    n.status == NodeStatus::Ready
}

fn task_name(t: &Task, id: &str) -> String {
    if t.slot > 0 {
        format!("{}.{}.{}", t.service_name, t.slot, &id[..id.len().min(12)])
    } else {
        format!(
            "{}.{}.{}",
            t.service_name,
            &t.node_id[..t.node_id.len().min(12)],
            &id[..id.len().min(12)]
        )
    }
}

/// Builds the operations for one reconcile pass.
pub struct Planner {
    ops: Vec<Op>,
    /// Task updates by id (so a task changed by two rules yields one op).
    updates: BTreeMap<String, (u64, Task)>,
    /// Tasks deleted in this pass: no later rule may touch them (the state machine
    /// rejects a batch that updates what it deleted, and the next pass would rebuild the
    /// same batch).
    deleted: std::collections::HashSet<String>,
    new_id: Box<dyn FnMut() -> String>,
}

impl Planner {
    fn update(&mut self, t: &Stored<Task>, f: impl FnOnce(&mut Task)) {
        if self.deleted.contains(&t.id) {
            return;
        }
        let entry = self
            .updates
            .entry(t.id.clone())
            .or_insert_with(|| (t.version, t.value.clone()));
        f(&mut entry.1);
    }

    fn current<'b>(&'b self, t: &'b Stored<Task>) -> &'b Task {
        self.updates.get(&t.id).map(|(_, v)| v).unwrap_or(&t.value)
    }

    fn create(&mut self, t: Task) {
        let id = (self.new_id)();
        let name = task_name(&t, &id);
        if let Ok(spec) = serde_json::to_vec(&t) {
            self.ops.push(Op::Create {
                kind: KIND_TASK.into(),
                id,
                name,
                spec,
            });
        }
    }

    fn shutdown(&mut self, t: &Stored<Task>, state: Option<TaskState>, message: &str, now: i64) {
        self.update(t, |v| {
            v.desired = Desired::Shutdown;
            if let Some(s) = state {
                if !v.status.state.is_terminal() {
                    v.status.state = s;
                    v.status.message = message.into();
                    v.status.timestamp_ms = now;
                }
            }
        });
    }

    fn delete(&mut self, t: &Stored<Task>) {
        if self.deleted.insert(t.id.clone()) {
            self.updates.remove(&t.id);
            self.ops.push(Op::Delete {
                kind: KIND_TASK.into(),
                id: t.id.clone(),
                expected_version: 0,
            });
        }
    }

    fn finish(mut self) -> Vec<Op> {
        for (id, (version, task)) in std::mem::take(&mut self.updates) {
            if let Ok(spec) = serde_json::to_vec(&task) {
                self.ops.push(Op::Update {
                    kind: KIND_TASK.into(),
                    id,
                    spec,
                    expected_version: version,
                });
            }
        }
        self.ops
    }
}

fn new_task(
    svc: &Stored<Service>,
    slot: u64,
    node_id: &str,
    attempt: u64,
    not_before: i64,
    now: i64,
) -> Task {
    Task {
        service_id: svc.id.clone(),
        service_name: svc.value.spec.name.clone(),
        stack: svc.value.spec.stack.clone(),
        slot,
        node_id: node_id.into(),
        generation: svc.value.generation,
        template: svc.value.spec.template.clone(),
        desired: Desired::Running,
        status: TaskStatus {
            state: TaskState::New,
            timestamp_ms: now,
            ..Default::default()
        },
        created_at_ms: now,
        not_before_ms: not_before,
        attempt,
        addresses: Default::default(),
    }
}

/// Whether a node may run tasks of `svc` (ignoring resources and ports).
fn eligible(n: &Node, constraints: &[Constraint]) -> bool {
    node_ready(n)
        && n.availability == Availability::Active
        && constraints.iter().all(|c| c.matches(&node_info(n)))
}

/// The scheduler's view of a node.
pub fn node_info(n: &Node) -> NodeInfo {
    NodeInfo {
        id: n.id.clone(),
        hostname: n.hostname.clone(),
        role: if n.role == Role::Manager {
            SRole::Manager
        } else {
            SRole::Worker
        },
        availability: match n.availability {
            Availability::Active => SAvail::Active,
            Availability::Pause => SAvail::Pause,
            Availability::Drain => SAvail::Drain,
        },
        ready: node_ready(n),
        labels: n.labels.clone(),
        engine_labels: n.description.engine_labels.clone(),
        // A node that has not reported its capacity (yet) gets a budget no reservation
        // exceeds, rather than none.
        capacity: Resources {
            nano_cpus: reported(n.description.nano_cpus),
            memory_bytes: reported(n.description.memory_bytes),
        },
    }
}

fn reported(v: i64) -> i64 {
    if v > 0 {
        v
    } else {
        i64::MAX / 4
    }
}

fn constraints_of(spec: &ServiceSpec) -> Vec<Constraint> {
    spec.placement
        .constraints
        .iter()
        .filter_map(|c| Constraint::parse(c).ok())
        .collect()
}

/// How many tasks a global service wants: one per node its constraints allow, the same
/// rule the reconcile pass places by (so `service ls` and a waiting deploy agree with it).
pub fn global_desired(spec: &ServiceSpec, nodes: &[Node]) -> u64 {
    let constraints = constraints_of(spec);
    nodes.iter().filter(|n| eligible(n, &constraints)).count() as u64
}

/// Runs one reconcile pass. `new_id` makes IDs for new tasks.
pub fn reconcile(world: &World, new_id: impl FnMut() -> String + 'static) -> Vec<Op> {
    let now = world.now_ms;
    let mut p = Planner {
        ops: Vec::new(),
        updates: BTreeMap::new(),
        deleted: Default::default(),
        new_id: Box::new(new_id),
    };
    // Each node with its scheduler view, made once per pass (not once per task).
    let nodes: HashMap<&str, (&Node, NodeInfo)> = world
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), (n, node_info(n))))
        .collect();
    let services: HashMap<&str, &Stored<Service>> =
        world.services.iter().map(|s| (s.id.as_str(), s)).collect();
    let mut by_service: HashMap<&str, Vec<&Stored<Task>>> = HashMap::new();
    for t in world.tasks {
        by_service
            .entry(t.value.service_id.as_str())
            .or_default()
            .push(t);
    }

    // 1. Orphaned tasks (service removed): shut down; delete once terminal.
    for t in world.tasks {
        if services.contains_key(t.value.service_id.as_str()) {
            continue;
        }
        if t.value.status.state.is_terminal() || t.value.node_id.is_empty() {
            p.delete(t);
        } else if is_live(&t.value) {
            p.shutdown(t, None, "service removed", now);
        }
    }

    for svc in world.services {
        let spec = &svc.value.spec;
        let tasks = by_service.get(svc.id.as_str()).cloned().unwrap_or_default();
        let constraints = constraints_of(spec);
        let global = matches!(spec.mode, Mode::Global);

        // 2. Tasks on down or drained nodes (global: nodes no longer eligible).
        for t in &tasks {
            let verdict = {
                let v = p.current(t);
                if !is_live(v) || v.node_id.is_empty() {
                    continue;
                }
                match nodes.get(v.node_id.as_str()) {
                    None => Some((Some(TaskState::Orphaned), "node removed")),
                    Some((n, _)) if !node_ready(n) => {
                        Some((Some(TaskState::Orphaned), "node is down"))
                    }
                    // The node's agent stops these and reports their end.
                    Some((n, _)) if n.availability == Availability::Drain => {
                        Some((None, "node is drained"))
                    }
                    Some((n, _)) if global && !eligible(n, &constraints) => {
                        Some((None, "node no longer eligible"))
                    }
                    // As Swarm's constraint enforcer: a node whose labels or role changed
                    // under a running task gives it up; its slot is refilled elsewhere.
                    Some((_, info)) if !constraints.iter().all(|c| c.matches(info)) => {
                        Some((None, "node no longer satisfies the placement constraints"))
                    }
                    _ => None,
                }
            };
            if let Some((state, why)) = verdict {
                p.shutdown(t, state, why, now);
            }
        }

        // 3. Restart policy for live tasks that finished.
        for t in &tasks {
            let v = {
                let v = p.current(t);
                if !is_live(v) || !v.status.state.is_terminal() {
                    continue;
                }
                v.clone()
            };
            let failed = matches!(v.status.state, TaskState::Failed | TaskState::Rejected);
            let rp = &spec.restart_policy;
            let wanted = match rp.condition.as_str() {
                "none" => false,
                "on-failure" => failed,
                _ => true,
            };
            p.shutdown(t, None, "", now);
            let attempts_ok = rp.max_attempts == 0 || v.attempt < rp.max_attempts;
            if wanted && attempts_ok && !(global && v.node_id.is_empty()) {
                let node = if global { v.node_id.as_str() } else { "" };
                p.create(new_task(
                    svc,
                    v.slot,
                    node,
                    v.attempt + 1,
                    now + rp.delay_ms as i64,
                    now,
                ));
            }
        }

        // Live tasks after rules 2 and 3, by slot (or node for global services).
        let mut live: BTreeMap<String, Vec<&Stored<Task>>> = BTreeMap::new();
        let mut slots_with_history: BTreeMap<String, Vec<&Stored<Task>>> = BTreeMap::new();
        for t in &tasks {
            let v = p.current(t);
            let key = if global {
                v.node_id.clone()
            } else {
                v.slot.to_string()
            };
            slots_with_history.entry(key.clone()).or_default().push(t);
            if is_live(v) {
                live.entry(key).or_default().push(t);
            }
        }
        // Slots that got a replacement in rule 2/3 must not get another one below:
        // replacements were created for the terminal ones only; rule 2 shut tasks down
        // without replacing, so their slot is simply missing and refilled here.
        let replaced: Vec<String> = tasks
            .iter()
            .filter(|t| {
                let v = p.current(t);
                !is_live(v) && is_live(&t.value) && t.value.status.state.is_terminal()
            })
            .map(|t| {
                if global {
                    t.value.node_id.clone()
                } else {
                    t.value.slot.to_string()
                }
            })
            .collect();

        // 4. Replica count / global coverage.
        match spec.mode {
            Mode::Replicated { replicas } => {
                for slot in 1..=replicas {
                    let key = slot.to_string();
                    if !live.contains_key(&key) && !replaced.contains(&key) {
                        p.create(new_task(svc, slot, "", 0, now, now));
                    }
                }
                for (key, ts) in &live {
                    if key.parse::<u64>().map(|s| s > replicas).unwrap_or(true) {
                        for t in ts {
                            p.shutdown(t, None, "scaled down", now);
                        }
                    } else {
                        for t in duplicates(&p, ts) {
                            p.shutdown(t, None, "another task runs this slot", now);
                        }
                    }
                }
            }
            Mode::Global => {
                for n in world.nodes.iter().filter(|n| eligible(n, &constraints)) {
                    if !live.contains_key(&n.id) && !replaced.contains(&n.id) {
                        p.create(new_task(svc, 0, &n.id, 0, now, now));
                    }
                }
            }
        }

        // 5. Rolling update.
        rolling_update(&mut p, svc, &live, &tasks, now);

        // 7. History: keep the newest HISTORY terminal, shut-down tasks per slot.
        for ts in slots_with_history.values() {
            let mut dead: Vec<&&Stored<Task>> = ts
                .iter()
                .filter(|t| {
                    let v = p.current(t);
                    !is_live(v) && (v.status.state.is_terminal() || v.node_id.is_empty())
                })
                .collect();
            if dead.len() > HISTORY {
                dead.sort_by_key(|t| t.value.created_at_ms);
                for t in &dead[..dead.len() - HISTORY] {
                    p.delete(t);
                }
            }
        }
    }

    // 6. Scheduling of unassigned live tasks (including those created above).
    schedule_pending(&mut p, world, &services, now);
    p.finish()
}

/// The live tasks of one slot beyond the one it should run: of those of the same
/// generation, all but the furthest along (then the newest). Tasks of different
/// generations share a slot during a start-first update, which retires the old one
/// itself. Two tasks of one generation in a slot come from a reconcile that could not
/// see the other's creation (a lost leader's proposal committed after the next leader
/// planned): as Swarm's orchestrator, the slot keeps one.
fn duplicates<'a>(p: &Planner, ts: &[&'a Stored<Task>]) -> Vec<&'a Stored<Task>> {
    // Nearly every slot has one task: no grouping (and no allocation) for those.
    if ts.len() < 2 {
        return Vec::new();
    }
    let mut by_gen: BTreeMap<u64, Vec<&'a Stored<Task>>> = BTreeMap::new();
    for t in ts {
        by_gen.entry(p.current(t).generation).or_default().push(t);
    }
    let mut extra = Vec::new();
    for mut same in by_gen.into_values().filter(|v| v.len() > 1) {
        same.sort_by_key(|t| {
            let v = p.current(t);
            (
                std::cmp::Reverse(v.status.state),
                std::cmp::Reverse(v.created_at_ms),
            )
        });
        extra.extend(same.into_iter().skip(1));
    }
    extra
}

/// Replaces outdated tasks in batches, per `update_config`, and tracks the update's
/// progress on the service (started, paused, rolled back, completed).
fn rolling_update(
    p: &mut Planner,
    svc: &Stored<Service>,
    live: &BTreeMap<String, Vec<&Stored<Task>>>,
    all: &[&Stored<Task>],
    now: i64,
) {
    let gen = svc.value.generation;
    let rolling_back = svc
        .value
        .update
        .as_ref()
        .map(|u| u.state.starts_with("rollback"))
        .unwrap_or(false);
    let cfg = if rolling_back {
        &svc.value.spec.rollback_config
    } else {
        &svc.value.spec.update_config
    };
    let healthy = |v: &Task| {
        v.status.state == TaskState::Running
            && (v.template.healthcheck.is_none() || v.status.health == "healthy")
    };
    let mut outdated = Vec::new();
    let mut in_flight = 0u64;
    let mut updated = 0u64;
    let mut failed = 0u64;
    let mut has_old = false;
    for ts in live.values() {
        let current: Vec<&&Stored<Task>> = ts
            .iter()
            .filter(|t| p.current(t).generation == gen)
            .collect();
        let old: Vec<&&Stored<Task>> = ts
            .iter()
            .filter(|t| p.current(t).generation < gen)
            .collect();
        for t in &current {
            let v = p.current(t);
            updated += 1;
            let settled =
                healthy(v) && now - v.status.timestamp_ms >= cfg.monitor_ms.min(1000) as i64;
            if !settled {
                in_flight += 1;
            }
        }
        if old.is_empty() {
            continue;
        }
        has_old = true;
        // start-first: once the new task is healthy, the old one can go.
        if !current.is_empty() && current.iter().all(|t| healthy(p.current(t))) {
            for t in &old {
                p.shutdown(t, None, "replaced by update", now);
            }
            continue;
        }
        if current.is_empty() {
            outdated.push(old[0]);
        }
    }
    let mut status = svc.value.update.clone().unwrap_or_default();
    // Updated tasks that failed (or turned unhealthy) since the update started, even
    // if the restart policy has already replaced them.
    for t in all {
        let v = &t.value;
        let bad = v.status.health == "unhealthy"
            || matches!(v.status.state, TaskState::Failed | TaskState::Rejected);
        if v.generation == gen && bad && v.created_at_ms >= status.started_at_ms {
            failed += 1;
            if !is_live(p.current(t)) {
                updated += 1;
            }
        }
    }
    let before = status.clone();
    let mut service = svc.value.clone();
    let updating = has_old
        || (in_flight > 0 && !status.state.is_empty() && !status.state.ends_with("completed"));
    if has_old && (status.state.is_empty() || status.state.ends_with("completed")) {
        status = UpdateStatus {
            state: "updating".into(),
            message: "update in progress".into(),
            started_at_ms: now,
            next_batch_at_ms: now,
        };
    }
    // Failures during the update trigger the failure action.
    let ratio = if updated == 0 {
        0.0
    } else {
        failed as f64 / updated as f64
    };
    if status.state == "updating" && failed > 0 && ratio > cfg.max_failure_ratio {
        match cfg.failure_action.as_str() {
            "rollback" if service.previous.is_some() => {
                if let Some(prev) = service.previous.take() {
                    let current = std::mem::replace(&mut service.spec, prev);
                    service.previous = Some(current);
                    service.generation += 1;
                    service.updated_at_ms = now;
                    status = UpdateStatus {
                        state: "rollback_started".into(),
                        message: format!(
                            "update rolled back: {failed} of {updated} updated tasks failed"
                        ),
                        started_at_ms: now,
                        next_batch_at_ms: now,
                    };
                }
            }
            "continue" => {}
            _ => {
                status.state = "paused".into();
                status.message =
                    format!("update paused: {failed} of {updated} updated tasks failed");
            }
        }
    }
    if status.state == "updating" || status.state == "rollback_started" {
        if !updating {
            status.state = if status.state == "updating" {
                "completed".into()
            } else {
                "rollback_completed".into()
            };
            status.message = "update completed".into();
        } else if now >= status.next_batch_at_ms && service.generation == gen {
            let parallelism = if cfg.parallelism == 0 {
                u64::MAX
            } else {
                cfg.parallelism
            };
            let room = parallelism.saturating_sub(in_flight) as usize;
            let batch: Vec<_> = outdated.into_iter().take(room).collect();
            if !batch.is_empty() {
                status.next_batch_at_ms = now + cfg.delay_ms as i64;
            }
            for t in batch {
                let v = p.current(t).clone();
                if cfg.order != "start-first" {
                    p.shutdown(t, None, "replaced by update", now);
                }
                let node = if v.slot == 0 {
                    v.node_id.clone()
                } else {
                    String::new()
                };
                p.create(new_task(svc, v.slot, &node, 0, now, now));
            }
        }
    }
    if status != before || service.generation != svc.value.generation {
        service.update = Some(status);
        if let Ok(spec) = serde_json::to_vec(&service) {
            p.ops.push(Op::Update {
                kind: KIND_SERVICE.into(),
                id: svc.id.clone(),
                spec,
                expected_version: svc.version,
            });
        }
    }
}

/// Services (by ID) whose `depends_on` is not met yet: their new tasks stay unplaced
/// until it is, wherever in the cluster the dependency runs. A dependency is met by
/// one task of it that is running (`service_started`), running and healthy or without
/// a health check (`service_healthy`), or that exited 0 (`service_completed_successfully`).
/// A dependency the cluster does not have (removed meanwhile) does not block.
fn waiting_on_dependencies(world: &World) -> std::collections::HashSet<String> {
    let mut waiting = std::collections::HashSet::new();
    let by_name: HashMap<&str, &str> = world
        .services
        .iter()
        .map(|s| (s.value.spec.name.as_str(), s.id.as_str()))
        .collect();
    for svc in world.services {
        for dep in &svc.value.spec.depends_on {
            let Some(dep_id) = by_name.get(dep.service.as_str()) else {
                continue;
            };
            let mut tasks = world.tasks.iter().filter(|t| t.value.service_id == *dep_id);
            let met = match dep.condition.as_str() {
                "service_healthy" => tasks.any(|t| {
                    is_live(&t.value)
                        && t.value.status.state == TaskState::Running
                        && (t.value.template.healthcheck.is_none()
                            || t.value.status.health == "healthy")
                }),
                "service_completed_successfully" => tasks.any(|t| {
                    t.value.status.state == TaskState::Complete && t.value.status.exit_code == 0
                }),
                _ => tasks.any(|t| is_live(&t.value) && t.value.status.state == TaskState::Running),
            };
            if !met {
                waiting.insert(svc.id.clone());
            }
        }
    }
    waiting
}

/// Where a service that takes volumes from others (`volumes_from`) must run: the node
/// of a running task of the first of them (the lowest task ID, so every pass agrees).
/// `None` when none runs yet; `depends_on` keeps the tasks unplaced until one does.
fn colocation_node(world: &World, spec: &ServiceSpec) -> Option<String> {
    spec.colocate_with.iter().find_map(|name| {
        let svc = world.services.iter().find(|s| &s.value.spec.name == name)?;
        world
            .tasks
            .iter()
            .filter(|t| {
                t.value.service_id == svc.id
                    && is_live(&t.value)
                    && t.value.status.state == TaskState::Running
                    && !t.value.node_id.is_empty()
            })
            .min_by(|a, b| a.id.cmp(&b.id))
            .map(|t| t.value.node_id.clone())
    })
}

fn schedule_pending(
    p: &mut Planner,
    world: &World,
    services: &HashMap<&str, &Stored<Service>>,
    now: i64,
) {
    let mut snap = scheduler::Snapshot {
        nodes: world.nodes.iter().map(node_info).collect(),
        ..Default::default()
    };
    let mut pending = Vec::new();
    let mut by_id: HashMap<String, &Stored<Task>> = HashMap::new();
    let waiting = waiting_on_dependencies(world);
    // Host ports per service, once (not once per placed task).
    let ports: HashMap<&str, Vec<(String, u16)>> = services
        .iter()
        .map(|(id, s)| (*id, host_ports(&s.value.spec)))
        .collect();
    for t in world.tasks {
        // Read in place: a copy of every task per pass was a large share of a leader's
        // CPU during a 20,000-task deploy.
        let v = p.current(t);
        if !is_live(v) || p.deleted.contains(&t.id) {
            continue;
        }
        if !v.node_id.is_empty() {
            // Global tasks are born on their node: just mark them assigned.
            let born = v.status.state <= TaskState::Pending
                && v.slot == 0
                && !waiting.contains(&v.service_id);
            snap.placed.push(PlacedTask {
                service_id: v.service_id.clone(),
                node_id: v.node_id.clone(),
                reservations: Resources {
                    nano_cpus: v.template.reservations.nano_cpus,
                    memory_bytes: v.template.reservations.memory_bytes,
                },
                host_ports: ports
                    .get(v.service_id.as_str())
                    .cloned()
                    .unwrap_or_default(),
            });
            if born {
                p.update(t, |x| {
                    x.status.state = TaskState::Assigned;
                    x.status.message = "assigned".into();
                    x.status.timestamp_ms = now;
                });
            }
            continue;
        }
        if v.not_before_ms > now || waiting.contains(&v.service_id) {
            continue;
        }
        pending.push(PendingTask {
            task_id: t.id.clone(),
            service_id: v.service_id.clone(),
        });
        by_id.insert(t.id.clone(), t);
    }
    // Tasks created in this pass are placed on the next pass (they have no version yet).
    for s in services.values() {
        let spec = &s.value.spec;
        let mut constraints = constraints_of(spec);
        if let Some(node) = colocation_node(world, spec) {
            constraints.extend(Constraint::parse(&format!("node.id=={node}")).ok());
        }
        snap.services.insert(
            s.id.clone(),
            scheduler::ServiceConstraints {
                constraints,
                spread: spec.placement.spread.clone(),
                max_replicas_per_node: spec.placement.max_replicas_per_node,
                reservations: Resources {
                    nano_cpus: spec.template.reservations.nano_cpus,
                    memory_bytes: spec.template.reservations.memory_bytes,
                },
                host_ports: host_ports(spec),
            },
        );
    }
    let plan = scheduler::schedule(&snap, &pending);
    for (task_id, node_id) in plan.placements {
        if let Some(t) = by_id.get(&task_id) {
            p.update(t, |x| {
                x.node_id = node_id.clone();
                x.status.state = TaskState::Assigned;
                x.status.message = "assigned".into();
                x.status.timestamp_ms = now;
            });
        }
    }
    for (task_id, reason) in plan.pending {
        if let Some(t) = by_id.get(&task_id) {
            if t.value.status.state != TaskState::Pending || t.value.status.message != reason {
                p.update(t, |x| {
                    x.status.state = TaskState::Pending;
                    x.status.message = reason.clone();
                    x.status.timestamp_ms = now;
                });
            }
        }
    }
}

fn host_ports(spec: &ServiceSpec) -> Vec<(String, u16)> {
    spec.ports
        .iter()
        .filter(|p| p.mode == "host")
        .map(|p| (p.protocol.clone(), p.published))
        .collect()
}
