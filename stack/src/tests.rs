//! Loader tests: each syntax form, interpolation, merging, caps, and the exact
//! `file:line:col: field: message` shape of errors and warnings.

use super::*;
use std::time::Duration;

struct Fx {
    dir: tempfile::TempDir,
    env: HashMap<String, String>,
}

impl Fx {
    fn new() -> Fx {
        Fx {
            dir: tempfile::tempdir().expect("tempdir"),
            env: HashMap::new(),
        }
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        std::fs::write(&p, text).expect("write");
        p
    }

    fn env(mut self, k: &str, v: &str) -> Fx {
        self.env.insert(k.into(), v.into());
        self
    }

    fn load(&self, files: &[&str]) -> Result<Loaded, StackError> {
        self.load_with(files, |_| {})
    }

    fn load_with(
        &self,
        files: &[&str],
        set: impl FnOnce(&mut LoadOptions),
    ) -> Result<Loaded, StackError> {
        let mut opts = LoadOptions {
            files: files.iter().map(|f| self.dir.path().join(f)).collect(),
            env: self.env.clone(),
            project_name: "app".into(),
            ..Default::default()
        };
        set(&mut opts);
        load(&opts)
    }

    /// An error message with the temp directory stripped.
    fn strip(&self, e: StackError) -> String {
        e.to_string()
            .replace(&format!("{}/", self.dir.path().display()), "")
    }

    fn ok(&self, text: &str) -> Loaded {
        self.file("app.yaml", text);
        match self.load(&["app.yaml"]) {
            Ok(l) => l,
            Err(e) => panic!("load failed: {e}"),
        }
    }

    /// The error, with the temp directory stripped so messages compare exactly.
    fn err(&self, text: &str) -> String {
        self.file("app.yaml", text);
        self.err_files(&["app.yaml"])
    }

    fn err_files(&self, files: &[&str]) -> String {
        match self.load(files) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e
                .to_string()
                .replace(&format!("{}/", self.dir.path().display()), ""),
        }
    }
}

fn svc<'a>(l: &'a Loaded, name: &str) -> &'a ServiceSpec {
    l.spec.services.get(name).expect("service exists")
}

fn warnings(l: &Loaded, dir: &Path) -> Vec<String> {
    l.warnings
        .iter()
        .map(|w| w.to_string().replace(&format!("{}/", dir.display()), ""))
        .collect()
}

#[test]
fn minimal_service_gets_swarm_defaults() {
    let fx = Fx::new();
    let l = fx.ok("services:\n  web:\n    image: busybox\n");
    let s = svc(&l, "web");
    assert_eq!(s.image, "busybox");
    assert_eq!(s.deploy.mode, ServiceMode::Replicated { replicas: 1 });
    assert_eq!(s.deploy.endpoint_mode, EndpointMode::Vip);
    assert_eq!(s.deploy.restart_policy, RestartPolicy::default());
    assert_eq!(s.deploy.update_config, UpdateConfig::default());
    assert_eq!(s.networks.keys().collect::<Vec<_>>(), vec!["default"]);
    let net = l
        .spec
        .networks
        .get("default")
        .expect("default network added");
    assert_eq!(
        (net.name.as_str(), net.driver.as_deref()),
        ("app_default", Some("overlay"))
    );
    assert_eq!(l.spec.name, "app");
    assert!(l.warnings.is_empty());
}

#[test]
fn command_and_entrypoint_forms() {
    let fx = Fx::new();
    let l = fx.ok(concat!(
        "services:\n  a:\n    image: busybox\n    command: sh -c 'echo \"hi there\"'\n    entrypoint: [\"/bin/env\", \"-i\"]\n",
        "  b:\n    image: busybox\n    entrypoint: []\n    command: [echo, 1, true]\n",
    ));
    assert_eq!(
        svc(&l, "a").command,
        Some(vec!["sh".into(), "-c".into(), "echo \"hi there\"".into()])
    );
    assert_eq!(
        svc(&l, "a").entrypoint,
        Some(vec!["/bin/env".into(), "-i".into()])
    );
    assert_eq!(svc(&l, "b").entrypoint, Some(vec![]));
    assert_eq!(
        svc(&l, "b").command,
        Some(vec!["echo".into(), "1".into(), "true".into()])
    );
    assert_eq!(
        fx.err("services:\n  a:\n    image: busybox\n    command: echo 'oops\n"),
        "app.yaml:4:14: services.a.command: unbalanced quotes in \"echo 'oops\""
    );
}

#[test]
fn environment_list_and_map_normalise_to_a_sorted_list() {
    let fx = Fx::new().env("FROM_SHELL", "shell");
    let l = fx.ok(concat!(
        "services:\n",
        "  a:\n    image: busybox\n    environment: [B=2, A=1, FROM_SHELL, UNSET, EMPTY=]\n",
        "  b:\n    image: busybox\n    environment:\n      N: 1\n      T: true\n      FROM_SHELL:\n      S: \"x y\"\n",
    ));
    assert_eq!(
        svc(&l, "a").environment,
        vec!["A=1", "B=2", "EMPTY=", "FROM_SHELL=shell", "UNSET"]
    );
    assert_eq!(
        svc(&l, "b").environment,
        vec!["FROM_SHELL=shell", "N=1", "S=x y", "T=true"]
    );
}

