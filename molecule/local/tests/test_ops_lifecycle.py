"""Operate the deployed single-host mirror for real: status, a killed instance,
sr3 sanity and start.yml, stop.yml keeping queued events, remove.yml.

Runs after test_mirror.py (file order) and ends with the flow removed."""

import os
import re
import subprocess
import time

INVENTORY = os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"])
testinfra_hosts = ["broker-local"]

USER = "opsmtest"
VHOST = "hpc_mirror_molecule"
PRIMARY = "/var/tmp/hpc_mirror_molecule/primary"
SECONDARY = "/var/tmp/hpc_mirror_molecule/secondary"
FLOW = "mirror_primary_to_secondary"
COPY = "sarra/%s_copy" % FLOW
HOLD = 3


def playbook(name, *extra):
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")  # molecule forces colours
    result = subprocess.run(["ansible-playbook", "-i", INVENTORY, "sr3.hpc_mirror.%s" % name] + list(extra),
                            capture_output=True, text=True, check=False, env=env)
    return result, result.stdout + result.stderr


def as_user(host, script):
    return host.run("runuser -u %s -- bash -c %s", USER, script)


def sr3(host, *args):
    return as_user(host, "~/.local/share/hpc_mirror/venv/bin/sr3 " + " ".join(args))


def live_pids(host, config):
    """{instance: pid} of a config's running instances, from its pid files and /proc."""
    component, name = config.split("/")
    state = host.user(USER).home + "/.cache/sr3/%s/%s" % (component, name)
    found = {}
    for path in host.check_output("ls %s/*.pid 2>/dev/null || true", state).split():
        pid = host.file(path).content_string.strip()
        if pid and host.file("/proc/%s" % pid).exists:
            found[int(path[-6:-4])] = int(pid)
    return found


def wait_for(predicate, timeout=60, interval=1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def broker_names(host, kind):
    """Queue or exchange names of the test vhost."""
    out = host.check_output("rabbitmqctl -q list_%s -p %s name", kind, VHOST)
    return [line.strip() for line in out.splitlines()[1:] if line.strip()]


def queued(host):
    out = host.check_output("rabbitmqctl -q list_queues -p %s name messages", VHOST)
    return dict((n, int(m)) for n, m in (line.split() for line in out.splitlines()[1:] if line.strip()))


def test_status_is_healthy_after_deploy(host):
    # metrics of freshly restarted instances come within one write interval
    result, output = playbook("status")
    assert result.returncode == 0, output[-4000:]
    assert "The mirror is healthy" in output
    table = [line for line in output.splitlines() if FLOW in line and "hpc-local" in line]
    assert any(COPY in line and " running " in line and " 2/2 " in line for line in table), output[-4000:]
    header = [line for line in output.splitlines() if "direction" in line and "lag mean/max" in line]
    assert header, output[-4000:]


def test_a_killed_copy_instance_fails_status_naming_it(host):
    pids = live_pids(host, COPY)
    assert sorted(pids) == [1, 2]
    host.run("kill -9 %s", str(pids[2]))
    assert wait_for(lambda: sorted(live_pids(host, COPY)) == [1], 10)
    result, output = playbook("status")
    assert result.returncode != 0
    assert "%s on hpc-local: 1 of 2 instances running (missing instance 02)" % COPY in output, output[-4000:]


def test_sr3_sanity_brings_it_back(host):
    # what the optional crontab entry (hpc_mirror_sanity_cron) runs
    run = sr3(host, "sanity")
    assert run.rc == 0, run.stdout + run.stderr
    assert wait_for(lambda: sorted(live_pids(host, COPY)) == [1, 2], 60)
    result, output = playbook("status")
    assert result.returncode == 0, output[-4000:]


def test_start_brings_a_killed_instance_back(host):
    host.run("kill -9 %s", str(live_pids(host, COPY)[1]))
    assert wait_for(lambda: sorted(live_pids(host, COPY)) == [2], 10)
    result, output = playbook("start")
    assert result.returncode == 0, output[-4000:]
    assert sorted(live_pids(host, COPY)) == [1, 2]
    result, output = playbook("start")
    assert result.returncode == 0 and re.search(r"hpc-local\s*:.*changed=0", output), output[-4000:]


def test_stop_keeps_the_events_and_start_copies_them(host):
    result, output = playbook("stop")
    assert result.returncode == 0, output[-4000:]
    for config in (COPY, "winnow/%s_00" % FLOW, "winnow/%s_01" % FLOW, "shovel/%s_tally" % FLOW):
        assert live_pids(host, config) == {}, config
    assert live_pids(host, "watch/%s" % FLOW), "the posting config should keep running"

    names = ["stopped_%02d.txt" % i for i in range(10)]
    assert as_user(host, "mkdir -p %s/while_stopped && cd %s/while_stopped && for n in %s; do echo $n > $n; done"
                   % (PRIMARY, PRIMARY, " ".join(names))).rc == 0
    winnow_queues = ["q_%s.winnow.%s_%02d" % (USER, FLOW, i) for i in (0, 1)]
    # the events wait on the broker: every file and its directory were posted
    assert wait_for(lambda: sum(queued(host).get(q, 0) for q in winnow_queues) >= len(names), 30), queued(host)
    time.sleep(HOLD + 2)
    assert not host.file(SECONDARY + "/while_stopped").exists

    result, output = playbook("status")
    assert result.returncode != 0
    assert "%s on hpc-local: 0 of 2 instances running" % COPY in output, output[-4000:]

    result, output = playbook("start")
    assert result.returncode == 0, output[-4000:]
    assert wait_for(lambda: all(host.file("%s/while_stopped/%s" % (SECONDARY, n)).exists for n in names), 90)
    assert host.file(SECONDARY + "/while_stopped/stopped_07.txt").content_string == "stopped_07.txt\n"


def test_remove_needs_the_confirmation(host):
    result, output = playbook("remove")
    assert result.returncode != 0
    assert "-e remove_confirm=primary_to_secondary" in output
    assert live_pids(host, COPY), "nothing may be removed without the confirmation"


def test_remove_leaves_nothing_behind(host):
    result, output = playbook("remove", "-e", "remove_confirm=primary_to_secondary")
    assert result.returncode == 0, output[-4000:]
    home = host.user(USER).home
    configs = host.check_output("find %s/.config/sr3 -name '*%s*'", home, FLOW)
    assert configs == "", configs
    state = host.check_output("find %s/.cache/sr3 -name '*%s*' -not -name '*.log*'", home, FLOW)
    assert state == "", state
    processes = host.run("pgrep -a -u %s -f %s", USER, FLOW)
    assert processes.rc == 1, processes.stdout
    assert [q for q in broker_names(host, "queues") if FLOW in q] == []
    assert [x for x in broker_names(host, "exchanges") if FLOW in x] == []
    # the copy stays
    assert host.file(SECONDARY + "/while_stopped/stopped_07.txt").exists
    result, output = playbook("remove", "-e", "remove_confirm=primary_to_secondary")
    assert result.returncode == 0 and re.search(r"hpc-local\s*:.*changed=0", output), output[-4000:]
