# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests of the sr3 run-state helpers: decision table, paths, pid files, markers."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os
import subprocess
import sys
import time

import pytest

from ansible_collections.sr3.hpc_mirror.plugins.module_utils import sr3_metrics
from ansible_collections.sr3.hpc_mirror.plugins.module_utils import sr3_state as s


# --------------------------------------------------------------------------
# decision table
# --------------------------------------------------------------------------

# (state, expected, running, restart) -> action
DECISIONS = [
    # started: start stopped ones, leave complete ones alone
    ('started', 2, 0, False, 'started'),
    ('started', 2, 2, False, 'none'),
    ('started', 1, 1, False, 'none'),
    # partial: sr3 start would hang or do nothing, so restart
    ('started', 2, 1, False, 'restarted'),
    ('started', 4, 3, False, 'restarted'),
    # more instances than configured (instances lowered): restart
    ('started', 2, 3, False, 'restarted'),
    # restart only touches running configs; stopped ones are just started
    ('started', 2, 2, True, 'restarted'),
    ('started', 2, 0, True, 'started'),
    ('started', 2, 1, True, 'restarted'),
    # non-daemon post/cpost: nothing to start
    ('started', 0, 0, False, 'none'),
    ('started', 0, 0, True, 'none'),
    ('started', 0, 1, False, 'restarted'),
    # stopped
    ('stopped', 2, 2, False, 'stopped'),
    ('stopped', 2, 1, False, 'stopped'),
    ('stopped', 2, 0, False, 'none'),
    ('stopped', 0, 0, True, 'none'),
    # restarted: always, unless there is nothing that could run
    ('restarted', 2, 2, False, 'restarted'),
    ('restarted', 2, 0, False, 'restarted'),
    ('restarted', 0, 0, False, 'none'),
    ('restarted', 0, 1, False, 'restarted'),
    # declared never changes the run state
    ('declared', 2, 0, False, 'none'),
    ('declared', 2, 1, True, 'none'),
]


@pytest.mark.parametrize('state,expected,running,restart,action', DECISIONS)
def test_decide_action(state, expected, running, restart, action):
    assert s.decide_action(state, expected, running, restart) == action


@pytest.mark.parametrize('action,expected,running,wanted', [
    ('started', 2, 0, 2),
    ('restarted', 2, 3, 2),
    ('stopped', 2, 2, 0),
    ('none', 2, 1, 1),
    ('declared', 2, 0, 0),
])
def test_wanted_running(action, expected, running, wanted):
    assert s.wanted_running(action, expected, running) == wanted


@pytest.mark.parametrize('expected,running,label', [
    (2, 0, 'stopped'), (2, 1, 'partial'), (2, 2, 'running'), (2, 3, 'excess'), (0, 0, 'stopped'),
])
def test_run_state(expected, running, label):
    assert s.run_state(expected, running) == label


# --------------------------------------------------------------------------
# names and paths
# --------------------------------------------------------------------------

@pytest.mark.parametrize('name,parts', [
    ('shovel/m_tally', ('shovel', 'm_tally')),
    ('winnow/m00', ('winnow', 'm00')),
    ('cpost/veille-1.2', ('cpost', 'veille-1.2')),
])
def test_parse_config_name_ok(name, parts):
    assert s.parse_config_name(name) == parts


@pytest.mark.parametrize('name,fragment', [
    ('m_tally', 'component/config'),
    ('shovel/a/b', 'component/config'),
    ('shovle/m', 'unknown component'),
    ('shovel/', 'invalid config name'),
    ('shovel/.hidden', 'invalid config name'),
    ('shovel/with space', 'invalid config name'),
    ('shovel/m.conf', '.conf suffix'),
    (None, 'component/config'),
])
def test_parse_config_name_bad(name, fragment):
    with pytest.raises(ValueError, match=fragment.replace('.', r'\.')):
        s.parse_config_name(name)


