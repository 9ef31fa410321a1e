# -*- coding: utf-8 -*-
# Copyright: (c) sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Health of sr3 configurations from their metrics files, pid files and queues.

Plain Python (no AnsibleModule), unit tested with metrics files captured from
real sr3 3.3.1 runs (tests/unit/fixtures/sr3_metrics/).

sr3 writes one JSON file per instance, ``<cache>[/<hostdir>]/metrics/
<component>_<config>_NN.json``, at most every ``metrics_writeInterval`` (5 s)
while the instance's main loop runs, so the file's age tells a hung or dead
instance from a live one. The sections used here:

* ``flow``: ``transferRxFiles``/``transferRxBytes`` since the last
  housekeeping (``last_housekeeping``), ``transferRxLast`` (last download);
* ``log``: ``lagTotal``/``lagMessageCount``/``lagMax`` of the messages
  accepted since the last housekeeping (lag = now - pubTime at accept);
* ``retry``: ``msgs_in_download_retry`` and ``msgs_in_post_retry`` now;
* ``hpc_mirror_tally`` (the collection's tally callback): files and bytes
  delivered in the current interval, ``last_copy`` (epoch).

Besides the metrics, two kinds of files of the instances' state directories
(paths in sr3_state): the head of sr3's retry queues, for the age and path of
the oldest message waiting there (the metrics only count them), and the
counters of messages the collection's copier callback rejected.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import calendar
import json
import os
import time

TALLY_KEY = 'hpc_mirror_tally'

# problem kinds, also the keys of the thresholds
LIMITS = ('max_lag', 'max_retry', 'max_queue', 'max_metrics_age', 'max_retry_age')

# How much of a retry queue file is read: the oldest messages are at its head
# (sr3 appends failures at the end and keeps the order at housekeeping), and
# a queue can hold millions of lines.
RETRY_HEAD_BYTES = 256 * 1024


def sr3_time(text):
    """sr3 timestamps (``20261124T024128.278430223``) to epoch seconds; None if not one."""
    if isinstance(text, (int, float)):
        return float(text)
    if not isinstance(text, str) or len(text) < 15 or text[8] != 'T':
        return None
    try:
        whole = calendar.timegm(time.strptime(text[:15], '%Y%m%dT%H%M%S'))
    except ValueError:
        return None
    fraction = text[16:] if len(text) > 16 and text[15] == '.' else ''
    return whole + (float('0.' + fraction) if fraction.isdigit() else 0.0)


def read_metrics(path):
    """(data, mtime) of one metrics file; (None, None) when missing or unreadable.

    sr3 rewrites the file in place, so a read can catch it half written:
    that counts as unreadable, not as an error.
    """
    try:
        mtime = os.stat(path).st_mtime
        with open(path) as handle:
            data = json.load(handle)
    except (IOError, OSError, ValueError):
        return None, None
    return (data, mtime) if isinstance(data, dict) else (None, None)


def _number(section, key):
    value = section.get(key) if isinstance(section, dict) else None
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def summarize(instances, now):
    """Sum up the metrics of a config's running instances.

    ``instances`` is {instance: data}. Returns retry, lag mean/max, files and
    bytes of the current interval, interval length, last copy (epoch or None).
    Values are None when no instance has metrics.
    """
    if not instances:
        return {'retry': None, 'lag_mean': None, 'lag_max': None, 'files': None, 'bytes': None,
                'interval': None, 'last_copy': None}
    retry = lag_total = lag_count = lag_max = files = size = 0
    housekeeping, last = [], []
    tally_seen = False
    for data in instances.values():
        flow, log, retries = data.get('flow', {}), data.get('log', {}), data.get('retry', {})
        retry += _number(retries, 'msgs_in_download_retry') + _number(retries, 'msgs_in_post_retry')
        lag_total += _number(log, 'lagTotal')
        lag_count += _number(log, 'lagMessageCount')
        lag_max = max(lag_max, _number(log, 'lagMax'))
        if _number(flow, 'last_housekeeping'):
            housekeeping.append(flow['last_housekeeping'])
        tally = data.get(TALLY_KEY)
        if isinstance(tally, dict):
            # the tally counts what the copiers delivered: that is this config's "copied"
            tally_seen = True
            interval = tally.get('interval', {})
            files += _number(interval, 'files')
            size += _number(interval, 'bytes')
            if _number(tally, 'last_copy'):
                last.append(tally['last_copy'])
        else:
            files += _number(flow, 'transferRxFiles')
            size += _number(flow, 'transferRxBytes')
            stamp = sr3_time(flow.get('transferRxLast'))
            if stamp:
                last.append(stamp)
    return {
        'retry': retry,
        'lag_mean': lag_total / lag_count if lag_count else 0.0,
        'lag_max': lag_max,
        'files': files,
        'bytes': size,
        'interval': now - min(housekeeping) if housekeeping else None,
        'last_copy': max(last) if last else None,
        'tally': tally_seen,
    }


def printable(text):
    """A path from a message, safe to return as JSON text.

    Names that are not UTF-8 reach sr3 as surrogate escapes (os.fsdecode);
    their bytes are shown as ``\\xNN`` instead of failing the result, and so
    are control characters (a newline would split the sentence naming it).
    """
    if not isinstance(text, str):
        return None if text is None else str(text)
    shown = []
    for char in text:
        code = ord(char)
        if code < 0x20 or code == 0x7f:
            shown.append('\\x%02x' % code)
        elif 0xdc80 <= code <= 0xdcff:
            shown.append('\\x%02x' % (code - 0xdc00))
        elif 0xd800 <= code <= 0xdfff:
            shown.append('\\u%04x' % code)
        else:
            shown.append(char)
    return ''.join(shown)


def retry_queue_head(path, max_bytes=RETRY_HEAD_BYTES):
    """The messages (dicts) on the first lines of one sr3 retry queue file.

    Reads at most ``max_bytes``: a cut last line, a line sr3 is still
    appending, or a corrupt one is skipped, as sr3 skips it. [] when the file
    is gone (consumed or moved at housekeeping meanwhile).
    """
    try:
        with open(path, 'rb') as handle:
            data = handle.read(max_bytes)
    except (IOError, OSError):
        return []
    lines = data.split(b'\n')
    if not data.endswith(b'\n'):
        lines.pop()  # incomplete
    messages = []
    for line in lines:
        try:
            message = json.loads(line.decode('utf-8'))
        except ValueError:
            continue
        if isinstance(message, dict):
            messages.append(message)
    return messages


def oldest_retry(files, now, max_bytes=RETRY_HEAD_BYTES):
    """Per kind (``download``, ``post``) the oldest message waiting for retry, or None.

    ``files`` is [(kind, instance, path)] (sr3_state.retry_queue_files). The
    age counts from the message's ``pubTime`` (when the event was first
    posted); ``tries`` is sr3's ``_isRetry`` count.
    """
    oldest = {'download': None, 'post': None}
    for kind, instance, path in files:
        for message in retry_queue_head(path, max_bytes):
            stamp = sr3_time(message.get('pubTime'))
            if stamp is None:
                continue
            best = oldest.get(kind)
            if best is not None and best['pub_time'] <= stamp:
                continue
            tries = message.get('_isRetry')
            oldest[kind] = {
                'age': round(max(0.0, now - stamp), 1),
                'pub_time': stamp,
                'path': printable(message.get('relPath')),
                'instance': instance,
                'tries': tries if isinstance(tries, int) and not isinstance(tries, bool) else None,
                'file': os.path.basename(path),
            }
    return oldest


def _count(value):
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def read_counters(path):
    """One copier counter file as {rejected, unsafe_names, since, updated}; None if unreadable.

    The format (written by roles/mirror/files/hpc_mirror_copier.py):
    ``{"rejected": {"<reason>": <count>, ...}, "unsafe_names": <count>,
    "since": <epoch>, "updated": <epoch>}``. Counts that are not
    non-negative integers are left out.
    """
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (IOError, OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get('rejected', {}), dict):
        return None
    rejected = dict((str(k), _count(v)) for k, v in data.get('rejected', {}).items())
    return {
        'rejected': dict((k, v) for k, v in rejected.items() if v is not None),
        'unsafe_names': _count(data.get('unsafe_names')) or 0,
        'since': _number(data, 'since') or None,
        'updated': _number(data, 'updated') or None,
    }


def sum_counters(counters):
    """Sum of the counter files of one config's instances (read_counters results).

    All None when there is no file (a config whose copier never wrote one).
    """
    counters = [c for c in counters if c]
    if not counters:
        return {'rejected': None, 'rejected_total': None, 'unsafe_names': None,
                'counters_since': None, 'counters_updated': None}
    rejected = {}
    for counter in counters:
        for reason, count in counter['rejected'].items():
            rejected[reason] = rejected.get(reason, 0) + count
    since = [c['since'] for c in counters if c['since']]
    updated = [c['updated'] for c in counters if c['updated']]
    return {
        'rejected': rejected,
        'rejected_total': sum(rejected.values()),
        'unsafe_names': sum(c['unsafe_names'] for c in counters),
        'counters_since': min(since) if since else None,
        'counters_updated': max(updated) if updated else None,
    }


def run_label(present, expected, running):
    """State label of one config on one host."""
    if not present:
        return 'stopped' if running == 0 else 'orphaned'  # instances of a removed config
    if expected == 0 and running == 0:
        return 'idle'  # not a daemon (cpost/post without sleep): nothing should run
    if running == 0:
        return 'stopped'
    if running < expected:
        return 'partial'
    return 'running' if running == expected else 'excess'


def config_status(name, present, expected, live, pid_mtimes, metrics, now,
                  retry_oldest=None, counters=None):
    """One status row for a config on this host.

    ``live`` {instance: pid} running now; ``pid_mtimes`` {instance: mtime of
    its pid file} (when it started); ``metrics`` {instance: (data, mtime)}.
    The metrics age of a running instance counts from its start when its
    metrics file is older (left from a previous run) or missing.
    ``retry_oldest`` is what oldest_retry found in its retry queues,
    ``counters`` the read_counters results of its copier instances.
    """
    running = len(live)
    ages = {}
    current = {}
    for instance in live:
        data, mtime = metrics.get(instance, (None, None))
        started = pid_mtimes.get(instance)
        if data is not None and (started is None or mtime >= started - 1):
            current[instance] = data
            ages[instance] = max(0.0, now - mtime)
        elif started is not None:
            ages[instance] = max(0.0, now - started)
    row = {
        'config': name,
        'present': present,
        'state': run_label(present, expected, running),
        'expected': expected,
        'running': running,
        'missing': sorted(i for i in range(1, expected + 1) if i not in live),
        'metrics_age': round(max(ages.values()), 1) if ages else None,
        'instance_metrics_age': dict((i, round(a, 1)) for i, a in sorted(ages.items())),
    }
    summary = summarize(current, now)
    row.update(summary)
    row['last_copy_age'] = round(now - summary['last_copy'], 1) if summary['last_copy'] else None
    for key in ('lag_mean', 'lag_max', 'interval'):
        if row[key] is not None:
            row[key] = round(row[key], 2)
    row['queue'] = None
    row['queue_depth'] = None
    row['retry_oldest'] = dict(retry_oldest or {'download': None, 'post': None})
    ages = [i['age'] for i in row['retry_oldest'].values() if i]
    row['retry_oldest_age'] = max(ages) if ages else None
    row.update(sum_counters(counters or []))
    return row


def _limit(limits, key):
    value = (limits or {}).get(key)
    return None if value is None else float(value)


def problems(row, limits, names=None):
    """Health problems of one status row, each a sentence naming the config.

    ``limits`` has the keys of LIMITS (None or missing: not checked);
    ``names`` maps them to the names the user set them with (for messages).
    """
    names = dict((k, k) for k in LIMITS) if names is None else names
    where = row['config'] + (' on %s' % row['host'] if row.get('host') else '')
    found = []
    if row['present'] and row['running'] < row['expected']:
        found.append('%s: %d of %d instances running (missing instance %s)'
                     % (where, row['running'], row['expected'],
                        ', '.join('%02d' % i for i in row['missing'])))
    elif row['running'] > row['expected']:
        found.append('%s: %d instances running, %d expected%s'
                     % (where, row['running'], row['expected'],
                        ' (this host is not meant to run it)' if row.get('assigned') is False
                        else '' if row['present'] else ' (its config file is gone)'))
    limit = _limit(limits, 'max_lag')
    if limit is not None and row.get('lag_mean') is not None and row['lag_mean'] > limit:
        found.append('%s: mean lag %.1f s (max %.1f s) over %s=%g s'
                     % (where, row['lag_mean'], row['lag_max'], names['max_lag'], limit))
    limit = _limit(limits, 'max_retry')
    if limit is not None and row.get('retry') is not None and row['retry'] > limit:
        found.append('%s: %d messages waiting for retry, over %s=%g'
                     % (where, row['retry'], names['max_retry'], limit))
    limit = _limit(limits, 'max_queue')
    if limit is not None and row.get('queue_depth') is not None and row['queue_depth'] > limit:
        found.append('%s: %d messages queued in %s, over %s=%g'
                     % (where, row['queue_depth'], row['queue'], names['max_queue'], limit))
    limit = _limit(limits, 'max_retry_age')
    for kind in ('download', 'post'):
        oldest = (row.get('retry_oldest') or {}).get(kind)
        if limit is None or not oldest or oldest['age'] <= limit:
            continue
        found.append('%s: %s waited for retry for %s (over %s=%g s), the oldest: %s (%s, %s)'
                     % (where, 'a copy has' if kind == 'download' else 'posts keep failing: a post has',
                        human_seconds(oldest['age']), names['max_retry_age'], limit,
                        oldest['path'] if oldest['path'] is not None else '(no relPath)',
                        'instance %02d' % oldest['instance'],
                        'sr3 retry count %s' % (oldest['tries'] if oldest['tries'] is not None else '-')))
    limit = _limit(limits, 'max_metrics_age')
    if limit is not None:
        stale = sorted(i for i, age in row.get('instance_metrics_age', {}).items() if age > limit)
        if stale:
            found.append('%s: instance %s wrote no metrics for %s s (%s=%g s): hung?'
                         % (where, ', '.join('%02d' % int(i) for i in stale),
                            ', '.join('%.0f' % row['instance_metrics_age'][i] for i in stale),
                            names['max_metrics_age'], limit))
    return found


def rejection_warnings(row):
    """Sentences about messages the copier rejected; not health problems, but never silent."""
    where = row['config'] + (' on %s' % row['host'] if row.get('host') else '')
    since = row.get('counters_since')
    when = ' since %s' % time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(since)) if since else ''
    found = ['%s: %d message%s rejected: %s%s (see the copier log)'
             % (where, count, '' if count == 1 else 's', reason, when)
             for reason, count in sorted((row.get('rejected') or {}).items()) if count]
    if row.get('unsafe_names'):
        found.append('%s: %d name%s could not be carried (unsafe_names)%s (see the copier log)'
                     % (where, row['unsafe_names'], '' if row['unsafe_names'] == 1 else 's', when))
    return found


