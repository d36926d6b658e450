//! Resource limits and cgroup access, for cgroup v1/hybrid and v2.
//!
//! - [`Resources`]: Docker's HostConfig resource fields, validated with Docker's rules
//!   and turned into the OCI `linux.resources` section that libcontainer applies.
//! - [`Cgroup`]: one container's cgroup on either hierarchy layout; reads usage
//!   ([`stats`]) and writes live updates (`skiff update`). Every path is rooted at a
//!   configurable base so both layouts are unit-tested on fixture trees.

pub mod stats;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// A `--device-read-bps` / `--device-write-bps` entry, with the device numbers
/// resolved on the host at create.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThrottleDevice {
    pub path: String,
    pub major: i64,
    pub minor: i64,
    /// Bytes per second.
    pub rate: u64,
}

/// A `--ulimit NAME=SOFT[:HARD]` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

/// Docker's resource settings. Zero means "not set" for every number, as in Docker's
/// HostConfig; `memory_swap` and `pids_limit` use -1 for unlimited.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Resources {
    pub memory: i64,
    pub memory_swap: i64,
    pub memory_reservation: i64,
    pub nano_cpus: i64,
    pub cpu_shares: i64,
    pub cpuset_cpus: String,
    pub pids_limit: i64,
    pub blkio_weight: u16,
    pub device_read_bps: Vec<ThrottleDevice>,
    pub device_write_bps: Vec<ThrottleDevice>,
    pub oom_kill_disable: bool,
    pub oom_score_adj: i32,
    pub ulimits: Vec<Ulimit>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ResourceError {
    #[error("Minimum memory limit allowed is 6MB")]
    MemoryTooSmall,
    #[error("You should always set the Memory limit when using Memoryswap limit, see usage")]
    SwapWithoutMemory,
    #[error("Minimum memoryswap limit should be larger than memory limit, see usage")]
    SwapBelowMemory,
    #[error("Minimum memory limit can not be less than memory reservation limit, see usage")]
    ReservationAboveMemory,
    #[error("Range of CPUs is from 0.01 to {max}.00, as there are only {max} CPUs available")]
    TooManyCpus { max: usize },
    #[error("invalid value {0:?} for --cpus")]
    BadCpus(String),
    #[error("Requested CPUs are not available - requested {requested}, available: {available}")]
    CpusetUnavailable {
        requested: String,
        available: String,
    },
    #[error("Invalid value {0}, CPU shares should be at least 2")]
    BadShares(i64),
    #[error("Range of blkio weight is from 10 to 1000")]
    BadBlkioWeight,
    #[error("Invalid value {0}, range for oom score adj is [-1000, 1000]")]
    BadOomScoreAdj(i32),
    #[error("--oom-score-adj={0}: lowering a process's OOM score needs CAP_SYS_RESOURCE, which this host withholds from the agent; use a value of 0 or more")]
    OomScoreNeedsCap(i32),
    #[error("invalid ulimit argument: {0}")]
    BadUlimit(String),
    #[error("ulimit {name}: hard limit {hard} exceeds this host's limit of {host}; raising a hard limit needs CAP_SYS_RESOURCE, which this host withholds from the agent")]
    UlimitAboveHost { name: String, hard: i64, host: i64 },
    #[error("invalid argument {0:?}: want PATH:RATE, e.g. /dev/sda:1mb")]
    BadThrottle(String),
    #[error("{path}: {reason}")]
    BadDevice { path: String, reason: String },
}

/// Linux rlimit names as `--ulimit` spells them.
const ULIMITS: &[(&str, &str)] = &[
    ("as", "RLIMIT_AS"),
    ("core", "RLIMIT_CORE"),
    ("cpu", "RLIMIT_CPU"),
    ("data", "RLIMIT_DATA"),
    ("fsize", "RLIMIT_FSIZE"),
    ("locks", "RLIMIT_LOCKS"),
    ("memlock", "RLIMIT_MEMLOCK"),
    ("msgqueue", "RLIMIT_MSGQUEUE"),
    ("nice", "RLIMIT_NICE"),
    ("nofile", "RLIMIT_NOFILE"),
    ("nproc", "RLIMIT_NPROC"),
    ("rss", "RLIMIT_RSS"),
    ("rtprio", "RLIMIT_RTPRIO"),
    ("rttime", "RLIMIT_RTTIME"),
    ("sigpending", "RLIMIT_SIGPENDING"),
    ("stack", "RLIMIT_STACK"),
];

fn rlimit_resource(name: &str) -> Option<nix::sys::resource::Resource> {
    use nix::sys::resource::Resource as R;
    Some(match name {
        "as" => R::RLIMIT_AS,
        "core" => R::RLIMIT_CORE,
        "cpu" => R::RLIMIT_CPU,
        "data" => R::RLIMIT_DATA,
        "fsize" => R::RLIMIT_FSIZE,
        "locks" => R::RLIMIT_LOCKS,
        "memlock" => R::RLIMIT_MEMLOCK,
        "msgqueue" => R::RLIMIT_MSGQUEUE,
        "nice" => R::RLIMIT_NICE,
        "nofile" => R::RLIMIT_NOFILE,
        "nproc" => R::RLIMIT_NPROC,
        "rss" => R::RLIMIT_RSS,
        "rtprio" => R::RLIMIT_RTPRIO,
        "rttime" => R::RLIMIT_RTTIME,
        "sigpending" => R::RLIMIT_SIGPENDING,
        "stack" => R::RLIMIT_STACK,
        _ => return None,
    })
}