#[test]
fn env_file_is_read_relative_to_the_stack_file_and_environment_wins() {
    let fx = Fx::new();
    fx.file(
        "conf/web.env",
        "# comment\nA=from-file\nB='quoted # not a comment'\nC=1\n",
    );
    fx.file("conf/extra.env", "C=2\n");
    let l = fx.ok(concat!(
        "services:\n  web:\n    image: busybox\n",
        "    env_file: [conf/web.env, {path: conf/extra.env}, {path: conf/missing.env, required: false}]\n",
        "    environment: {A: from-yaml}\n",
    ));
    assert_eq!(
        svc(&l, "web").environment,
        vec!["A=from-yaml", "B=quoted # not a comment", "C=2"]
    );
    let e = fx.err("services:\n  web:\n    image: busybox\n    env_file: nope.env\n");
    assert!(
        e.starts_with("app.yaml:4:15: services.web.env_file: cannot read env file"),
        "{e}"
    );
    fx.file("bad.env", "A=1\nB=\"open\n");
    let e = fx.err("services:\n  web:\n    image: busybox\n    env_file: bad.env\n");
    assert_eq!(
        e,
        "bad.env:2:1: services.web.env_file: unterminated double quote"
    );
}

#[test]
fn short_port_syntax() {
    let p = |s: &str| convert::parse_short_port(s).expect("valid port");
    let one = |target, published: Option<u16>, protocol| PortConfig {
        target,
        published,
        protocol,
        ..Default::default()
    };
    assert_eq!(p("80"), vec![one(80, None, Protocol::Tcp)]);
    assert_eq!(p("8080:80"), vec![one(80, Some(8080), Protocol::Tcp)]);
    assert_eq!(p("8080:80/udp"), vec![one(80, Some(8080), Protocol::Udp)]);
    assert_eq!(
        p("9090-9091:8080-8081"),
        vec![
            one(8080, Some(9090), Protocol::Tcp),
            one(8081, Some(9091), Protocol::Tcp)
        ]
    );
    assert_eq!(p("3000-3002").len(), 3);
    let local = p("127.0.0.1:80:80");
    assert_eq!(
        (local[0].host_ip.as_deref(), local[0].published),
        (Some("127.0.0.1"), Some(80))
    );
    assert_eq!(p("127.0.0.1::80")[0].published, None);
    // An empty host IP (an unset `${BIND_IP}:8080:80`) means every address.
    assert_eq!(p(":8080:80")[0].host_ip, None);
    assert_eq!(p(":8080:80")[0].published, Some(8080));
    assert_eq!(p("[::1]:8080:80")[0].host_ip.as_deref(), Some("::1"));
    for bad in [
        "",
        "70000:80",
        "0",
        "a:80",
        "1-2:3-5",
        "80/icmp",
        "1.2.3:80:80",
        "::1:80:80",
        "90-80",
    ] {
        assert!(convert::parse_short_port(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn ports_long_syntax_and_errors() {
    let fx = Fx::new();
    let l = fx.ok(concat!(
        "services:\n  web:\n    image: busybox\n    ports:\n      - 80\n",
        "      - target: 443\n        published: \"8443\"\n        protocol: tcp\n        mode: host\n        name: https\n",
        "      - {target: 53, protocol: udp}\n",
    ));
    let ports = &svc(&l, "web").ports;
    assert_eq!(ports.len(), 3);
    assert_eq!(
        ports[0],
        PortConfig {
            target: 80,
            ..Default::default()
        }
    );
    assert_eq!(
        ports[1],
        PortConfig {
            target: 443,
            published: Some(8443),
            mode: PortMode::Host,
            name: Some("https".into()),
            ..Default::default()
        }
    );
    assert_eq!(
        (ports[2].protocol, ports[2].published),
        (Protocol::Udp, None)
    );
    assert_eq!(
        fx.err("services:\n  web:\n    image: busybox\n    ports:\n      - {target: 80, mode: bridge}\n"),
        "app.yaml:5:28: services.web.ports[0].mode: invalid mode \"bridge\" (expected ingress or host)"
    );
    assert_eq!(
        fx.err("services:\n  web:\n    image: busybox\n    ports: [\"8080:80\", \"8080:81\"]\n"),
        "app.yaml:4:24: services.web.ports[1]: port 8080/tcp is published twice"
    );
    assert_eq!(
        fx.err("services:\n  web:\n    image: busybox\n    ports:\n      - \"99999:80\"\n"),
        "app.yaml:5:9: services.web.ports[0]: invalid port \"99999\""
    );
}

#[test]
fn volumes_short_and_long_syntax() {
    let fx = Fx::new().env("HOME", "/home/me");
    let l = fx.ok(concat!(
        "services:\n  web:\n    image: busybox\n    volumes:\n",
        "      - data:/data\n",
        "      - ./site:/www:ro\n",
        "      - ~/cache:/cache\n",
        "      - /var/log\n",
        "      - /etc/x:/x:ro,rshared,z\n",
        "      - /anon:ro\n",
        "      - {type: tmpfs, target: /tmp, tmpfs: {size: 64m, mode: 01777}}\n",
        "      - {type: volume, source: data, target: /copy, read_only: true, volume: {nocopy: true}}\n",
        "      - {type: bind, source: ../up, target: /up, bind: {create_host_path: true}}\n",
        "volumes:\n  data:\n",
    ));
    let dir = fx.dir.path().to_string_lossy().into_owned();
    let m = &svc(&l, "web").volumes;
    assert_eq!(
        m[0],
        Mount {
            kind: MountKind::Volume,
            source: Some("data".into()),
            target: "/data".into(),
            ..Default::default()
        }
    );
    assert_eq!(
        (m[1].kind, m[1].source.clone(), m[1].read_only),
        (MountKind::Bind, Some(format!("{dir}/site")), true)
    );
    assert_eq!(m[2].source.as_deref(), Some("/home/me/cache"));
    assert_eq!(
        (m[3].kind, m[3].source.as_deref(), m[3].target.as_str()),
        (MountKind::Volume, None, "/var/log")
    );
    assert_eq!(
        m[4].bind.as_ref().and_then(|b| b.propagation.as_deref()),
        Some("rshared")
    );
    assert_eq!(
        m[4].bind.as_ref().and_then(|b| b.selinux.as_deref()),
        Some("z")
    );
    assert_eq!(
        (m[5].target.as_str(), m[5].read_only, m[5].source.as_deref()),
        ("/anon", true, None)
    );
    assert_eq!(
        m[6].tmpfs,
        Some(TmpfsOptions {
            size: Some(64 << 20),
            mode: Some(0o1777)
        })
    );
    assert!(m[7].read_only && m[7].volume.as_ref().is_some_and(|v| v.nocopy));
    let parent = fx.dir.path().parent().expect("parent").join("up");
    assert_eq!(
        m[8].source.as_deref(),
        Some(parent.to_string_lossy().as_ref())
    );
    assert_eq!(
        l.spec.volumes.get("data").map(|v| v.name.as_str()),
        Some("app_data")
    );

    assert_eq!(
        fx.err("services:\n  web:\n    image: busybox\n    volumes: [\"nodata:/data\"]\n"),
        "app.yaml:4:15: services.web.volumes[0]: undefined volume \"nodata\" (declare it in the top-level volumes section)"
    );
    assert_eq!(
        fx.err("services:\n  web:\n    image: busybox\n    volumes: [\"/a:data\"]\n"),
        "app.yaml:4:15: services.web.volumes[0]: mount target \"data\" must be an absolute path"
    );
    assert_eq!(
        fx.err("services:\n  web:\n    image: busybox\n    volumes:\n      - type: tmpfs\n        source: x\n        target: /t\n"),
        "app.yaml:6:17: services.web.volumes[0].source: a tmpfs mount takes no source"
    );
}

#[test]
fn networks_list_and_map_forms() {
    let fx = Fx::new();
    let l = fx.ok(concat!(
        "services:\n",
        "  a:\n    image: busybox\n    networks: [front, back]\n",
        "  b:\n    image: busybox\n    networks:\n      back:\n        aliases: [db, database]\n        ipv4_address: 10.0.9.5\n      front:\n",
        "networks:\n  front:\n  back:\n    driver: overlay\n    attachable: true\n",
        "    ipam:\n      config:\n        - subnet: 10.0.9.0/24\n          gateway: 10.0.9.1\n",
    ));
    assert_eq!(
        svc(&l, "a").networks.keys().collect::<Vec<_>>(),
        vec!["back", "front"]
    );
    let b = &svc(&l, "b").networks["back"];
    assert_eq!(b.aliases, vec!["db", "database"]);
    assert_eq!(b.ipv4_address.as_deref(), Some("10.0.9.5"));
    assert!(
        !l.spec.networks.contains_key("default"),
        "no service uses the default network"
    );
    let back = &l.spec.networks["back"];
    assert!(back.attachable);
    let pool = &back.ipam.as_ref().expect("ipam").config[0];
    assert_eq!(
        (pool.subnet.as_deref(), pool.gateway.as_deref()),
        (Some("10.0.9.0/24"), Some("10.0.9.1"))
    );
    assert_eq!(
        fx.err("services:\n  a:\n    image: busybox\n    networks: [nope]\n"),
        "app.yaml:4:16: services.a.networks.nope: undefined network \"nope\" (declare it in the top-level networks section)"
    );
    assert_eq!(
        fx.err("services:\n  a:\n    image: busybox\nnetworks:\n  n:\n    ipam:\n      config: [{subnet: 10.0.0.0/40}]\n"),
        "app.yaml:7:25: networks.n.ipam.config[0].subnet: invalid CIDR \"10.0.0.0/40\" (expected e.g. 10.0.9.0/24)"
    );
}

#[test]
fn top_level_resources_external_names_and_conflicts() {
    let fx = Fx::new();
    fx.file("secret.txt", "s3cret");
    let l = fx.ok(concat!(
        "services:\n  a:\n    image: busybox\n    networks: [ext, own]\n",
        "networks:\n  ext:\n    external: true\n  own:\n    name: custom-net\n    labels: [team=x]\n",
        "volumes:\n  v1:\n    external: true\n    name: shared\n  v2:\n    driver: local\n    labels: {a: b}\n",
        "secrets:\n  s1:\n    file: ./secret.txt\n  s2:\n    external: true\n",
        "configs:\n  c1:\n    content: hello\n",
    ));
    let n = &l.spec.networks;
    assert_eq!(
        (
            n["ext"].name.as_str(),
            n["ext"].external,
            n["ext"].driver.clone()
        ),
        ("ext", true, None)
    );
    assert_eq!(n["own"].name, "custom-net");
    assert_eq!(n["own"].labels.get("team").map(String::as_str), Some("x"));
    assert_eq!(
        (
            l.spec.volumes["v1"].name.as_str(),
            l.spec.volumes["v1"].external
        ),
        ("shared", true)
    );
    assert_eq!(l.spec.volumes["v2"].name, "app_v2");
    assert_eq!(
        l.spec.secrets["s1"].source,
        Source::File(fx.dir.path().join("secret.txt"))
    );
    assert_eq!(l.spec.secrets["s1"].name, "app_s1");
    assert_eq!(
        (
            l.spec.secrets["s2"].source.clone(),
            l.spec.secrets["s2"].name.as_str()
        ),
        (Source::External, "s2")
    );
    assert_eq!(l.spec.configs["c1"].source, Source::Content("hello".into()));
    assert_eq!(
        fx.err("services:\n  a:\n    image: busybox\nnetworks:\n  n:\n    external: true\n    driver: overlay\n"),
        "app.yaml:7:5: networks.n.driver: conflicting parameters \"external\" and \"driver\" specified"
    );
}

#[test]
fn healthcheck_forms_and_durations() {
    let fx = Fx::new();
    let l = fx.ok(concat!(
        "services:\n",
        "  a:\n    image: busybox\n    healthcheck:\n      test: curl -f localhost\n      interval: 1m30s\n      timeout: 500ms\n      retries: 3\n      start_period: 10s\n",
        "  b:\n    image: busybox\n    healthcheck:\n      test: [CMD, wget, -q, localhost]\n",
        "  c:\n    image: busybox\n    healthcheck:\n      disable: true\n",
        "  d:\n    image: busybox\n    healthcheck:\n      test: [NONE]\n    stop_grace_period: 1m\n    stop_signal: SIGINT\n",
    ));
    let a = svc(&l, "a").healthcheck.clone().expect("healthcheck");
    assert_eq!(a.test, vec!["CMD-SHELL", "curl -f localhost"]);
    assert_eq!(a.interval, Some(Duration::from_secs(90)));
    assert_eq!(a.timeout, Some(Duration::from_millis(500)));
    assert_eq!(
        (a.retries, a.start_period),
        (Some(3), Some(Duration::from_secs(10)))
    );
    assert_eq!(
        svc(&l, "b").healthcheck.as_ref().map(|h| h.test.len()),
        Some(4)
    );
    assert_eq!(
        svc(&l, "c").healthcheck.as_ref().map(|h| h.test.clone()),
        Some(vec!["NONE".to_string()])
    );
    assert_eq!(
        svc(&l, "d").stop_grace_period,
        Some(Duration::from_secs(60))
    );
    assert_eq!(svc(&l, "d").stop_signal.as_deref(), Some("SIGINT"));
    assert_eq!(
        fx.err("services:\n  a:\n    image: busybox\n    healthcheck:\n      test: [RUN, x]\n"),
        "app.yaml:5:13: services.a.healthcheck.test: expected a string, [\"CMD\", args...], [\"CMD-SHELL\", \"command\"] or [\"NONE\"]"
    );
    assert_eq!(
        fx.err("services:\n  a:\n    image: busybox\n    healthcheck:\n      interval: 10\n"),
        "app.yaml:5:17: services.a.healthcheck.interval: invalid duration \"10\": missing unit (e.g. 10s)"
    );
}

#[test]
fn depends_on_both_forms() {
    let fx = Fx::new();
    let l = fx.ok(concat!(
        "services:\n",
        "  web:\n    image: busybox\n    depends_on: [api]\n",
        "  api:\n    image: busybox\n    depends_on:\n      db:\n        condition: service_healthy\n        restart: true\n",
        "  db:\n    image: busybox\n",
    ));
    assert_eq!(
        svc(&l, "web").depends_on["api"].condition,
        DependsCondition::ServiceStarted
    );
    let d = &svc(&l, "api").depends_on["db"];
    assert_eq!(
        (d.condition, d.restart, d.required),
        (DependsCondition::ServiceHealthy, true, true)
    );
    assert_eq!(
        fx.err("services:\n  web:\n    image: busybox\n    depends_on: [cache]\n"),
        "app.yaml:4:18: services.web.depends_on.cache: undefined service \"cache\""
    );
}

#[test]
fn secrets_and_configs_default_targets_and_modes() {
    let fx = Fx::new();
    fx.file("pw.txt", "pw");
    fx.file("nginx.conf", "x");
    let l = fx.ok(concat!(
        "services:\n  web:\n    image: busybox\n",
        "    secrets:\n      - pw\n      - {source: pw, target: other, uid: \"33\", gid: \"33\", mode: 0440}\n",
        "    configs:\n      - conf\n      - {source: conf, target: /etc/nginx.conf, mode: 0o600}\n",
        "secrets:\n  pw:\n    file: pw.txt\n",
        "configs:\n  conf:\n    file: ./nginx.conf\n",
    ));
    let s = svc(&l, "web");
    assert_eq!(
        s.secrets[0],
        FileReference {
            source: "pw".into(),
            target: "/run/secrets/pw".into(),
            uid: "0".into(),
            gid: "0".into(),
            mode: 0o444
        }
    );
    assert_eq!(
        (
            s.secrets[1].target.as_str(),
            s.secrets[1].uid.as_str(),
            s.secrets[1].mode
        ),
        ("/run/secrets/other", "33", 0o440)
    );
    assert_eq!(s.configs[0].target, "/conf");
    assert_eq!(
        (s.configs[1].target.as_str(), s.configs[1].mode),
        ("/etc/nginx.conf", 0o600)
    );
    assert_eq!(
        fx.err("services:\n  web:\n    image: busybox\n    secrets: [nope]\n"),
        "app.yaml:4:15: services.web.secrets[0]: undefined secret \"nope\" (declare it in the top-level secrets section)"
    );
    // Secret files are read by a deploy, not by `stack config`.
    let l =
        fx.ok("services:\n  web:\n    image: busybox\nsecrets:\n  pw:\n    file: missing.txt\n");
    assert_eq!(
        l.spec.secrets["pw"].source,
        Source::File(
            fx.dir
                .path()
                .canonicalize()
                .expect("dir")
                .join("missing.txt")
        )
    );
    assert_eq!(
        fx.err("services:\n  web:\n    image: busybox\nsecrets:\n  pw:\n    labels: {a: b}\n"),
        "app.yaml:5:3: secrets.pw: needs a source: one of file, environment, content or external"
    );
}

#[test]
fn deploy_section_is_fully_typed() {
    let fx = Fx::new();
    let l = fx.ok(concat!(
        "services:\n  web:\n    image: busybox\n    deploy:\n",
        "      replicas: 4\n      endpoint_mode: dnsrr\n      labels: [com.example=1]\n",
        "      placement:\n        constraints: [node.role==manager, \"node.labels.zone != b\", engine.labels.disk==ssd]\n",
        "        preferences:\n          - spread: node.labels.zone\n        max_replicas_per_node: 2\n",
        "      resources:\n        limits: {cpus: \"0.5\", memory: 512M, pids: 100}\n        reservations: {cpus: 0.25, memory: 1g}\n",
        "      restart_policy: {condition: on-failure, delay: 10s, max_attempts: 3, window: 2m}\n",
        "      update_config: {parallelism: 2, delay: 5s, failure_action: rollback, monitor: 30s, max_failure_ratio: 0.3, order: start-first}\n",
        "      rollback_config: {parallelism: 0, failure_action: continue}\n",
        "  agent:\n    image: busybox\n    deploy:\n      mode: global\n",
    ));
    let d = &svc(&l, "web").deploy;
    assert_eq!(d.mode, ServiceMode::Replicated { replicas: 4 });
    assert_eq!(d.endpoint_mode, EndpointMode::Dnsrr);
    assert_eq!(d.labels.get("com.example").map(String::as_str), Some("1"));
    assert_eq!(
        d.placement.constraints,
        vec![
            Constraint {
                attribute: NodeAttribute::NodeRole,
                op: ConstraintOp::Eq,
                value: "manager".into()
            },
            Constraint {
                attribute: NodeAttribute::NodeLabel("zone".into()),
                op: ConstraintOp::Ne,
                value: "b".into()
            },
            Constraint {
                attribute: NodeAttribute::EngineLabel("disk".into()),
                op: ConstraintOp::Eq,
                value: "ssd".into()
            },
        ]
    );
    assert_eq!(
        d.placement.preferences,
        vec![Preference {
            spread: NodeAttribute::NodeLabel("zone".into())
        }]
    );
    assert_eq!(d.placement.max_replicas_per_node, Some(2));
    assert_eq!(
        d.resources.limits,
        Some(ResourceLimits {
            nano_cpus: Some(500_000_000),
            memory_bytes: Some(512 << 20),
            pids: Some(100)
        })
    );
    assert_eq!(
        d.resources.reservations,
        Some(ResourceReservations {
            nano_cpus: Some(250_000_000),
            memory_bytes: Some(1 << 30)
        })
    );
    assert_eq!(
        d.restart_policy,
        RestartPolicy {
            condition: RestartCondition::OnFailure,
            delay: Duration::from_secs(10),
            max_attempts: Some(3),
            window: Some(Duration::from_secs(120))
        }
    );
    assert_eq!(
        d.update_config,
        UpdateConfig {
            parallelism: 2,
            delay: Duration::from_secs(5),
            failure_action: FailureAction::Rollback,
            monitor: Duration::from_secs(30),
            max_failure_ratio: 0.3,
            order: UpdateOrder::StartFirst
        }
    );
    assert_eq!(
        (
            d.rollback_config.parallelism,
            d.rollback_config.failure_action
        ),
        (0, FailureAction::Continue)
    );
    assert_eq!(
        d.rollback_config.monitor,
        Duration::from_secs(5),
        "unset fields keep Swarm's defaults"
    );
    assert_eq!(svc(&l, "agent").deploy.mode, ServiceMode::Global);
}

#[test]
fn deploy_errors_name_the_field() {
    let fx = Fx::new();
    let base = "services:\n  web:\n    image: busybox\n    deploy:\n";
    let err = |tail: &str| fx.err(&format!("{base}{tail}"));
    assert_eq!(
        err("      replicas: three\n"),
        "app.yaml:5:17: services.web.deploy.replicas: expected an integer, found \"three\""
    );
    assert_eq!(
        err("      replicas: -1\n"),
        "app.yaml:5:17: services.web.deploy.replicas: expected a non-negative integer, found \"-1\""
    );
    assert_eq!(
        err("      mode: global\n      replicas: 2\n"),
        "app.yaml:6:17: services.web.deploy.replicas: replicas can only be used with replicated mode"
    );
    assert_eq!(
        err("      placement:\n        constraints: [node.rack==1]\n"),
        "app.yaml:6:23: services.web.deploy.placement.constraints[0]: unknown attribute \"node.rack\" (expected node.id, \
         node.hostname, node.role, node.platform.os, node.platform.arch, node.labels.NAME or engine.labels.NAME)"
    );
    assert_eq!(
        err("      placement:\n        constraints:\n          - node.role=manager\n"),
        "app.yaml:7:13: services.web.deploy.placement.constraints[0]: constraint \"node.role=manager\" has no == or != operator"
    );
    assert_eq!(
        err("      resources:\n        limits:\n          memory: lots\n"),
        "app.yaml:7:19: services.web.deploy.resources.limits.memory: invalid size \"lots\" (expected e.g. 512m, 1g, or a number of bytes)"
    );
    assert_eq!(
        err("      rollback_config:\n        failure_action: rollback\n"),
        "app.yaml:6:25: services.web.deploy.rollback_config.failure_action: invalid failure_action \"rollback\" (expected pause or continue)"
    );
    assert_eq!(
        err("      update_config:\n        max_failure_ratio: 2\n"),
        "app.yaml:6:28: services.web.deploy.update_config.max_failure_ratio: max_failure_ratio 2 is not between 0 and 1"
    );
    assert_eq!(
        err("      restart_policy:\n        condition: always\n"),
        "app.yaml:6:20: services.web.deploy.restart_policy.condition: invalid condition \"always\" (expected none, on-failure or any)"
    );
    assert_eq!(
        fx.err("services:\n  web:\n    image: busybox\n    ports: [\"80:80\"]\n    deploy:\n      endpoint_mode: dnsrr\n"),
        "app.yaml:4:12: services.web.ports[0]: a port published in ingress mode cannot be used with endpoint_mode dnsrr (use mode: host)"
    );
    assert_eq!(
        err("      mode: replicated-job\n"),
        "app.yaml:5:13: services.web.deploy.mode: jobs are not supported yet (expected replicated or global)"
    );
}

#[test]
fn unknown_keys_are_errors_with_a_suggestion() {
    let fx = Fx::new();
    assert_eq!(
        fx.err("services:\n  web:\n    imag: busybox\n"),
        "app.yaml:3:5: services.web.imag: unknown key \"imag\" (did you mean \"image\"?)"
    );
    assert_eq!(
        fx.err("services:\n  web:\n    image: busybox\n    deploy:\n      replica: 2\n"),
        "app.yaml:5:7: services.web.deploy.replica: unknown key \"replica\" (did you mean \"replicas\"?)"
    );
    assert_eq!(
        fx.err("services:\n  web:\n    image: busybox\nfoo: 1\n"),
        "app.yaml:4:1: foo: unknown key \"foo\""
    );
    assert_eq!(
        fx.err("services:\n  web:\n    command: x\n"),
        "app.yaml:2:3: services.web: has neither an image nor a build context specified (if this file only overrides another, load it after that one: -c BASE -c OVERRIDE)"
    );
}

#[test]
fn keys_without_meaning_for_a_stack_warn_once_each() {
    let fx = Fx::new();
    let l = fx.ok(concat!(
        "services:\n  web:\n    image: busybox\n    build: ./web\n    restart: always\n    container_name: web1\n",
        "    links: [db]\n    privileged: true\n",
        "  db:\n    image: busybox\n    build:\n      context: .\n",
    ));
    assert_eq!(
        warnings(&l, fx.dir.path()),
        vec![
            "app.yaml:6:5: services.web.container_name: ignoring unsupported option container_name: task containers are named after their service",
            "app.yaml:7:5: services.web.links: ignoring unsupported option links: services on the same network reach each other by name",
        ]
    );
}

#[test]
fn extensions_are_ignored_everywhere() {
    let fx = Fx::new();
    let l = fx.ok(concat!(
        "x-anything: {whatever: [1, 2], bad: \"${}\"}\n",
        "services:\n  web:\n    image: busybox\n    x-note: hi\n    deploy:\n      x-custom: 1\n",
        "networks:\n  n:\n    x-meta: 1\n",
    ));
    assert!(l.warnings.is_empty());
    assert!(l.spec.services.contains_key("web"));
}

#[test]
fn anchors_and_merge_keys() {
    let fx = Fx::new();
    let l = fx.ok(concat!(
        "x-common: &common\n  image: busybox\n  environment: [A=1]\n  deploy: &deploy\n    replicas: 2\n",
        "x-labels: &labels\n  tier: back\n",
        "services:\n",
        "  a:\n    <<: *common\n",
        "  b:\n    <<: *common\n    image: other\n    labels:\n      <<: [*labels, {tier: ignored, extra: x}]\n      own: y\n",
        "  c:\n    image: busybox\n    deploy: *deploy\n",
    ));
    assert_eq!(svc(&l, "a").image, "busybox");
    assert_eq!(svc(&l, "a").environment, vec!["A=1"]);
    assert_eq!(
        svc(&l, "a").deploy.mode,
        ServiceMode::Replicated { replicas: 2 }
    );
    assert_eq!(
        svc(&l, "b").image,
        "other",
        "explicit keys win over merged ones"
    );
    let labels: Vec<(&str, &str)> = svc(&l, "b")
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(labels, vec![("extra", "x"), ("own", "y"), ("tier", "back")]);
    assert_eq!(
        svc(&l, "c").deploy.mode,
        ServiceMode::Replicated { replicas: 2 }
    );
    // An error inside an anchored block points at the anchor's text.
    assert_eq!(
        fx.err(
            "x-d: &d\n  replicas: many\nservices:\n  web:\n    image: busybox\n    deploy: *d\n"
        ),
        "app.yaml:2:13: services.web.deploy.replicas: expected an integer, found \"many\""
    );
    assert_eq!(
        fx.err("services:\n  web:\n    <<: 3\n"),
        "app.yaml:3:9: merge key << expects a mapping or a sequence of mappings"
    );
}

#[test]
fn interpolation_in_files() {
    let fx = Fx::new()
        .env("TAG", "1.2")
        .env("REPLICAS", "3")
        .env("EMPTY", "");
    let l = fx.ok(concat!(
        "services:\n  web:\n    image: busybox:${TAG}\n",
        "    command: [\"sh\", \"-c\", \"echo $$HOME $${X} costs $$5\"]\n",
        "    environment:\n      A: $TAG\n      B: ${MISSING:-dflt}\n      C: ${EMPTY-kept}\n      D: ${EMPTY:-replaced}\n",
        "      E: ${NOT_SET}\n",
        "    deploy:\n      replicas: ${REPLICAS}\n",
    ));
    let s = svc(&l, "web");
    assert_eq!(s.image, "busybox:1.2");
    assert_eq!(
        s.command.as_ref().map(|c| c[2].as_str()),
        Some("echo $HOME ${X} costs $5")
    );
    assert_eq!(
        s.environment,
        vec!["A=1.2", "B=dflt", "C=", "D=replaced", "E="]
    );
    assert_eq!(s.deploy.mode, ServiceMode::Replicated { replicas: 3 });
    assert_eq!(
        warnings(&l, fx.dir.path()),
        vec!["app.yaml:10:10: services.web.environment.E: the \"NOT_SET\" variable is not set; defaulting to a blank string"]
    );
    assert_eq!(
        fx.err("services:\n  web:\n    image: ${IMAGE:?set IMAGE to the image to run}\n"),
        "app.yaml:3:12: services.web.image: required variable \"IMAGE\" is missing a value: set IMAGE to the image to run"
    );
    assert_eq!(
        fx.err("services:\n  web:\n    image: busybox\n    command: echo ${A B}\n"),
        "app.yaml:4:14: services.web.command: invalid interpolation format in \"echo ${A B}\": you may need to escape any $ with another $"
    );
    // A `$` that starts no variable is kept, as compose-go keeps it.
    let l = fx.ok("services:\n  web:\n    image: busybox\n    command: echo $(date) $1\n");
    assert_eq!(
        svc(&l, "web").command,
        Some(vec!["echo".into(), "$(date)".into(), "$1".into()])
    );
}

#[test]
fn dot_env_beside_the_first_file_is_overridden_by_the_process() {
    let fx = Fx::new().env("B", "from-process");
    fx.file(".env", "A=from-dotenv\nB=from-dotenv\n");
    let l =
        fx.ok("services:\n  web:\n    image: busybox\n    environment: [\"A=${A}\", \"B=${B}\"]\n");
    assert_eq!(
        svc(&l, "web").environment,
        vec!["A=from-dotenv", "B=from-process"]
    );
}

#[test]
fn two_files_merge_in_order() {
    let fx = Fx::new();
    fx.file(
        "base.yaml",
        concat!(
            "services:\n  web:\n    image: busybox:1\n    command: [httpd, -f]\n",
            "    environment: [A=1, B=1]\n    labels: {l1: a}\n",
            "    ports: [\"8080:80\", \"9000:9000\"]\n    volumes: [\"data:/data\", \"/host:/h\"]\n",
            "    deploy:\n      replicas: 2\n      placement:\n        constraints: [node.role==worker]\n",
            "  db:\n    image: busybox\n",
            "volumes:\n  data:\n",
        ),
    );
    fx.file(
        "over.yaml",
        concat!(
            "services:\n  web:\n    image: busybox:2\n    command: [sleep, \"1\"]\n",
            "    environment: {B: 2, C: 3}\n    labels: [l2=b]\n",
            "    ports:\n      - {target: 80, published: 8080, mode: host}\n      - \"7000:7000\"\n",
            "    volumes: [\"/other:/data\"]\n",
            "    deploy:\n      replicas: 5\n      placement:\n        constraints: [node.labels.zone==a, node.role==worker]\n",
        ),
    );
    let l = fx.load(&["base.yaml", "over.yaml"]).expect("merged load");
    let s = svc(&l, "web");
    assert_eq!(s.image, "busybox:2");
    assert_eq!(
        s.command,
        Some(vec!["sleep".into(), "1".into()]),
        "command is replaced, not appended"
    );
    assert_eq!(s.environment, vec!["A=1", "B=2", "C=3"]);
    assert_eq!(s.labels.len(), 2);
    let ports: Vec<(Option<u16>, u16, PortMode)> = s
        .ports
        .iter()
        .map(|p| (p.published, p.target, p.mode))
        .collect();
    assert_eq!(
        ports,
        vec![
            (Some(8080), 80, PortMode::Host),
            (Some(9000), 9000, PortMode::Ingress),
            (Some(7000), 7000, PortMode::Ingress)
        ]
    );
    let mounts: Vec<(&str, MountKind)> = s
        .volumes
        .iter()
        .map(|m| (m.target.as_str(), m.kind))
        .collect();
    assert_eq!(
        mounts,
        vec![("/data", MountKind::Bind), ("/h", MountKind::Bind)]
    );
    assert_eq!(s.deploy.mode, ServiceMode::Replicated { replicas: 5 });
    assert_eq!(
        s.deploy.placement.constraints.len(),
        2,
        "constraints appended without duplicates"
    );
    assert!(l.spec.services.contains_key("db"));
    // An error contributed by the override names the override file.
    fx.file(
        "bad-over.yaml",
        "services:\n  web:\n    deploy:\n      replicas: lots\n",
    );
    assert_eq!(
        fx.err_files(&["base.yaml", "bad-over.yaml"]),
        "bad-over.yaml:4:17: services.web.deploy.replicas: expected an integer, found \"lots\""
    );
}

#[test]
fn yaml_bomb_is_an_error_not_an_allocation() {
    let fx = Fx::new();
    let mut text = String::from("x-a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        text.push_str(&format!("x-a{i}: &a{i} [{refs}]\n"));
    }
    text.push_str("services:\n  web:\n    image: busybox\n    command: *a9\n");
    let e = fx.err(&text);
    assert!(
        e.contains("more than 200000 nodes") && e.contains("YAML bomb"),
        "{e}"
    );
    assert!(e.starts_with("app.yaml:"), "{e}");
}

#[test]
fn nesting_size_and_syntax_caps() {
    let fx = Fx::new();
    let deep = format!("services: {}{}\n", "[".repeat(100), "]".repeat(100));
    let e = fx.err(&deep);
    assert!(
        e.contains("nesting deeper than 64 levels") || e.contains("recursion limit"),
        "{e}"
    );
    let mut block = String::from("services:\n");
    for i in 0..100 {
        block.push_str(&format!("{}k{i}:\n", "  ".repeat(i + 1)));
    }
    block.push_str(&format!("{}x: 1\n", "  ".repeat(101)));
    let e = fx.err(&block);
    assert!(
        e.starts_with("app.yaml:65:") && e.ends_with("nesting deeper than 64 levels"),
        "{e}"
    );
    fx.file("huge.yaml", &"#".repeat((MAX_FILE_SIZE + 1) as usize));
    let e = fx.err_files(&["huge.yaml"]);
    assert!(e.contains("larger than the 4194304-byte limit"), "{e}");
    assert_eq!(
        fx.err("services:\n  web:\n    image: a\n    image: b\n"),
        "app.yaml:4:5: duplicate key \"image\" in mapping"
    );
    let e = fx.err("services:\n  web:\n    image: [unclosed\n");
    assert!(
        e.starts_with("app.yaml:4:1: invalid YAML:") || e.starts_with("app.yaml:3:"),
        "{e}"
    );
    assert_eq!(fx.err(""), "app.yaml:1:1: the file is empty");
    assert_eq!(
        fx.err("- a\n"),
        "app.yaml:1:1: expected a mapping at the top level, found a sequence"
    );
    assert_eq!(
        fx.err("services: {}\n"),
        "app.yaml:1:11: services: a stack needs at least one service"
    );
    assert_eq!(
        fx.err("a: 1\n---\nb: 2\n"),
        "app.yaml:2:1: a stack file must hold a single YAML document"
    );
    assert_eq!(
        fx.err("services:\n  web: !custom {}\n"),
        "app.yaml:2:8: unsupported YAML tag !custom"
    );
}

#[test]
fn printed_specs_load_back_to_the_same_spec() {
    let fx = Fx::new();
    fx.file("pw.txt", "pw");
    let text = concat!(
        "services:\n  web:\n    image: busybox\n    command: [httpd, -f]\n    ports: [\"8080:80\", {target: 53, protocol: udp, mode: host}]\n",
        "    volumes: [\"data:/data\", {type: tmpfs, target: /t, tmpfs: {size: 1m, mode: 0700}}]\n",
        "    secrets: [{source: pw, mode: 0400}]\n    healthcheck: {test: [CMD, true], interval: 1m30s}\n",
        "    deploy:\n      replicas: 3\n      placement: {constraints: [node.labels.a==b], preferences: [{spread: node.labels.zone}]}\n",
        "      resources: {limits: {cpus: \"1.5\", memory: 64m}}\n",
        "volumes:\n  data:\nsecrets:\n  pw:\n    file: pw.txt\n",
    );
    let first = fx.ok(text);
    fx.file("printed.yaml", &to_yaml(&first.spec));
    let again = fx.load(&["printed.yaml"]).expect("printed YAML loads");
    assert_eq!(again.spec, first.spec);
    assert!(again.warnings.is_empty(), "{:?}", again.warnings);
    let json: StackSpec = serde_json::from_str(&to_json(&first.spec)).expect("JSON parses back");
    assert_eq!(json, first.spec);
}

#[test]
fn stack_names_are_checked() {
    let fx = Fx::new();
    fx.file("app.yaml", "services:\n  web:\n    image: busybox\n");
    let e = load(&LoadOptions {
        files: vec![fx.dir.path().join("app.yaml")],
        env: HashMap::new(),
        project_name: "bad name".into(),
        ..Default::default()
    })
    .expect_err("invalid name");
    assert!(
        e.to_string().contains("invalid stack name \"bad name\""),
        "{e}"
    );
    assert!(matches!(
        load(&LoadOptions::default()),
        Err(StackError::NoFiles)
    ));
}

#[test]
fn hello_fixture_is_a_realistic_stack() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hello/app.yaml");
    let l = load(&LoadOptions {
        files: vec![path],
        env: HashMap::new(),
        project_name: "hello".into(),
        ..Default::default()
    })
    .expect("loads");
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let web = svc(&l, "web");
    assert_eq!(web.deploy.mode, ServiceMode::Replicated { replicas: 3 });
    assert_eq!(
        (web.ports[0].published, web.ports[0].target),
        (Some(8080), 80)
    );
    assert!(
        web.command
            .as_ref()
            .is_some_and(|c| c[2].contains("$(hostname)")),
        "$$ became $"
    );
    assert_eq!(
        web.deploy
            .resources
            .limits
            .as_ref()
            .and_then(|r| r.memory_bytes),
        Some(32 << 20)
    );
    assert!(web.healthcheck.is_some());
    let api = svc(&l, "api");
    assert_eq!(api.volumes[0].source.as_deref(), Some("pages"));
    assert_eq!(api.networks["backend"].aliases, vec!["backend-api"]);
    assert_eq!(l.spec.volumes["pages"].name, "hello_pages");
    assert_eq!(l.spec.networks["backend"].name, "hello_backend");
}

#[test]
fn yaml_writer_quotes_what_would_read_back_differently() {
    let v = serde_json::json!({
        "plain": "busybox:latest",
        "looks_bool": "true",
        "looks_yes": "yes",
        "looks_int": "0700",
        "looks_float": "1.5",
        "looks_null": "~",
        "empty": "",
        "colon_space": "a: b",
        "comment": "a #b",
        "lead_dash": "-f",
        "newline": "a\nb\t\"q\"",
        "unicode": "héllo",
        "n": 3,
        "f": 1.5,
        "b": false,
        "z": null,
        "list": ["x", {"k": "v", "k2": [1, []]}, [1, 2], {}],
        "nested": {"deeper": {"x": "y"}},
        "key: odd": 1
    });
    let text = crate::to_yaml_string(&v);
    assert!(text.contains("plain: busybox:latest\n"), "{text}");
    assert!(text.contains("looks_bool: \"true\"\n"), "{text}");
    let doc = crate::Document::parse(&text, Path::new("printed.yaml"))
        .expect("parses")
        .expect("not empty");
    assert_eq!(doc.to_json(), v, "{text}");
}

#[test]
fn yaml_documents_type_plain_scalars_and_locate_nodes() {
    let text = "a: 12\nb: \"12\"\nc: [true, 0x1f, -3, 1e3, ~, x]\nd:\n  e: f\n";
    let doc = crate::Document::parse(text, Path::new("f.yaml"))
        .expect("parses")
        .expect("not empty");
    assert_eq!(
        doc.to_json(),
        serde_json::json!({"a": 12, "b": "12", "c": [true, 31, -3, 1000.0, null, "x"], "d": {"e": "f"}})
    );
    let l = doc.location(&[crate::Step::Key("d"), crate::Step::Key("e")]);
    assert_eq!((l.line, l.col), (5, 6));
    let k = doc
        .key_location(&[crate::Step::Key("d")], "e")
        .expect("key");
    assert_eq!((k.line, k.col), (5, 3));
    assert!(crate::Document::parse("", Path::new("f.yaml"))
        .expect("empty")
        .is_none());
}

mod compose;
