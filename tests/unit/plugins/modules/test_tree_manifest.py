# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run the tree_manifest module's main() as Ansible would, on real trees."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import functools
import importlib.util
import os

import pytest

from ansible_collections.sr3.hpc_mirror.plugins.module_utils.manifest import ManifestReader
from ansible_collections.sr3.hpc_mirror.plugins.modules import tree_manifest


XXHASH = importlib.util.find_spec('xxhash') is not None


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
    assert result['changed'] is False and result['dest'] == dest and result['scan_mode'] == 'content'
    assert result['hash'] == ('xxh3' if XXHASH else 'blake2b')
    assert result['hashed_files'] == 2 and result['hashed_bytes'] == 12
    assert result['entries'] == 4 and result['bytes'] == 12 and result['errors'] == 0
    assert result['counts'] == {'file': 2, 'dir': 1, 'symlink': 1, 'other': 0}
    assert result['duration'] >= 0
    with ManifestReader(dest) as reader:
        assert reader.header['root'] == str(tree)
        assert [e['path'] for _k, e in reader] == ['b.tmp', 'dir', 'dir/a.txt', 'link']


def test_options(run, tree, tmp_path):
    dest = str(tmp_path / 'm')
    result = run(path=str(tree), dest=dest, mode='metadata', exclude=[r'^dir$'], reject=[r'.*\.tmp$'])
    assert result['entries'] == 1 and result['hash'] == 'none' and result['hashed_files'] == 0
    with ManifestReader(dest) as reader:
        assert reader.header['exclude'] == [r'^dir$'] and reader.header['reject'] == [r'.*\.tmp$']
        assert reader.header['reject_base'] == 'file:%s/' % tree
        assert [e['path'] for _k, e in reader] == ['link']


def test_reject_root_is_the_source_url(run, tree, tmp_path):
    dest = str(tmp_path / 'm')
    result = run(path=str(tree), dest=dest, mode='metadata', reject=['^file:/primary/dir/.*'], reject_root='/primary')
    assert result['entries'] == 3
    with ManifestReader(dest) as reader:
        assert [e['path'] for _k, e in reader] == ['b.tmp', 'dir', 'link']
    result = run(path=str(tree), dest=dest, mode='metadata', reject=['^sftp://u@h/primary/b.*'], reject_root='/primary',
                 reject_base_url='sftp://u@h/')
    assert result['entries'] == 3
    with ManifestReader(dest) as reader:
        assert reader.header['reject_base'] == 'sftp://u@h/primary/'


def test_sample_mode(run, tree, tmp_path):
    result = run(path=str(tree), dest=str(tmp_path / 'm'), mode='sample', sample_count=1, sample_seed='s')
    assert 'failed' not in result, result
    assert result['hashed_files'] == 1 and result['scan_mode'] == 'sample'
    result = run(path=str(tree), dest=str(tmp_path / 'm'), mode='sample')
    assert result['failed'] and 'sample_fraction or sample_count' in result['msg']
    result = run(path=str(tree), dest=str(tmp_path / 'm'), mode='sample', sample_fraction=2.0)
    assert result['failed'] and 'sample_fraction' in result['msg']


def test_explicit_hash_and_bad_fallback(run, tree, tmp_path):
    result = run(path=str(tree), dest=str(tmp_path / 'm'), hash='sha256', hash_fallback='')
    assert result['hash'] == 'sha256'
    result = run(path=str(tree), dest=str(tmp_path / 'm'), hash_fallback='crc32')
    assert result['failed'] and 'hash_fallback' in result['msg']


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
