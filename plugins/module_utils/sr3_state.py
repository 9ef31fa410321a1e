# -*- coding: utf-8 -*-
# Copyright: (c) sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Run-state helpers for MetPX Sarracenia (sr3) configurations.

Everything here is plain Python (no AnsibleModule) so it can be unit tested:
path layout, pid files, /proc checks, declare markers, the action decision
table and a subprocess runner with a timeout.

Layout mirrored from sarracenia 3.x (config/__init__.py, sr.py, instance.py):

* config:  <config_dir>/<component>/<config>.conf   (config_dir = ~/.config/sr3)
* state:   <cache_dir>[/<hostdir>]/<component>/<config>/  (cache_dir = ~/.cache/sr3)
* pid:     <state>/<component>_<config>_NN.pid  (sr3c components: iNN.pid)
* log:     <cache_dir>[/<hostdir>]/log/<component>_<config>_NN.log
* retry:   <state>/diskqueue_work_retry_NN[.new|.hk] (failed downloads) and
           <state>/diskqueue_post_retry_NNN[.new|.hk] (failed posts)
* the collection's copier counters: <state>/hpc_mirror_copier_NN.json

``<hostdir>`` is only present with ``statehost true`` and is
``socket.getfqdn().split('.')[0]``.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import hashlib
import json
import os
import pwd
import re
import signal
import socket
import subprocess
import tempfile
import time

# sr.py sr_GlobalState.components
COMPONENTS = (
    'cpost', 'cpump', 'flow', 'poll', 'post', 'report', 'sarra',
    'sender', 'shovel', 'subscribe', 'watch', 'winnow',
)

# Not a dotfile on purpose: ``sr3 cleanup`` (which deletes queues and
# exchanges) removes every non-dot state file, so the marker goes with it
# and the next run declares again instead of trusting a stale marker.
MARKER_NAME = 'hpc_mirror_declared'

ACTION_NONE = 'none'
ACTION_DECLARED = 'declared'
ACTION_STARTED = 'started'
ACTION_RESTARTED = 'restarted'
ACTION_STOPPED = 'stopped'
ACTION_REMOVED = 'removed'

STATES = ('present', 'declared', 'started', 'stopped', 'restarted', 'absent')
# states where a config without its file is fine (and simply not running)
STATES_WITHOUT_FILE = ('stopped', 'absent')

_NAME_RE = re.compile(r'^[A-Za-z0-9_][A-Za-z0-9_.+-]*$')
_PID_RE = re.compile(r'(?:_|^i)(\d+)\.pid$')
_TRUE_WORDS = ('true', 'yes', 'on', '1')
JSON_SENTINEL = 'HPC_MIRROR_SR3_JSON:'


# --------------------------------------------------------------------------
# names and paths
# --------------------------------------------------------------------------

def parse_config_name(name):
    """Split ``component/config``; raise ValueError with a helpful message."""
    if not isinstance(name, str) or name.count('/') != 1:
        raise ValueError('%r must be of the form component/config' % (name,))
    component, config = name.split('/')
    if component not in COMPONENTS:
        raise ValueError('%r: unknown component %r (one of: %s)'
                         % (name, component, ', '.join(COMPONENTS)))
    if config.endswith('.conf'):
        raise ValueError('%r: give the config name without the .conf suffix' % (name,))
    if not _NAME_RE.match(config):
        raise ValueError('%r: invalid config name %r' % (name, config))
    return component, config


def home_dir(env=None):
    """$HOME as sr3 (appdirs) uses it, else the passwd entry of this user."""
    env = os.environ if env is None else env
    home = env.get('HOME')
    if not home:
        home = pwd.getpwuid(os.getuid()).pw_dir
    return home if os.path.isdir(home) else os.sep


def default_user_dirs(env=None, home=None):
    """(config_dir, cache_dir) as appdirs computes them on Linux for sr3."""
    env = os.environ if env is None else env
    home = home or home_dir(env)
    config_base = env.get('XDG_CONFIG_HOME') or os.path.join(home, '.config')
    cache_base = env.get('XDG_CACHE_HOME') or os.path.join(home, '.cache')
    return os.path.join(config_base, 'sr3'), os.path.join(cache_base, 'sr3')


def default_hostdir():
    """Same host directory sarracenia uses for ``statehost``."""
    return socket.getfqdn().split('.')[0]


def config_path(config_dir, component, config):
    return os.path.join(config_dir, component, config + '.conf')


def state_base(cache_dir, hostdir=None):
    """Cache root for one config: with statehost an extra host level."""
    return os.path.join(cache_dir, hostdir) if hostdir else cache_dir


