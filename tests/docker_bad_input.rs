//! End-to-end tests (root, real kernel) of what the Docker API does with bad input that
//! no well-behaved client sends: oversized bodies, names and paths that try to leave
//! where they belong, truncated requests, clients that vanish. Each answer is Docker's
//! error shape, nothing half-made is left, and the agent keeps serving.

mod common;
use common::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// One raw HTTP/1.1 request on the agent's docker socket; the status and the body.
fn raw(a: &Agent, request: &[u8]) -> (u16, String) {
    let mut s = UnixStream::connect(a.docker_socket()).expect("connect docker.sock");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    // A large body may be refused before it is all sent: the answer still comes.
    let _ = s.write_all(request);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (status, body)
}

fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// The `message` of a Docker error body (chunked or not).
fn message(body: &str) -> String {
    let start = body.find('{').unwrap_or(0);
    let end = body.rfind('}').map(|e| e + 1).unwrap_or(body.len());
    serde_json::from_str::<serde_json::Value>(&body[start..end])
        .ok()
        .and_then(|v| v["message"].as_str().map(String::from))
        .unwrap_or_else(|| panic!("no Docker error body in {body:?}"))
}

fn still_serving(a: &Agent) {
    let (status, body) = raw(
        a,
        b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        (status, body.trim_end()),
        (200, "OK"),
        "agent stopped serving"
    );
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn oversized_and_truncated_bodies_are_refused_and_make_nothing() {
    let a = Agent::start().with_busybox();
    // 17 MiB of JSON: over the 16 MiB a JSON body may have.
    let mut big = b"{\"Image\":\"busybox\",\"Env\":[\"X=".to_vec();
    big.extend(std::iter::repeat_n(b'a', 17 << 20));
    big.extend_from_slice(b"\"]}");
    let (status, body) = raw(&a, &post("/v1.47/containers/create?name=big", &big));
    assert_eq!(status, 413, "{body}");
    assert!(message(&body).contains("larger than"), "{body}");
    // A body shorter than its Content-Length: the client gives up half-way.
    let mut r = b"POST /v1.47/containers/create?name=half HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n".to_vec();
    r.extend_from_slice(b"{\"Image\":\"busy");
    let (status, _) = raw(&a, &r);
    assert!(status == 0 || status == 400, "status {status}");
    // Wrong JSON types name the field.
    let (status, body) = raw(
        &a,
        &post(
            "/containers/create?name=typed",
            br#"{"Image":"busybox","HostConfig":{"Memory":"lots"}}"#,
        ),
    );
    assert_eq!(status, 400, "{body}");
    assert!(message(&body).contains("Memory"), "{body}");
    still_serving(&a);
    assert_eq!(
        a.cmd(&["ps", "-aq"]).stdout,
        "",
        "something was half-created"
    );
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn names_and_paths_cannot_leave_their_place() {
    let a = Agent::start().with_busybox();
    for name in ["../../etc", "a/b", "..", "x%00y"] {
        let path = format!("/containers/create?name={name}");
        let (status, body) = raw(&a, &post(&path, br#"{"Image":"busybox"}"#));
        assert_eq!(status, 400, "name {name:?}: {body}");
        assert!(!message(&body).is_empty());
    }
    // Volume names are validated the same way.
    let (status, body) = raw(&a, &post("/volumes/create", br#"{"Name":"../../x"}"#));
    assert_eq!(status, 400, "{body}");
    assert!(!a.root.join("x").exists() && !a.root.parent().expect("dir").join("x").exists());
    // An image name that is a path.
    let (status, _) = raw(
        &a,
        b"GET /images/..%2F..%2Fetc%2Fpasswd/json HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n",
    );
    assert!(status == 400 || status == 404, "status {status}");
    // Unknown endpoints and versions: Docker's error shape, never a hang.
    let (status, body) = raw(
        &a,
        b"GET /v1.47/nope HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 404, "{body}");
    assert!(message(&body).contains("/nope"), "{body}");
    let (status, body) = raw(
        &a,
        b"GET /v9.0/info HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 400, "{body}");
    assert!(message(&body).contains("too new"), "{body}");
    still_serving(&a);
    assert_eq!(a.cmd(&["ps", "-aq"]).stdout, "");
}

#[test]
#[cfg_attr(not(skiff_root), ignore = "needs root: agents, namespaces, mounts")]
fn clients_that_vanish_mid_stream_leave_the_agent_serving() {
    let a = Agent::start().with_busybox();
    a.docker(&[
        "run",
        "-d",
        "--name",
        "talker",
        "busybox",
        "sh",
        "-c",
        "while true; do echo tick; sleep 0.1; done",
    ]);
    for path in [
        "/containers/talker/logs?follow=1&stdout=1",
        "/containers/talker/stats?stream=1",
        "/events",
        "/containers/talker/attach?stream=1&stdout=1",
    ] {
        for _ in 0..5 {
            let mut s = UnixStream::connect(a.docker_socket()).expect("connect");
            let req = if path.contains("attach") {
                format!("POST {path} HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
            } else {
                format!("GET {path} HTTP/1.1\r\nHost: d\r\n\r\n")
            };
            s.write_all(req.as_bytes()).expect("write");
            let mut buf = [0u8; 256];
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let n = s.read(&mut buf).expect("first bytes of the answer");
            assert!(n > 0, "{path}: no answer");
            drop(s); // gone mid-stream
        }
    }
    still_serving(&a);
    // The container is untouched and still talking.
    let logs = a.docker(&["logs", "--tail", "1", "talker"]).stdout;
    assert_eq!(logs, "tick\n");
    assert_eq!(
        a.docker(&["inspect", "-f", "{{.State.Status}}", "talker"])
            .stdout
            .trim(),
        "running"
    );
    a.docker(&["rm", "-f", "talker"]);
}
