# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Render the real role templates through Ansible and check the sr3 settings that matter.

One playbook (one ansible-playbook run per test session) renders every variant:
the mirror role's templates for a watch flow and a shim flow, and the sr3 role's
default.conf and credentials.conf for the matching brokers.  Role defaults are
read from the roles' defaults/main.yml and the names are computed with the same
set_fact as roles/mirror/tasks/main.yml.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from ansible_collections.sr3.hpc_mirror.plugins.filter.mirror_names import mirror_names

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
MIRROR = os.path.join(ROOT, "roles", "mirror")
SR3 = os.path.join(ROOT, "roles", "sr3")

WATCH = dict(
    mirror_source_dir="/data/src.v1",
    mirror_destination_dir="/data/dst",
    mirror_winnows=3,
    mirror_copy_instances=4,
    mirror_retry_ttl="2d",
)
SHIM = dict(
    mirror_event_source="shim",
    mirror_flow="home",
    mirror_direction="secondary_to_primary",
    mirror_source_dir="/fs/site2/home+ops",
    mirror_destination_dir="/fs/site1/home+ops",
    mirror_winnows=1,
    mirror_hold=0,
    mirror_reject=[r".*\.swp$", "^.*/scratch/.*"],
    mirror_broker_user="ops2",
    mirror_broker_host="broker.example",
    mirror_broker_port=5671,
    mirror_broker_scheme="amqps",
    mirror_broker_vhost="hpc",
)
# sr3c's sr3_cpost as a daemon (the checksum is what the role's stat task gives the template).
CPOST = dict(WATCH, mirror_event_source="cpost", mirror_cpost_sleep=2,
             mirror_cpost_command="/home/opsm/.local/share/hpc_mirror/sr3c/bin/sr3_cpost",
             mirror_cpost_checksum="0b1c2d3e4f")
# The reference example's settings (benchmarks/pipeline compares them with ours).
REFERENCE = dict(WATCH, mirror_profile="reference", mirror_winnows=5, mirror_copy_instances=10)
# The consumers with basic_consume and a prefetch (sr3 amqp_consumer), with our settings and
# with the reference's (which must stay the reference's). Strings, as from -e on the command line.
CONSUMER = dict(WATCH, mirror_amqp_consumer="true", mirror_copy_batch=15)
REFERENCE_CONSUMER = dict(REFERENCE, mirror_amqp_consumer="true")
NO_CONSUMER = dict(WATCH, mirror_amqp_consumer="false")
# sr3 role variants for the same brokers as the mirror variants.
SR3_WATCH = dict(
    sr3_broker_password="p:/@%w",
    sr3_statehost=True,
    sr3_log_level="debug",
    sr3_default_extra=["declare env HPC_SITE=site1", "housekeeping 60"],
)
SR3_SHIM = dict(
    sr3_broker_user="ops2",
    sr3_broker_host="broker.example",
    sr3_broker_port=5671,
    sr3_broker_scheme="amqps",
    sr3_broker_vhost="hpc",
    sr3_broker_password="s3cr@t",
)
PASSWORDS = {"watch": "p:/@%w", "shim": "s3cr@t"}

# The set_fact of roles/mirror/tasks/main.yml.
NAMES_FACT = {
    "mirror_names": (
        "{{ mirror_broker_user | sr3.hpc_mirror.mirror_names(mirror_flow, mirror_direction,"
        " mirror_winnows, mirror_event_source) }}"),
    "mirror_broker_url": (
        "{{ mirror_broker_user | sr3.hpc_mirror.broker_url(mirror_broker_host, mirror_broker_port,"
        " mirror_broker_vhost, mirror_broker_scheme) }}"),
}


def _defaults(role):
    with open(os.path.join(role, "defaults", "main.yml")) as handle:
        return yaml.safe_load(handle)


def _render(role, name, dest, mode="0644", **task):
    """A template task rendering the role's real template <name>.j2 to dest."""
    task.update({"name": name, "ansible.builtin.template": {
        "src": os.path.join(role, "templates", name + ".j2"), "dest": dest, "mode": mode}})
    return task


def _play(role, out, overrides, tasks):
    """A play rendering into out with the role's defaults, overridden."""
    variables = _defaults(role)
    variables.update(overrides)
    variables["out"] = out
    return {"name": "Render %s templates into %s" % (os.path.basename(role), out),
            "hosts": "localhost", "gather_facts": False, "vars": variables, "tasks": tasks}


