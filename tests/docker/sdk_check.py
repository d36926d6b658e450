"""Drives the Python docker SDK (PyPI) against the agent in DOCKER_HOST and checks what
it sees; tests/docker_clients.rs runs it. Prints "ok" at the end; any failure raises."""
import io
import sys
import tarfile
import time

import docker


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")


c = docker.from_env(timeout=60)
check(c.ping(), "ping")
check(c.version()["ApiVersion"], "version")
check("Containers" in c.info(), "info")

out = c.containers.run("busybox", ["echo", "hello sdk"], remove=True)
check(out == b"hello sdk\n", f"run output {out!r}")

ct = c.containers.run(
    "busybox",
    ["sh", "-c", "echo started; sleep 300"],
    detach=True,
    name="sdk1",
    environment={"A": "b"},
    labels={"t": "sdk"},
)
for _ in range(100):
    if b"started" in ct.logs():
        break
    time.sleep(0.05)
check(ct.logs() == b"started\n", f"logs {ct.logs()!r}")
ct.reload()
check(ct.status == "running", f"status {ct.status}")
check(ct.attrs["Config"]["Env"].count("A=b") == 1, "env in inspect")
r = ct.exec_run(["sh", "-c", "echo $A"])
check((r.exit_code, r.output) == (0, b"b\n"), f"exec {r}")
r = ct.exec_run(["sh", "-c", "exit 4"])
check(r.exit_code == 4, f"exec exit code {r.exit_code}")
names = [x.name for x in c.containers.list(filters={"label": "t=sdk"})]
check(names == ["sdk1"], f"list by label {names}")
stats = ct.stats(stream=False)
check(stats["memory_stats"].get("usage", 0) > 0, f"stats {stats.get('memory_stats')}")
check("total_usage" in stats["cpu_stats"]["cpu_usage"], "cpu stats")

buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w") as t:
    data = b"from the sdk\n"
    info = tarfile.TarInfo("f.txt")
    info.size = len(data)
    t.addfile(info, io.BytesIO(data))
check(ct.put_archive("/tmp", buf.getvalue()), "put_archive")
check(ct.exec_run(["cat", "/tmp/f.txt"]).output == b"from the sdk\n", "file copied in")
bits, stat = ct.get_archive("/tmp/f.txt")
got = io.BytesIO(b"".join(bits))
with tarfile.open(fileobj=got) as t:
    check(t.extractfile("f.txt").read() == b"from the sdk\n", "get_archive")
check(stat["name"] == "f.txt" and stat["size"] == 13, f"stat {stat}")

vol = c.volumes.create("sdkvol", labels={"t": "sdk"})
check(c.volumes.get("sdkvol").attrs["Labels"] == {"t": "sdk"}, "volume labels")
net = c.networks.create("sdknet", labels={"t": "sdk"})
net.connect(ct)
net.reload()
check(ct.id in net.attrs["Containers"], f"network containers {net.attrs['Containers']}")
net.disconnect(ct)

ct.stop(timeout=1)
check(ct.wait()["StatusCode"] == 137, "wait after stop")
ct.remove(v=True)
check(not c.containers.list(all=True, filters={"name": "sdk1"}), "container removed")
net.remove()
vol.remove()

img = c.images.get("busybox")
check("busybox:latest" in img.tags, f"tags {img.tags}")
built, logs = c.images.build(
    fileobj=io.BytesIO(b"FROM busybox\nRUN echo built > /built\n"), tag="sdkbuilt:1", rm=True
)
check("sdkbuilt:1" in built.tags, f"built tags {built.tags}")
out = c.containers.run("sdkbuilt:1", ["cat", "/built"], remove=True)
check(out == b"built\n", f"built image output {out!r}")
c.images.remove("sdkbuilt:1")

try:
    c.containers.get("no-such-container")
    check(False, "NotFound expected")
except docker.errors.NotFound as e:
    check("No such container: no-such-container" in str(e), str(e))
print("ok")
sys.exit(0)
