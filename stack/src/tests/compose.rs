//! The Compose Specification's loading rules: YAML 1.2 as compose-go reads it,
//! merge tags, `extends`, `include`, profiles, builds, Compose 2.x keys, and one test
//! per error case.

use super::*;

#[test]
fn yaml_1_1_booleans_load_with_a_warning_and_nonsense_is_a_type_error() {
    let fx = Fx::new();
    let l = fx.ok("services:\n  web:\n    image: busybox\n    tty: yes\n    read_only: off\n    environment:\n      DEBUG: yes\n");
    let s = svc(&l, "web");
    assert!(s.tty);
    assert!(!s.read_only);
    // In a string field, `yes` is the string "yes" (YAML 1.2), not a boolean.
    assert_eq!(s.environment, vec!["DEBUG=yes".to_string()]);
    assert_eq!(
        warnings(&l, fx.dir.path()),
        vec![
            "app.yaml:5:16: services.web.read_only: \"off\" for boolean is not supported by YAML 1.2, please use `false`",
            "app.yaml:4:10: services.web.tty: \"yes\" for boolean is not supported by YAML 1.2, please use `true`",
        ]
    );
    assert_eq!(
        fx.err("services:\n  web:\n    image: busybox\n    tty: maybe\n"),
        "app.yaml:4:10: services.web.tty: expected a boolean (true or false), found \"maybe\""
    );
}

#[test]
fn flow_lists_closed_at_the_key_indentation_load_as_go_yaml_reads_them() {
    let fx = Fx::new();
    let l = fx.ok("services:\n  web:\n    image: x\n    command: [\n      \"a\",\n      \"b\"\n    ]\n    labels: {\n      \"k\": \"v\"\n  }\n");
    assert_eq!(svc(&l, "web").command, Some(vec!["a".into(), "b".into()]));
    assert_eq!(
        svc(&l, "web").labels.get("k").map(String::as_str),
        Some("v")
    );
    // A badly indented block line is still an error, where it is.
    assert_eq!(
        fx.err("services:\n  web:\n    image: x\n   ports: []\n"),
        "app.yaml:4:4: invalid YAML: while parsing a block mapping, did not find expected key"
    );
}

#[test]
fn wrong_type_names_file_line_and_field() {
    let fx = Fx::new();
    assert_eq!(
        fx.err("services:\n  web:\n    image: busybox\n    ports: 80\n"),
        "app.yaml:4:12: services.web.ports: expected a list of ports, found \"80\""
    );
    assert_eq!(
        fx.err("services:\n  web:\n    image: [a]\n"),
        "app.yaml:3:12: services.web.image: expected a string, found a sequence"
    );
}

#[test]
fn duplicate_keys_and_sexagesimal_numbers_follow_yaml_1_2() {
    let fx = Fx::new();
    assert_eq!(
        fx.err("services:\n  web:\n    image: a\n    image: b\n"),
        "app.yaml:4:5: duplicate key \"image\" in mapping"
    );
    // 22:22 is a port mapping, not the base-60 number 1342 of YAML 1.1.
    let l = fx.ok("services:\n  ssh:\n    image: busybox\n    ports:\n      - 22:22\n");
    assert_eq!(svc(&l, "ssh").ports[0].published, Some(22));
}

#[test]
fn reset_and_override_tags_in_an_override_file() {
    let fx = Fx::new();
    fx.file(
        "app.yaml",
        "services:\n  web:\n    image: busybox\n    ports: ['8080:80']\n    environment: {A: '1', B: '2'}\n    command: [sleep, '1']\n",
    );
    fx.file(
        "override.yaml",
        "services:\n  web:\n    ports: !reset []\n    environment: !override {C: '3'}\n    command: !reset null\n",
    );
    let l = fx.load(&["app.yaml", "override.yaml"]).expect("loads");
    let s = svc(&l, "web");
    assert!(s.ports.is_empty());
    assert_eq!(s.environment, vec!["C=3".to_string()]);
    assert_eq!(s.command, None);
    // Unknown tags are still errors.
    assert_eq!(
        fx.err("services:\n  web:\n    image: !custom busybox\n"),
        "app.yaml:3:12: unsupported YAML tag !custom"
    );
}

