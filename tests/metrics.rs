//! End-to-end metrics: an agent with `metrics_addr` on loopback runs a container and a
//! service; Debian's Prometheus server scrapes it, and a per-container series is
//! queried back through Prometheus's HTTP API.

mod common;
use common::Agent;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound then released).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// `GET path` on 127.0.0.1:port; the status code and body.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let out = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = out.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    // Prometheus answers small JSON documents; undo chunked encoding if used.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Some((code, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(len.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Percent-encodes a query parameter.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus server owned by the test: killed (and its storage removed with the
/// tempdir) on drop, also when an assertion fails.
struct Prometheus {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target_port: u16) -> Prometheus {
        let dir = tempfile::Builder::new()
            .prefix("skprom")
            .tempdir()
            .expect("tempdir");
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: skiff\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
            ),
        )
        .expect("prometheus.yml");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("run prometheus (deploy/deps.sh --test installs Debian's prometheus)");
        Prometheus { child, port, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `/api/v1/query` for an instant vector; the result array.
    fn query(&self, q: &str) -> Vec<serde_json::Value> {
        let Some((200, body)) = http_get(self.port, &format!("/api/v1/query?query={}", encode(q)))
        else {
            return vec![];
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn scrape(port: u16) -> String {
    match http_get(port, "/metrics") {
        Some((200, body)) => body,
        other => panic!("GET /metrics: {other:?}"),
    }
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn prometheus_scrapes_agent_and_container_metrics() {
    let mut a = Agent::start().with_busybox();
    let port = free_port();
    assert!(
        http_get(port, "/metrics").is_none(),
        "metrics are off by default"
    );
    a.restart_with_config(&format!("metrics_addr: 127.0.0.1:{port}\n"));

    let id = a
        .cmd(&[
            "run",
            "-d",
            "--name",
            "metrics-web",
            "busybox",
            "sh",
            "-c",
            "while :; do :; done",
        ])
        .stdout
        .trim()
        .to_string();
    a.cmd(&[
        "service",
        "create",
        "--name",
        "metrics-svc",
        "busybox",
        "sleep",
        "300",
    ]);
    a.wait_until("the service's task to run", Duration::from_secs(30), || {
        let body = scrape(port);
        body.contains("skiff_task_state_changes_total{state=\"running\"} 1")
            && body.lines().any(|l| {
                l.starts_with("skiff_container_memory_usage_bytes{")
                    && l.contains("service=\"metrics-svc\"")
            })
    });

    // The endpoint itself, in the Prometheus text format.
    let body = scrape(port);
    for want in [
        format!("skiff_container_cpu_usage_seconds_total{{id=\"{id}\",name=\"metrics-web\",image=\"busybox\"}}"),
        format!("skiff_container_memory_usage_bytes{{id=\"{id}\",name=\"metrics-web\""),
        format!("skiff_container_memory_limit_bytes{{id=\"{id}\""),
        format!("skiff_container_network_receive_bytes_total{{id=\"{id}\""),
        format!("skiff_container_blkio_read_bytes_total{{id=\"{id}\""),
        format!("skiff_container_restarts_total{{id=\"{id}\""),
        "skiff_containers{state=\"running\"} 2".to_string(),
        "skiff_container_start_duration_seconds_count 2".to_string(),
        "skiff_task_state_changes_total{state=\"running\"} 1".to_string(),
        "skiff_raft_is_leader 1".to_string(),
        "skiff_raft_term ".to_string(),
        "skiff_raft_proposal_duration_seconds_bucket".to_string(),
        "skiff_scheduling_delay_seconds_count 1".to_string(),
        "skiff_tasks{state=\"running\"} 1".to_string(),
        "skiff_nodes{status=\"ready\"} 1".to_string(),
    ] {
        assert!(body.contains(&want), "missing {want:?} in:\n{body}");
    }
    // A service task carries its service and task labels.
    assert!(
        body.lines()
            .any(|l| l.starts_with("skiff_container_memory_usage_bytes{")
                && l.contains("service=\"metrics-svc\"")
                && l.contains("task=\"")),
        "{body}"
    );
    assert_eq!(http_get(port, "/").map(|r| r.0), Some(404));

    // Debian's Prometheus scrapes it, and a per-container series comes back.
    let prom = Prometheus::start(port);
    let deadline = Instant::now() + Duration::from_secs(60);
    let q = "skiff_container_cpu_usage_seconds_total{name=\"metrics-web\"}";
    let series = loop {
        let r = prom.query(q);
        if !r.is_empty() {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus never returned {q}; prometheus log:\n{}",
            prom.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(series[0]["metric"]["id"], id.as_str(), "{series:?}");
    assert_eq!(series[0]["metric"]["job"], "skiff", "{series:?}");
    let cpu: f64 = series[0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("sample value");
    assert!(cpu > 0.0, "a busy loop uses CPU: {series:?}");
    // PromQL over our series works as on cAdvisor's: CPU rate of the busy container.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r =
            prom.query("rate(skiff_container_cpu_usage_seconds_total{name=\"metrics-web\"}[5s])");
        let rate: f64 = r
            .first()
            .and_then(|s| s["value"][1].as_str())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if rate > 0.05 {
            break;
        }
        assert!(Instant::now() < deadline, "no CPU rate: {r:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
    a.cmd(&["service", "rm", "metrics-svc"]);
}
