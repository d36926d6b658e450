//! The executor against the in-memory engine and a source that keeps the cluster's view
//! in memory: every rule of a pass, without root or a kernel.

use super::*;
use crate::engine::fake::{Behaviour, Call, FakeEngine};
use skiff_controller::orchestrator::overlay::OverlayNetwork;
use skiff_controller::orchestrator::{Healthcheck, TaskStatus, TaskTemplate};
use std::net::Ipv4Addr;

const NODE: &str = "node0123456789abcdef";

/// The cluster as the executor sees it; reports update the task the way the store
/// would and are kept in order.
#[derive(Default)]
struct FakeSource {
    view: std::sync::Mutex<View>,
    reports: std::sync::Mutex<Vec<Task>>,
    /// No view yet (a worker before its first assignment set).
    waiting: AtomicBool,
    /// A view that may lag (a worker between two assignment streams).
    stale: AtomicBool,
}

impl FakeSource {
    fn with_tasks(tasks: Vec<Stored<Task>>) -> Arc<Self> {
        let s = FakeSource::default();
        s.view.lock().expect("view").tasks = tasks;
        Arc::new(s)
    }

    fn task(&self, id: &str) -> Task {
        let v = self.view.lock().expect("view");
        v.tasks
            .iter()
            .find(|t| t.id == id)
            .map(|t| t.value.clone())
            .expect("task in view")
    }

    fn edit(&self, f: impl FnOnce(&mut View)) {
        f(&mut self.view.lock().expect("view"));
    }

    fn reports(&self) -> Vec<Task> {
        self.reports.lock().expect("reports").clone()
    }
}

#[tonic::async_trait]
impl Source for FakeSource {
    fn view(&self, _node_id: &str) -> View {
        self.view.lock().expect("view").clone()
    }

    /// The store's own rules (assigned node, version, no backwards move).
    async fn report(
        &self,
        node_id: &str,
        id: &str,
        version: u64,
        status: &TaskStatus,
    ) -> Result<(), String> {
        let mut v = self.view.lock().expect("view");
        let t = v
            .tasks
            .iter_mut()
            .find(|t| t.id == id)
            .ok_or("no such task")?;
        let task = skiff_controller::orchestrator::dispatcher::apply_status(
            t,
            node_id,
            version,
            status.clone(),
        )
        .map_err(|e| e.to_string())?;
        t.version += 1;
        t.value = task.clone();
        self.reports.lock().expect("reports").push(task);
        Ok(())
    }

    async fn changed(&self) {
        std::future::pending::<()>().await
    }

    fn ready(&self) -> bool {
        !self.waiting.load(Ordering::Relaxed)
    }

    async fn current(&self) -> bool {
        !self.stale.load(Ordering::Relaxed)
    }
}

/// An image fetcher that never has the image.
struct NoImages;

#[tonic::async_trait]
impl ImageFetch for NoImages {
    async fn ensure(&self, image: &str) -> Result<(), String> {
        Err(format!("{image}: not found on any node"))
    }
}

fn task(id: &str) -> Stored<Task> {
    Stored {
        id: id.into(),
        version: 1,
        value: Task {
            service_id: "svc1".into(),
            service_name: "web".into(),
            slot: 1,
            node_id: NODE.into(),
            template: TaskTemplate {
                image: "busybox:latest".into(),
                command: Some(vec!["sleep".into(), "60".into()]),
                env: vec!["A=1".into()],
                stop_grace_period_ms: 7000,
                ..Default::default()
            },
            status: TaskStatus {
                state: TaskState::Assigned,
                ..Default::default()
            },
            ..Default::default()
        },
    }
}

struct Rig {
    engine: Arc<FakeEngine>,
    source: Arc<FakeSource>,
    ex: Arc<Executor>,
    _root: tempfile::TempDir,
}

fn rig(behaviour: Behaviour, tasks: Vec<Stored<Task>>) -> Rig {
    let root = tempfile::tempdir().expect("temp dir");
    let engine = Arc::new(FakeEngine::new(root.path(), behaviour));
    let source = FakeSource::with_tasks(tasks);
    let ex = Executor::new(engine.clone(), source.clone(), NODE.into(), None);
    Rig {
        engine,
        source,
        ex,
        _root: root,
    }
}

