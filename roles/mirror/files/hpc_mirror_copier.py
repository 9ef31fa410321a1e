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

4. Every message passes the guard (hpc_mirror_guard) before anything is done
   with it: a message that names a path outside the trees, another source,
   inline content or a destination whose parent is a link out of the tree is
   rejected with one log line and counted.  Modes lose setuid and setgid
   unless hpcMirrorKeepSetid is on.

5. The copier writes the files itself (the download entry point, replacing
   sr3's transfer and its accelerator, whose command line was a string split
   on whitespace): whole files under a temporary name renamed into place,
   through paths opened without following links (hpc_mirror_files), for any
   name.  A source that is a symbolic link arrives as a link, whatever the
   message said (a link inside a moved directory is posted as a plain rename).

Each instance leaves, in its state directory, hpc_mirror_copier_NN.json (its
rejections by reason, read by status.yml) and hpc_mirror_copier_NN.inflight
(the temporary file it is writing, removed at the next start if it was killed).

usage (copy config)::

    hpcMirrorSourceUrl file:/
    flowcb_prepend hpc_mirror_copier.Copier
"""

import calendar
import collections
import json
import logging
import os
import posixpath
import stat
import time

try:
    from urllib.parse import urlparse
except ImportError:  # pragma: no cover
    from urlparse import urlparse

try:
    from sarracenia.flowcb import FlowCB
except ImportError:  # pragma: no cover - only sr3 runs this plugin
    FlowCB = object

# sr3 puts its plugin directory on sys.path.
import hpc_mirror_conflicts as conflicts
import hpc_mirror_files as files
import hpc_mirror_guard as guard

logger = logging.getLogger(__name__)


def shown(path):
    """A path for a log line: undecodable bytes as \\xNN, control characters escaped (no forged lines)."""
    if path is None:
        return None
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    text = str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() or c == " " else "\\x%02x" % ord(c) if ord(c) < 256 else c for c in text)


def tolerant_logging():
    """Let sr3's own log lines carry names that are not UTF-8 instead of failing on them."""
    for handler in logging.getLogger().handlers:
        stream = getattr(handler, "stream", None)
        if hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="backslashreplace")
            except (ValueError, OSError):  # a closed or unusual stream: leave it
                pass


class SourceChanged(Exception):
    """The source was written while it was copied: the copy would mix versions."""


class NotCarried(Exception):
    """An entry the copier refuses to copy; reason is a counter name."""

    def __init__(self, reason, detail):
        super(NotCarried, self).__init__(detail)
        self.reason = reason


def is_removal(message):
    return "remove" in (message.get("fileOp") or {})


def is_mkdir(message):
    file_op = message.get("fileOp") or {}
    return "directory" in file_op and "remove" not in file_op and "rename" not in file_op


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
            # bytes: paramiko encodes a str as UTF-8, which a name that is not UTF-8 is not
            self.sftp(server).lstat(os.fsencode(path))
            return True
        except FileNotFoundError:
            return False
        except Exception as error:  # unreachable server: keep retrying the copy
            logger.info("cannot tell whether %s%s still exists: %s", server, path, error)
            self.close(server)
            return None

    def realpath(self, server, path):
        """The server's realpath of path, as bytes (paramiko's would decode the name)."""
        from paramiko.sftp import CMD_NAME, CMD_REALPATH
        kind, reply = self.sftp(server)._request(CMD_REALPATH, path)
        if kind != CMD_NAME or reply.get_int() != 1:
            raise IOError("no realpath for %r on %s" % (path, server))
        return reply.get_string()

    def open_source(self, server, top, relative):
        """The source entry top/relative on an sftp server, read without following links.

        The server resolves links in the parents: its realpath of the parent
        must be inside its realpath of the tree (a link among the parents
        that stays inside is harmless).
        """
        names = files.components(relative)
        top = os.fsencode(top).rstrip(b"/")
        parent = b"/".join([top] + names[:-1])
        real_top = self.realpath(server, top or b"/").rstrip(b"/")
        real_parent = self.realpath(server, parent or b"/")
        if real_parent != real_top and not real_parent.startswith(real_top + b"/"):
            raise files.Unsafe("%r resolves to %r on %s, outside %r" % (parent, real_parent, server, real_top))
        sftp = self.sftp(server)
        path = parent + b"/" + names[-1]
        st = sftp.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            return files.Source("link", target=os.fsencode(sftp.readlink(path)), st=st)
        if stat.S_ISDIR(st.st_mode):
            return files.Source("directory", st=st)
        if not stat.S_ISREG(st.st_mode):
            return files.Source("special", st=st)
        return RemoteFile(sftp.open(path, "rb"), st)

    def close(self, server=None):
        for key in [server] if server else list(self.clients):
            client, sftp = self.clients.pop(key, (None, None))
            if client:
                client.close()


