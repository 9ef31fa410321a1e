# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run sr3.hpc_mirror.sr3_config for real: ansible -> su -> sr3 -> RabbitMQ.

Self-contained: as root, the module fixture ``sr3_env`` creates a throwaway
unix user ``sr3cfgtest`` with its own sr3 venv, a RabbitMQ vhost and broker
user of the same name (random password in the user's credentials.conf), and
starts RabbitMQ if it is not running. Teardown always removes all of it again
(processes, user and home, vhost, broker user) and stops RabbitMQ if the
fixture started it.

Uses throwaway configs shovel/t_cfgmod (2 instances) and shovel/t_cfgmodbad
(an instance that dies at start); both are stopped and removed (config,
state, queue, logs) afterwards.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
USER = 'sr3cfgtest'
VHOST = 'sr3cfgtest'
BROKER = 'amqp://%s@localhost/%s' % (USER, VHOST)
# marks the unix user as ours, so a leftover of a killed run may be removed
GECOS = 'sr3.hpc_mirror integration test, throwaway'
SR3_PACKAGE = 'metpx-sr3[amqp]==3.3.1'
CONFIG = 'shovel/t_cfgmod'
BAD = 'shovel/t_cfgmodbad'
OTHER = 'shovel/t_cfgmod2'


def _which(name):
    found = shutil.which(name)
    if found is None:  # sbin is not always on a CI PATH
        found = shutil.which(name, path='/usr/local/sbin:/usr/sbin:/sbin')
    return found


ANSIBLE = os.path.join(os.path.dirname(sys.executable), 'ansible')
if not os.access(ANSIBLE, os.X_OK):
    ANSIBLE = shutil.which('ansible')
RUNUSER = _which('runuser')
RABBITMQ_SERVER = _which('rabbitmq-server')
RABBITMQCTL = _which('rabbitmqctl')

# the shovel consumes and publishes on the same exchange so that one
# `sr3 declare` creates the exchange before binding to it; nothing posts there
CONF_TEXT = """\
broker {broker}
exchange xs_{user}_t_cfgmod
topicPrefix v02.post
subtopic #
post_broker {broker}
post_exchange xs_{user}_t_cfgmod
instances 2
""".format(broker=BROKER, user=USER)


def conf_text(exchange, instances):
    return CONF_TEXT.replace('xs_%s_t_cfgmod' % USER, exchange).replace('instances 2', 'instances %d' % instances)


OTHER_TEXT = conf_text('xs_%s_t_cfgmod2' % USER, 1)
BAD_TEXT = conf_text('xs_%s_t_cfgmodbad' % USER, 1) + 'flowcb no_such_plugin.Nope\n'


def _skip_reason():
    if os.geteuid() != 0:
        return 'needs root (creates the throwaway user %s and a RabbitMQ vhost)' % USER
    for name, path in (('rabbitmq-server', RABBITMQ_SERVER), ('rabbitmqctl', RABBITMQCTL), ('runuser', RUNUSER)):
        if path is None:
            return '%s is not installed' % name
    if ANSIBLE is None:
        return 'no ansible next to %s nor on PATH' % sys.executable
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))

HOME = os.path.join('/home', USER)
VENV = os.path.join(HOME, 'venv')
SR3 = os.path.join(VENV, 'bin', 'sr3')
CONF_DIR = os.path.join(HOME, '.config', 'sr3')
CACHE_DIR = os.path.join(HOME, '.cache', 'sr3')
# the module runs as the test user, which can not read the controller venv's python
TARGET_PYTHON = '/usr/bin/python3'


def _run(argv, timeout=300, **kwargs):
    return subprocess.run(argv, cwd='/', stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, timeout=timeout, check=False,
                          **kwargs)


def rabbitmqctl(*args, **kwargs):
    return _run([RABBITMQCTL, '-q'] + list(args), **kwargs)


def _must(proc, what):
    if proc.returncode != 0:
        raise RuntimeError('%s failed (rc=%s):\n%s' % (what, proc.returncode, proc.stdout))
    return proc