impl Rig {
    /// One pass, then the starts and stops it began.
    async fn pass(&self) {
        self.ex.pass().await;
        for _ in 0..500 {
            if self.ex.in_flight.lock().await.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("starts or stops still in flight after a second");
    }

    fn creates(&self) -> Vec<(Option<String>, skiff_proto::engine::ContainerConfig)> {
        self.engine
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Create { name, config } => Some((name, *config)),
                _ => None,
            })
            .collect()
    }

    /// The task containers the engine holds.
    fn container_ids(&self) -> Vec<String> {
        self.engine
            .labelled(LABEL_TASK)
            .into_iter()
            .map(|(_, id)| id)
            .collect()
    }

    /// The one container the engine created.
    fn container_id(&self) -> String {
        let ids = self.container_ids();
        assert_eq!(ids.len(), 1, "containers: {ids:?}");
        ids[0].clone()
    }
}

#[tokio::test]
async fn a_new_task_is_created_with_its_config_and_swarm_labels_and_reported_running() {
    let r = rig(Behaviour::default(), vec![task("t1")]);
    r.pass().await;

    let creates = r.creates();
    assert_eq!(creates.len(), 1, "calls: {:?}", r.engine.calls());
    let (name, cfg) = &creates[0];
    assert_eq!(name.as_deref(), Some("web.1.t1"));
    assert_eq!(cfg.image, "busybox:latest");
    assert_eq!(cfg.cmd, vec!["sleep", "60"]);
    assert_eq!(cfg.env, vec!["A=1"]);
    assert_eq!(cfg.stop_timeout, 7);
    assert_eq!(cfg.network_mode, "bridge");
    assert_eq!(cfg.labels.get(LABEL_TASK).map(String::as_str), Some("t1"));
    assert_eq!(
        cfg.labels.get(LABEL_SERVICE).map(String::as_str),
        Some("web")
    );
    assert_eq!(cfg.labels.get(LABEL_NODE).map(String::as_str), Some(NODE));

    let id = r.container_id();
    assert!(r.engine.calls().contains(&Call::Start(id.clone())));
    let t = r.source.task("t1");
    assert_eq!(t.status.state, TaskState::Running);
    assert_eq!(t.status.container_id, id);
    assert_eq!(r.engine.task_states(), vec!["running"]);

    // The next pass leaves a running task alone.
    r.pass().await;
    assert_eq!(r.creates().len(), 1);
    assert_eq!(r.source.reports().len(), 1);
}

#[tokio::test]
async fn desired_shutdown_stops_with_the_grace_period_then_removes() {
    let r = rig(Behaviour::default(), vec![task("t1")]);
    r.pass().await;
    let id = r.container_id();
    r.source
        .edit(|v| v.tasks[0].value.desired = Desired::Shutdown);

    r.pass().await;
    assert!(r.engine.calls().contains(&Call::Stop {
        id: id.clone(),
        grace_secs: Some(7)
    }));
    assert_eq!(r.source.task("t1").status.state, TaskState::Shutdown);

    // Terminal now: the container goes.
    r.pass().await;
    assert!(r.engine.calls().contains(&Call::Remove { id, force: true }));
    assert!(r.engine.labelled(LABEL_TASK).is_empty());
}

#[tokio::test]
async fn an_exit_reports_complete_or_failed_with_the_exit_code() {
    for (code, state) in [(0, TaskState::Complete), (3, TaskState::Failed)] {
        let b = Behaviour {
            exit_after: Some((Duration::ZERO, code)),
            ..Default::default()
        };
        let r = rig(b, vec![task("t1")]);
        r.pass().await;
        r.pass().await;
        let t = r.source.task("t1");
        assert_eq!(t.status.state, state, "exit code {code}");
        assert_eq!(t.status.exit_code, code);
        if code != 0 {
            assert_eq!(t.status.error, "task: non-zero exit (3)");
        }
    }
}

