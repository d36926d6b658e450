//! End-to-end tests of a container's kernel parameters and shared namespaces:
//! `--sysctl`, `--shm-size`, `--ipc`, `--pid` and `--network container:X`, checked from
//! inside the containers, through `skiff run` and through the docker CLI.

mod common;
use common::*;

/// `run --rm FLAGS busybox CMD...` through skiff; stdout trimmed.
fn out(a: &Agent, flags: &[&str], cmd: &[&str]) -> String {
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(flags);
    args.push("busybox");
    args.extend_from_slice(cmd);
    a.cmd(&args).stdout.trim().to_string()
}

/// The namespace link `kind` of process `pid` as a container's /proc shows it.
fn host_ns(kind: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{kind}"))
        .expect("own namespace")
        .to_string_lossy()
        .into_owned()
}

/// The size column (1K blocks) of `df -k /dev/shm` output.
fn df_blocks(df: &str) -> String {
    df.lines()
        .last()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_default()
        .to_string()
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn sysctls_and_shm_size_apply_and_are_checked() {
    let a = Agent::start().with_busybox();
    assert_eq!(
        out(
            &a,
            &[
                "--sysctl",
                "net.core.somaxconn=1234",
                "--sysctl",
                "kernel.shmmax=123456789",
                "--sysctl",
                "fs.mqueue.msg_max=20",
            ],
            &[
                "sh",
                "-c",
                "cat /proc/sys/net/core/somaxconn /proc/sys/kernel/shmmax /proc/sys/fs/mqueue/msg_max",
            ],
        ),
        "1234\n123456789\n20"
    );
    // The host keeps its own values.
    assert_ne!(
        std::fs::read_to_string("/proc/sys/kernel/shmmax")
            .expect("host shmmax")
            .trim(),
        "123456789"
    );
    assert_eq!(df_blocks(&out(&a, &[], &["df", "-k", "/dev/shm"])), "65536");
    assert_eq!(
        df_blocks(&out(&a, &["--shm-size", "128m"], &["df", "-k", "/dev/shm"])),
        "131072"
    );
    assert_eq!(
        df_blocks(&out(
            &a,
            &["--shm-size", "33554432"],
            &["df", "-k", "/dev/shm"]
        )),
        "32768"
    );
    a.cmd(&[
        "create",
        "--name",
        "kp",
        "--sysctl",
        "net.ipv4.ip_forward=1",
        "--shm-size",
        "1g",
        "busybox",
        "true",
    ]);
    assert_eq!(
        a.inspect(
            "kp",
            "{{.HostConfig.IpcMode}}|{{.HostConfig.PidMode}}|{{.HostConfig.ShmSize}}|{{json .HostConfig.Sysctls}}"
        ),
        "private||1073741824|{\"net.ipv4.ip_forward\":\"1\"}"
    );
    // Refused at create, naming the key, as Docker does.
    for (flags, want) in [
        (
            vec!["--sysctl", "kernel.hostname=x"],
            "sysctl 'kernel.hostname=x' is not allowed",
        ),
        (
            vec!["--sysctl", "vm.swappiness=1"],
            "sysctl 'vm.swappiness=1' is not allowed",
        ),
        (
            vec!["--network", "host", "--sysctl", "net.core.somaxconn=1"],
            "\"net.core.somaxconn\" is not allowed in the host's network namespace",
        ),
        (
            vec!["--ipc", "host", "--sysctl", "kernel.shmmax=1"],
            "\"kernel.shmmax\" is not allowed in the host's IPC namespace",
        ),
        (vec!["--ipc", "bogus"], "invalid IPC mode: bogus"),
        (vec!["--pid", "bogus"], "invalid PID mode: bogus"),
        (vec!["--shm-size", "lots"], "invalid size"),
    ] {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(&flags);
        args.extend_from_slice(&["busybox", "true"]);
        let r = a.try_cmd(&args);
        assert_eq!(r.code, 125, "{flags:?}: {r:?}");
        assert!(r.stderr.contains(want), "{flags:?}: {}", r.stderr);
    }
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn ipc_pid_and_network_namespaces_are_shared_as_asked() {
    let a = Agent::start().with_busybox();
    a.cmd(&[
        "run",
        "-d",
        "--name",
        "donor",
        "--ipc",
        "shareable",
        "busybox",
        "sleep",
        "300",
    ]);
    let exec = |cmd: &[&str]| {
        let mut args = vec!["exec", "donor"];
        args.extend_from_slice(cmd);
        a.cmd(&args).stdout.trim().to_string()
    };
    let donor_ipc = exec(&["readlink", "/proc/1/ns/ipc"]);
    assert_ne!(donor_ipc, host_ns("ipc"));
    // IPC: the same namespace and the same /dev/shm.
    exec(&["sh", "-c", "echo shared > /dev/shm/f"]);
    assert_eq!(
        out(
            &a,
            &["--ipc", "container:donor"],
            &["sh", "-c", "readlink /proc/1/ns/ipc; cat /dev/shm/f"]
        ),
        format!("{donor_ipc}\nshared")
    );
    assert_eq!(
        out(&a, &["--ipc", "host"], &["readlink", "/proc/1/ns/ipc"]),
        host_ns("ipc")
    );
    assert_eq!(
        out(
            &a,
            &["--ipc", "none"],
            &["sh", "-c", "grep -c ' /dev/shm ' /proc/mounts; true"]
        ),
        "0"
    );
    let private = out(&a, &[], &["readlink", "/proc/1/ns/ipc"]);
    assert_ne!(private, donor_ipc);
    assert_ne!(private, host_ns("ipc"));
    // A private donor cannot be joined (Docker's rule), nor a stopped one.
    a.cmd(&["run", "-d", "--name", "priv", "busybox", "sleep", "300"]);
    let r = a.try_cmd(&["run", "--rm", "--ipc", "container:priv", "busybox", "true"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("non-shareable IPC"), "{}", r.stderr);
    a.cmd(&["create", "--name", "stopped", "busybox", "true"]);
    for flag in ["--ipc", "--pid", "--network"] {
        let r = a.try_cmd(&["run", "--rm", flag, "container:stopped", "busybox", "true"]);
        assert_ne!(r.code, 0, "{flag}");
        assert!(
            r.stderr.contains("non running container"),
            "{flag}: {}",
            r.stderr
        );
    }
    // PID: the host's (its processes are visible) or the donor's.
    assert_eq!(
        out(&a, &["--pid", "host"], &["readlink", "/proc/self/ns/pid"]),
        host_ns("pid")
    );
    let ps = out(&a, &["--pid", "host"], &["ps", "-o", "comm"]);
    assert!(ps.lines().any(|l| l.trim() == "skiff"), "{ps}");
    let donor_pid = exec(&["readlink", "/proc/self/ns/pid"]);
    let joined = out(
        &a,
        &["--pid", "container:donor"],
        &[
            "sh",
            "-c",
            "readlink /proc/self/ns/pid; cat /proc/1/cmdline | tr '\\0' ' '",
        ],
    );
    assert_eq!(joined, format!("{donor_pid}\nsleep 300"));
    // Network: the donor's namespace, name and resolver.
    let donor_net = exec(&["readlink", "/proc/self/ns/net"]);
    let donor_host = exec(&["hostname"]);
    assert_eq!(
        out(
            &a,
            &["--network", "container:donor"],
            &["sh", "-c", "readlink /proc/self/ns/net; hostname"]
        ),
        format!("{donor_net}\n{donor_host}")
    );
    let r = a.try_cmd(&[
        "run",
        "--rm",
        "--network",
        "container:donor",
        "--hostname",
        "x",
        "busybox",
        "true",
    ]);
    assert_eq!(r.code, 125);
    assert!(
        r.stderr
            .contains("conflicting options: hostname and the network mode"),
        "{}",
        r.stderr
    );
    // The shareable /dev/shm goes with the donor's run.
    let id = a.inspect("donor", "{{.Id}}");
    let shm = a.exec_root.join("containers").join(&id).join("shm");
    assert!(is_mount(&shm), "{}", shm.display());
    a.cmd(&["rm", "-f", "donor"]);
    assert!(!is_mount(&shm), "{}", shm.display());
}

fn is_mount(p: &std::path::Path) -> bool {
    let want = p.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mounts")
        .expect("mounts")
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(want.as_str()))
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn docker_cli_sets_and_inspects_them() {
    let a = Agent::start().with_busybox();
    let o = a
        .docker(&[
            "run",
            "--rm",
            "--sysctl",
            "net.core.somaxconn=2048",
            "--shm-size",
            "96m",
            "--pid",
            "host",
            "busybox",
            "sh",
            "-c",
            "cat /proc/sys/net/core/somaxconn; df -k /dev/shm | tail -1; readlink /proc/self/ns/pid",
        ])
        .stdout;
    let lines: Vec<&str> = o.lines().collect();
    assert_eq!(lines.len(), 3, "{o}");
    assert_eq!(lines[0], "2048");
    assert_eq!(df_blocks(lines[1]), "98304");
    assert_eq!(lines[2], host_ns("pid"));
    a.docker(&[
        "run",
        "-d",
        "--name",
        "d1",
        "--ipc",
        "shareable",
        "busybox",
        "sleep",
        "300",
    ]);
    let ipc = a
        .docker(&["exec", "d1", "readlink", "/proc/1/ns/ipc"])
        .stdout
        .trim()
        .to_string();
    a.docker(&[
        "run",
        "-d",
        "--name",
        "d2",
        "--ipc",
        "container:d1",
        "--network",
        "container:d1",
        "--sysctl",
        "kernel.msgmax=4096",
        "busybox",
        "sleep",
        "300",
    ]);
    assert_eq!(
        a.docker(&["exec", "d2", "readlink", "/proc/1/ns/ipc"])
            .stdout
            .trim(),
        ipc
    );
    assert_eq!(
        a.docker(&[
            "inspect",
            "-f",
            "{{.HostConfig.IpcMode}}|{{.HostConfig.NetworkMode}}|{{.HostConfig.ShmSize}}|{{.HostConfig.Sysctls}}",
            "d2"
        ])
        .stdout
        .trim(),
        "container:d1|container:d1|67108864|map[kernel.msgmax:4096]"
    );
    assert_eq!(
        a.docker(&["inspect", "-f", "{{.HostConfig.IpcMode}}", "d1"])
            .stdout
            .trim(),
        "shareable"
    );
    // The daemon's checks reach the CLI.
    let r = a.try_docker(&[
        "run",
        "--rm",
        "--network",
        "host",
        "--sysctl",
        "net.core.somaxconn=1",
        "busybox",
        "true",
    ]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("net.core.somaxconn"), "{}", r.stderr);
    let r = a.try_docker(&["run", "--rm", "--ipc", "container:", "busybox", "true"]);
    assert_ne!(r.code, 0);
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn a_stack_service_gets_its_sysctls_shm_size_and_pid() {
    let a = Agent::start().with_busybox();
    let file = a.dir.path().join("ns.yaml");
    std::fs::write(
        &file,
        "services:\n  app:\n    image: busybox:latest\n    command: [sleep, '1000']\n    stop_grace_period: 1s\n    sysctls:\n      net.core.somaxconn: 1500\n      kernel.msgmax: 9000\n    shm_size: 96m\n    ipc: shareable\n    pid: host\n",
    )
    .expect("stack file");
    let r = a.cmd(&[
        "stack",
        "deploy",
        "-c",
        &file.to_string_lossy(),
        "--detach=false",
        "--timeout",
        "60s",
        "ns",
    ]);
    assert!(!r.stderr.contains("ignoring"), "{}", r.stderr);
    let c = a
        .cmd(&["ps", "-q", "--filter", "name=ns_app"])
        .stdout
        .trim()
        .to_string();
    let o = a
        .cmd(&[
            "exec",
            &c,
            "sh",
            "-c",
            "cat /proc/sys/net/core/somaxconn /proc/sys/kernel/msgmax; df -k /dev/shm | tail -1; readlink /proc/self/ns/pid",
        ])
        .stdout;
    let lines: Vec<&str> = o.lines().collect();
    assert_eq!(lines.len(), 4, "{o}");
    assert_eq!(&lines[..2], &["1500", "9000"]);
    assert_eq!(df_blocks(lines[2]), "98304");
    assert_eq!(lines[3], host_ns("pid"));
    assert_eq!(
        a.inspect(&c, "{{.HostConfig.IpcMode}} {{.HostConfig.PidMode}}"),
        "shareable host"
    );
    a.cmd(&["stack", "rm", "ns"]);
    a.wait_until(
        "containers removed",
        std::time::Duration::from_secs(30),
        || a.cmd(&["ps", "-aq"]).stdout.trim().is_empty(),
    );
}