def _rabbit_up():
    return rabbitmqctl('status', timeout=120).returncode == 0


def _epmd_running():
    return _run(['pgrep', '-x', 'epmd']).returncode == 0


def _start_rabbit():
    # -detached daemonizes; keep it off our pipes and out of our session
    subprocess.run([RABBITMQ_SERVER, '-detached'], cwd='/', stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                   timeout=120, check=False)
    deadline = time.time() + 300
    while True:
        waited = rabbitmqctl('await_startup', '--timeout', '60', timeout=120)
        if waited.returncode == 0:
            return
        if time.time() > deadline:
            raise RuntimeError('RabbitMQ did not start (rabbitmq-server -detached):\n%s' % waited.stdout)
        time.sleep(1)


def _user_exists():
    try:
        pwd.getpwnam(USER)
        return True
    except KeyError:
        return False


def _kill_user_processes():
    for sig in ('TERM', 'KILL'):
        _run(['pkill', '-%s' % sig, '-u', USER])
        deadline = time.time() + 15
        while _run(['pgrep', '-u', USER]).returncode == 0 and time.time() < deadline:
            time.sleep(0.2)
    left = _run(['pgrep', '-a', '-u', USER])
    if left.returncode == 0:
        raise RuntimeError('processes of %s survived SIGKILL:\n%s' % (USER, left.stdout))


def _remove_everything():
    """Remove the unix user, its home and processes, its vhost and broker user.

    Every step runs even when an earlier one fails; the failures are raised
    together at the end.
    """
    errors = []

    def step(what, action):
        try:
            action()
        except Exception as exc:  # pylint: disable=broad-except
            errors.append('%s: %s' % (what, exc))

    if _user_exists():
        step('kill processes', _kill_user_processes)
        step('userdel', lambda: _must(_run(['userdel', '-r', USER]), 'userdel -r %s' % USER))
    if _rabbit_up():
        vhosts = rabbitmqctl('list_vhosts', '--no-table-headers', 'name').stdout.split()
        if VHOST in vhosts:
            step('delete vhost', lambda: _must(rabbitmqctl('delete_vhost', VHOST), 'delete_vhost'))
        users = [line.split('\t')[0] for line in
                 rabbitmqctl('list_users', '--no-table-headers').stdout.splitlines()]
        if USER in users:
            step('delete broker user', lambda: _must(rabbitmqctl('delete_user', USER), 'delete_user'))
    else:
        errors.append('RabbitMQ is not running: vhost and broker user %s not checked' % VHOST)
    if errors:
        raise RuntimeError('cleaning up %s failed:\n%s' % (USER, '\n'.join(errors)))


def _create_everything(password):
    _must(_run(['useradd', '-m', '-d', HOME, '-s', '/bin/bash', '-c', GECOS, USER]), 'useradd')
    _must(as_user(['mkdir', '-p', os.path.join(CONF_DIR, 'shovel'), CACHE_DIR]), 'mkdir')
    _must(as_user(['/usr/bin/python3', '-m', 'venv', VENV]), 'python3 -m venv')
    _must(as_user([os.path.join(VENV, 'bin', 'pip'), 'install', '-q', SR3_PACKAGE], timeout=900),
          'pip install %s' % SR3_PACKAGE)

    _must(rabbitmqctl('add_vhost', VHOST), 'add_vhost')
    _must(rabbitmqctl('add_user', USER, password), 'add_user')
    _must(rabbitmqctl('set_permissions', '-p', VHOST, USER,
                      '^q_%s.*|^xs_%s.*' % (USER, USER),
                      '^q_%s.*|^xs_%s.*' % (USER, USER),
                      '^q_%s.*|^x[lrs]_%s.*|^x.*public$' % (USER, USER)), 'set_permissions')

    pw = pwd.getpwnam(USER)
    path = os.path.join(CONF_DIR, 'credentials.conf')
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, 'w') as handle:
        os.fchown(handle.fileno(), pw.pw_uid, pw.pw_gid)
        handle.write('amqp://%s:%s@localhost/%s\n' % (USER, password, VHOST))


