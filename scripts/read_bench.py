#!/usr/bin/env python3
"""Linearizable reads and single-client writes, side by side: QuorumDB vs etcd 3.4 (Debian's
etcd-server), each a 3-node cluster on loopback, every write fsynced on a quorum.

wrk drives both over HTTP keep-alive with one connection (and --conns more), against the
leader and against a follower, one cluster at a time on the same machine:
  - read:  QuorumDB GET /v1/kv/{key}?consistency=linearizable; etcd POST /v3/kv/range
           (linearizable is etcd's default);
  - write: QuorumDB PUT /v1/kv/{key}; etcd POST /v3/kv/put; 256-byte values, 1,000 keys.

    apt-get install -y etcd-server wrk
    cargo build --release -p quorumdb-server
    python3 scripts/read_bench.py [--bin target/release/quorumdb] [--seconds 10] [--conns 1,16]

Prints one line per (system, workload, node, connections) and a table of ratios.
"""
import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request


def call(method, url, body=None, timeout=1.0):
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"null")


def wait(cond, what, secs=60):
    deadline = time.time() + secs
    while time.time() < deadline:
        try:
            if cond():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not happen within {secs} s")


def b64(s):
    return base64.b64encode(s.encode()).decode()


class QuorumDBCluster:
    name = "quorumdb"

    def __init__(self, binary, workdir, base=19100):
        self.bin, self.dir, self.base, self.procs = binary, workdir, base, []

    def url(self, i):
        return f"http://127.0.0.1:{self.base + i}"

    def start(self):
        def node(i, *extra):
            log = open(os.path.join(self.dir, f"qdb{i}.log"), "w")
            args = [self.bin, "start", "--id", str(i), "--data-dir", os.path.join(self.dir, f"qdb{i}"),
                    "--listen", f"127.0.0.1:{self.base + i}", "--pg-listen", "off", "--redis-listen", "off", *extra]
            self.procs.append(subprocess.Popen(args, stdout=log, stderr=log))

        node(1, "--init")
        wait(lambda: call("GET", self.url(1) + "/v1/status").get("leader") == 1, "QuorumDB node 1 leading")
        node(2, "--join", f"127.0.0.1:{self.base + 1}")
        node(3, "--join", f"127.0.0.1:{self.base + 1}")
        wait(lambda: len(call("GET", self.url(1) + "/v1/status")["members"]) == 3, "QuorumDB 3 members")
        for k in range(1000):
            call("PUT", f"{self.url(1)}/v1/kv/key{k}", b"v" * 256)
        wait(lambda: all(call("GET", self.url(i) + "/v1/status")["applied"] >= call("GET", self.url(1) + "/v1/status")["applied"]
                         for i in (2, 3)), "followers caught up")
        return 1, 2  # leader, a follower

    def lua(self, workload):
        if workload == "read":
            return ("local n = 0\nrequest = function()\n  n = n + 1\n"
                    "  return wrk.format('GET', '/v1/kv/key' .. (n % 1000) .. '?consistency=linearizable')\nend\n")
        return ("local v = string.rep('v', 256)\nlocal n = 0\nrequest = function()\n  n = n + 1\n"
                "  return wrk.format('PUT', '/v1/kv/key' .. (n % 1000), nil, v)\nend\n")

    def stop(self):
        for p in self.procs:
            p.kill()
            p.wait()


