//! The clients: one per stack, each deploying, scaling and updating its stack through the
//! CLI against a randomly chosen manager, and recording every operation with its outcome.
//!
//! Every change carries a unique marker (`CHAOS_SEQ=<op seq>` in the task environment),
//! so the final spec names the operation that wrote it. An operation is *acknowledged*
//! (the CLI exited 0), *failed* (an error that proves nothing was applied: not found, a
//! version conflict, no connection), or *unknown* (a timeout or a lost leader: it may or
//! may not have been applied, now or later). [`expectations`] turns the history into
//! what each field of each service may be at the end.

use crate::hosts::Hosts;
use crate::rng::Rng;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The services of every stack.
pub const SERVICES: [&str; 2] = ["web", "db"];
/// The environment variable carrying the marker.
pub const MARKER: &str = "CHAOS_SEQ";
/// How long one CLI call may take before it is killed (and counted unknown).
const CLI_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed,
    Unknown,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Unknown => "unknown",
        }
    }
}

/// What an operation does to one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Created or re-specified by a deploy: exists, replicas, marker = the op's seq.
    Deploy {
        replicas: u64,
    },
    /// Pruned by a deploy that left it out.
    Remove,
    Scale(u64),
    /// `service update --env-add CHAOS_SEQ=<seq>`.
    Marker,
}

#[derive(Debug, Clone)]
pub struct Op {
    pub seq: u64,
    pub client: usize,
    pub desc: String,
    /// (service name, change).
    pub effects: Vec<(String, Change)>,
    pub manager: String,
    /// Offsets from the start of the run.
    pub start: Duration,
    pub end: Duration,
    pub outcome: Outcome,
    pub error: String,
}

/// The shared, ordered record of every operation.
#[derive(Default)]
pub struct History {
    ops: Mutex<Vec<Op>>,
    seq: Mutex<u64>,
}

impl History {
    fn next_seq(&self) -> u64 {
        let mut s = self.seq.lock().unwrap_or_else(|p| p.into_inner());
        *s += 1;
        *s
    }

    fn push(&self, op: Op) {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).push(op);
    }

    pub fn ops(&self) -> Vec<Op> {
        let mut v = self.ops.lock().unwrap_or_else(|p| p.into_inner()).clone();
        v.sort_by_key(|o| o.seq);
        v
    }
}

pub fn stack_name(client: usize) -> String {
    format!("c{client}")
}

/// The stack file of a deploy: `web` with a published port, `db` optional.
fn stack_yaml(client: usize, seq: u64, web: u64, db: Option<u64>) -> String {
    let svc = |name: &str, replicas: u64, ports: &str| {
        format!(
            "  {name}:\n    image: busybox:latest\n    command: [sleep, \"1000000\"]\n    stop_grace_period: 1s\n    environment:\n      {MARKER}: \"{seq}\"\n{ports}    deploy:\n      replicas: {replicas}\n      restart_policy: {{condition: any, delay: 1s}}\n      update_config: {{parallelism: 2, delay: 0s, monitor: 1s, failure_action: continue}}\n"
        )
    };
    let mut y = String::from("services:\n");
    y.push_str(&svc(
        "web",
        web,
        &format!("    ports: [\"{}:80\"]\n", 18000 + client),
    ));
    if let Some(r) = db {
        y.push_str(&svc("db", r, ""));
    }
    y
}

/// Errors that prove the operation changed nothing.
fn definite_failure(stderr: &str) -> bool {
    [
        "not found",
        "changed since it was read",
        "already exists",
        "Cannot connect to the Skiff agent",
        "not a manager",
        "not a swarm manager",
        "invalid",
    ]
    .iter()
    .any(|m| stderr.contains(m))
}

/// One client: it owns one stack and issues one operation at a time.
pub struct Client {
    pub id: usize,
    pub seed: u64,
    /// The `skiff` binary the operations run.
    pub bin: PathBuf,
    /// Where its stack files go.
    pub dir: PathBuf,
    pub hosts: Arc<Hosts>,
    pub history: Arc<History>,
    /// The start of the run (operation times are offsets from it).
    pub started: Instant,
}

