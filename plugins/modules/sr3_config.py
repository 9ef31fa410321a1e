#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: sr3_config
short_description: Manage the lifecycle of MetPX Sarracenia (sr3) configurations idempotently
version_added: "0.1.0"
description:
  - Checks, declares, starts, stops, restarts or removes sr3 configurations
    (C(component/config)) of the user the module runs as, and only calls C(sr3) for configurations
    whose state differs from the requested one.
  - The expected number of instances of each configuration is read with the
    venv's own sarracenia config loader (so C(default.conf), C(admin.conf),
    includes and component defaults count), by running the C(python3) next to
    O(sr3) once. If that fails the module falls back to reading C(instances N)
    from the files and warns.
  - Running instances are counted from the pid files in the configuration's
    state directory (C(~/.cache/sr3/<component>/<config>/), with
    C(statehost true) C(~/.cache/sr3/<host>/<component>/<config>/)); a pid only
    counts when C(/proc/<pid>) exists and its command line names the
    configuration, because pids get reused.
  - Post and cpost configurations only run as daemons (one instance) when
    they set C(sleep) > 0.1, as in C(sr3 start); otherwise they are expected
    to have 0 instances and are never started. Poll always runs one instance.
  - C(sr3) runs with its own directory first on C(PATH), as in an activated
    virtualenv; C(sr3 start) launches the C(sr3_cpost) of a cpost daemon from
    C(PATH), so a link to it next to O(sr3) is enough.
  - C(sr3 start) does not launch the missing instances of a partially running
    configuration (it waits forever for their pid files), so partially running
    configurations, and ones running more instances than configured, are
    restarted instead.
  - All configurations needing the same action are handled by one C(sr3) call.