def test_default_user_dirs_home_and_xdg(tmp_path):
    home = str(tmp_path)
    assert s.default_user_dirs({'HOME': home}) == (
        os.path.join(home, '.config', 'sr3'), os.path.join(home, '.cache', 'sr3'))
    env = {'HOME': home, 'XDG_CONFIG_HOME': '/x/conf', 'XDG_CACHE_HOME': '/x/cache'}
    assert s.default_user_dirs(env) == ('/x/conf/sr3', '/x/cache/sr3')


def test_paths_without_and_with_statehost():
    cache = '/home/opsm/.cache/sr3'
    assert s.state_dir(cache, 'shovel', 'm_tally') == cache + '/shovel/m_tally'
    assert s.state_dir(cache, 'shovel', 'm_tally', 'node1') == cache + '/node1/shovel/m_tally'
    assert s.pid_path(cache, 'sarra', 'm_copy', 2) == cache + '/sarra/m_copy/sarra_m_copy_02.pid'
    assert s.pid_path(cache, 'sarra', 'm_copy', 12, 'node1') == \
        cache + '/node1/sarra/m_copy/sarra_m_copy_12.pid'
    assert s.log_path(cache, 'sarra', 'm_copy', 1) == cache + '/log/sarra_m_copy_01.log'
    assert s.log_path(cache, 'sarra', 'm_copy', 1, 'node1') == cache + '/node1/log/sarra_m_copy_01.log'
    assert s.config_path('/c', 'watch', 'm') == '/c/watch/m.conf'


def test_is_disabled_looks_at_both_state_dirs(tmp_path):
    cache = str(tmp_path)
    assert not s.is_disabled(cache, 'shovel', 'x', 'node1')
    plain = tmp_path / 'shovel' / 'x'
    plain.mkdir(parents=True)
    (plain / 'disabled').write_text('')
    assert s.is_disabled(cache, 'shovel', 'x', 'node1')
    assert s.is_disabled(cache, 'shovel', 'x')


# --------------------------------------------------------------------------
# pid files and /proc
# --------------------------------------------------------------------------

@pytest.mark.parametrize('filename,instance', [
    ('shovel_m_tally_01.pid', 1),
    ('/a/b/sarra_m_copy_12.pid', 12),
    ('i03.pid', 3),              # sr3c components
    ('shovel_x_01.qname', None),
    ('running', None),
    ('shovel_x_ab.pid', None),
])
def test_instance_from_pidfile(filename, instance):
    assert s.instance_from_pidfile(filename) == instance


def write(path, text):
    path.write_text(text)
    return path


def test_read_pid_files_ignores_junk(tmp_path):
    write(tmp_path / 'shovel_t_01.pid', '123\n')
    write(tmp_path / 'shovel_t_02.pid', '')           # being written
    write(tmp_path / 'shovel_t_03.pid', 'garbage')
    write(tmp_path / 'shovel.t.opsm.qname', 'q_opsm.x')
    write(tmp_path / 'hpc_mirror_declared', 'abc')
    write(tmp_path / 'i04.pid', '456')
    assert s.read_pid_files(str(tmp_path)) == {1: 123, 4: 456}


def test_read_pid_files_missing_dir(tmp_path):
    assert s.read_pid_files(str(tmp_path / 'nope')) == {}


def fake_proc(root, pid, argv):
    d = root / str(pid)
    d.mkdir(parents=True)
    (d / 'cmdline').write_bytes(b'\0'.join(a.encode() for a in argv) + b'\0')


INSTANCE = ['/v/bin/python3', '/v/lib/sarracenia/instance.py', '--no', '1', 'start', 'shovel/t']


@pytest.mark.parametrize('argv,expected', [
    (INSTANCE, True),
    (['/usr/bin/sr3_cpost', 'start', 't'], True),
    (['/usr/bin/sr3_cpost', 'foreground', '/home/u/.config/sr3/shovel/t.conf'], True),
    (['/v/bin/python3', 'instance.py', '--no', '1', 'start', 'shovel/t2'], False),
    (['/v/bin/python3', 'instance.py', '--no', '1', 'start', 'winnow/t'], False),
    (['bash'], False),
    ([], False),
])
def test_cmdline_mentions(argv, expected):
    assert s.cmdline_mentions(argv, 'shovel', 't') is expected