#[test]
fn extends_in_the_same_file_and_from_another_directory() {
    let fx = Fx::new();
    fx.file(
        "common/base.yaml",
        "services:\n  base:\n    image: busybox\n    env_file: base.env\n    volumes: ['./data:/data']\n    environment: [A=1]\n",
    );
    fx.file("common/base.env", "FROM_BASE=yes\n");
    let l = fx.ok(concat!(
        "services:\n",
        "  web:\n    extends: {file: common/base.yaml, service: base}\n    environment: [B=2]\n",
        "  worker:\n    extends: web\n    command: work\n",
    ));
    let dir = fx.dir.path().canonicalize().expect("dir");
    let web = svc(&l, "web");
    assert_eq!(web.image, "busybox");
    assert_eq!(
        web.environment,
        vec!["A=1".to_string(), "B=2".into(), "FROM_BASE=yes".into()]
    );
    // The base's relative paths stay relative to the base's own directory.
    assert_eq!(
        web.volumes[0].source.as_deref(),
        Some(dir.join("common/data").to_str().expect("utf-8"))
    );
    let worker = svc(&l, "worker");
    assert_eq!(worker.command, Some(vec!["work".to_string()]));
    assert_eq!(worker.environment, web.environment);
}

#[test]
fn extends_loops_and_missing_bases_are_errors() {
    let fx = Fx::new();
    assert_eq!(
        fx.err(
            "services:\n  a:\n    image: x\n    extends: b\n  b:\n    image: x\n    extends: a\n"
        ),
        "app.yaml:4:14: services.a.extends: services extend each other in a loop: a -> b -> a"
    );
    assert_eq!(
        fx.err("services:\n  a:\n    image: x\n    extends: nope\n"),
        "app.yaml:4:14: services.a.extends: cannot extend service \"a\": service \"nope\" not found"
    );
}

#[test]
fn include_adds_resources_and_merges_local_definitions_over_them() {
    let fx = Fx::new();
    fx.file(
        "db/compose.yaml",
        "services:\n  db:\n    image: postgres:16\n    volumes: [data:/var/lib/postgresql/data, ./init:/docker-entrypoint-initdb.d]\n    environment: {PGPORT: '${PGPORT}'}\nvolumes:\n  data: {}\n",
    );
    fx.file("db/.env", "PGPORT=5433\n");
    let l = fx.ok("include:\n  - db/compose.yaml\nservices:\n  web:\n    image: busybox\n    depends_on: [db]\n");
    let dir = fx.dir.path().canonicalize().expect("dir");
    let db = svc(&l, "db");
    assert_eq!(db.environment, vec!["PGPORT=5433".to_string()]);
    assert_eq!(
        db.volumes[1].source.as_deref(),
        Some(dir.join("db/init").to_str().expect("utf-8"))
    );
    assert!(l.spec.volumes.contains_key("data"));
    // The including file's definition is merged over the included one (compose-go).
    let l = fx.ok("include:\n  - db/compose.yaml\nservices:\n  db:\n    image: postgres:17\n    environment: [TZ=UTC]\n");
    let db = svc(&l, "db");
    assert_eq!(db.image, "postgres:17");
    assert_eq!(
        db.environment,
        vec!["PGPORT=5433".to_string(), "TZ=UTC".to_string()]
    );
    assert_eq!(db.volumes.len(), 2);
    assert_eq!(
        fx.err("include:\n  - nope.yaml\nservices:\n  web:\n    image: busybox\n"),
        "app.yaml:2:5: include[0]: included file nope.yaml not found"
    );
}

#[test]
fn top_level_name_names_the_stack_unless_the_command_line_does() {
    let fx = Fx::new();
    fx.file("app.yaml", "name: shop\nservices:\n  web:\n    build: .\n");
    let l = fx
        .load_with(&["app.yaml"], |o| o.name_is_default = true)
        .expect("loads");
    assert_eq!(l.spec.name, "shop");
    assert_eq!(svc(&l, "web").image, "shop_web");
    let l = fx.load(&["app.yaml"]).expect("loads");
    assert_eq!(l.spec.name, "app");
    assert_eq!(svc(&l, "web").image, "app_web");
}

#[test]
fn profiles_enable_services() {
    let fx = Fx::new();
    fx.file(
        "app.yaml",
        concat!(
            "services:\n  web:\n    image: busybox\n",
            "  debug:\n    image: busybox\n    profiles: [debug]\n",
            "  tools:\n    image: busybox\n    profiles: [tools, debug]\n",
        ),
    );
    let names = |l: &Loaded| l.spec.services.keys().cloned().collect::<Vec<_>>();
    let l = fx.load(&["app.yaml"]).expect("loads");
    assert_eq!(names(&l), vec!["web"]);
    let l = fx
        .load_with(&["app.yaml"], |o| o.profiles = vec!["tools".into()])
        .expect("loads");
    assert_eq!(names(&l), vec!["tools", "web"]);
    let l = fx
        .load_with(&["app.yaml"], |o| o.profiles = vec!["*".into()])
        .expect("loads");
    assert_eq!(names(&l), vec!["debug", "tools", "web"]);
    let fx = fx.env("COMPOSE_PROFILES", "debug");
    let l = fx.load(&["app.yaml"]).expect("loads");
    assert_eq!(names(&l), vec!["debug", "tools", "web"]);
    let fx = Fx::new();
    assert_eq!(
        fx.err("services:\n  web:\n    image: x\n    depends_on: [db]\n  db:\n    image: x\n    profiles: [db]\n"),
        "app.yaml:4:18: services.web.depends_on.db: service \"db\" is not enabled: activate one of its profiles (db) with --profile"
    );
    let l = fx.ok("services:\n  web:\n    image: x\n    depends_on:\n      db: {condition: service_started, required: false}\n  db:\n    image: x\n    profiles: [db]\n");
    assert!(svc(&l, "web").depends_on.is_empty());
}

