"""sr3 flow callbacks that keep the mirror's lag short (shipped by sr3.hpc_mirror).

Pace
    sr3 3.3.1 sleeps between passes of its main loop, and while a pass finds
    nothing the sleep doubles from ``sleep`` up to 5-10 s (6.4 s with the default
    0.1).  A stage that was idle for a few seconds therefore picks up the next
    message up to 6.4 s late, once per stage: that was most of the lag beyond the
    hold.  When the gathers before it found nothing, Pace asks them again every
    ``paceInterval`` seconds (a cheap ``basic_get`` on an AMQP queue, a look at the
    inotify events in a watch) and returns as soon as something comes, when a held
    message is due (see Hold), when the flow is asked to stop, or after
    ``paceBlockMax`` seconds.  That is longer than sr3's longest sleep, so sr3's own
    back-off never sleeps; with a small ``sleep`` it never throttles a busy flow
    either.  Messages keep the acknowledgement data of the gather that fetched them.

    In a watch, sr3 3.3.1 hands inotify events from the observer thread to the
    main loop through a dictionary it swaps without a lock (a FIXME in
    sarracenia/flowcb/gather/file.py): an event added during the swap is lost.
    The more often the watch looks, the likelier that is (one file in 12 000 at
    200 files/s was lost that way), so Pace guards the swap with a lock.

Hold
    The noise filter of the winnows, with the semantics of sr3's
    ``sarracenia.flowcb.mdelaylatest.MDelayLatest`` (option ``mdelay``): every
    message waits until it is ``mdelay`` seconds old; a newer event of the same
    path replaces a held one (which is rejected), except that when either carries a
    file operation (rename, link, remove, ...) the held one goes on at once, so
    operations keep their order.  MDelayLatest compares each incoming message with
    every held one (quadratic: 4 000 held paths cost seconds of CPU per winnow in a
    burst); Hold keeps held messages in a dictionary by path, in order of arrival,
    and releases from the front.  Due messages are handed out by its gather, so
    that sr3 counts them as work (a pass that gathered nothing makes sr3's
    back-off grow, and in a winnow whose only work was releasing held messages
    that back-off had grown to 5-10 s), and marked so that its after_accept
    passes them on.

usage (winnow)::

    flowcb_prepend hpc_mirror_pace.Hold
    mdelay 30
    sleep 0.01
    flowcb hpc_mirror_pace.Pace

usage (copier, watch)::

    sleep 0.01
    flowcb hpc_mirror_pace.Pace
"""

import logging
import sys
import threading
import time
from collections import OrderedDict

try:
    from sarracenia import timestr2flt
    from sarracenia.flowcb import FlowCB
except ImportError:  # pragma: no cover - only sr3 runs this plugin
    FlowCB = object
    timestr2flt = None

logger = logging.getLogger(__name__)

# When the oldest message held by this process's Hold is due (epoch seconds), or None.
NEXT_DUE = {"time": None}
# Field marking a message Hold's gather released (removed before posting).
RELEASED = "hpc_mirror_released"


class HeldMessages(object):
    """Messages held by path until due; a newer event of a path replaces the held one."""

    def __init__(self, delay):
        self.delay = delay
        self.held = {}  # path -> (due, message), in order of arrival

    def __len__(self):
        return len(self.held)

    def next_due(self):
        for due, _message in self.held.values():
            return due
        return None

    def accept(self, messages, published, now):
        """Return (passed on now, replaced without a file operation) for the incoming messages.

        published(message) is the message's publication time in epoch seconds.
        """
        passed, suppressed = [], []
        for message in messages:
            path = message["relPath"]
            due = published(message) + self.delay
            previous = self.held.pop(path, None)
            if previous is not None:
                if "fileOp" in previous[1] or "fileOp" in message:
                    passed.append(previous[1])
                else:
                    suppressed.append(previous[1])
            if due <= now and previous is None:
                passed.append(message)
            else:
                # Held even when due if it replaced one: it then goes on below, after the one it replaced.
                self.held[path] = (due, message)
        passed.extend(self.release(now))
        return passed, suppressed

    def release(self, now, everything=False, limit=None):
        released = []
        while self.held and (limit is None or len(released) < limit):
            path, (due, message) = next(iter(self.held.items()))
            if due > now and not everything:
                # Arrival order is publication order from one poster; a replaced path
                # moved to the end, so nothing further down is due yet.
                break
            del self.held[path]
            released.append(message)
        return released


