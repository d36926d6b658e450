//! Usage counters of one container, read from its cgroup (v1 or v2) and, for network
//! I/O, from its init process's `/proc/<pid>/net/dev`. The numbers are raw; CPU % is
//! computed from two samples as Docker's CLI does.

use super::Cgroup;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One sample. Memory usage excludes the inactive page cache, as `docker stats` does.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Total CPU time used by the container, in nanoseconds.
    pub cpu_total_ns: u64,
    /// Host CPU time (all CPUs, all states) in nanoseconds, from /proc/stat.
    pub system_ns: u64,
    pub online_cpus: u32,
    pub mem_usage: u64,
    pub mem_limit: u64,
    pub pids: u64,
    pub blk_read: u64,
    pub blk_write: u64,
    pub net_rx: u64,
    pub net_tx: u64,
}

impl Sample {
    /// Docker's CPU %: container delta over system delta, times the number of CPUs.
    pub fn cpu_percent(&self, prev: &Sample) -> f64 {
        let cpu = self.cpu_total_ns.saturating_sub(prev.cpu_total_ns) as f64;
        let sys = self.system_ns.saturating_sub(prev.system_ns) as f64;
        if sys <= 0.0 || cpu <= 0.0 {
            return 0.0;
        }
        cpu / sys * self.online_cpus.max(1) as f64 * 100.0
    }

