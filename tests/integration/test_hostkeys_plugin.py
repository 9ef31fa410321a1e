# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The copiers' host key check (roles/mirror/files/hpc_mirror_hostkeys.py)
against a real sshd on loopback: sr3's sftp transport, patched by the plugin,
accepts a server only when its key is listed for the name it was reached by,
also when an alias lists several nodes' keys."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import importlib.util
import os
import shutil
import sys

import paramiko
import pytest

import sarracenia.transfer.sftp as sftp_transport

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "helpers"))

import loopback_sshd  # noqa: E402

PLUGIN = os.path.join(ROOT, "roles", "mirror", "files", "hpc_mirror_hostkeys.py")

pytestmark = pytest.mark.skipif(not shutil.which("sshd") and not os.path.exists("/usr/sbin/sshd"),
                                reason="needs openssh-server (sshd)")


def load_plugin():
    spec = importlib.util.spec_from_file_location("hpc_mirror_hostkeys", PLUGIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def sshd(tmp_path):
    """A real sshd on 127.0.0.1 with its own host key; yields (port, public key)."""
    with loopback_sshd.sshd(tmp_path) as (port, public):
        yield port, public


@pytest.fixture
def strict(monkeypatch):
    """Install the plugin's patch on sr3's sftp module for one test."""
    monkeypatch.setattr(sftp_transport, "paramiko", sftp_transport.paramiko)
    return load_plugin()


def connect_as_sr3(port):
    """What sr3's Sftp.connect does: AutoAddPolicy, then connect."""
    client = sftp_transport.paramiko.SSHClient()
    client.set_missing_host_key_policy(sftp_transport.paramiko.AutoAddPolicy())
    try:
        client.connect("127.0.0.1", port, "nobody", "not-a-password", pkey=None, key_filename=None, timeout=5,
                       allow_agent=False, look_for_keys=False)
    finally:
        client.close()


def test_listed_key_passes_the_host_check(sshd, strict, tmp_path):
    port, (keytype, key) = sshd
    other_type, other_key = loopback_sshd.keygen(tmp_path / "other_node")
    known = tmp_path / "known_hosts"
    # An alias naming two nodes: the first line is the other node's key.
    known.write_text("[127.0.0.1]:%d %s %s\n[127.0.0.1]:%d %s %s\n" % (port, other_type, other_key, port, keytype, key))
    strict.install([str(known)])
    # The host key is accepted; only the login (no credentials) fails.
    with pytest.raises(paramiko.AuthenticationException):
        connect_as_sr3(port)


def test_hashed_known_hosts_entries_are_understood(sshd, strict, tmp_path):
    port, (keytype, key) = sshd
    known = tmp_path / "known_hosts"
    hashed = paramiko.HostKeys.hash_host("[127.0.0.1]:%d" % port)
    known.write_text("%s %s %s\n" % (hashed, keytype, key))
    strict.install([str(known)])
    with pytest.raises(paramiko.AuthenticationException):
        connect_as_sr3(port)


def test_unlisted_key_is_refused(sshd, strict, tmp_path):
    port, _key = sshd
    wrong_type, wrong_key = loopback_sshd.keygen(tmp_path / "impostor")
    known = tmp_path / "known_hosts"
    known.write_text("[127.0.0.1]:%d %s %s\n" % (port, wrong_type, wrong_key))
    strict.install([str(known)])
    with pytest.raises(paramiko.SSHException, match="not listed"):
        connect_as_sr3(port)


def test_unknown_host_is_refused_without_known_hosts(sshd, strict, tmp_path):
    port, _key = sshd
    strict.install([str(tmp_path / "missing_known_hosts")])
    with pytest.raises(paramiko.SSHException, match="refusing to connect"):
        connect_as_sr3(port)


def test_without_the_plugin_sr3_trusts_any_server(sshd, tmp_path):
    # Why the plugin exists: sr3's own client auto-adds an unknown server.
    port, _key = sshd
    with pytest.raises(paramiko.AuthenticationException):
        connect_as_sr3(port)
