"""Event source cpost for real: sr3c's sr3_cpost (built from SR3C_SOURCE in the
ops user's home by the shim scenario) runs as a daemon on the single-host
mirror, started, counted and stopped by sr3 like the other configs. Files
written under the primary tree by plain commands (no shim) reach the secondary.

The test switches the scenario's deployment to cpost and, whatever happens,
back to shim at the end, so the shim tests see the same deployment in any order.
"""

import os
import re
import subprocess
import time

import pytest

import sr3c_corpus

INVENTORY = os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"])
testinfra_hosts = ["broker-local"]

USER = "opsmshim"
HOME = "/home/" + USER
PRIMARY = "/var/tmp/hpc_mirror_molecule_shim/primary"
SECONDARY = "/var/tmp/hpc_mirror_molecule_shim/secondary"
FLOW = "mirror_primary_to_secondary"
CONFIG = "cpost/" + FLOW
PIDFILE = "%s/.cache/sr3/cpost/%s/cpost_%s_01.pid" % (HOME, FLOW, FLOW)
PREFIX = HOME + "/.local/share/hpc_mirror/sr3c"
VENV_BIN = HOME + "/.local/share/hpc_mirror/venv/bin"
TOP = "cpost_daemon"


def playbook(name, *extra):
    started = time.time()
    result = subprocess.run(
        ["ansible-playbook", "-i", INVENTORY, "sr3.hpc_mirror." + name] + list(extra),
        capture_output=True, text=True, check=False, env=dict(os.environ, ANSIBLE_NOCOLOR="1"))
    print("%s %s: rc %d in %.0f s" % (name, " ".join(extra), result.returncode, time.time() - started))
    return result


def cpost(name, *extra):
    return playbook(name, "-e", "hpc_mirror_event_source=cpost", *extra)


def must(result):
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return result.stdout


def recap_changed(output, host="hpc-local"):
    output = re.sub(r"\x1b\[[0-9;]*m", "", output)  # molecule forces colour
    match = re.search(r"^%s\s*:.*?changed=(\d+)" % re.escape(host), output, re.M)
    assert match, output[-2000:]
    return int(match.group(1))


def as_user(host, script):
    """A plain shell of the ops user: no LD_PRELOAD, the shim is not involved."""
    return host.run("runuser -u %s -- env -u LD_PRELOAD -u SR_POST_CONFIG bash -c %s", USER, "cd && " + script)


def daemon_pid(host):
    """Pid of the running sr3_cpost of the flow, from its pid file; None when none runs."""
    out = host.run("cat %s", PIDFILE)
    if out.rc != 0 or not out.stdout.strip().isdigit():
        return None
    pid = out.stdout.strip()
    cmdline = host.run("tr '\\0' ' ' < /proc/%s/cmdline", str(pid))
    if cmdline.rc != 0 or "sr3_cpost" not in cmdline.stdout or FLOW not in cmdline.stdout:
        return None
    return int(pid)


def user_cposts(host):
    return host.run("pgrep -u %s -f sr3_cpost", USER).stdout.split()


def entry(host, path):
    """(type, content or target) of one path, None when absent."""
    if host.run("test -L %s", path).rc == 0:
        return ("link", host.check_output("readlink %s", path))
    if host.run("test -d %s", path).rc == 0:
        return ("dir", "")
    if host.run("test -f %s", path).rc == 0:
        return ("file", host.check_output("sha256sum %s", path).split()[0])
    return None


def wait_mirrored(host, paths, timeout=60):
    """Wait until every relative path is the same on both sides; return those that differ."""
    deadline = time.time() + timeout
    while True:
        differ = {p: (entry(host, PRIMARY + "/" + p), entry(host, SECONDARY + "/" + p)) for p in paths}
        differ = {p: v for p, v in differ.items() if v[0] != v[1]}
        if not differ or time.time() > deadline:
            return differ
        time.sleep(1)


# Plain commands, no shim: what a shell builtin writes (echo x > f) is seen too,
# since the daemon watches the tree with inotify.
FIRST = [
    ("mkdir", "mkdir -p {p}/%s/run/out" % TOP),
    ("create (builtin echo >)", "echo first > {p}/%s/run/new.txt" % TOP),
    ("create for overwrite", "echo short > {p}/%s/run/over.txt" % TOP),
    ("create for append", "echo line1 > {p}/%s/run/log.txt" % TOP),
    ("create for mv", "echo moving > {p}/%s/run/before.txt" % TOP),
    ("create for rm", "echo doomed > {p}/%s/run/doomed.txt" % TOP),
    ("create in a directory", "echo inside > {p}/%s/run/out/f.txt" % TOP),
    ("dd", "dd if=/dev/urandom of={p}/%s/run/data.bin bs=64k count=16 status=none" % TOP),
]
SECOND = [
    ("overwrite (>)", "echo overwritten, longer than before > {p}/%s/run/over.txt" % TOP),
    ("append (>>)", "echo line2 >> {p}/%s/run/log.txt" % TOP),
    ("cp", "cp {p}/%s/run/new.txt {p}/%s/run/copy.txt" % (TOP, TOP)),
    ("mv file", "mv {p}/%s/run/before.txt {p}/%s/run/after.txt" % (TOP, TOP)),
    ("ln -s", "ln -s new.txt {p}/%s/run/link" % TOP),
    ("rm", "rm {p}/%s/run/doomed.txt" % TOP),
    ("truncate", "truncate -s 1000 {p}/%s/run/data.bin" % TOP),
]
FIRST_PATHS = ["run/new.txt", "run/over.txt", "run/log.txt", "run/before.txt",
               "run/doomed.txt", "run/out/f.txt", "run/data.bin"]
