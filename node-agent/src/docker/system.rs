//! Docker API: `/_ping`, `/version`, `/info`, `/events`, `/system/df`, `/auth`.

use super::{ok_json, DockerApi, Req, Resp, Result, API_VERSION, MIN_API_VERSION};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, PRAGMA};
use hyper::{Method, StatusCode};
use serde_json::json;

/// What `Server` headers and `/version` call this engine.
pub const ENGINE_VERSION: &str = env!("CARGO_PKG_VERSION");

pub(super) async fn route(api: &DockerApi, req: Req) -> Result<Resp> {
    let segs: Vec<&str> = req.segs.iter().map(String::as_str).collect();
    match (&req.method, segs.as_slice()) {
        (&Method::GET | &Method::HEAD, ["_ping"]) => Ok(ping(&req.method)),
        (&Method::GET, ["version"]) => ok_json(&version()),
        (&Method::GET, ["info"]) => info(api).await,
        _ => Err(super::not_found_route(&req.method, &req.path)),
    }
}

/// `_ping`: `OK` with the headers clients negotiate from (API version, OS, swarm state).
fn ping(method: &Method) -> Resp {
    let body = if method == Method::HEAD { "" } else { "OK" };
    let mut r = hyper::Response::new(super::full(body));
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache, no-store, must-revalidate"));
    h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert("builder-version", HeaderValue::from_static("1"));
    // Swarm's endpoints are not served yet, so clients must not offer swarm commands.
    h.insert("swarm", HeaderValue::from_static("inactive"));
    r
}

/// `/version`, in dockerd's shape; the engine component is Skiff.
pub fn version() -> serde_json::Value {
    let v = crate::sysinfo::version();
    let arch = go_arch(&v.arch);
    json!({
        "Platform": { "Name": format!("Skiff {}", v.version) },
        "Components": [{
            "Name": "Engine",
            "Version": v.version,
            "Details": {
                "ApiVersion": API_VERSION.to_string(),
                "Arch": arch,
                "BuildTime": "",
                "Experimental": "false",
                "GitCommit": v.git_commit,
                "GoVersion": "",
                "KernelVersion": v.kernel_version,
                "MinAPIVersion": MIN_API_VERSION.to_string(),
                "Os": v.os,
            }
        }, {
            "Name": "skiff-shim",
            "Version": v.version,
            "Details": { "Runtime": v.runtime }
        }],
        "Version": v.version,
        "ApiVersion": API_VERSION.to_string(),
        "MinAPIVersion": MIN_API_VERSION.to_string(),
        "GitCommit": v.git_commit,
        "GoVersion": "",
        "Os": v.os,
        "Arch": arch,
        "KernelVersion": v.kernel_version,
        "BuildTime": "",
    })
}

/// Go's names for architectures (`amd64`, `arm64`), which Docker's clients expect.
pub fn go_arch(rust: &str) -> &str {
    match rust {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

async fn info(api: &DockerApi) -> Result<Resp> {
    let list = api.containers.list();
    let running = list.iter().filter(|e| e.state().is_running()).count() as u32;
    let images = api.images.list()?.len() as u32;
    let i = crate::sysinfo::info(&api.containers.cfg, list.len() as u32, running, images);
    ok_json(&json!({
        "ID": i.name,
        "Containers": i.containers,
        "ContainersRunning": i.running,
        "ContainersPaused": i.paused,
        "ContainersStopped": i.stopped,
        "Images": i.images,
        "Driver": i.storage_driver,
        "DriverStatus": [],
        "CgroupDriver": i.cgroup_driver,
        "CgroupVersion": if i.cgroup_version == "2" { "2" } else { "1" },
        "KernelVersion": i.kernel_version,
        "OperatingSystem": i.operating_system,
        "OSType": "linux",
        "Architecture": i.architecture,
        "NCPU": i.ncpu,
        "MemTotal": i.mem_total,
        "DockerRootDir": i.root_dir,
        "Name": i.name,
        "ServerVersion": i.server_version,
        "Warnings": i.warnings,
        "SecurityOptions": ["name=seccomp,profile=builtin"],
        "Swarm": { "LocalNodeState": "inactive", "ControlAvailable": false, "NodeID": "", "NodeAddr": "", "Error": "", "RemoteManagers": null },
        "Runtimes": { "runc": { "path": "skiff shim" } },
        "DefaultRuntime": "runc",
        "Labels": [],
        "Debug": false,
        "LoggingDriver": "json-file",
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": { "IndexConfigs": {}, "InsecureRegistryCIDRs": [] , "Mirrors": []},
        "Plugins": { "Volume": ["local"], "Network": ["bridge", "host", "null", "overlay"], "Log": ["json-file"] },
        "MemoryLimit": true,
        "SwapLimit": true,
        "CpuCfsPeriod": true,
        "CpuCfsQuota": true,
        "PidsLimit": true,
        "IPv4Forwarding": true,
        "Isolation": "",
        "InitBinary": "",
        "ExperimentalBuild": false,
    }))
}
