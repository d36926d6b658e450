//! Reconciler scenarios, run pass by pass against a simulated store.

use super::*;
use crate::model::{Availability, Node, NodeStatus, Op};

struct Sim {
    services: Vec<Stored<Service>>,
    tasks: Vec<Stored<Task>>,
    nodes: Vec<Node>,
    now: i64,
}

fn node(id: &str) -> Node {
    Node {
        id: id.into(),
        hostname: id.into(),
        status: NodeStatus::Ready,
        ..Default::default()
    }
}

fn service(name: &str, mode: Mode) -> Service {
    Service {
        spec: ServiceSpec {
            name: name.into(),
            mode,
            template: TaskTemplate {
                image: "busybox".into(),
                ..Default::default()
            },
            ..Default::default()
        },
        generation: 1,
        ..Default::default()
    }
}

impl Sim {
    fn new(nodes: &[&str]) -> Sim {
        Sim {
            services: vec![],
            tasks: vec![],
            nodes: nodes.iter().map(|n| node(n)).collect(),
            now: 1_000_000,
        }
    }

    fn add_service(&mut self, s: Service) -> String {
        let id = format!("svc{}", self.services.len());
        self.services.push(Stored {
            id: id.clone(),
            version: 1,
            value: s,
        });
        id
    }

    /// Runs one pass and applies its ops; returns them.
    fn pass(&mut self) -> Vec<Op> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let ops = reconcile(
            &World {
                services: &self.services,
                tasks: &self.tasks,
                nodes: &self.nodes,
                now_ms: self.now,
            },
            || {
                format!(
                    "task{:08}",
                    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                )
            },
        );
        let mut touched = std::collections::HashSet::new();
        for op in &ops {
            if let Op::Create { kind, id, .. }
            | Op::Update { kind, id, .. }
            | Op::Delete { kind, id, .. } = op
            {
                assert!(
                    touched.insert((kind.clone(), id.clone())),
                    "{kind} {id} touched twice in one pass: {:?}\nservices: {:?}\ntasks: {:?}",
                    ops.iter()
                        .map(|o| match o {
                            Op::Create { id, .. } => format!("create {id}"),
                            Op::Update { id, .. } => format!("update {id}"),
                            Op::Delete { id, .. } => format!("delete {id}"),
                            _ => "other".into(),
                        })
                        .collect::<Vec<_>>(),
                    self.services
                        .iter()
                        .map(|s| s.id.as_str())
                        .collect::<Vec<_>>(),
                    self.tasks
                        .iter()
                        .map(|t| format!(
                            "{}:{}:{:?}/{:?}:slot{}:node{}",
                            t.id,
                            t.value.service_id,
                            t.value.desired,
                            t.value.status.state,
                            t.value.slot,
                            t.value.node_id
                        ))
                        .collect::<Vec<_>>()
                );
            }
        }
        for op in &ops {
            match op {
                Op::Create { id, spec, .. } => self.tasks.push(Stored {
                    id: id.clone(),
                    version: 1,
                    value: serde_json::from_slice(spec).expect("task"),
                }),
                Op::Update {
                    kind,
                    id,
                    spec,
                    expected_version,
                } if kind == KIND_TASK => {
                    let t = self
                        .tasks
                        .iter_mut()
                        .find(|t| &t.id == id)
                        .expect("task exists");
                    assert_eq!(t.version, *expected_version, "optimistic version");
                    t.value = serde_json::from_slice(spec).expect("task");
                    t.version += 1;
                }
                Op::Update { id, spec, .. } => {
                    let s = self
                        .services
                        .iter_mut()
                        .find(|s| &s.id == id)
                        .expect("service exists");
                    s.value = serde_json::from_slice(spec).expect("service");
                    s.version += 1;
                }
                Op::Delete { id, .. } => self.tasks.retain(|t| &t.id != id),
                _ => {}
            }
        }
        ops
    }

    /// Passes until nothing changes.
    fn settle(&mut self) {
        for _ in 0..20 {
            if self.pass().is_empty() {
                return;
            }
        }
        panic!("reconciler did not converge");
    }

    /// The agent's side: every assigned live task starts running.
    fn run_assigned(&mut self) {
        for t in &mut self.tasks {
            if t.value.desired == Desired::Running && t.value.status.state == TaskState::Assigned {
                t.value.status.state = TaskState::Running;
                t.value.status.timestamp_ms = self.now;
                t.version += 1;
            }
            if t.value.desired == Desired::Shutdown
                && !t.value.status.state.is_terminal()
                && !t.value.node_id.is_empty()
            {
                t.value.status.state = TaskState::Shutdown;
                t.version += 1;
            }
        }
    }

    fn running(&self, svc: &str) -> Vec<&Task> {
        self.tasks
            .iter()
            .map(|t| &t.value)
            .filter(|t| {
                t.service_id == svc
                    && t.desired == Desired::Running
                    && t.status.state == TaskState::Running
            })
            .collect()
    }
}

