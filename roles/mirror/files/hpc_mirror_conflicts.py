"""The outage window: what a recovering tree holds that must not be lost (shipped by sr3.hpc_mirror).

When the mirror runs the other way after a failover, its copiers write into the
tree that was the source before the outage.  That tree may hold writes the other
side never received (made just before the outage, inside the hold): a file
rewritten there, written only there, or newer than what the reverse direction
brings.  With a conflict area configured, a copier never destroys such a file:
before it overwrites or removes a regular file that

- is newer than the version it brings, or
- was modified at or after `since` (the start of the outage window), and was
  not written by a copier of this generation,

it moves that file into the conflict area, under the same relative path, and
appends one JSON line to `conflicts.jsonl` there: the path, where it was kept,
both versions' mtimes and sizes, and the reason.  Files the reverse copiers
write carry the extended attribute user.hpc_mirror.generation, so the same path
rewritten again later in the same generation is not kept twice (on a file
system without user extended attributes, only the two rules above apply).
"""

import json
import os
import socket
import time

import hpc_mirror_files as files

MARK = "user.hpc_mirror.generation"
RECORDS = "conflicts.jsonl"


class ConflictArea:

    def __init__(self, destination_top, area, generation, since=0.0):
        """area: absolute path inside destination_top, e.g. <top>/.hpc_mirror/conflicts/<generation>."""
        self.top = destination_top.rstrip("/") or "/"
        self.relative = area[len(self.top):].strip("/")
        self.generation = str(generation).encode()
        self.since_ns = int(float(since or 0) * 10**9)
        self.marks_work = True

    def mark(self, fd):
        """Mark a file this generation's copier wrote."""
        if not self.marks_work:
            return
        try:
            os.setxattr(fd, MARK, self.generation)
        except OSError:
            self.marks_work = False  # no user xattrs here: the time rules alone decide

    def written_by_us(self, fd):
        try:
            return os.getxattr(fd, MARK) == self.generation
        except OSError:
            return False

    def must_keep(self, destination, name, incoming):
        """The lstat of name in destination when it must be kept aside, else None.

        incoming: (size, mtime_ns) of the version about to replace it, None for a removal.
        """
        fd = destination.open_regular(name)
        if fd is None:
            return None
        try:
            st = os.fstat(fd)
            if self.written_by_us(fd):
                return None
        finally:
            os.close(fd)
        if incoming is not None and (st.st_size, st.st_mtime_ns) == tuple(incoming):
            return None  # the same version: nothing would be lost
        newer = incoming is not None and st.st_mtime_ns > incoming[1]
        return st if newer or st.st_mtime_ns >= self.since_ns else None

    def keep(self, destination, relative_dir, name, st, incoming, reason):
        """Move name from destination into the area at the same relative path; record it."""
        relative_path = os.path.join(os.fsencode(relative_dir), os.fsencode(name)).lstrip(b"/")
        area_dir = os.path.join(os.fsencode(self.relative), os.fsencode(relative_dir).strip(b"/")).rstrip(b"/")
        with files.Destination(self.top, area_dir) as area:
            kept_name = os.fsencode(name)
            if area.lstat(kept_name) is not None:  # a second version of the same path in one generation
                kept_name += b".%d" % time.time_ns()
            destination.move_to(name, area, kept_name)
            record = {
                "path": os.fsdecode(relative_path),
                "kept": os.fsdecode(os.path.join(os.fsencode(self.relative), os.fsencode(relative_dir).strip(b"/"),
                                                 kept_name).lstrip(b"/")),
                "reason": reason,
                "recovering": {"mtime_ns": st.st_mtime_ns, "size": st.st_size},
                "incoming": None if incoming is None else {"size": incoming[0], "mtime_ns": incoming[1]},
                "time": time.time(),
                "host": socket.gethostname(),
            }
        self.append(record)
        return record

    def append(self, record):
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        with files.Destination(self.top, self.relative) as area:
            fd = os.open(RECORDS, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                         dir_fd=area.fd)
            try:
                files.write_all(fd, line)  # one write: lines of several copiers do not mix
            finally:
                os.close(fd)


def reason_for(st, incoming):
    if incoming is None:
        return "removed by the reverse direction"
    if st.st_mtime_ns > incoming[1]:
        return "newer than the version the reverse direction brings"
    return "changed in the outage window"
