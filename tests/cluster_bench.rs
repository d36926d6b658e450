//! Benchmark (ignored by default): committed writes/s and latency of a 3-manager Skiff
//! cluster vs a 3-member etcd cluster (Debian's etcd-server) on loopback, 100 concurrent
//! clients, same value size, write phases alternating between the two; then Skiff's
//! leader failover time (kill -9 of the leader to the first committed write through a
//! client already connected to another manager, median of 10).
//!
//! Run: `deploy/bench/cluster.sh`, or
//! `cargo test --release --test cluster_bench -- --ignored --nocapture`. Environment:
//! `BENCH_DIR` (where both keep their state; default /var/tmp, a real disk: /tmp is often
//! tmpfs, where fsync costs nothing), `BENCH_ROUNDS` (write phases per system, default
//! 2), `BENCH_PARTS` (any of skiff,etcd,failover), `BENCH_LOGS` (a directory to copy the
//! managers' logs to).

mod common;
#[path = "common/cluster.rs"]
mod harness;

use harness::Member;
use hyper_util::rt::TokioIo;
use skiff_proto::cluster as pb;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

const CLIENTS: usize = 100;
const VALUE: usize = 256;
const SECONDS: u64 = 10;

async fn skiff_client(host: &str) -> pb::cluster_client::ClusterClient<tonic::transport::Channel> {
    let path = host.trim_start_matches("unix://").to_string();
    let ch = tonic::transport::Endpoint::try_from("http://skiff.local")
        .expect("endpoint")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let p = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?))
            }
        }))
        .await
        .expect("connect");
    pb::cluster_client::ClusterClient::new(ch)
}

fn report(name: &str, mut lat: Vec<Duration>, elapsed: Duration, errors: u64) -> String {
    lat.sort();
    let p = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    format!(
        "| {name} | {} | {:.0} | {:.2} | {:.2} | {errors} |",
        lat.len(),
        lat.len() as f64 / elapsed.as_secs_f64(),
        p(0.50).as_secs_f64() * 1e3,
        p(0.99).as_secs_f64() * 1e3
    )
}

/// Numbers keys across rounds: every write creates a new object.
static SEQ: AtomicU64 = AtomicU64::new(0);

async fn bench_skiff(hosts: &[String]) -> String {
    eprintln!("skiff writes: start");
    let value = vec![b'x'; VALUE];
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(SECONDS);
    let t0 = Instant::now();
    let mut tasks = vec![];
    for i in 0..CLIENTS {
        let mut c = skiff_client(&hosts[i % hosts.len()]).await;
        let (value, errors) = (value.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = vec![];
            while Instant::now() < deadline {
                let n = SEQ.fetch_add(1, Ordering::Relaxed);
                let op = pb::ObjectOp {
                    action: "create".into(),
                    kind: "bench".into(),
                    name: format!("k{n}"),
                    spec: value.clone(),
                    ..Default::default()
                };
                let s = Instant::now();
                match c
                    .propose(pb::ProposeRequest {
                        request_id: String::new(),
                        ops: vec![op],
                    })
                    .await
                {
                    Ok(_) => lat.push(s.elapsed()),
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("skiff write error: {}", e.message());
                        }
                    }
                }
            }
            lat
        }));
    }
    let mut all = vec![];
    for t in tasks {
        all.extend(t.await.expect("client"));
    }
    report(
        "skiff (3 managers)",
        all,
        t0.elapsed(),
        errors.load(Ordering::Relaxed),
    )
}

