# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The copier guard (roles/mirror/files/hpc_mirror_guard.py) against a table of hostile messages.

Messages are made as sr3 makes them for the copier: a real sarracenia.Message
passed through sr3's own updateFieldsAccepted with the copier's baseDir and
directory, so the fields the guard sees (new_dir, new_file, rewritten fileOp)
are what a running copier would see.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import sys

import pytest

import sarracenia
import sarracenia.config
import sarracenia.flow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(ROOT, "roles", "mirror", "files"))

import hpc_mirror_guard as guard  # noqa: E402

SOURCE_URL = "file:/"


@pytest.fixture
def trees(tmp_path):
    source = tmp_path / "src"
    destination = tmp_path / "dst"
    outside = tmp_path / "outside"
    for directory in (source / "a", destination / "a", outside):
        directory.mkdir(parents=True)
    # a mirrored symbolic link to a directory outside the copy (its content is data)
    (destination / "escape").symlink_to(outside)
    (destination / "a" / "inner").symlink_to(destination / "a")
    return source, destination, outside


def accepted(trees, monkeypatch, **fields):
    """A message as the copier's after_accept gets it."""
    source, destination, _outside = trees
    monkeypatch.setenv("HOME", str(source.parent / "home"))
    options = sarracenia.config.default_config()
    options.baseDir = str(source)
    options.directory = str(destination)
    options.download = True
    flow = sarracenia.flow.Flow.__new__(sarracenia.flow.Flow)
    flow.o = options
    message = sarracenia.Message()
    message.update({"baseUrl": SOURCE_URL, "relPath": str(source / "a" / "f.txt"), "mode": "644",
                    "mtime": "20261207T120000", "size": 1})
    message.update(fields)
    # sr3 watch and sr3c post relPath without its leading slash under baseUrl file:/
    if isinstance(message["relPath"], str):
        message["relPath"] = message["relPath"].lstrip("/")
    flow.updateFieldsAccepted(message, SOURCE_URL + message["relPath"], None, str(destination), None, True, 0,
                              None, "/")
    return message


def check(trees, monkeypatch, **fields):
    source, destination, _outside = trees
    message = accepted(trees, monkeypatch, **fields)
    return guard.Guard(SOURCE_URL, str(source), str(destination)).check(message)


def test_an_ordinary_message_passes(trees, monkeypatch):
    assert check(trees, monkeypatch) is None


@pytest.mark.parametrize("name", ["café.txt", "ünïcödé_日本.txt", "a b\tc\nd", "%#*?[\\'\"", "-leading", ".hidden",
                                  "é" * 127, "\udce9latin1", "🙂"])
def test_any_name_inside_the_tree_passes(trees, monkeypatch, name):
    source = trees[0]
    assert check(trees, monkeypatch, relPath=str(source / "a" / name)) is None