def _mirror_play(out, overrides):
    return _play(MIRROR, out, overrides, [
        {"name": "Compute the names", "ansible.builtin.set_fact": dict(NAMES_FACT)},
        {"name": "Config directories", "ansible.builtin.file": {
            "path": "{{ out }}/{{ item }}", "state": "directory", "mode": "0755"},
         "loop": ["watch", "cpost", "winnow", "sarra", "shovel"]},
        {"name": "Save the names", "ansible.builtin.copy": {
            "content": "{{ {'names': mirror_names, 'url': mirror_broker_url} | to_json }}",
            "dest": "{{ out }}/facts.json", "mode": "0644"}},
        _render(MIRROR, "post.conf", "{{ out }}/{{ mirror_names.post }}.conf"),
        _render(MIRROR, "winnow.conf", "{{ out }}/{{ item }}.conf",
                loop="{{ mirror_names.winnows }}", loop_control={"index_var": "mirror_winnow_index"}),
        _render(MIRROR, "copy.conf", "{{ out }}/{{ mirror_names.copier }}.conf"),
        _render(MIRROR, "tally.conf", "{{ out }}/{{ mirror_names.tally }}.conf"),
    ])


def _sr3_play(out, overrides):
    return _play(SR3, out, overrides, [
        {"name": "Directory", "ansible.builtin.file": {"path": "{{ out }}", "state": "directory", "mode": "0755"}},
        _render(SR3, "default.conf", "{{ out }}/default.conf", mode="0600"),
        _render(SR3, "credentials.conf", "{{ out }}/credentials.conf", mode="0600"),
    ])


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """Run one playbook rendering every variant; return the output directory."""
    base = tmp_path_factory.mktemp("templates")
    out = base / "out"
    plays = [
        _mirror_play(str(out / "watch"), WATCH),
        _mirror_play(str(out / "shim"), SHIM),
        _mirror_play(str(out / "cpost"), CPOST),
        _mirror_play(str(out / "reference"), REFERENCE),
        _mirror_play(str(out / "consumer"), CONSUMER),
        _mirror_play(str(out / "reference_consumer"), REFERENCE_CONSUMER),
        _mirror_play(str(out / "no_consumer"), NO_CONSUMER),
        _sr3_play(str(out / "sr3_watch"), SR3_WATCH),
        _sr3_play(str(out / "sr3_shim"), SR3_SHIM),
    ]
    playbook = base / "render.yml"
    playbook.write_text(json.dumps(plays, indent=1))

    command = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    if not os.path.exists(command):
        command = shutil.which("ansible-playbook")
    if not command:
        pytest.skip("ansible-playbook not found")
    env = dict(os.environ, ANSIBLE_LOCAL_TEMP=str(base / "tmp"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_RETRY_FILES_ENABLED="0")
    result = subprocess.run(
        [command, "-i", "localhost,", "-c", "local",
         "-e", "ansible_python_interpreter=%s" % sys.executable, str(playbook)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        universal_newlines=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout
    return out


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def read_lines(path):
    """Setting lines of an sr3 config: no comments, no blank lines."""
    with open(str(path)) as handle:
        return [line.rstrip("\n") for line in handle
                if line.strip() and not line.lstrip().startswith("#")]


def settings(path):
    """(keyword, value) pairs of an sr3 config, in order."""
    pairs = []
    for line in read_lines(path):
        keyword, _space, value = line.partition(" ")
        pairs.append((keyword, value.strip()))
    return pairs


def values(pairs, keyword):
    return [value for key, value in pairs if key == keyword]


def one(pairs, keyword):
    found = values(pairs, keyword)
    assert len(found) == 1, "%s: %r" % (keyword, found)
    return found[0]


VARIANTS = {"watch": WATCH, "shim": SHIM, "cpost": CPOST, "reference": REFERENCE,
            "consumer": CONSUMER, "reference_consumer": REFERENCE_CONSUMER, "no_consumer": NO_CONSUMER}


def names_for(variant):
    variables = _defaults(MIRROR)
    variables.update(VARIANTS[variant])
    return mirror_names(variables["mirror_broker_user"], variables["mirror_flow"], variables["mirror_direction"],
                        variables["mirror_winnows"], variables["mirror_event_source"])


def variables_for(variant):
    variables = _defaults(MIRROR)
    variables.update(VARIANTS[variant])
    return variables


URLS = {
    "watch": "amqp://opsm@localhost:5672/",
    "reference": "amqp://opsm@localhost:5672/",
    "cpost": "amqp://opsm@localhost:5672/",
    "shim": "amqps://ops2@broker.example:5671/hpc",
}


def config_path(rendered, variant, config):
    return rendered / variant / (config + ".conf")


# --------------------------------------------------------------------------
# the set_fact of the role
# --------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["watch", "shim", "cpost"])
def test_facts_match_filters(rendered, variant):
    with open(str(rendered / variant / "facts.json")) as handle:
        facts = json.load(handle)
    assert facts["names"] == names_for(variant)
    assert facts["url"] == URLS[variant]


@pytest.mark.parametrize("variant", ["watch", "shim", "cpost"])
def test_every_config_rendered(rendered, variant):
    names = names_for(variant)
    expected = set([names["post"], names["copier"], names["tally"]] + names["winnows"])
    found = set()
    for component in ("watch", "cpost", "winnow", "sarra", "shovel"):
        for name in os.listdir(str(rendered / variant / component)):
            found.add("%s/%s" % (component, name[:-len(".conf")]))
    assert found == expected


# --------------------------------------------------------------------------
# post.conf
# --------------------------------------------------------------------------

def test_post_conf_watch(rendered):
    names = names_for("watch")
    pairs = settings(config_path(rendered, "watch", names["post"]))
    assert one(pairs, "post_broker") == URLS["watch"]
    assert one(pairs, "post_exchange") == names["exchanges"]["post"]
    assert one(pairs, "post_exchangeSplit") == "3"
    assert one(pairs, "post_baseUrl") == "file:/"
    assert one(pairs, "path") == "/data/src.v1"
    for keyword in ("realpathPost", "realpathFilter", "realpathAdjust"):
        assert values(pairs, keyword) == []
    assert one(pairs, "integrity") == "none"
    assert one(pairs, "nodupe_ttl") == "off"
    assert one(pairs, "fileEvents") == "create,modify,link,mkdir,delete,rmdir"
    # sr3 watch would post what inotify saw every 5 s: Pace looks every 0.1 s
    assert one(pairs, "sleep") == "0.01"
    assert values(pairs, "flowcb_prepend") == ["hpc_mirror_dollar.Dollar"]
    # Split: any name gets an exchange and a routing key (sr3 3.3.1 drops some)
    assert values(pairs, "flowcb") == ["hpc_mirror_pace.Pace", "hpc_mirror_split.Split"]
    assert one(pairs, "paceInterval") == "0.1"
    assert one(pairs, "logEvents") == "on_housekeeping"


def test_post_conf_cpost_daemon(rendered):
    names = names_for("cpost")
    path = config_path(rendered, "cpost", names["post"])
    pairs = settings(path)
    assert names["post"].startswith("cpost/") and names["post"] in names["configs"]
    assert one(pairs, "post_broker") == URLS["cpost"]
    assert one(pairs, "post_exchangeSplit") == "3"
    # sr3 runs it as a daemon: a path and sleep > 0.1 (whole seconds for sr3c)
    assert one(pairs, "path") == "/data/src.v1"
    assert one(pairs, "sleep") == "2"
    # paths come from its own walk of the tree: no realpath, no sr3 plugins
    for keyword in ("realpathPost", "realpathFilter", "realpathAdjust", "flowcb", "logEvents"):
        assert values(pairs, keyword) == []
    # directory events on: without mkdir sr3_cpost posts no directory move (the copiers
    # reject the top directory it posts at every start)
    assert one(pairs, "fileEvents") == "create,modify,link,mkdir,delete,rmdir"
    # the binary's checksum is in the file: a rebuilt sr3c changes it, so the daemon restarts
    with open(str(path)) as handle:
        assert "# Runs %s (sha1 0b1c2d3e4f)" % CPOST["mirror_cpost_command"] in handle.read()


def test_post_conf_shim(rendered):
    names = names_for("shim")
    assert names["post"].startswith("cpost/")
    pairs = settings(config_path(rendered, "shim", names["post"]))
    assert one(pairs, "post_broker") == URLS["shim"]
    # a single winnow: no split, post straight to its exchange
    assert values(pairs, "post_exchangeSplit") == []
    assert one(pairs, "post_exchange") == names["exchanges"]["winnow"][0]
    assert values(pairs, "path") == []
    assert one(pairs, "realpathPost") == "on"
    assert one(pairs, "realpathFilter") == "on"
    assert one(pairs, "realpathAdjust") == "-1"
    # sr3c posts at close(): nothing to pace
    assert values(pairs, "sleep") == [] and values(pairs, "flowcb") == []


@pytest.mark.parametrize("variant", ["watch", "shim", "cpost"])
def test_post_conf_masks(rendered, variant):
    variables = variables_for(variant)
    names = names_for(variant)
    pairs = settings(config_path(rendered, variant, names["post"]))
    masks = [(key, value) for key, value in pairs if key in ("accept", "reject")]
    if variant == "cpost":
        # sr3_cpost filters the top directory of its walk too: accepted, or it would watch nothing
        top = re.compile(masks.pop(-3)[1])
        source = variables["mirror_source_dir"]
        assert top.search(source) and top.search("file:" + source)
        assert not top.search(source + "/a") and not top.search("/other" + source)
    # every reject of the role and the copiers' own names, then the source tree, then nothing else
    own = [("reject", r".*/\.hpc_mirror~[0-9a-f]+$"),
           ("reject", ".*" + re.escape(variables["mirror_source_dir"]) + r"/\.hpc_mirror/.*")]
    assert masks[:-2] == [("reject", pattern) for pattern in variables["mirror_reject"]] + own
    for url in ("file:" + variables["mirror_source_dir"] + "/.hpc_mirror/conflicts/4/f",
                "sftp://ops@h/" + variables["mirror_source_dir"] + "/d/.hpc_mirror~0123456789ab"):
        assert any(re.match(pattern, url) for _reject, pattern in own), url
    assert masks[-2][0] == "accept"
    assert masks[-1] == ("reject", ".*")
    assert pairs[-1] == ("reject", ".*")
    accept = re.compile(masks[-2][1])
    source = variables["mirror_source_dir"]
    # anchored on the source directory, both as sr3 (URL) and sr3c (path) see it
    assert accept.match("file:%s/a/b.dat" % source)
    assert accept.match("%s/a/b.dat" % source)
    assert accept.match("file:%s/x" % source)
    # the '.' or '+' of the directory name is literal
    assert not accept.match("file:%s/x" % source.replace(".", "X").replace("+", "X"))
    if "+" in source:
        assert not accept.match("file:%s/x" % source.replace("+", "++"))
    # not a sibling with a common prefix, not the tree nested elsewhere
    assert not accept.match("file:%sx/a" % source)
    assert not accept.match("file:/other%s/a" % source)
    # sr3c (the shim) searches the path unanchored: the pattern must anchor itself.
    assert not accept.search("/other%s/a" % source)
    assert not accept.search("file:/other%s/a" % source)
    assert not accept.match("file:%s" % os.path.dirname(source))


def test_post_conf_escapes_source_dir(rendered):
    pairs = settings(config_path(rendered, "watch", names_for("watch")["post"]))
    assert one(pairs, "accept") == r"^(file:)?/data/src\.v1/.*"
    pairs = settings(config_path(rendered, "shim", names_for("shim")["post"]))
    assert one(pairs, "accept") == r"^(file:)?/fs/site2/home\+ops/.*"


@pytest.mark.parametrize("variant", ["watch", "shim"])
def test_post_conf_publishes_to_the_winnow_exchanges(rendered, variant, tmp_path, monkeypatch):
    """sr3 itself, reading the rendered post.conf and credentials.conf, posts to the winnows' exchanges."""
    import sarracenia.config as sarracenia_config
    from sarracenia.config.credentials import CredentialDB
    from sarracenia.config.publisher import Publisher

    monkeypatch.setenv("HOME", str(tmp_path))
    credentials = CredentialDB()
    credentials.read(str(rendered / ("sr3_" + variant) / "credentials.conf"))
    monkeypatch.setattr(sarracenia_config.Config, "credentials", credentials)

    names = names_for(variant)
    component = names["post"].split("/")[0]
    options = sarracenia_config.default_config()
    options.parse_file(str(config_path(rendered, variant, names["post"])), component)
    publisher = Publisher(options)
    assert publisher["exchange"] == names["exchanges"]["winnow"]
    assert publisher["broker"].url.password == PASSWORDS[variant]


# --------------------------------------------------------------------------
# winnow.conf
# --------------------------------------------------------------------------

def test_winnow_conf_with_hold(rendered):
    names = names_for("watch")
    assert len(names["winnows"]) == 3
    for index, config in enumerate(names["winnows"]):
        pairs = settings(config_path(rendered, "watch", config))
        assert one(pairs, "broker") == URLS["watch"]
        assert one(pairs, "exchange") == names["exchanges"]["winnow"][index]
        assert one(pairs, "queueName") == names["queues"][config]
        assert one(pairs, "instances") == "1"
        assert one(pairs, "expire") == "7d"
        # MDelayLatest's semantics in linear time; idle queue polled every 0.1 s
        assert values(pairs, "flowcb_prepend") == ["hpc_mirror_pace.Hold", "hpc_mirror_dollar.Dollar"]
        assert one(pairs, "mdelay") == "30"
        assert one(pairs, "sleep") == "0.01"
        assert values(pairs, "flowcb") == ["hpc_mirror_pace.Pace", "hpc_mirror_split.Split"]
        assert one(pairs, "paceInterval") == "0.1"
        assert one(pairs, "logEvents") == "on_housekeeping"
        assert one(pairs, "runStateThreshold_lag") == "90s"
        assert one(pairs, "nodupe_ttl") == "60"
        assert one(pairs, "post_broker") == URLS["watch"]
        assert one(pairs, "post_exchange") == names["exchanges"]["copier"]
    # every winnow reads its own exchange through its own queue
    exchanges = [one(settings(config_path(rendered, "watch", c)), "exchange") for c in names["winnows"]]
    queues = [one(settings(config_path(rendered, "watch", c)), "queueName") for c in names["winnows"]]
    assert len(set(exchanges)) == len(set(queues)) == 3


def test_winnow_conf_without_hold(rendered):
    names = names_for("shim")
    (config,) = names["winnows"]
    pairs = settings(config_path(rendered, "shim", config))
    assert one(pairs, "broker") == URLS["shim"]
    assert one(pairs, "exchange") == names["exchanges"]["winnow"][0]
    assert one(pairs, "queueName") == names["queues"][config]
    assert one(pairs, "instances") == "1"
    assert values(pairs, "flowcb_prepend") == ["hpc_mirror_dollar.Dollar"]
    assert values(pairs, "mdelay") == []
    assert values(pairs, "runStateThreshold_lag") == []
    assert not any("MDelayLatest" in line for line in read_lines(config_path(rendered, "shim", config)))
    assert one(pairs, "post_exchange") == names["exchanges"]["copier"]


# --------------------------------------------------------------------------
# copy.conf
# --------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["watch", "shim"])
def test_copy_conf(rendered, variant):
    variables = variables_for(variant)
    names = names_for(variant)
    pairs = settings(config_path(rendered, variant, names["copier"]))
    assert one(pairs, "broker") == URLS[variant]
    assert one(pairs, "exchange") == names["exchanges"]["copier"]
    assert one(pairs, "queueName") == names["queues"][names["copier"]]
    assert one(pairs, "baseDir") == variables["mirror_source_dir"]
    assert one(pairs, "directory") == variables["mirror_destination_dir"]
    assert one(pairs, "mirror") == "on"
    assert one(pairs, "instances") == str(variables["mirror_copy_instances"])
    assert one(pairs, "retry_ttl") == variables["mirror_retry_ttl"]
    assert one(pairs, "retry_refilter") == "on"
    assert values(pairs, "flowcb_prepend") == ["hpc_mirror_copier.Copier", "hpc_mirror_dollar.Dollar"]
    # the copier writes every file itself: sr3's accelerator (a split command line) is never used
    assert values(pairs, "accelThreshold") == [] and values(pairs, "accelCpCommand") == []
    assert one(pairs, "hpcMirrorSourceUrl") == variables.get("mirror_source_url", "file:/")
    assert one(pairs, "hpcMirrorKeepSetid") == "off"
    assert one(pairs, "hpcMirrorFsync") == "off"
    assert one(pairs, "integrity") == "none"
    assert values(pairs, "hpcMirrorSr3cNames") == (["on"] if variant == "shim" else [])
    assert one(pairs, "batch") == "20"
    assert one(pairs, "housekeeping") == "10"
    assert one(pairs, "sleep") == "0.01"
    assert sorted(values(pairs, "flowcb")) == ["hpc_mirror_pace.Pace", "hpc_mirror_split.Split", "work.age"]
    assert one(pairs, "paceInterval") == "0.1"
    assert one(pairs, "logEvents") == "after_work,reject,on_housekeeping"
    assert one(pairs, "post_broker") == URLS[variant]
    assert one(pairs, "post_exchange") == names["exchanges"]["output"]
    masks = [(key, value) for key, value in pairs if key in ("accept", "reject")]
    assert masks == [("reject", pattern) for pattern in variables["mirror_reject"]] + [
        ("reject", r".*/\.hpc_mirror~[0-9a-f]+$"),
        ("reject", ".*" + re.escape(variables["mirror_source_dir"]) + r"/\.hpc_mirror/.*"), ("accept", ".*")]
    assert values(pairs, "hpcMirrorConflictDir") == []
    if variables["mirror_hold"]:
        assert one(pairs, "runStateThreshold_lag") == "%ds" % (int(variables["mirror_hold"]) + 60)
    else:
        assert values(pairs, "runStateThreshold_lag") == []


def test_copy_conf_values(rendered):
    pairs = settings(config_path(rendered, "watch", names_for("watch")["copier"]))
    assert one(pairs, "instances") == "4"
    assert one(pairs, "retry_ttl") == "2d"
    assert one(pairs, "baseDir") == "/data/src.v1"
    assert one(pairs, "directory") == "/data/dst"


# --------------------------------------------------------------------------
# tally.conf
# --------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["watch", "shim"])
def test_tally_conf(rendered, variant):
    names = names_for(variant)
    pairs = settings(config_path(rendered, variant, names["tally"]))
    assert one(pairs, "broker") == URLS[variant]
    assert one(pairs, "exchange") == names["exchanges"]["output"]
    assert one(pairs, "queueName") == names["queues"][names["tally"]]
    assert one(pairs, "instances") == "1"
    assert one(pairs, "flowcb") == "hpc_mirror_tally.Tally"
    assert one(pairs, "logEvents") == "on_housekeeping"
    # lag does not matter to a count: sr3's own idle back-off keeps it cheap
    assert values(pairs, "sleep") == []
    # the tally only counts: it publishes nowhere
    assert values(pairs, "post_exchange") == [] and values(pairs, "post_broker") == []


# --------------------------------------------------------------------------
# profile reference: the reference example's settings, nothing of ours
# --------------------------------------------------------------------------

def test_reference_profile(rendered):
    names = names_for("reference")
    assert len(names["winnows"]) == 5
    ours = ("sleep", "paceInterval", "logEvents", "batch", "accelCpCommand", "housekeeping", "amqp_consumer",
            "prefetch")
    for config in names["winnows"]:
        pairs = settings(config_path(rendered, "reference", config))
        assert values(pairs, "flowcb_prepend") == ["sarracenia.flowcb.mdelaylatest.MDelayLatest",
                                                   "hpc_mirror_dollar.Dollar"]
        assert one(pairs, "mdelay") == "30"
        assert one(pairs, "nodupe_ttl") == "60"
        # a correction, not a tuning: the reference re-posts every name too
        assert values(pairs, "flowcb") == ["hpc_mirror_split.Split"]
        assert all(values(pairs, keyword) == [] for keyword in ours)
    pairs = settings(config_path(rendered, "reference", names["copier"]))
    assert one(pairs, "instances") == "10"
    assert values(pairs, "flowcb") == ["work.age", "hpc_mirror_split.Split"]
    assert all(values(pairs, keyword) == [] for keyword in ours)
    pairs = settings(config_path(rendered, "reference", names["tally"]))
    assert all(values(pairs, keyword) == [] for keyword in ours)
    # the reference posts with the shim at close(): its watch is paced as ours is
    pairs = settings(config_path(rendered, "reference", names["post"]))
    assert values(pairs, "flowcb") == ["hpc_mirror_pace.Pace", "hpc_mirror_split.Split"]


# --------------------------------------------------------------------------
# mirror_amqp_consumer: basic_consume with a prefetch in every consuming config
# --------------------------------------------------------------------------

def consuming_configs(variant):
    names = names_for(variant)
    return names["winnows"] + [names["copier"], names["tally"]]


def test_amqp_consumer_on(rendered):
    names = names_for("consumer")
    for config in consuming_configs("consumer"):
        pairs = settings(config_path(rendered, "consumer", config))
        assert one(pairs, "amqp_consumer") == "on", config
    # winnows: no limit (held messages stay unacknowledged for the hold); copiers: two batches
    for config in names["winnows"]:
        assert one(settings(config_path(rendered, "consumer", config)), "prefetch") == "0"
    assert one(settings(config_path(rendered, "consumer", names["copier"])), "prefetch") == "30"
    assert one(settings(config_path(rendered, "consumer", names["tally"])), "prefetch") == "200"
    # the posting config publishes only
    assert values(settings(config_path(rendered, "consumer", names["post"])), "amqp_consumer") == []


def test_amqp_consumer_parsed_by_sr3(rendered, tmp_path, monkeypatch):
    config = pytest.importorskip("sarracenia.config")
    names = names_for("consumer")
    monkeypatch.setenv("HOME", str(tmp_path))
    for component, name in [("winnow", names["winnows"][0]), ("sarra", names["copier"]),
                            ("shovel", names["tally"])]:
        options = config.default_config()
        options.component = component
        options.parse_file(str(config_path(rendered, "consumer", name)), component)
        assert options.amqp_consumer is True, name
        assert options.prefetch == {"winnow": 0, "sarra": 30, "shovel": 200}[component], name


@pytest.mark.parametrize("variant", ["no_consumer", "reference_consumer"])
def test_amqp_consumer_off(rendered, variant):
    # off when false (also as the string from -e), and never in the reference profile
    for config in consuming_configs(variant):
        pairs = settings(config_path(rendered, variant, config))
        assert values(pairs, "amqp_consumer") == [] and values(pairs, "prefetch") == [], config


def test_amqp_consumer_default(rendered):
    # the watch variant renders the role's default
    expected = ["on"] if variables_for("watch")["mirror_amqp_consumer"] else []
    for config in consuming_configs("watch"):
        assert values(settings(config_path(rendered, "watch", config)), "amqp_consumer") == expected, config


# --------------------------------------------------------------------------
# sr3 role: default.conf and credentials.conf
# --------------------------------------------------------------------------

def test_default_conf_statehost_on(rendered):
    lines = read_lines(rendered / "sr3_watch" / "default.conf")
    assert lines[0] == "statehost on"
    assert "logLevel debug" in lines
    assert "logRotateCount 5" in lines
    assert "logRotateInterval 1d" in lines
    assert lines[-2:] == ["declare env HPC_SITE=site1", "housekeeping 60"]


def test_default_conf_statehost_off(rendered):
    lines = read_lines(rendered / "sr3_shim" / "default.conf")
    assert lines[0] == "statehost off"
    assert "logLevel info" in lines
    assert lines[-1] == "logRotateInterval 1d"


def test_credentials_conf_default_vhost(rendered):
    lines = read_lines(rendered / "sr3_watch" / "credentials.conf")
    assert lines == ["amqp://opsm:p%3A%2F%40%25w@localhost:5672/"]


def test_credentials_conf_named_vhost(rendered):
    lines = read_lines(rendered / "sr3_shim" / "credentials.conf")
    assert lines == ["amqps://ops2:s3cr%40t@broker.example:5671/hpc"]


@pytest.mark.parametrize("variant", ["watch", "shim"])
def test_credentials_conf_read_by_sr3(rendered, variant):
    """sr3 finds the password of the URL the mirror configs use in the rendered credentials.conf."""
    from sarracenia.config.credentials import CredentialDB

    credentials = CredentialDB()
    credentials.read(str(rendered / ("sr3_" + variant) / "credentials.conf"))
    ok, details = credentials.validate_urlstr(URLS[variant])
    assert ok
    assert details.url.password == PASSWORDS[variant]
    assert details.url.username == ("opsm" if variant == "watch" else "ops2")


def test_sr3_files_mode(rendered):
    for variant in ("sr3_watch", "sr3_shim"):
        for name in ("default.conf", "credentials.conf"):
            assert os.stat(str(rendered / variant / name)).st_mode & 0o777 == 0o600
