# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""conflict_area on real trees: an audit's differences, then keep, list, settle, restore."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import functools
import json
import os
import shutil
import time

import pytest

from ansible_collections.sr3.hpc_mirror.plugins.module_utils.manifest import compare_manifests, write_manifest
from ansible_collections.sr3.hpc_mirror.plugins.modules import conflict_area

OLD = 1_700_000_000
EXCLUDE = [r'^\.hpc_mirror(/|$)']


@pytest.fixture
def run(run_module):
    return functools.partial(run_module, conflict_area)


def write(path, data, mtime):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(str(path), (mtime, mtime))


@pytest.fixture
def trees(tmp_path):
    """source: the other side (secondary); dest: the recovering tree (primary)."""
    src, dst = tmp_path / 'secondary', tmp_path / 'primary'
    write(src / 'fo' / 'f1', b'same', OLD)
    write(src / 'fo' / 'old-differs', b'the other side, newer', OLD + 100)
    write(src / 'fo' / 'rewritten', b'other side', OLD)
    shutil.copytree(str(src), str(dst))
    for name in ('f1', 'old-differs', 'rewritten'):
        st = os.stat(str(src / 'fo' / name))
        os.utime(str(dst / 'fo' / name), ns=(st.st_atime_ns, st.st_mtime_ns))
    write(dst / 'fo' / 'old-differs', b'recovering, older', OLD + 50)
    write(dst / 'fo' / 'rewritten', b'recovering side rewrite', OLD + 500)  # newer: kept
    write(dst / 'fo' / 'late' / 'l1', b'only here', OLD + 600)
    write(dst / 'fo' / 'late' / 'sub' / 'l2', b'only here too', OLD + 600)
    write(dst / 'fo' / 'renamed-old', b'renamed before the cut', OLD - 1000)  # old mtime: kept anyway
    os.symlink('f1', str(dst / 'fo' / 'link-only-here'))
    return src, dst


def differences(tmp_path, src, dst):
    write_manifest(str(src), str(tmp_path / 's.jsonl'), 'content', exclude=EXCLUDE)
    write_manifest(str(dst), str(tmp_path / 'd.jsonl'), 'content', exclude=EXCLUDE)
    report = tmp_path / 'diff.jsonl'
    result = compare_manifests(str(tmp_path / 's.jsonl'), str(tmp_path / 'd.jsonl'), report=str(report))
    return str(report), result


def test_keep_moves_extras_and_newer_versions_only(run, tmp_path, trees):
    src, dst = trees
    report = differences(tmp_path, src, dst)[0]
    before = (dst / 'fo' / 'rewritten').read_bytes()
    check = run(_ansible_check_mode=True, action='keep', root=str(dst), generation='4', since=OLD + 300,
                differences=report)
    assert check['changed'] and not (dst / '.hpc_mirror').exists(), check
    result = run(action='keep', root=str(dst), generation='4', since=OLD + 300, differences=report)
    assert 'failed' not in result, result
    kept = dict((r['path'], r) for r in result['conflicts'])
    assert set(kept) == {'fo/rewritten', 'fo/late/l1', 'fo/late/sub/l2', 'fo/renamed-old', 'fo/link-only-here'}
    assert [r['path'] for r in check['conflicts']] == [r['path'] for r in result['conflicts']]
    area = dst / '.hpc_mirror' / 'conflicts' / '4'
    assert (area / 'fo' / 'rewritten').read_bytes() == before
    assert kept['fo/rewritten']['reason'].startswith('newer')
    assert kept['fo/rewritten']['incoming'] == {'mtime_ns': OLD * 10 ** 9, 'size': len(b'other side')}
    assert kept['fo/late/l1']['reason'] == 'exists only on the recovering side'
    assert kept['fo/late/l1']['recovering'] == {'mtime_ns': (OLD + 600) * 10 ** 9, 'size': 9}
    assert os.readlink(str(area / 'fo' / 'link-only-here')) == 'f1'
    assert not (dst / 'fo' / 'late').exists(), 'emptied extra directories go'
    assert result['older_left'] == ['fo/old-differs'] and (dst / 'fo' / 'old-differs').exists()
    lines = [json.loads(x) for x in (area / 'conflicts.jsonl').read_text().splitlines()]
    assert sorted(x['path'] for x in lines) == sorted(kept)
    # Nothing left that keep would move: a second run changes nothing.
    report = differences(tmp_path, src, dst)[0]
    again = run(action='keep', root=str(dst), generation='4', since=OLD + 300, differences=report)
    assert again['changed'] is False and again['conflicts'] == []


def test_marked_by_this_generation_is_left(run, tmp_path, trees):
    src, dst = trees
    try:
        os.setxattr(str(dst / 'fo' / 'rewritten'), 'user.hpc_mirror.generation', b'4')
    except OSError:
        pytest.skip('no user extended attributes here')
    report = differences(tmp_path, src, dst)[0]
    result = run(action='keep', root=str(dst), generation='4', since=OLD + 300, differences=report)
    assert 'fo/rewritten' not in [r['path'] for r in result['conflicts']]
    assert (dst / 'fo' / 'rewritten').exists()


