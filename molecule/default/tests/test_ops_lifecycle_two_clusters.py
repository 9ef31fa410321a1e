"""Operate the two-cluster deployment for real, in this order: status.yml prints
one table with every host and config of the flow; a copier instance killed on
hpc2n2 makes it fail naming host, config and instance; sr3 sanity (what the ops
role's crontab entry runs) brings it back; stop.yml keeps the events of files
written meanwhile on hpc1n1, which arrive on hpc2 after start.yml; remove.yml
leaves no config, process, queue or exchange of the flow.

It removes the flow, so it is the last module of the scenario's verify
(conftest.py puts it there): a second verify needs a converge first.
The single-host equivalent is molecule/local/tests/test_ops_lifecycle.py."""

import json
import os
import subprocess
import time

import pytest

from testbed import KEYS_BEGIN, KEYS_END, authorized_lines, copier_keys, group_vars, node, wait_until_equal

PROJECT = os.environ.get("MOLECULE_PROJECT_DIRECTORY", os.getcwd())
INVENTORY = os.path.dirname(os.environ.get("MOLECULE_INVENTORY_FILE", "/nonexistent/x"))
VARS = group_vars()
VHOST = VARS["hpc_mirror_broker_vhost"]
DIRECTION = "primary_to_secondary"
FLOW = "mirror_" + DIRECTION
POST = "watch/%s" % FLOW
COPY = "sarra/%s_copy" % FLOW
TALLY = "shovel/%s_tally" % FLOW
WINNOWS = ["winnow/%s_%02d" % (FLOW, i) for i in range(VARS["hpc_mirror_winnows"])]
CONFIGS = [POST, COPY, TALLY] + WINNOWS
COPIES = VARS["hpc_mirror_copy_instances"]
HOLD = VARS["hpc_mirror_hold"]
CLUSTER_HOSTS = ["hpc1n1", "hpc1n2", "hpc2n1", "hpc2n2"]
SR3 = "~/.local/share/hpc_mirror/venv/bin/sr3"
# Where the deployment runs what (molecule/default/inventory): one watch on
# hpc1n1, winnows and tally on hpc2n1, copiers on both hpc2 nodes. The nodes
# of a cluster share $HOME, so hpc1n2 and hpc2n2 see config files they do not run.
EXPECTED = {("hpc1n1", POST): 1, ("hpc2n1", TALLY): 1, ("hpc2n1", COPY): COPIES, ("hpc2n2", COPY): COPIES,
            **{("hpc2n1", w): 1 for w in WINNOWS}}
DURATIONS = []
WRITTEN = {}

# {config: {instance: pid}} of the configs' instances running on this host: pid
# files of its statehost directory, pids of its own pid namespace, processes
# that really run the config.
LIVE = r'''
import glob, json, os, socket, sys
found = {}
for name in sys.argv[1:]:
    component, config = name.split("/")
    found[name] = {}
    pattern = "~/.cache/sr3/%s/%s/%s/*.pid" % (socket.gethostname(), component, config)
    for path in glob.glob(os.path.expanduser(pattern)):
        try:
            pid = open(path).read().strip()
            argv = open("/proc/%s/cmdline" % pid, "rb").read().decode().split("\0")
        except (OSError, ValueError):
            continue
        # .../instance.py --no 1 start sarra/x, as sr3_config counts them
        if name in argv[1:] or any(a.endswith("/%s.conf" % name) for a in argv[1:]):
            found[name][int(path[-6:-4])] = int(pid)
print(json.dumps(found))
'''


def playbook(name, *extra):
    """Run playbooks/<name>.yml on the test bed; (rc, output)."""
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               # one table line per output line (the debug message as a YAML block)
               ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default", ANSIBLE_CALLBACK_RESULT_FORMAT="yaml")
    started = time.time()
    result = subprocess.run(["ansible-playbook", "-i", INVENTORY, os.path.join(PROJECT, "playbooks", name + ".yml")]
                            + list(extra), cwd=PROJECT, capture_output=True, text=True, check=False, env=env)
    DURATIONS.append((name, round(time.time() - started, 1)))
    return result.returncode, result.stdout + result.stderr


