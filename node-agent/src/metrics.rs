//! Prometheus metrics on `metrics_addr` (agent.yaml) / `--metrics-addr`, off by default.
//!
//! Three sources, one registry:
//! - [`AgentMetrics`]: counted as things happen (container start latency, image pulls,
//!   task state changes reported by the executor);
//! - [`ContainerCollector`]: read on each scrape: containers by state, and per container
//!   CPU, memory, network, block I/O, pids and restarts from the same cgroup sampler as
//!   `skiff stats` (no background sampling: an idle agent does no metrics work);
//! - the controller's metrics (`skiff_controller::metrics`) on managers.
//!
//! [`serve`] answers `GET /metrics` over plain HTTP/1.1 (hyper), in the Prometheus text
//! format or OpenMetrics when the scraper asks for it. Metrics name containers and their
//! labels: bind it to loopback or a private interface.

use crate::containers::Containers;
pub use crate::counters::AgentMetrics;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use skiff_runtime::cgroup::stats::Sample;
use skiff_runtime::container::Status;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// Everything the endpoint exposes.
pub fn registry(
    containers: Arc<Containers>,
    cluster: Option<Arc<skiff_controller::cluster::Cluster>>,
) -> Registry {
    let mut reg = Registry::default();
    let m = containers.metrics.clone();
    reg.register(
        "skiff_agent",
        "The agent's version",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
    );
    reg.register_with_unit(
        "skiff_container_start_duration",
        "Time to start a container (shim spawn to process running)",
        Unit::Seconds,
        m.start_duration.clone(),
    );
    reg.register(
        "skiff_image_pulls",
        "Image pulls from registries by result",
        m.image_pulls.clone(),
    );
    reg.register(
        "skiff_task_state_changes",
        "Task states this node recorded, by the new state",
        m.task_state_changes.clone(),
    );
    reg.register_collector(Box::new(ContainerCollector { containers }));
    if let Some(c) = cluster {
        c.metrics.clone().register(c, &mut reg);
    }
    reg
}

/// Reads containers and their cgroups on each scrape.
pub struct ContainerCollector {
    containers: Arc<Containers>,
}

impl std::fmt::Debug for ContainerCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerCollector").finish_non_exhaustive()
    }
}

/// One container's reading for a scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// `id`, `name`, `image`, and `service`/`task`/`stack` when the container has them.
    pub labels: Vec<(&'static str, String)>,
    pub restarts: u64,
    /// Usage, for running containers only.
    pub sample: Option<Sample>,
}

const STATES: [Status; 7] = [
    Status::Created,
    Status::Running,
    Status::Paused,
    Status::Restarting,
    Status::Removing,
    Status::Exited,
    Status::Dead,
];

/// Swarm's labels that become metric labels (Docker's names, short label keys).
const LABELS: [(&str, &str); 3] = [
    ("service", crate::labels::LABEL_SERVICE),
    ("task", crate::labels::LABEL_TASK),
    ("stack", "com.docker.stack.namespace"),
];