def kept_tree(run, tmp_path, trees):
    src, dst = trees
    report = differences(tmp_path, src, dst)[0]
    run(action='keep', root=str(dst), generation='4', since=OLD + 300, differences=report)
    return src, dst


def test_list_settle_discard_and_keep(run, tmp_path, trees):
    src, dst = kept_tree(run, tmp_path, trees)
    listed = run(action='list', root=str(dst))
    assert listed['unsettled'] == 5 and listed['changed'] is False
    assert all(r['generation'] == '4' and r['present'] and r['settled'] is None for r in listed['conflicts'])

    # discard one, in check mode first
    check = run(_ansible_check_mode=True, action='settle', root=str(dst), decision='discard', paths=['fo/late/l1'])
    assert check['changed'] and (dst / '.hpc_mirror/conflicts/4/fo/late/l1').exists()
    done = run(action='settle', root=str(dst), decision='discard', paths=['fo/late/l1', 'no/such'])
    assert done['changed'] and done['unsettled'] == 4
    assert {a['path']: a['action'] for a in done['actions']} == {'fo/late/l1': 'discarded',
                                                                 'no/such': 'no such conflict'}
    assert not (dst / '.hpc_mirror/conflicts/4/fo/late/l1').exists()
    rerun = run(action='settle', root=str(dst), decision='keep', paths=['fo/late/l1'])
    assert rerun['changed'] is False and rerun['actions'][0]['action'] == 'already settled (discard)'

    # keep, put back now: the tree's file at that path goes aside in turn, settled
    (dst / 'fo' / 'rewritten').write_bytes(b'what the tree has now')
    put = run(action='settle', root=str(dst), decision='keep', paths=['fo/rewritten'])
    assert put['changed'] and (dst / 'fo' / 'rewritten').read_bytes() == b'recovering side rewrite'
    displaced = put['actions'][0]['displaced']
    assert (dst / displaced).read_bytes() == b'what the tree has now'
    assert put['unsettled'] == 3, 'the displaced version is recorded and settled at once'

    # keep for later (failback), then restore
    later = run(action='settle', root=str(dst), decision='keep', apply=False)
    assert later['changed'] and later['unsettled'] == 0 and later['pending_keep'] == 3
    assert not (dst / 'fo' / 'late' / 'sub' / 'l2').exists()
    restored = run(action='restore', root=str(dst))
    assert restored['changed'] and restored['pending_keep'] == 0
    assert (dst / 'fo' / 'late' / 'sub' / 'l2').read_bytes() == b'only here too'
    assert os.readlink(str(dst / 'fo' / 'link-only-here')) == 'f1'
    assert run(action='restore', root=str(dst))['changed'] is False


def test_put_back_refuses_over_a_directory_or_with_replace_refuse(run, tmp_path, trees):
    src, dst = kept_tree(run, tmp_path, trees)
    (dst / 'fo' / 'late' / 'l1').mkdir(parents=True)
    (dst / 'fo' / 'rewritten').write_bytes(b'now')
    result = run(action='settle', root=str(dst), decision='keep', paths=['fo/late/l1', 'fo/rewritten'],
                 replace='refuse')
    actions = {a['path']: a['action'] for a in result['actions']}
    assert actions['fo/late/l1'].startswith('not settled: the tree has a directory')
    assert actions['fo/rewritten'].startswith('not settled: the tree has a file')
    assert result['unsettled'] == 5 and (dst / 'fo' / 'rewritten').read_bytes() == b'now'


def test_records_of_the_copiers_are_read(run, tmp_path):
    root = tmp_path / 'primary'
    area = root / '.hpc_mirror' / 'conflicts' / '7'
    write(area / 'x' / 'f', b'v', OLD)
    record = {'path': 'x/f', 'kept': '.hpc_mirror/conflicts/7/x/f', 'reason': 'changed in the outage window',
              'recovering': {'mtime_ns': OLD * 10 ** 9, 'size': 1}, 'incoming': None, 'time': time.time(),
              'host': 'h'}
    (area / 'conflicts.jsonl').write_text(json.dumps(record) + '\n{"cut')
    result = run(action='list', root=str(root), generation='7')
    assert result['unsettled'] == 1 and result['conflicts'][0]['path'] == 'x/f'
    assert run(action='list', root=str(root), generation='8')['unsettled'] == 0


def test_older_extras_wait_when_asked(run, tmp_path, trees):
    src, dst = trees
    report = differences(tmp_path, src, dst)[0]
    since = time.time() + 3600  # everything is older than this window, ctime included
    result = run(action='keep', root=str(dst), generation='4', since=since, differences=report, older_extras=False)
    assert sorted(result['older_extras_left']) == ['fo/late/l1', 'fo/late/sub/l2', 'fo/link-only-here',
                                                   'fo/renamed-old']
    assert [r['path'] for r in result['conflicts']] == ['fo/rewritten'] and (dst / 'fo' / 'late' / 'l1').exists()
