//! An engine in memory: records every call, runs nothing. For executor unit tests (no
//! root, no kernel) and for simulated nodes. Its behaviour is configured up front:
//! start latency, start failure, an exit code after a delay, health-check exit code.

use super::{Engine, NetworkEngine, NetworkSummary, Result};
use crate::error::AgentError;
use crate::events::EventBus;
use crate::network::CreateNetwork;
use skiff_controller::orchestrator::overlay::{OverlayNetwork, OverlayView};
use skiff_runtime::container::{ContainerState, Status};
use skiff_runtime::network::Proto;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// One call the engine received, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    Create {
        name: Option<String>,
        config: Box<skiff_proto::engine::ContainerConfig>,
    },
    Start(String),
    Stop {
        id: String,
        grace_secs: Option<u32>,
    },
    Remove {
        id: String,
        force: bool,
    },
    Exec {
        id: String,
        args: Vec<String>,
    },
    CreateNetwork(String),
    RemoveNetwork(String),
    EnsureOverlay(String),
    SetServicePort {
        key: String,
        backends: Vec<(Ipv4Addr, u16)>,
    },
}

#[derive(Clone, Debug)]
struct FakeContainer {
    labels: HashMap<String, String>,
    state: ContainerState,
    ip: Ipv4Addr,
    /// When a started container exits on its own, with which code.
    exits_at: Option<(Instant, i32)>,
}

#[derive(Default)]
struct Inner {
    calls: std::collections::VecDeque<Call>,
    containers: BTreeMap<String, FakeContainer>,
    networks: BTreeMap<String, NetworkSummary>,
    task_states: Vec<&'static str>,
    next: u32,
}

/// The behaviour [`FakeEngine`] is built with.
#[derive(Clone, Debug, Default)]
pub struct Behaviour {
    /// How long `start` takes.
    pub start_latency: Duration,
    /// `start` fails with this message.
    pub start_error: Option<String>,
    /// A started container exits this long after its start, with this code.
    pub exit_after: Option<(Duration, i32)>,
    /// What health-check (and other) execs return.
    pub exec_exit_code: i32,
    /// Keep only the last this many calls and task states (0: all). A simulator running
    /// for hours keeps a bounded record; a test keeps everything.
    pub keep_records: usize,
}

/// See the module documentation.
pub struct FakeEngine {
    behaviour: Behaviour,
    inner: Mutex<Inner>,
    events: EventBus,
    root: PathBuf,
}

impl FakeEngine {
    /// `root` stands for the agent's state directory (task files are written there).
    pub fn new(root: impl Into<PathBuf>, behaviour: Behaviour) -> Self {
        FakeEngine {
            behaviour,
            inner: Mutex::default(),
            events: EventBus::default(),
            root: root.into(),
        }
    }

    fn record(&self, inner: &mut Inner, call: Call) {
        if self.behaviour.keep_records > 0 && inner.calls.len() >= self.behaviour.keep_records {
            inner.calls.pop_front();
        }
        inner.calls.push_back(call);
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere in a test must not hide the records.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.inner().calls.iter().cloned().collect()
    }

    /// Task states counted through [`Engine::task_state_changed`].
    pub fn task_states(&self) -> Vec<&'static str> {
        self.inner().task_states.clone()
    }

    /// Adds a container as if it had been there before (an agent restart adopts it).
    pub fn add_running(&self, id: &str, labels: HashMap<String, String>) {
        let mut inner = self.inner();
        let ip = Ipv4Addr::new(10, 0, 0, 100 + inner.containers.len() as u8);
        inner.containers.insert(
            id.to_string(),
            FakeContainer {
                labels,
                state: ContainerState {
                    status: Status::Running,
                    started_at: Some(chrono::Utc::now()),
                    ..Default::default()
                },
                ip,
                exits_at: None,
            },
        );
    }

    /// Makes a container exit now with `code` (a crash, an OOM kill).
    pub fn exit(&self, id: &str, code: i32) {
        if let Some(c) = self.inner().containers.get_mut(id) {
            c.state.status = Status::Exited;
            c.state.exit_code = code;
            c.exits_at = None;
        }
    }

    fn not_found(id: &str) -> AgentError {
        AgentError::NotFound(format!("No such container: {id}"))
    }
}

