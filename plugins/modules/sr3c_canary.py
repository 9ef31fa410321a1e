#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r"""
module: sr3c_canary
short_description: Prove that the sr3c shim really posts to the broker
version_added: 0.2.0
description:
  - Binds a temporary, exclusive queue to the posting exchanges of a flow, then runs
    C(touch <file>) and C(rm <file>) under the shim wrapper (see the C(sr3c) role) for a
    uniquely named canary file in O(directory), and waits for the broker to deliver a
    message naming that file.
  - Reports clearly when nothing was posted - for example when the shim is
    misconfigured and has disabled itself. The commands run all the same (the shim
    fails open) and their exit status is reported.
  - Needs the Python C(amqp) library (py-amqp, installed with C(metpx-sr3[amqp])); run
    the module with the sr3 virtualenv's interpreter.
  - The canary file is removed again, so the module leaves nothing behind (it reports
    no change), but its two events go through the flow like any other.
author:
  - sr3.hpc_mirror contributors (!UNKNOWN)
options:
  directory:
    description: Existing directory under the mirrored source tree where the canary file is written.
    type: path
    required: true
  wrapper:
    description: The shim wrapper command (C(<wrapper> <command...>)).
    type: path
    required: true
  exchanges:
    description: Exchanges the shim posts to (every split exchange of the flow).
    type: list
    elements: str
    required: true
  broker_host:
    description: Broker host.
    type: str
    required: true
  broker_port:
    description: AMQP port.
    type: int
    default: 5672
  broker_vhost:
    description: Virtual host.
    type: str
    default: /
  broker_user:
    description: Broker user; the temporary queue is named C(q_<user>.hpc_mirror_canary.<random>).
    type: str
    required: true
  broker_password:
    description: Its password.
    type: str
    required: true
  broker_tls:
    description: Use TLS (C(amqps)).
    type: bool
    default: false
  timeout:
    description: Seconds to wait for the canary's message.
    type: float
    default: 15
  write_timeout:
    description:
      - Seconds the write under the wrapper may take. A shim that cannot log in to its broker
        makes C(close()) wait for it, retrying for ever; the write is then killed and reported
        as blocked.
    type: float
    default: 30
  remove:
    description: Remove the canary file (under the shim) after writing it.
    type: bool
    default: true
  fail_when_not_posted:
    description: Fail when no message named the canary file; otherwise report RV(posted=false).
    type: bool
    default: true
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: In check mode nothing is written nor posted; RV(posted) is null.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in diff mode).
    support: none
"""

EXAMPLES = r"""
- name: Check that the shim posts
  sr3.hpc_mirror.sr3c_canary:
    directory: /var/tmp/hpc_mirror/primary
    wrapper: "{{ ansible_facts['user_dir'] }}/.local/bin/hpc_mirror_shim"
    exchanges: "{{ flow_names.exchanges.winnow }}"
    broker_host: broker.example.org
    broker_user: opsm
    broker_password: "{{ hpc_mirror_broker_password }}"
  vars:
    ansible_python_interpreter: "{{ ansible_facts['user_dir'] }}/.local/share/hpc_mirror/venv/bin/python"
"""

RETURN = r"""
posted:
  description: Whether a message naming the canary file reached the broker (null in check mode).
  returned: always
  type: bool
path:
  description: The canary file.
  returned: always
  type: str
exchange:
  description: Exchange the canary's first message was published to.
  returned: when posted
  type: str
events:
  description: File operations of the messages naming the canary file (C(create), C(remove), ...).
  returned: always
  type: list
  elements: str
seconds:
  description: Seconds from the write to the first message naming the canary file.
  returned: when posted
  type: float
write_rc:
  description: Exit status of the write run under the wrapper (0 when the job ran; 137 when it was blocked and killed).
  returned: unless check mode
  type: int
write_stderr:
  description: What the wrapper and the command said on stderr.
  returned: unless check mode
  type: str
messages_seen:
  description: Messages received on the temporary queue, about any file.
  returned: always
  type: int
