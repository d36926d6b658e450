//! The nftables table follows containers' published ports by map elements: a second
//! container's ports are added, a removed container's ports deleted, without
//! reloading the table; the lookup rules come and go with the first and last port.

mod common;

use common::Agent;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

fn httpd(a: &Agent, name: &str, port: &str) {
    let script = format!(
        "mkdir -p /www && echo hello from {name} > /www/index.html && exec httpd -f -p 80 -h /www"
    );
    a.cmd(&[
        "run",
        "-d",
        "--name",
        name,
        "-p",
        &format!("{port}:80"),
        "busybox",
        "sh",
        "-c",
        &script,
    ]);
}

/// A plain HTTP GET; the whole response, or "" when nothing answered.
fn http_get(addr: &str) -> String {
    let Ok(mut s) =
        TcpStream::connect_timeout(&addr.parse().expect("addr"), Duration::from_secs(3))
    else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The log without terminal colour codes.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn nft_table(a: &Agent) -> String {
    let (table, _) = common::network_names(&a.root);
    let o = Command::new("nft")
        .args(["list", "table", "inet", &table])
        .output()
        .expect("nft");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn published_ports_come_and_go_without_reloading_the_table() {
    let a = Agent::start().with_busybox();
    let net: serde_json::Value =
        serde_json::from_str(&a.cmd(&["network", "inspect", "bridge"]).stdout).expect("json");
    let gw = net[0]["IPAM"]["Config"][0]["Gateway"]
        .as_str()
        .expect("gateway")
        .to_string();
    // The host's own bridge address is local but not loopback: the kernel DNATs it in
    // the output chain (the userland proxy only serves 127.0.0.1), so an answer
    // proves the map element is in place.
    let answers = |port: &str, who: &str| http_get(&format!("{gw}:{port}")).contains(who);

    httpd(&a, "w1", "18191");
    httpd(&a, "w2", "18192");
    for (port, who) in [("18191", "hello from w1"), ("18192", "hello from w2")] {
        a.wait_until(
            &format!("{who} on {gw}:{port}"),
            Duration::from_secs(10),
            || answers(port, who),
        );
    }
    let t = nft_table(&a);
    assert!(
        t.contains("tcp . 18191 : ") && t.contains("tcp . 18192 : "),
        "{t}"
    );

    a.cmd(&["rm", "-f", "w1"]);
    assert!(answers("18192", "hello from w2"), "w2 lost its port");
    assert!(
        !answers("18191", "hello from w1"),
        "w1's port still answers"
    );
    let t = nft_table(&a);
    assert!(!t.contains("18191") && t.contains("tcp . 18192 : "), "{t}");
    // Both the second start and the removal went by elements, never by a fallback.
    let log = strip_ansi(&a.log());
    assert_eq!(
        log.matches("update=Elements").count(),
        2,
        "expected two incremental updates; agent log:\n{log}"
    );
    assert!(!log.contains("reloading the table"), "{log}");

    // The last published port gone: no lookup rule left.
    a.cmd(&["rm", "-f", "w2"]);
    let t = nft_table(&a);
    assert!(!t.contains("dnat ip to") && !t.contains("18192"), "{t}");
    // Host-side veths are deleted in the background, shortly after.
    let (_, prefix) = common::network_names(&a.root);
    a.wait_until("veths deleted", Duration::from_secs(5), || {
        !common::network_links(&a.root)
            .iter()
            .any(|l| l.starts_with(&format!("{prefix}v")))
    });
}