@pytest.fixture(scope='module')
def sr3_env():
    """The throwaway user, its sr3 venv and broker account; always removed again."""
    if _user_exists():
        gecos = pwd.getpwnam(USER).pw_gecos
        if gecos != GECOS:
            pytest.fail('a user %s exists that this test did not create (comment %r); not touching it'
                        % (USER, gecos))
    elif os.path.lexists(HOME):
        pytest.fail('%s exists but user %s does not; remove it by hand' % (HOME, USER))

    started_rabbit = False
    epmd_before = _epmd_running()
    try:
        if not _rabbit_up():
            started_rabbit = True
            _start_rabbit()
        _remove_everything()  # leftovers of a killed earlier run
        _create_everything(secrets.token_hex(16))
        yield
    finally:
        errors = []
        try:
            _remove_everything()
        except Exception as exc:  # pylint: disable=broad-except
            errors.append(str(exc))
        if started_rabbit:
            stopped = rabbitmqctl('shutdown', timeout=300)
            if stopped.returncode != 0:
                errors.append('rabbitmqctl shutdown failed:\n%s' % stopped.stdout)
            elif not epmd_before and _epmd_running():
                _run(['epmd', '-kill'])  # rabbit started it; shutdown leaves it
        if _user_exists():
            errors.append('user %s still exists' % USER)
        if os.path.lexists(HOME):
            errors.append('%s still exists' % HOME)
        if errors:
            pytest.fail('teardown left things behind:\n%s' % '\n'.join(errors))


def as_user(argv, timeout=300):
    return _run([RUNUSER, '-u', USER, '--'] + argv, timeout=timeout)


def sr3(*args):
    return as_user([SR3] + list(args))


def run_module(tmp_path, check=False, diff=False, **args):
    """Run the module through ansible; return the task result dict."""
    argv = [ANSIBLE, 'localhost', '-c', 'local', '-m', 'sr3.hpc_mirror.sr3_config',
            '-a', json.dumps(dict({'sr3': SR3}, **args)),
            '-e', 'ansible_python_interpreter=%s' % TARGET_PYTHON]
    argv += ['--become', '--become-user', USER, '--become-method', 'su']
    if check:
        argv.append('--check')
    if diff:
        argv.append('--diff')
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=ROOT, ANSIBLE_STDOUT_CALLBACK='json',
               ANSIBLE_LOAD_CALLBACK_PLUGINS='1', ANSIBLE_LOCALHOST_WARNING='0',
               ANSIBLE_INVENTORY_UNPARSED_WARNING='0', ANSIBLE_NOCOLOR='1')
    env.pop('ANSIBLE_CONFIG', None)
    # cwd away from the checkout so its ansible.cfg (inventory etc.) is not used
    proc = subprocess.run(argv, cwd=str(tmp_path), env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=300, check=False)
    try:
        out = json.loads(proc.stdout)
        return out['plays'][0]['tasks'][0]['hosts']['localhost']
    except (ValueError, KeyError, IndexError):
        pytest.fail('ansible output not understood (rc=%s):\n%s\n%s' % (proc.returncode, proc.stdout, proc.stderr))


def state_dir(name):
    return os.path.join(CACHE_DIR, name)


def live_pids(name):
    """{instance: pid} of running instances, straight from pid files and /proc."""
    found = {}
    directory = state_dir(name)
    for entry in os.listdir(directory) if os.path.isdir(directory) else []:
        if not entry.endswith('.pid'):
            continue
        with open(os.path.join(directory, entry)) as handle:
            text = handle.read().strip()
        try:
            with open('/proc/%s/cmdline' % text, 'rb') as handle:
                cmdline = handle.read().split(b'\0')
        except (IOError, OSError):
            continue
        if name.encode() in cmdline:
            found[int(entry[-6:-4])] = int(text)
    return found


def wait_for(predicate, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.3)
    return predicate()


def write_config(name, text):
    path = os.path.join(CONF_DIR, name + '.conf')
    with open(path, 'w') as handle:
        handle.write(text)
    pw = pwd.getpwnam(USER)
    os.chown(path, pw.pw_uid, pw.pw_gid)
    return path