impl Client {
    /// Runs until `until`: the first operation deploys the stack.
    pub async fn run(self, until: Instant) {
        let Client {
            id,
            seed,
            bin,
            dir,
            hosts,
            history,
            started,
        } = self;
        let mut rng = Rng::fork(seed, 100 + id as u64);
        let stack = stack_name(id);
        let managers: Vec<(String, PathBuf)> = hosts
            .managers()
            .map(|n| (n.name.clone(), n.sock.clone()))
            .collect();
        let mut first = true;
        while Instant::now() < until {
            let seq = history.next_seq();
            let Some((mname, sock)) = rng.pick(&managers).cloned() else {
                return;
            };
            let svc = |s: &str| format!("{stack}_{s}");
            let roll = rng.range(0, 99);
            let (desc, effects, args): (String, Vec<(String, Change)>, Vec<String>) =
                if first || roll < 35 {
                    first = false;
                    let web = rng.range(1, 3);
                    let db = rng.chance(0.75).then(|| rng.range(1, 2));
                    let file = dir.join(format!("{stack}-{seq}.yaml"));
                    if let Err(e) = std::fs::write(&file, stack_yaml(id, seq, web, db)) {
                        // Gone during an interrupted run's teardown: nothing to say then.
                        if dir.exists() {
                            eprintln!("client {id}: writing {}: {e}", file.display());
                        }
                        return;
                    }
                    let mut eff = vec![(svc("web"), Change::Deploy { replicas: web })];
                    eff.push((
                        svc("db"),
                        match db {
                            Some(r) => Change::Deploy { replicas: r },
                            None => Change::Remove,
                        },
                    ));
                    (
                        format!(
                            "deploy {stack} web={web} db={}",
                            db.map_or("-".into(), |r| r.to_string())
                        ),
                        eff,
                        vec![
                            "stack".into(),
                            "deploy".into(),
                            "--prune".into(),
                            "-c".into(),
                            file.to_string_lossy().into_owned(),
                            stack.clone(),
                        ],
                    )
                } else if roll < 70 {
                    let name = svc(rng.pick(&SERVICES).copied().unwrap_or("web"));
                    let r = rng.range(0, 3);
                    (
                        format!("scale {name}={r}"),
                        vec![(name.clone(), Change::Scale(r))],
                        vec!["service".into(), "scale".into(), format!("{name}={r}")],
                    )
                } else {
                    let name = svc(rng.pick(&SERVICES).copied().unwrap_or("web"));
                    (
                        format!("update {name} {MARKER}={seq}"),
                        vec![(name.clone(), Change::Marker)],
                        vec![
                            "service".into(),
                            "update".into(),
                            "--env-add".into(),
                            format!("{MARKER}={seq}"),
                            name,
                        ],
                    )
                };
            let host = format!("unix://{}", sock.display());
            let mut full = vec!["--host".to_string(), host];
            full.extend(args);
            let refs: Vec<&str> = full.iter().map(String::as_str).collect();
            let start = started.elapsed();
            let res = crate::hosts::cmd(&bin.to_string_lossy(), &refs, None, CLI_TIMEOUT).await;
            let (outcome, error) = match res {
                Ok(o) if o.status.success() => (Outcome::Ok, String::new()),
                Ok(o) => {
                    let e = String::from_utf8_lossy(&o.stderr).trim().to_string();
                    let kind = if definite_failure(&e) {
                        Outcome::Failed
                    } else {
                        Outcome::Unknown
                    };
                    (kind, e)
                }
                Err(e) => (Outcome::Unknown, e.to_string()),
            };
            history.push(Op {
                seq,
                client: id,
                desc,
                effects,
                manager: mname,
                start,
                end: started.elapsed(),
                outcome,
                error,
            });
            tokio::time::sleep(Duration::from_millis(rng.range(200, 1500))).await;
        }
    }
}

/// One field of a service's spec, as the model tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Field {
    Exists,
    Replicas,
    Marker,
}

/// A value a field may hold; `None` for "no such service".
pub type Value = Option<u64>;

/// What the run allows one field to be at the end, and why.
#[derive(Debug, Clone, Default)]
pub struct Allowed {
    /// The value the last acknowledged write set (the initial "absent" if none).
    pub acked: Value,
    pub acked_by: Option<u64>,
    /// Values of unknown-outcome writes: each may have taken effect at any time after
    /// it was issued, so any of them may be last.
    pub maybe: BTreeMap<Value, u64>,
}

impl Allowed {
    pub fn allows(&self, v: Value) -> bool {
        self.acked == v || self.maybe.contains_key(&v)
    }
}

