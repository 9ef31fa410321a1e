# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pipeline benchmark: our tuned mirror against the reference settings and cp -a.

Deploys two flows on this machine with playbooks/deploy.yml (local RabbitMQ,
``file`` transport, the single-host inventory style of inventories/local):

* ``ours``: the mirror role's defaults (profile tuned), ops user ``opsbench``;
* ``reference``: ``mirror_profile=reference``, 5 winnows, 10 copy instances
  (the reference example), ops user ``opsbenchref``;

and, with ``--variant LABEL:VAR=VALUE[,VAR=VALUE]``, a third flow ``LABEL``: ours
with those role variables (extra vars), ops user ``opsbenchvar``; all with the
same hold (30 s unless --hold), in the broker vhost
``hpc_mirror_bench``, trees under /var/tmp/hpc_mirror_bench/pipeline. Then for
each workload, ours and the reference one after the other (the other flow is
stopped meanwhile; the order alternates between workloads so both see similar
machine load), and ``cp -a`` of the same data on the same disk:

* burst: 20 000 files of 4 KiB written as fast as possible;
* sustained: 200 files/s of 4 KiB for 60 s;
* trickle: 5 files/s of 4 KiB for 30 s;
* large: 20 files of 50 MiB;
* mixed: a tree of small files, then renames (files and a directory), symlinks,
  hard links, rewrites and deletes.

Per file it measures the time from close() on the source to the moment the
destination file exists with identical content, minus the hold: a poller
thread checks the pending files (oldest first) every 20 ms; its resolution is
the duration of one pass, printed with the results. For the mixed tree it
measures when the whole destination tree equals the source (types, contents,
link targets; every 0.2 s) after the last operation. CPU seconds (user +
system) and peak RSS (sum over processes) of all sr3 processes of the flow's
ops user and of RabbitMQ are sampled from /proc every 0.5 s.

Prints one Markdown table with ours/reference and ours/limit ratios. Removes
everything it created (processes, users, vhost, trees; RabbitMQ is stopped
again if it was not running before), also on failure or Ctrl-C.

Needs root, a free RabbitMQ (run under the shared lock) and PyPI for sr3:
    flock /tmp/hpc_mirror_rabbit.lock python3 benchmarks/pipeline/bench.py [--quick]

Not a test: nothing here runs in CI.
"""

import argparse
import hashlib
import json
import os
import pwd
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
ROOT = "/var/tmp/hpc_mirror_bench/pipeline"
VHOST = "hpc_mirror_bench"
FLOWS = {
    "ours": {"user": "opsbench", "vars": {}},
    "reference": {"user": "opsbenchref",
                  "vars": {"hpc_mirror_winnows": 5, "hpc_mirror_copy_instances": 10},
                  "extra": {"mirror_profile": "reference"}},
}
CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def log(*args):
    print(time.strftime("%H:%M:%S"), *args, file=sys.stderr, flush=True)


def run(cmd, check=True, **kwargs):
    return subprocess.run(cmd, shell=isinstance(cmd, str), check=check, **kwargs)


def as_user(user, command, check=True):
    return run(["su", "-", user, "-c", command], check=check, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
               text=True)


# ---------------------------------------------------------------- resources

class Sampler(threading.Thread):
    """CPU seconds and peak RSS of one user's processes and of RabbitMQ."""

    def __init__(self, uid):
        super().__init__(daemon=True)
        self.uid = uid
        self.stop_event = threading.Event()
        self.first = {}
        self.last = {}
        self.peak = {"sr3": 0, "rabbitmq": 0}

    @staticmethod
    def owners():
        rabbit = pwd.getpwnam("rabbitmq").pw_uid
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                uid = os.stat("/proc/" + pid).st_uid
                with open("/proc/%s/stat" % pid) as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
                with open("/proc/%s/statm" % pid) as handle:
                    rss = int(handle.read().split()[1]) * PAGE
            except (OSError, IndexError, ValueError):
                continue
            cpu = (int(fields[11]) + int(fields[12])) / CLK
            yield pid, uid, rabbit, cpu, rss

    def sample(self):
        rss = {"sr3": 0, "rabbitmq": 0}
        for pid, uid, rabbit, cpu, size in self.owners():
            kind = "sr3" if uid == self.uid else "rabbitmq" if uid == rabbit else None
            if kind is None:
                continue
            self.first.setdefault((kind, pid), cpu)
            self.last[(kind, pid)] = cpu
            rss[kind] += size
        for kind in rss:
            self.peak[kind] = max(self.peak[kind], rss[kind])

    def run(self):
        while not self.stop_event.is_set():
            self.sample()
            self.stop_event.wait(0.5)

    def finish(self):
        self.stop_event.set()
        self.join()
        self.sample()
        cpu = {"sr3": 0.0, "rabbitmq": 0.0}
        for key, value in self.last.items():
            cpu[key[0]] += value - self.first[key]
        return {"cpu_sr3": cpu["sr3"], "cpu_rabbitmq": cpu["rabbitmq"],
                "rss_sr3": self.peak["sr3"], "rss_rabbitmq": self.peak["rabbitmq"]}


