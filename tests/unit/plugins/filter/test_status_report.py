# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""status_report: rows of several hosts and the broker's queues, judged once."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import pytest

from ansible_collections.sr3.hpc_mirror.plugins.filter.status_report import status_report

D = 'primary_to_secondary'
COPY, TALLY, WINNOW = 'sarra/m_copy', 'shovel/m_tally', 'winnow/m_00'
FLOWS = [{'direction': D, 'configs': [TALLY, COPY, WINNOW]}]
LIMITS = {'max_lag': 60, 'max_retry': 10, 'max_queue': 100, 'max_metrics_age': 120}
NAMES = {'max_queue': 'status_max_queue'}


def row(config, host, running=1, expected=1, present=True, **more):
    base = {'config': config, 'host': host, 'direction': D, 'present': present, 'running': running,
            'expected': expected, 'missing': list(range(running + 1, expected + 1)),
            'state': 'running' if running == expected else 'partial', 'retry': 0, 'lag_mean': 1.0,
            'lag_max': 2.0, 'files': 3, 'bytes': 3000, 'last_copy_age': 5.0, 'metrics_age': 2.0,
            'instance_metrics_age': {}}
    base.update(more)
    return base


def queues(**depths):
    return [{'labels': {'direction': D},
             'queue_configs': {COPY: 'q_copy', TALLY: 'q_tally', WINNOW: 'q_w'},
             'queues': dict((q, {'exists': d is not None, 'messages': d}) for q, d in depths.items())}]


HEALTHY = [row(COPY, 'n1', 2, 2), row(COPY, 'n2', 2, 2), row(TALLY, 'n1'), row(WINNOW, 'n1'),
           row(WINNOW, 'n2', 0, 0, present=False)]


@pytest.mark.parametrize('rows, queue_results, problems', [
    (HEALTHY, queues(q_copy=0, q_tally=0, q_w=0), []),
    # copiers on two hosts share one queue: one problem, not two
    (HEALTHY, queues(q_copy=500, q_tally=0, q_w=0),
     ['queue q_copy: 500 messages queued, over status_max_queue=100']),
    (HEALTHY, queues(q_copy=0, q_tally=0, q_w=None), ['queue q_w does not exist on the broker']),
    # a config on no host
    (HEALTHY[:3], queues(q_copy=0, q_tally=0, q_w=0),
     ['winnow/m_00 (primary_to_secondary): its config is on no host; deploy the flow']),
    # a missing instance on one host names that host
    ([row(COPY, 'n1', 2, 2), row(COPY, 'n2', 1, 2)] + HEALTHY[2:], queues(q_copy=0, q_tally=0, q_w=0),
     ['sarra/m_copy on n2: 1 of 2 instances running (missing instance 02)']),
])
def test_problems(rows, queue_results, problems):
    report = status_report(rows, queue_results, FLOWS, LIMITS, NAMES)
    assert report['problems'] == problems
    assert report['healthy'] is (not problems)


def test_table_rows_follow_the_flow_order_and_skip_absent_configs():
    report = status_report(HEALTHY, queues(q_copy=7, q_tally=0, q_w=0), FLOWS, LIMITS, NAMES)
    configs = [r['config'] for r in report['rows']]
    assert configs == [TALLY, COPY, COPY, WINNOW]
    assert [r['queue_depth'] for r in report['rows'] if r['config'] == COPY] == [7, 7]
    assert len(report['lines']) == 5
    assert report['text'].splitlines() == report['lines']


def test_text_ends_with_the_problems():
    report = status_report(HEALTHY[:3], [], FLOWS, LIMITS, NAMES)
    assert report['text'].splitlines()[-1] == 'PROBLEM: ' + report['problems'][-1]


