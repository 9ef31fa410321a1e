"""sr3 flow callback that carries a '$' in a path through sr3's filter (shipped by sr3.hpc_mirror).

When sr3 accepts a message it builds the message's new directory through
sundew_dirPattern, which drops every '$', and variableExpansion, which
substitutes ${...} (a directory named ${HOME} went elsewhere) and raises on
some (${PATH}): nothing catches that exception, so the process ends, and the
message, redelivered, ends the next one.  Every stage filters: the watch, the
winnows and the copiers.

Dollar hides each '$' of relPath behind a NUL (no file name can hold one, so
the way back is exact) after the gather, and puts every '$' back, in every
field sr3 derived from the path, first thing after the filter.

usage (every config of the flow; after_accept must run before the others')::

    flowcb_prepend hpc_mirror_dollar.Dollar
"""

import logging

try:
    from sarracenia.flowcb import FlowCB
except ImportError:  # pragma: no cover - only sr3 runs this plugin
    FlowCB = object

logger = logging.getLogger(__name__)

STAND_IN = "\0"
MARK = "_hpc_mirror_dollar"


def hide(message):
    rel_path = message.get("relPath")
    if isinstance(rel_path, str) and "$" in rel_path and STAND_IN not in rel_path:
        message["relPath"] = rel_path.replace("$", STAND_IN)
        message[MARK] = True
        message["_deleteOnPost"] |= set([MARK])


def restore(message):
    """Put every '$' back in every field (and list of strings) sr3 set from the hidden path."""
    if not message.pop(MARK, False):
        return
    for key, value in list(message.items()):
        if isinstance(value, str) and STAND_IN in value:
            message[key] = value.replace(STAND_IN, "$")
        elif isinstance(value, list) and any(isinstance(item, str) and STAND_IN in item for item in value):
            message[key] = [item.replace(STAND_IN, "$") if isinstance(item, str) else item for item in value]


class Dollar(FlowCB):

    def after_gather(self, worklist):
        for message in worklist.incoming:
            hide(message)

    def after_accept(self, worklist):
        for bucket in (worklist.incoming, worklist.rejected):
            for message in bucket:
                restore(message)