/// Parses `NAME=SOFT[:HARD]` (`-1` or `unlimited` for no limit).
pub fn parse_ulimit(s: &str) -> Result<Ulimit, ResourceError> {
    let bad = || ResourceError::BadUlimit(s.into());
    let (name, vals) = s.split_once('=').ok_or_else(bad)?;
    if !ULIMITS.iter().any(|(n, _)| *n == name) {
        return Err(ResourceError::BadUlimit(format!(
            "invalid ulimit type: {name}"
        )));
    }
    let num = |v: &str| -> Result<i64, ResourceError> {
        match v {
            "unlimited" | "-1" => Ok(-1),
            v => {
                v.parse::<i64>()
                    .map_err(|_| bad())
                    .and_then(|n| if n < 0 { Err(bad()) } else { Ok(n) })
            }
        }
    };
    let (soft, hard) = match vals.split_once(':') {
        Some((s, h)) => (num(s)?, num(h)?),
        None => (num(vals)?, num(vals)?),
    };
    let unl = |v: i64| if v < 0 { i64::MAX } else { v };
    if unl(soft) > unl(hard) {
        return Err(ResourceError::BadUlimit(format!(
            "ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}"
        )));
    }
    Ok(Ulimit {
        name: name.into(),
        soft,
        hard,
    })
}

/// Parses `PATH:RATE` and resolves the block device's numbers on this host.
pub fn parse_throttle(s: &str) -> Result<ThrottleDevice, ResourceError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let (path, rate) = s
        .rsplit_once(':')
        .ok_or_else(|| ResourceError::BadThrottle(s.into()))?;
    let rate = crate::volume::parse::parse_bytes(rate)
        .ok_or_else(|| ResourceError::BadThrottle(s.into()))? as u64;
    let md = std::fs::metadata(path).map_err(|e| ResourceError::BadDevice {
        path: path.into(),
        reason: e.to_string(),
    })?;
    if !md.file_type().is_block_device() {
        return Err(ResourceError::BadDevice {
            path: path.into(),
            reason: "not a block device".into(),
        });
    }
    let rdev = md.rdev();
    Ok(ThrottleDevice {
        path: path.into(),
        major: libc::major(rdev) as i64,
        minor: libc::minor(rdev) as i64,
        rate,
    })
}

/// Parses `--cpus` (a decimal number of CPUs) into nano-CPUs.
pub fn parse_cpus(s: &str) -> Result<i64, ResourceError> {
    let f: f64 = s
        .trim()
        .parse()
        .map_err(|_| ResourceError::BadCpus(s.into()))?;
    if !(0.0..=1e6).contains(&f) {
        return Err(ResourceError::BadCpus(s.into()));
    }
    Ok((f * 1e9).round() as i64)
}

/// Expands a cpuset list (`0-2,4`) into CPU numbers.
pub fn parse_cpuset(s: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if a > b {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().ok()?),
        }
    }
    Some(out)
}

/// What the host offers, for validation (read once by the agent; faked in tests).
#[derive(Clone, Debug)]
pub struct HostLimits {
    pub ncpu: usize,
    /// The agent's cpuset (`0-1`).
    pub cpus: String,
    pub swap_accounting: bool,
    pub blkio_weight: bool,
    /// Whether the agent holds CAP_SYS_RESOURCE (needed to lower oom_score_adj or raise hard rlimits).
    pub sys_resource: bool,
}

impl HostLimits {
    pub fn detect() -> Self {
        let ncpu = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let cpus = std::fs::read_to_string("/sys/fs/cgroup/cpuset/cpuset.effective_cpus")
            .or_else(|_| std::fs::read_to_string("/sys/fs/cgroup/cpuset.cpus.effective"))
            .or_else(|_| std::fs::read_to_string("/sys/devices/system/cpu/online"))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| format!("0-{}", ncpu.saturating_sub(1)));
        let v2 = is_v2(Path::new("/sys/fs/cgroup"));
        let swap_accounting = if v2 {
            true
        } else {
            Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists()
        };
        let blkio_weight = if v2 {
            // io.weight / io.bfq.weight only exist in child cgroups; assume BFQ or io.cost.
            true
        } else {
            ["blkio.weight", "blkio.bfq.weight"]
                .iter()
                .any(|f| Path::new("/sys/fs/cgroup/blkio").join(f).exists())
        };
        Self {
            ncpu,
            cpus,
            swap_accounting,
            blkio_weight,
            sys_resource: has_cap_sys_resource(),
        }
    }
}

/// Whether this process has CAP_SYS_RESOURCE in its effective set.
pub fn has_cap_sys_resource() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .map(|caps| caps & (1 << 24) != 0) // bit 24: CAP_SYS_RESOURCE
        .unwrap_or(false)
}

