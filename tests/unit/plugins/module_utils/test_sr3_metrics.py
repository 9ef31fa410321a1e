# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Metrics parsing and health decisions, on metrics files captured from real sr3 3.3.1 runs.

tests/unit/fixtures/sr3_metrics/<capture>/ holds the metrics directory of the
molecule ``local`` flow (2 winnows, 2 copiers, tally, watch) and the files'
mtimes at capture time (capture.json):

* ``plain``: 31 files and a 3 MB file copied, one copy blocked by a
  read-only destination directory (1 message in retry);
* ``killed``: 12 s after copier instance 02 was killed with SIGKILL.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os
import time

import pytest

from ansible_collections.sr3.hpc_mirror.plugins.module_utils import sr3_metrics as m

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        'fixtures', 'sr3_metrics')
FLOW = 'mirror_primary_to_secondary'
COPY = 'sarra/%s_copy' % FLOW
TALLY = 'shovel/%s_tally' % FLOW
WINNOW = 'winnow/%s_00' % FLOW
WATCH = 'watch/%s' % FLOW


def capture(name):
    """{file name: (data, mtime)} and the capture's 'now' (2 s after the newest write)."""
    directory = os.path.join(FIXTURES, name)
    with open(os.path.join(directory, 'capture.json')) as handle:
        mtimes = json.load(handle)['mtimes']
    files = {}
    for fname, mtime in mtimes.items():
        with open(os.path.join(directory, fname)) as handle:
            files[fname] = (json.load(handle), mtime)
    return files, max(mtimes.values()) + 2


def instances(files, config):
    component, name = config.split('/')
    prefix = '%s_%s_' % (component, name)
    return dict((int(f[len(prefix):len(prefix) + 2]), v) for f, v in files.items()
                if f.startswith(prefix) and len(f) == len(prefix) + 7)


def row_for(capture_name, config, expected, live, started_ago=600):
    files, now = capture(capture_name)
    metrics = instances(files, config)
    pids = dict((i, 1000 + i) for i in live)
    return m.config_status(config, True, expected, pids, dict((i, now - started_ago) for i in live),
                           metrics, now), now


def test_sr3_time():
    assert m.sr3_time('20261124T024128.278430223') == pytest.approx(1795488088.2784302)
    assert m.sr3_time('20261124T024128') == 1795488088
    assert m.sr3_time(12.5) == 12.5
    for bad in (None, '', 'yesterday', '2026-11-24T02:41:28'):
        assert m.sr3_time(bad) is None


# (capture, config, expected, live instances) -> fields of the row
@pytest.mark.parametrize('capture_name, config, expected, live, want', [
    ('plain', COPY, 2, [1, 2], dict(state='running', running=2, missing=[], retry=1,
                                    files=34, bytes=3465000, lag_max=11.28)),
    ('plain', TALLY, 1, [1], dict(state='running', retry=0, files=31, bytes=3465000)),
    ('plain', WINNOW, 1, [1], dict(state='running', retry=0, files=0, bytes=0, last_copy=None,
                                   lag_max=4.25)),
    ('plain', WATCH, 1, [1], dict(state='running', retry=0, lag_mean=0.0)),
    # copier 02 killed: only instance 01 counts; its last download stays the latest copy
    ('killed', COPY, 2, [1], dict(state='partial', running=1, missing=[2], retry=1)),
    ('killed', COPY, 2, [], dict(state='stopped', running=0, missing=[1, 2], retry=None,
                                 files=None, lag_mean=None, metrics_age=None)),
])
def test_rows_from_real_metrics(capture_name, config, expected, live, want):
    row, dummy = row_for(capture_name, config, expected, live)
    got = dict((k, row[k]) for k in want)
    for key, value in want.items():
        if isinstance(value, float):
            assert got[key] == pytest.approx(value, abs=0.01), key
        else:
            assert got[key] == value, key


def test_lag_mean_is_weighted_over_instances():
    files, now = capture('plain')
    data = instances(files, COPY)
    total = sum(d['log']['lagTotal'] for d, t in data.values())
    count = sum(d['log']['lagMessageCount'] for d, t in data.values())
    row = m.config_status(COPY, True, 2, {1: 11, 2: 12}, {}, data, now)
    assert row['lag_mean'] == pytest.approx(total / count, abs=0.01)


