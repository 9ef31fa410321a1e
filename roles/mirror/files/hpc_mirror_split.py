"""sr3 flow callback that lets every file name through post_exchangeSplit (shipped by sr3.hpc_mirror).

Split
    With ``post_exchangeSplit``, sr3 3.3.1 picks the exchange of a message with
    ``sum(bytearray(relPath, 'ascii'))`` (``sarracenia.moth.Moth.splitPick``): a
    path that is not ASCII raises, the post is logged ``putNewMessage crashed``
    and the event is lost. splitPick honours a message field
    ``exchangeSplitOverride`` first, so Split sets it to the sum of the UTF-8
    bytes of the path (names that are not valid UTF-8 reach Python as
    surrogate-escaped str and are summed as their original bytes). For an ASCII
    path that is the very number sr3 sums, so existing routing is unchanged;
    every event of one path still reaches the same winnow. The field is listed in
    ``_deleteOnPost``: it is never published.

    sr3 3.3.1 also builds the AMQP routing key from the path's directories and
    truncates it when it is 255 characters or longer, by characters of a UTF-8
    encoding that raises on names that are not UTF-8 and that may cut a
    character in two; a key over 255 bytes (not characters) fails in the AMQP
    library. Either way the post crashes. For those paths Split sets the
    message's ``topic`` to the longest run of whole directory names that fits in
    254 bytes (the routing key only routes: the bindings of the flow take every
    key).

    The duplicate suppression of the winnows (sr3's nodupe, disk driver) writes
    each path and key to its cache file as strict UTF-8: a name that is not
    UTF-8 made it raise, which skips duplicate suppression for the rest of that
    batch, and a newline in a key would split its cache line. For such a path
    (or symlink target) Split sets ``nodupe_override`` to the key nodupe would
    derive and the path, both percent-encoded from their bytes (one name, one
    encoding: every event of the path still gets the same key).

    Messages that none of this saves are logged at error level, with the path.

usage (every config that posts the flow's messages: the watch, the winnows, the repair posts)::

    flowcb hpc_mirror_split.Split
"""

import logging
import urllib.parse

try:
    from sarracenia.flowcb import FlowCB
    from sarracenia.flowcb.nodupe import NoDupe
except ImportError:  # pragma: no cover - only sr3 runs this plugin
    FlowCB = object
    NoDupe = None

logger = logging.getLogger(__name__)

OVERRIDE = "exchangeSplitOverride"
# AMQP 0-9-1 short strings (routing keys) hold at most 255 bytes.
ROUTING_KEY_MAX = 255


def path_bytes(path):
    """The bytes of a path as the file system holds them."""
    return path.encode("utf-8", "surrogateescape")


def split_sum(message):
    """The number sr3's splitPick sums, from bytes: None when the message has no path."""
    for field in ("relPath", "retrievePath"):
        if field in message:
            return sum(path_bytes(message[field]))
    return None


def cache_safe(text):
    """True when sr3's nodupe disk cache can write text on one line."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\n" not in text and "\r" not in text


def cache_text(text):
    """text percent-encoded from its bytes: ASCII, one line, one encoding per name."""
    return urllib.parse.quote(path_bytes(text), safe="/,")


def nodupe_override(message):
    """The nodupe_override a message needs (None when sr3's nodupe handles it as it is)."""
    if "relPath" not in message or NoDupe is None:
        return None
    existing = message.get("nodupe_override") or {}
    key = NoDupe.deriveKey(None, message)
    path = existing.get("path", message["relPath"].lstrip("/"))
    if cache_safe(str(key)) and cache_safe(path):
        return None
    return {"key": cache_text(str(key)), "path": cache_text(path)}


def key_bytes(words):
    """A routing key as the AMQP library encodes it."""
    return ".".join(words).replace("#", "%23").replace("*", "%22").encode("utf-8", "surrogatepass")


def fitting_topic(topic, prefix_len):
    """The longest head of topic (at least its prefix) whose routing key fits, or None when sr3 posts it as it is."""
    if len(".".join(topic)) < ROUTING_KEY_MAX and len(key_bytes(topic)) <= ROUTING_KEY_MAX:
        return None
    kept = list(topic[:prefix_len])
    for word in topic[prefix_len:]:
        if len(key_bytes(kept + [word])) >= ROUTING_KEY_MAX:
            break
        kept.append(word)
    return kept


class Split(FlowCB):
    """Set the exchange split index and a routing key that fits on every message to post."""

    def __init__(self, options):
        super().__init__(options, logger)

    def prefix(self, message):
        """The topic prefix of the publisher that posts the message (sr3's post_topicPrefix)."""
        publishers = getattr(self.o, "publishers", None) or []
        index = message.get("publisher_index", 0)
        prefix = None
        if len(publishers) > index and "topicPrefix" in publishers[index]:
            prefix = publishers[index]["topicPrefix"]
        if not prefix:
            prefix = getattr(self.o, "topicPrefix", None) or ["v03"]
        return list(prefix) if isinstance(prefix, (list, tuple)) else str(prefix).split(".")

    def derived_topic(self, message):
        """The routing key sr3 derives for an AMQP post (PostFormat.topicDerive), as words."""
        if "topic" in message and "topic" not in message.get("_deleteOnPost", ()):
            return None  # set to be posted as it is
        if "relPath" in message:
            return self.prefix(message) + message["relPath"].split("/")[0:-1]
        if "subtopic" in message:
            return self.prefix(message) + list(message["subtopic"])
        return None

    def adjust(self, message):
        total = split_sum(message)
        if total is None:
            logger.error("message without relPath nor retrievePath: sr3 posts it to the first exchange")
        else:
            message[OVERRIDE] = total
            message.setdefault("_deleteOnPost", set()).add(OVERRIDE)
        override = nodupe_override(message)
        if override:
            message["nodupe_override"] = override
        topic = self.derived_topic(message)
        if topic:
            prefix_len = len(self.prefix(message))
            kept = fitting_topic(topic, prefix_len)
            if kept is not None:
                logger.info("routing key of %d directories cut to %d to fit AMQP: %r",
                            len(topic) - prefix_len, len(kept) - prefix_len, message.get("relPath"))
                message["topic"] = kept
                # sr3 marks a received key that is not the path's own (ours, cut upstream)
                # to be derived again on posting: this one is to be posted as it is.
                message.get("_deleteOnPost", set()).discard("topic")

    def after_work(self, worklist):
        # The last callback before posting: messages added by retry's after_work included.
        for message in worklist.ok:
            try:
                self.adjust(message)
            except Exception as err:  # pylint: disable=broad-except
                logger.error("cannot route %r (posted as sr3 would): %s", message.get("relPath"), err)
