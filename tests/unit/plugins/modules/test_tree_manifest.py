# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run the tree_manifest module's main() as Ansible would, on real trees."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import functools
import os

import pytest

from ansible_collections.sr3.hpc_mirror.plugins.module_utils.manifest import ManifestReader
from ansible_collections.sr3.hpc_mirror.plugins.modules import tree_manifest


@pytest.fixture
def run(run_module):
    return functools.partial(run_module, tree_manifest)


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / 'tree'
    (root / 'dir').mkdir(parents=True)
    (root / 'dir' / 'a.txt').write_bytes(b'alpha')
    (root / 'b.tmp').write_bytes(b'partial')
    os.symlink('dir', str(root / 'link'))
    return root


def test_writes_manifest(run, tree, tmp_path):
    dest = str(tmp_path / 'tree.manifest')
    result = run(path=str(tree), dest=dest)
    assert 'failed' not in result, result
    assert result['changed'] is False and result['dest'] == dest and result['hash'] == 'blake2b'
    assert result['entries'] == 4 and result['bytes'] == 12 and result['errors'] == 0
    assert result['counts'] == {'file': 2, 'dir': 1, 'symlink': 1, 'other': 0}
    assert result['duration'] >= 0
    with ManifestReader(dest) as reader:
        assert reader.header['root'] == str(tree)
        assert [e['path'] for _k, e in reader] == ['b.tmp', 'dir', 'dir/a.txt', 'link']


def test_options(run, tree, tmp_path):
    dest = str(tmp_path / 'm')
    result = run(path=str(tree), dest=dest, hash='none', exclude=[r'\.tmp$'])
    assert result['entries'] == 3 and result['hash'] == 'none'
    with ManifestReader(dest) as reader:
        assert reader.header['exclude'] == [r'\.tmp$']
        assert not any('hash' in e for _k, e in reader)


def test_check_mode_still_writes(run, tree, tmp_path):
    dest = tmp_path / 'm'
    result = run(path=str(tree), dest=str(dest), _ansible_check_mode=True)
    assert result['changed'] is False and 'failed' not in result
    assert dest.exists()


@pytest.mark.parametrize('path, message', [
    ('relative/dir', 'must be absolute'),
    ('/nonexistent/sr3-hpc-mirror', 'does not exist'),
])
def test_bad_path(run, tmp_path, path, message):
    result = run(path=path, dest=str(tmp_path / 'm'))
    assert result['failed'] and message in result['msg']


def test_path_not_a_dir(run, tree, tmp_path):
    result = run(path=str(tree / 'dir' / 'a.txt'), dest=str(tmp_path / 'm'))
    assert result['failed'] and 'not a directory' in result['msg']


def test_dest_dir_missing(run, tree, tmp_path):
    result = run(path=str(tree), dest=str(tmp_path / 'no' / 'm'))
    assert result['failed'] and 'directory of dest does not exist' in result['msg']


def test_bad_exclude(run, tree, tmp_path):
    result = run(path=str(tree), dest=str(tmp_path / 'm'), exclude=['(unclosed'])
    assert result['failed'] and 'invalid exclude regex' in result['msg']


def test_bad_hash_choice(run, tree, tmp_path):
    result = run(path=str(tree), dest=str(tmp_path / 'm'), hash='crc32')
    assert result['failed'] and 'hash' in result['msg']