def test_last_copy_of_the_copier_and_the_tally():
    files, now = capture('plain')
    copy = m.config_status(COPY, True, 2, {1: 11, 2: 12}, {}, instances(files, COPY), now)
    tally = m.config_status(TALLY, True, 1, {1: 13}, {}, instances(files, TALLY), now)
    assert copy['last_copy'] == m.sr3_time('20261124T024128.278430223')
    assert tally['last_copy'] == pytest.approx(1795488098.2588446)
    assert 0 < tally['last_copy_age'] < 60


def test_metrics_age_of_a_dead_and_a_fresh_instance():
    files, now = capture('killed')
    data = instances(files, COPY)
    # a process with pid file 02 that still ran (pid reused, say) would show a 24 s old file
    row = m.config_status(COPY, True, 2, {1: 11, 2: 12}, {1: now - 600, 2: now - 600}, data, now)
    assert row['instance_metrics_age'][1] < 10
    assert row['instance_metrics_age'][2] > 20
    assert row['metrics_age'] == row['instance_metrics_age'][2]


def test_metrics_older_than_the_instance_are_not_used():
    files, now = capture('plain')
    # instance restarted after its metrics file was written: counts from its start
    row = m.config_status(COPY, True, 2, {1: 11, 2: 12}, {1: now - 600, 2: now - 1}, instances(files, COPY), now)
    assert row['instance_metrics_age'][2] == pytest.approx(1, abs=0.1)
    assert row['files'] == files['sarra_%s_copy_01.json' % FLOW][0]['flow']['transferRxFiles']


def test_no_metrics_yet_counts_from_the_start():
    row = m.config_status(COPY, True, 1, {1: 11}, {1: 1000.0}, {}, 1030.0)
    assert row['instance_metrics_age'] == {1: 30.0}
    assert row['retry'] is None


def test_unreadable_metrics(tmp_path):
    half = tmp_path / 'x_01.json'
    half.write_text('{"flow": {"transferRxFiles"')
    assert m.read_metrics(str(half)) == (None, None)
    assert m.read_metrics(str(tmp_path / 'missing.json')) == (None, None)
    whole = tmp_path / 'x_02.json'
    whole.write_text('{"flow": {}}')
    data, mtime = m.read_metrics(str(whole))
    assert data == {'flow': {}} and mtime > 0


@pytest.mark.parametrize('present, expected, running, label', [
    (True, 2, 2, 'running'),
    (True, 2, 1, 'partial'),
    (True, 2, 0, 'stopped'),
    (True, 2, 3, 'excess'),
    (True, 0, 0, 'idle'),
    (False, 0, 0, 'stopped'),
    (False, 0, 1, 'orphaned'),
])
def test_run_label(present, expected, running, label):
    assert m.run_label(present, expected, running) == label


LIMITS = {'max_lag': 60, 'max_retry': 0, 'max_queue': 100, 'max_metrics_age': 20}
NAMES = {'max_lag': 'status_max_lag', 'max_retry': 'status_max_retry',
         'max_queue': 'status_max_queue', 'max_metrics_age': 'status_max_metrics_age'}