/// Applies a due exit to a container's state.
fn settle(c: &mut FakeContainer) {
    if let Some((at, code)) = c.exits_at {
        if Instant::now() >= at {
            c.state.status = Status::Exited;
            c.state.exit_code = code;
            c.exits_at = None;
        }
    }
}

#[tonic::async_trait]
impl Engine for FakeEngine {
    async fn create(
        &self,
        name: Option<String>,
        config: skiff_proto::engine::ContainerConfig,
    ) -> Result<String> {
        let mut inner = self.inner();
        inner.next += 1;
        let n = inner.next;
        let id = format!("{n:064x}");
        self.record(
            &mut inner,
            Call::Create {
                name,
                config: Box::new(config.clone()),
            },
        );
        inner.containers.insert(
            id.clone(),
            FakeContainer {
                labels: config.labels.into_iter().collect(),
                state: ContainerState {
                    status: Status::Created,
                    ..Default::default()
                },
                ip: Ipv4Addr::new(10, 0, (n / 250) as u8, (n % 250) as u8 + 2),
                exits_at: None,
            },
        );
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<()> {
        self.record(&mut self.inner(), Call::Start(id.to_string()));
        tokio::time::sleep(self.behaviour.start_latency).await;
        let mut inner = self.inner();
        let c = inner
            .containers
            .get_mut(id)
            .ok_or_else(|| Self::not_found(id))?;
        if let Some(msg) = &self.behaviour.start_error {
            c.state.status = Status::Exited;
            c.state.exit_code = 127;
            return Err(AgentError::Start {
                message: msg.clone(),
                exit_code: 127,
            });
        }
        c.state.status = Status::Running;
        c.state.started_at = Some(chrono::Utc::now());
        c.exits_at = self
            .behaviour
            .exit_after
            .map(|(after, code)| (Instant::now() + after, code));
        Ok(())
    }

    async fn stop(&self, id: &str, grace_secs: Option<u32>) -> Result<()> {
        let mut inner = self.inner();
        self.record(
            &mut inner,
            Call::Stop {
                id: id.to_string(),
                grace_secs,
            },
        );
        let c = inner
            .containers
            .get_mut(id)
            .ok_or_else(|| Self::not_found(id))?;
        settle(c);
        if c.state.is_running() {
            c.state.status = Status::Exited;
            c.state.exit_code = 143;
        }
        Ok(())
    }

    async fn remove(&self, id: &str, force: bool) -> Result<()> {
        let mut inner = self.inner();
        self.record(
            &mut inner,
            Call::Remove {
                id: id.to_string(),
                force,
            },
        );
        let running = inner
            .containers
            .get(id)
            .ok_or_else(|| Self::not_found(id))?
            .state
            .is_running();
        if running && !force {
            return Err(AgentError::Conflict(format!(
                "cannot remove container {id}: container is running"
            )));
        }
        inner.containers.remove(id);
        Ok(())
    }

    async fn exec(&self, id: &str, args: Vec<String>) -> Result<i32> {
        let mut inner = self.inner();
        self.record(
            &mut inner,
            Call::Exec {
                id: id.to_string(),
                args,
            },
        );
        let c = inner
            .containers
            .get_mut(id)
            .ok_or_else(|| Self::not_found(id))?;
        settle(c);
        if !c.state.is_running() {
            return Err(AgentError::Precondition(format!(
                "Container {id} is not running"
            )));
        }
        Ok(self.behaviour.exec_exit_code)
    }

    fn state(&self, id: &str) -> Option<ContainerState> {
        let mut inner = self.inner();
        let c = inner.containers.get_mut(id)?;
        settle(c);
        Some(c.state.clone())
    }

    fn labelled(&self, key: &str) -> Vec<(String, String)> {
        self.inner()
            .containers
            .iter()
            .filter_map(|(id, c)| Some((c.labels.get(key)?.clone(), id.clone())))
            .collect()
    }

    fn events(&self) -> &EventBus {
        &self.events
    }

    fn task_state_changed(&self, state: &'static str) {
        let mut inner = self.inner();
        if self.behaviour.keep_records > 0 && inner.task_states.len() >= self.behaviour.keep_records
        {
            inner.task_states.remove(0);
        }
        inner.task_states.push(state);
    }

    fn root(&self) -> &Path {
        &self.root
    }

    fn networks(&self) -> &dyn NetworkEngine {
        self
    }
}

#[tonic::async_trait]
impl NetworkEngine for FakeEngine {
    async fn resolve(&self, key: &str) -> Result<String> {
        self.inner()
            .networks
            .values()
            .find(|n| n.id == key || n.name == key)
            .map(|n| n.id.clone())
            .ok_or_else(|| AgentError::NotFound(format!("network {key} not found")))
    }

