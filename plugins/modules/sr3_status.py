#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: sr3_status
short_description: Health of MetPX Sarracenia (sr3) configurations and their broker queues
version_added: "0.2.0"
description:
  - Reports, for each sr3 configuration of the user the module runs as, its
    state, running and expected instances, messages waiting for retry, lag
    (mean and max), files and bytes copied in the current interval, time since
    the last copy and the age of its metrics; and, from the RabbitMQ
    management API, the depth of queues.
  - C(sr3 status) only prints a table and always exits 0; this module reads
    what sr3 itself reads instead. Instances are counted from the pid files
    (a pid counts only when its process runs that configuration). Figures
    come from the per instance metrics JSON sr3 writes every few seconds
    (C(~/.cache/sr3/metrics/), with C(statehost) C(~/.cache/sr3/<host>/metrics/)),
    of running instances only. The collection's tally callback puts the files
    and bytes delivered into the tally's metrics.
  - Messages waiting for retry are counted by sr3's metrics; the oldest
    one of each retry queue (failed downloads, failed posts) is read from the
    head of sr3's queue files in the instances' state directories (at most
    256 KiB of each, however long the queue), for its age (since its
    C(pubTime)) and path (C(relPath)).
  - Messages the collection's copier callback rejected are read from its
    per instance counter files (C(hpc_mirror_copier_NN.json) in the state
    directory) and summed per configuration. They are no health problem of
    the flow, but each non-zero count is a warning and in RV(rejections).
  - With thresholds set, RV(problems) lists each one crossed, one sentence
    each. The module itself never fails on them; playbooks decide.
  - Never changes anything.
