//! System commands: info, version, events.

use crate::cli::*;
use crate::client::status;
use crate::output;
use anyhow::Result;
use serde_json::json;
use skiff_proto::engine::engine_client::EngineClient;
use skiff_proto::engine::*;
use tonic::transport::Channel;

type Client = EngineClient<Channel>;

pub async fn info(c: &mut Client, a: &FormatArgs) -> Result<i32> {
    let i = c.info(Empty {}).await.map_err(status)?.into_inner();
    let doc = json!({
        "Containers": i.containers, "ContainersRunning": i.running, "ContainersPaused": i.paused,
        "ContainersStopped": i.stopped, "Images": i.images, "Driver": i.storage_driver,
        "CgroupDriver": i.cgroup_driver, "CgroupVersion": i.cgroup_version, "KernelVersion": i.kernel_version,
        "OperatingSystem": i.operating_system, "Architecture": i.architecture, "NCPU": i.ncpu,
        "MemTotal": i.mem_total, "DockerRootDir": i.root_dir, "ExecRoot": i.exec_root, "Name": i.name,
        "ServerVersion": i.server_version, "Warnings": i.warnings, "SecurityOptions": [i.security_options],
    });
    if let Some(f) = &a.format {
        println!("{}", crate::template::Template::parse(f)?.render(&doc)?);
        return Ok(0);
    }
    println!("Server:");
    println!(" Containers: {}", i.containers);
    println!("  Running: {}", i.running);
    println!("  Paused: {}", i.paused);
    println!("  Stopped: {}", i.stopped);
    println!(" Images: {}", i.images);
    println!(" Server Version: {}", i.server_version);
    println!(" Storage Driver: {}", i.storage_driver);
    println!(" Cgroup Driver: {}", i.cgroup_driver);
    println!(" Cgroup Version: {}", i.cgroup_version);
    println!(" Runtime: libcontainer (youki)");
    println!(" Security Options:\n  {}", i.security_options);
    println!(" Kernel Version: {}", i.kernel_version);
    println!(" Operating System: {}", i.operating_system);
    println!(" Architecture: {}", i.architecture);
    println!(" CPUs: {}", i.ncpu);
    println!(" Total Memory: {}", output::human_size(i.mem_total));
    println!(" Name: {}", i.name);
    println!(" Root Dir: {}", i.root_dir);
    println!(" Exec Root: {}", i.exec_root);
    for w in &i.warnings {
        eprintln!("{w}");
    }
    Ok(0)
}

pub async fn version(c: &mut Client, a: &FormatArgs) -> Result<i32> {
    let client = json!({"Version": env!("CARGO_PKG_VERSION"), "Os": std::env::consts::OS, "Arch": std::env::consts::ARCH});
    let server = c.version(Empty {}).await.map_err(status);
    let doc = match &server {
        Ok(v) => {
            let v = v.get_ref();
            json!({"Client": client, "Server": {"Version": v.version, "ApiVersion": v.api_version, "GitCommit": v.git_commit,
                   "Os": v.os, "Arch": v.arch, "KernelVersion": v.kernel_version, "Runtime": v.runtime}})
        }
        Err(_) => json!({"Client": client, "Server": null}),
    };
    if let Some(f) = &a.format {
        println!("{}", crate::template::Template::parse(f)?.render(&doc)?);
    } else {
        println!(
            "Client:\n Version:\t{}\n OS/Arch:\t{}/{}",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::env::consts::ARCH
        );
        if let Ok(v) = &server {
            let v = v.get_ref();
            println!("\nServer: Skiff Agent\n Version:\t{}\n API version:\t{}\n OS/Arch:\t{}/{}\n Kernel:\t{}\n Runtime:\t{}",
                v.version, v.api_version, v.os, v.arch, v.kernel_version, v.runtime);
        }
    }
    server.map(|_| 0)
}

pub async fn events(c: &mut Client, a: &EventsArgs) -> Result<i32> {
    let req = EventsRequest {
        since_unix_nanos: a
            .since
            .as_deref()
            .map(output::parse_time)
            .transpose()?
            .unwrap_or(0),
        until_unix_nanos: a
            .until
            .as_deref()
            .map(output::parse_time)
            .transpose()?
            .unwrap_or(0),
        filters: a.filter.clone(),
    };
    let template = match a.format.as_deref() {
        None | Some("json") => None,
        Some(t) => Some(crate::template::Template::parse(t)?),
    };
    let mut s = c.events(req).await.map_err(status)?.into_inner();
    while let Some(ev) = s.message().await.map_err(status)? {
        let t = chrono::DateTime::from_timestamp_nanos(ev.time_unix_nanos);
        let mut attrs: Vec<_> = ev
            .attributes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        attrs.sort();
        let doc = json!({
            "Type": ev.r#type, "Action": ev.action, "Actor": {"ID": ev.actor_id, "Attributes": ev.attributes},
            "time": ev.time_unix_nanos / 1_000_000_000, "timeNano": ev.time_unix_nanos, "status": ev.action, "id": ev.actor_id,
        });
        match (&template, a.format.as_deref()) {
            (Some(t), _) => println!("{}", t.render(&doc)?),
            (None, Some("json")) => println!("{doc}"),
            _ => println!(
                "{} {} {} {} ({})",
                t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
                ev.r#type,
                ev.action,
                ev.actor_id,
                attrs.join(", ")
            ),
        }
    }
    Ok(0)
}