def test_running_instances_drops_stale_and_reused_pids(tmp_path):
    state = tmp_path / 'state'
    state.mkdir()
    proc = tmp_path / 'proc'
    write(state / 'shovel_t_01.pid', '101')   # alive, ours
    write(state / 'shovel_t_02.pid', '102')   # stale: no such process
    write(state / 'shovel_t_03.pid', '103')   # pid reused by something else
    write(state / 'shovel_t_04.pid', '104')   # zombie: empty cmdline
    fake_proc(proc, 101, INSTANCE)
    fake_proc(proc, 103, ['/usr/sbin/sshd', '-D'])
    (proc / '104').mkdir()
    (proc / '104' / 'cmdline').write_bytes(b'')
    assert s.running_instances(str(state), 'shovel', 't', str(proc)) == {1: 101}


def test_running_instances_real_process(tmp_path):
    """A real child whose argv names the config counts; once dead it does not."""
    state = tmp_path / 'state'
    state.mkdir()
    child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)', 'start', 'shovel/t'])
    # until the child has exec'd, /proc/<pid>/cmdline is empty or still the parent's
    deadline = time.time() + 5
    while 'shovel/t' not in s.read_cmdline(child.pid) and time.time() < deadline:
        time.sleep(0.01)
    try:
        write(state / 'shovel_t_01.pid', str(child.pid))
        write(state / 'shovel_t_02.pid', str(os.getpid()))  # alive but not ours
        assert s.running_instances(str(state), 'shovel', 't') == {1: child.pid}
    finally:
        child.kill()
        child.wait()
    assert s.running_instances(str(state), 'shovel', 't') == {}


# --------------------------------------------------------------------------
# fallback config parsing
# --------------------------------------------------------------------------

def make_config_dir(tmp_path, component, name, body, default=''):
    root = tmp_path / 'sr3'
    (root / component).mkdir(parents=True)
    (root / 'default.conf').write_text(default)
    (root / component / (name + '.conf')).write_text(body)
    return root


def test_fallback_info_instances_includes_and_defaults(tmp_path):
    root = make_config_dir(tmp_path, 'shovel', 'a', 'broker amqp://u@h/\ninclude common.inc\n',
                           default='instances 5\n')
    (root / 'shovel' / 'common.inc').write_text('instances 3\nstatehost on\n')
    info = s.fallback_info(str(root), 'shovel', 'a')
    assert info['expected'] == 3
    assert info['statehost'] is True
    assert info['files'] == [str(root / 'default.conf'), str(root / 'shovel' / 'a.conf'),
                             str(root / 'shovel' / 'common.inc')]


def test_fallback_info_default_conf_counts(tmp_path):
    root = make_config_dir(tmp_path, 'sarra', 'b', '# instances 9\nbroker amqp://u@h/\n',
                           default='instances 4\n')
    info = s.fallback_info(str(root), 'sarra', 'b')
    assert info['expected'] == 4
    assert info['statehost'] is False


def test_fallback_info_include_loop_terminates(tmp_path):
    root = make_config_dir(tmp_path, 'shovel', 'c', 'include c.conf\ninstance 2\n')
    assert s.fallback_info(str(root), 'shovel', 'c')['expected'] == 2


@pytest.mark.parametrize('component,options,expected', [
    ('shovel', {}, 1),
    ('shovel', {'instances': ['4']}, 4),
    ('shovel', {'instances': ['${N}']}, 1),
    ('poll', {'instances': ['3']}, 1),
    ('cpost', {}, 0),
    ('cpost', {'sleep': ['30'], 'path': ['/d']}, 1),
    ('post', {'sleep': ['30']}, 1),
    ('post', {'sleep': ['0.1'], 'path': ['/d']}, 0),
    ('post', {'sleep': ['x']}, 0),
    ('watch', {'path': ['/d']}, 1),
])
def test_expected_from_options(component, options, expected):
    assert s.expected_from_options(component, options) == expected