#[test]
fn replicas_are_created_spread_and_scaled() {
    let mut sim = Sim::new(&["a", "b", "c"]);
    let id = sim.add_service(service("web", Mode::Replicated { replicas: 6 }));
    sim.settle();
    sim.run_assigned();
    let running = sim.running(&id);
    assert_eq!(running.len(), 6);
    for n in ["a", "b", "c"] {
        assert_eq!(
            running.iter().filter(|t| t.node_id == n).count(),
            2,
            "even spread"
        );
    }
    sim.services[0].value.spec.mode = Mode::Replicated { replicas: 2 };
    sim.settle();
    sim.run_assigned();
    assert_eq!(sim.running(&id).len(), 2);
    let mut slots: Vec<u64> = sim.running(&id).iter().map(|t| t.slot).collect();
    slots.sort();
    assert_eq!(slots, vec![1, 2]);
}

#[test]
fn a_slot_with_two_tasks_of_one_generation_keeps_the_one_further_along() {
    let mut sim = Sim::new(&["a", "b", "c"]);
    let id = sim.add_service(service("web", Mode::Replicated { replicas: 3 }));
    sim.settle();
    sim.run_assigned();
    // A second task for slot 2, as a lost leader's create committed after the next
    // leader planned the slot: newer, but not yet running.
    let twin = sim
        .tasks
        .iter()
        .find(|t| t.value.slot == 2)
        .expect("slot 2")
        .clone();
    let mut extra = twin.clone();
    extra.id = "late-create".into();
    extra.value.status.state = TaskState::Assigned;
    extra.value.created_at_ms += 1;
    sim.tasks.push(extra);
    sim.settle();
    sim.run_assigned();
    sim.settle();
    let running = sim.running(&id);
    assert_eq!(running.len(), 3, "one task per slot");
    let kept = sim.tasks.iter().find(|t| t.id == twin.id).expect("kept");
    assert_eq!(
        kept.value.desired,
        Desired::Running,
        "the running one stays"
    );
    let late = sim.tasks.iter().find(|t| t.id == "late-create");
    assert!(
        late.is_none_or(|t| t.value.desired == Desired::Shutdown),
        "the duplicate is shut down"
    );
}

#[test]
fn restart_policy_replaces_failed_tasks_until_max_attempts() {
    let mut sim = Sim::new(&["a"]);
    let mut s = service("job", Mode::Replicated { replicas: 1 });
    s.spec.restart_policy = RestartPolicy {
        condition: "on-failure".into(),
        delay_ms: 1000,
        max_attempts: 2,
        window_ms: 0,
    };
    let id = sim.add_service(s);
    sim.settle();
    for attempt in 0..3 {
        sim.run_assigned();
        let t = sim
            .tasks
            .iter_mut()
            .find(|t| t.value.desired == Desired::Running)
            .expect("a live task");
        assert_eq!(t.value.attempt, attempt);
        t.value.status.state = TaskState::Failed;
        t.version += 1;
        sim.pass();
        // The replacement waits for the delay before it is scheduled.
        let live: Vec<_> = sim
            .tasks
            .iter()
            .filter(|t| t.value.desired == Desired::Running)
            .collect();
        if attempt < 2 {
            assert_eq!(live.len(), 1);
            assert_eq!(live[0].value.node_id, "", "not placed before the delay");
            sim.now += 1000;
            sim.settle();
        } else {
            assert!(live.is_empty(), "max attempts reached: no replacement");
        }
    }
    assert!(sim.running(&id).is_empty());
}

