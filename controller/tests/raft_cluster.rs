//! In-process raft clusters over the fault-injecting [`Network`]: elections, failover,
//! quorum loss, restarts, snapshot catch-up, and a checker under chaos.

use skiff_controller::network::Network;
use skiff_controller::state::{ApplyError, Op, Proposal, Store};
use skiff_controller::{consensus, Bootstrap, RaftConfig, RaftError, RaftHandle};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Member {
    id: u64,
    dir: PathBuf,
    handle: Option<RaftHandle>,
}

struct Cluster {
    _tmp: tempfile::TempDir,
    net: Network,
    members: Vec<Member>,
    snapshot_every: u64,
    election_ticks: usize,
}

fn cfg(id: u64, dir: PathBuf, snapshot_every: u64, election_ticks: usize) -> RaftConfig {
    let mut c = RaftConfig::new(id, dir);
    c.tick = Duration::from_millis(50);
    c.election_ticks = election_ticks;
    c.snapshot_every = snapshot_every;
    c.keep_entries = 10;
    c.request_timeout = Duration::from_secs(2);
    c
}

impl Cluster {
    /// Node 1 founds the cluster; the others join through conf changes, as in production.
    async fn new(n: u64) -> Cluster {
        Self::with_snapshots(n, 10_000).await
    }

    async fn with_snapshots(n: u64, snapshot_every: u64) -> Cluster {
        Self::build(n, snapshot_every, 10).await
    }

    async fn build(n: u64, snapshot_every: u64, election_ticks: usize) -> Cluster {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut c = Cluster {
            net: Network::default(),
            members: vec![],
            snapshot_every,
            election_ticks,
            _tmp: tmp,
        };
        for id in 1..=n {
            let dir = c._tmp.path().join(format!("n{id}"));
            c.members.push(Member {
                id,
                dir,
                handle: None,
            });
        }
        c.boot(1, Bootstrap::New(Box::default()));
        c.h(1).campaign();
        c.wait_leader_among(&[1], Duration::from_secs(5)).await;
        for id in 2..=n {
            c.boot(id, Bootstrap::Join);
            c.h(1).add_voter(id).await.expect("add voter");
        }
        c
    }

    fn boot(&mut self, id: u64, b: Bootstrap) {
        let m = self
            .members
            .iter_mut()
            .find(|m| m.id == id)
            .expect("member");
        let h = consensus::start(
            cfg(id, m.dir.clone(), self.snapshot_every, self.election_ticks),
            b,
            self.net.endpoint(),
        )
        .expect("start raft");
        self.net.attach(id, h.clone());
        m.handle = Some(h);
    }

    fn h(&self, id: u64) -> RaftHandle {
        self.members
            .iter()
            .find(|m| m.id == id)
            .and_then(|m| m.handle.clone())
            .expect("running member")
    }

    fn running(&self) -> Vec<u64> {
        self.members
            .iter()
            .filter(|m| m.handle.is_some())
            .map(|m| m.id)
            .collect()
    }