impl Resources {
    /// Applies Docker's validation and defaults (swap = 2 × memory when only memory is
    /// set). Returns warnings Docker would print; settings the host cannot apply are
    /// dropped with a warning, as Docker does.
    pub fn validate(&mut self, host: &HostLimits) -> Result<Vec<String>, ResourceError> {
        let mut warnings = Vec::new();
        if self.memory > 0 && self.memory < 6 << 20 {
            return Err(ResourceError::MemoryTooSmall);
        }
        if self.memory_swap > 0 && self.memory == 0 {
            return Err(ResourceError::SwapWithoutMemory);
        }
        if self.memory > 0 && self.memory_swap > 0 && self.memory_swap < self.memory {
            return Err(ResourceError::SwapBelowMemory);
        }
        if self.memory > 0 && self.memory_reservation > self.memory {
            return Err(ResourceError::ReservationAboveMemory);
        }
        if !host.swap_accounting && self.memory_swap != 0 {
            warnings.push("Your kernel does not support swap limit capabilities or the cgroup is not mounted. Memory limited without swap.".into());
            self.memory_swap = 0;
        } else if self.memory > 0 && self.memory_swap == 0 && host.swap_accounting {
            self.memory_swap = self.memory * 2;
        }
        if self.oom_kill_disable && self.memory == 0 {
            warnings.push("Disabling the OOM killer on containers without setting a '-m/--memory' limit may be dangerous.".into());
        }
        if self.nano_cpus > 0 && self.nano_cpus > host.ncpu as i64 * 1_000_000_000 {
            return Err(ResourceError::TooManyCpus { max: host.ncpu });
        }
        if self.nano_cpus > 0 && self.nano_cpus < 10_000_000 {
            return Err(ResourceError::TooManyCpus { max: host.ncpu });
        }
        if self.cpu_shares != 0 && self.cpu_shares < 2 {
            return Err(ResourceError::BadShares(self.cpu_shares));
        }
        if !self.cpuset_cpus.is_empty() {
            let want = parse_cpuset(&self.cpuset_cpus).ok_or_else(|| {
                ResourceError::CpusetUnavailable {
                    requested: self.cpuset_cpus.clone(),
                    available: host.cpus.clone(),
                }
            })?;
            let have = parse_cpuset(&host.cpus).unwrap_or_default();
            if want.is_empty() || want.iter().any(|c| !have.contains(c)) {
                return Err(ResourceError::CpusetUnavailable {
                    requested: self.cpuset_cpus.clone(),
                    available: host.cpus.clone(),
                });
            }
        }
        if self.blkio_weight != 0 && !(10..=1000).contains(&self.blkio_weight) {
            return Err(ResourceError::BadBlkioWeight);
        }
        if self.blkio_weight != 0 && !host.blkio_weight {
            warnings.push("Your kernel does not support Block I/O weight or the cgroup is not mounted. Weight discarded.".into());
            self.blkio_weight = 0;
        }
        if !(-1000..=1000).contains(&self.oom_score_adj) {
            return Err(ResourceError::BadOomScoreAdj(self.oom_score_adj));
        }
        if self.oom_score_adj < 0 && !host.sys_resource {
            return Err(ResourceError::OomScoreNeedsCap(self.oom_score_adj));
        }
        if self.pids_limit < 0 {
            self.pids_limit = -1;
        }
        if !host.sys_resource {
            for u in &self.ulimits {
                let Some(res) = rlimit_resource(&u.name) else {
                    continue;
                };
                let Ok((_, host_hard)) = nix::sys::resource::getrlimit(res) else {
                    continue;
                };
                let host_hard = if host_hard == libc::RLIM_INFINITY {
                    i64::MAX
                } else {
                    host_hard as i64
                };
                let hard = if u.hard < 0 { i64::MAX } else { u.hard };
                if hard > host_hard {
                    return Err(ResourceError::UlimitAboveHost {
                        name: u.name.clone(),
                        hard: u.hard,
                        host: host_hard,
                    });
                }
            }
        }
        Ok(warnings)
    }

    /// The OCI `linux.resources` section (without `devices`, which the spec adds).
    pub fn oci_resources(&self) -> Value {
        let mut r = serde_json::Map::new();
        let mut mem = serde_json::Map::new();
        if self.memory > 0 {
            mem.insert("limit".into(), json!(self.memory));
        }
        if self.memory_swap != 0 {
            mem.insert("swap".into(), json!(self.memory_swap));
        }
        if self.memory_reservation > 0 {
            mem.insert("reservation".into(), json!(self.memory_reservation));
        }
        if self.oom_kill_disable {
            mem.insert("disableOOMKiller".into(), json!(true));
        }
        if !mem.is_empty() {
            r.insert("memory".into(), Value::Object(mem));
        }
        let mut cpu = serde_json::Map::new();
        if self.cpu_shares > 0 {
            cpu.insert("shares".into(), json!(self.cpu_shares));
        }
        if self.nano_cpus > 0 {
            let (quota, period) = cpu_quota(self.nano_cpus);
            cpu.insert("quota".into(), json!(quota));
            cpu.insert("period".into(), json!(period));
        }
        if !self.cpuset_cpus.is_empty() {
            cpu.insert("cpus".into(), json!(self.cpuset_cpus));
        }
        if !cpu.is_empty() {
            r.insert("cpu".into(), Value::Object(cpu));
        }
        if self.pids_limit != 0 {
            r.insert("pids".into(), json!({"limit": self.pids_limit}));
        }
        let mut blk = serde_json::Map::new();
        if self.blkio_weight > 0 {
            blk.insert("weight".into(), json!(self.blkio_weight));
        }
        let devs = |v: &[ThrottleDevice]| -> Value {
            v.iter()
                .map(|d| json!({"major": d.major, "minor": d.minor, "rate": d.rate}))
                .collect()
        };
        if !self.device_read_bps.is_empty() {
            blk.insert("throttleReadBpsDevice".into(), devs(&self.device_read_bps));
        }
        if !self.device_write_bps.is_empty() {
            blk.insert(
                "throttleWriteBpsDevice".into(),
                devs(&self.device_write_bps),
            );
        }
        if !blk.is_empty() {
            r.insert("blockIO".into(), Value::Object(blk));
        }
        Value::Object(r)
    }

    /// OCI `process.rlimits`.
    pub fn oci_rlimits(&self) -> Value {
        self.ulimits
            .iter()
            .filter_map(|u| {
                let typ = ULIMITS.iter().find(|(n, _)| *n == u.name)?.1;
                let v = |x: i64| if x < 0 { u64::MAX } else { x as u64 };
                Some(json!({"type": typ, "soft": v(u.soft), "hard": v(u.hard)}))
            })
            .collect()
    }