#[tokio::test]
async fn a_failed_start_reports_failed_with_the_error() {
    let b = Behaviour {
        start_error: Some("exec: \"sleep\": not found".into()),
        ..Default::default()
    };
    let r = rig(b, vec![task("t1")]);
    r.pass().await;
    let t = r.source.task("t1");
    assert_eq!(t.status.state, TaskState::Failed);
    assert_eq!(t.status.error, "exec: \"sleep\": not found");
    assert_eq!(t.status.message, "starting container failed");
    assert_eq!(t.status.container_id, r.container_id());
}

#[tokio::test]
async fn a_task_that_cannot_be_prepared_is_rejected_with_why() {
    let root = tempfile::tempdir().expect("temp dir");
    let engine = Arc::new(FakeEngine::new(root.path(), Behaviour::default()));
    let source = FakeSource::with_tasks(vec![task("t1")]);
    let images: Arc<dyn ImageFetch> = Arc::new(NoImages);
    let ex = Executor::new(engine.clone(), source.clone(), NODE.into(), Some(images));
    let r = Rig {
        engine,
        source,
        ex,
        _root: root,
    };
    r.pass().await;
    let t = r.source.task("t1");
    assert_eq!(t.status.state, TaskState::Rejected);
    assert_eq!(t.status.error, "busybox:latest: not found on any node");
    assert!(r.creates().is_empty());
}

fn with_healthcheck(mut t: Stored<Task>) -> Stored<Task> {
    t.value.template.healthcheck = Some(Healthcheck {
        test: vec!["CMD-SHELL".into(), "test -f /ready".into()],
        interval_ms: 200,
        timeout_ms: 1000,
        retries: 1,
        start_period_ms: 0,
    });
    t
}

#[tokio::test]
async fn a_passing_healthcheck_reports_healthy() {
    let r = rig(Behaviour::default(), vec![with_healthcheck(task("t1"))]);
    r.pass().await;
    assert_eq!(r.source.task("t1").status.health, "starting");
    r.pass().await;
    let id = r.container_id();
    assert!(r.engine.calls().contains(&Call::Exec {
        id,
        args: vec!["/bin/sh".into(), "-c".into(), "test -f /ready".into()],
    }));
    assert_eq!(r.source.task("t1").status.health, "healthy");
}

#[tokio::test]
async fn a_failing_healthcheck_reports_unhealthy_and_stops_the_container() {
    let b = Behaviour {
        exec_exit_code: 1,
        ..Default::default()
    };
    let r = rig(b, vec![with_healthcheck(task("t1"))]);
    r.pass().await;
    r.pass().await;
    let id = r.container_id();
    assert_eq!(r.source.task("t1").status.health, "unhealthy");
    assert!(r.engine.calls().contains(&Call::Stop {
        id,
        grace_secs: Some(1)
    }));
}

#[tokio::test]
async fn a_task_on_an_overlay_waits_for_the_network_and_its_address() {
    let mut t = task("t1");
    t.value.template.networks.insert("ov".into(), vec![]);
    let r = rig(Behaviour::default(), vec![t]);
    r.source.edit(|v| v.overlay.all = vec!["ov".into()]);

    // Neither this node's side of the overlay nor the task's address: nothing starts.
    r.pass().await;
    assert!(r.creates().is_empty(), "calls: {:?}", r.engine.calls());
    assert_eq!(r.source.task("t1").status.state, TaskState::Assigned);

    // The overlay is set up here, but the task has no address yet.
    let ov = OverlayNetwork {
        id: "ov-id".into(),
        name: "ov".into(),
        internal: false,
        attachable: false,
        alloc: skiff_controller::orchestrator::stack::NetAlloc {
            subnet: "10.10.0.0/24".parse().expect("subnet"),
            gateway: Ipv4Addr::new(10, 10, 0, 1),
            vni: 4097,
            nodes: Default::default(),
        },
        peers: Default::default(),
    };
    r.source.edit(|v| v.overlay.networks = vec![ov]);
    r.pass().await;
    assert!(r.engine.calls().contains(&Call::EnsureOverlay("ov".into())));
    assert!(r.creates().is_empty());

    // With its address it starts, on the overlay, at that address.
    r.source.edit(|v| {
        v.tasks[0]
            .value
            .addresses
            .insert("ov".into(), Ipv4Addr::new(10, 10, 0, 5));
    });
    r.pass().await;
    let creates = r.creates();
    assert_eq!(creates.len(), 1);
    let cfg = &creates[0].1;
    assert_eq!(cfg.network_mode, "ov");
    let net = cfg.net.as_ref().expect("network options");
    assert_eq!(net.ipv4_address, "10.10.0.5");
    assert_eq!(r.source.task("t1").status.state, TaskState::Running);
}

