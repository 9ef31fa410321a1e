"""Per host: sr3 in the ops user's virtualenv, the configs of the host's part
of the flow with the right modes, and exactly the expected processes, their
state kept apart although the nodes of a cluster share $HOME."""

import pytest

from testbed import group_vars

testinfra_hosts = ["hpc1n1", "hpc1n2", "hpc2n1", "hpc2n2"]

FLOW = "mirror_primary_to_secondary"
VARS = group_vars()
WINNOWS = ["winnow/%s_%02d" % (FLOW, i) for i in range(VARS["hpc_mirror_winnows"])]
COPIER = "sarra/%s_copy" % FLOW
TALLY = "shovel/%s_tally" % FLOW
POST = "watch/%s" % FLOW
# inventory host -> {config: instances}: posting where the source tree is,
# winnows and tally on the first secondary node, copiers on every secondary node.
EXPECTED = {
    "hpc1n1": {POST: 1},
    # hpc_mirror_post_hosts: one watch sees the whole test bed (see group_vars)
    "hpc1n2": {},
    "hpc2n1": dict({w: 1 for w in WINNOWS}, **{TALLY: 1, COPIER: VARS["hpc_mirror_copy_instances"]}),
    "hpc2n2": {COPIER: VARS["hpc_mirror_copy_instances"]},
}
ALL_CONFIGS = {POST, COPIER, TALLY, *WINNOWS}


@pytest.fixture
def name(host):
    return host.check_output("hostname")


@pytest.fixture
def home(host):
    return host.user().home


def running_instances(host, home, name, config):
    """Live instances of config started on this host (pid files under ~/.cache/sr3/<hostname>/)."""
    component, cfg = config.split("/")
    state = "%s/.cache/sr3/%s/%s/%s" % (home, name, component, cfg)
    # pid files end without a newline
    pids = host.run("for f in %s/*.pid; do [ -e \"$f\" ] && cat \"$f\" && echo; done", state).stdout.split()
    # Pids of all test hosts share one pid namespace: count only those in this
    # host's network namespace, i.e. really started here.
    own_net = host.check_output("readlink /proc/self/ns/net")
    alive = [p for p in pids if host.run("readlink /proc/%s/ns/net", p).stdout.strip() == own_net]
    return len(alive)


def test_sr3_in_the_users_virtualenv(host, home):
    sr3 = host.file(home + "/.local/share/hpc_mirror/venv/bin/sr3")
    assert sr3.exists and sr3.user == "opsM"
    assert "3.3.1" in host.check_output("%s/.local/share/hpc_mirror/venv/bin/python -m pip show metpx-sr3", home)


def test_credentials_are_private(host, home):
    credentials = host.file(home + "/.config/sr3/credentials.conf")
    assert credentials.mode == 0o600
    assert credentials.user == "opsM"


def test_statehost_is_on(host, home):
    assert "statehost on" in host.file(home + "/.config/sr3/default.conf").content_string


def test_configs_of_this_host_exist(host, home, name):
    for config in EXPECTED[name]:
        f = host.file("%s/.config/sr3/%s.conf" % (home, config))
        assert f.exists, config
        assert f.mode == 0o644


def test_expected_processes_and_no_others(host, home, name):
    counts = {config: running_instances(host, home, name, config) for config in ALL_CONFIGS}
    expected = {config: EXPECTED[name].get(config, 0) for config in ALL_CONFIGS}
    assert counts == expected


def test_state_of_nodes_sharing_home_does_not_collide(host, home, name):
    # Every node of the cluster that runs configs keeps its own state level in
    # the shared home; both hpc2 nodes run the same copy config.
    running_nodes = [n for n in EXPECTED if n[:4] == name[:4] and EXPECTED[n]]
    levels = host.check_output("ls %s/.cache/sr3", home).split()
    for node in running_nodes:
        assert node in levels
    # Nothing was written at the shared, host-less level.
    assert not host.file(home + "/.cache/sr3/watch").exists
    assert not host.file(home + "/.cache/sr3/sarra").exists


def test_source_and_destination_trees_are_apart(host, name):
    # hpc1 sees only the primary tree, hpc2 only the secondary: copies must cross the network.
    primary, secondary = host.file("/fs/primary"), host.file("/fs/secondary")
    if name.startswith("hpc1"):
        assert primary.is_directory and not secondary.exists
    else:
        assert secondary.is_directory and not primary.exists


def test_copiers_trust_only_the_real_host_keys(host, home, name):
    if not name.startswith("hpc2"):
        pytest.skip("only the copiers' side pulls over sftp")
    known = host.file(home + "/.ssh/known_hosts").content_string
    for node in ("hpc1n1", "hpc1n2"):
        real = host.check_output("ssh-keyscan -t ed25519 %s 2>/dev/null", node).split()[1:]
        assert "hpc1any,%s %s" % (node, " ".join(real)) in known
    assert "hpc_mirror_hostkeys.StrictHostKeys" in host.file(
        "%s/.config/sr3/%s.conf" % (home, COPIER)).content_string