/// Containers by state (every state, zeros included) and one reading per container.
pub fn read(containers: &Containers) -> (Vec<(&'static str, u64)>, Vec<Reading>) {
    let mut by_state: Vec<(&'static str, u64)> = STATES.iter().map(|s| (s.as_str(), 0)).collect();
    let host_mem = crate::stats::host_memory();
    let mut readings = Vec::new();
    for e in containers.list() {
        let st = e.state();
        if let Some(slot) = by_state.iter_mut().find(|(s, _)| *s == st.status.as_str()) {
            slot.1 += 1;
        }
        let rec = e.record();
        let mut labels = vec![
            ("id", e.id.clone()),
            ("name", rec.name.clone()),
            ("image", rec.config.image.clone()),
        ];
        for (short, key) in LABELS {
            if let Some(v) = rec.config.labels.get(key).filter(|v| !v.is_empty()) {
                labels.push((short, v.clone()));
            }
        }
        readings.push(Reading {
            labels,
            restarts: u64::from(st.restart_count),
            sample: crate::stats::sample_with(containers, &e, host_mem),
        });
    }
    (by_state, readings)
}

/// A family of per-container values; `None` skips that container.
fn per_container<T>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    counter: bool,
    readings: &[Reading],
    value: impl Fn(&Reading) -> Option<T>,
) -> Result<(), std::fmt::Error>
where
    T: prometheus_client::encoding::EncodeGaugeValue
        + prometheus_client::encoding::EncodeCounterValue,
{
    let kind = if counter {
        ConstCounter::new(0u64).metric_type()
    } else {
        ConstGauge::new(0i64).metric_type()
    };
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for r in readings {
        let Some(v) = value(r) else { continue };
        let labels: Vec<(&str, &str)> = r.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let fam = m.encode_family(&labels)?;
        if counter {
            ConstCounter::new(v).encode(fam)?;
        } else {
            ConstGauge::new(v).encode(fam)?;
        }
    }
    Ok(())
}

/// Writes one scrape's readings.
pub fn encode_readings(
    by_state: &[(&'static str, u64)],
    readings: &[Reading],
    mut enc: DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    {
        let mut m = enc.encode_descriptor(
            "skiff_containers",
            "Containers on this node by state",
            None,
            ConstGauge::new(0i64).metric_type(),
        )?;
        for (state, n) in by_state {
            let labels = [("state", *state)];
            ConstGauge::new(*n as i64).encode(m.encode_family(&labels)?)?;
        }
    }
    fn s(r: &Reading) -> Option<&Sample> {
        r.sample.as_ref()
    }
    per_container(
        &mut enc,
        "skiff_container_cpu_usage_seconds",
        "CPU time used by the container, all CPUs",
        true,
        readings,
        |r| s(r).map(|s| s.cpu_total_ns as f64 / 1e9),
    )?;
    per_container(
        &mut enc,
        "skiff_container_memory_usage_bytes",
        "Memory used by the container, page cache that can be dropped excluded (as docker stats)",
        false,
        readings,
        |r| s(r).map(|s| s.mem_usage),
    )?;
    per_container(
        &mut enc,
        "skiff_container_memory_limit_bytes",
        "The container's memory limit (the host's memory when unlimited)",
        false,
        readings,
        |r| s(r).map(|s| s.mem_limit),
    )?;
    per_container(
        &mut enc,
        "skiff_container_network_receive_bytes",
        "Bytes received on the container's interfaces (loopback excluded)",
        true,
        readings,
        |r| s(r).map(|s| s.net_rx),
    )?;
    per_container(
        &mut enc,
        "skiff_container_network_transmit_bytes",
        "Bytes sent on the container's interfaces (loopback excluded)",
        true,
        readings,
        |r| s(r).map(|s| s.net_tx),
    )?;
    per_container(
        &mut enc,
        "skiff_container_blkio_read_bytes",
        "Bytes read from block devices",
        true,
        readings,
        |r| s(r).map(|s| s.blk_read),
    )?;
    per_container(
        &mut enc,
        "skiff_container_blkio_write_bytes",
        "Bytes written to block devices",
        true,
        readings,
        |r| s(r).map(|s| s.blk_write),
    )?;
    per_container(
        &mut enc,
        "skiff_container_pids",
        "Processes and threads in the container",
        false,
        readings,
        |r| s(r).map(|s| s.pids),
    )?;
    per_container(
        &mut enc,
        "skiff_container_restarts",
        "Restarts by the container's restart policy",
        true,
        readings,
        |r| Some(r.restarts),
    )?;
    Ok(())
}

impl Collector for ContainerCollector {
    fn encode(&self, enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (by_state, readings) = read(&self.containers);
        encode_readings(&by_state, &readings, enc)
    }
}

/// How a scrape is answered: OpenMetrics when the scraper accepts it, else the
/// Prometheus text format (what curl and older scrapers get).
pub fn render(reg: &Registry, accept: &str) -> Result<(String, &'static str), std::fmt::Error> {
    let mut out = String::new();
    if accept.contains("application/openmetrics-text") {
        prometheus_client::encoding::text::encode(&mut out, reg)?;
        Ok((
            out,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ))
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut out, reg)?;
        Ok((
            out,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        ))
    }
}

/// At most this many scrape connections at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 32;

#[derive(Debug, thiserror::Error)]
#[error("metrics address {addr}: {source}")]
pub struct ServeError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// Binds `addr` and serves `/metrics` until the process ends; returns the bound address.
pub async fn serve(addr: SocketAddr, reg: Arc<Registry>) -> Result<SocketAddr, ServeError> {
    let err = |source| ServeError { addr, source };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(err)?;
    let local = listener.local_addr().map_err(err)?;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(
        async move {
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (stream, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let reg = reg.clone();
                tokio::spawn(
                    async move {
                        let svc = hyper::service::service_fn(move |req| {
                            let reg = reg.clone();
                            async move { Ok::<_, std::convert::Infallible>(handle(req, reg).await) }
                        });
                        let conn = hyper::server::conn::http1::Builder::new()
                            .timer(hyper_util::rt::TokioTimer::new())
                            .header_read_timeout(Duration::from_secs(10))
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "metrics connection ended");
                        }
                        drop(permit);
                    }
                    .instrument(tracing::debug_span!("metrics_conn", peer = %peer)),
                );
            }
        }
        .instrument(tracing::info_span!("metrics", addr = %local)),
    );
    tracing::info!(addr = %local, "metrics listening on http://{local}/metrics");
    Ok(local)
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn handle<B>(req: Request<B>, reg: Arc<Registry>) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return text(
            StatusCode::NOT_FOUND,
            "skiff agent: metrics are at /metrics\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics\n");
    }
    let accept = req
        .headers()
        .get(hyper::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    // Collecting reads cgroup and /proc files: keep it off the async workers.
    let started = std::time::Instant::now();
    let rendered = tokio::task::spawn_blocking(move || render(&reg, &accept)).await;
    match rendered {
        Ok(Ok((body, content_type))) => {
            tracing::debug!(
                bytes = body.len(),
                ms = started.elapsed().as_millis() as u64,
                "scrape"
            );
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(content_type),
            );
            r
        }
        Ok(Err(_)) | Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding metrics failed\n",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed(Vec<(&'static str, u64)>, Vec<Reading>);

    impl Collector for Fixed {
        fn encode(&self, enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            encode_readings(&self.0, &self.1, enc)
        }
    }

    fn fixture() -> Registry {
        let m = AgentMetrics::default();
        m.start_duration.observe(0.12);
        m.pull_done(true);
        m.pull_done(true);
        m.pull_done(false);
        m.task_state("running");
        let mut reg = Registry::default();
        reg.register_with_unit(
            "skiff_container_start_duration",
            "h",
            Unit::Seconds,
            m.start_duration.clone(),
        );
        reg.register("skiff_image_pulls", "h", m.image_pulls.clone());
        reg.register(
            "skiff_task_state_changes",
            "h",
            m.task_state_changes.clone(),
        );
        let running = Reading {
            labels: vec![
                ("id", "abc".into()),
                ("name", "web.1.x".into()),
                ("image", "busybox".into()),
                ("service", "web".into()),
            ],
            restarts: 2,
            sample: Some(Sample {
                cpu_total_ns: 1_500_000_000,
                mem_usage: 4096,
                mem_limit: 1 << 20,
                net_rx: 10,
                net_tx: 20,
                blk_read: 30,
                blk_write: 40,
                pids: 3,
                ..Default::default()
            }),
        };
        let stopped = Reading {
            labels: vec![("id", "def".into()), ("name", "old".into())],
            restarts: 0,
            sample: None,
        };
        reg.register_collector(Box::new(Fixed(
            vec![("running", 1), ("exited", 1), ("paused", 0)],
            vec![running, stopped],
        )));
        reg
    }

    #[test]
    fn prometheus_text_exposition() {
        let (out, ct) = render(&fixture(), "*/*").expect("render");
        assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
        for want in [
            "# TYPE skiff_container_start_duration_seconds histogram",
            "skiff_container_start_duration_seconds_bucket{le=\"0.16\"} 1",
            "skiff_container_start_duration_seconds_count 1",
            "skiff_image_pulls_total{result=\"success\"} 2",
            "skiff_image_pulls_total{result=\"failure\"} 1",
            "skiff_task_state_changes_total{state=\"running\"} 1",
            "skiff_containers{state=\"running\"} 1",
            "skiff_containers{state=\"paused\"} 0",
            "# TYPE skiff_container_cpu_usage_seconds_total counter",
            "skiff_container_cpu_usage_seconds_total{id=\"abc\",name=\"web.1.x\",image=\"busybox\",service=\"web\"} 1.5",
            "skiff_container_memory_usage_bytes{id=\"abc\",name=\"web.1.x\",image=\"busybox\",service=\"web\"} 4096",
            "skiff_container_memory_limit_bytes{id=\"abc\",",
            "skiff_container_network_receive_bytes_total{id=\"abc\",",
            "skiff_container_network_transmit_bytes_total{id=\"abc\",",
            "skiff_container_blkio_read_bytes_total{id=\"abc\",",
            "skiff_container_blkio_write_bytes_total{id=\"abc\",",
            "skiff_container_pids{id=\"abc\",",
            "skiff_container_restarts_total{id=\"abc\",name=\"web.1.x\",image=\"busybox\",service=\"web\"} 2",
            "skiff_container_restarts_total{id=\"def\",name=\"old\"} 0",
        ] {
            assert!(out.contains(want), "missing {want:?} in:\n{out}");
        }
        // A stopped container has no usage series, only its restart count.
        assert!(!out.contains("skiff_container_memory_usage_bytes{id=\"def\""));
        assert!(!out.contains("# EOF"), "classic text has no EOF marker");
    }

    #[test]
    fn openmetrics_when_asked() {
        let (out, ct) = render(
            &fixture(),
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )
        .expect("render");
        assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
        assert!(out.ends_with("# EOF\n"), "{out}");
        assert!(out.contains("# TYPE skiff_container_restarts counter"));
    }

    #[test]
    fn label_values_are_escaped() {
        let r = Reading {
            labels: vec![("id", "x".into()), ("name", "a\"b\\c\nd".into())],
            ..Default::default()
        };
        let mut reg = Registry::default();
        reg.register_collector(Box::new(Fixed(vec![], vec![r])));
        let (out, _) = render(&reg, "").expect("render");
        assert!(
            out.contains(r#"name="a\"b\\c\nd""#),
            "a hostile container name must not break the exposition:\n{out}"
        );
    }

    #[tokio::test]
    async fn serves_metrics_over_http() {
        let reg = Arc::new(fixture());
        let addr = serve("127.0.0.1:0".parse().expect("addr"), reg)
            .await
            .expect("serve");
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .expect("write");
            let mut out = String::new();
            s.read_to_string(&mut out).await.expect("read");
            out
        };
        let ok = get("/metrics").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("skiff_image_pulls_total"), "{ok}");
        let missing = get("/").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        // A busy port is a clear error.
        let taken = serve(addr, Arc::new(Registry::default()))
            .await
            .expect_err("port in use");
        assert!(taken.to_string().contains(&addr.to_string()), "{taken}");
    }
}