class EtcdCluster:
    name = "etcd"

    def __init__(self, workdir, base=19200):
        self.dir, self.base, self.procs = workdir, base, []

    def url(self, i):
        return f"http://127.0.0.1:{self.base + i}"

    def peer(self, i):
        return f"http://127.0.0.1:{self.base + 10 + i}"

    def start(self):
        cluster = ",".join(f"e{i}={self.peer(i)}" for i in (1, 2, 3))
        for i in (1, 2, 3):
            log = open(os.path.join(self.dir, f"etcd{i}.log"), "w")
            args = ["etcd", "--name", f"e{i}", "--data-dir", os.path.join(self.dir, f"etcd{i}"),
                    "--listen-client-urls", self.url(i), "--advertise-client-urls", self.url(i),
                    "--listen-peer-urls", self.peer(i), "--initial-advertise-peer-urls", self.peer(i),
                    "--initial-cluster", cluster, "--initial-cluster-state", "new"]
            self.procs.append(subprocess.Popen(args, stdout=log, stderr=log))
        members = {}

        def elected():
            for i in (1, 2, 3):
                st = call("POST", self.url(i) + "/v3/maintenance/status", {})
                members[i] = st["header"]["member_id"]
                if st.get("leader") and st["leader"] == st["header"]["member_id"]:
                    members["leader"] = i
            return "leader" in members

        wait(elected, "an etcd leader")
        leader = members["leader"]
        for k in range(1000):
            call("POST", self.url(leader) + "/v3/kv/put", {"key": b64(f"key{k}"), "value": b64("v" * 256)})
        follower = next(i for i in (1, 2, 3) if i != leader)
        return leader, follower

    def lua(self, workload):
        keys = ", ".join(f"'{b64(f'key{k}')}'" for k in range(0, 1000, 10))
        value = b64("v" * 256)
        if workload == "read":
            body = "'{\"key\":\"' .. keys[(n % #keys) + 1] .. '\"}'"
            path = "/v3/kv/range"
        else:
            body = f"'{{\"key\":\"' .. keys[(n % #keys) + 1] .. '\",\"value\":\"{value}\"}}'"
            path = "/v3/kv/put"
        return (f"local keys = {{{keys}}}\nlocal n = 0\nrequest = function()\n  n = n + 1\n"
                f"  return wrk.format('POST', '{path}', {{['Content-Type'] = 'application/json'}}, {body})\nend\n")

    def stop(self):
        for p in self.procs:
            p.kill()
            p.wait()


def ms(text):
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def wrk(url, lua, conns, seconds, workdir):
    script = os.path.join(workdir, "bench.lua")
    with open(script, "w") as f:
        f.write(lua)
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "-s", script, url],
                         capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    pct = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"per_s": rate, "p50_ms": ms(pct["50"]), "p99_ms": ms(pct["99"]), "errors": int(errors.group(1)) if errors else 0}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "quorumdb"))
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--conns", default="1,16")
    p.add_argument("--workloads", default="read,write")
    a = p.parse_args()
    conns = [int(c) for c in a.conns.split(",")]
    results = {}
    for make in (lambda d: QuorumDBCluster(os.path.abspath(a.bin), d), EtcdCluster):
        workdir = tempfile.mkdtemp(prefix="read-bench-")
        cluster = make(workdir)
        try:
            leader, follower = cluster.start()
            for workload in a.workloads.split(","):
                for node, i in (("leader", leader), ("follower", follower)):
                    for c in conns:
                        r = wrk(cluster.url(i), cluster.lua(workload), c, a.seconds, workdir)
                        results[(cluster.name, workload, node, c)] = r
                        print(json.dumps({"system": cluster.name, "workload": workload, "node": node, "conns": c, **r}),
                              flush=True)
        finally:
            cluster.stop()
            shutil.rmtree(workdir, ignore_errors=True)
    print("\n| workload | node | conns | QuorumDB /s | p50 ms | p99 ms | etcd /s | p50 ms | p99 ms | ratio /s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for (system, workload, node, c), q in results.items():
        if system != "quorumdb":
            continue
        e = results.get(("etcd", workload, node, c))
        if e:
            print(f"| {workload} | {node} | {c} | {q['per_s']:,.0f} | {q['p50_ms']:.2f} | {q['p99_ms']:.2f} | "
                  f"{e['per_s']:,.0f} | {e['p50_ms']:.2f} | {e['p99_ms']:.2f} | {q['per_s'] / e['per_s']:.2f}x |")


if __name__ == "__main__":
    main()