#[test]
fn build_short_and_long_forms() {
    let fx = Fx::new().env("FROM_ENV", "e");
    let dir = fx.dir.path().canonicalize().expect("dir");
    let l = fx.ok(concat!(
        "secrets:\n  npmrc:\n    file: ./npmrc\n",
        "services:\n",
        "  api:\n    build: ./api\n",
        "  web:\n    image: registry.local/web:1\n    build:\n      context: web\n      dockerfile: Dockerfile.prod\n",
        "      args: [VERSION=1.2, FROM_ENV, UNSET]\n      target: runtime\n      labels: {team: web}\n",
        "      network: host\n      secrets: [npmrc]\n      no_cache: true\n      tags: [web:latest]\n",
        "  inline:\n    build:\n      dockerfile_inline: |\n        FROM busybox\n        RUN echo hi\n",
    ));
    let api = svc(&l, "api");
    assert_eq!(api.image, "app_api");
    let b = api.build.as_ref().expect("build");
    assert_eq!(b.context, dir.join("api").to_str().expect("utf-8"));
    let web = svc(&l, "web");
    assert_eq!(web.image, "registry.local/web:1");
    let b = web.build.as_ref().expect("build");
    assert_eq!(b.dockerfile.as_deref(), Some("Dockerfile.prod"));
    assert_eq!(b.args["VERSION"].as_deref(), Some("1.2"));
    assert_eq!(b.args["FROM_ENV"].as_deref(), Some("e"));
    assert_eq!(b.args["UNSET"], None);
    assert_eq!(b.target.as_deref(), Some("runtime"));
    assert_eq!(b.labels["team"], "web");
    assert_eq!(b.secrets[0].source, "npmrc");
    assert!(b.no_cache);
    assert_eq!(b.tags, vec!["web:latest".to_string()]);
    let inline = svc(&l, "inline").build.as_ref().expect("build");
    assert_eq!(inline.context, dir.to_str().expect("utf-8"));
    assert_eq!(
        inline.dockerfile_inline.as_deref(),
        Some("FROM busybox\nRUN echo hi\n")
    );
    assert_eq!(
        fx.err("services:\n  a:\n    build:\n      dockerfile: D\n      dockerfile_inline: FROM x\n"),
        "app.yaml:5:26: services.a.build.dockerfile_inline: dockerfile and dockerfile_inline are mutually exclusive"
    );
    assert_eq!(
        fx.err("services:\n  a:\n    build:\n      contxt: .\n"),
        "app.yaml:4:7: services.a.build.contxt: unknown key \"contxt\" (did you mean \"context\"?)"
    );
}

#[test]
fn scale_is_replicas_and_a_conflict_is_an_error() {
    let fx = Fx::new();
    let l = fx.ok("services:\n  w:\n    image: x\n    scale: 3\n  v:\n    image: x\n    scale: 2\n    deploy: {replicas: 2}\n");
    assert_eq!(
        svc(&l, "w").deploy.mode,
        ServiceMode::Replicated { replicas: 3 }
    );
    assert_eq!(
        svc(&l, "v").deploy.mode,
        ServiceMode::Replicated { replicas: 2 }
    );
    assert_eq!(
        fx.err("services:\n  w:\n    image: x\n    scale: 3\n    deploy: {replicas: 2}\n"),
        "app.yaml:4:12: services.w.scale: scale (3) and deploy.replicas (2) differ: give one of them"
    );
    assert_eq!(
        fx.err("services:\n  w:\n    image: x\n    scale: 1\n    deploy: {mode: global}\n"),
        "app.yaml:4:12: services.w.scale: scale can only be used with replicated mode"
    );
}

