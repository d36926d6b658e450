//! The nemesis: every 5–10 s it either injects a fault or heals one it injected, choosing
//! with a seeded RNG. Faults: kill -9 of the leader, of a follower manager, of a worker's
//! agent; a host cut off from every other host; one manager cut off from the other
//! managers (a minority); delay and loss on a host's interface; a paused agent
//! (SIGSTOP); a full disk under a host's --root. Healing a kill restarts the agent.
//!
//! At most one manager is impaired at a time (a minority of three) and at most two hosts
//! in all, so the cluster has a quorum to make progress with; agents that exit by
//! themselves (a fail-stop on a full disk) are noticed and restarted like killed ones.

use crate::hosts::{Hosts, Node};
use crate::rng::Rng;
use nix::sys::signal::Signal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impairment {
    Killed,
    Paused,
    Isolated,
    ManagerCut,
    Degraded,
    DiskFull,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    KillLeader,
    KillFollower,
    KillWorker,
    Isolate,
    CutManager,
    Degrade,
    Pause,
    FillDisk,
}

const FAULTS: [Fault; 8] = [
    Fault::KillLeader,
    Fault::KillFollower,
    Fault::KillWorker,
    Fault::Isolate,
    Fault::CutManager,
    Fault::Degrade,
    Fault::Pause,
    Fault::FillDisk,
];

/// The timeline of what the nemesis did, printed as it happens and kept for the report.
#[derive(Default)]
pub struct Schedule {
    events: Mutex<Vec<String>>,
}

impl Schedule {
    pub fn note(&self, started: Instant, what: impl Into<String>) {
        let line = format!(
            "[{:>6.1}s] {}",
            started.elapsed().as_secs_f64(),
            what.into()
        );
        println!("{line}");
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(line);
    }

    pub fn events(&self) -> Vec<String> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

pub struct Nemesis {
    hosts: Arc<Hosts>,
    rng: Rng,
    /// (host name, impairment) in force.
    active: Vec<(String, Impairment)>,
    pub schedule: Arc<Schedule>,
    started: Instant,
}

impl Nemesis {
    pub fn new(hosts: Arc<Hosts>, seed: u64, schedule: Arc<Schedule>, started: Instant) -> Self {
        Nemesis {
            hosts,
            rng: Rng::fork(seed, 1),
            active: vec![],
            schedule,
            started,
        }
    }

    fn note(&self, what: impl Into<String>) {
        self.schedule.note(self.started, what);
    }

    fn node(&self, name: &str) -> Option<Node> {
        self.hosts.node(name).cloned()
    }

    fn impaired(&self, name: &str) -> bool {
        self.active.iter().any(|(n, _)| n == name)
    }

    fn impaired_managers(&self) -> usize {
        let mut names: Vec<&String> = self
            .active
            .iter()
            .filter(|(n, _)| n.starts_with("manager"))
            .map(|(n, _)| n)
            .collect();
        names.dedup();
        names.len()
    }

    fn impaired_hosts(&self) -> usize {
        let mut names: Vec<&String> = self.active.iter().map(|(n, _)| n).collect();
        names.sort();
        names.dedup();
        names.len()
    }

    /// Injects or heals every 5–10 s until `until`.
    pub async fn run(&mut self, until: Instant) {
        loop {
            let wait = Duration::from_millis(self.rng.range(5_000, 10_000));
            if Instant::now() + wait >= until {
                tokio::time::sleep(until.saturating_duration_since(Instant::now())).await;
                return;
            }
            tokio::time::sleep(wait).await;
            self.notice_exits();
            let heal =
                !self.active.is_empty() && (self.impaired_hosts() >= 2 || self.rng.chance(0.4));
            if heal {
                self.heal_one().await;
            } else {
                self.inject().await;
            }
        }
    }