fn b64(data: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

struct Etcd {
    children: Vec<Child>,
    _dir: tempfile::TempDir,
    pub client_ports: Vec<u16>,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start_etcd(base: &std::path::Path) -> Etcd {
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let cports: Vec<u16> = (0..3).map(|_| harness::free_port()).collect();
    let pports: Vec<u16> = (0..3).map(|_| harness::free_port()).collect();
    let initial = (0..3)
        .map(|i| format!("e{i}=http://127.0.0.1:{}", pports[i]))
        .collect::<Vec<_>>()
        .join(",");
    let mut children = vec![];
    for i in 0..3 {
        let log = std::fs::File::create(dir.path().join(format!("e{i}.log"))).expect("log");
        children.push(
            Command::new("etcd")
                .args(["--name", &format!("e{i}"), "--data-dir"])
                .arg(dir.path().join(format!("e{i}")))
                .args([
                    "--listen-client-urls",
                    &format!("http://127.0.0.1:{}", cports[i]),
                ])
                .args([
                    "--advertise-client-urls",
                    &format!("http://127.0.0.1:{}", cports[i]),
                ])
                .args([
                    "--listen-peer-urls",
                    &format!("http://127.0.0.1:{}", pports[i]),
                ])
                .args([
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{}", pports[i]),
                ])
                .args([
                    "--initial-cluster",
                    &initial,
                    "--initial-cluster-state",
                    "new",
                    "--initial-cluster-token",
                    "bench",
                ])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("etcd (apt-get install etcd-server)"),
        );
    }
    Etcd {
        children,
        _dir: dir,
        client_ports: cports,
    }
}

/// One keep-alive HTTP/1.1 connection to etcd's JSON gateway.
struct EtcdConn {
    r: tokio::io::BufReader<tokio::net::TcpStream>,
}

impl EtcdConn {
    async fn put(&mut self, key: &str, value: &str) -> Result<(), String> {
        let body = format!(
            "{{\"key\":\"{}\",\"value\":\"{}\"}}",
            b64(key.as_bytes()),
            value
        );
        let req = format!("POST /v3/kv/put HTTP/1.1\r\nHost: etcd\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        self.r
            .get_mut()
            .write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut status = String::new();
        self.r
            .read_line(&mut status)
            .await
            .map_err(|e| e.to_string())?;
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            self.r.read_line(&mut h).await.map_err(|e| e.to_string())?;
            if h == "\r\n" || h.is_empty() {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut b = vec![0; len];
        self.r.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        if status.contains(" 200 ") {
            Ok(())
        } else {
            Err(status)
        }
    }
}

async fn bench_etcd(ports: &[u16]) -> String {
    let value = b64(&vec![b'x'; VALUE]);
    let errors = Arc::new(AtomicU64::new(0));
    // Wait for a leader: a put succeeds.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = tokio::net::TcpStream::connect(("127.0.0.1", ports[0])).await {
            let mut c = EtcdConn {
                r: tokio::io::BufReader::new(s),
            };
            if c.put("warmup", &value).await.is_ok() {
                break;
            }
        }
        assert!(Instant::now() < deadline, "etcd did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(SECONDS);
    let t0 = Instant::now();
    let mut tasks = vec![];
    for i in 0..CLIENTS {
        let s = tokio::net::TcpStream::connect(("127.0.0.1", ports[i % ports.len()]))
            .await
            .expect("connect etcd");
        s.set_nodelay(true).expect("nodelay");
        let mut c = EtcdConn {
            r: tokio::io::BufReader::new(s),
        };
        let (value, errors) = (value.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = vec![];
            while Instant::now() < deadline {
                let n = SEQ.fetch_add(1, Ordering::Relaxed);
                let s = Instant::now();
                match c.put(&format!("k{n}"), &value).await {
                    Ok(()) => lat.push(s.elapsed()),
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            lat
        }));
    }
    let mut all = vec![];
    for t in tasks {
        all.extend(t.await.expect("client"));
    }
    report(
        "etcd 3.4 (3 members, JSON gateway)",
        all,
        t0.elapsed(),
        errors.load(Ordering::Relaxed),
    )
}

/// CPU time (clock ticks) the processes used so far.
fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter_map(|st| {
            // Fields after the command name (which may hold spaces): utime is the 14th
            // field of the line, stime the 15th.
            let rest = st.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

/// Waits (up to 30 s) until both systems are idle, so neither one's background work (a
/// snapshot, compaction) runs during the other's write phase.
fn quiesce(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = cpu_ticks(pids);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        let now = cpu_ticks(pids);
        // Under 10% of one core (100 ticks per second).
        if now - last < 5 {
            return;
        }
        last = now;
    }
    eprintln!("warning: the clusters did not go idle within 30 s");
}

fn leader_index(ms: &[Member]) -> usize {
    for m in ms.iter().filter(|m| m.pid().is_some()) {
        let o = m.try_cmd(&["cluster", "info"]);
        if let Some(l) = o.stdout.lines().find_map(|l| l.strip_prefix("Leader: ")) {
            if let Some(i) = ms
                .iter()
                .position(|x| x.pid().is_some() && x.node_id() == l.trim())
            {
                return i;
            }
        }
    }
    panic!("no leader");
}

#[test]
#[ignore]
fn bench_writes_vs_etcd_and_failover() {
    common::require_root();
    // State on a disk that really syncs (the default), or e.g. BENCH_DIR=/tmp for tmpfs.
    let base =
        std::path::PathBuf::from(std::env::var("BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into()));
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(2);
    let parts = std::env::var("BENCH_PARTS").unwrap_or_else(|_| "skiff,etcd,failover".into());
    let m1 = Member::start_in(&base, true, None);
    let p1 = m1.port.expect("port");
    let t = m1
        .cmd(&["cluster", "join-token", "-q", "manager"])
        .trim()
        .to_string();
    let mut ms = vec![
        m1,
        Member::start_in(&base, true, Some((p1, t.clone()))),
        Member::start_in(&base, true, Some((p1, t))),
    ];
    let hosts: Vec<String> = ms.iter().map(|m| m.host()).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Both clusters run throughout; their write phases alternate, so both see the same
    // machine (other load on it comes and goes).
    let etcd = parts.contains("etcd").then(|| start_etcd(&base));
    println!(
        "state under {} ({} clients, {VALUE}-byte values, {SECONDS} s per phase)",
        base.display(),
        CLIENTS
    );
    println!("| round | system | writes | writes/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|---|---|");
    let mut pids: Vec<u32> = ms.iter().filter_map(|m| m.pid()).collect();
    if let Some(e) = &etcd {
        pids.extend(e.children.iter().map(|c| c.id()));
    }
    for round in 1..=rounds {
        if parts.contains("skiff") {
            quiesce(&pids);
            println!("| {round} {}", rt.block_on(bench_skiff(&hosts)));
        }
        if let Some(e) = &etcd {
            quiesce(&pids);
            println!("| {round} {}", rt.block_on(bench_etcd(&e.client_ports)));
        }
    }
    drop(etcd);
    let save_logs = |ms: &[Member]| {
        if let Ok(dir) = std::env::var("BENCH_LOGS") {
            for (i, m) in ms.iter().enumerate() {
                let _ = std::fs::write(format!("{dir}/manager-{i}.log"), m.log());
            }
        }
    };
    if !parts.contains("failover") {
        save_logs(&ms);
        return;
    }

    // Failover: kill -9 the leader, time to the first committed write elsewhere.
    let mut times = vec![];
    for _ in 0..10 {
        let li = leader_index(&ms);
        let other = (li + 1) % 3;
        // A client already connected to a surviving manager, so the time is the cluster's
        // and not a CLI process starting (which took 10-30 ms a try and blurred the figure).
        let mut client = rt.block_on(skiff_client(&ms[other].host()));
        ms[li].kill9();
        let t0 = Instant::now();
        rt.block_on(async {
            loop {
                let n = SEQ.fetch_add(1, Ordering::Relaxed);
                let op = pb::ObjectOp {
                    action: "create".into(),
                    kind: "bench".into(),
                    name: format!("failover{n}"),
                    spec: b"x".to_vec(),
                    ..Default::default()
                };
                let req = pb::ProposeRequest {
                    request_id: String::new(),
                    ops: vec![op],
                };
                match tokio::time::timeout(Duration::from_secs(1), client.propose(req)).await {
                    Ok(Ok(_)) => break,
                    _ => tokio::time::sleep(Duration::from_millis(2)).await,
                }
            }
        });
        times.push(t0.elapsed());
        eprintln!("failover round: {:?} (killed manager {li})", t0.elapsed());
        ms[li].restart();
        // Back, marked Ready, and caught up (a linearizable read on it succeeds), so each
        // round starts from a healthy cluster.
        harness::wait_until("manager back", Duration::from_secs(15), || {
            ms[li].try_cmd(&["node", "ls"]).code == 0
                && ms[other]
                    .cmd(&["node", "ls"])
                    .lines()
                    .filter(|l| l.contains("Ready"))
                    .count()
                    == 3
        });
    }
    save_logs(&ms);
    times.sort();
    println!(
        "failover (kill -9 leader → first committed write): median {:?}, min {:?}, max {:?}",
        times[5], times[0], times[9]
    );
}