    /// Docker's HostConfig resource fields, for `inspect`.
    pub fn to_docker_json(&self) -> Value {
        let devs = |v: &[ThrottleDevice]| -> Value {
            v.iter()
                .map(|d| json!({"Path": d.path, "Rate": d.rate}))
                .collect()
        };
        json!({
            "Memory": self.memory,
            "MemorySwap": self.memory_swap,
            "MemoryReservation": self.memory_reservation,
            "NanoCpus": self.nano_cpus,
            "CpuShares": self.cpu_shares,
            "CpusetCpus": self.cpuset_cpus,
            "PidsLimit": if self.pids_limit == 0 { Value::Null } else { json!(self.pids_limit) },
            "BlkioWeight": self.blkio_weight,
            "BlkioDeviceReadBps": devs(&self.device_read_bps),
            "BlkioDeviceWriteBps": devs(&self.device_write_bps),
            "OomKillDisable": self.oom_kill_disable,
            "OomScoreAdj": self.oom_score_adj,
            "Ulimits": self.ulimits.iter().map(|u| json!({"Name": u.name, "Soft": u.soft, "Hard": u.hard})).collect::<Vec<_>>(),
        })
    }
}

/// CFS quota and period for a number of nano-CPUs (Docker's 100ms period).
pub fn cpu_quota(nano_cpus: i64) -> (i64, u64) {
    let period = 100_000u64;
    (nano_cpus * period as i64 / 1_000_000_000, period)
}

/// Whether `base` (normally `/sys/fs/cgroup`) is a pure cgroup v2 mount.
pub fn is_v2(base: &Path) -> bool {
    base.join("cgroup.controllers").exists()
}

/// One container's cgroup. `rel` is the cgroupsPath (`/skiff/<id>`).
#[derive(Clone, Debug)]
pub struct Cgroup {
    base: PathBuf,
    rel: String,
    v2: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot set memory limit to {target}: the container uses {usage} bytes; stop it or raise the limit")]
    MemoryInUse { target: i64, usage: u64 },
}

impl Cgroup {
    /// The cgroup of `rel` under the system's cgroup mount.
    pub fn new(rel: &str) -> Self {
        Self::at(Path::new("/sys/fs/cgroup"), rel)
    }

    /// The cgroup of `rel` under `base` (a fixture tree in tests).
    pub fn at(base: &Path, rel: &str) -> Self {
        Self {
            base: base.into(),
            rel: rel.trim_matches('/').into(),
            v2: is_v2(base),
        }
    }

    pub fn is_v2(&self) -> bool {
        self.v2
    }

    /// The directory holding `controller`'s files (v2 has a single one).
    pub fn dir(&self, controller: &str) -> PathBuf {
        if self.v2 {
            self.base.join(&self.rel)
        } else {
            self.base.join(controller).join(&self.rel)
        }
    }

    fn read(&self, controller: &str, file: &str) -> Option<String> {
        std::fs::read_to_string(self.dir(controller).join(file))
            .ok()
            .map(|s| s.trim().to_string())
    }

    fn write(&self, controller: &str, file: &str, value: impl ToString) -> Result<(), CgroupError> {
        let path = self.dir(controller).join(file);
        std::fs::write(&path, value.to_string())
            .map_err(|source| CgroupError::Write { path, source })
    }