def state_dir(cache_dir, component, config, hostdir=None):
    return os.path.join(state_base(cache_dir, hostdir), component, config)


def pid_path(cache_dir, component, config, instance, hostdir=None):
    return os.path.join(state_dir(cache_dir, component, config, hostdir),
                        '%s_%s_%02d.pid' % (component, config, instance))


def log_path(cache_dir, component, config, instance, hostdir=None):
    return os.path.join(state_base(cache_dir, hostdir), 'log',
                        '%s_%s_%02d.log' % (component, config, instance))


def is_disabled(cache_dir, component, config, hostdir=None):
    """``sr3 disable`` tags the state dir; sr3 start also looks at the plain path."""
    candidates = [state_dir(cache_dir, component, config, hostdir),
                  state_dir(cache_dir, component, config)]
    return any(os.path.exists(os.path.join(d, 'disabled')) for d in candidates)


# --------------------------------------------------------------------------
# pid files and processes
# --------------------------------------------------------------------------

def instance_from_pidfile(filename):
    """Instance number from ``comp_cfg_NN.pid`` or sr3c ``iNN.pid``; else None."""
    match = _PID_RE.search(os.path.basename(filename))
    return int(match.group(1)) if match else None


def read_pid_files(directory):
    """Return {instance: pid} for readable pid files; ignore junk like sr3 does."""
    pids = {}
    try:
        names = os.listdir(directory)
    except OSError:
        return pids
    for name in names:
        instance = instance_from_pidfile(name)
        if instance is None:
            continue
        try:
            with open(os.path.join(directory, name)) as handle:
                text = handle.read().strip()
        except (IOError, OSError):
            continue  # removed while we looked: instance just stopped
        if text.isdigit():
            pids[instance] = int(text)
    return pids


def read_cmdline(pid, proc_root='/proc'):
    """argv of a process, [] if gone or a zombie (zombies have no cmdline)."""
    try:
        with open(os.path.join(proc_root, str(pid), 'cmdline'), 'rb') as handle:
            raw = handle.read()
    except (IOError, OSError):
        return []
    return [a.decode('utf-8', 'replace') for a in raw.split(b'\0') if a]


def cmdline_mentions(argv, component, config):
    """True if argv belongs to this config (pids are reused by other programs).

    python instances: ``.../instance.py --no 1 start shovel/x``;
    sr3c components: ``sr3_cpost start x``.
    """
    wanted = ('%s/%s' % (component, config), config, config + '.conf')
    suffix = '/%s/%s.conf' % (component, config)
    return any(arg in wanted or arg.endswith(suffix) for arg in argv[1:])


def live_instances(pids, component, config, proc_root='/proc'):
    """Filter {instance: pid} down to processes that really run this config."""
    return dict((i, p) for i, p in pids.items()
                if cmdline_mentions(read_cmdline(p, proc_root), component, config))


def running_instances(directory, component, config, proc_root='/proc'):
    return live_instances(read_pid_files(directory), component, config, proc_root)