# (capture, config, expected, live, row overrides, limits) -> expected problem fragments
@pytest.mark.parametrize('capture_name, config, expected, live, change, limits, fragments', [
    # healthy: within every limit
    ('plain', TALLY, 1, [1], {}, LIMITS, []),
    ('plain', WINNOW, 1, [1], {}, LIMITS, []),
    # the copier of the plain capture had one blocked copy
    ('plain', COPY, 2, [1, 2], {}, LIMITS,
     ['sarra/%s_copy: 1 messages waiting for retry, over status_max_retry=0' % FLOW]),
    ('plain', COPY, 2, [1, 2], {}, dict(LIMITS, max_retry=5), []),
    # a killed instance is named
    ('killed', COPY, 2, [1], {}, dict(LIMITS, max_retry=None),
     ['sarra/%s_copy: 1 of 2 instances running (missing instance 02)' % FLOW]),
    ('killed', COPY, 2, [], {}, LIMITS, ['0 of 2 instances running (missing instance 01, 02)']),
    ('plain', COPY, 2, [1, 2, 3], {}, dict(LIMITS, max_retry=None), ['3 instances running, 2 expected']),
    # lag: the mean decides, the max is shown
    ('plain', COPY, 2, [1, 2], {}, dict(LIMITS, max_retry=None, max_lag=5),
     ['mean lag 11.2 s (max 11.3 s) over status_max_lag=5 s']),
    ('plain', COPY, 2, [1, 2], {}, dict(LIMITS, max_retry=None, max_lag=None), []),
    # queue depth comes from the broker
    ('plain', TALLY, 1, [1], {'queue': 'q_x', 'queue_depth': 101}, LIMITS,
     ['101 messages queued in q_x, over status_max_queue=100']),
    ('plain', TALLY, 1, [1], {'queue': 'q_x', 'queue_depth': 100}, LIMITS, []),
    # hung: the instance stopped writing metrics
    ('plain', TALLY, 1, [1], {'instance_metrics_age': {1: 300.0}}, LIMITS,
     ['instance 01 wrote no metrics for 300 s (status_max_metrics_age=20 s): hung?']),
    # no limits: only missing instances count
    ('plain', COPY, 2, [1], {}, {}, ['1 of 2 instances running (missing instance 02)']),
])
def test_problems(capture_name, config, expected, live, change, limits, fragments):
    row, dummy = row_for(capture_name, config, expected, live, started_ago=1)
    row['instance_metrics_age'] = dict((i, 1.0) for i in live)  # fresh unless the case says so
    row.update(change)
    found = m.problems(row, limits, NAMES)
    assert len(found) == len(fragments), found
    for fragment, problem in zip(fragments, found):
        assert fragment in problem


def test_problem_names_the_host():
    row, dummy = row_for('killed', COPY, 2, [1])
    row['host'] = 'hpc2n1'
    assert m.problems(row, {})[0].startswith('sarra/%s_copy on hpc2n1: ' % FLOW)


def test_absent_config_is_no_problem_unless_it_runs():
    row = m.config_status(COPY, False, 0, {}, {}, {}, 100.0)
    assert m.problems(row, LIMITS) == []
    row = m.config_status(COPY, False, 0, {1: 11}, {1: 99.0}, {}, 100.0)
    assert 'its config file is gone' in m.problems(row, LIMITS)[0]


@pytest.mark.parametrize('info, limits, fragment', [
    ({'exists': False, 'messages': None}, LIMITS, 'does not exist'),
    ({'exists': True, 'messages': 500}, LIMITS, '500 messages queued, over max_queue=100'),
    ({'exists': True, 'messages': 5}, LIMITS, None),
    ({'exists': True, 'messages': 500}, {}, None),
])
def test_queue_problems(info, limits, fragment):
    found = m.queue_problems('q_x', info, limits)
    assert found == [] if fragment is None else fragment in found[0]


def test_queue_info_from_the_management_api():
    with open(os.path.join(FIXTURES, 'api_queue.json')) as handle:
        answer = json.load(handle)
    info = m.queue_info(answer)
    assert info['exists'] is True
    assert isinstance(info['messages'], int)
    assert info['messages'] == info['ready'] + info['unacknowledged']
    assert m.queue_info({})['messages'] is None


def test_table_is_aligned_and_complete():
    files, now = capture('killed')
    rows = []
    for config, expected, live in ((COPY, 2, {1: 11}), (TALLY, 1, {1: 12})):
        row = m.config_status(config, True, expected, live, {}, instances(files, config), now)
        row.update(host='hpc-local', direction='primary_to_secondary')
        rows.append(row)
    lines = m.table_lines(rows)
    assert len(lines) == 3
    assert lines[0].split()[:4] == ['direction', 'host', 'config', 'state']
    assert 'partial' in lines[1] and '1/2' in lines[1]
    assert lines[2].index('running') == lines[1].index('partial')
    assert '31 f 3.5 MB' in lines[2]


@pytest.mark.parametrize('value, text', [
    (None, '-'), (0.5, '0.5s'), (99, '99.0s'), (150, '2m'), (7200, '2h'), (400000, '5d')])
def test_human_seconds(value, text):
    assert m.human_seconds(value) == text