def remove_config(name):
    """Stop, delete queue/exchange/state/config, then whatever sr3 leaves behind."""
    component, config = name.split('/')
    if os.path.exists(os.path.join(CONF_DIR, name + '.conf')):
        sr3('stop', name)
        sr3('--dangerWillRobinson=1', 'remove', name)
    for pid in live_pids(name).values():  # only processes of our own test config
        os.kill(pid, signal.SIGKILL)
    prefix = '%s_%s_' % (component, config)
    for sub in ('log', 'metrics'):
        directory = os.path.join(CACHE_DIR, sub)
        for entry in os.listdir(directory) if os.path.isdir(directory) else []:
            if entry.startswith(prefix) and entry[len(prefix):len(prefix) + 2].isdigit():
                os.unlink(os.path.join(directory, entry))
    shutil.rmtree(state_dir(name), ignore_errors=True)
    if os.path.exists(os.path.join(CONF_DIR, name + '.conf')):
        os.unlink(os.path.join(CONF_DIR, name + '.conf'))


@pytest.fixture(scope='module')
def t_config(sr3_env):
    # sr3 remove deletes queues but exchanges only with an admin broker; the
    # exchanges go with the vhost when sr3_env is torn down
    remove_config(CONFIG)
    write_config(CONFIG, CONF_TEXT)
    try:
        yield CONFIG
    finally:
        for name in (CONFIG, OTHER, BAD):
            remove_config(name)
    assert not os.path.exists(os.path.join(CONF_DIR, CONFIG + '.conf'))


@pytest.fixture
def stopped(t_config, tmp_path):
    result = run_module(tmp_path, configs=[t_config], state='stopped')
    assert not result.get('failed'), result
    assert live_pids(t_config) == {}
    return t_config


def test_started_then_idempotent(stopped, tmp_path):
    started_at = time.time()
    result = run_module(tmp_path, configs=[stopped], state='started')
    assert not result.get('failed'), result
    assert result['changed'] is True
    info = result['configs'][stopped]
    assert (info['expected'], info['running'], info['action']) == (2, 2, 'started')
    assert info['component'] == 'shovel'
    assert [c['cmd'][1] for c in result['commands']][-1] == 'start'
    assert sorted(live_pids(stopped)) == [1, 2]
    print('first start took %.1fs' % (time.time() - started_at))

    again = run_module(tmp_path, configs=[stopped], state='started')
    assert again['changed'] is False, again
    assert again['commands'] == []
    assert again['configs'][stopped]['action'] == 'none'
    assert again['configs'][stopped]['running'] == 2


def test_killed_instance_is_brought_back(stopped, tmp_path):
    assert run_module(tmp_path, configs=[stopped], state='started')['changed'] is True
    pids = live_pids(stopped)
    os.kill(pids[2], signal.SIGKILL)  # leaves a stale pid file behind
    assert wait_for(lambda: sorted(live_pids(stopped)) == [1])

    result = run_module(tmp_path, configs=[stopped], state='started')
    assert not result.get('failed'), result
    assert result['changed'] is True
    assert result['configs'][stopped]['action'] == 'restarted'
    assert result['configs'][stopped]['running'] == 2
    assert sorted(live_pids(stopped)) == [1, 2]


def test_check_mode_changes_nothing(stopped, tmp_path):
    result = run_module(tmp_path, check=True, diff=True, configs=[stopped], state='started')
    assert not result.get('failed'), result
    assert result['changed'] is True
    assert result['commands'] == []
    assert result['configs'][stopped]['action'] == 'started'
    assert result['configs'][stopped]['running'] == 0
    assert result['diff']['before'][stopped]['running'] == 0
    assert result['diff']['after'][stopped]['running'] == 2
    time.sleep(1)
    assert live_pids(stopped) == {}

    # and nothing happens to a running config with restart in check mode
    run_module(tmp_path, configs=[stopped], state='started')
    before = live_pids(stopped)
    result = run_module(tmp_path, check=True, configs=[stopped], state='started', restart=True)
    assert result['changed'] is True and result['commands'] == []
    assert result['configs'][stopped]['action'] == 'restarted'
    assert live_pids(stopped) == before