def queue_problems(queue, info, limits, names=None):
    """Problems of one broker queue read from the management API."""
    names = dict((k, k) for k in LIMITS) if names is None else names
    if not info.get('exists'):
        return ['queue %s does not exist on the broker' % queue]
    limit = _limit(limits, 'max_queue')
    if limit is not None and info['messages'] is not None and info['messages'] > limit:
        return ['queue %s: %d messages queued, over %s=%g' % (queue, info['messages'], names['max_queue'], limit)]
    return []


def queue_info(api_answer):
    """The parts of a management API queue object status uses."""
    def count(key):
        value = api_answer.get(key)
        return value if isinstance(value, int) else None
    return {'exists': True, 'messages': count('messages'), 'ready': count('messages_ready'),
            'unacknowledged': count('messages_unacknowledged'), 'consumers': count('consumers')}


def human_size(value):
    if value is None:
        return '-'
    for unit in ('B', 'kB', 'MB', 'GB', 'TB'):
        if abs(value) < 1000 or unit == 'TB':
            return ('%d %s' % (value, unit)) if unit == 'B' else ('%.1f %s' % (value, unit))
        value /= 1000.0
    return str(value)


def human_seconds(value):
    if value is None:
        return '-'
    if value < 100:
        return '%.1fs' % value
    if value < 6000:
        return '%.0fm' % (value / 60.0)
    if value < 360000:
        return '%.0fh' % (value / 3600.0)
    return '%.0fd' % (value / 86400.0)


TABLE_COLUMNS = ('direction', 'host', 'config', 'state', 'inst', 'queue', 'retry', 'oldest retry',
                 'lag mean/max', 'copied', 'last copy', 'metrics', 'rejected')


def table_lines(rows):
    """Fixed-width lines, one header and one per row, for one compact table."""
    def show(value, fmt='%d'):
        return '-' if value is None else fmt % value

    cells = [TABLE_COLUMNS]
    for row in rows:
        lag = '-' if row.get('lag_mean') is None else '%s/%s' % (
            human_seconds(row['lag_mean']), human_seconds(row['lag_max']))
        copied = '-' if row.get('files') is None else '%d f %s' % (row['files'], human_size(row['bytes']))
        cells.append((
            row.get('direction') or '-', row.get('host') or '-', row['config'], row['state'],
            '%d/%d' % (row['running'], row['expected']),
            show(row.get('queue_depth')), show(row.get('retry')), human_seconds(row.get('retry_oldest_age')),
            lag, copied, human_seconds(row.get('last_copy_age')), human_seconds(row.get('metrics_age')),
            show(row.get('rejected_total')),
        ))
    widths = [max(len(str(line[i])) for line in cells) for i in range(len(TABLE_COLUMNS))]
    return ['  '.join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells]