#[test]
fn compose_2_keys_restart_and_resources_are_honoured() {
    let fx = Fx::new();
    let l = fx.ok(concat!(
        "version: '2.4'\nservices:\n",
        "  a:\n    image: x\n    restart: on-failure:3\n    mem_limit: 512m\n    mem_reservation: 128m\n    cpus: 0.5\n    pids_limit: 100\n",
        "  b:\n    image: x\n    restart: 'no'\n",
        "  c:\n    image: x\n    restart: unless-stopped\n    deploy:\n      restart_policy: {condition: none}\n",
    ));
    let a = svc(&l, "a");
    assert_eq!(
        a.deploy.restart_policy.condition,
        RestartCondition::OnFailure
    );
    assert_eq!(a.deploy.restart_policy.max_attempts, Some(3));
    let lim = a.deploy.resources.limits.as_ref().expect("limits");
    assert_eq!(lim.memory_bytes, Some(512 << 20));
    assert_eq!(lim.nano_cpus, Some(500_000_000));
    assert_eq!(lim.pids, Some(100));
    let res = a
        .deploy
        .resources
        .reservations
        .as_ref()
        .expect("reservations");
    assert_eq!(res.memory_bytes, Some(128 << 20));
    assert_eq!(
        svc(&l, "b").deploy.restart_policy.condition,
        RestartCondition::None
    );
    assert_eq!(
        svc(&l, "c").deploy.restart_policy.condition,
        RestartCondition::None
    );
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    assert_eq!(
        fx.err("services:\n  a:\n    image: x\n    restart: sometimes\n"),
        "app.yaml:4:14: services.a.restart: invalid restart policy \"sometimes\" (expected no, always, on-failure[:N] or unless-stopped)"
    );
}

#[test]
fn volumes_from_services() {
    let fx = Fx::new();
    let l = fx.ok(concat!(
        "services:\n  data:\n    image: x\n    volumes: [shared:/shared]\n",
        "  app:\n    image: x\n    volumes_from: ['data:ro', 'container:legacy']\n",
        "  other:\n    image: x\n    volumes_from: ['service:data']\n",
        "volumes:\n  shared: {}\n",
    ));
    assert_eq!(
        svc(&l, "app").volumes_from,
        vec!["service:data:ro".to_string()]
    );
    assert_eq!(
        svc(&l, "other").volumes_from,
        vec!["service:data".to_string()]
    );
    assert_eq!(
        warnings(&l, fx.dir.path()),
        vec!["app.yaml:7:31: services.app.volumes_from[1]: ignoring \"container:legacy\": a stack's tasks can only take volumes from its services"]
    );
    assert_eq!(
        fx.err("services:\n  app:\n    image: x\n    volumes_from: [nope]\n"),
        "app.yaml:4:20: services.app.volumes_from: undefined service \"nope\""
    );
}

#[test]
fn dependency_cycles_are_rejected_naming_the_services() {
    let fx = Fx::new();
    assert_eq!(
        fx.err(concat!(
            "services:\n  a:\n    image: x\n    depends_on: [b]\n",
            "  b:\n    image: x\n    depends_on:\n      c: {condition: service_healthy}\n",
            "  c:\n    image: x\n    depends_on: [a]\n",
        )),
        "app.yaml:4:18: services.a.depends_on: dependency cycle detected: a -> b -> c -> a"
    );
}

#[test]
fn env_files_missing_required_and_optional() {
    let fx = Fx::new();
    fx.file("app.yaml", "services:\n  web:\n    image: ${IMG}\n");
    fx.file("prod.env", "IMG=nginx:prod\n");
    let l = fx
        .load_with(&["app.yaml"], |o| {
            o.env_files = vec![fx.dir.path().join("prod.env")]
        })
        .expect("loads");
    assert_eq!(svc(&l, "web").image, "nginx:prod");
    let e = fx
        .load_with(&["app.yaml"], |o| {
            o.env_files = vec![fx.dir.path().join("missing.env")]
        })
        .expect_err("missing --env-file");
    assert!(fx
        .strip(e)
        .starts_with("missing.env: No such file or directory"),);
    assert_eq!(
        fx.err("services:\n  web:\n    image: x\n    env_file: missing.env\n"),
        "app.yaml:4:15: services.web.env_file: cannot read env file missing.env: No such file or directory (os error 2)"
    );
    let l = fx.ok("services:\n  web:\n    image: x\n    env_file:\n      - path: missing.env\n        required: false\n");
    assert!(svc(&l, "web").environment.is_empty());
}

#[test]
fn bad_interpolation_is_an_error_with_its_place() {
    let fx = Fx::new();
    assert_eq!(
        fx.err("services:\n  web:\n    image: \"${IMG:x}\"\n"),
        "app.yaml:3:12: services.web.image: invalid interpolation format in \"${IMG:x}\": you may need to escape any $ with another $"
    );
}