#[test]
fn tasks_of_a_down_node_move() {
    let mut sim = Sim::new(&["a", "b"]);
    let id = sim.add_service(service("web", Mode::Replicated { replicas: 2 }));
    sim.settle();
    sim.run_assigned();
    sim.nodes[0].status = NodeStatus::Down;
    sim.settle();
    sim.run_assigned();
    let running = sim.running(&id);
    assert_eq!(running.len(), 2);
    assert!(running.iter().all(|t| t.node_id == "b"));
    let orphaned = sim
        .tasks
        .iter()
        .filter(|t| t.value.status.state == TaskState::Orphaned)
        .count();
    assert_eq!(orphaned, 1, "the old task is marked, not left running");
}

#[test]
fn drained_nodes_are_emptied_and_global_services_cover_eligible_nodes() {
    let mut sim = Sim::new(&["a", "b", "c"]);
    let id = sim.add_service(service("agent", Mode::Global));
    sim.settle();
    sim.run_assigned();
    assert_eq!(sim.running(&id).len(), 3);
    sim.nodes[1].availability = Availability::Drain;
    sim.settle();
    sim.run_assigned();
    assert_eq!(sim.running(&id).len(), 2);
    assert!(sim.running(&id).iter().all(|t| t.node_id != "b"));
    // A node that joins later gets its task.
    sim.nodes.push(node("d"));
    sim.settle();
    sim.run_assigned();
    assert!(sim.running(&id).iter().any(|t| t.node_id == "d"));
}

#[test]
fn a_constrained_global_service_wants_one_task_per_eligible_node_only() {
    let mut sim = Sim::new(&["a", "b", "c"]);
    sim.nodes[0].description.engine_labels = [("disk".to_string(), "ssd".to_string())].into();
    let mut s = service("agent", Mode::Global);
    s.spec.placement.constraints = vec!["engine.labels.disk==ssd".into()];
    let spec = s.spec.clone();
    let id = sim.add_service(s);
    sim.settle();
    sim.run_assigned();
    // What `service ls` reports as desired is what the pass places: 1, not 3.
    assert_eq!(super::reconcile::global_desired(&spec, &sim.nodes), 1);
    assert_eq!(sim.running(&id).len(), 1);
    sim.nodes[2].availability = Availability::Drain;
    sim.nodes[1].description.engine_labels = sim.nodes[0].description.engine_labels.clone();
    assert_eq!(super::reconcile::global_desired(&spec, &sim.nodes), 2);
}

#[test]
fn engine_labels_place_tasks_and_a_node_that_loses_a_label_gives_its_tasks_up() {
    let mut sim = Sim::new(&["a", "b", "c"]);
    for n in &mut sim.nodes[..2] {
        n.description.engine_labels = [("disk".to_string(), "ssd".to_string())].into();
    }
    let mut s = service("db", Mode::Replicated { replicas: 2 });
    s.spec.placement.constraints = vec!["engine.labels.disk==ssd".into()];
    let id = sim.add_service(s);
    sim.settle();
    sim.run_assigned();
    let mut on: Vec<String> = sim.running(&id).iter().map(|t| t.node_id.clone()).collect();
    on.sort();
    assert_eq!(on, ["a", "b"]);
    // c gets the label and a loses it (its agent restarted with other labels).
    sim.nodes[2].description.engine_labels = sim.nodes[0].description.engine_labels.clone();
    sim.nodes[0].description.engine_labels.clear();
    sim.settle();
    sim.run_assigned();
    let mut on: Vec<String> = sim.running(&id).iter().map(|t| t.node_id.clone()).collect();
    on.sort();
    assert_eq!(on, ["b", "c"]);
    assert!(sim
        .tasks
        .iter()
        .filter(|t| t.value.node_id == "a")
        .all(|t| t.value.desired == Desired::Shutdown));
}

