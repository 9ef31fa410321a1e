# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A real sshd on 127.0.0.1 for tests and benchmarks: its own host key, optional
key login for root, the sftp subsystem in process (internal-sftp)."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import contextlib
import os
import socket
import subprocess
import time

SSHD = "/usr/sbin/sshd"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path):
    """A fresh ed25519 key at path; returns [type, base64] of its public half."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    with open(str(path) + ".pub") as handle:
        return handle.read().split()[:2]


@contextlib.contextmanager
def sshd(work, authorized_keys=None):
    """Run sshd with its files in the directory work; yields (port, host public key).

    With authorized_keys (a file), root may log in with those keys.
    """
    work = str(work)
    host_public = keygen(os.path.join(work, "host_key"))
    port = free_port()
    config = os.path.join(work, "sshd_config")
    with open(config, "w") as handle:
        handle.write("ListenAddress 127.0.0.1\nPort %d\nHostKey %s/host_key\nPidFile %s/sshd.pid\nUsePAM no\n"
                     "PasswordAuthentication no\nKbdInteractiveAuthentication no\nSubsystem sftp internal-sftp\n"
                     % (port, work, work))
        if authorized_keys:
            handle.write("StrictModes no\nPermitRootLogin prohibit-password\nAuthorizedKeysFile %s\n"
                         % authorized_keys)
    os.makedirs("/run/sshd", exist_ok=True)
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError("sshd did not start")
                time.sleep(0.1)
        yield port, host_public
    finally:
        proc.terminate()
        proc.wait(10)