@pytest.mark.parametrize('value, text', [(None, '-'), (999, '999 B'), (3465000, '3.5 MB'), (2.5e9, '2.5 GB')])
def test_human_size(value, text):
    assert m.human_size(value) == text


@pytest.mark.parametrize('hostdir', [None, 'hpc2n1'])
def test_metrics_paths_are_those_sarracenia_writes(tmp_path, monkeypatch, hostdir):
    """statehost adds the host level to the metrics directory too (sarracenia's own function)."""
    sarracenia_config = pytest.importorskip('sarracenia.config')
    from ansible_collections.sr3.hpc_mirror.plugins.module_utils import sr3_state

    monkeypatch.setenv('HOME', str(tmp_path))
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / '.cache'))
    cache = sr3_state.default_user_dirs()[1]
    theirs = sarracenia_config.get_metrics_filename(hostdir, 'sarra', FLOW + '_copy', 2)
    assert sr3_state.metrics_path(cache, 'sarra', FLOW + '_copy', 2, hostdir) == theirs
    os.makedirs(os.path.dirname(theirs))
    for name in (theirs, theirs + '.20261124', theirs.replace('_copy_02', '_copy_more_01')):
        with open(name, 'w') as handle:
            handle.write('{}')
    assert sr3_state.metrics_files(cache, 'sarra', FLOW + '_copy', hostdir) == {2: theirs}
    assert sr3_state.metrics_leftovers(cache, 'sarra', FLOW + '_copy', hostdir) == [theirs, theirs + '.20261124']


# --------------------------------------------------------------------------
# retry queues: the oldest message, read from the head of sr3's queue files
# --------------------------------------------------------------------------

def queue_line(pub_time, rel_path, tries=1):
    """One line as sr3 3.3.1's DiskQueue writes it (jsonpickle of a sarracenia.Message)."""
    return json.dumps({'py/object': 'sarracenia.Message', '_format': 'v03',
                       '_deleteOnPost': {'py/set': ['_isRetry', 'new_dir', 'new_file']},
                       'pubTime': pub_time, 'baseUrl': 'file:/', 'relPath': rel_path,
                       'new_dir': '/s', 'new_file': os.path.basename(rel_path), '_isRetry': tries,
                       '__dict__': {}}) + '\n'


def write_queue(path, lines):
    with open(str(path), 'w') as handle:
        handle.writelines(lines)
    return str(path)


def test_oldest_retry_per_kind_across_instances_and_files(tmp_path):
    now = m.sr3_time('20261207T151000')
    files = [
        ('download', 1, write_queue(tmp_path / 'diskqueue_work_retry_01', [
            queue_line('20261207T145000.5', 'p/a.txt', 3), queue_line('20261207T145500', 'p/b.txt')])),
        # a newer failure in the .new file, and an older one of instance 02
        ('download', 1, write_queue(tmp_path / 'diskqueue_work_retry_01.new', [
            queue_line('20261207T150900', 'p/c.txt')])),
        ('download', 2, write_queue(tmp_path / 'diskqueue_work_retry_02.new', [
            queue_line('20261207T144000', 'p/d\u00e9j\u00e0.txt', 5)])),
        ('post', 1, write_queue(tmp_path / 'diskqueue_post_retry_001.new', [
            queue_line('20261207T150500', 'p/caf\u00e9.txt')])),
    ]
    oldest = m.oldest_retry(files, now)
    assert oldest['download'] == {'age': 1800.0, 'pub_time': now - 1800, 'path': 'p/d\u00e9j\u00e0.txt',
                                  'instance': 2, 'tries': 5, 'file': 'diskqueue_work_retry_02.new'}
    assert (oldest['post']['age'], oldest['post']['path'], oldest['post']['instance']) == (
        300.0, 'p/caf\u00e9.txt', 1)
    assert m.oldest_retry([], now) == {'download': None, 'post': None}
    # a queue consumed (and removed by sr3) meanwhile is simply empty
    assert m.oldest_retry([('post', 1, str(tmp_path / 'gone'))], now) == {'download': None, 'post': None}


