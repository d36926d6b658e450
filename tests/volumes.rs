//! End-to-end tests of volumes: named (with copy-up), anonymous, bind, `--mount`,
//! `--tmpfs`, `--volumes-from`, the volume commands, `rm -v` / `--rm`, `inspect`
//! Mounts, and symlinked mount targets in the image that must not escape the rootfs.

mod common;
use common::Agent;
use std::path::Path;

fn volume_names(a: &Agent) -> Vec<String> {
    a.cmd(&["volume", "ls", "-q"])
        .stdout
        .lines()
        .map(String::from)
        .collect()
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn named_volume_is_shared_and_outlives_containers() {
    let a = Agent::start().with_busybox();
    a.cmd(&[
        "run",
        "--rm",
        "-v",
        "data:/data",
        "busybox",
        "sh",
        "-c",
        "echo hello > /data/f",
    ]);
    // Created on first use; --rm does not take a named volume with it.
    assert_eq!(volume_names(&a), vec!["data"]);
    let r = a.cmd(&[
        "run",
        "--rm",
        "-v",
        "data:/other:ro",
        "busybox",
        "cat",
        "/other/f",
    ]);
    assert_eq!(r.stdout, "hello\n");
    let ro = a.try_cmd(&[
        "run",
        "--rm",
        "-v",
        "data:/other:ro",
        "busybox",
        "touch",
        "/other/x",
    ]);
    assert_ne!(ro.code, 0, "write to a read-only volume succeeded");
    assert!(ro.stderr.contains("Read-only file system"), "{}", ro.stderr);
    // On the host, under the agent's root.
    let host = a.root.join("volumes/data/_data/f");
    assert_eq!(
        std::fs::read_to_string(&host).expect("host file"),
        "hello\n"
    );
    let mp = a
        .cmd(&[
            "volume",
            "inspect",
            "-f",
            "{{.Mountpoint}} {{.Driver}} {{.Name}}",
            "data",
        ])
        .stdout;
    assert_eq!(
        mp.trim(),
        format!("{} local data", a.root.join("volumes/data/_data").display())
    );
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn copy_up_fills_a_new_volume_with_image_content() {
    let a = Agent::start().with_busybox();
    a.cmd(&["run", "--rm", "-v", "etcvol:/etc", "busybox", "true"]);
    let r = a.cmd(&[
        "run",
        "--rm",
        "-v",
        "etcvol:/x",
        "busybox",
        "grep",
        "www-data",
        "/x/passwd",
    ]);
    assert!(r.stdout.starts_with("www-data:x:33"), "{}", r.stdout);
    // A volume that already has content is not overwritten.
    a.cmd(&[
        "run",
        "--rm",
        "-v",
        "keep:/k",
        "busybox",
        "sh",
        "-c",
        "echo mine > /k/only",
    ]);
    a.cmd(&["run", "--rm", "-v", "keep:/etc", "busybox", "true"]);
    let ls = a
        .cmd(&["run", "--rm", "-v", "keep:/k", "busybox", "ls", "/k"])
        .stdout;
    assert_eq!(ls, "only\n");
    // nocopy leaves it empty.
    let ls = a
        .cmd(&[
            "run",
            "--rm",
            "-v",
            "empty:/etc:nocopy",
            "busybox",
            "/bin/ls",
            "-A",
            "/etc",
        ])
        .stdout;
    assert_eq!(ls, "");
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn bind_mounts_tmpfs_and_mount_flag() {
    let a = Agent::start().with_busybox();
    let host = a.dir.path().join("hostdir");
    std::fs::create_dir_all(&host).expect("mkdir");
    std::fs::write(host.join("in"), "from host\n").expect("write");
    let spec = format!("{}:/h", host.display());
    let r = a.cmd(&[
        "run",
        "--rm",
        "-v",
        &spec,
        "busybox",
        "sh",
        "-c",
        "cat /h/in; echo back > /h/out",
    ]);
    assert_eq!(r.stdout, "from host\n");
    assert_eq!(
        std::fs::read_to_string(host.join("out")).expect("out"),
        "back\n"
    );
    // -v creates a missing host directory; --mount type=bind refuses it.
    let made = a.dir.path().join("made/by/v");
    a.cmd(&[
        "run",
        "--rm",
        "-v",
        &format!("{}:/m", made.display()),
        "busybox",
        "true",
    ]);
    assert!(made.is_dir());
    let missing = format!("type=bind,source={}/nope,target=/x", a.dir.path().display());
    let r = a.try_cmd(&["run", "--rm", "--mount", &missing, "busybox", "true"]);
    assert_eq!(r.code, 125);
    assert!(
        r.stderr.contains("bind source path does not exist"),
        "{}",
        r.stderr
    );
    // --mount bind, read-only.
    let m = format!("type=bind,source={},target=/ro,readonly", host.display());
    let r = a.try_cmd(&[
        "run",
        "--rm",
        "--mount",
        &m,
        "busybox",
        "sh",
        "-c",
        "cat /ro/in && touch /ro/new",
    ]);
    assert_eq!(r.stdout, "from host\n");
    assert_ne!(r.code, 0);
    assert!(!host.join("new").exists());
    // --mount volume and tmpfs; --tmpfs with Docker's defaults.
    a.cmd(&[
        "run",
        "--rm",
        "--mount",
        "type=volume,source=mv,target=/mv",
        "busybox",
        "sh",
        "-c",
        "echo v > /mv/f",
    ]);
    assert_eq!(
        a.cmd(&["run", "--rm", "-v", "mv:/x", "busybox", "cat", "/x/f"])
            .stdout,
        "v\n"
    );
    let r = a.cmd(&[
        "run",
        "--rm",
        "--mount",
        "type=tmpfs,target=/t,tmpfs-size=1m",
        "--tmpfs",
        "/run2:size=2m",
        "busybox",
        "sh",
        "-c",
        "grep -E ' /(t|run2) ' /proc/mounts",
    ]);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", r.stdout);
    let t = lines.iter().find(|l| l.contains(" /t ")).expect("/t");
    assert!(t.starts_with("tmpfs") && t.contains("size=1024k"), "{t}");
    let run2 = lines.iter().find(|l| l.contains(" /run2 ")).expect("/run2");
    assert!(
        run2.contains("size=2048k") && run2.contains("noexec") && run2.contains("nosuid"),
        "{run2}"
    );
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn anonymous_volumes_go_with_rm_v_and_rm() {
    let a = Agent::start().with_busybox();
    a.cmd(&[
        "create", "--name", "c1", "-v", "/anon", "-v", "named:/n", "busybox", "true",
    ]);
    let vols = volume_names(&a);
    assert_eq!(vols.len(), 2, "{vols:?}");
    let anon: Vec<_> = vols.iter().filter(|v| v.len() == 64).cloned().collect();
    assert_eq!(anon.len(), 1);
    // In use: refused.
    let r = a.try_cmd(&["volume", "rm", &anon[0]]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("volume is in use"), "{}", r.stderr);
    // Mounts in inspect, like Docker.
    let m = a.inspect(
        "c1",
        "{{range .Mounts}}{{.Type}},{{.Destination}},{{.RW}},{{.Driver}};{{end}}",
    );
    assert!(m.contains("volume,/anon,true,local;"), "{m}");
    assert!(m.contains("volume,/n,true,local;"), "{m}");
    let name = a.inspect(
        "c1",
        "{{range .Mounts}}{{if eq .Destination \"/n\"}}{{.Name}}{{end}}{{end}}",
    );
    assert_eq!(name, "named");
    a.cmd(&["rm", "-v", "c1"]);
    assert_eq!(
        volume_names(&a),
        vec!["named"],
        "rm -v keeps named volumes, drops anonymous ones"
    );
    // --rm drops anonymous volumes too.
    a.cmd(&["run", "--rm", "-v", "/anon2", "busybox", "true"]);
    assert_eq!(volume_names(&a), vec!["named"]);
    // Plain rm keeps them.
    a.cmd(&["run", "--name", "c2", "-v", "/anon3", "busybox", "true"]);
    a.cmd(&["rm", "c2"]);
    assert_eq!(volume_names(&a).len(), 2);
    // volume prune: anonymous unused ones by default, all unused with -a.
    let r = a.cmd(&["volume", "prune", "-f"]);
    assert!(
        r.stdout.contains("Deleted Volumes:") && r.stdout.contains("Total reclaimed space:"),
        "{}",
        r.stdout
    );
    assert_eq!(volume_names(&a), vec!["named"]);
    a.cmd(&["volume", "prune", "-af"]);
    assert!(volume_names(&a).is_empty());
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn volumes_from_a_created_container() {
    let a = Agent::start().with_busybox();
    a.cmd(&[
        "create",
        "--name",
        "store",
        "-v",
        "/shared",
        "-v",
        "named2:/n2",
        "busybox",
        "true",
    ]);
    a.cmd(&[
        "run",
        "--rm",
        "--volumes-from",
        "store",
        "busybox",
        "sh",
        "-c",
        "echo one > /shared/a; echo two > /n2/b",
    ]);
    let r = a.cmd(&[
        "run",
        "--rm",
        "--volumes-from",
        "store:ro",
        "busybox",
        "cat",
        "/shared/a",
        "/n2/b",
    ]);
    assert_eq!(r.stdout, "one\ntwo\n");
    let r = a.try_cmd(&[
        "run",
        "--rm",
        "--volumes-from",
        "store:ro",
        "busybox",
        "touch",
        "/shared/c",
    ]);
    assert_ne!(r.code, 0, ":ro was not applied");
    // The anonymous volume belongs to `store`: the --rm runs did not remove it.
    assert_eq!(volume_names(&a).len(), 2);
    let r = a.try_cmd(&["run", "--rm", "--volumes-from", "nosuch", "busybox", "true"]);
    assert_eq!(r.code, 125);
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn volume_commands_and_filters() {
    let a = Agent::start().with_busybox();
    assert_eq!(
        a.cmd(&["volume", "create", "--label", "env=prod", "v1"])
            .stdout,
        "v1\n"
    );
    a.cmd(&["volume", "create", "v2"]);
    let anon = a.cmd(&["volume", "create"]).stdout.trim().to_string();
    assert_eq!(anon.len(), 64);
    a.cmd(&["create", "--name", "user", "-v", "v2:/x", "busybox", "true"]);
    let ls = a.cmd(&["volume", "ls"]).stdout;
    let words = |l: &str| l.split_whitespace().map(String::from).collect::<Vec<_>>();
    assert_eq!(
        words(ls.lines().next().expect("header")),
        ["DRIVER", "VOLUME", "NAME"],
        "{ls}"
    );
    assert!(ls.lines().any(|l| words(l) == ["local", "v1"]), "{ls}");
    let q = |f: &str| a.cmd(&["volume", "ls", "-q", "-f", f]).stdout;
    assert_eq!(q("label=env=prod"), "v1\n");
    assert_eq!(q("label=env=dev"), "");
    assert_eq!(q("name=v2"), "v2\n");
    assert_eq!(q("dangling=false"), "v2\n");
    assert!(!q("dangling=true").contains("v2"));
    let labels = a
        .cmd(&[
            "volume",
            "inspect",
            "-f",
            "{{.Labels.env}} {{.Driver}}",
            "v1",
        ])
        .stdout;
    assert_eq!(labels, "prod local\n");
    let doc: serde_json::Value =
        serde_json::from_str(&a.cmd(&["volume", "inspect", "v1"]).stdout).expect("json");
    for k in [
        "Name",
        "Driver",
        "Mountpoint",
        "CreatedAt",
        "Labels",
        "Scope",
    ] {
        assert!(doc[0].get(k).is_some(), "missing {k}: {doc}");
    }
    assert_eq!(a.try_cmd(&["volume", "inspect", "nosuch"]).code, 1);
    assert_ne!(a.try_cmd(&["volume", "rm", "v2"]).code, 0);
    a.cmd(&["volume", "rm", "v1", &anon]);
    assert_eq!(a.cmd(&["volume", "ls", "-q"]).stdout, "v2\n");
    assert_ne!(a.try_cmd(&["volume", "create", "bad/name"]).code, 0);
    // Prune without -f and a "no" answer removes nothing.
    a.cmd(&["rm", "user"]);
    let r = a.cmd_stdin(&["volume", "prune", "-a"], b"n\n");
    assert!(
        r.stdout
            .contains("Are you sure you want to continue? [y/N]"),
        "{}",
        r.stdout
    );
    assert_eq!(a.cmd(&["volume", "ls", "-q"]).stdout, "v2\n");
    let r = a.cmd_stdin(&["volume", "prune", "-a"], b"y\n");
    assert!(r.stdout.contains("v2"), "{}", r.stdout);
    assert_eq!(a.cmd(&["volume", "ls", "-q"]).stdout, "");
}

/// Builds an image whose mount targets are symlinks pointing out of the rootfs.
fn import_evil_image(a: &Agent, outside: &Path) {
    let work = a.dir.path().join("evil");
    let root = work.join("rootfs");
    std::fs::create_dir_all(&root).expect("mkdir");
    let st = std::process::Command::new("tar")
        .arg("-xf")
        .arg(common::busybox_tar())
        .arg("-C")
        .arg(&root)
        .status()
        .expect("tar");
    assert!(st.success());
    // Absolute and relative links to a host directory, and a link to a host file path.
    std::os::unix::fs::symlink(outside.join("sub"), root.join("abs")).expect("symlink");
    std::os::unix::fs::symlink(
        format!("../../../../../../..{}", outside.join("rel").display()),
        root.join("rel"),
    )
    .expect("symlink");
    std::os::unix::fs::symlink(outside.join("file"), root.join("file")).expect("symlink");
    let tar = work.join("evil.tar");
    let st = std::process::Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&root)
        .arg(".")
        .status()
        .expect("tar");
    assert!(st.success());
    a.cmd(&[
        "image",
        "import",
        &tar.to_string_lossy(),
        "evil:latest",
        "-c",
        "CMD [\"sh\"]",
    ]);
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn symlinked_mount_targets_cannot_escape_the_rootfs() {
    let a = Agent::start().with_busybox();
    let outside = a.dir.path().join("outside");
    std::fs::create_dir_all(&outside).expect("outside");
    import_evil_image(&a, &outside);
    let hostfile = a.dir.path().join("hostfile");
    std::fs::write(&hostfile, "bound\n").expect("hostfile");
    let host = a.dir.path().join("bindsrc");
    std::fs::create_dir_all(&host).expect("bindsrc");
    let r = a.cmd(&[
        "run",
        "--rm",
        "-v",
        "escvol:/abs",
        "-v",
        &format!("{}:/rel", host.display()),
        "-v",
        &format!("{}:/file", hostfile.display()),
        "--tmpfs",
        "/abs2",
        "evil",
        "sh",
        "-c",
        "echo in-volume > /abs/x; echo in-bind > /rel/y; cat /file",
    ]);
    assert_eq!(r.stdout, "bound\n");
    // Nothing was created or mounted outside the rootfs...
    let leaked: Vec<_> = std::fs::read_dir(&outside)
        .expect("ls")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(leaked.is_empty(), "created outside the rootfs: {leaked:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(&outside.display().to_string()),
        "host path became a mount point"
    );
    // ...and the writes went where the mounts are.
    assert_eq!(
        std::fs::read_to_string(a.root.join("volumes/escvol/_data/x")).expect("vol"),
        "in-volume\n"
    );
    assert_eq!(
        std::fs::read_to_string(host.join("y")).expect("bind"),
        "in-bind\n"
    );
}
