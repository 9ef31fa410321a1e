# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests of the mirror_names filter: names per direction, winnows, sr3 naming, bad input."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import re

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.sr3.hpc_mirror.plugins.filter.mirror_names import FilterModule, mirror_names


def _all_names(names):
    """Every config, exchange and queue name of one flow."""
    return set(
        names["configs"] + [names["post"]] + names["exchanges"]["all"] + [names["exchanges"]["post"]]
        + list(names["queues"].values())
    )


def test_registered_as_filter():
    assert FilterModule().filters()["mirror_names"] is mirror_names


def test_basic_names():
    names = mirror_names("opsm", "mirror", "primary_to_secondary", 2)
    assert names["name"] == "mirror_primary_to_secondary"
    assert names["post"] == "watch/mirror_primary_to_secondary"
    assert names["winnows"] == [
        "winnow/mirror_primary_to_secondary_00",
        "winnow/mirror_primary_to_secondary_01",
    ]
    assert names["copier"] == "sarra/mirror_primary_to_secondary_copy"
    assert names["tally"] == "shovel/mirror_primary_to_secondary_tally"
    exchanges = names["exchanges"]
    assert exchanges["post"] == "xs_opsm_mirror_primary_to_secondary_winnow"
    assert exchanges["winnow"] == [
        "xs_opsm_mirror_primary_to_secondary_winnow00",
        "xs_opsm_mirror_primary_to_secondary_winnow01",
    ]
    assert exchanges["copier"] == "xs_opsm_mirror_primary_to_secondary_copy"
    assert exchanges["output"] == "xs_opsm_mirror_primary_to_secondary_output"
    assert exchanges["all"] == exchanges["winnow"] + [exchanges["copier"], exchanges["output"]]


def test_directions_share_no_name():
    forward = mirror_names("opsm", "mirror", "primary_to_secondary", 3)
    reverse = mirror_names("opsm", "mirror", "secondary_to_primary", 3)
    assert _all_names(forward).isdisjoint(_all_names(reverse))
    assert forward["name"] != reverse["name"]


def test_flows_share_no_name():
    one = mirror_names("opsm", "home", "a_to_b", 2)
    two = mirror_names("opsm", "scratch", "a_to_b", 2)
    assert _all_names(one).isdisjoint(_all_names(two))


@pytest.mark.parametrize("winnows", [1, 2, 5, 10, 12])
def test_winnow_count_and_suffix(winnows):
    names = mirror_names("opsm", "mirror", "p2s", winnows)
    assert len(names["winnows"]) == winnows
    assert len(names["exchanges"]["winnow"]) == winnows
    assert len(set(names["winnows"])) == winnows
    assert len(set(names["exchanges"]["winnow"])) == winnows
    for index, (config, exchange) in enumerate(zip(names["winnows"], names["exchanges"]["winnow"])):
        suffix = "%02d" % index
        assert re.search(r"_\d\d$", config) and config.endswith("_" + suffix)
        # sr3 names split exchanges <post_exchange><two-digit index>, no separator.
        assert exchange == names["exchanges"]["post"] + suffix


def test_winnows_accepts_numeric_string():
    # Ansible variables from inventories or extra vars often arrive as strings.
    assert mirror_names("opsm", "mirror", "p2s", "3") == mirror_names("opsm", "mirror", "p2s", 3)


def _sr3_published_exchanges(tmp_path, monkeypatch, lines):
    """Exchanges the real sr3 publisher posts to for a posting config made of lines."""
    monkeypatch.setenv("HOME", str(tmp_path))  # no user default.conf/credentials.conf
    import sarracenia.config as sarracenia_config
    from sarracenia.config.publisher import Publisher

    options = sarracenia_config.default_config()
    for number, line in enumerate(["post_broker amqp://opsm:secret@localhost:5672/"] + lines):
        options.parse_line("watch", "p2s", "watch/p2s", number + 1, line)
    return Publisher(options)["exchange"]


@pytest.mark.parametrize("winnows", [2, 3, 11])
def test_winnow_exchanges_match_sr3_post_exchange_split(winnows, tmp_path, monkeypatch):
    """The exchanges sr3 publishes to with post_exchangeSplit are the ones the winnows read."""
    names = mirror_names("opsm", "mirror", "p2s", winnows)
    published = _sr3_published_exchanges(tmp_path, monkeypatch, [
        "post_exchange %s" % names["exchanges"]["post"],
        "post_exchangeSplit %d" % winnows,
    ])
    assert published == names["exchanges"]["winnow"]


def test_single_winnow_is_not_a_split_for_sr3(tmp_path, monkeypatch):
    """sr3 adds no suffix for post_exchangeSplit 1, so one winnow is posted to by name.

    This is why post.conf.j2 writes post_exchange <winnow exchange 00> and no
    post_exchangeSplit when there is a single winnow.
    """
    names = mirror_names("opsm", "mirror", "p2s", 1)
    split_of_one = _sr3_published_exchanges(tmp_path, monkeypatch, [
        "post_exchange %s" % names["exchanges"]["post"],
        "post_exchangeSplit 1",
    ])
    assert split_of_one == [names["exchanges"]["post"]] != names["exchanges"]["winnow"]
    direct = _sr3_published_exchanges(tmp_path, monkeypatch, [
        "post_exchange %s" % names["exchanges"]["winnow"][0],
    ])
    assert direct == names["exchanges"]["winnow"]