HOSTILE = [
    # (id, fields given relative to the trees, expected reason)
    ("dotdot-relpath", {"relPath": "{src}/a/../../outside/x"}, "bad_path"),
    ("dotdot-out-of-source", {"relPath": "{src}/../dst/a/f.txt"}, "bad_path"),
    ("dot-component", {"relPath": "{src}/./a/f.txt"}, "bad_path"),
    ("relpath-outside-source", {"relPath": "{outside}/secret"}, "path_outside_tree"),
    ("relpath-credentials", {"relPath": "/root/.config/sr3/credentials.conf"}, "path_outside_tree"),
    ("relpath-is-a-sibling-prefix", {"relPath": "{src}x/f"}, "path_outside_tree"),
    ("relpath-nul", {"relPath": "{src}/a/f\x00.txt"}, "bad_path"),
    ("relpath-empty", {"relPath": "/"}, "bad_path"),
    ("foreign-base-url", {"baseUrl": "sftp://evil@elsewhere/"}, "foreign_base_url"),
    ("foreign-base-url-path", {"baseUrl": "file:/home/ops/"}, "foreign_base_url"),
    ("inline-content", {"content": {"encoding": "utf-8", "value": "pwned"}}, "inline_content"),
    ("retrieve-path", {"retrievePath": "/etc/shadow"}, "retrieve_path"),
    ("blocks", {"blocks": {"method": "inplace", "size": 1, "number": 0, "manifest": {}}}, "partial_file"),
    ("rename-from-outside", {"fileOp": {"rename": "{outside}/secret"}}, "path_outside_tree"),
    ("rename-from-home", {"fileOp": {"rename": "/root/.ssh/authorized_keys"}}, "path_outside_tree"),
    ("rename-dotdot", {"fileOp": {"rename": "{src}/a/../../outside/x"}}, "bad_path"),
    ("rename-through-link", {"fileOp": {"rename": "{src}/escape/x"}}, "symlinked_parent"),
    ("hlink-from-outside", {"fileOp": {"hlink": "/root/.config/sr3/credentials.conf"}}, "path_outside_tree"),
    ("hlink-dotdot", {"fileOp": {"hlink": "{src}/../outside/secret"}}, "bad_path"),
    ("destination-through-link", {"relPath": "{src}/escape/passwd"}, "symlinked_parent"),
    ("destination-through-deeper-link", {"relPath": "{src}/escape/new/dir/passwd"}, "symlinked_parent"),
    ("top-level-rename-field", {"rename": "/../../outside/x"}, "bad_path"),
    ("top-level-rename-elsewhere", {"rename": "{src}/a/other.txt"}, "bad_path"),
]


def test_a_destination_that_does_not_mirror_relpath_is_refused(trees, monkeypatch):
    source, destination, _outside = trees
    message = accepted(trees, monkeypatch)
    message["new_dir"] = str(destination / "b")
    refused = guard.Guard(SOURCE_URL, str(source), str(destination)).check(message)
    assert refused.reason == "bad_path" and "does not mirror" in refused.detail


@pytest.mark.parametrize("fields,reason", [case[1:] for case in HOSTILE], ids=[case[0] for case in HOSTILE])
def test_hostile_messages_are_refused(trees, monkeypatch, fields, reason):
    source, destination, outside = trees

    def fill(value):
        if isinstance(value, dict):
            return {key: fill(item) for key, item in value.items()}
        if isinstance(value, str):
            return value.format(src=source, dst=destination, outside=outside)
        return value
    refused = check(trees, monkeypatch, **fill(fields))
    assert refused is not None, fields
    assert refused.reason == reason, refused.detail
    assert refused.reason in guard.REASONS


def test_a_link_inside_the_destination_that_stays_inside_passes(trees, monkeypatch):
    source = trees[0]
    assert check(trees, monkeypatch, relPath=str(source / "a" / "inner" / "f")) is None


def test_renames_and_hard_links_within_the_tree_pass(trees, monkeypatch):
    source = trees[0]
    assert check(trees, monkeypatch, fileOp={"rename": str(source / "a" / "old.txt")}) is None
    assert check(trees, monkeypatch, fileOp={"hlink": str(source / "a" / "other.txt")}) is None


def test_a_symbolic_link_target_is_data(trees, monkeypatch):
    assert check(trees, monkeypatch, fileOp={"link": "../../../../etc/passwd"}) is None


@pytest.mark.parametrize("mode,keep,expected", [
    ("644", False, 0o644), ("4755", False, 0o755), ("2775", False, 0o775), ("6755", False, 0o755),
    ("1777", False, 0o1777), ("4755", True, 0o4755), ("zz", False, None), ("77777", False, None),
    (None, False, None), ("-1", False, None),
])
def test_masked_mode(mode, keep, expected):
    assert guard.masked_mode(mode, keep) == expected


@pytest.mark.parametrize("url,clean", [
    ("file:/", "file:/"), ("file:", "file:/"), ("file://", "file:/"),
    ("sftp://ops@hpc1/", "sftp://ops@hpc1/"), ("sftp://ops@hpc1", "sftp://ops@hpc1/"),
    ("sftp://ops@hpc1//", "sftp://ops@hpc1/"), ("sftp://ops@hpc2/", "sftp://ops@hpc2/"),
])
def test_clean_url(url, clean):
    assert guard.clean_url(url) == clean
