"""Verify the single-host mirror for real: files written into the primary tree by
the ops user reach the secondary tree through RabbitMQ and the sr3 processes."""

import json
import os
import subprocess
import time
from urllib.parse import quote


# The directory: molecule links the scenario's hosts and group_vars there.
INVENTORY = os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"])
testinfra_hosts = ["broker-local"]

USER = "opsmtest"
PRIMARY = "/var/tmp/hpc_mirror_molecule/primary"
SECONDARY = "/var/tmp/hpc_mirror_molecule/secondary"
FLOW = "mirror_primary_to_secondary"
PASSWORD = "m0lecule-Test:pw/with@chars"
HOLD = 3


def as_user(host, script):
    return host.run("runuser -u %s -- bash -c %s", USER, script)


def tree_state(host, root):
    """Relative path -> (type, content or link target) for every entry."""
    script = r'''
import os, sys, json, hashlib
root = sys.argv[1]
out = {}
for d, dirs, files in os.walk(root):
    for n in dirs + files:
        p = os.path.join(d, n); r = os.path.relpath(p, root)
        if os.path.islink(p): out[r] = ["link", os.readlink(p)]
        elif os.path.isdir(p): out[r] = ["dir", ""]
        else: out[r] = ["file", hashlib.sha256(open(p, "rb").read()).hexdigest()]
print(json.dumps(out))
'''
    result = host.run("python3 -c %s %s", script, root)
    assert result.rc == 0, result.stderr
    return json.loads(result.stdout)


def wait_until_mirrored(host, timeout=120):
    deadline = time.time() + timeout
    while True:
        source, destination = tree_state(host, PRIMARY), tree_state(host, SECONDARY)
        if source == destination or time.time() > deadline:
            return source, destination
        time.sleep(1)


def test_sr3_installed_for_the_ops_user(host):
    home = host.user(USER).home
    sr3 = host.file(home + "/.local/share/hpc_mirror/venv/bin/sr3")
    assert sr3.exists
    assert sr3.user == USER
    version = host.run("%s --version", sr3.path)
    assert version.rc == 0


def test_credentials_are_private(host):
    credentials = host.file(host.user(USER).home + "/.config/sr3/credentials.conf")
    assert credentials.mode == 0o600
    assert credentials.user == USER


def test_configs_written(host):
    config = host.user(USER).home + "/.config/sr3/"
    for name in ["watch/%s" % FLOW, "winnow/%s_00" % FLOW, "winnow/%s_01" % FLOW,
                 "sarra/%s_copy" % FLOW, "shovel/%s_tally" % FLOW]:
        assert host.file(config + name + ".conf").exists, name
    assert not host.file(config + "winnow/%s_02.conf" % FLOW).exists
    copy = host.file(config + "sarra/%s_copy.conf" % FLOW).content_string
    assert "baseDir %s" % PRIMARY in copy
    assert "directory %s" % SECONDARY in copy
    assert "instances 2" in copy


def test_expected_processes_run(host):
    expected = {"watch/%s" % FLOW: 1, "winnow/%s_00" % FLOW: 1, "winnow/%s_01" % FLOW: 1,
                "sarra/%s_copy" % FLOW: 2, "shovel/%s_tally" % FLOW: 1}
    cache = host.user(USER).home + "/.cache/sr3/"
    for name, count in expected.items():
        component, config = name.split("/")
        running = 0
        for n in range(1, count + 1):
            pid_file = host.file("%s%s/%s/%s_%s_%02d.pid" % (cache, component, config, component, config, n))
            assert pid_file.exists, pid_file.path
            if host.file("/proc/%s" % pid_file.content_string.strip()).exists:
                running += 1
        assert running == count, name


def test_queues_bound_on_the_broker(host):
    bindings = host.check_output("rabbitmqctl -q list_bindings -p hpc_mirror_molecule source_name destination_name")
    for queue in ["winnow.%s_00" % FLOW, "winnow.%s_01" % FLOW, "sarra.%s_copy" % FLOW, "shovel.%s_tally" % FLOW]:
        assert "q_%s.%s" % (USER, queue) in bindings, queue


