#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sr3.hpc_mirror contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r"""
module: conflict_area
short_description: Keep, list and settle the outage window's conflicts of a recovering tree
version_added: 0.3.0
description:
  - After a failover the reverse direction writes into the tree that was the source
    (the recovering tree). Versions of that tree the other side never received are
    moved aside into a conflict area, C(<root>/.hpc_mirror/conflicts/<generation>/),
    at the same relative path, each with one JSON line in C(conflicts.jsonl) there
    (the copiers do it before they overwrite or remove such a file; see docs/copier.md).
  - V(keep) does the same for what an audit found and the copiers never touch - paths
    that exist only on the recovering side (every one of them, whatever its time), and
    regular files or links that differ from the other side and are newer than it or were
    modified at or after O(since) (unless this generation's copiers wrote them).
  - V(list) reads every record and whether it is settled (C(settled.jsonl) beside it,
    append-only).
  - V(settle) settles records - V(discard) removes the kept version from the area;
    V(keep) puts it back into the tree at its path (O(apply)) or records the choice for
    V(restore) to apply later (failback.yml does, once the mirror runs forward again).
    A file in the tree at that path is moved aside in turn (O(replace)).
author:
  - sr3.hpc_mirror contributors (!UNKNOWN)
options:
  action:
    description: What to do.
    type: str
    choices: [keep, list, settle, restore]
    default: list
  root:
    description: The recovering tree (the destination of the reverse direction).
    type: path
    required: true
  generation:
    description:
      - Generation of the conflict area. Required by V(keep); the other actions read
        every generation when it is omitted.
    type: str
  since:
    description: V(keep) - start of the outage window, epoch seconds (0 - every difference not written by this generation).
    type: float
    default: 0
  differences:
    description:
      - V(keep) - differences report (JSON lines of M(sr3.hpc_mirror.manifest_compare)) of
        an audit with the recovering tree as destination, on this host.
    type: path
  older_extras:
    description:
      - V(keep) - also move the paths that exist only on the recovering side and have not changed
        (mtime and ctime) since O(since). False leaves them, counted in RV(older_extras_left) - they
        may be removals of the other side still on their way.
    type: bool
    default: true
  mtime_tolerance:
    description: V(keep) - seconds within which two modification times count as equal.
    type: float
    default: 1.0
  decision:
    description: V(settle) - V(keep) the recovering side's version, or V(discard) it.
    type: str
    choices: [keep, discard]
  paths:
    description: V(settle) - paths (relative to O(root)) to settle; empty settles every unsettled record.
    type: list
    elements: str
    default: []
  apply:
    description:
      - V(settle) with V(keep) - put the version back into the tree now. False records the choice only
        (while the reverse direction runs, a version put back would differ from the other side).
    type: bool
    default: true
  replace:
    description:
      - V(settle)/V(restore) - what to do when the tree holds a file at the path of a version put back -
        V(aside) moves it into the conflict area (recorded and settled at once), V(refuse) leaves the record
        unsettled and says so.
    type: str
    choices: [aside, refuse]
    default: aside
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Reports what it would move, remove or record; writes nothing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in diff mode).
    support: none
notes:
  - Run it as the user owning the tree, on a host that sees it.
"""

EXAMPLES = r"""
- name: Keep aside what exists only on the recovering side
  sr3.hpc_mirror.conflict_area:
    action: keep
    root: /fs/primary
    generation: "4"
    since: 1765117000
    differences: ~/.cache/hpc_mirror/audit/mirror_secondary_to_primary_differences.jsonl

- name: List the unsettled conflicts of generation 4
  sr3.hpc_mirror.conflict_area:
    root: /fs/primary
    generation: "4"
  register: conflicts

- name: Discard two kept versions
  sr3.hpc_mirror.conflict_area:
    action: settle
    root: /fs/primary
    decision: discard
    paths: [fo/late/l1, fo/late/l2]
"""

RETURN = r"""
conflicts:
  description: Every record read (V(list), V(settle), V(restore)), or the ones written (V(keep)).
  returned: always
  type: list
  elements: dict
  sample: [{"path": "fo/f3", "kept": ".hpc_mirror/conflicts/4/fo/f3", "reason": "changed in the outage window",
            "recovering": {"mtime_ns": 1765117157000000000, "size": 20},
            "incoming": {"mtime_ns": 1765117180000000000, "size": 18}, "generation": "4",
            "settled": null, "present": true}]