# --------------------------------------------------------------------------
# markers
# --------------------------------------------------------------------------

def test_marker_roundtrip_and_staleness(tmp_path):
    conf = write(tmp_path / 'a.conf', 'instances 2\n')
    inc = write(tmp_path / 'b.inc', 'x 1\n')
    state = tmp_path / 'state' / 'shovel' / 'a'
    digest = s.files_digest([str(conf), str(inc)])
    assert not s.marker_is_current(str(state), digest)
    s.write_marker(str(state), digest)
    assert (state / s.MARKER_NAME).read_text().strip() == digest
    assert s.marker_is_current(str(state), digest)
    inc.write_text('x 2\n')
    assert s.files_digest([str(conf), str(inc)]) != digest
    # a vanished include changes the digest too
    assert s.files_digest([str(conf), str(tmp_path / 'gone.inc')]) != s.files_digest([str(conf)])


def test_marker_is_not_a_dotfile():
    # sr3 cleanup skips dotfiles; the marker must go away with the queues
    assert not s.MARKER_NAME.startswith('.')


# --------------------------------------------------------------------------
# probe output, commands, log tails, waiting
# --------------------------------------------------------------------------

def test_parse_probe_output_finds_json_among_logs():
    payload = {'cache_dir': '/c', 'configs': {'shovel/a': {'expected': 2}}}
    text = '2026 [ERROR] noise\n%s%s\nmore noise\n' % (s.JSON_SENTINEL, json.dumps(payload))
    assert s.parse_probe_output(text) == payload
    assert s.parse_probe_output('Traceback ...') is None
    assert s.parse_probe_output(s.JSON_SENTINEL + '{broken') is None


def test_probe_is_valid_python():
    compile(s.SARRACENIA_PROBE, '<probe>', 'exec')
    assert repr(s.JSON_SENTINEL) in s.SARRACENIA_PROBE


def test_run_command_output_and_timeout(tmp_path):
    rc, out, timed_out = s.run_command([sys.executable, '-c', 'print("hi"); import sys; sys.exit(3)'], 10)
    assert (rc, out.strip(), timed_out) == (3, 'hi', False)
    rc, out, timed_out = s.run_command([sys.executable, '-c', 'import time; time.sleep(30)'], 0.5)
    assert timed_out and rc != 0


def test_sr3_environment_puts_sr3s_directory_first():
    env = s.sr3_environment('/h/venv/bin/sr3', {'PATH': '/usr/bin:/h/venv/bin:/bin', 'HOME': '/h'})
    assert env == {'PATH': '/h/venv/bin:/usr/bin:/bin', 'HOME': '/h'}
    assert s.sr3_environment('/v/sr3', {})['PATH'].startswith('/v' + os.pathsep)


def test_run_command_with_an_environment():
    rc, out, timed_out = s.run_command(
        [sys.executable, '-c', 'import os; print(os.environ["PATH"])'], 10, env={'PATH': '/nowhere'})
    assert (rc, out.strip(), timed_out) == (0, '/nowhere', False)


def test_error_lines():
    out = 'ok\n2026 1 [ERROR] a\n2026 1 [INFO] b\n2026 [CRITICAL] c\n'
    assert s.error_lines(out) == ['2026 1 [ERROR] a', '2026 [CRITICAL] c']


def test_tail(tmp_path):
    log = write(tmp_path / 'x.log', ''.join('line %d\n' % i for i in range(100)))
    assert s.tail(str(log), 3) == 'line 97\nline 98\nline 99'
    assert s.tail(str(tmp_path / 'missing.log')) == ''