def test_stopped(t_config, tmp_path):
    run_module(tmp_path, configs=[t_config], state='started')
    assert len(live_pids(t_config)) == 2
    result = run_module(tmp_path, configs=[t_config], state='stopped')
    assert not result.get('failed'), result
    assert result['changed'] is True
    assert result['configs'][t_config]['action'] == 'stopped'
    assert result['configs'][t_config]['running'] == 0
    assert [c['cmd'][1:] for c in result['commands']] == [['stop', t_config]]
    assert live_pids(t_config) == {}

    again = run_module(tmp_path, configs=[t_config], state='stopped')
    assert again['changed'] is False and again['commands'] == []


def test_restart_and_restarted(t_config, tmp_path):
    run_module(tmp_path, configs=[t_config], state='started')
    before = live_pids(t_config)
    result = run_module(tmp_path, configs=[t_config], state='started', restart=True)
    assert result['changed'] is True
    assert result['configs'][t_config]['action'] == 'restarted'
    after = live_pids(t_config)
    assert sorted(after) == [1, 2] and set(after.values()).isdisjoint(before.values())

    result = run_module(tmp_path, configs=[t_config], state='restarted')
    assert result['changed'] is True
    assert result['configs'][t_config]['running'] == 2
    assert set(live_pids(t_config).values()).isdisjoint(after.values())


def test_declared_once_then_again_after_edit(stopped, tmp_path):
    marker = os.path.join(state_dir(stopped), 'hpc_mirror_declared')
    if os.path.exists(marker):
        os.unlink(marker)
    result = run_module(tmp_path, configs=[stopped], state='declared')
    assert not result.get('failed'), result
    assert result['changed'] is True
    assert result['configs'][stopped]['action'] == 'declared'
    assert result['commands'][0]['cmd'][1:] == ['--dangerWillRobinson=1', 'declare', stopped]
    assert os.path.exists(marker)
    assert live_pids(stopped) == {}  # declare does not start anything

    again = run_module(tmp_path, configs=[stopped], state='declared')
    assert again['changed'] is False and again['commands'] == []

    write_config(stopped, CONF_TEXT + '# edited\n')
    try:
        edited = run_module(tmp_path, configs=[stopped], state='declared')
        assert edited['changed'] is True
    finally:
        write_config(stopped, CONF_TEXT)
    # marker matches the edited file, so the restored one is stale again
    assert run_module(tmp_path, configs=[stopped], state='declared')['changed'] is True


def test_several_configs_one_sr3_call(stopped, tmp_path):
    """Configs needing the same action share one sr3 call."""
    write_config(OTHER, OTHER_TEXT)
    try:
        result = run_module(tmp_path, configs=[stopped, OTHER], state='started', declare=False)
        assert not result.get('failed'), result
        assert [c['cmd'] for c in result['commands']] == [[SR3, 'start', stopped, OTHER]]
        assert result['configs'][OTHER]['running'] == 1
        assert result['configs'][stopped]['running'] == 2
        stop = run_module(tmp_path, configs=[stopped, OTHER], state='stopped')
        assert [c['cmd'][1:] for c in stop['commands']] == [['stop', stopped, OTHER]]
        assert live_pids(stopped) == {} and live_pids(OTHER) == {}
    finally:
        remove_config(OTHER)


def test_start_failure_names_config_and_log(t_config, tmp_path):
    write_config(BAD, BAD_TEXT)
    try:
        result = run_module(tmp_path, configs=[BAD], state='started', declare=False, timeout=3)
        assert result.get('failed') is True, result
        assert '%s: running 0, expected 1' % BAD in result['msg']
        assert 'shovel_t_cfgmodbad_01.log' in result['msg']
        assert 'was terminated' in result['msg']  # sr3 start itself waits for ever
        assert 'no_such_plugin' in result['msg']
    finally:
        remove_config(BAD)