#[tokio::test]
async fn a_restarted_agent_adopts_the_containers_of_its_tasks() {
    let r = rig(Behaviour::default(), vec![task("t1")]);
    let labels = |t: &str| HashMap::from([(LABEL_TASK.to_string(), t.to_string())]);
    r.engine.add_running("c-t1", labels("t1"));
    // A container whose task the cluster no longer has.
    r.engine.add_running("c-gone", labels("gone"));

    r.pass().await;
    assert!(r.creates().is_empty(), "calls: {:?}", r.engine.calls());
    let t = r.source.task("t1");
    assert_eq!(t.status.state, TaskState::Running);
    assert_eq!(t.status.container_id, "c-t1");
    let calls = r.engine.calls();
    assert!(!calls
        .iter()
        .any(|c| matches!(c, Call::Stop { id, .. } if id == "c-t1")));
    assert!(calls.contains(&Call::Stop {
        id: "c-gone".into(),
        grace_secs: None
    }));
    assert!(calls.contains(&Call::Remove {
        id: "c-gone".into(),
        force: true
    }));
}

#[tokio::test]
async fn a_worker_before_its_first_assignment_set_touches_nothing() {
    // A restarted agent re-adopted its containers; the stream has not delivered yet.
    let r = rig(Behaviour::default(), vec![]);
    r.source.waiting.store(true, Ordering::Relaxed);
    let labels = |t: &str| HashMap::from([(LABEL_TASK.to_string(), t.to_string())]);
    r.engine.add_running("c-t1", labels("t1"));
    r.engine.add_running("c-gone", labels("gone"));
    let before = r.engine.calls().len();
    r.pass().await;
    assert_eq!(
        r.engine.calls().len(),
        before,
        "no engine call before the first view: {:?}",
        r.engine.calls()
    );

    // The first set: t1 is kept and reported, the container of the unknown task goes.
    r.source.edit(|v| v.tasks = vec![task("t1")]);
    r.source.waiting.store(false, Ordering::Relaxed);
    r.pass().await;
    assert!(r.creates().is_empty(), "calls: {:?}", r.engine.calls());
    assert_eq!(r.source.task("t1").status.container_id, "c-t1");
    assert_eq!(r.container_ids(), vec!["c-t1".to_string()]);
}

#[tokio::test]
async fn a_view_that_may_lag_removes_no_container_of_a_task_it_lacks() {
    let r = rig(Behaviour::default(), vec![]);
    r.source.stale.store(true, Ordering::Relaxed);
    let labels = |t: &str| HashMap::from([(LABEL_TASK.to_string(), t.to_string())]);
    r.engine.add_running("c-new", labels("new"));
    r.pass().await;
    assert_eq!(r.container_ids(), vec!["c-new".to_string()]);
    assert!(!r
        .engine
        .calls()
        .iter()
        .any(|c| matches!(c, Call::Stop { .. } | Call::Remove { .. })));

    r.source.stale.store(false, Ordering::Relaxed);
    r.pass().await;
    assert!(
        r.container_ids().is_empty(),
        "removed once the view is current"
    );
}

#[tokio::test]
async fn a_stack_network_is_made_on_demand_and_removed_once_unused() {
    let mut t = task("t1");
    t.value
        .template
        .networks
        .insert("app_default".into(), vec!["web".into()]);
    let r = rig(Behaviour::default(), vec![t]);
    r.source.edit(|v| v.networks = vec!["app_default".into()]);
    r.pass().await;
    assert!(r
        .engine
        .calls()
        .contains(&Call::CreateNetwork("app_default".into())));
    let creates = r.creates();
    assert_eq!(creates[0].1.network_mode, "app_default");
    let net = creates[0].1.net.as_ref().expect("network options");
    assert_eq!(net.aliases, vec!["web"]);

    // Gone from the cluster: removed.
    r.source.edit(|v| v.networks.clear());
    r.pass().await;
    assert!(r
        .engine
        .calls()
        .contains(&Call::RemoveNetwork("net-app_default".into())));
}