class FakeClock(object):
    def __init__(self):
        self.now = 0.0

    def time(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


@pytest.mark.parametrize('results,timeout,settle,ok', [
    ([True], 5, 0, True),
    ([False, False, True], 5, 0, True),
    ([False] * 100, 2, 0, False),
    # has to hold for the settle time: a flapping check does not pass
    ([True, False, True, True, True], 5, 1.0, True),
    ([True, False] * 50, 3, 1.0, False),
])
def test_wait_stable(results, timeout, settle, ok):
    clock = FakeClock()
    answers = iter(results + [results[-1]] * 100)
    assert s.wait_stable(lambda: next(answers), timeout, settle, 0.5, clock.time, clock.sleep) is ok


# --------------------------------------------------------------------------
# retry queues and copier counters in the state directory
# --------------------------------------------------------------------------

def test_retry_queue_files_are_those_sr3_writes(tmp_path):
    """sr3 3.3.1's own retry callback, run without a broker, names the files."""
    pytest.importorskip('sarracenia')
    import sarracenia
    import sarracenia.config
    from sarracenia.flowcb.retry import Retry

    state = tmp_path / 'sarra' / 'm_copy'
    state.mkdir(parents=True)
    # sr3 drops messages older than retry_ttl at housekeeping: posted 10 minutes ago
    posted = time.strftime('%Y%m%dT%H%M%S', time.gmtime(time.time() - 600)) + '.264876842'
    found = {}
    for instance in (1, 2):
        options = sarracenia.config.default_config()
        options.pid_filename = str(state / ('sarra_m_copy_%02d.pid' % instance))
        options.no = instance
        options.retry_ttl = 3600
        retry = Retry(options)
        retry.on_start()
        message = sarracenia.Message()
        message.update(pubTime=posted, baseUrl='file:/', relPath='p/x%d' % instance)
        message['_deleteOnPost'] = set()

        class Worklist(object):
            failed, ok, incoming = [message], [], []
        retry.after_work(Worklist)   # a failed download
        Worklist.failed = [message]
        retry.after_post(Worklist)   # a failed post
        found[instance] = retry
    names = sorted(os.path.basename(p) for k, i, p in s.retry_queue_files([str(state)]))
    assert names == ['diskqueue_post_retry_001.new', 'diskqueue_post_retry_002.new',
                     'diskqueue_work_retry_01.new', 'diskqueue_work_retry_02.new']
    found[1].on_housekeeping()  # .new becomes the queue file
    listed = s.retry_queue_files([str(state), str(tmp_path / 'nowhere')])
    assert sorted((k, i, os.path.basename(p)) for k, i, p in listed) == [
        ('download', 1, 'diskqueue_work_retry_01'), ('download', 2, 'diskqueue_work_retry_02.new'),
        ('post', 1, 'diskqueue_post_retry_001'), ('post', 2, 'diskqueue_post_retry_002.new')]
    assert found[1].metricsReport() == {'msgs_in_download_retry': 1, 'msgs_in_post_retry': 1}
    # and what sr3 wrote is read back: the oldest message of each kind
    oldest = sr3_metrics.oldest_retry(listed, sr3_metrics.sr3_time(posted) + 600)
    assert (oldest['download']['path'], oldest['download']['age'], oldest['download']['tries']) == ('p/x1', 600.0, 1)
    assert oldest['post']['path'] == 'p/x1' and oldest['post']['instance'] == 1


def test_copier_counter_files_leave_temporary_files_out(tmp_path):
    for name in ('hpc_mirror_copier_01.json', 'hpc_mirror_copier_02.json', 'hpc_mirror_copier_02.json.tmp',
                 '.hpc_mirror_copier_03.json.x1y2', 'hpc_mirror_copier_4.json', 'sarra_m_copy_01.pid'):
        write(tmp_path / name, '{}')
    assert s.copier_counter_files([str(tmp_path), str(tmp_path / 'nowhere')]) == [
        (1, str(tmp_path / 'hpc_mirror_copier_01.json')), (2, str(tmp_path / 'hpc_mirror_copier_02.json'))]