older_left:
  description: V(keep) - differing paths left to the repair (older than the window and than the other side's version).
  returned: when O(action=keep)
  type: list
  elements: str
older_extras_left:
  description: V(keep) with O(older_extras=false) - paths only on the recovering side, unchanged since O(since), left.
  returned: when O(action=keep)
  type: list
  elements: str
extra_dirs_removed:
  description: V(keep) - directories that existed only on the recovering side, removed once empty.
  returned: when O(action=keep)
  type: list
  elements: str
pending_keep:
  description: Records settled V(keep) whose version is still to be put back (V(restore)).
  returned: unless O(action=keep)
  type: int
unsettled:
  description: Number of records not settled.
  returned: always
  type: int
  sample: 1
actions:
  description: What was done (or would be, in check mode), one entry per path.
  returned: always
  type: list
  elements: dict
  sample: [{"path": "fo/f3", "kept": ".hpc_mirror/conflicts/4/fo/f3", "action": "discarded"}]
"""

import errno
import json
import os
import socket
import stat
import time

from ansible.module_utils.basic import AnsibleModule

AREA = os.path.join('.hpc_mirror', 'conflicts')
RECORDS = 'conflicts.jsonl'
SETTLED = 'settled.jsonl'
MARK = 'user.hpc_mirror.generation'
ONLY_HERE = 'exists only on the recovering side'
NEWER = 'newer than the version the other side has'
IN_WINDOW = 'changed in the outage window'
DISPLACED = 'in the tree when a kept version was put back'


def fs(text):
    return os.fsencode(text)


def lstat(path):
    try:
        return os.lstat(path)
    except OSError:
        return None


def read_lines(path):
    try:
        with open(path, 'rb') as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return []
        raise
    records = []
    for line in lines:
        try:
            records.append(json.loads(line.decode('utf-8', 'surrogateescape')))
        except ValueError:
            continue  # a line cut by a crash: the rest still counts
    return records


def append_line(path, record):
    data = (json.dumps(record, sort_keys=True) + '\n').encode('utf-8', 'surrogateescape')
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, data)  # one write: concurrent writers do not mix lines
    finally:
        os.close(fd)


def version(st):
    return {'mtime_ns': st.st_mtime_ns, 'size': st.st_size}


def marked_by(path, generation):
    try:
        return os.getxattr(path, MARK, follow_symlinks=False) == fs(str(generation))
    except (OSError, AttributeError):
        return False


class Area(object):

    def __init__(self, module, root, generation):
        self.module = module
        self.root = root.rstrip('/') or '/'
        self.generation = str(generation)
        self.relative = os.path.join(AREA, self.generation)
        self.path = os.path.join(self.root, self.relative)
        self.host = socket.gethostname()

    def tree_path(self, rel):
        return os.path.join(fs(self.root), fs(rel))

    def free_name(self, rel):
        """Where a version of rel goes in the area: the same relative path, suffixed when taken."""
        kept = os.path.join(self.relative, rel)
        if lstat(os.path.join(fs(self.root), fs(kept))) is not None:
            kept += '.%d' % time.time_ns()
        return kept

    def move_aside(self, rel, st, incoming, reason):
        """Move rel from the tree into the area; record it. Returns the record."""
        kept = self.free_name(rel)
        record = {'path': rel, 'kept': kept, 'reason': reason, 'recovering': version(st),
                  'incoming': incoming, 'time': time.time(), 'host': self.host}
        if not self.module.check_mode:
            target = os.path.join(fs(self.root), fs(kept))
            os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
            os.rename(self.tree_path(rel), target)
            append_line(os.path.join(fs(self.path), fs(RECORDS)), record)
        return record

    def settle(self, record, decision, restored=None):
        line = {'path': record['path'], 'kept': record['kept'], 'decision': decision, 'time': time.time(),
                'host': self.host}
        if restored is not None:
            line['restored'] = restored
        if not self.module.check_mode:
            os.makedirs(self.path, mode=0o755, exist_ok=True)
            append_line(os.path.join(fs(self.path), fs(SETTLED)), line)
        return line


def differences_by_path(report):
    """path -> {category: (source, destination)} from a manifest_compare report, in report order."""
    found = {}
    for entry in read_lines(report):
        if 'path' in entry and 'category' in entry:
            found.setdefault(entry['path'], {})[entry['category']] = (entry.get('source'), entry.get('destination'))
    return found


def keep(module, area, since, report, tolerance, older_extras=True):
    """Move aside extras and the versions newer than the other side's (module doc)."""
    since_ns = int(float(since or 0) * 10 ** 9)
    kept, skipped, older = [], [], []
    for rel, categories in differences_by_path(report).items():
        if rel == '.hpc_mirror' or rel.startswith('.hpc_mirror/'):
            continue
        path = area.tree_path(rel)
        st = lstat(path)
        if st is None:
            continue  # moved with its directory, or gone meanwhile
        if 'extra' in categories:
            if stat.S_ISDIR(st.st_mode):
                continue  # its entries are extras too; emptied directories go at the end
            if not older_extras and max(st.st_mtime_ns, st.st_ctime_ns) < since_ns:
                older.append(rel)
                continue
            kept.append(area.move_aside(rel, st, None, ONLY_HERE))
            continue
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            continue
        if not set(categories) & {'size', 'content', 'mtime', 'type', 'symlink_target'}:
            continue  # a mode alone is not a version
        if marked_by(path, area.generation):
            continue  # this generation's copiers wrote it: the copy is on its way
        source_mtime = categories.get('mtime', (None, None))[0]
        newer = source_mtime is not None and st.st_mtime_ns / 1e9 > float(source_mtime) + tolerance
        if not newer and st.st_mtime_ns < since_ns:
            skipped.append(rel)  # older than the window: the repair brings the other side's version
            continue
        incoming = None
        if 'type' not in categories:
            size = categories.get('size', (st.st_size, None))[0]
            mtime = float(source_mtime) if source_mtime is not None else st.st_mtime_ns / 1e9
            incoming = {'mtime_ns': int(mtime * 10 ** 9), 'size': size}
        kept.append(area.move_aside(rel, st, incoming, NEWER if newer else IN_WINDOW))
    # Directories that exist only here and are empty now: nothing is lost by removing them.
    removed = []
    extra_dirs = [rel for rel, categories in differences_by_path(report).items()
                  if 'extra' in categories and not rel.startswith('.hpc_mirror')]
    for rel in sorted(extra_dirs, key=lambda r: r.count('/'), reverse=True):
        path = area.tree_path(rel)
        st = lstat(path)
        if st is None or not stat.S_ISDIR(st.st_mode):
            continue
        if module.check_mode:
            removed.append(rel)
            continue
        try:
            os.rmdir(path)
            removed.append(rel)
        except OSError:
            pass  # not empty: something arrived meanwhile
    return kept, skipped, older, removed


def generations(root, only=None):
    top = os.path.join(root, AREA)
    if only is not None:
        return [str(only)]
    try:
        names = os.listdir(top)
    except OSError:
        return []
    return sorted((n for n in names if os.path.isdir(os.path.join(top, n))),
                  key=lambda n: (len(n), n))


def read_records(module, root, only=None):
    """Every record of every (or one) generation, with its settlement."""
    records = []
    for generation in generations(root, only):
        area = Area(module, root, generation)
        settled = {}
        for line in read_lines(os.path.join(area.path, SETTLED)):
            settled[line.get('kept')] = line  # the last line of a record wins
        for record in read_lines(os.path.join(area.path, RECORDS)):
            record['generation'] = generation
            record['settled'] = settled.get(record.get('kept'))
            record['present'] = lstat(os.path.join(fs(area.root), fs(record.get('kept', '')))) is not None
            records.append(record)
    return records


def pending_keep(record):
    settled = record['settled']
    return settled is not None and settled.get('decision') == 'keep' and settled.get('restored') is False


def put_back(module, area, record, replace):
    """Move the kept version back to its path; what is there goes aside in turn. Returns the action."""
    rel = record['path']
    source = os.path.join(fs(area.root), fs(record['kept']))
    if lstat(source) is None:
        return None, 'kept version missing from the conflict area: nothing to put back'
    current = lstat(area.tree_path(rel))
    displaced = None
    if current is not None:
        if stat.S_ISDIR(current.st_mode):
            return None, 'the tree has a directory there: move it or discard this version'
        if replace == 'refuse':
            return None, 'the tree has a file there (replace=refuse): discard one of them, or use replace=aside'
        displaced = area.move_aside(rel, current, version(lstat(source)), DISPLACED)
        area.settle(displaced, 'aside')
    if not module.check_mode:
        os.makedirs(os.path.dirname(area.tree_path(rel)), mode=0o755, exist_ok=True)
        os.rename(source, area.tree_path(rel))
    return displaced, None


def settle(module, records, decision, paths, apply_now, replace, only_pending=False):
    actions, changed = [], False
    wanted = set(paths)
    for record in records:
        area = Area(module, module.params['root'], record['generation'])
        if only_pending:
            if not pending_keep(record):
                continue
        else:
            if wanted and record.get('path') not in wanted:
                continue
            if record['settled'] is not None:
                if wanted:  # settled before: a rerun changes nothing
                    actions.append({'path': record.get('path'), 'kept': record.get('kept'),
                                    'generation': record['generation'],
                                    'action': 'already settled (%s)' % record['settled'].get('decision')})
                continue
        entry = {'path': record.get('path'), 'kept': record.get('kept'), 'generation': record['generation']}
        if decision == 'discard':
            kept = os.path.join(fs(area.root), fs(record['kept']))
            if not module.check_mode and lstat(kept) is not None:
                os.unlink(kept)
            area.settle(record, 'discard')
            entry['action'] = 'discarded'
        elif not apply_now:
            area.settle(record, 'keep', restored=False)
            entry['action'] = 'to be put back at failback'
        else:
            displaced, problem = put_back(module, area, record, replace)
            if problem:
                entry['action'] = 'not settled: ' + problem
                actions.append(entry)
                continue
            area.settle(record, 'keep', restored=True)
            entry['action'] = 'put back into the tree'
            if displaced:
                entry['action'] += '; the version that was there is kept aside as ' + displaced['kept']
                entry['displaced'] = displaced['kept']
        changed = True
        actions.append(entry)
    if wanted:
        known = set(r.get('path') for r in records)
        for path in sorted(wanted - known):
            actions.append({'path': path, 'action': 'no such conflict'})
    return actions, changed


def main():
    module = AnsibleModule(
        argument_spec=dict(
            action=dict(type='str', default='list', choices=['keep', 'list', 'settle', 'restore']),
            root=dict(type='path', required=True),
            generation=dict(type='str'),
            since=dict(type='float', default=0.0),
            differences=dict(type='path'),
            mtime_tolerance=dict(type='float', default=1.0),
            older_extras=dict(type='bool', default=True),
            decision=dict(type='str', choices=['keep', 'discard']),
            paths=dict(type='list', elements='str', default=[]),
            apply=dict(type='bool', default=True),
            replace=dict(type='str', default='aside', choices=['aside', 'refuse']),
        ),
        required_if=[('action', 'keep', ['generation', 'differences']), ('action', 'settle', ['decision'])],
        supports_check_mode=True,
    )
    params = module.params
    root = params['root']
    if not os.path.isabs(root) or not os.path.isdir(root):
        module.fail_json(msg='root %s is not an absolute path of a directory' % root)
    result = dict(changed=False, conflicts=[], actions=[], unsettled=0)
    try:
        if params['action'] == 'keep':
            area = Area(module, root, params['generation'])
            kept, skipped, older, removed = keep(module, area, params['since'], params['differences'],
                                                 params['mtime_tolerance'], params['older_extras'])
            result.update(conflicts=kept, older_left=skipped, older_extras_left=older, extra_dirs_removed=removed,
                          changed=bool(kept or removed),
                          actions=[{'path': r['path'], 'kept': r['kept'], 'action': 'kept aside: ' + r['reason']}
                                   for r in kept])
        elif params['action'] == 'list':
            pass
        elif params['action'] == 'settle':
            records = read_records(module, root, params['generation'])
            result['actions'], result['changed'] = settle(module, records, params['decision'], params['paths'],
                                                          params['apply'], params['replace'])
        else:
            records = read_records(module, root, params['generation'])
            result['actions'], result['changed'] = settle(module, records, 'keep', [], True, params['replace'],
                                                          only_pending=True)
        if params['action'] != 'keep':
            records = read_records(module, root, params['generation'])
            result['conflicts'] = records
            result['unsettled'] = sum(1 for r in records if r['settled'] is None)
            result['pending_keep'] = sum(1 for r in records if pending_keep(r))
    except OSError as exc:
        module.fail_json(msg='conflict area of %s: %s' % (root, exc), **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