#[test]
fn host_options_and_secret_sources() {
    let fx = Fx::new();
    let l = fx.ok(concat!(
        "services:\n  web:\n    image: x\n    privileged: true\n    security_opt: [no-new-privileges:true]\n",
        "    devices:\n      - /dev/fuse\n      - source: /dev/net/tun\n        permissions: rwm\n",
        "    cap_add: [NET_ADMIN]\n    init: true\n    ulimits: {nofile: {soft: 1024, hard: 2048}}\n",
        "    sysctls: {net.core.somaxconn: 1024}\n    secrets: [token, motd]\n",
        "secrets:\n  token:\n    environment: TOKEN\n  motd:\n    content: hello\n",
    ));
    let s = svc(&l, "web");
    assert!(s.privileged);
    assert_eq!(s.security_opt, vec!["no-new-privileges:true".to_string()]);
    assert_eq!(
        s.devices,
        vec![
            "/dev/fuse".to_string(),
            "/dev/net/tun:/dev/net/tun:rwm".into()
        ]
    );
    assert_eq!(s.cap_add, vec!["NET_ADMIN".to_string()]);
    assert_eq!(
        l.spec.secrets["token"].source,
        Source::Environment("TOKEN".into())
    );
    assert_eq!(
        l.spec.secrets["motd"].source,
        Source::Content("hello".into())
    );
    // sysctls are applied by the tasks' containers: no warning.
    assert_eq!(
        s.sysctls.get("net.core.somaxconn").map(String::as_str),
        Some("1024")
    );
    assert!(warnings(&l, fx.dir.path()).is_empty());
}

#[test]
fn shm_size_ipc_and_pid_are_kept_and_checked() {
    let fx = Fx::new();
    let l = fx.ok(
        "services:\n  web:\n    image: x\n    shm_size: 1gb\n    ipc: shareable\n    pid: host\n",
    );
    let s = svc(&l, "web");
    assert_eq!(s.shm_size, Some(1 << 30));
    assert_eq!(s.ipc.as_deref(), Some("shareable"));
    assert_eq!(s.pid.as_deref(), Some("host"));
    assert!(warnings(&l, fx.dir.path()).is_empty());
    // Another service's or a container's namespace: kept; the service named in
    // `ipc: service:` becomes shareable, as Docker requires of the donor.
    let l = fx.ok("services:\n  web:\n    image: x\n    ipc: service:db\n    pid: container:db\n  db:\n    image: x\n");
    let s = svc(&l, "web");
    assert_eq!(
        (s.ipc.as_deref(), s.pid.as_deref()),
        (Some("service:db"), Some("container:db"))
    );
    assert_eq!(svc(&l, "db").ipc.as_deref(), Some("shareable"));
    assert!(warnings(&l, fx.dir.path()).is_empty());
    assert_eq!(
        fx.err("services:\n  web:\n    image: x\n    pid: service:nope\n"),
        "app.yaml:4:10: services.web.pid: undefined service \"nope\""
    );
    assert_eq!(
        fx.err("services:\n  web:\n    image: x\n    ipc: service:web\n"),
        "app.yaml:4:10: services.web.ipc: service \"web\" cannot share its own namespace"
    );
    let e = fx.err("services:\n  web:\n    image: x\n    ipc: bogus\n");
    assert!(e.contains("invalid IPC mode: bogus"), "{e}");
}

#[test]
fn network_mode_forms() {
    let fx = Fx::new();
    let l = fx.ok(concat!(
        "services:\n",
        "  app:\n    image: x\n    ports: ['8080:80']\n",
        "  side:\n    image: x\n    network_mode: service:app\n",
        "  h:\n    image: x\n    network_mode: host\n    ports: [{target: 9100, published: 9100, mode: host}]\n",
        "  n:\n    image: x\n    network_mode: none\n",
        "  b:\n    image: x\n    network_mode: bridge\n    ports: ['81:80']\n",
        "  c:\n    image: x\n    network_mode: 'container:legacy'\n",
    ));
    assert!(warnings(&l, fx.dir.path()).is_empty());
    let mode = |n: &str| svc(&l, n).network_mode.clone();
    assert_eq!(mode("app"), None);
    assert!(svc(&l, "app").networks.contains_key("default"));
    for (n, m) in [
        ("side", "service:app"),
        ("h", "host"),
        ("n", "none"),
        ("b", "bridge"),
        ("c", "container:legacy"),
    ] {
        assert_eq!(mode(n).as_deref(), Some(m), "{n}");
        // No stack network: the namespace comes from the mode.
        assert!(svc(&l, n).networks.is_empty(), "{n}");
    }
    assert_eq!(
        svc(&l, "side").shared_services().collect::<Vec<_>>(),
        ["app"]
    );
}