class RemoteFile:
    """A regular file open on an sftp server, read ahead in parallel requests."""

    kind = "file"
    target = None

    def __init__(self, handle, st):
        self.handle = handle
        self.st = st

    # paramiko serves prefetched data fastest in reads of one SFTP packet
    # (32 KiB: 117-150 MB/s on loopback); larger reads measured 9-106 MB/s.
    READ = 32768

    def copy_into(self, target_fd):
        self.handle.prefetch(self.st.st_size)
        copied = 0
        while True:
            block = self.handle.read(self.READ)
            if not block:
                return copied
            files.write_all(target_fd, block)
            copied += len(block)

    def restat(self):
        return self.handle.stat()

    def close(self):
        self.handle.close()


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


def posted_ns(text):
    """A message's time ('20261207T191124.123456717', UTC) in ns, read without a float; None if not one."""
    if not isinstance(text, str):
        return None
    whole, _dot, fraction = text.replace("T", "").partition(".")
    if len(whole) != 14 or not whole.isdigit() or not (fraction.isdigit() or fraction == ""):
        return None
    seconds = calendar.timegm(time.strptime(whole, "%Y%m%d%H%M%S"))
    return seconds * 10**9 + int((fraction + "0" * 9)[:9])


def times_ns(st, message):
    """(atime, mtime) in ns for the copy: the source's, to the precision it has.

    sftp gives whole seconds only; the message's mtime, taken by the poster
    with lstat, is kept when it is the same second (it is the same write).
    """
    if hasattr(st, "st_mtime_ns"):
        return st.st_atime_ns, st.st_mtime_ns
    mtime = int(st.st_mtime) * 10**9
    posted = posted_ns(message.get("mtime"))
    if posted is not None and posted // 10**9 == int(st.st_mtime):
        mtime = posted
    atime = int(st.st_atime or st.st_mtime) * 10**9
    return atime, mtime


def relative_to(path, top):
    """path below top, without the leading slash ('' for top itself)."""
    path = "/" + path.lstrip("/")
    top = top.rstrip("/")
    return path[len(top):].lstrip("/") if top else path.lstrip("/")


def write_json_atomically(path, data):
    temporary = path + ".new"
    with open(temporary, "w") as handle:
        json.dump(data, handle, sort_keys=True)
    os.replace(temporary, path)


