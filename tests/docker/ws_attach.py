"""Drives GET /containers/{id}/attach/ws with a real WebSocket client (websocket-client
from PyPI) over the agent's Docker API socket. Usage: ws_attach.py DOCKER_SOCKET.
The containers are made by the Rust test (tests/docker_wsattach.rs) beforehand:
  wsraw  busybox cat, stdin open, no tty (running)
  wstty  busybox sh, stdin open, tty (running)
  wspark busybox sh -c 'read l; echo got:$l; echo oops >&2', stdin open (created only)
  wslog  busybox sh -c 'echo past; echo bad >&2' (exited)
Prints "ok" when every check passed."""

import http.client
import socket
import sys
import time

import websocket

SOCK = sys.argv[1]


def unix_socket():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(SOCK)
    return s


def connect(path):
    """A WebSocket on the unix socket; the URL's host only fills the Host header."""
    return websocket.create_connection(
        "ws://localhost" + path, socket=unix_socket(), timeout=20
    )


def read_until(ws, want, limit=20):
    """Messages until `want` shows up in their concatenation; returns (data, opcodes)."""
    got, ops = b"", set()
    end = time.time() + limit
    while want not in got:
        if time.time() > end:
            raise AssertionError(f"never saw {want!r}, got {got!r}")
        op, data = ws.recv_data()
        if op == websocket.ABNF.OPCODE_CLOSE:
            raise AssertionError(f"closed before {want!r}, got {got!r}")
        ops.add(op)
        got += data
    return got, ops


def read_to_close(ws, limit=20):
    """Everything until the server's Close."""
    got = b""
    end = time.time() + limit
    while time.time() < end:
        try:
            op, data = ws.recv_data()
        except websocket.WebSocketConnectionClosedException:
            return got
        if op == websocket.ABNF.OPCODE_CLOSE:
            return got
        got += data
    raise AssertionError(f"no close after {got!r}")


class UnixHTTP(http.client.HTTPConnection):
    def connect(self):
        self.sock = unix_socket()


def http(method, path, headers=None):
    c = UnixHTTP("localhost", timeout=20)
    c.request(method, path, headers=headers or {})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body


# A running container without a tty: raw (not multiplexed) binary messages, input to stdin.
ws = connect("/v1.47/containers/wsraw/attach/ws?stream=1&stdin=1&stdout=1&stderr=1")
ws.send_binary(b"hello over ws\n")
got, ops = read_until(ws, b"hello over ws\n")
assert got == b"hello over ws\n", f"raw stream expected, got {got!r}"
assert ops == {websocket.ABNF.OPCODE_BINARY}, ops
# Text messages from the client go to stdin too.
ws.send("and text\n")
got, _ = read_until(ws, b"and text\n")
assert got == b"and text\n", got
ws.close()

# With a tty: the shell runs what we type.
ws = connect("/v1.47/containers/wstty/attach/ws?stream=1&stdin=1&stdout=1")
ws.send_binary(b"echo $((6*7))x\n")
got, _ = read_until(ws, b"42x")
ws.close()

# Before API 1.28 the messages are text; before 1.42 all three streams are attached
# whatever the query says.
ws = connect("/v1.27/containers/wsraw/attach/ws?stream=1")
ws.send("old api\n")
got, ops = read_until(ws, b"old api\n")
assert ops == {websocket.ABNF.OPCODE_TEXT}, ops
ws.close()

# A created container: the attach waits for the start, which hands it the connection;
# the input sent before the start reaches the process; the server closes at the exit.
ws = connect("/v1.47/containers/wspark/attach/ws?stream=1&stdin=1&stdout=1&stderr=1")
ws.send_binary(b"early\n")
status, body = http("POST", "/v1.47/containers/wspark/start")
assert status == 204, (status, body)
got = read_to_close(ws)
assert b"got:early\n" in got and b"oops\n" in got, got
assert not got.startswith(b"\x01"), f"multiplexed frames on a websocket: {got!r}"

# logs=1 without stream: the past output, then the server closes; stderr only if asked.
ws = connect("/v1.47/containers/wslog/attach/ws?logs=1&stdout=1")
got = read_to_close(ws)
assert got == b"past\n", got

# Errors: a plain GET is not a handshake (400); an unknown container is 404 before
# the handshake (dockerd's order).
status, body = http("GET", "/v1.47/containers/wsraw/attach/ws?stream=1")
assert status == 400, (status, body)
try:
    connect("/v1.47/containers/nosuchthing/attach/ws?stream=1")
    raise AssertionError("handshake to an unknown container succeeded")
except websocket.WebSocketBadStatusException as e:
    assert e.status_code == 404, e.status_code
status, body = http(
    "GET",
    "/v1.47/containers/wsraw/attach/ws?stream=1",
    {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "8",
    },
)
assert status == 400, (status, body)

print("ok")