def terminate_pids(pids, sig=signal.SIGTERM):
    """Signal pids, ignoring the ones that are already gone."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


# --------------------------------------------------------------------------
# config fallback parsing (used when sarracenia itself can not be loaded)
# --------------------------------------------------------------------------

def _truthy(words):
    # a bare flag ("statehost") means True in sr3
    return not words or words[0].lower() in _TRUE_WORDS


def _resolve_include(name, search_path):
    if os.path.isabs(name):
        return name
    for directory in search_path:
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate):
            return candidate
    return None


def scan_config(path, search_path, seen=None):
    """Read ``path`` and its includes; return (files, {option: last words}).

    Only the options this module needs; later settings win, like sr3.
    """
    seen = [] if seen is None else seen
    options = {}
    if path in seen or not os.path.isfile(path):
        return seen, options
    seen.append(path)
    with open(path) as handle:
        for line in handle:
            words = line.split()
            if not words or words[0].startswith('#'):
                continue
            key, rest = words[0], words[1:]
            if key in ('include', 'config') and rest:
                included = _resolve_include(rest[0], search_path)
                if included:
                    options.update(scan_config(included, search_path, seen)[1])
            elif key in ('instances', 'instance', 'statehost', 'sleep'):
                options['instances' if key == 'instance' else key] = rest
    return seen, options


def expected_from_options(component, options):
    """Instance count sr3 runs, mirroring sr.py _read_configs + start()."""
    if component in ('post', 'cpost'):
        # daemons only with sleep > 0.1 (sr.py _post_can_be_daemon; its path
        # test always passes as path defaults to [])
        try:
            sleep = float(options.get('sleep', ['0'])[0])
        except (ValueError, IndexError):
            sleep = 0.0
        return 1 if sleep > 0.1 else 0
    if component == 'poll':
        return 1
    try:
        return int(options.get('instances', ['1'])[0])
    except (ValueError, IndexError):
        return 1


def fallback_info(config_dir, component, config):
    """Best effort {expected, statehost, files} without sarracenia."""
    conf = config_path(config_dir, component, config)
    search = [os.path.join(config_dir, component), config_dir]
    files, options = [], {}
    for base in ('admin.conf', 'default.conf', conf):
        files, found = scan_config(os.path.join(config_dir, base), search, files)
        options.update(found)
    return {
        'expected': expected_from_options(component, options),
        'statehost': 'statehost' in options and _truthy(options['statehost']),
        'files': files,
    }


# Runs inside the sr3 venv python so includes, defaults and component
# defaults count exactly as sr3 sees them.  argv[1] = JSON list of names.
SARRACENIA_PROBE = r'''
import copy, json, os, sys
import sarracenia.config as sc

names = json.loads(sys.argv[1])
files = []
orig_parse_file = sc.Config.parse_file

def _resolve(self, cfg):
    cfg = os.path.expanduser(cfg)
    if os.path.isabs(cfg):
        return cfg
    for d in self.config_search_path:
        p = os.path.join(d, cfg)
        if os.path.isfile(p):
            return os.path.abspath(p)
    return None

def parse_file(self, cfg, component=None):
    # sarracenia keeps no list of files read: record them for the marker hash
    p = _resolve(self, cfg)
    if p and p not in files:
        files.append(p)
    return orig_parse_file(self, cfg, component)

sc.Config.parse_file = parse_file
config_dir = sc.get_user_config_dir()
result = {'config_dir': config_dir, 'cache_dir': sc.get_user_cache_dir(None), 'configs': {}}
base = sc.default_config()
base_files = list(files)
for name in names:
    c, cfg = name.split('/')
    del files[:]
    files.extend(base_files)
    try:
        os.chdir(os.path.join(config_dir, c))
        o = copy.deepcopy(base)
        o.override({'component': c, 'config': cfg, 'action': 'status', 'directory': '${PWD}'})
        o.applyComponentDefaults(c)
        o.parse_file(cfg + '.conf', c)
        o.finalize(c, cfg + '.conf')
        # same rules as sr.py _read_configs and start()
        if c in ('post', 'cpost'):
            n = 1 if float(o.sleep) > 0.1 else 0
        elif c == 'poll':
            n = 1
        else:
            n = int(getattr(o, 'instances', 1))
        result['configs'][name] = {
            'expected': n, 'statehost': bool(o.statehost),
            'hostdir': o.hostdir, 'files': list(files)}
    except Exception as ex:
        result['configs'][name] = {'error': '%s: %s' % (type(ex).__name__, ex)}
sys.stdout.write('\n' + SENTINEL + json.dumps(result) + '\n')
'''.replace('SENTINEL', repr(JSON_SENTINEL))


def parse_probe_output(text):
    """Extract the probe's JSON (sarracenia may log around it); None if absent."""
    for line in reversed(text.splitlines()):
        if line.startswith(JSON_SENTINEL):
            try:
                return json.loads(line[len(JSON_SENTINEL):])
            except ValueError:
                return None
    return None


def probe_sarracenia(run, sr3, names, warn):
    """Ask the venv's sarracenia about configs; {} (after a warning) when impossible.

    ``run(argv)`` returns (rc, output, timed_out); the probe runs with the
    ``python3`` next to ``sr3``.
    """
    python = os.path.join(os.path.dirname(sr3), 'python3')
    if not names:
        return {}
    if not os.access(python, os.X_OK):
        warn('%s not found: expected instances read from the .conf files' % python)
        return {}
    rc, output, timed_out = run([python, '-c', SARRACENIA_PROBE, json.dumps(names)])
    result = parse_probe_output(output)
    if result is None:
        warn('reading configs with sarracenia failed (rc=%s%s), expected instances '
             'read from the .conf files: %s' % (rc, ', timed out' if timed_out else '', output[-1000:]))
        return {}
    return result