#[test]
fn network_mode_errors() {
    let fx = Fx::new();
    let err = |tail: &str| {
        fx.err(&format!(
            "services:\n  app:\n    image: x\n  side:\n    image: x\n{tail}"
        ))
    };
    assert_eq!(
        err("    network_mode: bogus\n"),
        "app.yaml:6:19: services.side.network_mode: invalid network mode: bogus"
    );
    assert_eq!(
        err("    network_mode: service:nope\n"),
        "app.yaml:6:19: services.side.network_mode: undefined service \"nope\""
    );
    assert_eq!(
        err("    network_mode: service:app\n    ports: ['80:80']\n"),
        "app.yaml:7:12: services.side.ports: conflicting options: port publishing and network_mode service:app"
    );
    assert_eq!(
        err("    network_mode: 'container:x'\n    ports: ['80:80']\n"),
        "app.yaml:7:12: services.side.ports: conflicting options: port publishing and network_mode container:x"
    );
    let e = err("    network_mode: host\n    ports: ['80:80']\n");
    assert!(
        e.starts_with("app.yaml:7:12: services.side.ports[0]: a port published in ingress mode cannot be used with network_mode host"),
        "{e}"
    );
    assert_eq!(
        err("    network_mode: none\n    networks: [default]\n"),
        "app.yaml:7:15: services.side.networks: network_mode and networks are mutually exclusive"
    );
    // A cycle through namespace sharing names the services and where it starts.
    let e = fx.err(concat!(
        "services:\n",
        "  a:\n    image: x\n    network_mode: service:b\n",
        "  b:\n    image: x\n    pid: service:a\n",
    ));
    assert!(
        e.ends_with("dependency cycle detected: a -> b -> a")
            && e.starts_with("app.yaml:4:19: services.a.network_mode"),
        "{e}"
    );
}