# ---------------------------------------------------------------- arrivals

class Arrivals(threading.Thread):
    """Polls the destination for expected files: identical content -> arrival time."""

    def __init__(self, destination):
        super().__init__(daemon=True)
        self.destination = destination
        self.pending = {}  # relative path -> (closed, size, digest), oldest first
        self.arrived = {}  # relative path -> (closed, arrival, size)
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.passes = []
        self.cursor = 0

    def expect(self, relative, closed, size, digest):
        with self.lock:
            self.pending[relative] = (closed, size, digest)

    def check(self, relative, entry):
        path = os.path.join(self.destination, relative)
        try:
            if os.path.getsize(path) != entry[1]:
                return False
            with open(path, "rb") as handle:
                return hashlib.blake2b(handle.read()).digest() == entry[2]
        except OSError:
            return False

    def one_pass(self):
        with self.lock:
            items = list(self.pending.items())
        # The oldest 2000, and a rotating slice of the rest: copies arrive roughly in order.
        head, rest = items[:2000], items[2000:]
        if rest:
            self.cursor %= len(rest)
            head += rest[self.cursor:self.cursor + 2000]
            self.cursor += 2000
        for relative, entry in head:
            if self.check(relative, entry):
                now = time.time()
                with self.lock:
                    self.pending.pop(relative, None)
                    self.arrived[relative] = (entry[0], now, entry[1])

    def run(self):
        while not self.stop_event.is_set():
            start = time.time()
            self.one_pass()
            self.passes.append(time.time() - start)
            self.stop_event.wait(0.02)

    def wait(self, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if not self.pending:
                    return True
            time.sleep(0.1)
        return False

    def finish(self):
        self.stop_event.set()
        self.join()


# ---------------------------------------------------------------- workloads

def content(seed, size):
    block = hashlib.blake2b(seed.encode(), digest_size=64).digest()
    return (block * (size // 64 + 1))[:size]


def write_file(arrivals, source, relative, data):
    path = os.path.join(source, relative)
    with open(path, "wb") as handle:
        handle.write(data)
    arrivals.expect(relative, time.time(), len(data), hashlib.blake2b(data).digest())


def small_files(arrivals, source, name, count, rate=None, size=4096):
    start = time.time()
    for index in range(count):
        directory = os.path.join(name, "d%03d" % (index // 500))
        if index % 500 == 0:
            os.makedirs(os.path.join(source, directory), exist_ok=True)
        write_file(arrivals, source, os.path.join(directory, "f%06d.dat" % index),
                   content("%s%d%f" % (name, index, start), size))
        if rate:
            delay = start + (index + 1) / rate - time.time()
            if delay > 0:
                time.sleep(delay)
    return count * size


def large_files(arrivals, source, name, count, size):
    os.makedirs(os.path.join(source, name), exist_ok=True)
    base = os.urandom(1 << 20)
    for index in range(count):
        data = (base * (size >> 20))[:size - 8] + index.to_bytes(8, "big")
        write_file(arrivals, source, os.path.join(name, "big%02d.dat" % index), data)
    return count * size


def snapshot(root):
    entries = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, root)
            if os.path.islink(path):
                entries[relative] = ("link", os.readlink(path))
            elif os.path.isdir(path):
                entries[relative] = ("dir", "")
            else:
                try:
                    with open(path, "rb") as handle:
                        entries[relative] = ("file", hashlib.blake2b(handle.read()).hexdigest())
                except OSError:
                    entries[relative] = ("file", "<unreadable>")
    return entries


def mixed_tree(source, name, scale):
    """Small files, then renames (files, a directory), links, rewrites and deletes; returns bytes written."""
    top = os.path.join(source, name)
    written = 0
    for d in range(10):
        os.makedirs(os.path.join(top, "dir%02d" % d, "sub"), exist_ok=True)
        for f in range(scale):
            data = content("mixed%d-%d" % (d, f), 4096)
            with open(os.path.join(top, "dir%02d" % d, "sub" if f % 2 else "", "f%04d" % f), "wb") as handle:
                handle.write(data)
            written += len(data)
    time.sleep(1)
    for d in range(10):
        base = os.path.join(top, "dir%02d" % d)
        for f in range(0, scale, 10):
            os.rename(os.path.join(base, "f%04d" % f), os.path.join(base, "renamed%04d" % f))
        for f in range(2, scale, 10):
            os.symlink("f%04d" % (f + 2), os.path.join(base, "link%04d" % f))
        for f in range(4, scale, 10):
            os.link(os.path.join(base, "f%04d" % f), os.path.join(base, "hard%04d" % f))
        for f in range(6, scale, 10):
            for version in range(3):
                with open(os.path.join(base, "f%04d" % f), "wb") as handle:
                    handle.write(content("rewrite%d-%d-%d" % (d, f, version), 4096))
        for f in range(8, scale, 10):
            os.unlink(os.path.join(base, "f%04d" % f))
    os.rename(os.path.join(top, "dir09"), os.path.join(top, "dir09moved"))
    shutil.rmtree(os.path.join(top, "dir08", "sub"))
    return written


# ---------------------------------------------------------------- flows

class Bench(object):

    def __init__(self, args):
        self.args = args
        self.rabbit_was_running = run("pgrep -u rabbitmq -x beam.smp", check=False,
                                      stdout=subprocess.DEVNULL).returncode == 0
        self.created_users = []
        self.results = []
        self.machine = {}

    # -- setup and cleanup
    def sr3(self, flow):
        home = os.path.expanduser("~" + FLOWS[flow]["user"])
        return home + "/.local/share/hpc_mirror/venv/bin/sr3"

    def deploy(self, flow):
        spec = FLOWS[flow]
        user = spec["user"]
        top = os.path.join(ROOT, flow)
        if run(["id", user], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode:
            run(["useradd", "--create-home", "--shell", "/bin/bash", user])
            self.created_users.append(user)
        os.makedirs(os.path.join(top, "primary"), exist_ok=True)
        os.makedirs(os.path.join(top, "inventory", "group_vars", "all"), exist_ok=True)
        uid = pwd.getpwnam(user).pw_uid
        os.chown(top, uid, -1)
        os.chown(os.path.join(top, "primary"), uid, -1)
        shutil.copy(os.path.join(REPO, "inventories", "local", "hosts.yml"), os.path.join(top, "inventory", "hosts.yml"))
        settings = {
            "hpc_mirror_local_user": user,
            "hpc_mirror_broker_host": "localhost",
            "hpc_mirror_broker_vhost": VHOST,
            "hpc_mirror_broker_user": user,
            "hpc_mirror_broker_password": secrets.token_hex(12),
            "hpc_mirror_install_broker": True,
            "hpc_mirror_primary_dir": os.path.join(top, "primary"),
            "hpc_mirror_secondary_dir": os.path.join(top, "secondary"),
            "hpc_mirror_event_source": "watch",
            "hpc_mirror_transport": "file",
            "hpc_mirror_hold": self.args.hold,
        }
        settings.update(spec["vars"])
        group_vars = os.path.join(top, "inventory", "group_vars", "all", "main.yml")
        with open(os.open(group_vars, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
            json.dump(settings, handle, indent=1)
        command = [os.path.join(REPO, ".venv", "bin", "ansible-playbook"), "-i", os.path.join(top, "inventory"),
                   os.path.join(REPO, "playbooks", "deploy.yml")]
        for key, value in spec.get("extra", {}).items():
            command += ["-e", "%s=%s" % (key, value)]
        log("deploying", flow)
        result = run(command, check=False, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                     env=dict(os.environ, PATH=os.path.join(REPO, ".venv", "bin") + ":" + os.environ["PATH"]))
        if result.returncode:
            sys.stderr.write(result.stdout[-6000:])
            raise RuntimeError("deploy of %s failed" % flow)

    def start(self, flow):
        as_user(FLOWS[flow]["user"], self.sr3(flow) + " start")

    def stop(self, flow):
        as_user(FLOWS[flow]["user"], self.sr3(flow) + " stop", check=False)

    def cleanup(self):
        log("cleaning up")
        for flow, spec in FLOWS.items():
            user = spec["user"]
            if run(["id", user], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode:
                continue
            if os.path.exists(self.sr3(flow)):
                self.stop(flow)
            run(["pkill", "-TERM", "-u", user], check=False)
            for _attempt in range(20):
                if run(["pgrep", "-u", user], check=False, stdout=subprocess.DEVNULL).returncode:
                    break
                time.sleep(0.5)
            run(["pkill", "-KILL", "-u", user], check=False)
            run(["userdel", "--remove", "--force", user], check=False, stderr=subprocess.DEVNULL)
        if run("pgrep -u rabbitmq -x beam.smp", check=False, stdout=subprocess.DEVNULL).returncode == 0:
            run(["rabbitmqctl", "-q", "delete_vhost", VHOST], check=False, stderr=subprocess.DEVNULL)
            for spec in FLOWS.values():
                run(["rabbitmqctl", "-q", "delete_user", spec["user"]], check=False, stderr=subprocess.DEVNULL)
            if not self.rabbit_was_running:
                run(["rabbitmqctl", "-q", "shutdown"], check=False)
        shutil.rmtree(ROOT, ignore_errors=True)

    # -- one measurement
    def measure(self, flow, workload):
        args = self.args
        top = os.path.join(ROOT, flow)
        source, destination = os.path.join(top, "primary"), os.path.join(top, "secondary")
        uid = pwd.getpwnam(FLOWS[flow]["user"]).pw_uid
        load_before = os.getloadavg()[0]
        sampler = Sampler(uid)
        sampler.start()
        arrivals = Arrivals(destination)
        arrivals.start()
        start = time.time()
        result = {"flow": flow, "workload": workload}
        if workload == "mixed":
            written = mixed_tree(source, "mixed", args.mixed_scale)
            last_op = time.time()
            wanted = snapshot(os.path.join(source, "mixed"))
            deadline = last_op + args.hold + args.timeout
            while True:
                have = snapshot(os.path.join(destination, "mixed"))
                if have == wanted or time.time() > deadline:
                    break
                time.sleep(0.2)
            done = time.time()
            missing = sum(1 for p in set(wanted) | set(have) if wanted.get(p) != have.get(p))
            result.update(files=len(wanted), bytes=written, missing=missing,
                          converge=done - last_op - args.hold, seconds=done - start)
        else:
            if workload == "burst":
                written = small_files(arrivals, source, "burst", args.burst)
            elif workload == "sustained":
                written = small_files(arrivals, source, "sustained", int(200 * args.sustained), rate=200)
            elif workload == "trickle":
                written = small_files(arrivals, source, "trickle", int(5 * args.trickle), rate=5)
            elif workload == "large":
                written = large_files(arrivals, source, "large", args.large, 50 << 20)
            arrivals.wait(args.hold + args.timeout)
            arrived = dict(arrivals.arrived)
            lags = sorted(a - c - args.hold for c, a, _s in arrived.values())
            times = sorted(a for _c, a, _s in arrived.values())
            window = (times[-1] - times[0]) if len(times) > 1 else 0
            result.update(files=len(arrivals.pending) + len(arrived), bytes=written, missing=len(arrivals.pending),
                          seconds=time.time() - start)
            if window > 0:
                result["files_per_s"] = (len(times) - 1) / window
                result["mb_per_s"] = sum(s for _c, _a, s in arrived.values()) * (len(times) - 1) / len(times) / window / 1e6
            if lags:
                result.update({"p50": percentile(lags, 50), "p95": percentile(lags, 95), "p99": percentile(lags, 99),
                               "max": lags[-1]})
            result["resolution"] = statistics.median(arrivals.passes) + 0.02 if arrivals.passes else None
        arrivals.finish()
        result.update(sampler.finish())
        result["load"] = "%.1f->%.1f" % (load_before, os.getloadavg()[0])
        log(json.dumps(result))
        return result

    def limit(self, workload):
        """cp -a of the workload's data (from the ours flow's source) on the same disk."""
        source = os.path.join(ROOT, "ours", "primary", workload)
        target = os.path.join(ROOT, "limit", workload)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        files = sum(len(f) for _d, _s, f in os.walk(source))
        size = sum(os.lstat(os.path.join(d, name)).st_size for d, _s, f in os.walk(source) for name in f)
        start = time.time()
        run(["cp", "-a", source, target])
        seconds = time.time() - start
        result = {"flow": "cp -a", "workload": workload, "files": files, "bytes": size, "missing": 0,
                  "files_per_s": files / seconds, "mb_per_s": size / seconds / 1e6, "seconds": seconds}
        log(json.dumps(result))
        return result

    def main(self):
        args = self.args
        self.machine = {"nproc": os.cpu_count(), "load_start": os.getloadavg(),
                        "memory": run("free -m | awk '/Mem:/{print $2}'", stdout=subprocess.PIPE, text=True).stdout.strip()}
        shutil.rmtree(ROOT, ignore_errors=True)
        os.makedirs(ROOT)
        for flow in FLOWS:
            self.deploy(flow)
            self.stop(flow)
        order = list(FLOWS)
        for index, workload in enumerate(args.workloads):
            for flow in (order if index % 2 == 0 else order[::-1]):
                self.start(flow)
                time.sleep(3)
                self.results.append(self.measure(flow, workload))
                self.stop(flow)
            self.results.append(self.limit(workload))
        self.machine["load_end"] = os.getloadavg()
        print(table(self.results, args, self.machine))


def percentile(values, p):
    if not values:
        return None
    index = min(len(values) - 1, max(0, int(round(p / 100.0 * (len(values) - 1)))))
    return values[index]


def fmt(value, digits=1):
    if value is None:
        return "-"
    if isinstance(value, float):
        return ("%." + str(digits) + "f") % value
    return str(value)


def ratio(a, b):
    return "%.2f" % (a / b) if a is not None and b else "-"


def table(results, args, machine):
    by = dict(((r["workload"], r["flow"]), r) for r in results)
    lines = ["", "Machine: %s cores, %s MiB, load %s at start, %s at end; hold %d s (subtracted from lags)."
             % (machine["nproc"], machine["memory"], "/".join("%.1f" % x for x in machine["load_start"]),
                "/".join("%.1f" % x for x in machine["load_end"]), args.hold), "",
             "| workload | flow | files | missing | files/s | MB/s | lag p50 s | p95 | p99 | max | sr3 CPU s "
             "| sr3 peak RSS MiB | RabbitMQ CPU s | RabbitMQ peak RSS MiB | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for workload in args.workloads:
        for flow in [f for f in FLOWS if f != "reference"] + ["reference", "cp -a"]:
            r = by.get((workload, flow))
            if not r:
                continue
            p50 = r.get("p50", r.get("converge"))
            lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                workload, flow, r["files"], r["missing"], fmt(r.get("files_per_s")), fmt(r.get("mb_per_s")),
                fmt(p50, 2), fmt(r.get("p95"), 2), fmt(r.get("p99"), 2), fmt(r.get("max"), 2),
                fmt(r.get("cpu_sr3")), fmt(r["rss_sr3"] / 2 ** 20 if "rss_sr3" in r else None, 0),
                fmt(r.get("cpu_rabbitmq")), fmt(r["rss_rabbitmq"] / 2 ** 20 if "rss_rabbitmq" in r else None, 0),
                r.get("load", "")))
    mine = [f for f in FLOWS if f != "reference"]
    lines += ["", "| workload | flow | files/s ours/ref | ours/cp -a | MB/s ours/ref | ours/cp -a | lag p50 ours/ref "
              "| p95 ours/ref | sr3 RSS ours/ref | sr3 CPU ours/ref |", "|---|---|---|---|---|---|---|---|---|---|"]
    for workload, flow in ((w, m) for w in args.workloads for m in mine):
        o, f, c = by.get((workload, flow), {}), by.get((workload, "reference"), {}), by.get((workload, "cp -a"), {})
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            workload, flow, ratio(o.get("files_per_s"), f.get("files_per_s")), ratio(o.get("files_per_s"), c.get("files_per_s")),
            ratio(o.get("mb_per_s"), f.get("mb_per_s")), ratio(o.get("mb_per_s"), c.get("mb_per_s")),
            ratio(o.get("p50", o.get("converge")), f.get("p50", f.get("converge"))),
            ratio(o.get("p95"), f.get("p95")), ratio(o.get("rss_sr3"), f.get("rss_sr3")),
            ratio(o.get("cpu_sr3"), f.get("cpu_sr3"))))
    resolutions = [r["resolution"] for r in results if r.get("resolution")]
    if resolutions:
        lines += ["", "Arrival poll resolution (median pass + 20 ms pause): %.3f s; mixed: tree compared every 0.2 s "
                  "(its lag column is the convergence time after the last operation)." % statistics.median(resolutions)]
    return "\n".join(lines)


def parse():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--quick", action="store_true", help="short workloads (2 000 burst, 20 s sustained, 5 large)")
    parser.add_argument("--hold", type=int, default=30, help="hold of both flows, seconds (default 30)")
    parser.add_argument("--timeout", type=int, default=300, help="seconds past the hold to wait for the last file")
    parser.add_argument("--workloads", default="burst,sustained,trickle,large,mixed")
    parser.add_argument("--variant", metavar="LABEL:VAR=VALUE[,VAR=VALUE]",
                        help="also measure ours with these mirror role variables (extra vars), as flow LABEL, "
                             "e.g. consumer:mirror_amqp_consumer=true")
    args = parser.parse_args()
    args.workloads = args.workloads.split(",")
    if args.variant:
        label, _colon, assignments = args.variant.partition(":")
        extra = dict(item.split("=", 1) for item in assignments.split(",") if "=" in item)
        if not label or label in FLOWS or label == "cp -a" or not extra:
            parser.error("--variant: LABEL:VAR=VALUE[,VAR=VALUE] with a new label")
        FLOWS[label] = {"user": "opsbenchvar", "vars": {}, "extra": extra}
    args.burst, args.sustained, args.trickle, args.large, args.mixed_scale = (
        (2000, 20, 10, 5, 20) if args.quick else (20000, 60, 30, 20, 100))
    return args


def main():
    if os.geteuid() != 0:
        sys.exit("run as root (creates users, starts RabbitMQ)")
    bench = Bench(parse())

    def interrupted(signum, _frame):
        raise KeyboardInterrupt("signal %d" % signum)

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    try:
        bench.main()
    finally:
        bench.cleanup()


if __name__ == "__main__":
    main()