def test_retry_queue_head_skips_what_sr3_skips(tmp_path):
    path = write_queue(tmp_path / 'q', [
        'not json\n', '[1, 2]\n', queue_line('20261207T145000', 'p/ok.txt'),
        queue_line('20261207T140000', 'p/being_appended.txt')[:40]])  # no newline yet
    assert [x['relPath'] for x in m.retry_queue_head(path)] == ['p/ok.txt']
    # messages without a usable pubTime have no age
    write_queue(tmp_path / 'r', [queue_line('garbage', 'p/x'), queue_line('20261207T145000', 'p/y')])
    assert m.oldest_retry([('download', 1, str(tmp_path / 'r'))], m.sr3_time('20261207T150000'))[
        'download']['path'] == 'p/y'


def test_a_huge_retry_queue_is_read_only_at_its_head(tmp_path):
    """A queue of 100 000 lines (30 MB); then grown (sparse) to 8 GiB, the
    size of tens of millions of lines: only RETRY_HEAD_BYTES are read."""
    line = queue_line('20261207T150000', 'p/later.txt')
    path = str(tmp_path / 'diskqueue_work_retry_01')
    with open(path, 'w') as handle:
        handle.write(queue_line('20261207T120000', 'p/first.txt', 40))
        handle.write(line * 100000)
    assert os.path.getsize(path) > 100 * m.RETRY_HEAD_BYTES
    for size in (None, 8 << 30):
        if size:
            os.truncate(path, size)
        started = time.time()
        oldest = m.oldest_retry([('download', 1, path)], m.sr3_time('20261207T151000'))['download']
        assert time.time() - started < 1.0
        assert (oldest['path'], oldest['age'], oldest['tries']) == ('p/first.txt', 11400.0, 40)
        assert len(m.retry_queue_head(path)) < m.RETRY_HEAD_BYTES // len(line) + 2


@pytest.mark.parametrize('text, shown', [
    ('p/caf\u00e9.txt', 'p/caf\u00e9.txt'),
    # a Latin-1 name as os.fsdecode gives it (surrogate escapes)
    (b'p/caf\xe9.txt'.decode('utf-8', 'surrogateescape'), 'p/caf\\xe9.txt'),
    ('p/\ud800x', 'p/\\ud800x'),
    ('p/a\nb\tc\x7f', 'p/a\\x0ab\\x09c\\x7f'),
    (None, None),
])
def test_printable_paths(text, shown):
    assert m.printable(text) == shown
    if shown is not None:
        json.dumps(shown).encode('utf-8')


def test_the_oldest_retry_is_in_the_row_and_judged():
    now = 2000.0
    retry = {'download': {'age': 1000.0, 'pub_time': 1000.0, 'path': 'p/never.txt', 'instance': 1,
                          'tries': 7, 'file': 'diskqueue_work_retry_01'},
             'post': {'age': 30.0, 'pub_time': 1970.0, 'path': 'p/caf\u00e9.txt', 'instance': 1,
                      'tries': 1, 'file': 'diskqueue_post_retry_001.new'}}
    row = m.config_status(COPY, True, 1, {1: 11}, {1: 0.0}, {}, now, retry_oldest=retry)
    row['host'] = 'hpc2n1'
    assert row['retry_oldest_age'] == 1000.0
    limits = dict(LIMITS, max_retry=None, max_metrics_age=None, max_retry_age=900)
    assert m.problems(row, limits, dict(NAMES, max_retry_age='status_max_retry_age')) == [
        'sarra/%s_copy on hpc2n1: a copy has waited for retry for 17m (over status_max_retry_age=900 s),'
        ' the oldest: p/never.txt (instance 01, sr3 retry count 7)' % FLOW]
    limits['max_retry_age'] = 20
    found = m.problems(row, limits)
    assert len(found) == 2
    assert found[1] == ('sarra/%s_copy on hpc2n1: posts keep failing: a post has waited for retry for 30.0s'
                        ' (over max_retry_age=20 s), the oldest: p/caf\u00e9.txt (instance 01, sr3 retry count 1)'
                        % FLOW)
    limits['max_retry_age'] = None
    assert m.problems(row, limits) == []
    # nothing waiting: nothing to judge, and the table shows '-'
    row = m.config_status(COPY, True, 1, {1: 11}, {1: 0.0}, {}, now)
    assert row['retry_oldest'] == {'download': None, 'post': None} and row['retry_oldest_age'] is None
    assert m.problems(row, {'max_retry_age': 0}) == []


