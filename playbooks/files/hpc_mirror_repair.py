"""sr3 flow callback of the audit's repair posts (shipped by sr3.hpc_mirror).

The winnows drop a message whose path, mtime and size they saw within
nodupe_ttl. A repair re-posts a source file that has not changed since its
first event, so without this the winnow could take the repair for a
duplicate of that event. Each repair message gets a key of its own
(nodupe_override) made of its publication time and path; everything else
about the message is what sr3 post makes of the file.

usage (repair posting config)::

    flowcb hpc_mirror_repair.Repair
"""

import logging

try:
    from sarracenia.flowcb import FlowCB
except ImportError:  # pragma: no cover - only sr3 runs this plugin
    FlowCB = object

logger = logging.getLogger(__name__)


def repair_key(message):
    return "repair,%s,%s" % (message.get("pubTime", ""), message.get("relPath", ""))


class Repair(FlowCB):
    """Mark every accepted message as a repair the winnows must not drop."""

    def after_accept(self, worklist):
        for message in worklist.incoming:
            message["nodupe_override"] = {"key": repair_key(message)}
            logger.info("repair post %s", message.get("relPath"))
