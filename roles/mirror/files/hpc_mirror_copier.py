"""sr3 flow callback for the mirror's copiers (shipped by sr3.hpc_mirror).

Two corrections to how sr3 handles a tree that changes while it is mirrored:

1. A file renamed or removed before its copy ran can never be copied under its
   old name (the source is looked up locally, or on the sftp server); the rename or remove event that follows says what happened to it.
   Left to sr3, the failed copy is retried until retry_ttl, and every retry
   re-creates the file's parent directory on the destination, undoing a
   mirrored directory rename or rmdir.  Such failures become rejections, with
   a log line; copies that fail while the source still exists are retried.

2. sr3 watch posts a directory move as one rename per file plus a removal of
   the old directory that carries a 'newname' field, and sr3 skips removals
   that carry one, so the emptied directory stays on the destination.  The
   field is dropped so the removal happens; while the directory still holds
   files (their renames travel through other winnows) the removal is retried.

3. An event for the tree's own top directory (sr3c's sr3_cpost posts one at
   every start) would be copied, full path and all, inside the destination:
   sr3 strips baseDir only from paths below it.  The destination's top is the
   deploy's, never a copier's, so such events are rejected, with a log line
   (also a removal: the copy's top must survive the loss of the source's).

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


def is_tree_top(message, base_dir):
    """True when the message is about base_dir itself, not a path below it."""
    if not base_dir or base_dir == "/":
        return False
    path = "/" + message.get("relPath", "").strip("/")
    return os.path.normpath(path) == os.path.normpath(base_dir)


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


def remote_source(message):
    """(url of the server, path) of an sftp source, else None."""
    base = urlparse(message.get("baseUrl", ""))
    if base.scheme != "sftp":
        return None
    server = "sftp://%s/" % base.netloc
    return server, (base.path or "/").rstrip("/") + "/" + message.get("relPath", "").lstrip("/")


def local_source_exists(message):
    path = local_source_path(message)
    return None if path is None else os.path.lexists(path)


def split_vanished(failed, source_exists=local_source_exists):
    """Return (still_failing, vanished): vanished copies have no source left.

    source_exists(message) answers True, False, or None when it cannot tell;
    only a definite False makes a copy vanished.
    """
    still_failing, vanished = [], []
    for message in failed:
        if not is_removal(message) and source_exists(message) is False:
            vanished.append(message)
        else:
            still_failing.append(message)
    return still_failing, vanished


class SftpProbe:
    """Looks for sources on sftp servers, with the copier's own credentials.

    Only failed copies are looked up, so one connection per server, opened
    when first needed, is plenty.
    """

    def __init__(self, options):
        self.o = options
        self.clients = {}

    def sftp(self, server):
        import paramiko
        if server not in self.clients:
            _cached, details = self.o.credentials.get(server)
            url = urlparse(server)
            client = paramiko.SSHClient()
            try:
                from hpc_mirror_hostkeys import KnownHostsPolicy
                client.set_missing_host_key_policy(KnownHostsPolicy(["~/.ssh/known_hosts"]))
            except ImportError:
                client.load_system_host_keys()
                client.set_missing_host_key_policy(paramiko.RejectPolicy())
            client.connect(url.hostname, url.port or 22, url.username,
                           key_filename=getattr(details, "ssh_keyfile", None), timeout=30)
            self.clients[server] = (client, client.open_sftp())
        return self.clients[server][1]

    def exists(self, message):
        source = remote_source(message)
        if source is None:
            return local_source_exists(message)
        server, path = source
        try:
            self.sftp(server).lstat(path)
            return True
        except FileNotFoundError:
            return False
        except Exception as error:  # unreachable server: keep retrying the copy
            logger.info("cannot tell whether %s%s still exists: %s", server, path, error)
            self.close(server)
            return None

    def close(self, server=None):
        for key in [server] if server else list(self.clients):
            client, sftp = self.clients.pop(key, (None, None))
            if client:
                client.close()


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
        self.probe = SftpProbe(options)
        self.tree_top = getattr(options, "baseDir", None)

    def on_stop(self):
        self.probe.close()

    def after_accept(self, worklist):
        incoming = []
        for message in worklist.incoming:
            if is_tree_top(message, self.tree_top):
                message.setReport(304, "the tree's top directory is the deploy's, not copied")
                worklist.rejected.append(message)
                logger.info("not copying %s: it is the source tree's top directory", message.get("relPath"))
                continue
            if is_removal(message) and "newname" in message:
                del message["newname"]
            incoming.append(message)
        worklist.incoming = incoming

    def after_work(self, worklist):
        worklist.failed, vanished = split_vanished(worklist.failed, self.probe.exists)
        for message in vanished:
            message.setReport(410, "source gone before it could be copied")
            worklist.rejected.append(message)
            logger.info("not retrying %s: the source is gone (a later event says where it went)",
                        message.get("relPath"))
        worklist.rejected, busy = split_busy_directory_removals(worklist.rejected)
        for message in busy:
            logger.info("will retry removing %s: the directory is not empty yet", destination_path(message))
            worklist.failed.append(message)
