# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run the manifest_compare module's main() as Ansible would, on real manifests."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import functools
import json
import os
import shutil

import pytest

from ansible_collections.sr3.hpc_mirror.plugins.module_utils.manifest import write_manifest
from ansible_collections.sr3.hpc_mirror.plugins.modules import manifest_compare


@pytest.fixture
def run(run_module):
    return functools.partial(run_module, manifest_compare)


@pytest.fixture
def trees(tmp_path):
    src = tmp_path / 'src'
    (src / 'dir').mkdir(parents=True)
    (src / 'dir' / 'a.txt').write_bytes(b'alpha')
    (src / 'top.bin').write_bytes(b'0123456789')
    dst = tmp_path / 'dst'
    shutil.copytree(str(src), str(dst), symlinks=True)
    return src, dst


def manifests(tmp_path, src, dst, mode='content'):
    write_manifest(str(src), str(tmp_path / 'src.manifest'), mode)
    write_manifest(str(dst), str(tmp_path / 'dst.manifest'), mode)
    return dict(source=str(tmp_path / 'src.manifest'), destination=str(tmp_path / 'dst.manifest'))


def test_in_sync(run, tmp_path, trees):
    result = run(**manifests(tmp_path, *trees))
    assert 'failed' not in result, result
    assert result['in_sync'] is True and result['changed'] is False and result['differences'] == 0
    assert result['source_entries'] == result['destination_entries'] == 3
    assert result['source_errors'] == result['destination_errors'] == 0
    assert set(result['counts']) == set(['missing', 'extra', 'type', 'size', 'content', 'symlink_target', 'mode', 'mtime',
                                         'unreadable'])
    assert result['in_flight'] == 0 and result['in_flight_examples'] == []
    assert 'report' not in result and not result.get('warnings')


def test_differences_do_not_fail(run, tmp_path, trees):
    src, dst = trees
    os.unlink(str(dst / 'dir' / 'a.txt'))
    (dst / b'\xff odd'.decode('utf-8', 'surrogateescape')).write_bytes(b'')
    report = tmp_path / 'report.jsonl'
    result = run(max_examples=1, report=str(report), **manifests(tmp_path, src, dst))
    assert 'failed' not in result and result['in_sync'] is False and result['changed'] is False
    assert result['differences'] == 2 and result['counts']['missing'] == 1 and result['counts']['extra'] == 1
    assert result['examples'] == [{'path': 'dir/a.txt', 'category': 'missing', 'source': 'file', 'destination': None}]
    assert result['report'] == str(report) and len(report.read_bytes().splitlines()) == 2


def test_undecodable_names_shown_escaped(run, tmp_path, trees):
    src, dst = trees
    (dst / b'\xff odd'.decode('utf-8', 'surrogateescape')).write_bytes(b'')
    result = run(**manifests(tmp_path, src, dst))
    assert result['examples'][0]['path'] == '\\xff odd'


def test_checks_and_tolerance(run, tmp_path, trees):
    src, dst = trees
    st = os.stat(str(src / 'top.bin'))
    os.utime(str(dst / 'top.bin'), (0, st.st_mtime + 5))
    os.chmod(str(dst / 'top.bin'), 0o600)
    paths = manifests(tmp_path, src, dst)
    expected = dict(missing=0, extra=0, type=0, size=0, content=0, symlink_target=0, mode=1, mtime=1, unreadable=0)
    assert run(**paths)['counts'] == expected
    result = run(checks=['missing', 'mtime'], mtime_tolerance=10.0, **paths)
    assert result['in_sync'] is True and result['counts'] == {'missing': 0, 'mtime': 0}


def test_check_mode_and_warning(run, tmp_path, trees):
    result = run(_ansible_check_mode=True, **manifests(tmp_path, *trees, mode='metadata'))
    assert result['in_sync'] is True and result['changed'] is False
    # ansible-core 2.19 returns structured warnings, older versions plain text.
    assert 'no hashes' in json.dumps(result['warnings'])


def test_invalid_manifest_fails(run, tmp_path, trees):
    paths = manifests(tmp_path, *trees)
    with open(paths['destination'], 'ab') as fh:
        fh.write(b'{"path": "a", "type": "file"}\n')  # out of order
    result = run(**paths)
    assert result['failed'] and 'invalid manifest' in result['msg'] and 'not in tree order' in result['msg']


def test_missing_manifest_fails(run, tmp_path, trees):
    paths = manifests(tmp_path, *trees)
    result = run(source=paths['source'], destination=str(tmp_path / 'nope'))
    assert result['failed'] and 'cannot read' in result['msg']


def test_bad_check_name_fails(run, tmp_path, trees):
    result = run(checks=['colour'], **manifests(tmp_path, *trees))
    assert result['failed'] and 'colour' in result['msg']


def test_negative_max_examples_fails(run, tmp_path, trees):
    result = run(max_examples=-1, **manifests(tmp_path, *trees))
    assert result['failed'] and 'max_examples' in result['msg']


def test_settle_and_repair_lists(run, tmp_path, trees):
    src, dst = trees
    os.unlink(str(dst / 'dir' / 'a.txt'))
    (dst / 'extra').write_bytes(b'x')
    paths = manifests(tmp_path, src, dst)
    lists = dict(repost_list=str(tmp_path / 'repost'), delete_list=str(tmp_path / 'delete'),
                 stale_list=str(tmp_path / 'stale'))
    result = run(**dict(paths, **lists))
    assert result['repost'] == 1 and result['delete'] == 1 and result['differences'] == 2 and result['stale'] == 0
    assert (tmp_path / 'repost').read_bytes() == os.fsencode(str(src / 'dir' / 'a.txt')) + b'\0'
    assert (tmp_path / 'delete').read_bytes() == os.fsencode(str(dst / 'extra')) + b'\0'
    # everything was just written: with a long settle it is all in flight
    result = run(settle=3600, **dict(paths, **lists))
    assert result['in_sync'] is True and result['in_flight'] == 2 and result['repost'] == 0
    assert sorted(e['path'] for e in result['in_flight_examples']) == ['dir/a.txt', 'extra']
    assert (tmp_path / 'repost').read_bytes() == b''


def test_negative_settle_fails(run, tmp_path, trees):
    result = run(settle=-1, **manifests(tmp_path, *trees))
    assert result['failed'] and 'settle' in result['msg']


def test_stale_list_has_differing_files_present_on_both_sides(run, tmp_path, trees):
    src, dst = trees
    st = os.stat(str(src / 'top.bin'))
    (dst / 'top.bin').write_bytes(b'9876543210')  # same size
    os.utime(str(dst / 'top.bin'), ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime: sr3 would not overwrite
    os.chmod(str(dst / 'dir' / 'a.txt'), 0o600)  # mode only
    os.chmod(str(dst / 'dir'), 0o700)  # a directory: not a stale file
    lists = dict(repost_list=str(tmp_path / 'repost'), stale_list=str(tmp_path / 'stale'))
    result = run(**dict(manifests(tmp_path, src, dst), **lists))
    assert result['counts']['content'] == 1 and result['counts']['mode'] == 2
    assert result['stale'] == 2 and result['repost'] == 3
    stale = sorted((tmp_path / 'stale').read_bytes().split(b'\0')[:-1])
    assert stale == sorted([os.fsencode(str(dst / 'top.bin')), os.fsencode(str(dst / 'dir' / 'a.txt'))])
