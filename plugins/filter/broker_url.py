# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Build the broker URL sr3 expects, with or without the password."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r"""
name: broker_url
short_description: Broker URL in the form sr3 configs and credentials.conf use
version_added: 0.1.0
description:
  - Without a password the result is the URL written in sr3 configs; with one it is the
    line for C(credentials.conf), the password URL-encoded.
  - The virtual host is the URL path; C(/) is the default virtual host.
positional: host, port, vhost, scheme, password
options:
  _input:
    description: Broker user.
    type: str
    required: true
  host:
    description: Broker host.
    type: str
    required: true
  port:
    description: Broker port.
    type: int
    default: 5672
  vhost:
    description: Virtual host.
    type: str
    default: /
  scheme:
    description: C(amqp) or C(amqps).
    type: str
    default: amqp
  password:
    description: Password to embed (for credentials.conf only).
    type: str
"""

EXAMPLES = r"""
- name: URL for configs
  ansible.builtin.debug:
    msg: "{{ 'opsm' | sr3.hpc_mirror.broker_url('broker.example', 5672, '/') }}"
"""

RETURN = r"""
_value:
  description: The URL, for example C(amqp://opsm@broker.example:5672/).
  type: str
"""

from ansible.errors import AnsibleFilterError
from ansible.module_utils.six.moves.urllib.parse import quote


def broker_url(user, host, port=5672, vhost="/", scheme="amqp", password=None):
    if scheme not in ("amqp", "amqps"):
        raise AnsibleFilterError("broker_url: scheme must be amqp or amqps (got %r)" % (scheme,))
    if not user or not host:
        raise AnsibleFilterError("broker_url: user and host are required")
    auth = quote(str(user), safe="")
    if password:
        auth += ":" + quote(str(password), safe="")
    # sr3 takes the virtual host from the URL path; '/' is the default one.
    path = "/" if vhost in ("/", "", None) else "/" + quote(str(vhost), safe="")
    return "%s://%s@%s:%d%s" % (scheme, auth, host, int(port), path)


class FilterModule(object):
    def filters(self):
        return {"broker_url": broker_url}