#[test]
fn reservations_beyond_every_reported_capacity_stay_pending() {
    let mut sim = Sim::new(&["a"]);
    sim.nodes[0].description.memory_bytes = 1 << 30;
    sim.nodes[0].description.nano_cpus = 2_000_000_000;
    let mut big = service("big", Mode::Replicated { replicas: 1 });
    big.spec.template.reservations.memory_bytes = 2 << 30;
    sim.add_service(big);
    let mut fits = service("fits", Mode::Replicated { replicas: 1 });
    fits.spec.template.reservations.memory_bytes = 512 << 20;
    let fits = sim.add_service(fits);
    sim.settle();
    sim.run_assigned();
    let big = sim
        .tasks
        .iter()
        .find(|t| t.value.service_name == "big")
        .expect("big's task");
    assert_eq!(big.value.status.state, TaskState::Pending);
    assert!(
        big.value.status.message.contains("insufficient resources"),
        "{}",
        big.value.status.message
    );
    assert_eq!(sim.running(&fits).len(), 1);
}

#[test]
fn unplaceable_tasks_stay_pending_with_a_reason() {
    let mut sim = Sim::new(&["a"]);
    let mut s = service("db", Mode::Replicated { replicas: 1 });
    s.spec.placement.constraints = vec!["node.labels.zone==b".into()];
    sim.add_service(s);
    sim.settle();
    let t = &sim.tasks[0].value;
    assert_eq!(t.status.state, TaskState::Pending);
    assert!(
        t.status.message.contains("node.labels.zone==b"),
        "{}",
        t.status.message
    );
}

#[test]
fn rolling_update_one_at_a_time_and_rollback_on_failure() {
    let mut sim = Sim::new(&["a", "b"]);
    let mut s = service("web", Mode::Replicated { replicas: 2 });
    s.spec.update_config = UpdateConfig {
        parallelism: 1,
        failure_action: "rollback".into(),
        ..Default::default()
    };
    let id = sim.add_service(s);
    sim.settle();
    sim.run_assigned();
    // Update the image: generation 2.
    let svc = &mut sim.services[0].value;
    svc.previous = Some(svc.spec.clone());
    svc.spec.template.image = "busybox:2".into();
    svc.generation = 2;
    sim.settle();
    let new: Vec<_> = sim
        .tasks
        .iter()
        .filter(|t| t.value.generation == 2)
        .collect();
    assert_eq!(new.len(), 1, "parallelism 1: one task replaced at a time");
    assert_eq!(
        sim.services[0]
            .value
            .update
            .as_ref()
            .map(|u| u.state.as_str()),
        Some("updating")
    );
    // The new task fails: the update rolls back to the previous spec.
    sim.run_assigned();
    let t = sim
        .tasks
        .iter_mut()
        .find(|t| t.value.generation == 2 && t.value.desired == Desired::Running)
        .expect("new task");
    t.value.status.state = TaskState::Failed;
    t.version += 1;
    sim.pass();
    let svc = &sim.services[0].value;
    assert_eq!(
        svc.update.as_ref().map(|u| u.state.as_str()),
        Some("rollback_started")
    );
    assert_eq!(svc.spec.template.image, "busybox");
    for _ in 0..10 {
        sim.settle();
        sim.run_assigned();
        sim.now += 2000;
    }
    let running = sim.running(&id);
    assert_eq!(running.len(), 2);
    assert!(
        running.iter().all(|t| t.template.image == "busybox"),
        "rolled back everywhere"
    );
    assert_eq!(
        sim.services[0]
            .value
            .update
            .as_ref()
            .map(|u| u.state.as_str()),
        Some("rollback_completed")
    );
}

