# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The audit's repair plugin (playbooks/files/hpc_mirror_repair.py) against sr3's own
duplicate suppression: a repair post of an unchanged file must not be a duplicate of
the file's first event, as the winnows would otherwise drop it."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import importlib.util
import os
import time
import types

import sarracenia
import sarracenia.config
from sarracenia.flowcb.nodupe.disk import Disk

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _load():
    path = os.path.join(ROOT, "playbooks", "files", "hpc_mirror_repair.py")
    spec = importlib.util.spec_from_file_location("hpc_mirror_repair", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


repair = _load()


def options(tmp_path):
    o = sarracenia.config.default_config()
    o.component = "winnow"
    o.config = "test"
    o.pid_filename = str(tmp_path / "winnow.pid")
    o.cfg_run_dir = str(tmp_path)
    o.nodupe_ttl = 60
    o.no = 1
    return o


def event(path, pub_time):
    """A file event as the flow posts it (integrity none: no identity, key from path, mtime, size)."""
    msg = sarracenia.Message()
    msg.update({"baseUrl": "file:/", "relPath": path.lstrip("/"), "pubTime": pub_time,
                "mtime": "20260101T000000", "size": 42, "_deleteOnPost": set()})
    return msg


def test_a_repair_post_is_not_a_duplicate_of_the_first_event(tmp_path):
    o = options(tmp_path)
    nodupe = Disk(o)
    nodupe.on_start()
    first = event("/src/a.dat", sarracenia.timeflt2str(time.time()))
    again = event("/src/a.dat", sarracenia.timeflt2str(time.time() + 1))
    # without the plugin the re-post of the unchanged file is a duplicate
    work = types.SimpleNamespace(incoming=[first, again], rejected=[], ok=[], failed=[])
    nodupe.after_accept(work)
    assert work.incoming == [first] and work.rejected == [again]
    # with it, each repair post passes, even twice in a row
    posts = [event("/src/a.dat", sarracenia.timeflt2str(time.time() + 2)),
             event("/src/a.dat", sarracenia.timeflt2str(time.time() + 3))]
    plugin = repair.Repair(o)
    plugin.after_accept(types.SimpleNamespace(incoming=posts, rejected=[], ok=[], failed=[]))
    assert posts[0]["nodupe_override"]["key"].startswith("repair,")
    assert nodupe.deriveKey(posts[0]) != nodupe.deriveKey(first)
    work = types.SimpleNamespace(incoming=list(posts), rejected=[], ok=[], failed=[])
    nodupe.after_accept(work)
    assert work.incoming == posts and work.rejected == []
    nodupe.on_stop()