author:
  - sr3.hpc_mirror contributors (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
options:
  sr3:
    description:
      - Path to the C(sr3) executable, usually C(<venv>/bin/sr3).
      - The C(python3) in the same directory is used to read the configurations.
    type: path
    required: true
  configs:
    description:
      - Configurations to manage, each as C(component/config) without the
        C(.conf) suffix, for example C(shovel/mirror_copy).
      - The configuration files must exist in C(~/.config/sr3/<component>/)
        except with O(state=stopped) and O(state=absent), where a missing file is fine.
    type: list
    elements: str
    required: true
  state:
    description:
      - V(present) only checks that the configuration files exist (and
        reports running and expected instances); nothing is changed.
      - V(declared) declares exchanges and queues on the broker
        (C(sr3 declare)) for configurations whose declare marker is missing or
        out of date; the run state is left alone.
      - V(started) makes every configuration run its expected number of
        instances. Stopped configurations are started, partially running ones
        restarted.
      - V(stopped) stops configurations that have running instances.
      - V(restarted) always restarts the configurations (always changed).
      - V(absent) stops the configurations, deletes their queues
        (C(sr3 cleanup)), then removes the configuration file, the state
        directory (pid files, retry queues, declare marker) and the metrics
        files. Logs stay. Exchanges are only deleted by C(sr3 cleanup) with an
        admin broker account; delete them on the broker (the collection's
        C(remove.yml) does). A config without its file still gets its running
        instances stopped and its leftovers removed.
    type: str
    choices: [present, declared, started, stopped, restarted, absent]
    default: started
  restart:
    description:
      - With O(state=started), restart the configurations that are already
        running. Meant for handlers or C(when) conditions tied to a changed
        configuration file.
    type: bool
    default: false
  declare:
    description:
      - With O(state=started) or O(state=restarted), first declare the
        configurations whose declare marker is missing or out of date, as
        O(state=declared) does.
      - The marker is the file C(hpc_mirror_declared) in the state directory
        holding a sha256 of the configuration, its includes, C(admin.conf) and
        C(default.conf). It is not a dotfile, so C(sr3 cleanup) (which removes
        the queues) removes it too.
    type: bool
    default: true
  timeout:
    description:
      - Seconds each C(sr3) command may take, and then seconds to wait for
        the instances to come up or go down.
    type: int
    default: 60
notes:
  - Runs as the user owning the sr3 configurations; use C(become_user).
  - C(sr3) exits 0 even when it fails, so the module checks the pid files
    afterwards and fails, naming each configuration with its running and
    expected instances and the tail of its log, when they do not match.
  - Instances started with C(sr3 foreground) are counted as running but are
    not stopped by C(sr3 stop), so O(state=stopped) times out on them.
  - Disabled configurations (C(sr3 disable)) make the module fail when they
    would have to be declared or started.
  - With O(state=stopped), instances of a configuration whose file is gone are
    sent SIGTERM directly, because sr3 refuses to act on unknown configurations.
  - If an sr3 command hits O(timeout) (C(sr3 start) waits for ever for an
    instance that dies before writing its pid file), only C(sr3) itself is
    terminated; the instances it launched are left for inspection.
requirements:
  - MetPX Sarracenia 3.x (C(metpx-sr3)) installed in a venv on the target.
seealso:
  - name: Sarracenia command line guide
    description: sr3 actions declare, start, stop, restart.
    link: https://metpx.github.io/sarracenia/Reference/sr3.1.html
'''

EXAMPLES = r'''
- name: Declare all flows before anything starts publishing
  sr3.hpc_mirror.sr3_config:
    sr3: /home/opsm/venv/bin/sr3
    configs:
      - winnow/m00
      - winnow/m01
      - sarra/m_copy
    state: declared
  become: true
  become_user: opsm

- name: Run the mirror flows, restarting them when their config changed
  sr3.hpc_mirror.sr3_config:
    sr3: /home/opsm/venv/bin/sr3
    configs: "{{ sr3_flow_configs }}"
    state: started
    restart: "{{ sr3_conf_result is changed }}"
  become: true
  become_user: opsm

- name: Remove a flow from this host (processes, queues, config, state)
  sr3.hpc_mirror.sr3_config:
    sr3: /home/opsm/venv/bin/sr3
    configs: [winnow/m00, sarra/m_copy, shovel/m_tally]
    state: absent
  become: true
  become_user: opsm

- name: Stop a flow before removing its configuration
  sr3.hpc_mirror.sr3_config:
    sr3: /home/opsm/venv/bin/sr3
    configs: [shovel/old_tally]
    state: stopped
    timeout: 120
  become: true
  become_user: opsm
'''

RETURN = r'''
configs:
  description: Per configuration (key C(component/config)) result.
  returned: always
  type: dict
  sample:
    shovel/m_tally:
      component: shovel
      expected: 2
      running: 2
      action: started
      declared: true
      state_dir: /home/opsm/.cache/sr3/shovel/m_tally
  contains:
    component:
      description: The sr3 component.
      type: str
    expected:
      description: Instances the configuration runs when started (0 for non-daemon post/cpost or a missing file).
      type: int
    running:
      description: Running instances after the module ran (before, in check mode).
      type: int
    action:
      description:
        - What was done (or would be in check mode).
        - V(declared) only when declaring was the sole action; see RV(configs.declared).
      type: str
      choices: [none, declared, started, restarted, stopped, removed]
    declared:
      description: Whether C(sr3 declare) ran (or would run) for this configuration.
      type: bool
    state_dir:
      description: The configuration's sr3 state directory (pid files, queue name, marker).
      type: str
    present:
      description: Whether the configuration file exists after the module ran (would, in check mode).
      type: bool
commands:
  description: The sr3 commands run, in order (empty in check mode).
  returned: always
  type: list
  elements: dict
  contains:
    cmd:
      description: The argument vector.
      type: list
      elements: str
    rc:
      description: Exit status (sr3 also exits 0 on most failures).
      type: int
    seconds:
      description: Wall clock time the command took.
      type: float
    timed_out:
      description: Whether the command hit O(timeout) and was terminated.
      type: bool
    output:
      description: Combined stdout and stderr, at most the last 4000 characters.
      type: str
'''

import errno
import os
import shutil
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.sr3.hpc_mirror.plugins.module_utils.sr3_state import (
    ACTION_DECLARED, ACTION_NONE, ACTION_REMOVED, ACTION_RESTARTED, ACTION_STARTED,
    ACTION_STOPPED, STATES, STATES_WITHOUT_FILE, cmdline_mentions, config_path, decide_action,
    default_user_dirs, describe_configs, error_lines, home_dir,
    files_digest, is_disabled, live_in_dirs, log_path, marker_is_current, metrics_leftovers,
    needs_removal, parse_config_name, probe_sarracenia, read_cmdline, run_command, run_state, sr3_environment,
    tail, terminate_pids, wait_stable, wanted_running, write_marker,
)

SETTLE_SECONDS = 1.0  # instances that die right after writing their pid file
POLL_SECONDS = 0.5
OUTPUT_CHARS = 4000


class Sr3Runner(object):
    """Runs sr3 (and the probe) and records what ran for the result."""

    def __init__(self, sr3, timeout, cwd):
        self.sr3 = sr3
        self.timeout = timeout
        self.cwd = cwd
        # sr3's directory first on PATH: sr3 start finds sr3_cpost there (cpost daemons)
        self.env = sr3_environment(sr3)
        self.commands = []

    def run(self, argv, record=True):
        started = time.time()
        rc, output, timed_out = run_command(argv, self.timeout, cwd=self.cwd, env=self.env)
        if record:
            self.commands.append({
                'cmd': argv, 'rc': rc, 'timed_out': timed_out,
                'seconds': round(time.time() - started, 2),
                'output': output[-OUTPUT_CHARS:],
            })
        return rc, output, timed_out

    def sr3_action(self, action, names):
        # only declare (and cleanup/remove) insist on the count for several configs;
        # stop/restart would also kill foreground instances with it set
        argv = [self.sr3]
        if action in ('declare', 'cleanup'):
            argv.append('--dangerWillRobinson=%d' % len(names))
        return self.run(argv + [action] + list(names))


def parse_names(module, names):
    """Validated, de-duplicated [(name, component, config)]; fail listing all errors."""
    refs, errors, seen = [], [], set()
    for name in names:
        try:
            component, config = parse_config_name(name)
        except ValueError as ex:
            errors.append(str(ex))
            continue
        if name not in seen:
            seen.add(name)
            refs.append((name, component, config))
    if errors:
        module.fail_json(msg='malformed config names: ' + '; '.join(errors))
    return refs


def probe_configs(module, runner, names):
    """Ask the venv's sarracenia about the configs; {} if that is impossible."""
    return probe_sarracenia(lambda argv: runner.run(argv, record=False), runner.sr3, names, module.warn)


def any_config_file_exists(refs):
    config_dir = default_user_dirs()[0]
    return any(os.path.isfile(config_path(config_dir, c, f)) for n, c, f in refs)


def all_config_files_exist(refs):
    config_dir = default_user_dirs()[0]
    return all(os.path.isfile(config_path(config_dir, c, f)) for n, c, f in refs)


def collect(module, runner, refs):
    """Per config facts: paths, expected instances, statehost, files to hash."""
    config_dir, cache_dir = default_user_dirs()
    missing = [n for n, c, f in refs if not os.path.isfile(config_path(config_dir, c, f))]
    if missing and module.params['state'] not in STATES_WITHOUT_FILE:
        module.fail_json(msg='sr3 config files not found in %s: %s' % (config_dir, ', '.join(missing)))
    probe = probe_configs(module, runner, [n for n, c, f in refs if n not in missing])
    return describe_configs(refs, probe, module.warn, config_dir, cache_dir)


def live(info):
    """{instance: pid} running now for one config."""
    return live_in_dirs(info)


def leftovers(info):
    """What of a config is on this host: (state dirs, metrics files)."""
    dirs, metrics = [], []
    for hostdir, directory in zip(info['hostdirs'], info['pid_dirs']):
        if os.path.isdir(directory):
            dirs.append(directory)
        metrics.extend(metrics_leftovers(info['cache_dir'], info['component'], info['config'], hostdir))
    return dirs, metrics


def plan(module, infos):
    """Decide declare set and run action per config (no side effects)."""
    p = module.params
    wants_declare = p['state'] == 'declared' or (
        p['declare'] and p['state'] in ('started', 'restarted'))
    for info in infos.values():
        info['pids_before'] = live(info)
        info['running_before'] = len(info['pids_before'])
        info['digest'] = files_digest(info['files'])
        info['marker_ok'] = info['exists'] and marker_is_current(info['state_dir'], info['digest'])
        info['declare'] = wants_declare and info['exists'] and not info['marker_ok']
        info['run_action'] = decide_action(p['state'], info['expected'],
                                           info['running_before'], p['restart'])
        info['remove'] = False
        info['present_before'] = info['exists']
        if p['state'] == 'absent':
            dirs, metrics = leftovers(info)
            info['remove'] = needs_removal(info['exists'], dirs, metrics, info['running_before'])
    blocked = sorted(n for n, i in infos.items()
                     if (i['declare'] or i['run_action'] in (ACTION_STARTED, ACTION_RESTARTED))
                     and is_disabled(i['cache_dir'], i['component'], i['config'], i['hostdir']))
    if blocked:
        module.fail_json(msg='sr3 configs are disabled (run "sr3 enable" first): ' + ', '.join(blocked))


def declare(module, runner, infos):
    todo = [i for i in infos.values() if i['declare']]
    if not todo:
        return
    for info in todo:
        # sr3 logs a spurious error writing subscriptions.json into a missing state dir
        if not os.path.isdir(info['state_dir']):
            os.makedirs(info['state_dir'])
    rc, output, timed_out = runner.sr3_action('declare', [i['name'] for i in todo])
    errors = error_lines(output)
    if rc != 0 or timed_out or errors:
        # no markers: the next run declares again rather than trusting a failure
        module.warn('sr3 declare reported problems (rc=%s), declare markers not written:\n%s'
                    % (rc, '\n'.join(errors[-20:]) or output[-1000:]))
        return
    for info in todo:
        write_marker(info['state_dir'], info['digest'])


def apply_actions(runner, infos):
    """One sr3 call per action; removed configs are signalled directly."""
    by_action = {}
    for info in infos.values():
        by_action.setdefault(info['run_action'], []).append(info)
    for action, verb in ((ACTION_STOPPED, 'stop'), (ACTION_RESTARTED, 'restart'),
                         (ACTION_STARTED, 'start')):
        todo = by_action.get(action, [])
        known = [i['name'] for i in todo if i['exists']]
        if known:
            runner.sr3_action(verb, known)
        if action == ACTION_STOPPED:
            for info in todo:
                info['strays'] = stray_daemons(info)
                terminate_pids(info['strays'])
        # sr3 refuses to act on configs without a file: stop those instances ourselves
        for info in todo:
            if not info['exists']:
                terminate_pids(live(info).values())


def stray_daemons(info, proc_root='/proc'):
    """This user's sr3c daemons of the config (sr3_cpost start <config>) that no pid file names.

    A daemon whose pid file was overwritten (two starts in a row) keeps posting after
    sr3 stop; stopped means none is left. Only sr3c programs are looked for: python
    instances of another component may carry the same config name.
    """
    if info['component'] not in ('cpost', 'cpump'):
        return []
    known = set(live(info).values())
    found = []
    for name in os.listdir(proc_root):
        if not name.isdigit() or int(name) == os.getpid() or int(name) in known:
            continue
        try:
            if os.stat(os.path.join(proc_root, name)).st_uid != os.getuid():
                continue
        except OSError:
            continue
        argv = read_cmdline(int(name), proc_root)
        if argv and os.path.basename(argv[0]) == 'sr3_' + info['component'] \
                and cmdline_mentions(argv, info['component'], info['config']):
            found.append(int(name))
    return found


def outlived(info):
    """Processes of a stopped or restarted config that still run though no pid file names them.

    sr3 removes an instance's pid file when it signals it, and sr3_cpost takes a moment
    to exit: "stopped" must mean that no process of the config is left."""
    if info['run_action'] not in (ACTION_STOPPED, ACTION_RESTARTED):
        return []
    return [pid for pid in list(info['pids_before'].values()) + info.get('strays', [])
            if cmdline_mentions(read_cmdline(pid), info['component'], info['config'])]


def wait_for_instances(infos, timeout, settle):
    """Poll pid files until each config runs its wanted count; return success."""
    targets = dict((n, wanted_running(i['run_action'], i['expected'], i['running_before']))
                   for n, i in infos.items() if i['run_action'] != ACTION_NONE)

    def reached():
        for name in targets:
            infos[name]['running'] = len(live(infos[name]))
        return all(infos[n]['running'] == targets[n] and not outlived(infos[n]) for n in targets)

    return wait_stable(reached, timeout, settle, POLL_SECONDS)


def remove(module, runner, infos):
    """state=absent, once nothing runs: queues (sr3 cleanup), then files and state."""
    todo = [i for i in infos.values() if i['remove']]
    known = [i['name'] for i in todo if i['exists']]
    if known:
        rc, output, timed_out = runner.sr3_action('cleanup', known)
        errors = error_lines(output)
        if rc != 0 or timed_out or errors:
            # the config files stay, so that the next run cleans up again
            module.fail_json(
                msg='sr3 cleanup of %s failed (rc=%s%s), config files kept:\n%s'
                    % (', '.join(known), rc, ', timed out' if timed_out else '',
                       '\n'.join(errors[-20:]) or output[-1000:]),
                **build_result(module, infos, runner, False))
    for info in todo:
        dirs, metrics = leftovers(info)
        for path in metrics + ([info['config_path']] if info['exists'] else []):
            try:
                os.unlink(path)
            except OSError as ex:
                if ex.errno != errno.ENOENT:
                    raise
        for directory in dirs:
            shutil.rmtree(directory)
        info['exists'] = False


def failure_message(infos, timeout, timed_out):
    parts = ['"%s" was terminated after %ss; check "sr3 status" for leftovers'
             % (' '.join(c['cmd'][1:]), timeout) for c in timed_out]
    for name, info in sorted(infos.items()):
        want = wanted_running(info['run_action'], info['expected'], info['running_before'])
        stray = outlived(info) if info['run_action'] != ACTION_NONE else []
        if info['run_action'] == ACTION_NONE or (info['running'] == want and not stray):
            continue
        part = '%s: running %d, expected %d' % (name, info['running'], want)
        if stray:
            part += '; still running without a pid file: %s' % ', '.join(str(pid) for pid in stray)
        alive = live(info)
        for instance in range(1, info['expected'] + 1):
            if instance in alive:
                continue
            path = log_path(info['cache_dir'], info['component'], info['config'],
                            instance, info['hostdir'])
            part += '\n--- tail of %s:\n%s' % (path, tail(path) or '(no log)')
            break  # one log is usually enough to see why
        parts.append(part)
    return 'sr3 configs did not reach the wanted state within %ss:\n%s' % (timeout, '\n'.join(parts))


def final_action(info):
    if info['remove']:
        return ACTION_REMOVED
    if info['run_action'] != ACTION_NONE:
        return info['run_action']
    return ACTION_DECLARED if info['declare'] else ACTION_NONE


def snapshot(info, running, declared, present=True):
    if not present:
        return {'present': False, 'running': running}
    return {'present': True, 'running': running, 'expected': info['expected'],
            'state': run_state(info['expected'], running), 'declared': declared}


def build_result(module, infos, runner, check_mode):
    configs, before, after = {}, {}, {}
    for name, info in infos.items():
        if check_mode:
            running = wanted_running(info['run_action'], info['expected'], info['running_before'])
        else:
            running = info.get('running', info['running_before'])
        configs[name] = {
            'component': info['component'], 'expected': info['expected'],
            'running': info['running_before'] if check_mode else running,
            'action': final_action(info), 'declared': info['declare'],
            'state_dir': info['state_dir'],
            'present': info['exists'] and not (check_mode and info['remove']),
        }
        before[name] = snapshot(info, info['running_before'], info['marker_ok'],
                                info['present_before'])
        after[name] = snapshot(info, running, info['marker_ok'] or info['declare'],
                               info['present_before'] and not info['remove'])
    changed = any(c['action'] != ACTION_NONE for c in configs.values())
    result = {'changed': changed, 'configs': configs, 'commands': runner.commands}
    if module._diff:
        result['diff'] = {'before': before, 'after': after}
    return result


def not_installed_yet(module, refs):
    """Check mode before the first real run: sr3 or the configs are still to be written.

    Earlier tasks would have installed them, so report what a first run does
    (declare and start everything, or nothing to stop) instead of failing.
    """
    state = module.params['state']
    action = {'stopped': ACTION_NONE, 'absent': ACTION_NONE, 'present': ACTION_NONE,
              'declared': ACTION_DECLARED}.get(state, ACTION_STARTED)
    module.warn('sr3 or its configs are not installed yet: check mode reports what a first run would do')
    configs = dict((name, {'component': component, 'expected': None, 'running': 0, 'action': action,
                           'declared': action != ACTION_NONE, 'state_dir': None})
                   for name, component, config in refs)
    module.exit_json(changed=action != ACTION_NONE, configs=configs, commands=[])


def main():
    module = AnsibleModule(
        argument_spec=dict(
            sr3=dict(type='path', required=True),
            configs=dict(type='list', elements='str', required=True),
            state=dict(type='str', default='started', choices=list(STATES)),
            restart=dict(type='bool', default=False),
            declare=dict(type='bool', default=True),
            timeout=dict(type='int', default=60),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if p['timeout'] <= 0:
        module.fail_json(msg='timeout must be a positive number of seconds')
    refs = parse_names(module, p['configs'])
    sr3_ready = os.path.isfile(p['sr3']) and os.access(p['sr3'], os.X_OK)
    # stopped/absent: a missing config file (and then even a missing sr3) is normal
    file_optional = p['state'] in STATES_WITHOUT_FILE
    if module.check_mode and not sr3_ready and not any_config_file_exists(refs) and p['state'] != 'absent':
        not_installed_yet(module, refs)
    if module.check_mode and not file_optional and not all_config_files_exist(refs):
        not_installed_yet(module, refs)
    if not sr3_ready and not (file_optional and not any_config_file_exists(refs)):
        module.fail_json(msg='sr3 executable not found or not executable: %s' % p['sr3'])

    # sr3 chdirs back to where it started: that must be readable by this user
    runner = Sr3Runner(p['sr3'], p['timeout'], cwd=home_dir())
    infos = collect(module, runner, refs)
    plan(module, infos)

    if not module.check_mode:
        declare(module, runner, infos)
        apply_actions(runner, infos)
        settle = SETTLE_SECONDS if any(
            i['run_action'] in (ACTION_STARTED, ACTION_RESTARTED) for i in infos.values()) else 0
        # sr3 already used up the budget waiting: just look once more
        timed_out = [c for c in runner.commands if c['timed_out']]
        if not wait_for_instances(infos, 0 if timed_out else p['timeout'], settle):
            result = build_result(module, infos, runner, False)
            module.fail_json(msg=failure_message(infos, p['timeout'], timed_out), **result)
        remove(module, runner, infos)

    module.exit_json(**build_result(module, infos, runner, module.check_mode))


if __name__ == '__main__':
    main()