    /// Applies the live-updatable subset of `r` (memory, swap, reservation, CPU,
    /// cpuset, pids, blkio weight) to a running container's cgroup. Fields left at
    /// zero are not touched.
    pub fn update(&self, r: &Resources) -> Result<(), CgroupError> {
        if self.v2 {
            return self.update_v2(r);
        }
        if r.memory > 0 || r.memory_swap != 0 {
            // The kernel checks memsw >= memory at every write: order the two writes
            // so each intermediate state is valid.
            let cur: i64 = self
                .read("memory", "memory.limit_in_bytes")
                .and_then(|s| s.parse().ok())
                .unwrap_or(i64::MAX);
            let mem = if r.memory > 0 { r.memory } else { cur };
            let set_mem = |this: &Self| -> Result<(), CgroupError> {
                if r.memory > 0 {
                    this.write("memory", "memory.limit_in_bytes", r.memory)
                        .map_err(|e| this.busy(e, r.memory))?;
                }
                Ok(())
            };
            let has_memsw = self
                .dir("memory")
                .join("memory.memsw.limit_in_bytes")
                .exists();
            if r.memory_swap != 0 && has_memsw {
                if r.memory_swap == -1 || r.memory_swap > cur || mem > cur {
                    self.write("memory", "memory.memsw.limit_in_bytes", r.memory_swap)?;
                    set_mem(self)?;
                } else {
                    set_mem(self)?;
                    self.write("memory", "memory.memsw.limit_in_bytes", r.memory_swap)?;
                }
            } else {
                set_mem(self)?;
            }
        }
        if r.memory_reservation > 0 {
            self.write("memory", "memory.soft_limit_in_bytes", r.memory_reservation)?;
        }
        if r.nano_cpus > 0 {
            let (quota, period) = cpu_quota(r.nano_cpus);
            self.write("cpu", "cpu.cfs_period_us", period)?;
            self.write("cpu", "cpu.cfs_quota_us", quota)?;
        }
        if r.cpu_shares > 0 {
            self.write("cpu", "cpu.shares", r.cpu_shares)?;
        }
        if !r.cpuset_cpus.is_empty() {
            self.write("cpuset", "cpuset.cpus", &r.cpuset_cpus)?;
        }
        if r.pids_limit != 0 {
            self.write(
                "pids",
                "pids.max",
                if r.pids_limit < 0 {
                    "max".to_string()
                } else {
                    r.pids_limit.to_string()
                },
            )?;
        }
        if r.blkio_weight > 0 {
            let f = if self.dir("blkio").join("blkio.weight").exists() {
                "blkio.weight"
            } else {
                "blkio.bfq.weight"
            };
            self.write("blkio", f, r.blkio_weight)?;
        }
        Ok(())
    }
    /// Freezes (`pause`) or thaws (`unpause`) every process of the cgroup: v1's
    /// `freezer.state`, v2's `cgroup.freeze`. Returns once the kernel reports the new
    /// state (a freeze may pass through `FREEZING`), or after about a second.
    pub fn freeze(&self, frozen: bool) -> Result<(), CgroupError> {
        let (file, value, done) = if self.v2 {
            ("cgroup.freeze", if frozen { "1" } else { "0" }, "")
        } else if frozen {
            ("freezer.state", "FROZEN", "FROZEN")
        } else {
            ("freezer.state", "THAWED", "THAWED")
        };
        self.write("freezer", file, value)?;
        for _ in 0..100 {
            let reached = if self.v2 {
                self.read("freezer", "cgroup.events")
                    .map(|ev| {
                        ev.lines()
                            .any(|l| l == format!("frozen {}", u8::from(frozen)))
                    })
                    .unwrap_or(true)
            } else {
                self.read("freezer", "freezer.state").as_deref() == Some(done)
            };
            if reached {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Ok(())
    }

    /// Whether the cgroup's processes are frozen now.
    pub fn is_frozen(&self) -> bool {
        if self.v2 {
            self.read("freezer", "cgroup.freeze").as_deref() == Some("1")
        } else {
            self.read("freezer", "freezer.state").as_deref() == Some("FROZEN")
        }
    }

    /// Settings libcontainer 0.7 leaves out, applied by the shim once the cgroup
    /// exists and before the process starts: `--oom-kill-disable` (v1 only; v2 has no
    /// such switch, as with Docker).
    pub fn apply_after_create(&self, r: &Resources) -> Result<(), CgroupError> {
        if r.oom_kill_disable && !self.v2 {
            self.write("memory", "memory.oom_control", 1)?;
        }
        Ok(())
    }

    fn busy(&self, e: CgroupError, target: i64) -> CgroupError {
        match &e {
            CgroupError::Write { source, .. } if source.raw_os_error() == Some(libc::EBUSY) => {
                let usage = self
                    .read("memory", "memory.usage_in_bytes")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                CgroupError::MemoryInUse { target, usage }
            }
            _ => e,
        }
    }

    fn update_v2(&self, r: &Resources) -> Result<(), CgroupError> {
        let max = |v: i64| {
            if v < 0 {
                "max".to_string()
            } else {
                v.to_string()
            }
        };
        if r.memory > 0 {
            self.write("", "memory.max", r.memory)?;
        }
        if r.memory_swap != 0 {
            // v2 limits swap alone; Docker's value is memory + swap.
            let swap = if r.memory_swap < 0 {
                -1
            } else {
                (r.memory_swap - r.memory.max(0)).max(0)
            };
            self.write("", "memory.swap.max", max(swap))?;
        }
        if r.memory_reservation > 0 {
            self.write("", "memory.low", r.memory_reservation)?;
        }
        if r.nano_cpus > 0 {
            let (quota, period) = cpu_quota(r.nano_cpus);
            self.write("", "cpu.max", format!("{quota} {period}"))?;
        }
        if r.cpu_shares > 0 {
            self.write("", "cpu.weight", shares_to_weight(r.cpu_shares))?;
        }
        if !r.cpuset_cpus.is_empty() {
            self.write("", "cpuset.cpus", &r.cpuset_cpus)?;
        }
        if r.pids_limit != 0 {
            self.write("", "pids.max", max(r.pids_limit))?;
        }
        if r.blkio_weight > 0 {
            let f = if self.dir("").join("io.bfq.weight").exists() {
                "io.bfq.weight"
            } else {
                "io.weight"
            };
            self.write("", f, r.blkio_weight)?;
        }
        Ok(())
    }
}

/// Moves the calling process into the cgroup it is already in, on one hierarchy.
///
/// The first cgroup migration after a quiet spell waits for a kernel RCU grace period
/// (the global `cgroup_threadgroup_rwsem` is switched to its writer mode through
/// `rcu_sync`; ~5-9 ms on the test machines), and every container start migrates its
/// first process into the container's cgroup. Calling this (on a blocking thread) as a
/// start begins lets that wait run while the shim is spawned and sets up, instead of
/// in the middle of libcontainer's create; the container's own migration a few
/// milliseconds later then finds the writer mode still on. Moving a process to its own
/// cgroup changes nothing else. Hosts where it cannot be written just skip it (as do
/// v2 hosts mounted with `favordynmods`, which need no wait in the first place).
/// Returns whether a migration was written.
pub fn warm_migration() -> bool {
    own_procs_file().is_some_and(|(mut f, pid)| write_pid(&mut f, &pid))
}

/// The `cgroup.procs` file of a cgroup the agent is in (any hierarchy: the lock is
/// global), opened for writing, and the pid to write into it.
fn own_procs_file() -> Option<(std::fs::File, String)> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let pid = std::process::id().to_string();
    for line in own.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let path = path.trim_start_matches('/');
        let candidates: Vec<PathBuf> = if controllers.is_empty() {
            // v2: the unified hierarchy, alone or beside v1 ("hybrid").
            vec![
                Path::new(CGROUP_ROOT).join(path),
                Path::new(CGROUP_ROOT).join("unified").join(path),
            ]
        } else {
            controllers
                .split(',')
                .map(|c| {
                    Path::new(CGROUP_ROOT)
                        .join(c.trim_start_matches("name="))
                        .join(path)
                })
                .collect()
        };
        for dir in candidates {
            let opened = std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.procs"));
            if let Ok(mut file) = opened {
                if write_pid(&mut file, &pid) {
                    return Some((file, pid));
                }
            }
        }
    }
    None
}

/// One migration of this process into the cgroup `f` belongs to.
fn write_pid(f: &mut std::fs::File, pid: &str) -> bool {
    use std::io::Write;
    f.write_all(pid.as_bytes()).is_ok()
}