@pytest.mark.parametrize('args,fragment', [
    ({'configs': ['t_cfgmod']}, 'malformed config names'),
    ({'configs': ['shovle/t_cfgmod']}, 'unknown component'),
    ({'configs': ['shovel/t_cfgmod_does_not_exist']}, 'config files not found'),
    ({'configs': ['shovel/t_cfgmod'], 'sr3': '/nonexistent/sr3'}, 'sr3 executable not found'),
])
def test_failures(t_config, tmp_path, args, fragment):
    result = run_module(tmp_path, **args)
    assert result.get('failed') is True
    assert fragment in result['msg']


def test_missing_config_is_fine_when_stopped(t_config, tmp_path):
    result = run_module(tmp_path, configs=['shovel/t_cfgmod_does_not_exist'], state='stopped')
    assert not result.get('failed'), result
    assert result['changed'] is False
    assert result['configs']['shovel/t_cfgmod_does_not_exist']['expected'] == 0


def test_present_only_checks_the_file(t_config, tmp_path):
    result = run_module(tmp_path, configs=[t_config], state='present')
    assert not result.get('failed'), result
    assert result['changed'] is False
    assert result['configs'][t_config]['action'] == 'none'
    assert result['configs'][t_config]['expected'] == 2
    assert result['commands'] == []
    missing = run_module(tmp_path, configs=['shovel/t_cfgmod_does_not_exist'], state='present')
    assert missing.get('failed') is True
    assert 'config files not found' in missing['msg']


def _queues():
    out = rabbitmqctl('list_queues', '-p', VHOST, '--no-table-headers', 'name').stdout
    return out.split()


def test_absent_stops_and_removes_config_state_metrics_and_queue(sr3_env, tmp_path):
    remove_config(OTHER)
    write_config(OTHER, OTHER_TEXT)
    try:
        result = run_module(tmp_path, configs=[OTHER], state='started')
        assert not result.get('failed'), result
        assert len(live_pids(OTHER)) == 1
        queue = [q for q in _queues() if 't_cfgmod2' in q]
        assert len(queue) == 1, _queues()
        metrics = os.path.join(CACHE_DIR, 'metrics', 'shovel_t_cfgmod2_01.json')
        assert wait_for(lambda: os.path.exists(metrics), 30)

        checked = run_module(tmp_path, check=True, diff=True, configs=[OTHER], state='absent')
        assert not checked.get('failed'), checked
        assert checked['changed'] is True
        assert checked['configs'][OTHER]['action'] == 'removed'
        assert checked['diff']['after'][OTHER] == {'present': False, 'running': 0}
        assert len(live_pids(OTHER)) == 1 and os.path.exists(os.path.join(CONF_DIR, OTHER + '.conf'))

        result = run_module(tmp_path, configs=[OTHER], state='absent')
        assert not result.get('failed'), result
        assert result['changed'] is True
        assert result['configs'][OTHER]['action'] == 'removed'
        assert [c['cmd'][-2:] for c in result['commands']] == [['stop', OTHER], ['cleanup', OTHER]]
        assert live_pids(OTHER) == {}
        assert not os.path.exists(os.path.join(CONF_DIR, OTHER + '.conf'))
        assert not os.path.exists(state_dir(OTHER))
        assert not os.path.exists(metrics)
        assert queue[0] not in _queues()

        again = run_module(tmp_path, configs=[OTHER], state='absent')
        assert not again.get('failed'), again
        assert again['changed'] is False
        assert again['commands'] == []
    finally:
        remove_config(OTHER)


def test_absent_removes_leftovers_of_a_config_without_file(sr3_env, tmp_path):
    name = 'shovel/t_cfgmodgone'
    leftover = os.path.join(state_dir(name), 'shovel_t_cfgmodgone_01.pid')
    as_user(['mkdir', '-p', state_dir(name)])
    as_user(['sh', '-c', 'echo 999999 > %s' % leftover])
    result = run_module(tmp_path, configs=[name], state='absent')
    assert not result.get('failed'), result
    assert result['changed'] is True
    assert not os.path.exists(state_dir(name))