def test_queues_and_exchanges_owned_by_user():
    names = mirror_names("opsm", "mirror", "p2s", 4)
    consumers = names["winnows"] + [names["copier"], names["tally"]]
    assert sorted(names["queues"]) == sorted(consumers)
    for config, queue in names["queues"].items():
        assert queue.startswith("q_opsm.") or queue.startswith("q_opsm_"), queue
        assert queue.startswith("q_opsm")
        # one queue per consumer, named after it
        assert queue.endswith(config.replace("/", "."))
    assert len(set(names["queues"].values())) == len(consumers)
    for exchange in names["exchanges"]["all"] + [names["exchanges"]["post"]]:
        assert exchange.startswith("xs_opsm_"), exchange
    # the post config publishes nowhere else than to the split winnow exchanges
    assert names["post"] not in names["queues"]


def test_other_user_changes_every_broker_name():
    one = mirror_names("opsm", "mirror", "p2s", 2)
    two = mirror_names("ops2", "mirror", "p2s", 2)
    assert set(one["exchanges"]["all"]).isdisjoint(two["exchanges"]["all"])
    assert set(one["queues"].values()).isdisjoint(two["queues"].values())
    assert all(q.startswith("q_ops2") for q in two["queues"].values())
    assert all(x.startswith("xs_ops2_") for x in two["exchanges"]["all"])
    # config names do not depend on the broker user
    assert one["configs"] == two["configs"]


def test_watch_post_config_and_order():
    names = mirror_names("opsm", "mirror", "p2s", 2, "watch")
    assert names == mirror_names("opsm", "mirror", "p2s", 2)  # watch is the default
    assert names["post"] == "watch/mirror_p2s"
    # consumers first, the watch (a daemon) last so nothing is posted before queues exist
    assert names["configs"] == [
        "shovel/mirror_p2s_tally",
        "sarra/mirror_p2s_copy",
        "winnow/mirror_p2s_00",
        "winnow/mirror_p2s_01",
        "watch/mirror_p2s",
    ]


def test_shim_post_config_and_order():
    names = mirror_names("opsm", "mirror", "p2s", 2, "shim")
    assert names["post"] == "cpost/mirror_p2s"
    # the cpost config is used by the shim in jobs, not run as a daemon
    assert names["post"] not in names["configs"]
    assert names["configs"] == [
        "shovel/mirror_p2s_tally",
        "sarra/mirror_p2s_copy",
        "winnow/mirror_p2s_00",
        "winnow/mirror_p2s_01",
    ]
    # the broker side is identical to the watch flavour
    watch = mirror_names("opsm", "mirror", "p2s", 2, "watch")
    assert names["exchanges"] == watch["exchanges"]
    assert names["queues"] == watch["queues"]


@pytest.mark.parametrize("winnows", [0, -1, "0"])
def test_too_few_winnows(winnows):
    with pytest.raises(AnsibleFilterError, match="at least 1"):
        mirror_names("opsm", "mirror", "p2s", winnows)


@pytest.mark.parametrize("winnows", ["five", None, "", [1]])
def test_winnows_not_integer(winnows):
    with pytest.raises(AnsibleFilterError, match="integer"):
        mirror_names("opsm", "mirror", "p2s", winnows)


@pytest.mark.parametrize("user, flow, direction, label", [
    ("ops m", "mirror", "p2s", "broker_user"),
    ("opsm", "mi/rror", "p2s", "flow"),
    ("opsm", "mirror", "p2s#", "direction"),
    ("opsm", "mirror", "p*s", "direction"),
    ("opsm", "", "p2s", "flow"),
    ("opsm", "_mirror", "p2s", "flow"),
    ("", "mirror", "p2s", "broker_user"),
    (None, "mirror", "p2s", "broker_user"),
    ("opsm", 5, "p2s", "flow"),
    ("opsm", "mirror", "p2s\n", "direction"),
])
def test_bad_characters(user, flow, direction, label):
    with pytest.raises(AnsibleFilterError, match=label):
        mirror_names(user, flow, direction, 2)


def test_cpost_daemon_post_config_and_order():
    names = mirror_names("opsm", "mirror", "p2s", 2, "cpost")
    # the same config name as the shim's (sr3c reads cpost/<name>.conf), but a daemon: started last
    assert names["post"] == "cpost/mirror_p2s"
    assert names["configs"] == [
        "shovel/mirror_p2s_tally",
        "sarra/mirror_p2s_copy",
        "winnow/mirror_p2s_00",
        "winnow/mirror_p2s_01",
        "cpost/mirror_p2s",
    ]
    watch = mirror_names("opsm", "mirror", "p2s", 2, "watch")
    assert names["exchanges"] == watch["exchanges"]
    assert names["queues"] == watch["queues"]


@pytest.mark.parametrize("source", ["inotify", "Watch", "", None, "Cpost", "sr3_cpost"])
def test_unknown_event_source(source):
    with pytest.raises(AnsibleFilterError, match="event_source"):
        mirror_names("opsm", "mirror", "p2s", 2, source)


def test_names_with_dots_and_dashes_allowed():
    names = mirror_names("ops.m-1", "home-fs", "a.b", 1)
    assert names["name"] == "home-fs_a.b"
    assert names["exchanges"]["winnow"] == ["xs_ops.m-1_home-fs_a.b_winnow00"]