class Copier(FlowCB):

    def __init__(self, options):
        super().__init__(options, logger)
        options.add_option("hpcMirrorSourceUrl", "str", None)
        options.add_option("hpcMirrorKeepSetid", "flag", False)
        options.add_option("hpcMirrorFsync", "flag", False)
        options.add_option("hpcMirrorConflictDir", "str", None)
        options.add_option("hpcMirrorConflictSince", "float", 0.0)
        options.add_option("hpcMirrorGeneration", "str", "0")
        options.add_option("hpcMirrorSr3cNames", "flag", False)
        self.probe = SftpProbe(options)
        self.tree_top = getattr(options, "baseDir", None)
        self.destination_top = getattr(options, "directory", None)
        self.guard = guard.Guard(options.hpcMirrorSourceUrl or "", self.tree_top or "/",
                                 self.destination_top or "/")
        self.rejected = collections.Counter()
        self.conflicts_kept = 0
        self.conflicts = conflicts.ConflictArea(
            self.destination_top, options.hpcMirrorConflictDir, options.hpcMirrorGeneration,
            options.hpcMirrorConflictSince) if options.hpcMirrorConflictDir else None
        self.since = time.time()
        state_dir = os.path.dirname(getattr(options, "pid_filename", None) or "")
        instance = "%02d" % (getattr(options, "no", 0) or 0)
        self.counts_file = os.path.join(state_dir, "hpc_mirror_copier_%s.json" % instance) if state_dir else None
        self.inflight_file = os.path.join(state_dir, "hpc_mirror_copier_%s.inflight" % instance) if state_dir else None

    # ---------------------------------------------------------------- state

    def count(self, reason):
        self.rejected[reason] += 1

    def save_counts(self):
        if not self.counts_file:
            return
        try:
            write_json_atomically(self.counts_file, {
                # names the file system refused are counted once, as unsafe_names
                "rejected": dict((reason, count) for reason, count in self.rejected.items() if reason != "unsafe_name"),
                "unsafe_names": self.rejected.get("unsafe_name", 0),
                "conflicts_kept": self.conflicts_kept, "since": self.since, "updated": time.time()})
        except OSError as error:
            logger.error("cannot write %s: %s", self.counts_file, error)

    def announce(self, relative_dir):
        """Return the callback that records the temporary file about to be written."""
        def record(temporary):
            if self.inflight_file:
                with open(self.inflight_file, "wb") as handle:
                    handle.write(os.path.join(os.fsencode(relative_dir), temporary))
        return record

    def remove_leftover(self):
        """Remove the temporary file this instance was writing when it was killed."""
        if not self.inflight_file or not self.destination_top:
            return
        try:
            with open(self.inflight_file, "rb") as handle:
                relative = handle.read()
        except FileNotFoundError:
            return
        if relative and files.remove_leftover(self.destination_top, relative):
            logger.info("removed %s, left by a copy that did not finish", shown(relative))

    def on_start(self):
        tolerant_logging()
        if not self.o.hpcMirrorSourceUrl:
            logger.error("hpcMirrorSourceUrl is not set: every message will be rejected as foreign")
        try:
            self.remove_leftover()
        except (OSError, files.Unsafe) as error:
            logger.error("cannot remove the temporary file left by the last run: %s", error)

    def on_housekeeping(self):
        self.save_counts()

    def on_stop(self):
        self.save_counts()
        self.probe.close()

    # ---------------------------------------------------------------- guard

    def refuse(self, message, reason, detail, worklist):
        self.count(reason)
        # 417: an invalid message; 422: nothing it can be copied to
        message.setReport(417 if reason in guard.REASONS else 422, "%s: %s" % (reason, detail))
        worklist.rejected.append(message)
        logger.error("rejected (%s): %s", reason, detail)

    def after_accept(self, worklist):
        incoming = []
        for message in worklist.incoming:
            if is_tree_top(message, self.tree_top):
                message.setReport(304, "the tree's top directory is the deploy's, not copied")
                worklist.rejected.append(message)
                logger.info("not copying %s: it is the source tree's top directory", shown(message.get("relPath")))
                continue
            if self.o.hpcMirrorSr3cNames:
                self.decode_sr3c_name(message)
            self.mirror_destination(message)
            refused = self.guard.check(message)
            if refused:
                self.refuse(message, refused.reason, refused.detail, worklist)
                continue
            if is_removal(message):
                if not self.removal_applies(message, worklist):
                    continue
                if "newname" in message:
                    del message["newname"]
                if "directory" in message["fileOp"]:
                    self.prune_below(message)
            elif is_mkdir(message) and self.probe.exists(message) is False:
                # A retried or late mkdir must not bring back a directory the source removed.
                message.setReport(410, "the source no longer has this directory")
                worklist.rejected.append(message)
                logger.info("not making %s: the source no longer has it", shown(destination_path(message)))
                continue
            self.restore_link_target(message)
            if set(message.get("fileOp") or {}) == {"link"}:
                # The copier makes the link from the source itself (safely, with the link's
                # own times, as it is now); sr3 would make it by path, with no times.
                del message["fileOp"]
            if "mode" in message:
                mode = guard.masked_mode(message["mode"], self.o.hpcMirrorKeepSetid)
                if mode is None:
                    del message["mode"]
                else:
                    message["mode"] = "%o" % mode
            incoming.append(message)
        worklist.incoming = incoming

    def decode_sr3c_name(self, message):
        """Undo sr3c's encoding of ' ' and '#' in relPath (as %20, %23; '%' itself is not encoded).

        'a%20b' names either 'a b' or a file really called 'a%20b': the one the
        source has wins (for a removal, the one the destination has); sr3c sends
        rename and link values as they are.
        """
        rel_path = message.get("relPath")
        if not isinstance(rel_path, str) or ("%20" not in rel_path and "%23" not in rel_path):
            return
        decoded = rel_path.replace("%20", " ").replace("%23", "#")
        below = relative_to(decoded, self.tree_top)
        literal_below = relative_to(rel_path, self.tree_top)
        tops = (self.tree_top, self.destination_top) if is_removal(message) else (self.tree_top,)
        for top in tops:
            if os.path.lexists(os.path.join(top, below)):
                break
            if os.path.lexists(os.path.join(top, literal_below)):
                return
        message["relPath"] = decoded

    def mirror_destination(self, message):
        """Set the destination from relPath: the same path below the destination's top.

        sr3 drops '$' from the directory it computes and lets a 'rename' field
        redirect it (hpc_mirror_dollar keeps ${...} from being expanded). A
        relPath the guard will refuse is left as it is.
        """
        rel_path = message.get("relPath")
        if not isinstance(rel_path, str) or not self.tree_top or not self.destination_top:
            return
        try:
            source = guard.absolute(rel_path, "relPath")
        except guard.Refused:
            return
        if guard.inside(source, posixpath.normpath(self.tree_top)):
            below = source[len(posixpath.normpath(self.tree_top)):].lstrip("/")
            message["new_dir"], message["new_file"] = posixpath.split(
                posixpath.join(posixpath.normpath(self.destination_top), below))

    def removal_applies(self, message, worklist):
        """False when the removal must not run now (the message was moved to a list)."""
        present = self.probe.exists(message)
        if present is None:
            worklist.failed.append(message)
            logger.info("will retry removing %s: cannot tell whether the source still has it",
                        shown(message.get("relPath")))
            return False
        if present:
            # A removal queued long ago (before an outage, say) of a path the source has again.
            message.setReport(304, "the source still has it: not removed")
            worklist.rejected.append(message)
            logger.info("not removing %s: the source has it again", shown(destination_path(message)))
            return False
        if self.conflicts and "directory" not in message["fileOp"]:
            try:
                self.keep_before_change(message, message["new_dir"], message["new_file"], None)
            except (OSError, files.Unsafe) as error:
                worklist.failed.append(message)
                logger.error("will retry removing %s: could not keep it aside first: %s",
                             shown(destination_path(message)), error)
                return False
        return True

    def prune_below(self, message):
        """Before a directory's removal: remove the empty directories its copy still holds.

        rm -r posts one removal per entry, and a child's removal may come after its
        parent's (another winnow): the parent's rmdir would fail and be retried once
        per level. The source no longer has the directory (removal_applies), so its
        empty subdirectories are gone there too; files are left to their own events.
        """
        path = destination_path(message)
        if not path or not self.destination_top:
            return
        try:
            removed = files.prune_empty_directories(self.destination_top, relative_to(path, self.destination_top))
        except (OSError, files.Unsafe) as error:
            logger.info("could not remove the empty directories below %s first: %s", shown(path), error)
            return
        if removed:
            logger.info("removed %d empty directories below %s, gone from the source", removed, shown(path))

    def keep_before_change(self, message, new_dir, name, incoming, destination=None):
        """In the outage window, move the recovering side's version aside before it is replaced."""
        relative_dir = relative_to(new_dir, self.destination_top)
        if destination is None:
            try:
                with files.Destination(self.destination_top, relative_dir, dir_mode=None) as opened:
                    return self.keep_before_change(message, new_dir, name, incoming, opened)
            except FileNotFoundError:
                return None
        st = self.conflicts.must_keep(destination, name, incoming)
        if st is None:
            return None
        record = self.conflicts.keep(destination, relative_dir, name, st, incoming,
                                     conflicts.reason_for(st, incoming))
        self.conflicts_kept += 1
        logger.warning("kept %s aside as %s: %s", shown(record["path"]), shown(record["kept"]), record["reason"])
        return record

    @staticmethod
    def restore_link_target(message):
        """A symbolic link's target is data: undo sr3's rewrite of the source prefix."""
        original = message.get("post_fileOp") or {}
        if "link" in original and "link" in (message.get("fileOp") or {}):
            message["fileOp"]["link"] = original["link"]

    # ---------------------------------------------------------------- copy

    def download(self, message):
        """Write the message's entry on the destination as the source has it now."""
        try:
            self.copy(message)
            return True
        except NotCarried as refused:
            message["_hpc_mirror_refused"] = (refused.reason, str(refused))
            message["_deleteOnPost"] |= set(["_hpc_mirror_refused"])
        except files.Unsafe as error:
            message["_hpc_mirror_refused"] = ("symlinked_parent", str(error))
            message["_deleteOnPost"] |= set(["_hpc_mirror_refused"])
        except SourceChanged as changed:
            logger.info("will copy %s again: %s", shown(message.get("relPath")), changed)
        except FileNotFoundError as error:
            logger.info("cannot copy %s now: %s", shown(message.get("relPath")), error)
        except (UnicodeError, ValueError) as error:
            message["_hpc_mirror_refused"] = ("unsafe_name", "%s: %s" % (shown(message.get("relPath")), error))
            message["_deleteOnPost"] |= set(["_hpc_mirror_refused"])
        except Exception as error:  # retried by sr3: say why
            logger.error("copy of %s failed: %s", shown(message.get("relPath")), error)
        return False

    def copy(self, message):
        relative = relative_to(message["relPath"], self.tree_top)
        target_dir = relative_to(message["new_dir"], self.destination_top)
        remote = remote_source(message)
        source = self.open_remote(remote, relative) if remote else files.open_source(self.tree_top, relative)
        try:
            with files.Destination(self.destination_top, target_dir) as destination:
                self.install(source, destination, message, target_dir)
        finally:
            source.close()

    def install(self, source, destination, message, target_dir):
        name = message["new_file"]
        if self.conflicts and source.kind in ("link", "file"):
            incoming = (source.st.st_size, times_ns(source.st, message)[1])
            self.keep_before_change(message, message["new_dir"], name, incoming, destination)
        if source.kind == "link":
            destination.install_link(name, source.target, announce=self.announce(target_dir),
                                     times_ns=times_ns(source.st, message))
            message["size"] = 0
        elif source.kind == "directory":
            destination.make_directory(name, self.mode_of(source.st) or 0o755)
        elif source.kind == "file":
            st = source.st

            def write(fd):
                written = source.copy_into(fd)
                now = source.restat()
                if written != st.st_size or (now.st_size, now.st_mtime) != (st.st_size, st.st_mtime):
                    raise SourceChanged("it was written while it was copied (%d bytes read of %d)"
                                        % (written, now.st_size))
                return written
            message["size"] = destination.install_file(
                name, write, self.mode_of(st), times_ns(st, message),
                fsync=self.o.hpcMirrorFsync, announce=self.announce(target_dir),
                mark=self.conflicts.mark if self.conflicts else None)
        else:
            raise NotCarried("special_file", "%s is a device, FIFO or socket: not copied" % message["relPath"])

    def mode_of(self, st):
        mode = stat.S_IMODE(st.st_mode)
        return mode if self.o.hpcMirrorKeepSetid else mode & ~guard.SETID_BITS

    def open_remote(self, remote, relative):
        server, _path = remote
        return self.probe.open_source(server, self.tree_top, relative)

    # ---------------------------------------------------------------- results

    def after_work(self, worklist):
        refused = [m for m in worklist.failed if "_hpc_mirror_refused" in m]
        worklist.failed = [m for m in worklist.failed if "_hpc_mirror_refused" not in m]
        for message in refused:
            reason, detail = message.pop("_hpc_mirror_refused")
            self.refuse(message, reason, detail, worklist)
        worklist.failed, vanished = split_vanished(worklist.failed, self.probe.exists)
        for message in vanished:
            message.setReport(410, "source gone before it could be copied")
            worklist.rejected.append(message)
            logger.info("not retrying %s: the source is gone (a later event says where it went)",
                        shown(message.get("relPath")))
        worklist.rejected, busy = split_busy_directory_removals(worklist.rejected)
        for message in busy:
            logger.info("will retry removing %s: the directory is not empty yet", shown(destination_path(message)))
            worklist.failed.append(message)
