"""Copiers killed with SIGKILL in the middle of large-file copies and rewrites:
every copy holds one whole version of its file (never a mix, never a part),
the restarted copiers remove what the killed ones left, and the copy converges."""

import json
import os
import shlex
import time

testinfra_hosts = ["broker-local"]

USER = "opsmtest"
ROOT = "/var/tmp/hpc_mirror_molecule"
PRIMARY = ROOT + "/primary/killed"
SECONDARY = ROOT + "/secondary/killed"
STAGING = ROOT + "/staging"
FLOW = "mirror_primary_to_secondary"
NAMES = ["big %d.bin" % n for n in range(4)]
VERSIONS = 6
SIZE_MIB = 96


def as_user(host, script):
    return host.run("runuser -u %s -- bash -c %s", USER, script)


def copier_pids(host, instances=2):
    cache = host.user(USER).home + "/.cache/sr3/sarra/%s_copy" % FLOW
    pids = [host.file("%s/sarra_%s_copy_%02d.pid" % (cache, FLOW, n)).content_string.strip()
            for n in range(1, instances + 1)]
    return [pid for pid in pids if alive(host, pid)]


def digests(host, directory):
    """name -> sha256 of every file in directory, temporary names included."""
    script = r'''
import hashlib, json, os, sys
out = {}
for name in sorted(os.listdir(sys.argv[1])):
    try:
        with open(os.path.join(sys.argv[1], name), "rb") as handle:
            h = hashlib.sha256()
            for block in iter(lambda: handle.read(1 << 20), b""):
                h.update(block)
    except FileNotFoundError:  # a temporary file renamed meanwhile
        continue
    out[name] = h.hexdigest()
print(json.dumps(out))
'''
    result = host.run("python3 -c %s %s", script, directory)
    assert result.rc == 0, result.stderr
    return json.loads(result.stdout)


def alive(host, pid):
    """A process that is neither gone nor a zombie."""
    stat = host.run("cat /proc/%s/stat", pid)
    return stat.rc == 0 and stat.stdout.rsplit(")", 1)[1].split()[0] != "Z"


def sanity(host):
    """Restart dead instances, as the ops role's cron does."""
    home = host.user(USER).home
    assert as_user(host, "%s/.local/share/hpc_mirror/venv/bin/sr3 sanity" % home).rc == 0


def wait_for(predicate, timeout=120):
    deadline = time.time() + timeout
    while not predicate() and time.time() < deadline:
        time.sleep(0.2)


def leftovers(host):
    return host.run("find %s -name '.hpc_mirror~*'", ROOT + "/secondary").stdout.split("\n")[:-1]


def test_a_killed_copier_leaves_whole_files_and_converges(host):
    assert len(copier_pids(host)) == 2, "the copiers do not run"
    # Versions of every file, made outside the tree: version v of file n is known in advance.
    assert as_user(host, "mkdir -p %s %s && for v in $(seq 0 %d); do head -c %dM /dev/urandom > %s/v$v; done"
                   % (STAGING, PRIMARY, VERSIONS, SIZE_MIB, STAGING)).rc == 0
    versions = set(digests(host, STAGING).values())
    assert len(versions) == VERSIONS + 1
    for name in NAMES:
        assert as_user(host, "cp %s/v0 '%s/%s'" % (STAGING, PRIMARY, name)).rc == 0
    first = digests(host, STAGING)["v0"]
    wait_for(lambda: host.file(SECONDARY).exists and digests(host, SECONDARY) == dict.fromkeys(NAMES, first))
    assert digests(host, SECONDARY) == dict.fromkeys(NAMES, first), "the first versions were not mirrored"

    # Rewrite every file in place, version after version, while the copiers copy them.
    rewrites = " ; ".join("for n in %s; do cp %s/v%d \"%s/big $n.bin\"; done; sleep 0.7"
                          % (" ".join(str(n) for n in range(len(NAMES))), STAGING, v, PRIMARY)
                          for v in range(1, VERSIONS + 1))
    assert as_user(host, "nohup bash -c %s > /dev/null 2>&1 &" % shlex.quote(rewrites)).rc == 0
    caught = False
    deadline = time.time() + 60
    while not caught and time.time() < deadline:
        if leftovers(host):  # a copy is being written: kill every copier now
            pids = copier_pids(host)
            assert pids and all(pid.isdigit() for pid in pids), pids
            host.run("kill -9 " + " ".join(pids))
            wait_for(lambda: not [pid for pid in pids if alive(host, pid)], timeout=10)
            assert not [pid for pid in pids if alive(host, pid)], "a copier survived SIGKILL"
            # caught in flight when its temporary file outlives it; else the rename won the race
            caught = bool(leftovers(host))
            if not caught:
                sanity(host)
        time.sleep(0.02)
    assert caught, "no copy was caught in flight in 60 s"

    # Right after the kill: each copy is one whole version, or absent (the partial
    # copy is only ever under its temporary name).
    copies = digests(host, SECONDARY)
    assert [name for name in copies if name.startswith(".hpc_mirror~")], "the partial copy is not in its directory"
    for name in NAMES:
        assert copies.get(name) in versions, "%s holds a mix or a part of its versions" % name

    # The flow restarts them (sr3 sanity, as the ops role's cron does) and converges.
    time.sleep(VERSIONS * 1.2)  # the rewrites are over
    sanity(host)
    final = digests(host, STAGING)["v%d" % VERSIONS]
    wait_for(lambda: digests(host, SECONDARY) == dict.fromkeys(NAMES, final) and not leftovers(host))
    assert digests(host, SECONDARY) == dict.fromkeys(NAMES, final)
    assert leftovers(host) == []
    as_user(host, "rm -rf %s %s" % (PRIMARY, STAGING))
    # The tests after this one compare whole trees: wait until the removal reached the copy.
    wait_for(lambda: not host.file(SECONDARY).exists)
    assert not host.file(SECONDARY).exists


def teardown_module():
    """Whatever happened, leave every copier running for the tests after this one."""
    os.system("runuser -u %s -- ~%s/.local/share/hpc_mirror/venv/bin/sr3 sanity >/dev/null 2>&1" % (USER, USER))