/// Keeps cgroup migrations cheap for `window` from now: one background thread repeats
/// [`warm_migration`]'s write every few milliseconds while any window is open.
///
/// After a migration the kernel stays in writer mode for about one grace period; the
/// next migration within it is fast (~0.1 ms), one after it waits again (measured:
/// 0.2 ms at 10 ms, 8-16 ms at 20 ms). Container starts come in bursts (a stack's
/// tasks, a CI job's `docker run`s), and one started warm-up alone cannot pay the
/// whole wait in the few milliseconds between a start request and libcontainer's
/// migration. So each start or exec opens a window; the first warm-up of a burst
/// pays the grace period off the request's path, the rest keep it paid. Outside
/// windows the thread sleeps and costs nothing. A host where no `cgroup.procs` can
/// be written stops the thread for good.
pub fn keep_migration_warm(window: std::time::Duration) {
    use std::sync::{Condvar, Mutex, OnceLock};
    use std::time::Instant;
    struct Warmer {
        until: Mutex<Option<Instant>>,
        wake: Condvar,
    }
    static WARMER: OnceLock<Option<&'static Warmer>> = OnceLock::new();
    /// Under one grace period (~7-12 ms here), so the writer mode never lapses.
    const EVERY: std::time::Duration = std::time::Duration::from_millis(4);
    let w = WARMER.get_or_init(|| {
        let w: &'static Warmer = Box::leak(Box::new(Warmer {
            until: Mutex::new(None),
            wake: Condvar::new(),
        }));
        let spawned = std::thread::Builder::new()
            .name("cgroup-warm".into())
            .spawn(move || {
                let mut procs = None;
                loop {
                    let mut until = w.until.lock().unwrap_or_else(|p| p.into_inner());
                    while until.is_none_or(|t| t <= Instant::now()) {
                        *until = None;
                        until = w.wake.wait(until).unwrap_or_else(|p| p.into_inner());
                    }
                    drop(until);
                    // Found once, on the first window; each later tick is one write.
                    let Some((file, pid)) = procs.get_or_insert_with(own_procs_file) else {
                        return;
                    };
                    if !write_pid(file, pid) {
                        return;
                    }
                    std::thread::sleep(EVERY);
                }
            });
        spawned.ok().map(|_| w)
    });
    if let Some(w) = w {
        let t = Instant::now() + window;
        let mut until = w.until.lock().unwrap_or_else(|p| p.into_inner());
        if until.is_none_or(|u| u < t) {
            *until = Some(t);
        }
        w.wake.notify_one();
    }
}

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// v1 cpu.shares (2..262144) to v2 cpu.weight (1..10000), the conversion runc uses.
pub fn shares_to_weight(shares: i64) -> u64 {
    if shares <= 0 {
        return 100;
    }
    1 + ((shares.clamp(2, 262_144) as u64 - 2) * 9999) / 262_142
}

#[cfg(test)]
mod tests {
    #[test]
    fn freeze_writes_the_freezer_files_of_both_layouts() {
        let dir = tempfile::tempdir().expect("tmp");
        let v1 = dir.path().join("v1");
        std::fs::create_dir_all(v1.join("freezer/skiff/c1")).expect("mkdir");
        let cg = super::Cgroup::at(&v1, "/skiff/c1");
        assert!(!cg.is_v2());
        cg.freeze(true).expect("freeze");
        assert!(cg.is_frozen());
        cg.freeze(false).expect("thaw");
        assert_eq!(
            std::fs::read_to_string(v1.join("freezer/skiff/c1/freezer.state")).expect("read"),
            "THAWED"
        );
        let v2 = dir.path().join("v2");
        std::fs::create_dir_all(v2.join("skiff/c1")).expect("mkdir");
        std::fs::write(v2.join("cgroup.controllers"), "cpu memory").expect("write");
        let cg = super::Cgroup::at(&v2, "/skiff/c1");
        assert!(cg.is_v2());
        std::fs::write(v2.join("skiff/c1/cgroup.events"), "populated 1\nfrozen 1\n")
            .expect("write");
        cg.freeze(true).expect("freeze");
        assert!(cg.is_frozen());
    }

    #[test]
    #[cfg_attr(not(skiff_root), ignore = "needs root: writing cgroup.procs")]
    fn warm_migration_leaves_the_process_where_it_was() {
        let before = std::fs::read_to_string("/proc/self/cgroup").expect("cgroup");
        // Root (as the tests run) can always write its own cgroup.
        assert!(warm_migration());
        assert!(warm_migration());
        assert_eq!(
            std::fs::read_to_string("/proc/self/cgroup").expect("cgroup"),
            before
        );
    }

    #[test]
    fn keeping_migrations_warm_returns_at_once_and_moves_nothing() {
        let before = std::fs::read_to_string("/proc/self/cgroup").expect("cgroup");
        keep_migration_warm(std::time::Duration::from_millis(50));
        keep_migration_warm(std::time::Duration::from_millis(20));
        std::thread::sleep(std::time::Duration::from_millis(80));
        assert_eq!(
            std::fs::read_to_string("/proc/self/cgroup").expect("cgroup"),
            before
        );
    }