SECOND_PATHS = ["run/over.txt", "run/log.txt", "run/copy.txt", "run/before.txt", "run/after.txt",
                "run/link", "run/doomed.txt", "run/data.bin", "run/new.txt"]


def run_commands(host, commands):
    for name, command in commands:
        out = as_user(host, command.format(p=PRIMARY))
        assert out.rc == 0, (name, out.stderr)


# Set by test_back_to_shim_stops_the_daemon once its deploy of the shim passed:
# the fixture then need not deploy it once more (a deploy takes about 40 s).
BACK_TO_SHIM = {"done": False}


@pytest.fixture(scope="module")
def cpost_deployment(host):
    """Deploy with event source cpost; deploy the scenario's shim again afterwards."""
    as_user(host, "rm -rf %s/%s" % (PRIMARY, TOP))
    BACK_TO_SHIM["done"] = False
    try:
        first = cpost("deploy")
        yield first
    finally:
        back = None if BACK_TO_SHIM["done"] else playbook("deploy")
        # leave nothing for the shim tests' whole-tree comparison
        host.run("rm -rf %s %s", "%s/%s" % (PRIMARY, TOP), "%s/%s" % (SECONDARY, TOP))
        assert back is None or back.returncode == 0, back.stdout[-3000:]


def test_deploy_starts_the_daemon(host, cpost_deployment):
    out = must(cpost_deployment)
    assert "Stop the posting of the other event sources" in out
    pid = daemon_pid(host)
    assert pid, "no running sr3_cpost for %s (pid file %s)" % (CONFIG, PIDFILE)
    # started by sr3 (sr3_cpost start <config>), found next to sr3 through PATH
    cmdline = host.check_output("tr '\\0' ' ' < /proc/%s/cmdline", str(pid))
    assert cmdline.split()[:3] == ["sr3_cpost", "start", FLOW], cmdline
    link = host.file(VENV_BIN + "/sr3_cpost")
    assert link.is_symlink and link.linked_to == PREFIX + "/bin/sr3_cpost"
    assert host.file("/proc/%d/exe" % pid).linked_to == PREFIX + "/bin/sr3_cpost"
    conf = host.file("%s/.config/sr3/%s.conf" % (HOME, CONFIG)).content_string
    assert "\npath %s\n" % PRIMARY in conf and "\nsleep 2\n" in conf
    # sr3 counts it as a running daemon of the flow
    status = as_user(host, "%s/sr3 status %s" % (VENV_BIN, CONFIG))
    print(status.stdout)
    assert re.search(r"%s\s+\S*run" % re.escape(CONFIG), status.stdout), status.stdout


def test_daemon_sleeps_when_idle(host, cpost_deployment):
    """sr3c 3.24 sleeps only the whole seconds left of its sleep: with sleep 1 it spun (12 % of a core)."""
    must(cpost_deployment)
    pid = daemon_pid(host)
    before = host.check_output("cut -d' ' -f14,15 /proc/%s/stat", str(pid)).split()
    time.sleep(10)
    after = host.check_output("cut -d' ' -f14,15 /proc/%s/stat", str(pid)).split()
    ticks = sum(int(a) for a in after) - sum(int(b) for b in before)
    print("sr3_cpost CPU while idle: %d ticks in 10 s" % ticks)
    assert ticks < 20, "sr3_cpost used %d clock ticks in 10 s while idle" % ticks


def test_status_shows_the_daemon_running(host, cpost_deployment):
    must(cpost_deployment)
    result = cpost("status")
    rows = [line for line in result.stdout.splitlines() if CONFIG in line]
    print("\n".join(rows))
    assert any(re.search(r"\brunning\s+1/1\b", row) for row in rows), result.stdout[-3000:]
    assert result.returncode == 0, result.stdout[-3000:]


def test_files_written_without_the_shim_are_mirrored(host, cpost_deployment):
    must(cpost_deployment)
    started = time.time()
    run_commands(host, FIRST)
    differ = wait_mirrored(host, ["%s/%s" % (TOP, p) for p in FIRST_PATHS])
    print("first wave mirrored in %.1f s (hold 3 s)" % (time.time() - started))
    assert not differ, differ
    started = time.time()
    run_commands(host, SECOND)
    differ = wait_mirrored(host, ["%s/%s" % (TOP, p) for p in SECOND_PATHS])
    print("second wave mirrored in %.1f s" % (time.time() - started))
    assert not differ, differ
    assert entry(host, "%s/%s/run/link" % (SECONDARY, TOP)) == ("link", "new.txt")
    assert entry(host, "%s/%s/run/doomed.txt" % (SECONDARY, TOP)) is None
    assert entry(host, "%s/%s/run/before.txt" % (SECONDARY, TOP)) is None