/// A task of `sidecar` that joins `web`'s namespaces (`service:web`).
fn sidecar(id: &str) -> Stored<Task> {
    let mut t = task(id);
    t.value.service_id = "svc2".into();
    t.value.service_name = "sidecar".into();
    let c = &mut t.value.template.container;
    c.network_mode = "service:web".into();
    c.ipc = "service:web".into();
    c.pid = "container:legacy".into();
    t
}

#[tokio::test]
async fn a_service_peer_becomes_the_running_container_of_that_service_on_this_node() {
    let r = rig(Behaviour::default(), vec![sidecar("t2")]);
    let mut labels = HashMap::new();
    labels.insert(LABEL_SERVICE.to_string(), "web".to_string());
    labels.insert(LABEL_TASK.to_string(), "t1".to_string());
    r.engine.add_running("peer123", labels);
    r.pass().await;

    let creates = r.creates();
    assert_eq!(creates.len(), 1, "calls: {:?}", r.engine.calls());
    let cfg = &creates[0].1;
    assert_eq!(cfg.network_mode, "container:peer123");
    assert_eq!(cfg.ipc_mode, "container:peer123");
    // A container peer is the engine's to find by name.
    assert_eq!(cfg.pid_mode, "container:legacy");
    assert_eq!(r.source.task("t2").status.state, TaskState::Running);
}

#[tokio::test]
async fn a_service_peer_with_no_running_task_here_rejects_the_task_with_why() {
    let r = rig(Behaviour::default(), vec![sidecar("t2")]);
    r.pass().await;
    let t = r.source.task("t2");
    assert_eq!(t.status.state, TaskState::Rejected);
    assert_eq!(
        t.status.error,
        "network_mode service:web: no running task of web on this node"
    );
    assert!(r.creates().is_empty());
}

#[tokio::test]
async fn host_none_and_bridge_network_modes_go_to_the_engine_as_they_are() {
    for mode in ["host", "none", "bridge"] {
        let mut t = task("t1");
        t.value.template.container.network_mode = mode.into();
        let r = rig(Behaviour::default(), vec![t]);
        r.pass().await;
        assert_eq!(r.creates()[0].1.network_mode, mode);
    }
}

#[tokio::test]
async fn a_start_finds_the_container_an_earlier_start_made_instead_of_making_a_second() {
    // The pass read no container for t1, but by the time its start holds the guard an
    // earlier start has made one and it runs (its report not seen yet).
    let r = rig(Behaviour::default(), vec![task("t1")]);
    let labels = HashMap::from([(LABEL_TASK.to_string(), "t1".to_string())]);
    r.engine.add_running("c-earlier", labels);
    let t = task("t1");
    r.ex.start(&t).await;
    assert!(r.creates().is_empty(), "calls: {:?}", r.engine.calls());
    let t = r.source.task("t1");
    assert_eq!(t.status.state, TaskState::Running);
    assert_eq!(t.status.container_id, "c-earlier");
}

#[tokio::test]
async fn a_second_container_of_one_task_is_removed_and_the_running_one_kept() {
    let mut t = task("t1");
    t.value.status.state = TaskState::Running;
    t.value.status.container_id = "c-a".into();
    let r = rig(Behaviour::default(), vec![t]);
    let labels = || HashMap::from([(LABEL_TASK.to_string(), "t1".to_string())]);
    r.engine.add_running("c-a", labels());
    r.engine.add_running("c-b", labels());
    r.engine.exit("c-b", 0);

    r.pass().await;
    assert_eq!(r.container_ids(), vec!["c-a".to_string()]);
    assert_eq!(r.source.task("t1").status.state, TaskState::Running);
    assert!(r.engine.calls().contains(&Call::Remove {
        id: "c-b".into(),
        force: true
    }));
}
