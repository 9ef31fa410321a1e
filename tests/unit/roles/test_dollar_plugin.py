# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""hpc_mirror_dollar around sr3's own filter code: a '$' in a path survives, ${PATH} no longer raises."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import sys
import types

import pytest

import sarracenia
import sarracenia.config
import sarracenia.flow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(ROOT, "roles", "mirror", "files"))

import hpc_mirror_dollar as dollar  # noqa: E402

NAMES = ["fs/p/${PATH}x/f", "fs/p/$HOME/f", "fs/p/a$b/${HOME}", "fs/p/$/$$", "fs/p/plain/f"]


def accept(message, directory=None):
    """sr3's updateFieldsAccepted as a winnow (no directory) or a copier (directory) runs it."""
    flow = sarracenia.flow.Flow.__new__(sarracenia.flow.Flow)
    flow.o = sarracenia.config.default_config()
    flow.updateFieldsAccepted(message, message["baseUrl"] + message["relPath"], None, directory, None, True, 0,
                              None, "/")


def test_without_the_plugin_sr3_mangles_or_raises():
    message = sarracenia.Message()
    message.update({"baseUrl": "file:/", "relPath": "fs/p/${PATH}x/f"})
    with pytest.raises(IndexError):
        accept(message)


@pytest.mark.parametrize("rel_path", NAMES)
@pytest.mark.parametrize("directory", [None, "/fs/copy"])
def test_every_dollar_survives_the_filter(rel_path, directory):
    message = sarracenia.Message()
    message.update({"baseUrl": "file:/", "relPath": rel_path})
    plugin = dollar.Dollar(sarracenia.config.default_config())
    plugin.after_gather(types.SimpleNamespace(incoming=[message]))
    accept(message, directory)
    plugin.after_accept(types.SimpleNamespace(incoming=[message], rejected=[]))
    assert message["relPath"] == rel_path
    assert message["new_file"] == os.path.basename(rel_path)
    assert message["new_dir"].endswith(os.path.dirname(rel_path))
    assert "\0" not in repr(dict(message)) and dollar.MARK not in message


def test_a_path_already_holding_a_nul_is_left_for_the_guard():
    message = sarracenia.Message()
    message.update({"baseUrl": "file:/", "relPath": "fs/p/$x\0y"})
    dollar.hide(message)
    assert message["relPath"] == "fs/p/$x\0y" and dollar.MARK not in message
