//! A damaged raft log on one manager of three, on real agents: a flipped byte in the
//! middle of the WAL, or a cut tail, is detected, the log is set aside and the manager
//! rejoins under a new raft ID from the others' snapshot. The cluster keeps accepting writes throughout, and the replicas
//! end up identical (equal state hashes). A lone manager with a corrupt log refuses to
//! start rather than lose data.

mod common;
#[path = "common/cluster.rs"]
mod harness;

use harness::{wait_until, Member};
use hyper_util::rt::TokioIo;
use skiff_proto::cluster as pb;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn wal(m: &Member) -> PathBuf {
    let dir = m.root().join("cluster/raft");
    let mut segs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("raft dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segs.sort();
    segs.pop().expect("a WAL segment")
}

/// `(applied index, state hash)` of a manager's replica, over its unix socket.
fn state_hash(m: &Member) -> Option<(u64, String)> {
    let sock = m.dir.path().join("s.sock");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let ch = tonic::transport::Endpoint::from_static("http://skiff.local")
            .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                let p = sock.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?))
                }
            }))
            .await
            .ok()?;
        let r = pb::cluster_client::ClusterClient::new(ch)
            .state_hash(pb::Empty {})
            .await
            .ok()?
            .into_inner();
        Some((r.index, r.hash))
    })
}

fn hashes_converge(ms: &[&Member]) {
    wait_until(
        "equal state hashes on every manager",
        Duration::from_secs(20),
        || {
            let hs: Vec<Option<(u64, String)>> = ms.iter().map(|m| state_hash(m)).collect();
            hs.iter().all(|h| h.is_some()) && hs.windows(2).all(|w| w[0] == w[1])
        },
    );
}

fn leader_member(ms: &[Member]) -> usize {
    let info = ms[0].cmd(&["cluster", "info"]);
    let leader = info
        .lines()
        .find_map(|l| l.strip_prefix("Leader: "))
        .expect("leader")
        .trim()
        .to_string();
    ms.iter()
        .position(|m| m.node_id() == leader)
        .expect("leader is a member")
}

fn label(m: &Member, kv: &str) {
    m.cmd(&["node", "update", "--label-add", kv, "self"]);
}

fn flip_byte(path: &Path, at: usize) {
    let mut data = std::fs::read(path).expect("read wal");
    assert!(
        data.len() > at + 64,
        "segment too short to damage mid-log: {}",
        data.len()
    );
    data[at] ^= 0xff;
    std::fs::write(path, data).expect("write wal");
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn a_corrupt_or_cut_raft_log_heals_from_the_other_managers() {
    common::require_root();
    let m1 = Member::start(true, None);
    let port = m1.port.expect("port");
    let token = m1
        .cmd(&["cluster", "join-token", "-q", "manager"])
        .trim()
        .to_string();
    let mut ms = vec![
        m1,
        Member::start(true, Some((port, token.clone()))),
        Member::start(true, Some((port, token))),
    ];
    wait_until("three voters", Duration::from_secs(15), || {
        ms[0].cmd(&["cluster", "info"]).contains("Managers: 3")
    });
    for i in 0..10 {
        label(&ms[0], &format!("before{i}=x"));
    }
    let leader = leader_member(&ms);
    let victim = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    hashes_converge(&ms.iter().collect::<Vec<_>>());

    // 1. A flipped byte in the middle of a follower's log.
    ms[victim].kill9();
    let seg = wal(&ms[victim]);
    flip_byte(&seg, 12); // inside the segment's first record
    label(&ms[leader], "while_down=1");
    ms[victim].restart();
    let log = ms[victim].log();
    assert!(
        log.contains("the raft log is damaged") && log.contains("checksum mismatch"),
        "corruption not detected:\n{log}"
    );
    assert!(
        std::fs::read_dir(ms[victim].root().join("cluster"))
            .expect("cluster dir")
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("raft.damaged-")),
        "the damaged log is kept aside for inspection"
    );
    // The cluster never stopped taking writes, and the victim catches up.
    label(&ms[other], "after_corruption=1");
    let (id0, id_other) = (ms[0].node_id(), ms[other].node_id());
    let t0 = std::time::Instant::now();
    loop {
        let a = ms[victim].try_cmd(&["node", "inspect", &id0]);
        let b = ms[victim].try_cmd(&["node", "inspect", &id_other]);
        if a.stdout.contains("before9") && b.stdout.contains("after_corruption") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the recovered manager did not catch up ({} {}); its log:\n{}",
            a.stderr,
            b.stderr,
            ms[victim].log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let info = ms[victim].cmd(&["cluster", "info"]);
    assert!(
        info.contains("Is Manager: true") && info.contains("Managers: 3"),
        "{info}"
    );
    hashes_converge(&ms.iter().collect::<Vec<_>>());

    // 2. A cut tail (the last records half gone) on another follower.
    let leader = leader_member(&ms);
    let victim = (0..3)
        .find(|i| *i != leader && *i != victim)
        .expect("a follower");
    for i in 0..5 {
        label(&ms[leader], &format!("tail{i}=x"));
    }
    ms[victim].kill9();
    let seg = wal(&ms[victim]);
    let len = std::fs::metadata(&seg).expect("meta").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open wal")
        .set_len(len - 37)
        .expect("cut");
    label(&ms[leader], "after_cut=1");
    ms[victim].restart();
    let log = ms[victim].log();
    assert!(
        log.matches("the raft log is damaged").count() >= 1 && log.contains("cut off or torn"),
        "the cut tail was not noticed:\n{log}"
    );
    let leader_id = ms[leader].node_id();
    wait_until(
        "the cut manager catches up",
        Duration::from_secs(20),
        || {
            let o = ms[victim].try_cmd(&["node", "inspect", &leader_id]);
            o.code == 0 && o.stdout.contains("after_cut")
        },
    );
    hashes_converge(&ms.iter().collect::<Vec<_>>());
    let ls = ms[0].cmd(&["node", "ls"]);
    assert_eq!(ls.matches("Leader").count(), 1, "{ls}");
    assert_eq!(ls.matches("Reachable").count(), 2, "{ls}");
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn a_lone_manager_with_a_corrupt_log_refuses_to_start() {
    common::require_root();
    let mut m = Member::start(false, None);
    for i in 0..5 {
        label(&m, &format!("k{i}=v"));
    }
    m.kill9();
    flip_byte(&wal(&m), 12);
    let st = m
        .spawn_expect_exit(Duration::from_secs(15))
        .expect("the agent must refuse to start");
    assert!(!st.success());
    let log = m.log();
    assert!(
        log.contains("corrupt at byte") && log.contains("refusing to start"),
        "{log}"
    );
}