def describe_configs(refs, probe, warn, config_dir, cache_dir):
    """Per config facts: existence, expected instances, statehost, paths, files to hash.

    ``refs`` is [(name, component, config)], ``probe`` what probe_sarracenia
    returned for the existing ones.
    """
    cache_dir = probe.get('cache_dir', cache_dir)
    probed = probe.get('configs', {})
    infos = {}
    for name, component, config in refs:
        exists = os.path.isfile(config_path(config_dir, component, config))
        info = {'name': name, 'component': component, 'config': config, 'exists': exists}
        data = probed.get(name, {})
        if not exists:
            data = {'expected': 0, 'statehost': False, 'files': []}
        elif 'expected' not in data:
            if probed:
                warn('%s: sarracenia could not load it (%s), using the .conf file'
                     % (name, data.get('error', 'no answer')))
            data = fallback_info(config_dir, component, config)
        hostdir = (data.get('hostdir') or default_hostdir()) if data['statehost'] else None
        info.update(expected=data['expected'], files=data['files'], hostdir=hostdir,
                    state_dir=state_dir(cache_dir, component, config, hostdir),
                    cache_dir=cache_dir, config_path=config_path(config_dir, component, config))
        # a removed config may have run with or without statehost: look in both
        info['pid_dirs'] = [info['state_dir']]
        info['hostdirs'] = [hostdir]
        if not exists:
            info['pid_dirs'].append(state_dir(cache_dir, component, config, default_hostdir()))
            info['hostdirs'].append(default_hostdir())
        infos[name] = info
    return infos


def live_in_dirs(info):
    """{instance: pid} running now for one described config."""
    found = {}
    for directory in info['pid_dirs']:
        found.update(running_instances(directory, info['component'], info['config']))
    return found


def metrics_path(cache_dir, component, config, instance, hostdir=None):
    """Per instance metrics JSON, as sarracenia.config.get_metrics_filename names it."""
    return os.path.join(state_base(cache_dir, hostdir), 'metrics',
                        '%s_%s_%02d.json' % (component, config, instance))


def metrics_files(cache_dir, component, config, hostdir=None):
    """{instance: path} of the metrics files of one config (rotated copies left out)."""
    directory = os.path.join(state_base(cache_dir, hostdir), 'metrics')
    prefix = '%s_%s_' % (component, config)
    found = {}
    try:
        names = os.listdir(directory)
    except OSError:
        return found
    for name in names:
        rest = name[len(prefix):] if name.startswith(prefix) else ''
        if len(rest) == 7 and rest.endswith('.json') and rest[:2].isdigit():
            found[int(rest[:2])] = os.path.join(directory, name)
    return found


def metrics_leftovers(cache_dir, component, config, hostdir=None):
    """Metrics files of one config including sr3's dated copies (logMetrics)."""
    directory = os.path.join(state_base(cache_dir, hostdir), 'metrics')
    prefix = '%s_%s_' % (component, config)
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted(os.path.join(directory, n) for n in names
                  if n.startswith(prefix) and n[len(prefix):len(prefix) + 2].isdigit()
                  and n[len(prefix) + 2:len(prefix) + 7] == '.json')


# sr3 3.3.1 keeps each instance's retry queues in its state directory
# (sarracenia/flowcb/retry.py, diskqueue.py): failed messages are appended to
# ``<queue>.new``; at housekeeping the rest of ``<queue>`` and ``<queue>.new``
# are copied to ``<queue>.hk``, which is renamed to ``<queue>``. Downloads use
# two digits for the instance, posts three.
_RETRY_RE = re.compile(r'^diskqueue_(work|post)_retry_(\d+)(?:\.new|\.hk)?$')
RETRY_KINDS = {'work': 'download', 'post': 'post'}
# Written by the collection's copier callback (temp file + rename), per instance.
_COUNTERS_RE = re.compile(r'^hpc_mirror_copier_(\d{2})\.json$')


def _listdir(directory):
    try:
        return sorted(os.listdir(directory))
    except OSError:
        return []


def retry_queue_files(directories):
    """[(kind, instance, path)] of the retry queue files in state directories.

    ``kind`` is ``download`` or ``post``; files of every instance are listed,
    also of instances that no longer run (their messages wait all the same).
    """
    found = []
    for directory in directories:
        for name in _listdir(directory):
            match = _RETRY_RE.match(name)
            if match:
                found.append((RETRY_KINDS[match.group(1)], int(match.group(2)),
                              os.path.join(directory, name)))
    return found


def copier_counter_files(directories):
    """[(instance, path)] of the copier callback's counter files in state directories."""
    found = []
    for directory in directories:
        for name in _listdir(directory):
            match = _COUNTERS_RE.match(name)
            if match:
                found.append((int(match.group(1)), os.path.join(directory, name)))
    return found


# --------------------------------------------------------------------------
# declare markers
# --------------------------------------------------------------------------

