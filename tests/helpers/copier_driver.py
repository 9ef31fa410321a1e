# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Drive the copier callback (hpc_mirror_copier.Copier) as sr3's sarra drives it, for tests."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import types

import sarracenia
import sarracenia.config
import sarracenia.flow

import hpc_mirror_copier as copier
import hpc_mirror_dollar as dollar


def start_copier(source, destination, state_dir, url="file:/", instance=1, credentials=None):
    """A started Copier with real sr3 options, and a function making messages as sr3 accepts them.

    message(relative, **fields): a message about source/relative (str or bytes),
    with the fields sr3's updateFieldsAccepted sets for this copier.
    """
    options = sarracenia.config.default_config()
    options.baseDir, options.directory, options.download = str(source), str(destination), True
    options.hpcMirrorSourceUrl = url
    if credentials is not None:
        options.credentials = credentials
    options.pid_filename = os.path.join(str(state_dir), "sarra_copy_%02d.pid" % instance)
    options.no = instance
    flow = sarracenia.flow.Flow.__new__(sarracenia.flow.Flow)
    flow.o = options
    plugin = copier.Copier(options)
    plugin.on_start()

    def message(relative, **fields):
        """As sr3 gathers and filters it, hpc_mirror_dollar around sr3's own updateFieldsAccepted."""
        msg = sarracenia.Message()
        rel = os.fsdecode(os.path.join(os.fsencode(str(source)), os.fsencode(relative)).lstrip(b"/"))
        msg.update({"baseUrl": url, "relPath": rel})
        msg.update(fields)
        dollar.hide(msg)
        flow.updateFieldsAccepted(msg, url + msg["relPath"], None, str(destination), None, True, 0, None, "/")
        dollar.restore(msg)
        return msg
    return types.SimpleNamespace(plugin=plugin, message=message, source=source, destination=destination,
                                 state=state_dir)


def work(running, *messages):
    """after_accept, then download for what is left, as sr3's do_download would."""
    worklist = types.SimpleNamespace(incoming=list(messages), ok=[], failed=[], rejected=[])
    running.plugin.after_accept(worklist)
    for msg in worklist.incoming:
        os.makedirs(msg["new_dir"], exist_ok=True)
        (worklist.ok if running.plugin.download(msg) else worklist.failed).append(msg)
    worklist.incoming = []
    running.plugin.after_work(worklist)
    return worklist
