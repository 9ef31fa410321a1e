# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One status report for a whole deployment from the sr3_status results of every host."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r"""
name: status_report
short_description: Table and health problems of a mirror deployment from sr3_status results
version_added: 0.2.0
description:
  - Joins the per host rows of M(sr3.hpc_mirror.sr3_status) with the queue depths read on
    the broker, judges them against the thresholds and formats one compact table.
  - A queue is judged once, however many hosts consume from it; a daemon config of a flow
    that is on no host is a problem.
  - Messages the copiers rejected are no problem of the flow's health but are never silent;
    each non-zero count, per config, host and reason, is a warning line after the table, and
    the counts are summed per config and reason over the hosts.
positional: queue_results, flows, limits, names
options:
  _input:
    description: Rows, each the value of one RV(sr3.hpc_mirror.sr3_status#module:configs) entry
      with the keys C(host) and C(direction) added (the module's O(sr3.hpc_mirror.sr3_status#module:labels)).
    type: list
    elements: dict
    required: true
  queue_results:
    description: Results of sr3_status run with O(sr3.hpc_mirror.sr3_status#module:queues), each with
      C(labels.direction), C(queue_configs) and C(queues).
    type: list
    elements: dict
    default: []
  flows:
    description: Per direction the daemon configs that must run somewhere, as C({direction, configs}).
    type: list
    elements: dict
    default: []
  limits:
    description: Thresholds C(max_lag), C(max_retry), C(max_queue), C(max_metrics_age), C(max_retry_age);
      null skips one.
    type: dict
    default: {}
  names:
    description: The variable names of the thresholds, for the messages.
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: Report
  ansible.builtin.set_fact:
    status: "{{ rows | sr3.hpc_mirror.status_report(queue_results, flows, limits, names) }}"
"""

RETURN = r"""
_value:
  description: C(lines) (the table), C(text) (the table, the warnings and the problems as one text),
    C(problems) (sentences), C(healthy), C(warnings) (sentences about rejected messages),
    C(rejected) (per direction and config, C(rejected) per reason, C(rejected_total),
    C(unsafe_names), summed over the hosts), C(rows) (the joined rows).
  type: dict
"""

from ansible_collections.sr3.hpc_mirror.plugins.module_utils.sr3_metrics import (
    LIMITS, problems, queue_problems, rejection_warnings, table_lines,
)


def rejected_per_config(rows):
    """Rejection counts of the copiers summed over the hosts, per direction and config."""
    summed = {}
    for row in rows:
        if row.get('rejected') is None and not row.get('unsafe_names'):
            continue
        key = (row.get('direction'), row['config'])
        entry = summed.setdefault(key, {'direction': key[0], 'config': key[1], 'rejected': {},
                                        'rejected_total': 0, 'unsafe_names': 0})
        for reason, count in (row.get('rejected') or {}).items():
            entry['rejected'][reason] = entry['rejected'].get(reason, 0) + count
            entry['rejected_total'] += count
        entry['unsafe_names'] += row.get('unsafe_names') or 0
    return [summed[k] for k in sorted(summed, key=lambda k: (k[0] or '', k[1]))]


def status_report(rows, queue_results=None, flows=None, limits=None, names=None):
    limits = dict(limits or {})
    names = dict((k, (names or {}).get(k, k)) for k in LIMITS)
    depth = {}
    found = []
    for result in queue_results or []:
        direction = (result.get('labels') or {}).get('direction')
        queues = result.get('queues') or {}
        for config, queue in (result.get('queue_configs') or {}).items():
            info = queues.get(queue, {})
            depth[(direction, config)] = (queue, info.get('messages'))
        for queue in sorted(queues):
            found.extend(queue_problems(queue, queues[queue], limits, names))

    shown = []
    row_limits = dict(limits, max_queue=None)  # queues are judged once, above
    for row in rows:
        # configs that are not here, or only here because nodes share $HOME
        if not row.get('running') and (not row.get('present') or row.get('assigned') is False):
            continue
        row = dict(row)
        row['queue'], row['queue_depth'] = depth.get((row.get('direction'), row['config']), (None, None))
        shown.append(row)
    order = dict((c, i) for flow in flows or [] for i, c in enumerate(flow.get('configs', [])))
    shown.sort(key=lambda r: (r.get('direction') or '', order.get(r['config'], len(order)),
                              r['config'], r.get('host') or ''))
    row_found = []
    for row in shown:
        row_found.extend(problems(row, row_limits, names))

    missing = []
    for flow in flows or []:
        for config in flow.get('configs', []):
            if not any(r['config'] == config and r.get('direction') == flow.get('direction') and r.get('present')
                       and r.get('assigned', True) for r in shown):
                missing.append('%s (%s): its config is on no host; deploy the flow' % (config, flow.get('direction')))
    every = missing + row_found + found
    notes = []
    for row in shown:
        notes.extend(rejection_warnings(row))
    lines = table_lines(shown)
    text = '\n'.join(lines + ([''] if every or notes else []) + ['WARNING: ' + n for n in notes]
                     + ['PROBLEM: ' + p for p in every])
    return {'lines': lines, 'text': text, 'problems': every, 'healthy': not every, 'warnings': notes,
            'rejected': rejected_per_config(shown), 'rows': shown}


class FilterModule(object):
    def filters(self):
        return {'status_report': status_report}