def files_digest(paths):
    """sha256 over names and contents, so edits, new or removed includes count."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.encode('utf-8') + b'\0')
        try:
            with open(path, 'rb') as handle:
                digest.update(handle.read())
        except (IOError, OSError):
            digest.update(b'<missing>')
        digest.update(b'\0')
    return digest.hexdigest()


def marker_path(directory):
    return os.path.join(directory, MARKER_NAME)


def marker_is_current(directory, digest):
    try:
        with open(marker_path(directory)) as handle:
            return handle.read().strip() == digest
    except (IOError, OSError):
        return False


def write_marker(directory, digest):
    if not os.path.isdir(directory):
        os.makedirs(directory)
    tmp = marker_path(directory) + '.tmp'
    with open(tmp, 'w') as handle:
        handle.write(digest + '\n')
    os.rename(tmp, marker_path(directory))


# --------------------------------------------------------------------------
# decisions
# --------------------------------------------------------------------------

def decide_action(state, expected, running, restart=False):
    """Run-state action for one config.

    Returns one of none/started/restarted/stopped.  ``sr3 start`` only
    launches configs with no live instance (and waits forever for a missing
    pid file on a partially running one), so partial and over-full configs
    are restarted instead.
    """
    if state in ('stopped', 'absent'):
        # absent: stop first; removal is decided by needs_removal()
        return ACTION_STOPPED if running > 0 else ACTION_NONE
    if state == 'restarted':
        return ACTION_RESTARTED if (expected > 0 or running > 0) else ACTION_NONE
    if state == 'started':
        if running == 0:
            return ACTION_STARTED if expected > 0 else ACTION_NONE
        if running != expected or restart:
            return ACTION_RESTARTED
        return ACTION_NONE
    return ACTION_NONE  # 'declared' and 'present' leave the run state alone


def needs_removal(config_exists, state_exists, metrics_files, running):
    """state=absent: anything of the config left on this host?"""
    return bool(config_exists or state_exists or metrics_files or running)


def wanted_running(action, expected, running):
    """Instance count to wait for after an action."""
    if action == ACTION_STOPPED:
        return 0
    if action in (ACTION_STARTED, ACTION_RESTARTED):
        return expected
    return running


def run_state(expected, running):
    """Short human label used in the diff."""
    if running == 0:
        return 'stopped'
    if running < expected:
        return 'partial'
    return 'running' if running == expected else 'excess'


# --------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------

def sr3_environment(sr3, env=None):
    """The environment sr3 runs in: its own directory first on PATH.

    As in an activated virtualenv: ``sr3 start`` launches the sr3c components
    of cpost/cpump configs as plain ``sr3_cpost``/``sr3_cpump``, found on PATH,
    so a link to them next to ``sr3`` is enough.
    """
    env = dict(os.environ if env is None else env)
    directory = os.path.dirname(sr3)
    parts = [p for p in env.get('PATH', os.defpath).split(os.pathsep) if p and p != directory]
    env['PATH'] = os.pathsep.join(([directory] if directory else []) + parts)
    return env


def run_command(argv, timeout, cwd=None, env=None):
    """Run argv; return (rc, combined output, timed_out).

    Own session: sr3 forks the flow instances, which must not get a SIGHUP
    when the Ansible connection ends.  Output goes to a file, not a pipe,
    because instances with ``logStdout`` inherit it and would keep a pipe
    open forever.  On timeout only sr3 itself is signalled (it stops its
    wait loops on SIGTERM); instances it launched keep running.
    """
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, cwd=cwd, env=env,
                                start_new_session=True)
        timed_out = False
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.terminate()
            try:
                rc = proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
        out.seek(0)
        return rc, out.read().decode('utf-8', 'replace'), timed_out


def error_lines(output):
    """sr3 exits 0 even on failures; its log lines are the only signal."""
    return [line for line in output.splitlines()
            if '[ERROR]' in line or '[CRITICAL]' in line]


def tail(path, lines=10):
    """Last lines of a (possibly large) log file, '' if unreadable."""
    try:
        with open(path, 'rb') as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 16384))
            data = handle.read().decode('utf-8', 'replace')
    except (IOError, OSError):
        return ''
    return '\n'.join(data.splitlines()[-lines:])


def wait_stable(check, timeout, settle=0.0, interval=0.5, clock=time.time, sleep=time.sleep):
    """Poll ``check()`` until it held for ``settle`` seconds; False after timeout.

    The settle time catches instances that write their pid file and die.
    """
    deadline = clock() + timeout + settle
    good_since = None
    while True:
        now = clock()
        if check():
            good_since = now if good_since is None else good_since
            if now - good_since >= settle:
                return True
        else:
            good_since = None
        if now >= deadline:
            return False
        sleep(interval)
