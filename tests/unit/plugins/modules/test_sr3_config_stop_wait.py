# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A stop is over when the processes are gone, not when their pid files are.

sr3 removes an instance's pid file when it signals it; sr3_cpost then takes a
moment to exit (molecule shim saw it still running after stop.yml). These tests
use real processes whose command line names the config, as sr3_cpost's does.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import subprocess
import sys
import threading
import time

import pytest

from ansible_collections.sr3.hpc_mirror.plugins.modules import sr3_config
from ansible_collections.sr3.hpc_mirror.plugins.module_utils.sr3_state import ACTION_NONE, ACTION_STOPPED


@pytest.fixture
def daemon(tmp_path):
    """A process named like 'sr3_cpost start x', its pid file, and the described config."""
    proc = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', 'start', 'x'])
    pid_dir = tmp_path / 'cpost' / 'x'
    pid_dir.mkdir(parents=True)
    pid_file = pid_dir / 'cpost_x_01.pid'
    pid_file.write_text('%d\n' % proc.pid)
    info = {'pid_dirs': [str(pid_dir)], 'component': 'cpost', 'config': 'x', 'expected': 1,
            'cache_dir': str(tmp_path), 'hostdir': None}
    deadline = time.time() + 10
    while not sr3_config.live(info) and time.time() < deadline:
        time.sleep(0.05)  # until the child has exec'ed: before, its command line is pytest's
    info['pids_before'] = sr3_config.live(info)
    info['running_before'] = len(info['pids_before'])
    assert info['pids_before'] == {1: proc.pid}
    yield proc, pid_file, info
    proc.kill()
    proc.wait()


def test_a_stop_waits_for_a_process_whose_pid_file_is_gone(daemon):
    proc, pid_file, info = daemon
    info['run_action'] = ACTION_STOPPED
    pid_file.unlink()  # what sr3 stop does when it signals
    assert sr3_config.outlived(info) == [proc.pid]
    started = time.time()
    assert sr3_config.wait_for_instances({'cpost/x': info}, timeout=1.0, settle=0) is False
    assert time.time() - started >= 1.0
    message = sr3_config.failure_message({'cpost/x': info}, 1.0, [])
    assert 'still running without a pid file: %d' % proc.pid in message


def test_a_stop_is_over_once_the_process_exits(daemon):
    proc, pid_file, info = daemon
    info['run_action'] = ACTION_STOPPED
    pid_file.unlink()
    killer = threading.Timer(0.5, lambda: (proc.terminate(), proc.wait()))
    killer.start()
    try:
        assert sr3_config.wait_for_instances({'cpost/x': info}, timeout=10, settle=0) is True
    finally:
        killer.join()
    assert proc.poll() is not None
    assert sr3_config.outlived(info) == []


def test_a_config_left_alone_does_not_wait_for_its_processes(daemon):
    _proc, _pid_file, info = daemon
    info['run_action'] = ACTION_NONE
    assert sr3_config.outlived(info) == []


def test_a_stop_also_ends_a_daemon_no_pid_file_names(tmp_path):
    """Two starts in a row: the first sr3_cpost's pid file was overwritten, and it kept posting."""
    # argv[0] named as sr3 launches the daemon ('exec -a'), then 'start x'
    sleeper = 'exec -a "$0" %s -c "import time; time.sleep(60)" "$@"' % sys.executable
    stray = subprocess.Popen(["bash", "-c", sleeper, str(tmp_path / "sr3_cpost"), "start", "x"])
    other = subprocess.Popen(["bash", "-c", sleeper, "instance.py", "start", "x"])
    pid_dir = tmp_path / "cpost" / "x"
    pid_dir.mkdir(parents=True)
    info = {'pid_dirs': [str(pid_dir)], 'component': 'cpost', 'config': 'x', 'expected': 1,
            'cache_dir': str(tmp_path), 'hostdir': None, 'pids_before': {}, 'run_action': ACTION_STOPPED}
    try:
        deadline = time.time() + 10
        while time.time() < deadline and stray.pid not in sr3_config.stray_daemons(info):
            time.sleep(0.05)
        assert sr3_config.stray_daemons(info) == [stray.pid], "only the sr3c daemon of this config"
        info['strays'] = [stray.pid]
        assert sr3_config.outlived(info) == [stray.pid]
        stray.terminate()
        stray.wait()
        assert sr3_config.outlived(info) == []
        assert sr3_config.stray_daemons(dict(info, component='watch')) == []
    finally:
        for proc in (stray, other):
            proc.kill()
            proc.wait()