    pub fn mem_percent(&self) -> f64 {
        if self.mem_limit == 0 {
            return 0.0;
        }
        self.mem_usage as f64 / self.mem_limit as f64 * 100.0
    }
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

fn num(s: Option<String>) -> Option<u64> {
    s.and_then(|s| s.trim().parse().ok())
}

fn key(text: &str, k: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (name, v) = l.split_once(' ')?;
        (name == k).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Host CPU time from the first line of `/proc/stat` (USER_HZ ticks → ns).
pub fn system_cpu_ns(proc_stat: &str) -> u64 {
    let ticks: u64 = proc_stat
        .lines()
        .next()
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .take(8)
                .filter_map(|v| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    // USER_HZ is 100 on every Linux ABI Skiff supports.
    ticks * 10_000_000
}

/// Received and transmitted bytes over all interfaces but loopback.
pub fn net_dev(text: &str) -> (u64, u64) {
    let mut rx = 0;
    let mut tx = 0;
    for l in text.lines().skip(2) {
        let Some((iface, rest)) = l.split_once(':') else {
            continue;
        };
        if iface.trim() == "lo" {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        if f.len() >= 9 {
            rx += f[0];
            tx += f[8];
        }
    }
    (rx, tx)
}

impl Cgroup {
    /// Reads one sample. `host_mem` caps an unlimited memory limit (Docker shows the
    /// host's memory then); `pid` is the container's init, for network counters.
    pub fn sample(&self, host_mem: u64, pid: i32, proc_root: &Path) -> Sample {
        let mut s = Sample::default();
        if self.is_v2() {
            let d = self.dir("");
            if let Some(t) = read(&d.join("cpu.stat")) {
                s.cpu_total_ns = key(&t, "usage_usec").unwrap_or(0) * 1000;
            }
            let usage = num(read(&d.join("memory.current"))).unwrap_or(0);
            let inactive = read(&d.join("memory.stat"))
                .and_then(|t| key(&t, "inactive_file"))
                .unwrap_or(0);
            s.mem_usage = usage.saturating_sub(inactive);
            s.mem_limit = num(read(&d.join("memory.max"))).unwrap_or(host_mem);
            s.pids = num(read(&d.join("pids.current"))).unwrap_or(0);
            if let Some(t) = read(&d.join("io.stat")) {
                for l in t.lines() {
                    for kv in l.split_whitespace().skip(1) {
                        match kv.split_once('=') {
                            Some(("rbytes", v)) => s.blk_read += v.parse::<u64>().unwrap_or(0),
                            Some(("wbytes", v)) => s.blk_write += v.parse::<u64>().unwrap_or(0),
                            _ => {}
                        }
                    }
                }
            }
        } else {
            s.cpu_total_ns = num(read(&self.dir("cpuacct").join("cpuacct.usage"))).unwrap_or(0);
            let m = self.dir("memory");
            let usage = num(read(&m.join("memory.usage_in_bytes"))).unwrap_or(0);
            let inactive = read(&m.join("memory.stat"))
                .and_then(|t| key(&t, "total_inactive_file"))
                .unwrap_or(0);
            s.mem_usage = usage.saturating_sub(inactive);
            s.mem_limit = num(read(&m.join("memory.limit_in_bytes"))).unwrap_or(host_mem);
            s.pids = num(read(&self.dir("pids").join("pids.current"))).unwrap_or(0);
            if let Some(t) = read(
                &self
                    .dir("blkio")
                    .join("blkio.throttle.io_service_bytes_recursive"),
            ) {
                for l in t.lines() {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    if let [_, op, v] = f.as_slice() {
                        match *op {
                            "Read" => s.blk_read += v.parse::<u64>().unwrap_or(0),
                            "Write" => s.blk_write += v.parse::<u64>().unwrap_or(0),
                            _ => {}
                        }
                    }
                }
            }
        }
        if host_mem > 0 && s.mem_limit > host_mem {
            s.mem_limit = host_mem;
        }
        if let Some(t) = read(&proc_root.join("stat")) {
            s.system_ns = system_cpu_ns(&t);
            s.online_cpus = t
                .lines()
                .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
                .count() as u32;
        }
        if pid > 0 {
            if let Some(t) = read(&proc_root.join(pid.to_string()).join("net/dev")) {
                (s.net_rx, s.net_tx) = net_dev(&t);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const PROC_STAT: &str = "cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 50 0 50 400 0 0 0 0 0 0\ncpu1 50 0 50 400 0 0 0 0 0 0\n";
    const NET_DEV: &str = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:  999 1 0 0 0 0 0 0  999 1 0 0 0 0 0 0\n  eth0: 1500 10 0 0 0 0 0 0  700 5 0 0 0 0 0 0\n";

    fn proc_fixture() -> tempfile::TempDir {
        let p = tempfile::tempdir().expect("proc");
        fs::write(p.path().join("stat"), PROC_STAT).expect("stat");
        fs::create_dir_all(p.path().join("42/net")).expect("net");
        fs::write(p.path().join("42/net/dev"), NET_DEV).expect("dev");
        p
    }

    #[test]
    fn v1_sample() {
        let d = tempfile::tempdir().expect("cg");
        let w = |ctl: &str, f: &str, v: &str| {
            let dir = d.path().join(ctl).join("skiff/abc");
            fs::create_dir_all(&dir).expect("mkdir");
            fs::write(dir.join(f), v).expect("write");
        };
        w("cpuacct", "cpuacct.usage", "5000000\n");
        w("memory", "memory.usage_in_bytes", "10485760\n");
        w(
            "memory",
            "memory.stat",
            "cache 1\ntotal_inactive_file 2097152\n",
        );
        w("memory", "memory.limit_in_bytes", "9223372036854771712\n");
        w("pids", "pids.current", "3\n");
        w(
            "blkio",
            "blkio.throttle.io_service_bytes_recursive",
            "254:0 Read 4096\n254:0 Write 8192\n254:0 Total 12288\nTotal 12288\n",
        );
        let p = proc_fixture();
        let s = Cgroup::at(d.path(), "/skiff/abc").sample(1 << 30, 42, p.path());
        assert_eq!(s.cpu_total_ns, 5_000_000);
        assert_eq!(s.mem_usage, 8 << 20);
        assert_eq!(s.mem_limit, 1 << 30, "unlimited is capped at host memory");
        assert_eq!((s.pids, s.blk_read, s.blk_write), (3, 4096, 8192));
        assert_eq!((s.net_rx, s.net_tx), (1500, 700));
        assert_eq!(s.online_cpus, 2);
        assert_eq!(s.system_ns, 1000 * 10_000_000);
    }

    #[test]
    fn v2_sample_and_percentages() {
        let d = tempfile::tempdir().expect("cg");
        fs::write(d.path().join("cgroup.controllers"), "cpu memory\n").expect("ctl");
        let dir = d.path().join("skiff/abc");
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join("cpu.stat"), "usage_usec 2000\nuser_usec 1000\n").expect("w");
        fs::write(dir.join("memory.current"), "4194304\n").expect("w");
        fs::write(dir.join("memory.stat"), "anon 1\ninactive_file 1048576\n").expect("w");
        fs::write(dir.join("memory.max"), "max\n").expect("w");
        fs::write(dir.join("pids.current"), "7\n").expect("w");
        fs::write(
            dir.join("io.stat"),
            "254:0 rbytes=100 wbytes=200 rios=1 wios=2\n",
        )
        .expect("w");
        let p = proc_fixture();
        let s = Cgroup::at(d.path(), "skiff/abc").sample(1 << 30, 0, p.path());
        assert_eq!(s.cpu_total_ns, 2_000_000);
        assert_eq!(s.mem_usage, 3 << 20);
        assert_eq!(s.mem_limit, 1 << 30);
        assert_eq!((s.pids, s.blk_read, s.blk_write), (7, 100, 200));
        let prev = Sample {
            cpu_total_ns: 0,
            system_ns: 0,
            ..s.clone()
        };
        let next = Sample {
            cpu_total_ns: 500,
            system_ns: 1000,
            online_cpus: 2,
            ..s.clone()
        };
        assert!((next.cpu_percent(&prev) - 100.0).abs() < 1e-9);
        assert!((s.mem_percent() - 3.0 / 1024.0 * 100.0).abs() < 1e-9);
    }
}
