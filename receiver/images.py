"""What the receiver knows of the images its workspaces run, read while they can be read.

A replacement container lets the new image's defaults through only when the old image's
config is known (spec.py). On the containerd image store (every fresh Docker 29 install)
an image that no tag names any more cannot be inspected, even while containers run it,
so the configs of the images a runtime's containers run are read before the pull that
moves the tag, and kept here for the swaps (and for swaps of a later refresh). When one
is not known even so (the receiver started after the tag had moved), the image is pulled
again by its digest, which on that store is its id.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Iterable

from .engine import Engine, Image
from .errors import EngineError
from .imageref import ImageRef, is_digest

log = logging.getLogger(__name__)

# Images remembered at most: a few per runtime in any real fleet.
CAPACITY = 256


class ImageMemory:
    """Images by id, remembered from inspects and pulls (thread-safe)."""

    def __init__(self, engine: Engine, capacity: int = CAPACITY) -> None:
        self.engine = engine
        self.capacity = capacity
        self._known: collections.OrderedDict[str, Image] = collections.OrderedDict()
        self._lock = threading.Lock()

    def remember(self, image: Image) -> None:
        """Keep what is known of `image` (the newest kept last, the oldest dropped)."""
        with self._lock:
            self._known[image.id] = image
            self._known.move_to_end(image.id)
            while len(self._known) > self.capacity:
                self._known.popitem(last=False)

    def known(self, image_id: str) -> Image | None:
        """The image if it was remembered, without asking the engine."""
        with self._lock:
            return self._known.get(image_id)

    def get(self, image_id: str) -> Image | None:
        """The image, remembered or inspected now (None when the engine cannot tell)."""
        found = self.known(image_id)
        if found is None:
            found = self.engine.image(image_id)
            if found is not None:
                self.remember(found)
        return found

    def learn(self, image_ids: Iterable[str]) -> None:
        """Read every image of `image_ids` the engine can still inspect, before a pull."""
        for image_id in dict.fromkeys(image_ids):
            self.get(image_id)

    def recover(self, image_id: str, ref: ImageRef) -> Image | None:
        """The image a container runs, pulled again by its digest when the engine forgot it.

        Only where the image's id is its registry digest (the containerd image store);
        None when that cannot be done or fails (the caller then knows nothing of it).
        """
        found = self.get(image_id)
        if found is not None or not is_digest(image_id):
            return found
        if not self.engine.info().containerd_store:
            return None
        pinned = ImageRef(ref.registry, ref.repository, tag=None, digest=image_id)
        try:
            found = self.engine.pull(pinned)
        except EngineError as exc:
            log.warning("the image %s is gone and could not be pulled again: %s", pinned, exc)
            return None
        log.info("pulled %s again to read its config", pinned)
        self.remember(found)
        return found