    /// Agents that died without being killed (fail-stop) are restarted like killed ones.
    fn notice_exits(&mut self) {
        for n in self.hosts.nodes.clone() {
            let killed = self
                .active
                .iter()
                .any(|(x, i)| *x == n.name && *i == Impairment::Killed);
            if !killed && !n.alive() {
                self.note(format!(
                    "notice: the agent on {} exited by itself (see its log)",
                    n.name
                ));
                self.active.push((n.name.clone(), Impairment::Killed));
            }
        }
    }

    async fn leader(&self) -> Option<String> {
        for m in self.hosts.managers() {
            if self.impaired(&m.name) {
                continue;
            }
            let Ok(id) = crate::api::leader(&m.sock).await else {
                continue;
            };
            if id.is_empty() {
                continue;
            }
            if let Ok(nodes) = crate::api::nodes(&m.sock).await {
                return nodes.into_iter().find(|n| n.0 == id).map(|n| n.1);
            }
        }
        None
    }

    fn candidates(&self, managers: bool) -> Vec<String> {
        let room = self.impaired_hosts() < 2 && (!managers || self.impaired_managers() == 0);
        if !room {
            return vec![];
        }
        self.hosts
            .nodes
            .iter()
            .filter(|n| n.manager == managers && !self.impaired(&n.name))
            .map(|n| n.name.clone())
            .collect()
    }

    async fn inject(&mut self) {
        let mut order = FAULTS.to_vec();
        // A seeded shuffle: the first fault with an eligible target is injected.
        for i in (1..order.len()).rev() {
            let j = self.rng.range(0, i as u64) as usize;
            order.swap(i, j);
        }
        for f in order {
            if self.try_inject(f).await {
                return;
            }
        }
    }

    /// A host for a fault that may hit any host: a manager or a worker.
    fn any_host(&mut self) -> Option<String> {
        let mut all = self.candidates(true);
        all.extend(self.candidates(false));
        self.rng.pick(&all).cloned()
    }

    async fn try_inject(&mut self, f: Fault) -> bool {
        let (target, imp) = match f {
            Fault::KillLeader => {
                if self.candidates(true).is_empty() {
                    return false;
                }
                match self.leader().await {
                    Some(l) if !self.impaired(&l) => (l, Impairment::Killed),
                    _ => return false,
                }
            }
            Fault::KillFollower => {
                let leader = self.leader().await;
                let c: Vec<String> = self
                    .candidates(true)
                    .into_iter()
                    .filter(|n| Some(n) != leader.as_ref())
                    .collect();
                match self.rng.pick(&c) {
                    Some(n) => (n.clone(), Impairment::Killed),
                    None => return false,
                }
            }
            Fault::KillWorker => {
                let c = self.candidates(false);
                match self.rng.pick(&c) {
                    Some(n) => (n.clone(), Impairment::Killed),
                    None => return false,
                }
            }
            Fault::CutManager => {
                let c = self.candidates(true);
                match self.rng.pick(&c) {
                    Some(n) => (n.clone(), Impairment::ManagerCut),
                    None => return false,
                }
            }
            Fault::Isolate => match self.any_host() {
                Some(n) => (n, Impairment::Isolated),
                None => return false,
            },
            Fault::Degrade => match self.any_host() {
                Some(n) => (n, Impairment::Degraded),
                None => return false,
            },
            Fault::Pause => match self.any_host() {
                Some(n) => (n, Impairment::Paused),
                None => return false,
            },
            Fault::FillDisk => match self.any_host() {
                Some(n) => (n, Impairment::DiskFull),
                None => return false,
            },
        };
        let Some(node) = self.node(&target) else {
            return false;
        };
        let res: Result<String, crate::ChaosError> = match (f, imp) {
            (_, Impairment::Killed) => node.signal(Signal::SIGKILL).map(|_| {
                let role = match f {
                    Fault::KillLeader => " (the leader)",
                    Fault::KillFollower => " (a follower)",
                    _ => "",
                };
                format!("kill -9 the agent on {target}{role}")
            }),
            (_, Impairment::Paused) => node
                .signal(Signal::SIGSTOP)
                .map(|_| format!("SIGSTOP the agent on {target}")),
            (_, Impairment::Isolated) => {
                let peers: Vec<String> = self
                    .hosts
                    .nodes
                    .iter()
                    .filter(|n| n.name != target)
                    .map(|n| n.addr.clone())
                    .collect();
                self.hosts
                    .partition(&node, &peers)
                    .await
                    .map(|_| format!("partition {target} from every other host (nftables drop)"))
            }
            (_, Impairment::ManagerCut) => {
                let peers: Vec<String> = self
                    .hosts
                    .managers()
                    .filter(|n| n.name != target)
                    .map(|n| n.addr.clone())
                    .collect();
                self.hosts.partition(&node, &peers).await.map(|_| {
                    format!("partition manager {target} from the other managers (a minority)")
                })
            }
            (_, Impairment::Degraded) => {
                let delay = self.rng.range(50, 300);
                let loss = self.rng.range(5, 30);
                self.hosts
                    .degrade(&node, delay, loss)
                    .await
                    .map(|how| format!("degrade {target}'s network: {how}"))
            }
            (_, Impairment::DiskFull) => self
                .hosts
                .fill_disk(&node)
                .await
                .map(|_| format!("fill the disk under {target}'s --root")),
        };
        match res {
            Ok(what) => {
                self.note(format!("fault: {what}"));
                self.active.push((target, imp));
                true
            }
            Err(e) => {
                self.note(format!("fault on {target} could not be injected: {e}"));
                false
            }
        }
    }