def test_operations_are_mirrored(host):
    steps = [
        "mkdir -p %s/work/nested/deeper" % PRIMARY,
        "echo first > %s/work/new.txt" % PRIMARY,
        "head -c 2500000 /dev/urandom > %s/work/nested/big.bin" % PRIMARY,
        "echo 'to be overwritten' > %s/work/over.txt" % PRIMARY,
        "echo renamed > %s/work/before.txt" % PRIMARY,
        "echo doomed > %s/work/doomed.txt" % PRIMARY,
        "mkdir -p %s/work/olddir && echo inside > %s/work/olddir/f.txt" % (PRIMARY, PRIMARY),
        "ln -s new.txt %s/work/link" % PRIMARY,
        "mkdir %s/work/emptydir" % PRIMARY,
    ]
    assert as_user(host, " && ".join(steps)).rc == 0
    wait_until_mirrored(host)
    # Second wave, on files the mirror already holds.
    steps = [
        "echo 'overwritten, longer than before' > %s/work/over.txt" % PRIMARY,
        "mv %s/work/before.txt %s/work/after.txt" % (PRIMARY, PRIMARY),
        "rm %s/work/doomed.txt" % PRIMARY,
        "mv %s/work/olddir %s/work/newdir" % (PRIMARY, PRIMARY),
    ]
    assert as_user(host, " && ".join(steps)).rc == 0
    source, destination = wait_until_mirrored(host)
    assert source == destination
    assert destination["work/link"] == ["link", "new.txt"]
    assert "work/doomed.txt" not in destination
    assert "work/before.txt" not in destination
    assert destination["work/after.txt"][0] == "file"
    assert "work/newdir/f.txt" in destination
    assert "work/emptydir" in destination
    over = host.file(SECONDARY + "/work/over.txt").content_string
    assert over == "overwritten, longer than before\n"


def test_audit_playbook_passes(host):
    result = subprocess.run(
        ["ansible-playbook", "-i", INVENTORY, "sr3.hpc_mirror.audit"],
        capture_output=True, text=True, check=False, env=dict(os.environ))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "The mirror matches: 0 differences" in result.stdout


def test_audit_playbook_fails_on_a_difference(host):
    host.run("runuser -u %s -- bash -c 'echo tampered > %s/work/new.txt'", USER, SECONDARY)
    try:
        result = subprocess.run(
            ["ansible-playbook", "-i", INVENTORY, "sr3.hpc_mirror.audit"],
            capture_output=True, text=True, check=False, env=dict(os.environ))
        assert result.returncode != 0
        assert "The mirror differs" in result.stdout + result.stderr
    finally:
        host.run("runuser -u %s -- bash -c 'cp -p %s/work/new.txt %s/work/new.txt'", USER, PRIMARY, SECONDARY)


def test_no_secret_in_verbose_output(host):
    result = subprocess.run(
        ["ansible-playbook", "-vvv", "--check", "-i", INVENTORY, "sr3.hpc_mirror.deploy"],
        capture_output=True, text=True, check=False, env=dict(os.environ))
    assert result.returncode == 0, result.stdout[-3000:]
    output = result.stdout + result.stderr
    assert PASSWORD not in output
    assert quote(PASSWORD, safe="") not in output


def running_pids(host, config):
    """Pids of a config's running instances, from its pid files."""
    component, name = config.split("/")
    state = host.user(USER).home + "/.cache/sr3/%s/%s" % (component, name)
    pids = set()
    for path in host.check_output("ls %s/*.pid 2>/dev/null || true", state).split():
        pid = host.file(path).content_string.strip()
        if host.file("/proc/%s" % pid).exists:
            pids.add(pid)
    return pids


def deploy(*extra):
    return subprocess.run(["ansible-playbook", "-i", INVENTORY, "sr3.hpc_mirror.deploy"] + list(extra),
                          capture_output=True, text=True, check=False, env=dict(os.environ))


def test_a_changed_setting_restarts_only_what_it_changes(host):
    copier, winnow, tally = "sarra/%s_copy" % FLOW, "winnow/%s_00" % FLOW, "shovel/%s_tally" % FLOW
    before = {config: running_pids(host, config) for config in (copier, winnow, tally)}
    try:
        result = deploy("-e", "hpc_mirror_copy_instances=3")
        assert result.returncode == 0, result.stdout[-3000:]
        after = {config: running_pids(host, config) for config in (copier, winnow, tally)}
        assert len(after[copier]) == 3
        assert not after[copier] & before[copier], "the copiers were not restarted"
        assert after[winnow] == before[winnow], "a winnow was restarted for a copier setting"
        assert after[tally] == before[tally], "the tally was restarted for a copier setting"
    finally:
        result = deploy()
        assert result.returncode == 0, result.stdout[-3000:]
    assert len(running_pids(host, copier)) == 2