# --------------------------------------------------------------------------
# the copier's rejection counters
# --------------------------------------------------------------------------

COUNTERS = os.path.join(FIXTURES, '..', 'copier_counters')


def counter_paths():
    return [os.path.join(COUNTERS, 'hpc_mirror_copier_%02d.json' % i) for i in (1, 2)]


def test_read_counters_fixture():
    first = m.read_counters(counter_paths()[0])
    assert first == {'rejected': {'foreign_base_url': 2, 'path_outside_tree': 1}, 'unsafe_names': 0,
                     'since': 1796630400.25, 'updated': 1796634000.5}


@pytest.mark.parametrize('text, expected', [
    ('{"rejected": {"a": -1, "b": "x", "c": true, "d": 4}, "unsafe_names": 2.5}',
     {'rejected': {'d': 4}, 'unsafe_names': 0, 'since': None, 'updated': None}),
    ('{}', {'rejected': {}, 'unsafe_names': 0, 'since': None, 'updated': None}),
    ('{"rejected": [1]}', None),
    ('[]', None),
    ('{"rejected": {', None),
])
def test_read_counters_tolerates_junk(tmp_path, text, expected):
    path = tmp_path / 'hpc_mirror_copier_01.json'
    path.write_text(text)
    assert m.read_counters(str(path)) == expected
    assert m.read_counters(str(tmp_path / 'missing.json')) is None


def test_counters_are_summed_per_config_and_warned_per_reason():
    counters = [m.read_counters(p) for p in counter_paths()] + [None]
    row = m.config_status(COPY, True, 2, {1: 11, 2: 12}, {}, {}, 1796634100.0, counters=counters)
    assert row['rejected'] == {'foreign_base_url': 2, 'path_outside_tree': 4, 'symlinked_parent': 0,
                               'tree_top': 1}
    assert (row['rejected_total'], row['unsafe_names']) == (7, 1)
    assert (row['counters_since'], row['counters_updated']) == (1796630400.25, 1796634012.0)
    row['host'] = 'hpc2n1'
    assert m.rejection_warnings(row) == [
        'sarra/%s_copy on hpc2n1: 2 messages rejected: foreign_base_url since 2026-12-07 08:00:00 UTC'
        ' (see the copier log)' % FLOW,
        'sarra/%s_copy on hpc2n1: 4 messages rejected: path_outside_tree since 2026-12-07 08:00:00 UTC'
        ' (see the copier log)' % FLOW,
        'sarra/%s_copy on hpc2n1: 1 message rejected: tree_top since 2026-12-07 08:00:00 UTC'
        ' (see the copier log)' % FLOW,
        'sarra/%s_copy on hpc2n1: 1 name could not be carried (unsafe_names) since 2026-12-07 08:00:00 UTC'
        ' (see the copier log)' % FLOW,
    ]
    # rejections are no health problem
    assert m.problems(row, dict(LIMITS, max_retry_age=0)) == []
    # a config without counter files (not a copier) has none, and no warning
    row = m.config_status(TALLY, True, 1, {1: 11}, {}, {}, 1796634100.0)
    assert (row['rejected'], row['rejected_total'], row['unsafe_names']) == (None, None, None)
    assert m.rejection_warnings(row) == []


def test_table_shows_the_oldest_retry_and_the_rejections():
    retry = {'download': {'age': 1000.0, 'pub_time': 1.0, 'path': 'p', 'instance': 1, 'tries': 1, 'file': 'f'},
             'post': None}
    rows = [m.config_status(COPY, True, 1, {1: 11}, {}, {}, 1796634100.0, retry_oldest=retry,
                            counters=[m.read_counters(counter_paths()[0])]),
            m.config_status(TALLY, True, 1, {1: 11}, {}, {}, 1796634100.0)]
    lines = m.table_lines(rows)
    header = lines[0]
    assert 'oldest retry' in header and header.endswith('rejected')
    at = header.index('oldest retry')
    assert lines[1][at:].split()[0] == '17m' and lines[2][at:].split()[0] == '-'
    assert lines[1].split()[-1] == '3' and lines[2].split()[-1] == '-'