#[test]
fn removed_services_lose_their_tasks() {
    let mut sim = Sim::new(&["a"]);
    sim.add_service(service("web", Mode::Replicated { replicas: 2 }));
    sim.settle();
    sim.run_assigned();
    sim.services.clear();
    sim.pass();
    assert!(sim
        .tasks
        .iter()
        .all(|t| t.value.desired == Desired::Shutdown));
    sim.run_assigned();
    sim.pass();
    assert!(
        sim.tasks.is_empty(),
        "terminal tasks of removed services are deleted"
    );
}

#[test]
fn converged_state_is_a_no_op() {
    let mut sim = Sim::new(&["a", "b"]);
    sim.add_service(service("web", Mode::Replicated { replicas: 3 }));
    sim.settle();
    sim.run_assigned();
    sim.now += 10_000;
    assert!(
        sim.pass().is_empty(),
        "deploying the same spec twice changes nothing"
    );
}

/// Random histories (scaling, updates, failures, services removed, nodes going down,
/// agents lagging behind) never yield a pass that touches one object twice: the state
/// machine rejects such a batch whole, and since every pass rebuilds it from the same
/// state, the reconciler would be stuck for good (found by the chaos test).
#[test]
fn no_pass_touches_an_object_twice() {
    let mut seed: u64 = 0x5eed_cafe;
    let mut rnd = move |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n.max(1)
    };
    for round in 0..200 {
        let mut sim = Sim::new(&["a", "b", "c"]);
        for i in 0..2 {
            let mut s = service(
                &format!("s{i}"),
                if rnd(4) == 0 {
                    Mode::Global
                } else {
                    Mode::Replicated { replicas: rnd(4) }
                },
            );
            s.spec.update_config = UpdateConfig {
                parallelism: 1 + rnd(2),
                failure_action: ["pause", "continue", "rollback"][rnd(3) as usize].into(),
                order: ["stop-first", "start-first"][rnd(2) as usize].into(),
                ..Default::default()
            };
            s.spec.restart_policy.max_attempts = rnd(3);
            sim.add_service(s);
        }
        for step in 0..40 {
            match rnd(9) {
                0 => sim.run_assigned(),
                // A task fails or completes.
                1 if !sim.tasks.is_empty() => {
                    let i = rnd(sim.tasks.len() as u64) as usize;
                    let t = &mut sim.tasks[i];
                    t.value.status.state =
                        [TaskState::Failed, TaskState::Complete][rnd(2) as usize];
                    t.version += 1;
                }
                // Scale.
                2 if !sim.services.is_empty() => {
                    let i = rnd(sim.services.len() as u64) as usize;
                    if let Mode::Replicated { replicas } = &mut sim.services[i].value.spec.mode {
                        *replicas = rnd(5);
                        sim.services[i].version += 1;
                    }
                }
                // A rolling update.
                3 if !sim.services.is_empty() => {
                    let i = rnd(sim.services.len() as u64) as usize;
                    let s = &mut sim.services[i];
                    s.value.previous = Some(s.value.spec.clone());
                    s.value.spec.template.env = vec![format!("SEQ={step}")];
                    s.value.generation += 1;
                    s.value.update = None;
                    s.version += 1;
                }
                4 => {
                    // A service removed (its tasks become orphans), another added.
                    if !sim.services.is_empty() && rnd(3) == 0 {
                        let i = rnd(sim.services.len() as u64) as usize;
                        sim.services.remove(i);
                    } else {
                        let s = service(
                            &format!("n{round}x{step}"),
                            Mode::Replicated {
                                replicas: 1 + rnd(3),
                            },
                        );
                        let id = format!("svc{round}x{step}");
                        sim.services.push(Stored {
                            id,
                            version: 1,
                            value: s,
                        });
                    }
                }
                5 => {
                    // A node goes down or comes back.
                    let i = rnd(3) as usize;
                    sim.nodes[i].status = if sim.nodes[i].status == NodeStatus::Ready {
                        NodeStatus::Down
                    } else {
                        NodeStatus::Ready
                    };
                }
                6 => sim.now += 1000 * (1 + rnd(10) as i64),
                _ => {}
            }
            let ops = sim.pass();
            let mut seen = std::collections::HashSet::new();
            for op in &ops {
                let key = match op {
                    Op::Create { kind, id, .. }
                    | Op::Update { kind, id, .. }
                    | Op::Delete { kind, id, .. } => (kind.clone(), id.clone()),
                    _ => continue,
                };
                assert!(
                    seen.insert(key.clone()),
                    "round {round} step {step}: {key:?} touched twice in one pass: {ops:#?}"
                );
            }
        }
    }
}