fn effect(change: &Change, field: Field, seq: u64) -> Option<Value> {
    match (change, field) {
        (Change::Deploy { .. }, Field::Exists) => Some(Some(1)),
        (Change::Deploy { replicas }, Field::Replicas) => Some(Some(*replicas)),
        (Change::Deploy { .. }, Field::Marker) => Some(Some(seq)),
        (Change::Remove, _) => Some(None),
        (Change::Scale(r), Field::Replicas) => Some(Some(*r)),
        (Change::Marker, Field::Marker) => Some(Some(seq)),
        _ => None,
    }
}

/// For every service ever written and each field: what may be observed at the end.
/// (`Exists` is `Some(1)` / `None`.)
pub fn expectations(ops: &[Op]) -> BTreeMap<(String, Field), Allowed> {
    let mut out: BTreeMap<(String, Field), Allowed> = BTreeMap::new();
    for op in ops {
        for (svc, change) in &op.effects {
            for field in [Field::Exists, Field::Replicas, Field::Marker] {
                let Some(v) = effect(change, field, op.seq) else {
                    continue;
                };
                let a = out.entry((svc.clone(), field)).or_default();
                match op.outcome {
                    Outcome::Ok => {
                        a.acked = v;
                        a.acked_by = Some(op.seq);
                    }
                    Outcome::Unknown => {
                        a.maybe.entry(v).or_insert(op.seq);
                    }
                    Outcome::Failed => {}
                }
            }
        }
    }
    out
}

/// Reads a service's fields from its stored JSON (`Service` of the orchestrator).
pub fn observe(spec: &serde_json::Value) -> (Value, Value) {
    let s = &spec["spec"];
    let replicas = s["mode"]["replicated"]["replicas"].as_u64();
    let marker = s["template"]["env"].as_array().and_then(|env| {
        env.iter().filter_map(|e| e.as_str()).find_map(|e| {
            e.strip_prefix(MARKER)
                .and_then(|r| r.strip_prefix('='))
                .and_then(|v| v.parse().ok())
        })
    });
    (replicas, marker)
}

/// Where a client writes its stack files.
pub fn stacks_dir(dir: &Path) -> PathBuf {
    dir.join("stacks")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(seq: u64, outcome: Outcome, effects: Vec<(&str, Change)>) -> Op {
        Op {
            seq,
            client: 0,
            desc: String::new(),
            effects: effects
                .into_iter()
                .map(|(s, c)| (s.to_string(), c))
                .collect(),
            manager: String::new(),
            start: Duration::ZERO,
            end: Duration::ZERO,
            outcome,
            error: String::new(),
        }
    }

    #[test]
    fn last_ack_wins_unless_an_unknown_write_may_have_landed() {
        let ops = vec![
            op(
                1,
                Outcome::Ok,
                vec![("c0_web", Change::Deploy { replicas: 2 })],
            ),
            op(2, Outcome::Unknown, vec![("c0_web", Change::Scale(5))]),
            op(3, Outcome::Ok, vec![("c0_web", Change::Scale(1))]),
            op(4, Outcome::Failed, vec![("c0_web", Change::Scale(7))]),
            op(5, Outcome::Ok, vec![("c0_web", Change::Marker)]),
        ];
        let e = expectations(&ops);
        let r = &e[&("c0_web".to_string(), Field::Replicas)];
        assert!(r.allows(Some(1)) && r.allows(Some(5)));
        assert!(!r.allows(Some(2)) && !r.allows(Some(7)) && !r.allows(None));
        let m = &e[&("c0_web".to_string(), Field::Marker)];
        assert!(m.allows(Some(5)) && !m.allows(Some(1)));
        let x = &e[&("c0_web".to_string(), Field::Exists)];
        assert!(x.allows(Some(1)) && !x.allows(None));
    }

    #[test]
    fn a_pruned_service_must_be_gone_and_specs_parse() {
        let ops = vec![
            op(
                1,
                Outcome::Ok,
                vec![("c0_db", Change::Deploy { replicas: 1 })],
            ),
            op(2, Outcome::Ok, vec![("c0_db", Change::Remove)]),
        ];
        let e = expectations(&ops);
        assert!(e[&("c0_db".to_string(), Field::Exists)].allows(None));
        assert!(!e[&("c0_db".to_string(), Field::Exists)].allows(Some(1)));
        let spec = serde_json::json!({"spec": {"mode": {"replicated": {"replicas": 3}},
            "template": {"env": ["A=1", "CHAOS_SEQ=42"]}}});
        assert_eq!(observe(&spec), (Some(3), Some(42)));
        let y = stack_yaml(1, 9, 2, None);
        assert!(y.contains("18001:80") && y.contains("CHAOS_SEQ: \"9\"") && !y.contains("db:"));
    }
}
