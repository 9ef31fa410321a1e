# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""sr3_status on a home directory laid out as sr3 leaves it (no sr3 running).

Running flows are checked for real in molecule/local/tests/test_ops_lifecycle.py.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import functools
import os
import shutil
import subprocess
import sys
import time

import pytest

from ansible_collections.sr3.hpc_mirror.plugins.module_utils import sr3_state
from ansible_collections.sr3.hpc_mirror.plugins.modules import sr3_status

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        'fixtures', 'sr3_metrics')
FLOW = 'mirror_primary_to_secondary'
COPY = 'sarra/%s_copy' % FLOW
TALLY = 'shovel/%s_tally' % FLOW


def wait_until_exec(pid, argument, timeout=5):
    """Until the child has exec'd, /proc/<pid>/cmdline is empty or still the parent's."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if argument in sr3_state.read_cmdline(pid):
            return
        time.sleep(0.01)
    raise AssertionError('process %d never ran with %s in its arguments' % (pid, argument))


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv('HOME', str(tmp_path))
    monkeypatch.delenv('XDG_CONFIG_HOME', raising=False)
    monkeypatch.delenv('XDG_CACHE_HOME', raising=False)
    config = tmp_path / '.config' / 'sr3'
    for name, text in ((COPY, 'instances 2\n'), (TALLY, 'instances 1\n')):
        path = config / (name + '.conf')
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    metrics = tmp_path / '.cache' / 'sr3' / 'metrics'
    shutil.copytree(os.path.join(FIXTURES, 'plain'), str(metrics))
    # pid files of instances that are gone (pid 0 never names a process of ours)
    state = tmp_path / '.cache' / 'sr3' / 'sarra' / (FLOW + '_copy')
    state.mkdir(parents=True)
    (state / ('sarra_%s_copy_01.pid' % FLOW)).write_text('0\n')
    return tmp_path


@pytest.fixture
def run(run_module, home):
    return functools.partial(run_module, sr3_status)


def test_stopped_flow_is_reported_with_missing_instances(run):
    result = run(configs=[COPY, TALLY, 'winnow/%s_00' % FLOW], labels={'host': 'h1'}, max_retry=0)
    assert not result.get('failed'), result
    assert result['changed'] is False
    copy = result['configs'][COPY]
    assert (copy['present'], copy['state'], copy['running'], copy['expected'], copy['missing']) == (
        True, 'stopped', 0, 2, [1, 2])
    # metrics of instances that do not run are not used
    assert copy['retry'] is None and copy['files'] is None
    assert copy['host'] == 'h1'
    winnow = result['configs']['winnow/%s_00' % FLOW]
    assert winnow['present'] is False and winnow['expected'] == 0
    assert result['healthy'] is False
    assert result['problems'] == [
        '%s: 0 of 2 instances running (missing instance 01, 02)' % COPY,
        '%s: 0 of 1 instances running (missing instance 01)' % TALLY,
    ]


def test_limit_names_and_labels_come_back(run):
    result = run(configs=[TALLY], labels={'direction': 'd'}, limit_names={'max_lag': 'status_max_lag'})
    assert result['labels'] == {'direction': 'd'}
    assert result['configs'][TALLY]['direction'] == 'd'


@pytest.mark.parametrize('args, fragment', [
    ({'configs': ['nope']}, 'malformed config names'),
    ({'queues': {COPY: 'q_x'}}, 'queues needs broker_api_url'),
    ({'queues': {'x': 'q_x'}, 'broker_api_url': 'http://127.0.0.1:9'}, 'malformed config names'),
    ({'queues': {COPY: 'q_x'}, 'broker_api_url': 'http://127.0.0.1:9', 'timeout': 2}, 'management API'),
])
def test_failures(run, args, fragment):
    result = run(**args)
    assert result.get('failed') is True
    assert fragment in result['msg']


def test_configs_of_other_nodes_sharing_home_are_idle_unless_they_run(run, home):
    # hpc2n2 shares $HOME with hpc2n1, which runs the tally: its file is here too
    result = run(configs=[COPY, TALLY], assigned=[COPY], labels={'host': 'hpc2n2'})
    tally = result['configs'][TALLY]
    assert (tally['present'], tally['assigned'], tally['state'], tally['expected'], tally['missing']) == (
        True, False, 'idle', 0, [])
    assert result['configs'][COPY]['assigned'] is True
    assert result['problems'] == ['%s: 0 of 2 instances running (missing instance 01, 02)' % COPY]

    # a tally instance started here anyway is a problem
    state = home / '.cache' / 'sr3' / 'shovel' / (FLOW + '_tally')
    state.mkdir(parents=True)
    proc = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', TALLY])
    try:
        wait_until_exec(proc.pid, TALLY)
        (state / ('shovel_%s_tally_01.pid' % FLOW)).write_text(str(proc.pid))
        result = run(configs=[COPY, TALLY], assigned=[COPY], labels={'host': 'hpc2n2'})
    finally:
        proc.kill()
        proc.wait()
    tally = result['configs'][TALLY]
    assert (tally['state'], tally['running'], tally['expected']) == ('excess', 1, 0)
    assert '%s: 1 instances running, 0 expected (this host is not meant to run it)' % TALLY \
        in result['problems']


COUNTERS = os.path.join(os.path.dirname(FIXTURES), 'copier_counters')


def retry_line(pub_time, rel_path, tries):
    return ('{"py/object": "sarracenia.Message", "_format": "v03", "_deleteOnPost": {"py/set": ["_isRetry"]}, '
            '"pubTime": "%s", "baseUrl": "file:/", "relPath": "%s", "_isRetry": %d, "__dict__": {}}\n'
            % (pub_time, rel_path, tries))


def warning_texts(result):
    """ansible-core 2.19 returns warnings as structured events, older ones as text."""
    return [w['event']['msg'] if isinstance(w, dict) else w for w in result.get('warnings', [])]


def test_stuck_retries_and_rejections(run, home):
    state = home / '.cache' / 'sr3' / 'sarra' / (FLOW + '_copy')
    stamp = time.strftime('%Y%m%dT%H%M%S', time.gmtime(time.time() - 1200))
    (state / 'diskqueue_work_retry_01').write_text(retry_line(stamp + '.5', 'var/primary/never.txt', 9))
    (state / 'diskqueue_post_retry_001.new').write_text(retry_line(stamp, 'var/primary/caf\\u00e9.txt', 2))
    for name in ('hpc_mirror_copier_01.json', 'hpc_mirror_copier_02.json'):
        shutil.copy(os.path.join(COUNTERS, name), str(state / name))
    result = run(configs=[COPY, TALLY], max_retry_age=900, limit_names={'max_retry_age': 'status_max_retry_age'},
                 labels={'host': 'h1'}, _ansible_check_mode=True)
    copy = result['configs'][COPY]
    download = copy['retry_oldest']['download']
    assert (download['path'], download['instance'], download['tries'], download['file']) == (
        'var/primary/never.txt', 1, 9, 'diskqueue_work_retry_01')
    assert 1199 < download['age'] < 1260
    assert copy['retry_oldest']['post']['path'] == u'var/primary/caf\u00e9.txt'
    assert copy['retry_oldest_age'] == copy['retry_oldest']['post']['age']
    stuck = [p for p in result['problems'] if 'waited for retry' in p]
    assert len(stuck) == 2, result['problems']
    assert stuck[0].startswith('%s: a copy has waited for retry for 20m (over status_max_retry_age=900 s), '
                               'the oldest: var/primary/never.txt (instance 01, sr3 retry count 9)' % COPY)
    assert stuck[1].startswith('%s: posts keep failing: a post has waited' % COPY)
    # the rejections: summed, warned, no problem
    assert copy['rejected'] == {'foreign_base_url': 2, 'path_outside_tree': 4, 'symlinked_parent': 0, 'tree_top': 1}
    assert (copy['rejected_total'], copy['unsafe_names']) == (7, 1)
    assert not [p for p in result['problems'] if 'rejected' in p]
    assert len(result['rejections']) == 4
    assert result['rejections'][0].startswith('%s: 2 messages rejected: foreign_base_url since ' % COPY)
    # (other modules' warnings of the same pytest session may precede them)
    assert warning_texts(result)[-4:] == result['rejections']
    tally = result['configs'][TALLY]
    assert (tally['retry_oldest'], tally['rejected']) == ({'download': None, 'post': None}, None)
    # nothing written, nothing removed: status only reads
    assert sorted(os.listdir(str(state))) == sorted([
        'diskqueue_post_retry_001.new', 'diskqueue_work_retry_01', 'hpc_mirror_copier_01.json',
        'hpc_mirror_copier_02.json', 'sarra_%s_copy_01.pid' % FLOW])

    # under the threshold: no problem, still shown
    result = run(configs=[COPY], max_retry_age=3600)
    assert not [p for p in result['problems'] if 'waited for retry' in p]
    assert result['configs'][COPY]['retry_oldest_age'] > 1199


def test_unreadable_counters_are_a_warning(run, home):
    state = home / '.cache' / 'sr3' / 'sarra' / (FLOW + '_copy')
    (state / 'hpc_mirror_copier_01.json').write_text('{"rejected": ')
    result = run(configs=[COPY])
    assert any('copier counters' in w and 'unreadable' in w for w in warning_texts(result))
    assert result['configs'][COPY]['rejected'] is None