/// Loads a file of the corpus (stack/tests/fixtures/corpus: files written the way
/// public projects write them) with a plausible environment.
fn corpus(name: &str) -> Loaded {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus");
    let env: HashMap<String, String> = [
        ("ACME_EMAIL", "ops@example.com"),
        ("GITLAB_HOME", "/srv/gitlab"),
        ("VERSION", "2.1.0"),
        ("HOME", "/root"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    match load(&LoadOptions {
        files: vec![dir.join(name)],
        env,
        project_name: "proj".into(),
        ..Default::default()
    }) {
        Ok(l) => l,
        Err(e) => panic!("{name}: {e}"),
    }
}

fn replicas(l: &Loaded, s: &str) -> u64 {
    match svc(l, s).deploy.mode {
        ServiceMode::Replicated { replicas } => replicas,
        ServiceMode::Global => 0,
    }
}

fn published(l: &Loaded, s: &str) -> Vec<(Option<u16>, u16)> {
    svc(l, s)
        .ports
        .iter()
        .map(|p| (p.published, p.target))
        .collect()
}

#[test]
fn corpus_of_realistic_files_loads_with_the_right_services() {
    let l = corpus("wordpress.yaml");
    assert_eq!(l.spec.services.len(), 2);
    assert_eq!(published(&l, "wordpress"), vec![(Some(80), 80)]);
    assert_eq!(svc(&l, "db").volumes[0].source.as_deref(), Some("db_data"));
    assert_eq!(
        svc(&l, "db").command,
        Some(vec![
            "--default-authentication-plugin=mysql_native_password".to_string()
        ])
    );

    let l = corpus("legacy-v2.yaml");
    let w = svc(&l, "worker");
    assert_eq!(w.image, "example/worker:latest");
    assert_eq!(
        w.deploy
            .resources
            .limits
            .as_ref()
            .and_then(|x| x.memory_bytes),
        Some(1 << 30)
    );
    assert_eq!(
        w.depends_on["redis"].condition,
        DependsCondition::ServiceHealthy
    );
    assert_eq!(w.networks["backend"].aliases, vec!["jobs".to_string()]);
    assert!(w.environment.contains(&"CONCURRENCY=4".to_string()));

    let l = corpus("django.yaml");
    assert_eq!(l.spec.name, "proj");
    let names: Vec<_> = l.spec.services.keys().cloned().collect();
    assert_eq!(
        names,
        vec!["cache", "db", "web", "worker"],
        "migrate is in a profile"
    );
    let web = svc(&l, "web");
    assert_eq!(web.image, "proj_web");
    assert!(web.build.is_some());
    assert!(web
        .environment
        .contains(&"DJANGO_SETTINGS_MODULE=shop.settings".to_string()));
    assert_eq!(web.ports[0].host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(
        web.healthcheck.as_ref().map(|h| h.test[0].as_str()),
        Some("CMD-SHELL")
    );

    let l = corpus("monitoring.yaml");
    assert_eq!(svc(&l, "prometheus").ports[0].mode, PortMode::Host);
    assert_eq!(svc(&l, "node-exporter").deploy.mode, ServiceMode::Global);
    assert!(svc(&l, "grafana").volumes[0].read_only);
    assert_eq!(replicas(&l, "grafana"), 1);

    let l = corpus("traefik.yaml");
    assert_eq!(replicas(&l, "whoami"), 3);
    assert!(l.spec.networks["proxy"].external);
    assert!(
        svc(&l, "traefik").labels["traefik.http.middlewares.auth.basicauth.users"]
            .contains("$apr1$H6uskkkW$")
    );
    assert!(svc(&l, "traefik")
        .command
        .as_ref()
        .is_some_and(|c| c.iter().any(|a| a.ends_with("=ops@example.com"))));

    let l = corpus("anchors.yaml");
    let api = svc(&l, "api");
    assert_eq!(api.init, Some(true));
    assert_eq!(api.deploy.restart_policy.max_attempts, Some(5));
    assert_eq!(
        api.logging.as_ref().map(|x| x.options["max-size"].as_str()),
        Some("10m")
    );
    assert!(svc(&l, "scheduler")
        .environment
        .contains(&"ROLE=scheduler".to_string()));
    assert_eq!(
        published(&l, "gateway"),
        vec![(Some(8080), 80), (Some(8081), 81)]
    );

    let l = corpus("dev-tools.yaml");
    let app = svc(&l, "app");
    assert!(app.tty && app.stdin_open);
    assert_eq!(app.ulimits["nofile"].hard, 40000);
    assert_eq!(
        app.build.as_ref().and_then(|b| b.target.as_deref()),
        Some("dev")
    );
    let warned: Vec<String> = l.warnings.iter().map(|w| w.field.clone()).collect();
    assert_eq!(app.ipc.as_deref(), Some("host"));
    assert_eq!(app.shm_size, Some(2 << 30));
    for key in ["develop", "platform"] {
        assert!(
            warned.contains(&format!("services.app.{key}")),
            "{key}: {warned:?}"
        );
    }

    let l = corpus("elastic.yaml");
    assert_eq!(svc(&l, "es01").ulimits["memlock"].soft, -1);
    assert!(svc(&l, "kibana").depends_on["es01"].restart);
    assert_eq!(published(&l, "es01"), vec![(Some(9200), 9200)]);

    let l = corpus("swarm-external.yaml");
    let app = svc(&l, "app");
    assert_eq!(app.image, "registry.example.com/team/app:2.1.0");
    assert_eq!(replicas(&l, "app"), 4);
    assert_eq!(app.secrets[0].mode, 0o400);
    assert_eq!(app.secrets[0].target, "/run/secrets/db_pass");
    assert_eq!(l.spec.networks["frontend"].name, "edge-proxy");

    let l = corpus("gitlab.yaml");
    assert!(svc(&l, "gitlab").environment[0].contains("gitlab_shell_ssh_port"));
    assert_eq!(
        svc(&l, "gitlab").volumes[0].source.as_deref(),
        Some("/srv/gitlab/config")
    );

    let l = corpus("mailserver.yaml");
    let m = svc(&l, "mailserver");
    assert_eq!(m.ports.len(), 5);
    assert!(m.environment.contains(&"LOG_LEVEL=info".to_string()));
    assert_eq!(m.healthcheck.as_ref().and_then(|h| h.retries), Some(0));

    let l = corpus("minimal-build.yaml");
    assert_eq!(svc(&l, "frontend").image, "proj_frontend");
    // An anonymous volume keeps no source.
    assert_eq!(svc(&l, "backend").volumes[1].source, None);

    let l = corpus("compose-include.yaml");
    let names: Vec<_> = l.spec.services.keys().cloned().collect();
    assert_eq!(names, vec!["es01", "kibana", "proxy", "redis", "worker"]);
    let proxy = svc(&l, "proxy");
    assert_eq!(proxy.image, "nginx:alpine");
    assert!(proxy.read_only, "from the extended gateway");
    assert_eq!(proxy.ports.len(), 3);
}

#[test]
fn corpus_files_written_for_podman_hosts_and_includes_load() {
    let l = corpus("selfhosted.yaml");
    let app = svc(&l, "app");
    assert_eq!(
        app.command,
        Some(vec![
            "serve".into(),
            "--config".into(),
            "/etc/notes/config.toml".into()
        ])
    );
    assert_eq!(
        app.healthcheck.as_ref().map(|h| h.test.clone()),
        Some(vec![
            "CMD-SHELL".to_string(),
            "http_proxy='' wget -q -O- http://localhost:8443/health".to_string()
        ])
    );
    // An empty host IP publishes on every address.
    assert_eq!(published(&l, "app"), vec![(Some(8443), 8443)]);
    assert_eq!(app.ports[0].host_ip, None);
    let env = |k: &str| {
        app.environment
            .iter()
            .find_map(|e| e.strip_prefix(&format!("{k}=")).map(str::to_string))
    };
    assert_eq!(env("NOTES_SUBPATH").as_deref(), Some(""));
    assert_eq!(
        env("NOTES_BANNER").as_deref(),
        Some("Welcome\nto the notes server")
    );
    assert_eq!(env("NOTES_SCHEME").as_deref(), Some("https"));
    assert_eq!(env("NOTES_SECRET").as_deref(), Some("s3cr3t#not-a-comment"));
    // `:Z` on a named volume and unknown options are warned, not refused.
    assert_eq!(app.volumes[0].source.as_deref(), Some("notes-data"));
    assert!(app.volumes[1].read_only);
    assert_eq!(
        app.volumes[1]
            .bind
            .as_ref()
            .and_then(|b| b.selinux.as_deref()),
        Some("z")
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus");
    let w = warnings(&l, &dir);
    assert!(
        w.iter()
            .any(|w| w.contains("services.app.volumes[0]: ignoring volume option(s) Z")),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|w| w.contains("services.app.volumes[2]: ignoring volume option(s) mode=0600")),
        "{w:?}"
    );
    assert_eq!(svc(&l, "db").environment.len(), 2);

    let l = corpus("include-override.yaml");
    let db = svc(&l, "db");
    assert_eq!(db.image, "postgres:15-alpine", "from the included file");
    assert_eq!(
        db.environment,
        vec![
            "POSTGRES_USER=app".to_string(),
            "TZ=Europe/Berlin".to_string()
        ]
    );
    assert_eq!(db.volumes[0].source.as_deref(), Some("pgdata"));
    assert!(l.spec.volumes.contains_key("pgdata"));
}

#[test]
fn files_that_cannot_load_say_why() {
    let fx = Fx::new();
    assert_eq!(
        fx.err("services:\n  web:\n    image: x\n    profiles: [dev]\n  db:\n    image: y\n    profiles: [dev, test]\n"),
        "app.yaml:2:3: services: no service is enabled: every service is in a profile that is not active (dev, test); enable one with --profile NAME or COMPOSE_PROFILES"
    );
    assert_eq!(
        fx.err("services:\n  web:\n    image: x\n    ports: ['${WEB_PORTS}']\n"),
        "app.yaml:4:13: services.web.ports[0]: invalid port \"\": empty (an unset variable?)"
    );
    assert_eq!(
        fx.err("services:\n  web:\n    image: x\n    volumes: ['${DATA_DIR}:/data']\n"),
        "app.yaml:4:15: services.web.volumes[0]: invalid volume \":/data\": the source before ':' is empty (an unset variable?)"
    );
    assert_eq!(
        fx.err("services:\n  web:\n    image: x\n    environment: ['TOKEN=${TOKEN:?}']\n"),
        "app.yaml:4:19: services.web.environment[0]: required variable \"TOKEN\" is missing a value"
    );
    assert_eq!(
        fx.err("web:\n  image: nginx\n  links: [db]\ndb:\n  image: postgres\n"),
        "app.yaml:1:1: web: services at the top level (Compose file format 1) are not supported: put them under a top-level `services:` key"
    );
    assert_eq!(
        fx.err("services:\n  llm:\n    provider:\n      type: model\n"),
        "app.yaml:4:7: services.llm.provider: a service run by a provider (no image, no build) cannot be deployed as a cluster service"
    );
}

#[test]
fn a_published_range_onto_one_port_takes_its_first_port() {
    let fx = Fx::new();
    let l = fx.ok("services:\n  web:\n    image: x\n    ports: ['8000-8010:80']\n");
    assert_eq!(published(&l, "web"), vec![(Some(8000), 80)]);
    assert_eq!(
        fx.err("services:\n  web:\n    image: x\n    ports: ['8000-8010:80-81']\n"),
        "app.yaml:4:13: services.web.ports[0]: invalid port \"8000-8010:80-81\": the published and target ranges differ in size"
    );
}

#[test]
fn long_port_syntax_takes_a_published_range() {
    let fx = Fx::new();
    let l = fx.ok("services:\n  web:\n    image: x\n    ports:\n      - {target: 80, published: '8000-8010'}\n");
    assert_eq!(published(&l, "web"), vec![(Some(8000), 80)]);
}

#[test]
fn built_image_names_are_lower_case() {
    let fx = Fx::new();
    fx.file("app.yaml", "services:\n  WebApp:\n    build: .\n");
    let l = fx
        .load_with(&["app.yaml"], |o| o.project_name = "Shop".into())
        .expect("loads");
    assert_eq!(svc(&l, "WebApp").image, "shop_webapp");
}

#[test]
fn printed_yaml_escapes_dollars_so_it_loads_back_the_same() {
    let fx = Fx::new();
    let l = fx.ok("services:\n  web:\n    image: x\n    environment: {PRICE: '5$$', HOME_REF: $$HOME}\n    command: echo $$1\n");
    let s = svc(&l, "web");
    assert_eq!(
        s.environment,
        vec!["HOME_REF=$HOME".to_string(), "PRICE=5$".into()]
    );
    let printed = to_yaml(&l.spec);
    assert!(printed.contains("$$HOME"), "{printed}");
    fx.file("printed.yaml", &printed);
    let again = fx.load(&["printed.yaml"]).expect("loads back");
    assert_eq!(again.spec, l.spec);
}