    async fn kill(&mut self, id: u64) {
        self.net.detach(id);
        let m = self
            .members
            .iter_mut()
            .find(|m| m.id == id)
            .expect("member");
        if let Some(h) = m.handle.take() {
            h.stop();
            while !h.is_stopped() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }

    fn restart(&mut self, id: u64) {
        self.boot(id, Bootstrap::Join);
    }

    /// The leader agreed on by every running member in `among`.
    async fn wait_leader_among(&self, among: &[u64], timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let leaders: Vec<u64> = among
                .iter()
                .filter_map(|id| {
                    self.members
                        .iter()
                        .find(|m| m.id == *id)
                        .and_then(|m| m.handle.as_ref())
                })
                .map(|h| h.status())
                .filter(|s| s.is_leader)
                .map(|s| s.id)
                .collect();
            if leaders.len() == 1 {
                return leaders[0];
            }
            assert!(
                Instant::now() < deadline,
                "no single leader among {among:?} within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn leader(&self) -> u64 {
        self.wait_leader_among(&self.running(), Duration::from_secs(10))
            .await
    }
}

fn put(name: &str) -> Proposal {
    Proposal::new(vec![Op::Create {
        kind: "kv".into(),
        id: name.into(),
        name: name.into(),
        spec: name.as_bytes().to_vec(),
    }])
}

async fn store_of(h: &RaftHandle) -> Store {
    h.read_barrier().await.expect("linearizable read");
    h.store().read(|sm| sm.store().clone())
}

fn objects(s: &Store, kind: &str) -> BTreeMap<String, skiff_controller::Object> {
    s.objects
        .get(kind)
        .map(|m| {
            m.iter()
                .map(|(id, o)| (id.clone(), skiff_controller::Object::clone(o)))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_managers_replicate_and_followers_forward() {
    let c = Cluster::new(3).await;
    let leader = c.leader().await;
    let follower = c
        .running()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    // A follower accepts the write: raft forwards it to the leader.
    c.h(follower)
        .propose(put("from-follower"))
        .await
        .expect("propose via follower");
    c.h(leader)
        .propose(put("from-leader"))
        .await
        .expect("propose via leader");
    for id in c.running() {
        let s = store_of(&c.h(id)).await;
        assert_eq!(objects(&s, "kv").len(), 2, "member {id} is missing writes");
    }
    // Names are unique cluster-wide, enforced at apply time.
    let err = c
        .h(follower)
        .propose(put("from-leader"))
        .await
        .expect_err("duplicate name");
    assert!(
        matches!(
            err,
            RaftError::Rejected(ApplyError::IdConflict { .. } | ApplyError::NameConflict { .. })
        ),
        "{err}"
    );
}

/// With an election timeout far longer than the test (2000 ticks: 100 s), only the early
/// campaign on a lost connection to the leader can elect another. A read issued while the
/// leader is gone is served once the new one is in place (raft-rs drops it on the way;
/// the node sends it again), and a false alarm about a live leader changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_leader_connection_elects_early_and_pending_reads_complete() {
    let mut c = Cluster::build(3, 10_000, 2000).await;
    c.h(1).propose(put("before")).await.expect("write");
    let old = c.leader().await;
    let term = c.h(old).status().term;
    let followers: Vec<u64> = c.running().into_iter().filter(|i| *i != old).collect();
    // A false alarm: the other members still hear from the leader and refuse to vote.
    c.h(followers[0]).leader_lost(old);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(c.leader().await, old, "a live leader was replaced");
    assert_eq!(
        c.h(old).status().term,
        term,
        "a live leader's term moved on"
    );
    // The leader really goes.
    c.kill(old).await;
    let h = c.h(followers[0]);
    let read = tokio::spawn(async move { h.read_barrier().await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    for id in &followers {
        c.h(*id).leader_lost(old);
    }
    let new = c
        .wait_leader_among(&followers, Duration::from_secs(10))
        .await;
    assert_ne!(new, old);
    read.await
        .expect("read task")
        .expect("a read pending across the failover is served");
    c.h(followers[1])
        .propose(put("after"))
        .await
        .expect("write after the early election");
}

async fn leader_failover(n: u64) {
    let mut c = Cluster::new(n).await;
    c.h(1).propose(put("before")).await.expect("write");
    for round in 0..2 {
        let old = c.leader().await;
        let t0 = Instant::now();
        c.kill(old).await;
        let survivor = c.running()[0];
        // First committed write after the kill, retried as a client would.
        let p = put(&format!("after-{round}"));
        loop {
            match c.h(survivor).propose(p.clone()).await {
                Ok(_) => break,
                Err(e) => assert!(
                    t0.elapsed() < Duration::from_secs(3),
                    "no write within 3 s of the leader kill: {e}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = t0.elapsed();
        eprintln!(
            "{n} managers, round {round}: write committed {took:?} after killing leader {old}"
        );
        assert!(took < Duration::from_secs(3), "failover took {took:?}");
        c.restart(old);
    }
    let s = store_of(&c.h(c.leader().await)).await;
    assert_eq!(objects(&s, "kv").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_three_managers_new_leader_within_3s() {
    leader_failover(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_five_managers_new_leader_within_3s() {
    leader_failover(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_down_writes_continue_majority_down_writes_refused() {
    let mut c = Cluster::new(5).await;
    let leader = c.leader().await;
    let others: Vec<u64> = c.running().into_iter().filter(|i| *i != leader).collect();
    // Two of five down: still a quorum.
    c.kill(others[0]).await;
    c.kill(others[1]).await;
    c.h(leader)
        .propose(put("minority-down"))
        .await
        .expect("writes continue with a minority down");
    // Three of five down: no quorum. The write must fail with a clear error...
    c.kill(others[2]).await;
    let err = c
        .h(leader)
        .propose(put("majority-down"))
        .await
        .expect_err("must be refused without a quorum");
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            RaftError::Timeout(_) | RaftError::NoLeader | RaftError::LeaderChanged
        ),
        "{msg}"
    );
    assert!(msg.contains("majority"), "unclear error: {msg}");
    // ... and a read cannot be served as linearizable either.
    assert!(c.h(leader).read_barrier().await.is_err());
    // Once the majority is back, the refused batch is either wholly there or wholly absent.
    for id in [others[0], others[1], others[2]] {
        c.restart(id);
    }
    let l = c.leader().await;
    let s = store_of(&c.h(l)).await;
    let kv = objects(&s, "kv");
    assert!(kv.contains_key("minority-down"));
    eprintln!(
        "after quorum loss, the unacknowledged write is {}",
        if kv.contains_key("majority-down") {
            "present"
        } else {
            "absent"
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_all_managers_state_intact() {
    let mut c = Cluster::with_snapshots(3, 20).await;
    for i in 0..50 {
        c.h(c.leader().await)
            .propose(put(&format!("k{i}")))
            .await
            .expect("write");
    }
    let before = store_of(&c.h(c.leader().await)).await;
    // Snapshots are taken in the background and compact every member's log (10 entries
    // kept behind them), so the restart below replays a snapshot plus a short log.
    for m in &c.members {
        let deadline = Instant::now() + Duration::from_secs(10);
        while skiff_controller::storage::DiskStorage::check(&m.dir)
            .expect("log")
            .entries
            >= 40
        {
            assert!(
                Instant::now() < deadline,
                "member {} never compacted its log",
                m.id
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for id in [1, 2, 3] {
        c.kill(id).await;
    }
    for id in [1, 2, 3] {
        c.restart(id);
    }
    let l = c.leader().await;
    let after = store_of(&c.h(l)).await;
    assert_eq!(objects(&after, "kv"), objects(&before, "kv"));
    assert_eq!(objects(&after, "kv").len(), 50);
    c.h(l)
        .propose(put("after-restart"))
        .await
        .expect("writable after restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_manager_readded_catches_up_via_snapshot() {
    let mut c = Cluster::with_snapshots(3, 30).await;
    for i in 0..120 {
        c.h(c.leader().await)
            .propose(put(&format!("k{i}")))
            .await
            .expect("write");
    }
    // Manager 3 loses its disk. It is removed and comes back as a new member (4).
    c.kill(3).await;
    let l = c.leader().await;
    c.h(l).remove_voter(3).await.expect("remove 3");
    let dir = c
        .members
        .iter()
        .find(|m| m.id == 3)
        .expect("m3")
        .dir
        .clone();
    std::fs::remove_dir_all(&dir).expect("wipe");
    let dir4 = c._tmp.path().join("n4");
    c.members.push(Member {
        id: 4,
        dir: dir4.clone(),
        handle: None,
    });
    c.boot(4, Bootstrap::Join);
    c.h(l).add_voter(4).await.expect("add 4");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = c.h(4).store().read(|sm| sm.store().clone());
        if objects(&st, "kv").len() == 120 {
            break;
        }
        assert!(Instant::now() < deadline, "member 4 did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // It got there through a snapshot: its log starts after the leader's compaction point.
    assert!(
        std::fs::read(dir4.join("snap")).is_ok(),
        "member 4 has no snapshot file"
    );
    // And it counts toward the quorum now: with 1 down, writes still commit.
    let other = [1, 2].into_iter().find(|i| *i != l).expect("other");
    c.kill(other).await;
    let l2 = c.leader().await;
    c.h(l2)
        .propose(put("with-4"))
        .await
        .expect("write with the re-added member");
}

/// Many clients write while leaders are killed and links cut. Every acknowledged write must
/// be present afterwards on every member, and no write applied twice (each write is a
/// batch: create a unique object + bump the client's counter; retries reuse the request
/// ID, so the counter's version must equal the number of the client's objects).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checker_acknowledged_writes_survive_leader_kills_and_partitions() {
    let c = Arc::new(tokio::sync::Mutex::new(
        Cluster::with_snapshots(5, 200).await,
    ));
    const CLIENTS: u64 = 16;
    {
        let g = c.lock().await;
        let l = g.leader().await;
        let ops = (0..CLIENTS)
            .map(|i| Op::Create {
                kind: "counter".into(),
                id: format!("c{i}"),
                name: format!("c{i}"),
                spec: vec![],
            })
            .collect();
        g.h(l).propose(Proposal::new(ops)).await.expect("counters");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let attempts = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (c, stop, acked, attempts) = (c.clone(), stop.clone(), acked.clone(), attempts.clone());
        clients.push(tokio::spawn(async move {
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                let id = format!("w{client}-{seq}");
                let p = Proposal::new(vec![
                    Op::Create {
                        kind: "w".into(),
                        id: id.clone(),
                        name: id.clone(),
                        spec: vec![],
                    },
                    Op::Update {
                        kind: "counter".into(),
                        id: format!("c{client}"),
                        spec: seq.to_le_bytes().to_vec(),
                        expected_version: 0,
                    },
                ]);
                // Retry the same request (same ID) against random members until it is
                // acknowledged or we give up; giving up leaves its outcome unknown.
                for attempt in 0..20u64 {
                    attempts.fetch_add(1, Ordering::Relaxed);
                    let target = {
                        let g = c.lock().await;
                        let r = g.running();
                        g.members
                            .iter()
                            .find(|m| m.id == r[((client + attempt) as usize) % r.len()])
                            .and_then(|m| m.handle.clone())
                    };
                    let Some(h) = target else { continue };
                    match h.propose(p.clone()).await {
                        Ok(_) => {
                            acked.lock().expect("lock").push(id.clone());
                            break;
                        }
                        Err(RaftError::Rejected(e)) => {
                            panic!("write {id} rejected on retry ({e}): applied twice?")
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }
        }));
    }
    // Chaos: kill the leader, cut links, restart, heal.
    for round in 0..4 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let mut g = c.lock().await;
        let l = g.leader().await;
        g.kill(l).await;
        let r = g.running();
        g.net.cut(r[0], r[1]);
        drop(g);
        tokio::time::sleep(Duration::from_millis(900)).await;
        let mut g = c.lock().await;
        g.restart(l);
        if round % 2 == 1 {
            g.net.heal();
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for cl in clients {
        cl.await.expect("client task");
    }
    let g = c.lock().await;
    g.net.heal();
    let l = g.leader().await;
    let final_store = store_of(&g.h(l)).await;
    let w = objects(&final_store, "w");
    let acked = acked.lock().expect("lock").clone();
    assert!(
        acked.len() > 50,
        "too few acknowledged writes ({}) for a meaningful check",
        acked.len()
    );
    for id in &acked {
        assert!(w.contains_key(id), "acknowledged write {id} is missing");
    }
    for (cid, counter) in objects(&final_store, "counter") {
        let client = cid.trim_start_matches('c');
        let mine = w
            .keys()
            .filter(|k| k.starts_with(&format!("w{client}-")))
            .count() as u64;
        assert_eq!(
            counter.version - 1,
            mine,
            "client {client}: counter bumped {} times for {mine} writes",
            counter.version - 1
        );
    }
    // Every member converges on the same state.
    for id in g.running() {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = g.h(id).store().read(|sm| sm.store().clone());
            if s.objects == final_store.objects || Instant::now() > deadline {
                assert_eq!(s.objects, final_store.objects, "member {id} diverged");
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    eprintln!(
        "checker: {} acknowledged of {} attempts; {} writes present",
        acked.len(),
        attempts.load(Ordering::Relaxed),
        w.len()
    );
}