author:
  - sr3.hpc_mirror contributors (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  sr3:
    description:
      - Path to the C(sr3) executable; the C(python3) beside it reads the
        configurations as sr3 does (expected instances, C(statehost)).
      - When missing, expected instances are read from the C(.conf) files.
    type: path
  configs:
    description:
      - Configurations to report, each C(component/config).
      - One whose file is not on this host is reported with RV(configs.present) false
        and no problem, unless instances of it still run.
    type: list
    elements: str
    default: []
  assigned:
    description:
      - The configurations of O(configs) this host is meant to run; the others
        are expected to run no instance here (state V(idle)), and each one
        that runs is a problem. Nodes that share C($HOME) see each other's
        configuration files, but each runs only its part of the flow.
      - When not given, every configuration whose file is here is meant to run here.
    type: list
    elements: str
  queues:
    description:
      - Queues to read from the broker, as a mapping of configuration
        (C(component/config)) to queue name. The depth lands in the row of
        the configuration when it is in O(configs), and in RV(queues) always.
    type: dict
    default: {}
  broker_api_url:
    description:
      - Base URL of the RabbitMQ management API, for example C(http://127.0.0.1:15672).
      - Required with O(queues).
    type: str
  broker_vhost:
    description: Virtual host of the queues.
    type: str
    default: /
  broker_user:
    description: Broker user; the ops user with the C(management) tag sees its own vhost.
    type: str
  broker_password:
    description: Its password.
    type: str
  validate_certs:
    description: Check the API's TLS certificate.
    type: bool
    default: true
  timeout:
    description: Seconds for the management API and for reading the configurations.
    type: int
    default: 30
  max_lag:
    description: Mean lag in seconds (of the current interval) above which a configuration is a problem.
    type: float
  max_retry:
    description: Messages waiting for retry above which a configuration is a problem.
    type: int
  max_queue:
    description: Messages in a queue above which it is a problem.
    type: int
  max_retry_age:
    description:
      - Seconds a message may wait in a retry queue (counted from its
        C(pubTime)) before the configuration is a problem naming its path
        (a copy that keeps failing, or posts that keep failing).
    type: float
  max_metrics_age:
    description:
      - Seconds without a metrics write after which a running instance is a
        problem (hung). sr3 writes every 5 s while its loop runs; an idle
        consumer polls at least every 6.4 s.
    type: float
  labels:
    description:
      - Keys and values added to every row of RV(configs) and returned as
        RV(labels), for example the inventory host and the flow direction, so
        that rows of several hosts can be put in one table.
    type: dict
    default: {}
  limit_names:
    description:
      - Names to give the thresholds in problem messages (keys C(max_lag),
        C(max_retry), C(max_queue), C(max_metrics_age), C(max_retry_age)), for example the
        playbook variables they come from.
    type: dict
    default: {}
notes:
  - Runs as the user owning the sr3 configurations.
  - Metrics of the current interval restart at each sr3 housekeeping (every 300 s by default).
requirements:
  - MetPX Sarracenia 3.x (C(metpx-sr3)), for O(configs).
seealso:
  - module: sr3.hpc_mirror.sr3_config
'''

EXAMPLES = r'''
- name: Health of the flow's configs on this host
  sr3.hpc_mirror.sr3_status:
    sr3: /home/opsm/.local/share/hpc_mirror/venv/bin/sr3
    configs: [sarra/mirror_primary_to_secondary_copy, shovel/mirror_primary_to_secondary_tally]
    max_lag: 300
    max_retry: 100
    max_metrics_age: 120
    max_retry_age: 900
  register: flow_status

- name: Depth of the flow's queues, asked on the broker host
  sr3.hpc_mirror.sr3_status:
    queues:
      sarra/mirror_primary_to_secondary_copy: q_opsm.sarra.mirror_primary_to_secondary_copy
    broker_api_url: http://127.0.0.1:15672
    broker_vhost: hpc_mirror
    broker_user: opsm
    broker_password: "{{ hpc_mirror_broker_password }}"
    max_queue: 10000
'''

RETURN = r'''
configs:
  description: Per configuration (key C(component/config)) status.
  returned: always
  type: dict
  sample:
    sarra/mirror_primary_to_secondary_copy:
      config: sarra/mirror_primary_to_secondary_copy
      present: true
      assigned: true
      state: partial
      running: 1
      expected: 2
      missing: [2]
      retry: 1
      retry_oldest:
        download: {age: 1020.4, pub_time: 1795487098.2, path: var/tmp/primary/run42/out.nc,
                   instance: 1, tries: 9, file: diskqueue_work_retry_01}
        post:
      retry_oldest_age: 1020.4
      rejected: {foreign_base_url: 2}
      rejected_total: 2
      unsafe_names: 0
      counters_since: 1795480000.0
      counters_updated: 1795488110.5
      lag_mean: 11.22
      lag_max: 11.28
      files: 34
      bytes: 3465000
      interval: 52.7
      last_copy: 1795488088.3
      last_copy_age: 30.4
      metrics_age: 3.1
      instance_metrics_age: {'1': 3.1}
      queue: q_opsm.sarra.mirror_primary_to_secondary_copy
      queue_depth: 0
  contains:
    present:
      description: Whether the configuration file is on this host.
      type: bool
    assigned:
      description: Whether this host is meant to run it (see O(assigned)).
      type: bool
    state:
      description: V(running), V(partial), V(stopped), V(excess), V(idle) (nothing is meant to run), V(orphaned) (runs without its file).
      type: str
    running:
      description: Instances running.
      type: int
    expected:
      description: Instances the configuration runs when started.
      type: int
    missing:
      description: Numbers of the expected instances not running.
      type: list
      elements: int
    retry:
      description: Messages waiting for retry (download and post) in the running instances.
      type: int
    retry_oldest:
      description:
        - Per retry queue (C(download), C(post)) the oldest message found at the heads of
          the queue files of every instance, running or not, or null when none.
        - C(age) seconds since its C(pubTime), C(pub_time) (epoch), C(path) its C(relPath)
          (bytes that are not UTF-8 as C(\\xNN)), C(instance), C(tries) (sr3's C(_isRetry)),
          C(file) (the queue file).
      type: dict
    retry_oldest_age:
      description: The larger age of the two, null when no message waits.
      type: float
    rejected:
      description:
        - Messages the copier callback rejected, per reason (for example
          C(foreign_base_url), C(path_outside_tree)), summed over the instances' counter
          files; null when the configuration has none (not a copier).
      type: dict
    rejected_total:
      description: Their sum; null without counter files.
      type: int
    unsafe_names:
      description: Names the copier callback could not carry, summed; null without counter files.
      type: int
    counters_since:
      description: Earliest C(since) of the counter files (epoch), the start of the counts.
      type: float
    counters_updated:
      description: Latest C(updated) of the counter files (epoch).
      type: float
    lag_mean:
      description: Mean lag (seconds from publication to acceptance) in the current interval.
      type: float
    lag_max:
      description: Largest lag in the current interval.
      type: float
    files:
      description: Files copied in the current interval (the tally's count for the tally).
      type: int
    bytes:
      description: Bytes copied in the current interval.
      type: int
    interval:
      description: Seconds since the interval began (the instances' last housekeeping).
      type: float
    last_copy_age:
      description: Seconds since the last file was copied (delivered, for the tally); null if never.
      type: float
    metrics_age:
      description: Seconds since the stalest running instance last wrote its metrics (since its start, if not yet).
      type: float
    instance_metrics_age:
      description: The same per running instance (keys are instance numbers).
      type: dict
    queue:
      description: Its queue, when given in O(queues).
      type: str
    queue_depth:
      description: Messages in that queue.
      type: int
queues:
  description: Per queue name, what the management API says.
  returned: always
  type: dict
  sample:
    q_opsm.sarra.mirror_primary_to_secondary_copy: {exists: true, messages: 0, ready: 0, unacknowledged: 0, consumers: 2}
problems:
  description: One sentence per threshold crossed or instance missing.
  returned: always
  type: list
  elements: str
rejections:
  description: One sentence per configuration and reason of rejected messages (also given as warnings).
  returned: always
  type: list
  elements: str
healthy:
  description: Whether RV(problems) is empty.
  returned: always
  type: bool
queue_configs:
  description: O(queues) as given.
  returned: always
  type: dict
labels:
  description: O(labels) as given.
  returned: always
  type: dict
host:
  description: Host name the module ran on.
  returned: always
  type: str
'''

import os
import socket
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.six.moves.urllib.parse import quote
from ansible.module_utils.urls import open_url
from ansible_collections.sr3.hpc_mirror.plugins.module_utils.sr3_metrics import (
    LIMITS, config_status, oldest_retry, problems, queue_info, queue_problems, read_counters,
    read_metrics, rejection_warnings,
)
from ansible_collections.sr3.hpc_mirror.plugins.module_utils.sr3_state import (
    copier_counter_files, default_user_dirs, describe_configs, home_dir, instance_from_pidfile,
    live_in_dirs, metrics_files, parse_config_name, probe_sarracenia, retry_queue_files, run_command,
)


def parse_names(module, names):
    refs, errors = [], []
    for name in names:
        try:
            component, config = parse_config_name(name)
        except ValueError as ex:
            errors.append(str(ex))
            continue
        if name not in [r[0] for r in refs]:
            refs.append((name, component, config))
    if errors:
        module.fail_json(msg='malformed config names: ' + '; '.join(errors))
    return refs


def pid_mtimes(directories):
    found = {}
    for directory in directories:
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in names:
            instance = instance_from_pidfile(name)
            if instance is None:
                continue
            try:
                found[instance] = os.stat(os.path.join(directory, name)).st_mtime
            except OSError:
                pass
    return found


def config_rows(module, refs, now):
    p = module.params
    config_dir, cache_dir = default_user_dirs()
    existing = [n for n, c, f in refs if os.path.isfile(os.path.join(config_dir, c, f + '.conf'))]
    probe = {}
    if p['sr3'] and existing:
        cwd = home_dir()
        probe = probe_sarracenia(lambda argv: run_command(argv, p['timeout'], cwd=cwd)[:3],
                                 p['sr3'], existing, module.warn)
    infos = describe_configs(refs, probe, module.warn, config_dir, cache_dir)
    rows = {}
    for name, info in infos.items():
        metrics = {}
        for hostdir in info['hostdirs']:
            for instance, path in metrics_files(info['cache_dir'], info['component'],
                                                info['config'], hostdir).items():
                metrics.setdefault(instance, read_metrics(path))
        assigned = p['assigned'] is None or name in p['assigned']
        counters = []
        for instance, path in copier_counter_files(info['pid_dirs']):
            counter = read_counters(path)
            if counter is None:
                module.warn('%s: copier counters %s unreadable, left out' % (name, path))
            counters.append(counter)
        rows[name] = config_status(name, info['exists'], info['expected'] if assigned else 0,
                                   live_in_dirs(info), pid_mtimes(info['pid_dirs']), metrics, now,
                                   retry_oldest=oldest_retry(retry_queue_files(info['pid_dirs']), now),
                                   counters=counters)
        rows[name]['assigned'] = assigned
    return rows


def read_queues(module):
    p = module.params
    base = p['broker_api_url'].rstrip('/')
    result = {}
    for queue in sorted(set(p['queues'].values())):
        url = '%s/api/queues/%s/%s' % (base, quote(p['broker_vhost'], safe=''), quote(queue, safe=''))
        try:
            answer = open_url(url, url_username=p['broker_user'], url_password=p['broker_password'],
                              force_basic_auth=True, validate_certs=p['validate_certs'],
                              timeout=p['timeout'], headers={'Accept': 'application/json'})
            result[queue] = queue_info(module.from_json(answer.read()))
        except Exception as ex:  # pylint: disable=broad-except
            code = getattr(ex, 'code', None)
            if code == 404:
                result[queue] = {'exists': False, 'messages': None, 'ready': None,
                                 'unacknowledged': None, 'consumers': None}
            else:
                module.fail_json(msg='RabbitMQ management API %s: %s' % (url, ex))
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            sr3=dict(type='path'),
            configs=dict(type='list', elements='str', default=[]),
            assigned=dict(type='list', elements='str'),
            queues=dict(type='dict', default={}),
            broker_api_url=dict(type='str'),
            broker_vhost=dict(type='str', default='/'),
            broker_user=dict(type='str'),
            broker_password=dict(type='str', no_log=True),
            validate_certs=dict(type='bool', default=True),
            timeout=dict(type='int', default=30),
            max_lag=dict(type='float'),
            max_retry=dict(type='int'),
            max_queue=dict(type='int'),
            max_metrics_age=dict(type='float'),
            max_retry_age=dict(type='float'),
            limit_names=dict(type='dict', default={}),
            labels=dict(type='dict', default={}),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if p['queues'] and not p['broker_api_url']:
        module.fail_json(msg='queues needs broker_api_url')
    refs = parse_names(module, p['configs'])
    parse_names(module, list(p['queues'].keys()))
    limits = dict((k, p[k]) for k in LIMITS)
    names = dict((k, p['limit_names'].get(k, k)) for k in LIMITS)

    now = time.time()
    rows = config_rows(module, refs, now)
    queues = read_queues(module) if p['queues'] else {}
    for config, queue in p['queues'].items():
        if config in rows:
            rows[config]['queue'] = queue
            rows[config]['queue_depth'] = queues[queue]['messages']
    found = []
    for name in [r[0] for r in refs]:
        found.extend(problems(rows[name], limits, names))
    covered = set(rows[c]['queue'] for c in rows if rows[c]['queue'])
    for queue in sorted(queues):
        if queue in covered and queues[queue]['exists']:
            continue  # already judged in its config's row
        found.extend(queue_problems(queue, queues[queue], limits, names))
    notes = []
    for name in [r[0] for r in refs]:
        notes.extend(rejection_warnings(rows[name]))
    for note in notes:
        module.warn(note)
    for row in rows.values():
        row.update(p['labels'])
    module.exit_json(changed=False, configs=rows, queues=queues, problems=found,
                     healthy=not found, rejections=notes, host=socket.gethostname(), now=now,
                     queue_configs=p['queues'], labels=p['labels'])


if __name__ == '__main__':
    main()