class Hold(FlowCB):

    def __init__(self, options):
        super().__init__(options, logger)
        self.o.add_option("mdelay", "duration", 30)
        self.messages = HeldMessages(float(self.o.mdelay))
        self.suppressions = 0
        logger.info("holding each path %s s", self.o.mdelay)

    def gather(self, messageCountMax):
        """Hand out the held messages that are due (up to messageCountMax), marked as released."""
        released = self.messages.release(time.time(), limit=max(0, messageCountMax))
        for message in released:
            message[RELEASED] = True
            if "_deleteOnPost" in message:
                message["_deleteOnPost"].add(RELEASED)
        NEXT_DUE["time"] = self.messages.next_due()
        return (True, released)

    def after_accept(self, worklist):
        released = [m for m in worklist.incoming if m.get(RELEASED)]
        incoming = [m for m in worklist.incoming if not m.get(RELEASED)]
        passed, suppressed = self.messages.accept(incoming, lambda m: timestr2flt(m["pubTime"]), time.time())
        passed = released + passed
        if self.stop_requested:
            passed.extend(self.messages.release(0, everything=True))
            logger.info("stop requested: held messages passed on")
        self.suppressions += len(suppressed)
        worklist.rejected.extend(suppressed)
        worklist.incoming = passed
        NEXT_DUE["time"] = self.messages.next_due()

    def on_housekeeping(self):
        logger.info("suppressions=%d held=%d", self.suppressions, len(self.messages))
        self.suppressions = 0


def guard_watch(watch):
    """Make the hand-over of inotify events of an sr3 watch (gather.file.File) thread-safe.

    sr3 3.3.1's File.on_add (observer thread) stores into watch.new_events, and
    File.wakeup (main loop) merges that dictionary and replaces it, unlocked.
    Both are replaced on the instance by versions that hold one lock around
    the store and around the swap only (not around the processing of events, so
    the observer never waits long and the inotify queue cannot overflow).
    """
    needed = ("new_events", "left_events", "process_event", "on_add", "wakeup")
    if watch is None or getattr(watch, "hpc_mirror_guarded", False) or not all(hasattr(watch, n) for n in needed):
        return False
    lock = threading.Lock()
    add = watch.on_add

    def on_add(event, src, dst):
        with lock:
            add(event, src, dst)

    def wakeup():
        with lock:
            fresh, watch.new_events = watch.new_events, OrderedDict()
        # The rest as in sr3 3.3.1's File.wakeup.
        watch.left_events.update(fresh)
        watch.cur_events = OrderedDict(watch.left_events)
        messages = []
        for key in watch.cur_events:
            event, src, dst = watch.cur_events[key]
            try:
                done, new_messages = watch.process_event(event, src, dst)
                messages.extend(new_messages)
            except OSError as err:
                logger.debug("skipping event that could not be processed: (%s): %s", event, err)
                done = True
            if done:
                watch.left_events.pop(key)
        return messages

    watch.on_add = on_add
    watch.wakeup = wakeup
    watch.hpc_mirror_guarded = True
    return True


class Pace(FlowCB):

    def __init__(self, options):
        super().__init__(options, logger)
        self.o.add_option("paceInterval", "duration", 0.1)
        self.o.add_option("paceBlockMax", "duration", 11)
        self.sources = None

    def _sources(self, flow):
        """The gathers that run before this one in the flow (normally the message or file gather)."""
        if self.sources is None:
            self.sources = []
            for gather in getattr(flow, "plugins", {}).get("gather", []):
                owner = getattr(gather, "__self__", None)
                if owner is self:
                    break
                guard_watch(owner)
                self.sources.append(gather)
            if not self.sources:
                logger.warning("no gather found before Pace: idle stages poll every %s s", self.o.paceInterval)
        return self.sources

    def gather(self, messageCountMax):
        # Called by sr3's Flow.gather: the flow is the caller's self.
        sources = self._sources(sys._getframe(1).f_locals.get("self"))
        if messageCountMax < self.o.batch:
            return (True, [])  # this pass has messages already
        return (True, self._wait(messageCountMax, sources))

    def _wait(self, count, sources):
        start = time.time()
        interval = min(0.01, float(self.o.paceInterval))
        while not self.stop_requested:
            due = NEXT_DUE["time"]
            now = time.time()
            if now - start >= float(self.o.paceBlockMax):
                return []
            pause = interval if due is None else max(0.0, min(interval, due - now))
            time.sleep(pause)
            interval = min(interval * 2, float(self.o.paceInterval))
            # The sources include Hold's gather, which hands out due messages.
            for gather in sources:
                result = gather(count)
                messages = result[1] if isinstance(result, tuple) else result
                if messages:
                    return messages
            if due is not None and time.time() >= due:
                return []  # due, but nothing came (the held message was replaced): let the flow pass
            if not sources and time.time() - start >= float(self.o.paceInterval):
                return []
        return []