"""

import json
import os
import socket
import time
import uuid

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    import amqp
    HAS_AMQP = True
except ImportError:
    HAS_AMQP = False


def message_path(body):
    """The file a v03 or v02 notification names, or None."""
    try:
        text = body.decode('utf-8') if isinstance(body, bytes) else body
    except UnicodeDecodeError:
        return None, None
    try:
        message = json.loads(text)
    except ValueError:
        # v02: "<pubtime> <baseUrl> <relPath>"
        parts = text.split()
        if len(parts) >= 3:
            base = parts[1][len('file:'):] if parts[1].startswith('file:') else parts[1]
            return base.rstrip('/') + '/' + parts[2].lstrip('/'), 'v02'
        return None, None
    if not isinstance(message, dict):
        return None, None
    base = message.get('baseUrl', '')
    rel = message.get('relPath', message.get('retrievePath', ''))
    if base.startswith('file:'):
        base = base[len('file:'):]
    return base.rstrip('/') + '/' + rel.lstrip('/'), message


def event_of(message):
    if not isinstance(message, dict):
        return 'unknown'
    operation = message.get('fileOp') or {}
    for key in ('remove', 'rename', 'link', 'rmdir', 'directory'):
        if key in operation:
            return key
    return 'create'


def run_with_timeout(module, argv, timeout):
    """(rc, stderr, blocked): the command is killed when it outlives timeout seconds."""
    command = [module.get_bin_path('timeout', required=True), '-s', 'KILL', '%g' % timeout] + argv
    rc, dummy, err = module.run_command(command)
    # timeout(1) exits 137 when it had to kill the command.
    return rc, err, rc == 137


def main():
    module = AnsibleModule(
        argument_spec=dict(
            directory=dict(type='path', required=True),
            wrapper=dict(type='path', required=True),
            exchanges=dict(type='list', elements='str', required=True),
            broker_host=dict(type='str', required=True),
            broker_port=dict(type='int', default=5672),
            broker_vhost=dict(type='str', default='/'),
            broker_user=dict(type='str', required=True),
            broker_password=dict(type='str', required=True, no_log=True),
            broker_tls=dict(type='bool', default=False),
            timeout=dict(type='float', default=15),
            write_timeout=dict(type='float', default=30),
            remove=dict(type='bool', default=True),
            fail_when_not_posted=dict(type='bool', default=True),
        ),
        supports_check_mode=True,
    )
    params = module.params
    directory = os.path.realpath(params['directory'])
    name = '.hpc_mirror_canary_%s_%s' % (socket.gethostname().split('.')[0], uuid.uuid4().hex[:12])
    path = os.path.join(directory, name)
    result = dict(changed=False, posted=None, path=path, events=[], messages_seen=0)

    if not os.path.isdir(directory):
        module.fail_json(msg='canary directory %s does not exist' % directory, **result)
    if not (os.path.isfile(params['wrapper']) and os.access(params['wrapper'], os.X_OK)):
        module.fail_json(msg='the shim wrapper %s is missing or not executable' % params['wrapper'], **result)
    if not params['exchanges']:
        module.fail_json(msg='exchanges must name at least one exchange', **result)
    if module.check_mode:
        module.exit_json(msg='check mode: nothing written', **result)
    if not HAS_AMQP:
        module.fail_json(msg=missing_required_lib('amqp (py-amqp, as in the sr3 virtualenv)'), **result)

    queue = 'q_%s.hpc_mirror_canary.%s' % (params['broker_user'], uuid.uuid4().hex[:12])
    try:
        connection = amqp.Connection(
            host='%s:%d' % (params['broker_host'], params['broker_port']),
            userid=params['broker_user'], password=params['broker_password'],
            virtual_host=params['broker_vhost'], ssl=params['broker_tls'], connect_timeout=10)
        connection.connect()
        channel = connection.channel()
        channel.queue_declare(queue=queue, exclusive=True, auto_delete=True)
        for exchange in params['exchanges']:
            channel.queue_bind(queue=queue, exchange=exchange, routing_key='#')
    except Exception as error:  # pylint: disable=broad-except
        module.fail_json(msg='cannot listen on the broker %s:%d vhost %s as %s: %s' % (
            params['broker_host'], params['broker_port'], params['broker_vhost'],
            params['broker_user'], error), **result)

    try:
        started = time.time()
        rc, err, blocked = run_with_timeout(module, [params['wrapper'], 'touch', path], params['write_timeout'])
        result['write_rc'] = rc
        result['write_stderr'] = err
        if blocked:
            if os.path.lexists(path):
                os.unlink(path)
            module.fail_json(msg=(
                'the write under the shim (%s touch %s) was still blocked after %g s and was killed: the shim '
                'cannot deliver to its broker (login refused - sr3c does not decode a URL-encoded password and '
                'always uses vhost / - or broker unreachable). Jobs under this shim hang in close().' % (
                    params['wrapper'], path, params['write_timeout'])), **result)
        if params['remove'] and os.path.lexists(path):
            dummy, rm_err, blocked = run_with_timeout(module, [params['wrapper'], 'rm', '-f', path], params['write_timeout'])
            result['write_stderr'] += rm_err
            if os.path.lexists(path):
                os.unlink(path)
        deadline = started + params['timeout']
        first = None
        while time.time() < deadline:
            message = channel.basic_get(queue=queue, no_ack=True)
            if message is None:
                # The remove comes after the create: stop once both are in, or the first when not removing.
                if first is not None and (not params['remove'] or 'remove' in result['events']):
                    break
                time.sleep(0.2)
                continue
            result['messages_seen'] += 1
            named, body = message_path(message.body)
            if named == path:
                result['events'].append(event_of(body))
                if first is None:
                    first = time.time() - started
                    result['exchange'] = message.delivery_info.get('exchange')
        channel.close()
        connection.close()
    except Exception as error:  # pylint: disable=broad-except
        module.fail_json(msg='canary failed while waiting for its message: %s' % error, **result)

    result['posted'] = first is not None
    if first is not None:
        result['seconds'] = round(first, 3)
        module.exit_json(msg='the shim posted %s (%s) in %.1f s' % (path, ', '.join(result['events']), first),
                         **result)
    if result['write_rc'] != 0:
        msg = 'nothing was posted for %s: the write under %s failed (rc %d): %s' % (
            path, params['wrapper'], result['write_rc'], result['write_stderr'].strip())
    else:
        msg = ('nothing was posted for %s within %g s: the shim is not posting. The write ran (rc 0), so the shim '
               'failed open: check the library, the posting config named by SR_POST_CONFIG, its broker, and that '
               '%s matches its accept patterns. %s' % (
                   path, params['timeout'], directory, result['write_stderr'].strip()))
    if params['fail_when_not_posted']:
        module.fail_json(msg=msg, **result)
    module.exit_json(msg=msg, **result)


if __name__ == '__main__':
    main()
