//! A full disk under `--root`. Containers still stop, die and get killed; the agent's
//! view follows the processes; and the state they reach is written once there is room
//! again, so a restarted agent agrees. (The chaos test found the failure this guards:
//! a start whose state write hit ENOSPC left a running container nobody watched, and
//! every later stop of it failed.)

mod common;

use common::Agent;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Fills the filesystem under `root` while it lives.
struct Filler(PathBuf);

impl Filler {
    fn fill(root: &Path) -> Filler {
        let path = root.join("fill");
        let mut f = std::fs::File::create(&path).expect("create fill file");
        let chunk = vec![0u8; 1 << 20];
        while f.write_all(&chunk).is_ok() {}
        // The last partial megabyte, byte by page.
        while f.write_all(&chunk[..4096]).is_ok() {}
        Filler(path)
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn status_on_disk(a: &Agent, id: &str) -> String {
    let p = a.root.join("containers").join(id).join("state.json");
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&p).expect("state.json")).expect("state json");
    v["status"].as_str().unwrap_or_default().to_string()
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn stop_kill_and_exit_work_on_a_full_disk_and_reach_it_when_room_returns() {
    let mut a = Agent::start_on_tmpfs("64m").with_busybox();
    let stopped = a
        .cmd(&["run", "-d", "--name", "stopme", "busybox", "sleep", "1000"])
        .stdout
        .trim()
        .to_string();
    let killed = a
        .cmd(&["run", "-d", "--name", "killme", "busybox", "sleep", "1000"])
        .stdout
        .trim()
        .to_string();
    let exits = a
        .cmd(&["run", "-d", "--name", "exits", "busybox", "sleep", "2"])
        .stdout
        .trim()
        .to_string();

    let fill = Filler::fill(&a.root);
    a.cmd(&["stop", "-t", "1", "stopme"]);
    a.cmd(&["kill", "killme"]);
    for name in ["killme", "exits"] {
        a.wait_until(
            &format!("{name} exits on the full disk"),
            Duration::from_secs(20),
            || a.inspect(name, "{{.State.Status}}") == "exited",
        );
    }
    assert_eq!(a.inspect("stopme", "{{.State.Status}}"), "exited");
    assert_eq!(a.inspect("killme", "{{.State.ExitCode}}"), "137");
    assert_eq!(a.inspect("exits", "{{.State.ExitCode}}"), "0");
    // The disk could not take the new states: the path under test was taken.
    for id in [&stopped, &killed, &exits] {
        assert_eq!(status_on_disk(&a, id), "running", "state of {id} written?");
    }
    // The container is gone from the host, not just from the agent's view.
    let pids = a.cmd(&["ps", "-q", "--no-trunc"]).stdout;
    assert!(pids.trim().is_empty(), "still running: {pids}");

    drop(fill);
    a.wait_until(
        "the states to reach the disk",
        Duration::from_secs(10),
        || {
            [&stopped, &killed, &exits]
                .iter()
                .all(|id| status_on_disk(&a, id) == "exited")
        },
    );
    assert!(
        a.log().contains("writing container state; will retry"),
        "the failed write was not logged"
    );
    // A restarted agent reads what was written.
    a.restart();
    assert_eq!(a.inspect("stopme", "{{.State.Status}}"), "exited");
    assert_eq!(a.inspect("killme", "{{.State.ExitCode}}"), "137");
    assert_eq!(a.inspect("exits", "{{.State.Status}}"), "exited");
    // And the containers can run again.
    a.cmd(&["start", "stopme"]);
    assert_eq!(a.inspect("stopme", "{{.State.Status}}"), "running");
}