def test_directory_operations(host, cpost_deployment):
    """mkdir and mv of a directory reach the copy; sr3c 3.24 posts no rmdir (printed, not asserted)."""
    must(cpost_deployment)
    run_commands(host, [("mkdir", "mkdir {p}/%s/run/empty" % TOP)])
    assert not wait_mirrored(host, ["%s/run/empty" % TOP], timeout=20)
    started = time.time()
    run_commands(host, [("mv dir", "mv {p}/%s/run/out {p}/%s/run/results" % (TOP, TOP))])
    moved = ["%s/run/out" % TOP, "%s/run/out/f.txt" % TOP, "%s/run/results" % TOP,
             "%s/run/results/f.txt" % TOP]
    differ = wait_mirrored(host, moved, timeout=30)
    print("directory move mirrored in %.1f s" % (time.time() - started))
    assert not differ, differ
    run_commands(host, [("rmdir", "rmdir {p}/%s/run/empty" % TOP)])
    # printed only: 6 s is the hold (3 s) and the daemon's sleep (2 s) and one more
    print("after rmdir (source, destination):", wait_mirrored(host, ["%s/run/empty" % TOP], timeout=6))


# Measured 2026-12-06 with sr3c 3.24.10: sr3_cpost keeps the old path of a moved
# directory's inotify watch (sr3_cpost.c names events by dir_stack path, never
# updated on IN_MOVED_TO), so a file written there is posted as a removal of
# run/out/later.txt; it reaches the copy at the daemon's next start (its walk).
# Strict: it fails as soon as an sr3c from SR3C_SOURCE handles it.
@pytest.mark.xfail(strict=True, reason="sr3c 3.24.10: sr3_cpost posts writes in a moved directory under its old name")
def test_writes_in_a_moved_directory(host, cpost_deployment):
    must(cpost_deployment)
    run_commands(host, [("create in the moved directory", "echo later > {p}/%s/run/results/later.txt" % TOP)])
    differ = wait_mirrored(host, ["%s/run/results/later.txt" % TOP], timeout=15)
    print("written in the moved directory, not mirrored (source, destination):", differ)
    assert not differ


def test_the_tree_top_is_not_copied_into_itself(host, cpost_deployment):
    """sr3_cpost posts the top directory at every start; the copiers reject it."""
    must(cpost_deployment)
    logs = "%s/.cache/sr3/log/sarra_%s_copy_*.log" % (HOME, FLOW)
    deadline = time.time() + 30
    while time.time() < deadline:
        rejected = host.run("grep -h 'not copying .*top directory' " + logs).stdout  # a glob: not quoted
        if rejected:
            break
        time.sleep(1)
    print(rejected.strip().splitlines()[-1:] if rejected else "no rejection logged")
    assert rejected, "no copier logged the top directory's event (%s)" % logs
    assert not host.file(SECONDARY + PRIMARY).exists


def test_hostile_names_under_cpost(host, cpost_deployment):
    """The hostile-name corpus written by plain commands, seen by sr3_cpost (sr3c_corpus.py)."""
    must(cpost_deployment)
    sr3c_corpus.check(host, "", "cpost")


def test_redeploy_changes_nothing_and_keeps_the_daemon(host, cpost_deployment):
    must(cpost_deployment)
    pid = daemon_pid(host)
    again = cpost("deploy")
    out = must(again)
    assert recap_changed(out) == 0, [line for line in out.splitlines() if line.startswith("changed:")]
    assert daemon_pid(host) == pid


def test_stop_and_start_manage_the_daemon(host, cpost_deployment):
    must(cpost_deployment)
    # stop.yml keeps the posting running unless asked
    must(cpost("stop"))
    assert daemon_pid(host)
    must(cpost("start"))
    must(cpost("stop", "-e", "hpc_mirror_stop_posting=true"))
    assert daemon_pid(host) is None and not user_cposts(host)
    again = cpost("stop", "-e", "hpc_mirror_stop_posting=true")
    assert recap_changed(must(again)) == 0
    # written while stopped: the daemon's walk of the tree at start posts it
    run_commands(host, [("create while stopped", "echo offline > {p}/%s/run/offline.txt" % TOP)])
    must(cpost("start"))
    assert daemon_pid(host)
    # also what sr3c posted under a moved directory's old name (test_writes_in_a_moved_directory)
    assert not wait_mirrored(host, ["%s/run/offline.txt" % TOP, "%s/run/results/later.txt" % TOP])
    assert recap_changed(must(cpost("start"))) == 0


def test_back_to_shim_stops_the_daemon(host, cpost_deployment):
    must(cpost_deployment)
    assert daemon_pid(host)
    must(playbook("deploy"))
    BACK_TO_SHIM["done"] = True
    assert daemon_pid(host) is None and not user_cposts(host)
    conf = host.file("%s/.config/sr3/%s.conf" % (HOME, CONFIG)).content_string
    assert "\nsleep" not in conf and "\npath " not in conf
