# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Jinja test: do two directory trees overlap (equal, or one inside the other)?"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r"""
name: overlapping
short_description: Whether two directory trees are the same or nested
version_added: 0.1.0
description:
  - True when the two paths, normalised, are equal or one lies inside the other. A mirror between
    overlapping trees would copy its own copies.
  - Compares path strings only; symbolic links are not resolved.
positional: other
options:
  _input:
    description: A path.
    type: path
    required: true
  other:
    description: The other path.
    type: path
    required: true
"""

EXAMPLES = r"""
- name: Refuse a destination inside the source
  ansible.builtin.assert:
    that: not ('/fs/a' is sr3.hpc_mirror.overlapping('/fs/a/copy'))
"""

RETURN = r"""
_value:
  description: Whether the trees overlap.
  type: bool
"""

import posixpath


def _tree(path):
    normal = posixpath.normpath(str(path))
    # normpath keeps a leading '//' (POSIX leaves it implementation-defined); on Linux it is '/'.
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    return normal.rstrip("/") + "/"


def overlapping(path, other):
    first = _tree(path)
    second = _tree(other)
    return first.startswith(second) or second.startswith(first)


class TestModule(object):
    def tests(self):
        return {"overlapping": overlapping}