    async fn create(&self, req: CreateNetwork) -> Result<()> {
        let mut inner = self.inner();
        self.record(&mut inner, Call::CreateNetwork(req.name.clone()));
        let id = format!("net-{}", req.name);
        let n = NetworkSummary {
            id: id.clone(),
            name: req.name,
            labels: req.labels,
            endpoints: 0,
        };
        inner.networks.insert(id, n);
        Ok(())
    }

    async fn remove(&self, key: &str) -> Result<()> {
        let mut inner = self.inner();
        self.record(&mut inner, Call::RemoveNetwork(key.to_string()));
        inner
            .networks
            .remove(key)
            .map(|_| ())
            .ok_or_else(|| AgentError::NotFound(format!("network {key} not found")))
    }

    async fn list(&self) -> Vec<NetworkSummary> {
        self.inner().networks.values().cloned().collect()
    }

    async fn primary_ip(&self, container_id: &str) -> Option<Ipv4Addr> {
        let inner = self.inner();
        let c = inner.containers.get(container_id)?;
        c.state.is_running().then_some(c.ip)
    }

    async fn set_service_port(
        &self,
        service: &str,
        proto: Proto,
        port: u16,
        backends: Vec<(Ipv4Addr, u16)>,
    ) -> Result<()> {
        let key = format!("{service}/{proto}/{port}");
        self.record(&mut self.inner(), Call::SetServicePort { key, backends });
        Ok(())
    }

    async fn retain_service_ports(&self, _keep: &HashSet<String>) -> Result<()> {
        Ok(())
    }

    async fn ensure_overlay(&self, o: &OverlayNetwork, _node_id: &str) -> Result<()> {
        self.record(&mut self.inner(), Call::EnsureOverlay(o.name.clone()));
        Ok(())
    }

    async fn sync_overlays(&self, _view: &OverlayView, _node_id: &str) -> Result<()> {
        Ok(())
    }

    async fn prune_overlays(&self, _keep: &HashSet<String>) -> Vec<String> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_bounded_when_asked_and_whole_otherwise() {
        let bounded = FakeEngine::new(
            "/nonexistent",
            Behaviour {
                keep_records: 2,
                ..Default::default()
            },
        );
        let whole = FakeEngine::new("/nonexistent", Behaviour::default());
        for e in [&bounded, &whole] {
            for i in 0..3 {
                e.record(&mut e.inner(), Call::Start(format!("c{i}")));
                e.task_state_changed(["new", "running", "complete"][i]);
            }
        }
        assert_eq!(
            bounded.calls(),
            vec![Call::Start("c1".into()), Call::Start("c2".into())]
        );
        assert_eq!(bounded.task_states(), vec!["running", "complete"]);
        assert_eq!(whole.calls().len(), 3);
        assert_eq!(whole.task_states().len(), 3);
    }
}
