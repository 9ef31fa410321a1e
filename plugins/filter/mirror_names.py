# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Names of the sr3 configs, exchanges and queues of one mirror flow.

Every role and playbook derives names from here, so the broker role declares
exactly the exchanges the mirror role's configs use, and the two directions of
a mirror never share a name.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r"""
name: mirror_names
short_description: Names of the sr3 configs, exchanges and queues of one mirror flow
version_added: 0.1.0
description:
  - Returns a dictionary with every name one direction of a mirror uses, so that
    roles and playbooks never build names by hand.
  - Exchange names follow the sr3 "source" convention C(xs_<user>_...) and queue
    names C(q_<user>...), which the broker role's least-privilege permissions allow.
positional: flow, direction, winnows, event_source
options:
  _input:
    description: Broker user that owns the exchanges and queues.
    type: str
    required: true
  flow:
    description: Short flow name, for example C(mirror).
    type: str
    required: true
  direction:
    description: Direction of the flow, for example C(primary_to_secondary).
    type: str
    required: true
  winnows:
    description: Number of winnow configs (split exchanges).
    type: int
    required: true
  event_source:
    description:
      - Event source, C(watch) (sr3 watch), C(shim) (sr3c library in jobs, a C(cpost) config that
        runs no process) or C(cpost) (sr3c's C(sr3_cpost) daemon, a C(cpost) config that runs).
    type: str
    default: watch
"""

EXAMPLES = r"""
- name: Names of the forward flow
  ansible.builtin.debug:
    msg: "{{ 'opsm' | sr3.hpc_mirror.mirror_names('mirror', 'primary_to_secondary', 5) }}"
"""

RETURN = r"""
_value:
  description: Dictionary of names.
  type: dict
  contains:
    name:
      description: Flow name with direction, the stem of every config name.
    post:
      description: The posting config, C(watch/<name>), or C(cpost/<name>) for the shim and the cpost daemon.
    winnows:
      description: List of winnow configs, C(winnow/<name>_NN).
    copier:
      description: The copy config, C(sarra/<name>_copy).
    tally:
      description: The tally config, C(shovel/<name>_tally).
    configs:
      description: Every daemon config in start order (consumers first); the posting config with C(watch) and C(cpost).
    exchanges:
      description: C(post) (split base), C(winnow) (list), C(copier), C(output) and C(all).
    queues:
      description: Queue name per consumer config.
"""

import re

from ansible.errors import AnsibleFilterError

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\Z")


def _check(label, value):
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise AnsibleFilterError(
            "mirror_names: %s must be letters, digits, '_', '.' or '-' (got %r)" % (label, value))


def mirror_names(broker_user, flow, direction, winnows, event_source="watch"):
    """Return the names used by one direction of a mirror flow."""
    for label, value in (("broker_user", broker_user), ("flow", flow), ("direction", direction)):
        _check(label, value)
    try:
        winnows = int(winnows)
    except (TypeError, ValueError):
        raise AnsibleFilterError("mirror_names: winnows must be an integer (got %r)" % (winnows,))
    if winnows < 1:
        raise AnsibleFilterError("mirror_names: winnows must be at least 1 (got %d)" % winnows)
    if event_source not in ("watch", "shim", "cpost"):
        raise AnsibleFilterError("mirror_names: event_source must be watch, shim or cpost (got %r)" % (event_source,))

    name = "%s_%s" % (flow, direction)
    exchange = "xs_%s_%s" % (broker_user, name)
    # sr3 appends a two-digit index to the post exchange when post_exchangeSplit is 2 or more;
    # with one winnow post.conf.j2 names winnow exchange 00 itself.
    winnow_exchanges = ["%s_winnow%02d" % (exchange, i) for i in range(winnows)]
    winnow_configs = ["winnow/%s_%02d" % (name, i) for i in range(winnows)]
    copy = "sarra/%s_copy" % name
    tally = "shovel/%s_tally" % name
    # shim and cpost daemon both post with sr3c, which reads cpost/<name>.conf
    post = ("watch/%s" if event_source == "watch" else "cpost/%s") % name

    queues = dict(
        (config, "q_%s.%s" % (broker_user, config.replace("/", ".")))
        for config in winnow_configs + [copy, tally]
    )
    exchanges = {
        "post": exchange + "_winnow",
        "winnow": winnow_exchanges,
        "copier": exchange + "_copy",
        "output": exchange + "_output",
    }
    exchanges["all"] = winnow_exchanges + [exchanges["copier"], exchanges["output"]]
    # Consumers first so no message is published before its queue exists.
    configs = [tally, copy] + winnow_configs
    if event_source in ("watch", "cpost"):
        configs.append(post)  # a daemon (the shim's config runs no process)
    return {
        "name": name,
        "post": post,
        "winnows": winnow_configs,
        "copier": copy,
        "tally": tally,
        "configs": configs,
        "exchanges": exchanges,
        "queues": queues,
    }


class FilterModule(object):
    def filters(self):
        return {"mirror_names": mirror_names}
