//! The state machine's apply of task status reports, the work of the raft thread while
//! a large deploy reports: batches of 1,000 reports (one log entry, as the dispatcher's
//! status batcher makes them) against a store of 20,000 tasks.
//! Run: cargo bench -p skiff-controller --bench apply

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use skiff_controller::model::{
    Desired, Limits, Op, Proposal, Task, TaskState, TaskStatus, TaskTemplate, KIND_TASK,
};
use skiff_controller::orchestrator::dispatcher::prepare_status;
use skiff_controller::StateMachine;

const TASKS: usize = 20_000;
const BATCH: usize = 1_000;

/// A task as a stack deploy makes them: a service's template with a command, an
/// environment, labels, a network and limits.
fn task(i: usize) -> Task {
    let service = i % 100;
    Task {
        service_id: format!("svc{service:03}"),
        service_name: format!("app_s{service:03}"),
        stack: "app".into(),
        slot: (i / 100 + 1) as u64,
        node_id: format!("node-{:05}", i % 1000),
        generation: 1,
        template: TaskTemplate {
            image: "registry.example/app/web:1.4.2".into(),
            command: Some(vec!["sleep".into(), "100000".into()]),
            env: (0..6).map(|k| format!("SETTING_{k}=value-{k}")).collect(),
            labels: [
                ("com.docker.stack.namespace".to_string(), "app".to_string()),
                ("tier".to_string(), "web".to_string()),
            ]
            .into(),
            networks: [("app_default".to_string(), vec![format!("s{service:03}")])].into(),
            limits: Limits {
                nano_cpus: 500_000_000,
                memory_bytes: 64 << 20,
                ..Default::default()
            },
            stop_grace_period_ms: 10_000,
            ..Default::default()
        },
        desired: Desired::Running,
        status: TaskStatus {
            state: TaskState::Assigned,
            message: "assigned".into(),
            timestamp_ms: 1_700_000_000_000,
            ..Default::default()
        },
        created_at_ms: 1_700_000_000_000,
        ..Default::default()
    }
}

fn store() -> StateMachine {
    let mut sm = StateMachine::default();
    for (n, chunk) in (0..TASKS).collect::<Vec<_>>().chunks(BATCH).enumerate() {
        let ops = chunk
            .iter()
            .map(|&i| Op::Create {
                kind: KIND_TASK.into(),
                id: format!("t{i:06}"),
                name: format!("t{i:06}"),
                spec: serde_json::to_vec(&task(i)).expect("encode"),
            })
            .collect();
        sm.apply(n as u64 + 1, &Proposal::new(ops))
            .expect("create tasks");
    }
    sm
}

/// One batch of reports, each its own proposal, as the status batcher commits them.
fn reports(sm: &StateMachine, round: usize, state: TaskState) -> Vec<Proposal> {
    (0..BATCH)
        .map(|k| {
            let i = (round * BATCH + k) % TASKS;
            let id = format!("t{i:06}");
            let status = TaskStatus {
                state,
                message: "started".into(),
                container_id: format!("{i:064x}"),
                timestamp_ms: 1_700_000_001_000,
                ..Default::default()
            };
            let node = format!("node-{:05}", i % 1000);
            prepare_status(sm.get(KIND_TASK, &id), &node, &id, 0, status).expect("report")
        })
        .collect()
}

fn apply(c: &mut Criterion) {
    // The set-up reads the store and the measured part writes it.
    let sm = std::cell::RefCell::new(store());
    let mut index = 1_000;
    let mut round = 0;
    let mut g = c.benchmark_group("apply");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("1000 status reports, 20000 tasks", |b| {
        b.iter_batched(
            || {
                round += 1;
                reports(&sm.borrow(), round, TaskState::Running)
            },
            |batch| {
                index += 1;
                let mut sm = sm.borrow_mut();
                for p in &batch {
                    sm.apply(index, p).expect("apply");
                }
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = apply
}
criterion_main!(benches);