def folded(output):
    """The output with whitespace folded: the callback wraps long messages."""
    return " ".join(output.split())


def table(output):
    """{(host, config): (state, 'running/expected')} of the table status.yml printed."""
    rows = {}
    for line in output.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[0] == DIRECTION and fields[1] in CLUSTER_HOSTS:
            rows[(fields[1], fields[2])] = (fields[3], fields[4])
    return rows


def live(host, *configs):
    return {c: {int(i): p for i, p in pids.items()}
            for c, pids in json.loads(host.check_output("python3 -c %s" + " %s" * len(configs), LIVE,
                                                        *configs)).items()}


def instances(hosts):
    """{(host, config): instances running} of every config of the flow on every cluster host, 0s left out."""
    counts = {}
    for name in CLUSTER_HOSTS:
        for config, pids in live(hosts[name], *CONFIGS).items():
            if pids:
                counts[(name, config)] = len(pids)
    return counts


def wait_for(predicate, timeout, interval=1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def broker_names(broker, kind):
    """Names of the flow's queues or exchanges on the broker (rabbitmqctl in its namespace)."""
    out = broker.check_output("rabbitmqctl -q list_%s -p %s name", kind, VHOST)
    return sorted(line.strip() for line in out.splitlines() if FLOW in line)


def queued(broker):
    out = broker.check_output("rabbitmqctl -q list_queues -p %s name messages", VHOST)
    return {f[0]: int(f[1]) for f in (line.split() for line in out.splitlines()) if len(f) == 2 and f[1].isdigit()}


@pytest.fixture(scope="module")
def hosts():
    found = {name: node(name) for name in CLUSTER_HOSTS}
    found["broker"] = node("broker", user="root")
    yield found
    print("playbook durations (s):", DURATIONS)


def test_status_prints_every_host_and_config_of_the_deployment(hosts):
    assert instances(hosts) == EXPECTED
    rc, output = playbook("status")
    assert rc == 0, output[-4000:]
    assert "The mirror is healthy: %d configs checked" % len(EXPECTED) in folded(output), output[-4000:]
    assert any(line.split()[:4] == ["direction", "host", "config", "state"] and "lag mean/max" in line
               for line in output.splitlines()), output[-4000:]
    assert table(output) == {k: ("running", "%d/%d" % (n, n)) for k, n in EXPECTED.items()}, output[-4000:]


def test_a_killed_copy_instance_fails_status_naming_it(hosts):
    hpc2n2 = hosts["hpc2n2"]
    pids = live(hpc2n2, COPY)[COPY]
    assert sorted(pids) == list(range(1, COPIES + 1))
    hpc2n2.check_output("kill -9 %s", str(pids[COPIES]))
    assert wait_for(lambda: sorted(live(hpc2n2, COPY)[COPY]) == list(range(1, COPIES)), 10)
    rc, output = playbook("status")
    assert rc != 0, output[-4000:]
    problem = "%s on hpc2n2: %d of %d instances running (missing instance %02d)" % (COPY, COPIES - 1, COPIES, COPIES)
    assert problem in folded(output), output[-4000:]
    rows = table(output)
    assert rows[("hpc2n2", COPY)] == ("partial", "%d/%d" % (COPIES - 1, COPIES)), output[-4000:]
    assert rows[("hpc2n1", COPY)] == ("running", "%d/%d" % (COPIES, COPIES)), output[-4000:]


def test_sr3_sanity_brings_it_back(hosts):
    # what the ops role's crontab entry runs (hpc_mirror_sanity_cron)
    run = hosts["hpc2n2"].run(SR3 + " sanity")
    assert run.rc == 0, run.stdout + run.stderr
    assert wait_for(lambda: instances(hosts) == EXPECTED, 60), instances(hosts)
    deadline = time.time() + 60
    while True:
        rc, output = playbook("status")
        if rc == 0 or time.time() > deadline:
            break
        time.sleep(2)
    assert rc == 0, output[-4000:]
    assert table(output)[("hpc2n2", COPY)] == ("running", "%d/%d" % (COPIES, COPIES)), output[-4000:]


def test_stop_keeps_the_events_and_start_copies_them(hosts):
    rc, output = playbook("stop")
    assert rc == 0, output[-4000:]
    # everything but the posting stopped
    assert instances(hosts) == {("hpc1n1", POST): 1}

    hpc1n1, hpc2n1, broker = hosts["hpc1n1"], hosts["hpc2n1"], hosts["broker"]
    run = WRITTEN["run"] = "stopped-%d" % time.time()
    names = ["stopped_%02d.txt" % i for i in range(10)]
    hpc1n1.check_output("mkdir /fs/primary/{0} && cd /fs/primary/{0} && for n in {1}; do echo $n > $n; done"
                        .format(run, " ".join(names)))
    winnow_queues = ["q_%s.%s" % (VARS["hpc_mirror_broker_user"], w.replace("/", ".")) for w in WINNOWS]
    # the events wait on the broker: every file and its directory were posted
    assert wait_for(lambda: sum(queued(broker).get(q, 0) for q in winnow_queues) >= len(names), 30), queued(broker)
    time.sleep(HOLD + 2)  # a hold and more: nothing consumes them
    assert not hpc2n1.file("/fs/secondary/" + run).exists
    assert sum(queued(broker).get(q, 0) for q in winnow_queues) >= len(names), queued(broker)

    rc, output = playbook("start")
    assert rc == 0, output[-4000:]
    # each host runs its part again, and only that (shared $HOME: hpc1n2 and hpc2n2 see more configs)
    assert instances(hosts) == EXPECTED
    source, destination = wait_until_equal(hpc1n1, "/fs/primary/" + run, hpc2n1, "/fs/secondary/" + run, timeout=90)
    assert sorted(source) == names
    assert destination == source


def test_remove_leaves_nothing_of_the_flow(hosts):
    lines = authorized_lines(hosts["hpc1n1"])
    outside_the_copier_keys = lines[:lines.index(KEYS_BEGIN)] + lines[lines.index(KEYS_END) + 1:]
    keys = copier_keys(hosts["hpc2n1"])
    rc, output = playbook("remove", "-e", "remove_confirm=" + DIRECTION)
    assert rc == 0, output[-4000:]
    # exactly the copiers' keys are gone from the source node's authorized_keys
    after = authorized_lines(hosts["hpc1n1"])
    assert after == outside_the_copier_keys, (outside_the_copier_keys, after)
    assert not [line for line in after if any(key in line for key in keys)]
    for name in CLUSTER_HOSTS:
        host = hosts[name]
        configs = host.check_output("find ~/.config/sr3 -name '*%s*'", FLOW)
        assert configs == "", (name, configs)
        # state, pid and metrics files (logs stay)
        state = host.check_output("find ~/.cache/sr3 -name '*%s*' -not -name '*.log*'", FLOW)
        assert state == "", (name, state)
        # the bracket keeps pgrep from matching the shell that runs it
        processes = host.run("pgrep -a -u opsM -f %s", FLOW[:-1] + "[" + FLOW[-1] + "]")
        assert processes.rc == 1, (name, processes.stdout)
    assert broker_names(hosts["broker"], "queues") == []
    assert broker_names(hosts["broker"], "exchanges") == []
    # the copy stays
    assert hosts["hpc2n1"].file("/fs/secondary/%s/stopped_07.txt" % WRITTEN["run"]).content_string == "stopped_07.txt\n"