#[test]
fn depends_on_holds_tasks_unplaced_until_the_dependency_is_healthy() {
    let mut sim = Sim::new(&["a", "b"]);
    let mut db = service("st_db", Mode::Replicated { replicas: 1 });
    db.spec.template.healthcheck = Some(Healthcheck {
        test: vec!["CMD".into(), "true".into()],
        ..Default::default()
    });
    let db_id = sim.add_service(db);
    let mut api = service("st_api", Mode::Replicated { replicas: 2 });
    api.spec.depends_on = vec![ServiceDependency {
        service: "st_db".into(),
        condition: "service_healthy".into(),
    }];
    let api_id = sim.add_service(api);
    sim.settle();
    sim.run_assigned();
    assert_eq!(sim.running(&db_id).len(), 1);
    let unplaced = |sim: &Sim| {
        sim.tasks
            .iter()
            .filter(|t| t.value.service_id == api_id && t.value.node_id.is_empty())
            .count()
    };
    // db runs but is not healthy yet: api's tasks exist, unplaced, wherever db runs.
    assert_eq!(unplaced(&sim), 2);
    sim.settle();
    assert_eq!(unplaced(&sim), 2);
    for t in sim.tasks.iter_mut().filter(|t| t.value.service_id == db_id) {
        t.value.status.health = "healthy".into();
        t.version += 1;
    }
    sim.settle();
    sim.run_assigned();
    assert_eq!(unplaced(&sim), 0);
    assert_eq!(sim.running(&api_id).len(), 2);
}

#[test]
fn depends_on_completed_successfully_waits_for_exit_0() {
    let mut sim = Sim::new(&["a"]);
    let mut init = service("st_migrate", Mode::Replicated { replicas: 1 });
    init.spec.restart_policy.condition = "none".into();
    let init_id = sim.add_service(init);
    let mut app = service("st_app", Mode::Replicated { replicas: 1 });
    app.spec.depends_on = vec![ServiceDependency {
        service: "st_migrate".into(),
        condition: "service_completed_successfully".into(),
    }];
    let app_id = sim.add_service(app);
    sim.settle();
    sim.run_assigned();
    assert!(sim.running(&app_id).is_empty(), "migrate still running");
    for t in sim
        .tasks
        .iter_mut()
        .filter(|t| t.value.service_id == init_id)
    {
        t.value.status.state = TaskState::Complete;
        t.value.status.exit_code = 0;
        t.version += 1;
    }
    sim.settle();
    sim.run_assigned();
    assert_eq!(sim.running(&app_id).len(), 1);
}

#[test]
fn volumes_from_places_tasks_with_their_source() {
    let mut sim = Sim::new(&["a", "b", "c"]);
    let data_id = sim.add_service(service("st_data", Mode::Replicated { replicas: 1 }));
    let mut app = service("st_app", Mode::Replicated { replicas: 3 });
    app.spec.depends_on = vec![ServiceDependency {
        service: "st_data".into(),
        condition: "service_started".into(),
    }];
    app.spec.colocate_with = vec!["st_data".into()];
    let app_id = sim.add_service(app);
    sim.settle();
    sim.run_assigned();
    sim.settle();
    sim.run_assigned();
    let data_node = sim.running(&data_id)[0].node_id.clone();
    let app_tasks = sim.running(&app_id);
    assert_eq!(app_tasks.len(), 3);
    assert!(
        app_tasks.iter().all(|t| t.node_id == data_node),
        "all with the source on {data_node}"
    );
}