def test_configs_a_host_only_sees_through_a_shared_home():
    # n2 shares $HOME with n1: the tally's and winnow's files are there, n2 runs neither
    rows = HEALTHY[:4] + [row(TALLY, 'n2', 0, 0, assigned=False, state='idle'),
                          row(WINNOW, 'n2', 0, 0, assigned=False, state='idle')]
    report = status_report(rows, queues(q_copy=0, q_tally=0, q_w=0), FLOWS, LIMITS, NAMES)
    assert report['problems'] == []
    assert [(r['config'], r['host']) for r in report['rows']] == [
        (TALLY, 'n1'), (COPY, 'n1'), (COPY, 'n2'), (WINNOW, 'n1')]
    # a config present only where it is not meant to run is on no host
    rows = [r for r in rows if r['config'] != WINNOW or r['host'] != 'n1']
    report = status_report(rows, queues(q_copy=0, q_tally=0, q_w=0), FLOWS, LIMITS, NAMES)
    assert report['problems'] == ['winnow/m_00 (primary_to_secondary): its config is on no host; deploy the flow']
    # and one that runs there anyway is shown and named
    rows.append(row(WINNOW, 'n2', 1, 0, assigned=False, state='excess'))
    report = status_report(rows, queues(q_copy=0, q_tally=0, q_w=0), FLOWS, LIMITS, NAMES)
    assert 'winnow/m_00 on n2: 1 instances running, 0 expected (this host is not meant to run it)' \
        in report['problems']


STUCK = {'download': {'age': 1200.0, 'pub_time': 1.0, 'path': 'var/primary/never.txt', 'instance': 2,
                      'tries': 9, 'file': 'diskqueue_work_retry_02'}, 'post': None}


def test_stuck_work_fails_naming_config_host_age_and_path():
    rows = [row(COPY, 'n1', 2, 2), row(COPY, 'n2', 2, 2, retry=1, retry_oldest=STUCK, retry_oldest_age=1200.0)] \
        + HEALTHY[2:]
    report = status_report(rows, queues(q_copy=0, q_tally=0, q_w=0), FLOWS, dict(LIMITS, max_retry_age=900),
                           {'max_retry_age': 'status_max_retry_age'})
    assert report['problems'] == [
        'sarra/m_copy on n2: a copy has waited for retry for 20m (over status_max_retry_age=900 s), '
        'the oldest: var/primary/never.txt (instance 02, sr3 retry count 9)']
    assert report['healthy'] is False
    assert '20m' in [line for line in report['lines'] if ' n2 ' in line][0]
    report = status_report(rows, queues(q_copy=0, q_tally=0, q_w=0), FLOWS, dict(LIMITS, max_retry_age=1800))
    assert report['healthy'] is True


def test_rejections_are_warnings_summed_per_config():
    rows = [row(COPY, 'n1', 2, 2, rejected={'foreign_base_url': 2, 'tree_top': 0}, unsafe_names=0,
                rejected_total=2, counters_since=1796630400.25),
            row(COPY, 'n2', 2, 2, rejected={'foreign_base_url': 1, 'path_outside_tree': 3}, unsafe_names=1,
                rejected_total=4, counters_since=None)] + HEALTHY[2:]
    report = status_report(rows, queues(q_copy=0, q_tally=0, q_w=0), FLOWS, LIMITS, NAMES)
    assert report['healthy'] is True and report['problems'] == []
    assert report['warnings'] == [
        'sarra/m_copy on n1: 2 messages rejected: foreign_base_url since 2026-12-07 08:00:00 UTC (see the copier log)',
        'sarra/m_copy on n2: 1 message rejected: foreign_base_url (see the copier log)',
        'sarra/m_copy on n2: 3 messages rejected: path_outside_tree (see the copier log)',
        'sarra/m_copy on n2: 1 name could not be carried (unsafe_names) (see the copier log)']
    assert report['rejected'] == [{'direction': D, 'config': COPY, 'rejected_total': 6, 'unsafe_names': 1,
                                   'rejected': {'foreign_base_url': 3, 'tree_top': 0, 'path_outside_tree': 3}}]
    text = report['text'].splitlines()
    assert text[:len(report['lines'])] == report['lines']
    assert text[len(report['lines']) + 1:] == ['WARNING: ' + w for w in report['warnings']]
    # the table's last column is the total per row
    assert [line.split()[-1] for line in report['lines'] if COPY in line] == ['2', '4']
    # with a problem too, the problems come last
    report = status_report(rows[:1] + [row(COPY, 'n2', 1, 2)] + HEALTHY[2:],
                           queues(q_copy=0, q_tally=0, q_w=0), FLOWS, LIMITS, NAMES)
    assert report['text'].splitlines()[-2].startswith('WARNING: ')
    assert report['text'].splitlines()[-1].startswith('PROBLEM: sarra/m_copy on n2: 1 of 2')
