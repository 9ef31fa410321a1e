"""The copier's copy stage on large files, against the tools an operator would use.

Copies the same files, interleaved round by round, with:
  file  - ours: hpc_mirror_files (copy_file_range into a temporary name, renamed)
        - cp:   /bin/cp of the same file
  sftp  - ours: the copier's sftp path (paramiko, read ahead) from a loopback sshd
        - scp:  /usr/bin/scp from the same sshd, same key
        - sftp: /usr/bin/sftp 'get' from the same sshd
Both sides of each ratio have the same durability: no fsync (--fsync: fsync
on both, with `sync -f` after cp/scp/sftp). Prints one table (MB/s, ratio
ours/tool) and the load average. Needs root (sshd) and openssh-server.

    python3 benchmarks/copy/bench.py [--size-mib 256] [--files 4] [--rounds 3] [--fsync] [--quick]
"""

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "roles", "mirror", "files"))
sys.path.insert(0, os.path.join(ROOT, "tests", "helpers"))

import hpc_mirror_copier as copier  # noqa: E402
import hpc_mirror_files as files  # noqa: E402
import loopback_sshd  # noqa: E402


@contextlib.contextmanager
def sshd_for_root(work):
    """A loopback sshd letting root in with a fresh key; yields (port, known_hosts file, key file)."""
    key = os.path.join(work, "client_key")
    loopback_sshd.keygen(key)
    with loopback_sshd.sshd(work, authorized_keys=key + ".pub") as (port, (kind, public)):
        known = os.path.join(work, "known_hosts")
        with open(known, "w") as handle:
            handle.write("[127.0.0.1]:%d %s %s\n" % (port, kind, public))
        yield port, known, key


def remote_path(directory, name):
    return "root@127.0.0.1:%s/%s" % (directory.replace(" ", "\\ "), name.replace(" ", "\\ "))


def drop_target(directory):
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)


def ours_file(source_dir, target_dir, names, fsync):
    for name in names:
        entry = files.open_source(source_dir, name)
        try:
            with files.Destination(target_dir, "") as target:
                target.install_file(name, entry.copy_into, 0o644, (entry.st.st_atime_ns, entry.st.st_mtime_ns),
                                    fsync=fsync)
        finally:
            entry.close()


def tool(command, target_dir, fsync):
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    if fsync:
        subprocess.run(["sync", "-f", target_dir], check=True)


def ours_sftp(probe, server, source_dir, target_dir, names, fsync):
    for name in names:
        entry = probe.open_source(server, source_dir, name)
        try:
            with files.Destination(target_dir, "") as target:
                target.install_file(name, entry.copy_into, 0o644, (0, int(entry.st.st_mtime) * 10**9), fsync=fsync)
        finally:
            entry.close()


def measure(args, source, target, names, work, port, known, key):
    """Seconds per method and round: {(transport, method): [seconds, ...]}."""
    server = "sftp://root@127.0.0.1:%d/" % port
    credential = types.SimpleNamespace(ssh_keyfile=key)
    options = types.SimpleNamespace(credentials=types.SimpleNamespace(get=lambda url: (True, credential)))
    probe = copier.SftpProbe(options)
    ssh_options = ["-q", "-i", key, "-o", "UserKnownHostsFile=" + known, "-o", "BatchMode=yes", "-P", str(port)]
    batch = os.path.join(work, "batch")
    with open(batch, "w") as handle:
        for name in names:
            handle.write('get "%s/%s" "%s/%s"\n' % (source, name, target, name))
    methods = {
        ("file", "ours"): lambda: ours_file(source, target, names, args.fsync),
        ("file", "cp"): lambda: tool(
            ["/bin/cp"] + [os.path.join(source, n) for n in names] + [target + "/"], target, args.fsync),
        ("sftp", "ours"): lambda: ours_sftp(probe, server, source, target, names, args.fsync),
        # scp (SFTP protocol) globs remote paths: a backslash keeps each space a space
        ("sftp", "scp"): lambda: tool(
            ["scp"] + ssh_options + [remote_path(source, n) for n in names] + [target + "/"], target, args.fsync),
        ("sftp", "sftp"): lambda: tool(["sftp"] + ssh_options + ["-b", batch, "root@127.0.0.1"], target, args.fsync),
    }
    methods = {k: run for k, run in methods.items() if args.transport in ("both", k[0])}
    seconds = {k: [] for k in methods}
    try:
        # One transport after the other (the file copier never has paramiko's
        # transport thread beside it, as in a real copier); within one,
        # interleaved: every method once per round, starting one further each round.
        for transport in ("file", "sftp"):
            order = [k for k in methods if k[0] == transport]
            for round_number in range(args.rounds if order else 0):
                shift = round_number % len(order)
                for k in order[shift:] + order[:shift]:
                    drop_target(target)
                    os.sync()  # the last method's dirty pages are not written back on this one's time
                    start = time.perf_counter()
                    methods[k]()
                    seconds[k].append(time.perf_counter() - start)
                    for name in names:
                        if os.path.getsize(os.path.join(target, name)) != args.size_mib << 20:
                            raise SystemExit("%s %s: %s has the wrong size" % (k + (name,)))
    finally:
        probe.close()
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fsync", action="store_true")
    parser.add_argument("--quick", action="store_true", help="2 files of 16 MiB, 1 round (a smoke test)")
    parser.add_argument("--transport", choices=["file", "sftp", "both"], default="both")
    parser.add_argument("--root", default="/var/tmp/hpc_mirror_bench/copy")
    args = parser.parse_args()
    if args.quick:
        args.size_mib, args.files, args.rounds = 16, 2, 1
    shutil.rmtree(args.root, ignore_errors=True)
    source = os.path.join(args.root, "source dir")
    target = os.path.join(args.root, "target")
    os.makedirs(source)
    names = ["large file %02d.bin" % n for n in range(args.files)]
    block = os.urandom(1 << 20)
    for name in names:
        with open(os.path.join(source, name), "wb") as handle:
            for _mib in range(args.size_mib):
                handle.write(block)
    total_mb = args.files * args.size_mib * 1.048576
    work = tempfile.mkdtemp(prefix="hpc_mirror_bench_ssh.")
    os.environ["HOME"] = work  # the copier's host key policy reads ~/.ssh/known_hosts
    os.makedirs(os.path.join(work, ".ssh"))
    try:
        with sshd_for_root(work) as (port, known, key):
            shutil.copy(known, os.path.join(work, ".ssh", "known_hosts"))
            seconds = measure(args, source, target, names, work, port, known, key)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(args.root, ignore_errors=True)

    def rate(key):
        return total_mb / statistics.median(seconds[key])
    print("# copy stage, %d files x %d MiB, %d round(s), fsync %s, load average %s"
          % (args.files, args.size_mib, args.rounds, "on" if args.fsync else "off",
             " ".join("%.2f" % x for x in os.getloadavg())))
    print("| transport | ours MB/s | tool | tool MB/s | ours/tool |")
    print("|---|---:|---|---:|---:|")
    for transport, tools in (("file", ["cp"]), ("sftp", ["scp", "sftp"])):
        for name in tools if args.transport in ("both", transport) else []:
            ours, theirs = rate((transport, "ours")), rate((transport, name))
            print("| %s | %.0f | %s | %.0f | %.2f |" % (transport, ours, name, theirs, ours / theirs))


if __name__ == "__main__":
    main()
