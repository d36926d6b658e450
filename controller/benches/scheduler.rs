//! Scheduler throughput: 100,000 tasks (10 services, constraints and a spread
//! preference) placed on 10,000 simulated nodes in three zones.
//! Run: cargo bench -p skiff-controller --bench scheduler

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use skiff_controller::scheduler::*;

fn cluster() -> (Snapshot, Vec<PendingTask>) {
    let zones = ["a", "b", "c"];
    let nodes = (0..10_000)
        .map(|i| NodeInfo {
            id: format!("node-{i:05}"),
            hostname: format!("host-{i:05}"),
            role: if i < 5 { Role::Manager } else { Role::Worker },
            ready: true,
            labels: [
                ("zone".to_string(), zones[i % 3].to_string()),
                (
                    "disk".to_string(),
                    if i % 2 == 0 { "ssd" } else { "hdd" }.to_string(),
                ),
            ]
            .into(),
            capacity: Resources {
                nano_cpus: 16_000_000_000,
                memory_bytes: 64 << 30,
            },
            ..Default::default()
        })
        .collect();
    let mut services = std::collections::HashMap::new();
    let mut pending = Vec::new();
    for s in 0..10 {
        let id = format!("svc-{s}");
        services.insert(
            id.clone(),
            ServiceConstraints {
                constraints: vec![
                    Constraint::parse("node.role==worker").expect("constraint"),
                    Constraint::parse(if s % 2 == 0 {
                        "node.labels.disk==ssd"
                    } else {
                        "node.labels.disk!=ssd"
                    })
                    .expect("constraint"),
                ],
                spread: vec!["zone".into()],
                reservations: Resources {
                    nano_cpus: 100_000_000,
                    memory_bytes: 64 << 20,
                },
                ..Default::default()
            },
        );
        pending.extend((0..10_000).map(|t| PendingTask {
            task_id: format!("{id}.{t}"),
            service_id: id.clone(),
        }));
    }
    (
        Snapshot {
            nodes,
            placed: vec![],
            services,
        },
        pending,
    )
}

fn bench(c: &mut Criterion) {
    let (snap, pending) = cluster();
    let plan = schedule(&snap, &pending);
    assert_eq!(
        plan.placements.len(),
        100_000,
        "every task placed: {:?}",
        plan.pending.first()
    );
    let mut g = c.benchmark_group("scheduler");
    g.sample_size(10);
    g.throughput(Throughput::Elements(pending.len() as u64));
    g.bench_function("place_100k_tasks_on_10k_nodes", |b| {
        b.iter(|| schedule(&snap, &pending))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
