"""Checks every message a copier takes before it can touch a file (shipped by sr3.hpc_mirror).

Anyone who can publish to a flow's exchanges can hand a copier a message, and sr3
trusts every field: a relPath with '..' writes or deletes outside the copy, a
foreign baseUrl or a relPath outside the source reads any file the ops user can
(credentials, keys) into the copy, a rename or hard link can pull a file from
anywhere into the tree, and a mirrored symbolic link to a directory makes a
later path write through it.  check() accepts a message only when every path it
names stays inside its tree; it returns the reason otherwise (one word, counted
by the copier and shown by status.yml) and a line that says what was wrong.

Paths are compared as strings after normpath: a legitimate poster never sends
'..' or '.' components, so any such component is refused outright instead of
resolved.  Parents that exist on the destination are resolved with realpath:
a symbolic link among them that leads out of the destination is refused.
"""

import os
import posixpath
import stat

try:
    from urllib.parse import urlparse
except ImportError:  # pragma: no cover
    from urlparse import urlparse

# Every reason check() can give: the copier counts each, status.yml shows them.
REASONS = (
    "inline_content",     # a message carrying the file's bytes: never what our posters send
    "retrieve_path",      # sr3 would read this path instead of baseUrl + relPath
    "partial_file",       # block-partitioned messages would write pieces in place
    "foreign_base_url",   # the file would be read from somewhere else than the source
    "bad_path",           # not a usable path: empty, NUL byte, '.' or '..' components
    "path_outside_tree",  # relPath, rename or link source outside the source / destination tree
    "symlinked_parent",   # a parent directory on the destination is a link leading out of it
)

# Names the copiers write under before renaming a copy into place; never mirrored.
TEMPORARY_PREFIX = ".hpc_mirror~"

# setuid, setgid: never applied to a copy unless asked for.
SETID_BITS = stat.S_ISUID | stat.S_ISGID


class Refused(Exception):
    """A message the guard refuses: reason is one of REASONS."""

    def __init__(self, reason, detail):
        super(Refused, self).__init__("%s: %s" % (reason, detail))
        self.reason = reason
        self.detail = detail


def clean_url(url):
    """A base URL without the trailing slashes that do not change what it names."""
    parsed = urlparse(url or "")
    return "%s://%s%s" % (parsed.scheme, parsed.netloc, parsed.path.rstrip("/") or "/") \
        if parsed.netloc else "%s:%s" % (parsed.scheme, parsed.path.rstrip("/") or "/")


def absolute(path, field):
    """path as an absolute, normalised path; Refused when it cannot be one safely."""
    if not isinstance(path, str) or not path.strip("/"):
        raise Refused("bad_path", "%s is empty" % field)
    if "\0" in path:
        raise Refused("bad_path", "%s holds a NUL byte" % field)
    parts = path.split("/")
    if ".." in parts or "." in parts:
        raise Refused("bad_path", "%s has a '.' or '..' component: %r" % (field, path))
    return posixpath.normpath("/" + path.lstrip("/"))


def inside(path, top):
    """True when the normalised path is strictly below the directory top."""
    top = top.rstrip("/") or "/"
    return path != top and path.startswith(top if top == "/" else top + "/")


def require_inside(path, top, field):
    if not inside(path, top):
        raise Refused("path_outside_tree", "%s %r is not below %s" % (field, path, top))


def existing_ancestor(path):
    """The longest prefix of path that exists (lexists: a link counts)."""
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def require_real_parent_inside(path, real_top, field):
    """The directory path will be written in must resolve inside real_top."""
    parent = existing_ancestor(os.path.dirname(path))
    real = os.path.realpath(parent)
    if real != real_top and not inside(real, real_top):
        raise Refused("symlinked_parent", "%s %r: its parent %s leads to %s, outside %s"
                      % (field, path, parent, real, real_top))


class Guard:
    """What one copier accepts: its source URL and tree, its destination tree."""

    def __init__(self, source_url, source_dir, destination_dir):
        self.source_url = clean_url(source_url)
        self.source_dir = posixpath.normpath(source_dir)
        self.destination_dir = posixpath.normpath(destination_dir)
        self.real_destination = os.path.realpath(self.destination_dir)

    def check(self, message):
        """Return None when message may be acted on, else a Refused."""
        try:
            self._check(message)
        except Refused as refused:
            return refused
        return None

    def _check(self, message):
        if "content" in message:
            raise Refused("inline_content", "the message carries inline content")
        if "retrievePath" in message:
            raise Refused("retrieve_path", "the message names a retrievePath")
        if "blocks" in message:
            raise Refused("partial_file", "the message is one block of a partitioned file")
        if clean_url(message.get("baseUrl")) != self.source_url:
            raise Refused("foreign_base_url", "baseUrl %r is not the source %s"
                          % (message.get("baseUrl"), self.source_url))
        source = absolute(message.get("relPath"), "relPath")
        require_inside(source, self.source_dir, "relPath")

        new_dir, new_file = message.get("new_dir"), message.get("new_file")
        if not new_file or "/" in new_file or new_file in (".", ".."):
            raise Refused("bad_path", "new_file %r is not a file name" % (new_file,))
        destination = absolute(posixpath.join(new_dir or "", new_file), "destination")
        require_inside(destination, self.destination_dir, "destination")
        # A mirror: the copy's path below its tree is the source's below its own
        # (sr3 would also take a top-level 'rename' field as the destination).
        if destination[len(self.destination_dir):] != source[len(self.source_dir):]:
            raise Refused("bad_path", "destination %r does not mirror relPath %r" % (destination, source))
        require_real_parent_inside(destination, self.real_destination, "destination")

        # A rename or hard link moves or links a file that is already on the
        # destination; sr3 has rewritten its source-tree prefix to the
        # destination's, so what is left must name a path in the destination.
        file_op = message.get("fileOp") or {}
        for field in ("rename", "hlink"):
            if field in file_op:
                value = file_op[field]
                if isinstance(value, str) and not value.startswith("/"):
                    value = posixpath.join(new_dir or "/", value)
                path = absolute(value, "fileOp " + field)
                require_inside(path, self.destination_dir, "fileOp " + field)
                require_real_parent_inside(path, self.real_destination, "fileOp " + field)


def masked_mode(mode, keep_setid=False):
    """A message's octal mode string with setuid/setgid removed; None when unusable."""
    try:
        value = int(str(mode), 8)
    except (TypeError, ValueError):
        return None
    if value < 0 or value > 0o7777:
        return None
    return value if keep_setid else value & ~SETID_BITS
