"""sr3 flow callback of the audit's repair posts (shipped by sr3.hpc_mirror).

1. The paths come from a file, not the command line: hpcMirrorRepairList names
   a list of absolute paths separated by NUL bytes (any byte but NUL can be in
   a name). sr3 post expands ${...} in every path it is given (a directory
   called '9${%Y}x' was posted as '92026x', a path that does not exist, and the
   repair never converged); read here, a path is posted as it is.

2. The winnows drop a message whose path, mtime and size they saw within
   nodupe_ttl. A repair re-posts a source file that has not changed since its
   first event, so without this the winnow could take the repair for a
   duplicate of that event. Each repair message gets a key of its own
   (nodupe_override) made of its publication time and path.

Everything else about a message is what sr3 post makes of the path (its file
gather's post1file: a file, a link or a directory, with recursive off).

usage (repair posting config, run as ``sr3_post -c <config>``)::

    hpcMirrorRepairList /path/to/repost.list
    flowcb hpc_mirror_repair.Repair
"""

import logging
import os

try:
    import sarracenia
    from sarracenia.flowcb import FlowCB
    from sarracenia.flowcb.gather.file import File
except ImportError:  # pragma: no cover - only sr3 runs this plugin
    sarracenia = None
    FlowCB = object
    File = None

logger = logging.getLogger(__name__)


def repair_key(message):
    return "repair,%s,%s" % (message.get("pubTime", ""), message.get("relPath", ""))


def read_list(path):
    """The paths of a NUL-separated list file, as str (bytes that are not UTF-8 kept by surrogateescape)."""
    with open(path, "rb") as handle:
        return [os.fsdecode(name) for name in handle.read().split(b"\0") if name]


class Repair(FlowCB):
    """Post the listed paths, each marked as a repair the winnows must not drop."""

    def __init__(self, options):
        super().__init__(options, logger)
        self.o.add_option("hpcMirrorRepairList", "str", None)
        self.pending = None
        self.gather_file = None
        self.missing = 0

    def gather(self, qty):
        """Up to one batch of the list per call; nothing once it is done (sr3 post then stops)."""
        if not self.o.hpcMirrorRepairList:
            return (True, [])
        if self.pending is None:
            self.pending = read_list(os.path.expanduser(self.o.hpcMirrorRepairList))
            self.gather_file = File(self.o)
            logger.info("%d paths to post again from %s", len(self.pending), self.o.hpcMirrorRepairList)
        batch = max(int(qty or 0), 1)
        paths, self.pending = self.pending[:batch], self.pending[batch:]
        messages = []
        for path in paths:
            if not os.path.lexists(path):
                self.missing += 1
                logger.info("not posted again: %r is gone from the source", path)
                continue
            lstat = None if os.path.islink(path) else sarracenia.stat(path)
            messages.extend(self.gather_file.post1file(path, lstat))
        if not self.pending and paths and self.missing:
            logger.info("%d listed paths were gone from the source", self.missing)
        return (True, messages)

    def after_accept(self, worklist):
        for message in worklist.incoming:
            message["nodupe_override"] = {"key": repair_key(message)}
            logger.info("repair post %r", message.get("relPath"))
