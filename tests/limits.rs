//! End-to-end tests of resource limits (checked in the container's cgroup files and by
//! exceeding them), OOM handling, `update`, `stats`, `system df` and the prune commands.
//! This host runs cgroup v1; v2 is covered by unit tests on fixture trees.

mod common;
use common::Agent;
use std::time::Duration;

/// Reads `file` of `controller` in the cgroup of container `name`, on the host.
fn cg(a: &Agent, name: &str, controller: &str, file: &str) -> String {
    let id = a.inspect(name, "{{.Id}}");
    let p = format!(
        "/sys/fs/cgroup/{controller}/{}/{id}/{file}",
        common::cgroup_parent(&a.root)
    );
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{p}: {e}"))
        .trim()
        .to_string()
}

fn run_d(a: &Agent, name: &str, flags: &[&str]) {
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["busybox", "sleep", "300"]);
    a.cmd(&args);
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn memory_limits_reach_the_cgroup() {
    let a = Agent::start().with_busybox();
    run_d(
        &a,
        "m1",
        &[
            "--memory",
            "64m",
            "--memory-reservation",
            "32m",
            "--oom-kill-disable",
        ],
    );
    assert_eq!(cg(&a, "m1", "memory", "memory.limit_in_bytes"), "67108864");
    assert_eq!(
        cg(&a, "m1", "memory", "memory.memsw.limit_in_bytes"),
        "134217728",
        "swap defaults to 2 x memory"
    );
    assert_eq!(
        cg(&a, "m1", "memory", "memory.soft_limit_in_bytes"),
        "33554432"
    );
    assert!(cg(&a, "m1", "memory", "memory.oom_control").contains("oom_kill_disable 1"));
    assert_eq!(
        a.inspect(
            "m1",
            "{{.HostConfig.Memory}} {{.HostConfig.MemorySwap}} {{.HostConfig.OomKillDisable}}"
        ),
        "67108864 134217728 true"
    );
    run_d(&a, "m2", &["--memory", "64m", "--memory-swap", "64m"]);
    assert_eq!(
        cg(&a, "m2", "memory", "memory.memsw.limit_in_bytes"),
        "67108864",
        "equal to memory: no swap"
    );
    run_d(&a, "m3", &["--memory", "64m", "--memory-swap=-1"]);
    assert!(
        cg(&a, "m3", "memory", "memory.memsw.limit_in_bytes")
            .parse::<u64>()
            .expect("n")
            > 1 << 60,
        "-1: unlimited swap"
    );
    // Docker's validation.
    let r = a.try_cmd(&["run", "--rm", "--memory-swap", "64m", "busybox", "true"]);
    assert_eq!(r.code, 125);
    assert!(
        r.stderr.contains("always set the Memory limit"),
        "{}",
        r.stderr
    );
    let r = a.try_cmd(&[
        "run",
        "--rm",
        "--memory",
        "64m",
        "--memory-swap",
        "32m",
        "busybox",
        "true",
    ]);
    assert!(
        r.stderr.contains("larger than memory limit"),
        "{}",
        r.stderr
    );
    assert!(a
        .try_cmd(&["run", "--rm", "--memory", "1m", "busybox", "true"])
        .stderr
        .contains("Minimum memory limit allowed is 6MB"));
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn oom_kill_is_reported_like_docker() {
    let a = Agent::start().with_busybox();
    run_d(&a, "bystander", &[]);
    let since = chrono::Utc::now().timestamp().to_string();
    let r = a.try_cmd(&[
        "run",
        "--name",
        "hog",
        "--memory=500m",
        "--memory-swap=500m",
        "busybox",
        "sh",
        "-c",
        "head -c 600m /dev/zero | tail",
    ]);
    assert_eq!(r.code, 137, "stderr: {}", r.stderr);
    assert_eq!(
        a.inspect("hog", "{{.State.OOMKilled}} {{.State.ExitCode}}"),
        "true 137"
    );
    let ev = a
        .cmd(&[
            "events",
            "--since",
            &since,
            "--until",
            &(chrono::Utc::now().timestamp() + 1).to_string(),
            "--filter",
            "container=hog",
        ])
        .stdout;
    assert!(ev.contains(" oom "), "no oom event: {ev}");
    // Only the container died: the agent and the other container are fine.
    assert_eq!(a.inspect("bystander", "{{.State.Running}}"), "true");
    assert_eq!(
        a.cmd(&["exec", "bystander", "echo", "alive"]).stdout,
        "alive\n"
    );
    // A clean run of the same container is not OOMKilled.
    let r = a.try_cmd(&[
        "run",
        "--rm",
        "--memory=500m",
        "--memory-swap=500m",
        "busybox",
        "sh",
        "-c",
        "head -c 10m /dev/zero | tail",
    ]);
    assert_eq!(r.code, 0);
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn cpu_limits_reach_the_cgroup() {
    let a = Agent::start().with_busybox();
    run_d(
        &a,
        "c1",
        &["--cpus", "0.5", "--cpu-shares", "512", "--cpuset-cpus", "1"],
    );
    assert_eq!(cg(&a, "c1", "cpu", "cpu.cfs_quota_us"), "50000");
    assert_eq!(cg(&a, "c1", "cpu", "cpu.cfs_period_us"), "100000");
    assert_eq!(cg(&a, "c1", "cpu", "cpu.shares"), "512");
    assert_eq!(cg(&a, "c1", "cpuset", "cpuset.cpus"), "1");
    // The process only runs on CPU 1.
    let allowed = a
        .cmd(&[
            "exec",
            "c1",
            "grep",
            "Cpus_allowed_list",
            "/proc/self/status",
        ])
        .stdout;
    assert!(allowed.trim().ends_with("\t1"), "{allowed}");
    let r = a.try_cmd(&["run", "--rm", "--cpus", "64", "busybox", "true"]);
    assert_eq!(r.code, 125);
    assert!(
        r.stderr.contains("Range of CPUs is from 0.01"),
        "{}",
        r.stderr
    );
    let r = a.try_cmd(&["run", "--rm", "--cpuset-cpus", "0-63", "busybox", "true"]);
    assert!(
        r.stderr.contains("Requested CPUs are not available"),
        "{}",
        r.stderr
    );
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn pids_limit_contains_a_fork_bomb() {
    let a = Agent::start().with_busybox();
    a.cmd(&[
        "run",
        "-d",
        "--name",
        "bomb",
        "--pids-limit",
        "30",
        "busybox",
        "sh",
        "-c",
        "f() { f | f & }; f; sleep 300",
    ]);
    assert_eq!(cg(&a, "bomb", "pids", "pids.max"), "30");
    a.wait_until("the bomb to hit its limit", Duration::from_secs(20), || {
        cg(&a, "bomb", "pids", "pids.events")
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
            > 0
    });
    let current: u64 = cg(&a, "bomb", "pids", "pids.current")
        .parse()
        .expect("pids.current");
    assert!(current <= 30, "{current} processes");
    // The agent and new containers still work.
    assert_eq!(
        a.cmd(&["run", "--rm", "busybox", "echo", "ok"]).stdout,
        "ok\n"
    );
    a.cmd(&["rm", "-f", "bomb"]);
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn blkio_oom_score_and_ulimits() {
    let a = Agent::start().with_busybox();
    let dev = ["/dev/vda", "/dev/sda", "/dev/nvme0n1"]
        .into_iter()
        .find(|d| std::path::Path::new(d).exists())
        .expect("a block device");
    let r = a.cmd(&[
        "run",
        "-d",
        "--name",
        "b1",
        "--device-read-bps",
        &format!("{dev}:1mb"),
        "--device-write-bps",
        &format!("{dev}:2mb"),
        "--blkio-weight",
        "300",
        "--oom-score-adj",
        "500",
        "--ulimit",
        "nofile=1024:2048",
        "--ulimit",
        "nproc=500",
        "busybox",
        "sleep",
        "300",
    ]);
    // This kernel has no proportional blkio weight: dropped with Docker's warning.
    assert!(r.stderr.contains("Weight discarded"), "{}", r.stderr);
    use std::os::unix::fs::MetadataExt;
    let rdev = std::fs::metadata(dev).expect("dev").rdev();
    let (maj, min) = (libc_major(rdev), libc_minor(rdev));
    assert_eq!(
        cg(&a, "b1", "blkio", "blkio.throttle.read_bps_device"),
        format!("{maj}:{min} 1048576")
    );
    assert_eq!(
        cg(&a, "b1", "blkio", "blkio.throttle.write_bps_device"),
        format!("{maj}:{min} 2097152")
    );
    assert_eq!(
        a.cmd(&["exec", "b1", "cat", "/proc/1/oom_score_adj"])
            .stdout,
        "500\n"
    );
    let lim = a.cmd(&["exec", "b1", "cat", "/proc/1/limits"]).stdout;
    let row = |name: &str| {
        lim.lines()
            .find(|l| l.starts_with(name))
            .map(|l| {
                l.split_whitespace()
                    .rev()
                    .skip(1)
                    .take(2)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    assert_eq!(row("Max open files"), ["2048", "1024"], "{lim}");
    assert_eq!(row("Max processes"), ["500", "500"], "{lim}");
    // Containers start at 0 whatever the agent's own score.
    assert_eq!(
        a.cmd(&["run", "--rm", "busybox", "cat", "/proc/self/oom_score_adj"])
            .stdout,
        "0\n"
    );
    // What this host cannot grant fails at create with a clear message.
    let r = a.try_cmd(&[
        "run",
        "--rm",
        "--ulimit",
        "nofile=1048576:1048576",
        "busybox",
        "true",
    ]);
    let hard = std::fs::read_to_string("/proc/self/limits").expect("limits");
    let host_hard: u64 = hard
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4))
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX);
    if host_hard < 1048576 && !has_sys_resource() {
        assert_eq!(r.code, 125);
        assert!(
            r.stderr.contains("exceeds this host's limit"),
            "{}",
            r.stderr
        );
    }
    let r = a.try_cmd(&[
        "run",
        "--rm",
        "--oom-score-adj",
        "-100",
        "busybox",
        "cat",
        "/proc/self/oom_score_adj",
    ]);
    if has_sys_resource() {
        assert_eq!(r.stdout, "-100\n");
    } else {
        assert_eq!(r.code, 125);
        assert!(r.stderr.contains("CAP_SYS_RESOURCE"), "{}", r.stderr);
    }
    assert_eq!(
        a.try_cmd(&["run", "--rm", "--ulimit", "bogus=1", "busybox", "true"])
            .code,
        125
    );
}

fn has_sys_resource() -> bool {
    let s = std::fs::read_to_string("/proc/self/status").expect("status");
    let caps = s
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).expect("hex"))
        .expect("CapEff");
    caps & (1 << 24) != 0
}

fn libc_major(dev: u64) -> u64 {
    ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff)
}

fn libc_minor(dev: u64) -> u64 {
    ((dev >> 12) & 0xffff_ff00) | (dev & 0xff)
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn update_changes_a_running_container() {
    let a = Agent::start().with_busybox();
    run_d(&a, "u1", &["--memory", "64m", "--pids-limit", "100"]);
    let r = a.cmd(&[
        "update",
        "--memory",
        "128m",
        "--memory-swap",
        "256m",
        "--cpus",
        "1.5",
        "--cpu-shares",
        "256",
        "--pids-limit",
        "40",
        "u1",
    ]);
    assert_eq!(r.stdout, "u1\n");
    assert_eq!(cg(&a, "u1", "memory", "memory.limit_in_bytes"), "134217728");
    assert_eq!(
        cg(&a, "u1", "memory", "memory.memsw.limit_in_bytes"),
        "268435456"
    );
    assert_eq!(cg(&a, "u1", "cpu", "cpu.cfs_quota_us"), "150000");
    assert_eq!(cg(&a, "u1", "cpu", "cpu.shares"), "256");
    assert_eq!(cg(&a, "u1", "pids", "pids.max"), "40");
    assert_eq!(
        a.inspect(
            "u1",
            "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.PidsLimit}}"
        ),
        "134217728 1500000000 40"
    );
    // Lowering memory below the swap limit in one step works too.
    a.cmd(&["update", "--memory", "32m", "u1"]);
    assert_eq!(cg(&a, "u1", "memory", "memory.limit_in_bytes"), "33554432");
    // Kept across a restart.
    a.cmd(&["restart", "-t", "0", "u1"]);
    assert_eq!(cg(&a, "u1", "pids", "pids.max"), "40");
    assert_eq!(cg(&a, "u1", "memory", "memory.limit_in_bytes"), "33554432");
    assert_ne!(a.try_cmd(&["update", "--memory", "64m", "nosuch"]).code, 0);
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn stats_show_dockers_columns() {
    let a = Agent::start().with_busybox();
    run_d(&a, "s1", &["--memory", "64m"]);
    let t = a.cmd(&["stats", "--no-stream"]).stdout;
    let header = t.lines().next().expect("header");
    for col in [
        "CONTAINER ID",
        "NAME",
        "CPU %",
        "MEM USAGE / LIMIT",
        "MEM %",
        "NET I/O",
        "BLOCK I/O",
        "PIDS",
    ] {
        assert!(header.contains(col), "missing {col}: {header}");
    }
    assert!(t.lines().nth(1).expect("row").contains("s1"), "{t}");
    let j = a
        .cmd(&["stats", "--no-stream", "--format", "json", "s1"])
        .stdout;
    let v: serde_json::Value = serde_json::from_str(j.trim()).expect("json");
    assert_eq!(v["Name"], "s1");
    assert!(
        v["MemUsage"].as_str().expect("mem").ends_with("/ 64MiB"),
        "{v}"
    );
    assert_eq!(v["PIDs"], "1");
    // Streaming keeps printing until interrupted.
    let mut child = std::process::Command::new(common::bin())
        .args([
            "--host",
            &a.host(),
            "stats",
            "--format",
            "{{.Name}} {{.PIDs}}",
            "s1",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(2600));
    let _ = child.kill();
    let out = child.wait_with_output().expect("wait");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.matches("s1 1").count() >= 2, "{text}");
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn prune_and_df_report_what_they_free() {
    let a = Agent::start().with_busybox();
    a.cmd(&[
        "run",
        "--name",
        "done1",
        "-v",
        "/anon",
        "busybox",
        "sh",
        "-c",
        "head -c 100000 /dev/zero > /big",
    ]);
    run_d(&a, "live", &[]);
    // A dangling image: re-import under the same tag with a different config.
    let tar = common::busybox_tar().to_string_lossy().into_owned();
    a.cmd(&["image", "import", &tar, "other:1", "-c", "CMD [\"true\"]"]);
    a.cmd(&["image", "import", &tar, "other:1", "-c", "CMD [\"false\"]"]);
    let df = a.cmd(&["system", "df"]).stdout;
    assert!(df.starts_with("TYPE"), "{df}");
    for row in ["Images", "Containers", "Local Volumes", "Build Cache"] {
        assert!(df.contains(row), "missing {row}: {df}");
    }
    let containers_row = df
        .lines()
        .find(|l| l.starts_with("Containers"))
        .expect("row");
    assert!(
        containers_row.split_whitespace().nth(1) == Some("2")
            && containers_row.split_whitespace().nth(2) == Some("1"),
        "{containers_row}"
    );
    let r = a.cmd(&["container", "prune", "-f"]);
    assert!(r.stdout.contains("Deleted Containers:"), "{}", r.stdout);
    assert!(
        r.stdout.contains("Total reclaimed space: 100"),
        "{}",
        r.stdout
    );
    assert_eq!(
        a.cmd(&["ps", "-aq"]).stdout.lines().count(),
        1,
        "the running container stays"
    );
    let r = a.cmd(&["image", "prune", "-f"]);
    assert!(
        r.stdout.contains("Deleted Images:") && r.stdout.contains("deleted: sha256:"),
        "{}",
        r.stdout
    );
    assert!(
        a.cmd(&["images", "-q"]).stdout.lines().count() == 2,
        "busybox and other:1 remain"
    );
    // system prune -a --volumes: the unused image and the anonymous volume go; busybox is in use.
    let r = a.cmd(&["system", "prune", "-af", "--volumes"]);
    assert!(r.stdout.contains("Deleted Volumes:"), "{}", r.stdout);
    assert!(r.stdout.contains("untagged: other:1"), "{}", r.stdout);
    assert!(r.stdout.contains("Total reclaimed space:"), "{}", r.stdout);
    assert_eq!(a.cmd(&["images", "-q"]).stdout.lines().count(), 1);
    assert_eq!(a.cmd(&["volume", "ls", "-q"]).stdout, "");
    // Without -f, declining removes nothing.
    a.cmd(&["stop", "-t", "0", "live"]);
    let r = a.cmd_stdin(&["container", "prune"], b"n\n");
    assert!(
        r.stdout
            .contains("WARNING! This will remove all stopped containers."),
        "{}",
        r.stdout
    );
    assert_eq!(a.cmd(&["ps", "-aq"]).stdout.lines().count(), 1);
}