    /// Undoes one impairment in force; for a host with several, the others before a
    /// restart (an agent cannot come back on a full disk).
    async fn heal_one(&mut self) {
        let i = self.rng.range(0, self.active.len() as u64 - 1) as usize;
        let (name, mut imp) = self.active[i].clone();
        if imp == Impairment::Killed {
            if let Some((_, other)) = self
                .active
                .iter()
                .find(|(n, x)| *n == name && *x != Impairment::Killed)
            {
                imp = *other;
            }
        }
        if self.heal(&name, imp).await {
            self.active.retain(|(n, x)| !(*n == name && *x == imp));
        }
    }

    async fn heal(&self, name: &str, imp: Impairment) -> bool {
        let Some(node) = self.node(name) else {
            return true;
        };
        let (what, res) = match imp {
            Impairment::Killed => {
                if node.alive() {
                    return true;
                }
                ("restart the agent", self.hosts.start(&node).await)
            }
            Impairment::Paused => ("SIGCONT the agent", node.signal(Signal::SIGCONT)),
            Impairment::Isolated | Impairment::ManagerCut => {
                ("heal the partition", self.hosts.heal_partition(&node).await)
            }
            Impairment::Degraded => ("restore the network", self.hosts.heal_degrade(&node).await),
            Impairment::DiskFull => ("free the disk", self.hosts.free_disk(&node).await),
        };
        match res {
            Ok(()) => {
                self.note(format!("heal: {what} on {name}"));
                true
            }
            Err(e) => {
                self.note(format!("heal: {what} on {name} failed (will retry): {e}"));
                false
            }
        }
    }

    /// Undoes everything, then restarts every agent that is not running.
    pub async fn heal_all(&mut self) {
        self.notice_exits();
        let mut order = self.active.clone();
        // Kills last: a restart needs the disk, the network and a running agent next door.
        order.sort_by_key(|(_, i)| *i == Impairment::Killed);
        for (name, imp) in order {
            if self.heal(&name, imp).await {
                self.active.retain(|(n, x)| !(*n == name && *x == imp));
            }
        }
        for attempt in 0..3 {
            let dead: Vec<Node> = self
                .hosts
                .nodes
                .iter()
                .filter(|n| !n.alive())
                .cloned()
                .collect();
            if dead.is_empty() {
                break;
            }
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            for n in dead {
                if let Err(e) = self.hosts.start(&n).await {
                    self.note(format!("heal: restarting {} failed: {e}", n.name));
                } else {
                    self.note(format!("heal: restart the agent on {}", n.name));
                }
            }
        }
        self.active.clear();
    }
}
