"""sr3 flow callback for the mirror's copiers (shipped by sr3.hpc_mirror).

Two corrections to how sr3 handles a tree that changes while it is mirrored:

1. A file renamed or removed before its copy ran can never be copied under its
   old name; the rename or remove event that follows says what happened to it.
   Left to sr3, the failed copy is retried until retry_ttl, and every retry
   re-creates the file's parent directory on the destination, undoing a
   mirrored directory rename or rmdir.  Such failures become rejections, with
   a log line; copies that fail while the source still exists are retried.

2. sr3 watch posts a directory move as one rename per file plus a removal of
   the old directory that carries a 'newname' field, and sr3 skips removals
   that carry one, so the emptied directory stays on the destination.  The
   field is dropped so the removal happens; while the directory still holds
   files (their renames travel through other winnows) the removal is retried.

usage (copy config)::

    flowcb_prepend hpc_mirror_copier.Copier
"""

import logging
import os

try:
    from urllib.parse import urlparse
except ImportError:  # pragma: no cover
    from urlparse import urlparse

try:
    from sarracenia.flowcb import FlowCB
except ImportError:  # pragma: no cover - only sr3 runs this plugin
    FlowCB = object

logger = logging.getLogger(__name__)


def is_removal(message):
    return "remove" in (message.get("fileOp") or {})


def local_source_path(message):
    """Path of the message's source file when it is on this host, else None."""
    base = urlparse(message.get("baseUrl", ""))
    if base.scheme != "file":
        return None
    return os.path.join(base.path or "/", message.get("relPath", "").lstrip("/"))


def destination_path(message):
    if not message.get("new_dir") or not message.get("new_file"):
        return None
    return os.path.join(message["new_dir"], message["new_file"])


def split_vanished(failed):
    """Return (still_failing, vanished): vanished copies have no source left."""
    still_failing, vanished = [], []
    for message in failed:
        path = None if is_removal(message) else local_source_path(message)
        if path is not None and not os.path.lexists(path):
            vanished.append(message)
        else:
            still_failing.append(message)
    return still_failing, vanished


def split_busy_directory_removals(rejected):
    """Return (rejected, retry): removals of directories that still hold files."""
    still_rejected, retry = [], []
    for message in rejected:
        path = destination_path(message)
        if is_removal(message) and path and os.path.isdir(path) and not os.path.islink(path):
            retry.append(message)
        else:
            still_rejected.append(message)
    return still_rejected, retry


class Copier(FlowCB):

    def __init__(self, options):
        super().__init__(options, logger)

    def after_accept(self, worklist):
        for message in worklist.incoming:
            if is_removal(message) and "newname" in message:
                del message["newname"]

    def after_work(self, worklist):
        worklist.failed, vanished = split_vanished(worklist.failed)
        for message in vanished:
            message.setReport(410, "source gone before it could be copied")
            worklist.rejected.append(message)
            logger.info("not retrying %s: the source is gone (a later event says where it went)",
                        message.get("relPath"))
        worklist.rejected, busy = split_busy_directory_removals(worklist.rejected)
        for message in busy:
            logger.info("will retry removing %s: the directory is not empty yet", destination_path(message))
            worklist.failed.append(message)