    /// The patched lookup (vendor/libcgroups: mountinfo read once, only as far as
    /// needed) against an independent oracle: the v1 mount whose superblock options name
    /// the controller, for each controller /proc/cgroups lists as mounted; the others
    /// are not found.
    #[test]
    fn libcgroups_v1_mount_points_agree_with_mountinfo() {
        use libcgroups::v1::{util::get_subsystem_mount_point, ControllerType};
        let Ok(cgroups) = std::fs::read_to_string("/proc/cgroups") else {
            return;
        };
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let v1: Vec<(String, Vec<String>)> = mountinfo
            .lines()
            .filter_map(|l| {
                let (left, right) = l.split_once(" - ")?;
                let mut r = right.split_whitespace();
                (r.next()? == "cgroup").then_some(())?;
                let opts = r.nth(1)?.split(',').map(String::from).collect();
                Some((left.split_whitespace().nth(4)?.to_string(), opts))
            })
            .collect();
        if v1.is_empty() {
            return; // a pure v2 host: nothing to look up
        }
        for c in [
            ControllerType::Cpu,
            ControllerType::CpuAcct,
            ControllerType::CpuSet,
            ControllerType::Devices,
            ControllerType::HugeTlb,
            ControllerType::Pids,
            ControllerType::PerfEvent,
            ControllerType::Memory,
            ControllerType::Blkio,
            ControllerType::NetworkPriority,
            ControllerType::NetworkClassifier,
            ControllerType::Freezer,
        ] {
            let name = c.to_string();
            let mounted = cgroups.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.first() == Some(&name.as_str()) && f.get(1) != Some(&"0")
            });
            let expected = v1
                .iter()
                .find(|(_, opts)| opts.contains(&name))
                .map(|(mp, _)| std::path::PathBuf::from(mp));
            let got = get_subsystem_mount_point(&c).ok();
            if mounted {
                assert_eq!(got, expected, "{name}");
            } else {
                assert_eq!(got, None, "{name} is not mounted in v1");
            }
        }
    }

    /// The patched listing of v1 hierarchies for a container's emulated /sys/fs/cgroup
    /// (vendor/libcgroups: a directory listing, not the whole of mountinfo) against
    /// libcgroups' own full mountinfo read, restricted to /sys/fs/cgroup's children.
    #[test]
    fn v1_hierarchies_listed_from_the_directory_match_mountinfo() {
        use libcgroups::v1::util::{list_subsystem_mount_points, list_subsystem_mount_points_in};
        let root = std::path::Path::new("/sys/fs/cgroup");
        let Ok(from_dir) = list_subsystem_mount_points_in(root) else {
            return; // no /sys/fs/cgroup here
        };
        let mut from_mountinfo: Vec<_> = list_subsystem_mount_points()
            .expect("mountinfo")
            .into_iter()
            .filter(|p| p.parent() == Some(root))
            .collect();
        from_mountinfo.sort();
        from_mountinfo.dedup();
        assert_eq!(from_dir, from_mountinfo);
    }

    use super::*;

    fn host() -> HostLimits {
        HostLimits {
            ncpu: 2,
            cpus: "0-1".into(),
            swap_accounting: true,
            blkio_weight: false,
            sys_resource: false,
        }
    }

    #[test]
    fn docker_validation_rules() {
        let mut r = Resources {
            memory: 1 << 20,
            ..Default::default()
        };
        assert_eq!(r.validate(&host()), Err(ResourceError::MemoryTooSmall));
        let mut r = Resources {
            memory_swap: 1 << 30,
            ..Default::default()
        };
        assert_eq!(r.validate(&host()), Err(ResourceError::SwapWithoutMemory));
        let mut r = Resources {
            memory: 1 << 30,
            memory_swap: 1 << 29,
            ..Default::default()
        };
        assert_eq!(r.validate(&host()), Err(ResourceError::SwapBelowMemory));
        let mut r = Resources {
            memory: 100 << 20,
            ..Default::default()
        };
        r.validate(&host()).expect("valid");
        assert_eq!(
            r.memory_swap,
            200 << 20,
            "swap defaults to twice the memory"
        );
        let mut r = Resources {
            memory: 100 << 20,
            memory_swap: -1,
            ..Default::default()
        };
        r.validate(&host()).expect("valid");
        assert_eq!(r.memory_swap, -1);
        let mut r = Resources {
            nano_cpus: 3_000_000_000,
            ..Default::default()
        };
        assert_eq!(
            r.validate(&host()),
            Err(ResourceError::TooManyCpus { max: 2 })
        );
        let mut r = Resources {
            cpuset_cpus: "0-3".into(),
            ..Default::default()
        };
        assert!(matches!(
            r.validate(&host()),
            Err(ResourceError::CpusetUnavailable { .. })
        ));
        let mut r = Resources {
            blkio_weight: 300,
            ..Default::default()
        };
        let w = r.validate(&host()).expect("valid");
        assert!(w[0].contains("Weight discarded"));
        assert_eq!(r.blkio_weight, 0);
        let mut r = Resources {
            oom_score_adj: -100,
            ..Default::default()
        };
        assert_eq!(
            r.validate(&host()),
            Err(ResourceError::OomScoreNeedsCap(-100))
        );
        let mut r = Resources {
            oom_score_adj: 2000,
            ..Default::default()
        };
        assert_eq!(
            r.validate(&host()),
            Err(ResourceError::BadOomScoreAdj(2000))
        );
        let mut r = Resources {
            ulimits: vec![parse_ulimit("nofile=1:9223372036854775806").expect("u")],
            ..Default::default()
        };
        assert!(matches!(
            r.validate(&host()),
            Err(ResourceError::UlimitAboveHost { .. })
        ));
    }

    #[test]
    fn oci_section() {
        let r = Resources {
            memory: 500 << 20,
            memory_swap: 500 << 20,
            memory_reservation: 100 << 20,
            nano_cpus: 1_500_000_000,
            cpu_shares: 512,
            cpuset_cpus: "0".into(),
            pids_limit: 20,
            blkio_weight: 300,
            device_read_bps: vec![ThrottleDevice {
                path: "/dev/vda".into(),
                major: 254,
                minor: 0,
                rate: 1 << 20,
            }],
            oom_kill_disable: true,
            ..Default::default()
        };
        let v = r.oci_resources();
        assert_eq!(
            v["memory"],
            json!({"limit": 524288000, "swap": 524288000, "reservation": 104857600, "disableOOMKiller": true})
        );
        assert_eq!(
            v["cpu"],
            json!({"shares": 512, "quota": 150000, "period": 100000, "cpus": "0"})
        );
        assert_eq!(v["pids"]["limit"], 20);
        assert_eq!(v["blockIO"]["weight"], 300);
        assert_eq!(
            v["blockIO"]["throttleReadBpsDevice"],
            json!([{"major": 254, "minor": 0, "rate": 1048576}])
        );
        assert_eq!(Resources::default().oci_resources(), json!({}));
        // The section deserialises as OCI's LinuxResources.
        let _: oci_spec::runtime::LinuxResources = serde_json::from_value(v).expect("oci");
    }

    #[test]
    fn parsers() {
        assert_eq!(
            parse_ulimit("nofile=1024:2048").expect("u"),
            Ulimit {
                name: "nofile".into(),
                soft: 1024,
                hard: 2048
            }
        );
        assert_eq!(parse_ulimit("nproc=10").expect("u").hard, 10);
        assert!(parse_ulimit("nofile=10:5").is_err());
        assert!(parse_ulimit("bogus=1").is_err());
        let rl = Resources {
            ulimits: vec![parse_ulimit("core=-1").expect("u")],
            ..Default::default()
        }
        .oci_rlimits();
        assert_eq!(
            rl,
            json!([{"type": "RLIMIT_CORE", "soft": u64::MAX, "hard": u64::MAX}])
        );
        assert_eq!(parse_cpus("1.5").expect("cpus"), 1_500_000_000);
        assert!(parse_cpus("x").is_err());
        assert_eq!(parse_cpuset("0-2,5"), Some(vec![0, 1, 2, 5]));
        assert_eq!(parse_cpuset("2-1"), None);
        assert!(
            parse_throttle("/dev/null:1mb").is_err(),
            "character device accepted"
        );
        assert!(parse_throttle("nonsense").is_err());
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(2), 1);
    }

    fn fixture(v2: bool) -> (tempfile::TempDir, Cgroup) {
        let d = tempfile::tempdir().expect("tempdir");
        if v2 {
            std::fs::write(
                d.path().join("cgroup.controllers"),
                "cpu memory pids io cpuset\n",
            )
            .expect("controllers");
            let c = d.path().join("skiff/abc");
            std::fs::create_dir_all(&c).expect("mkdir");
            for f in [
                "memory.max",
                "memory.swap.max",
                "memory.low",
                "cpu.max",
                "cpu.weight",
                "cpuset.cpus",
                "pids.max",
                "io.weight",
            ] {
                std::fs::write(c.join(f), "max\n").expect("fixture");
            }
        } else {
            for (ctl, files) in [
                (
                    "memory",
                    &[
                        "memory.limit_in_bytes",
                        "memory.memsw.limit_in_bytes",
                        "memory.soft_limit_in_bytes",
                    ][..],
                ),
                (
                    "cpu",
                    &["cpu.cfs_period_us", "cpu.cfs_quota_us", "cpu.shares"][..],
                ),
                ("cpuset", &["cpuset.cpus"][..]),
                ("pids", &["pids.max"][..]),
            ] {
                let c = d.path().join(ctl).join("skiff/abc");
                std::fs::create_dir_all(&c).expect("mkdir");
                for f in files {
                    std::fs::write(c.join(f), "9223372036854771712\n").expect("fixture");
                }
            }
        }
        let cg = Cgroup::at(d.path(), "/skiff/abc");
        (d, cg)
    }

    #[test]
    fn update_writes_v1_files() {
        let (d, cg) = fixture(false);
        assert!(!cg.is_v2());
        let r = Resources {
            memory: 256 << 20,
            memory_swap: 512 << 20,
            nano_cpus: 500_000_000,
            cpu_shares: 512,
            cpuset_cpus: "1".into(),
            pids_limit: 50,
            ..Default::default()
        };
        cg.update(&r).expect("update");
        let rd = |p: &str| std::fs::read_to_string(d.path().join(p)).expect("read");
        assert_eq!(rd("memory/skiff/abc/memory.limit_in_bytes"), "268435456");
        assert_eq!(
            rd("memory/skiff/abc/memory.memsw.limit_in_bytes"),
            "536870912"
        );
        assert_eq!(rd("cpu/skiff/abc/cpu.cfs_quota_us"), "50000");
        assert_eq!(rd("cpu/skiff/abc/cpu.cfs_period_us"), "100000");
        assert_eq!(rd("cpu/skiff/abc/cpu.shares"), "512");
        assert_eq!(rd("cpuset/skiff/abc/cpuset.cpus"), "1");
        assert_eq!(rd("pids/skiff/abc/pids.max"), "50");
    }

    #[test]
    fn update_writes_v2_files() {
        let (d, cg) = fixture(true);
        assert!(cg.is_v2());
        let r = Resources {
            memory: 256 << 20,
            memory_swap: 256 << 20,
            memory_reservation: 1 << 20,
            nano_cpus: 1_500_000_000,
            cpu_shares: 1024,
            pids_limit: -1,
            blkio_weight: 200,
            ..Default::default()
        };
        cg.update(&r).expect("update");
        let rd =
            |f: &str| std::fs::read_to_string(d.path().join("skiff/abc").join(f)).expect("read");
        assert_eq!(rd("memory.max"), "268435456");
        assert_eq!(
            rd("memory.swap.max"),
            "0",
            "swap equal to memory means no swap"
        );
        assert_eq!(rd("memory.low"), "1048576");
        assert_eq!(rd("cpu.max"), "150000 100000");
        assert_eq!(rd("cpu.weight"), "39");
        assert_eq!(rd("pids.max"), "max");
        assert_eq!(rd("io.weight"), "200");
    }
}
