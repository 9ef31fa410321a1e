# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests of the overlapping Jinja test: equal and nested trees overlap, siblings do not."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import pytest

from ansible_collections.sr3.hpc_mirror.plugins.test.overlapping import TestModule as OverlappingTests
from ansible_collections.sr3.hpc_mirror.plugins.test.overlapping import overlapping

# keep pytest from collecting the imported Ansible TestModule class
OverlappingTests.__test__ = False


def test_registered_as_test():
    assert OverlappingTests().tests()["overlapping"] is overlapping


@pytest.mark.parametrize("first, second", [
    # equal
    ("/fs/a", "/fs/a"),
    ("/", "/"),
    # trailing slashes
    ("/fs/a/", "/fs/a"),
    ("/fs/a", "/fs/a//"),
    # nested, both ways
    ("/fs/a", "/fs/a/copy"),
    ("/fs/a/copy", "/fs/a"),
    ("/fs/a", "/fs/a/b/c/d"),
    ("/fs/a/b/c/d/", "/fs/a/"),
    ("/", "/fs/a"),
    ("/fs/a", "/"),
    # normalisation
    ("/fs/a/../a", "/fs/a"),
    ("/fs/b/../a/copy", "/fs/a"),
    ("/fs/./a", "/fs/a/."),
    ("//fs//a", "/fs/a/x"),
    ("/fs/a/x/..", "/fs/a"),
])
def test_overlapping(first, second):
    assert overlapping(first, second) is True
    assert overlapping(second, first) is True


@pytest.mark.parametrize("first, second", [
    # siblings with a common prefix are distinct trees
    ("/fs/a", "/fs/ab"),
    ("/fs/a/", "/fs/ab/"),
    ("/fs/a", "/fs/a-copy"),
    ("/fs/a", "/fs/a.copy/x"),
    ("/fs/primary", "/fs/secondary"),
    ("/fs1/data", "/fs2/data"),
    # normalisation moves a path out of the other tree
    ("/fs/a/../b", "/fs/a"),
    ("/fs/a/copy/../../b", "/fs/a/copy"),
])
def test_not_overlapping(first, second):
    assert overlapping(first, second) is False
    assert overlapping(second, first) is False


def test_non_string_paths_accepted():
    import pathlib
    assert overlapping(pathlib.PurePosixPath("/fs/a"), "/fs/a/b") is True
    assert overlapping(pathlib.PurePosixPath("/fs/a"), pathlib.PurePosixPath("/fs/ab")) is False
