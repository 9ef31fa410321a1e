# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The copier's sftp path (hpc_mirror_copier.SftpProbe.open_source and download)
against a real sshd on loopback: any name, links stay links, a source behind a
link out of the tree is refused, whole files only."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import stat
import sys

import pytest

from sarracenia.config.credentials import CredentialDB

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "roles", "mirror", "files"))
sys.path.insert(0, os.path.join(ROOT, "tests", "helpers"))

import loopback_sshd  # noqa: E402
from copier_driver import start_copier, work  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/sbin/sshd") or os.geteuid() != 0,
                                reason="needs openssh-server (sshd) and root")

NAMES = [b"plain.txt", "café.txt".encode(), "日本 語.txt".encode(), b"caf\xe9-latin1", b"new\nline", b"-x",
         b"%#*?[\\'\"", "🙂".encode(), b"y" * 255]


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A real sshd on 127.0.0.1 letting root in with a fresh key; HOME knows its host key."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    loopback_sshd.keygen(tmp_path / "client_key")
    with loopback_sshd.sshd(tmp_path, authorized_keys=tmp_path / "client_key.pub") as (port, (kind, key)):
        (home / ".ssh" / "known_hosts").write_text("[127.0.0.1]:%d %s %s\n" % (port, kind, key))
        yield "sftp://root@127.0.0.1:%d/" % port, str(tmp_path / "client_key")


@pytest.fixture
def running(server, tmp_path):
    url, key = server
    source, destination, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    for directory in (source, destination, state):
        directory.mkdir()
    credentials = CredentialDB()
    credentials.add(url, None)
    credentials.get(url)[1].ssh_keyfile = key
    copier = start_copier(source, destination, state, url=url, credentials=credentials)
    copier.source, copier.destination = os.fsencode(str(source)), os.fsencode(str(destination))
    yield copier
    copier.plugin.on_stop()


def test_every_name_is_copied_over_sftp(running):
    os.makedirs(os.path.join(running.source, b"d"))
    for index, name in enumerate(NAMES):
        with open(os.path.join(running.source, b"d", name), "wb") as handle:
            handle.write(os.urandom(1000 * index) + name)
    big = os.path.join(running.source, b"d", b"big file.bin")
    with open(big, "wb") as handle:
        handle.write(os.urandom(5 << 20))
    names = NAMES + [b"big file.bin"]
    result = work(running, *[running.message(b"d/" + name) for name in names])
    assert result.failed == [] and result.rejected == [], [m["relPath"] for m in result.failed + result.rejected]
    for name in names:
        with open(os.path.join(running.source, b"d", name), "rb") as one, \
                open(os.path.join(running.destination, b"d", name), "rb") as two:
            assert one.read() == two.read(), name
        # sftp gives whole seconds: the copy keeps at least those
        assert int(os.lstat(os.path.join(running.destination, b"d", name)).st_mtime) == \
            int(os.lstat(os.path.join(running.source, b"d", name)).st_mtime)
    assert sorted(os.listdir(os.path.join(running.destination, b"d"))) == sorted(names)


def test_links_stay_links_over_sftp(running):
    os.symlink(b"../some where/\xe9", os.path.join(running.source, b"link"))
    old = os.path.join(running.source, b"old", b"link").decode()
    result = work(running, running.message(b"link", fileOp={"rename": old}))
    assert len(result.ok) == 1
    assert os.readlink(os.path.join(running.destination, b"link")) == b"../some where/\xe9"


def test_a_source_behind_a_link_out_of_the_tree_is_refused_over_sftp(running, tmp_path):
    secret = tmp_path / "home" / ".config"
    secret.mkdir(parents=True)
    (secret / "credentials.conf").write_text("amqp://ops:secret@broker/")
    os.symlink(str(secret).encode(), os.path.join(running.source, b"evil"))
    result = work(running, running.message(b"evil/credentials.conf"))
    assert result.ok == [] and result.failed == [] and len(result.rejected) == 1
    assert running.plugin.rejected == {"symlinked_parent": 1}
    assert not os.path.exists(os.path.join(running.destination, b"evil", b"credentials.conf"))


def test_setuid_is_masked_over_sftp(running):
    path = os.path.join(running.source, b"tool")
    with open(path, "wb") as handle:
        handle.write(b"#!/bin/sh\n")
    os.chmod(path, 0o6755)
    result = work(running, running.message(b"tool", mode="6755"))
    assert len(result.ok) == 1
    assert stat.S_IMODE(os.lstat(os.path.join(running.destination, b"tool")).st_mode) == 0o755
