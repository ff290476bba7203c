"""Parse and normalise Docker image references (registry, repository, tag, digest)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ImageRefError

DEFAULT_REGISTRY = "docker.io"
_LEGACY_REGISTRIES = {"index.docker.io", "registry-1.docker.io"}

# From the distribution reference grammar: path components, tag and digest.
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
_HOST = re.compile(r"^(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?$")


def is_digest(value: str) -> bool:
    """Tell whether `value` is a `sha256:` digest with 64 lower-case hex digits."""
    return _DIGEST.fullmatch(value) is not None


def is_tag(value: str) -> bool:
    """Tell whether `value` is a valid image tag."""
    return _TAG.fullmatch(value) is not None


@dataclass(frozen=True)
class ImageRef:
    """A normalised image reference: registry host, repository path, tag and/or digest."""

    registry: str
    repository: str
    tag: str | None = "latest"
    digest: str | None = None

    @property
    def name(self) -> str:
        """The repository with its registry, as `docker pull` names it."""
        return f"{self.registry}/{self.repository}"

    @property
    def pull_tag(self) -> str:
        """What to ask the engine for: the digest if pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    def same_repository(self, other: ImageRef) -> bool:
        """Tell whether both references name the same repository on the same registry."""
        return self.name == other.name


def parse(text: str) -> ImageRef:
    """Parse an image reference the way the engine does, normalising host, case and tag."""
    original = text
    if not text or text != text.strip() or len(text) > 512:
        raise ImageRefError(f"not an image reference: {original!r}")
    digest: str | None = None
    if "@" in text:
        text, digest = text.split("@", 1)
        if not is_digest(digest):
            raise ImageRefError(f"bad digest in image reference {original!r}")
    tag: str | None = None
    slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > slash:
        text, tag = text[:colon], text[colon + 1 :]
        if not is_tag(tag):
            raise ImageRefError(f"bad tag in image reference {original!r}")
    first, _, rest = text.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        registry, path = first.lower(), rest
    else:
        registry, path = DEFAULT_REGISTRY, text
    if registry in _LEGACY_REGISTRIES:
        registry = DEFAULT_REGISTRY
    if not _HOST.fullmatch(registry):
        raise ImageRefError(f"bad registry host in image reference {original!r}")
    path = path.lower()
    if registry == DEFAULT_REGISTRY and "/" not in path:
        path = f"library/{path}"
    if not path or not all(_COMPONENT.fullmatch(part) for part in path.split("/")):
        raise ImageRefError(f"bad repository in image reference {original!r}")
    if tag is None and digest is None:
        tag = "latest"
    return ImageRef(registry=registry, repository=path, tag=tag, digest=digest)


def try_parse(text: str) -> ImageRef | None:
    """Parse `text`, or return None when it is not a reference (e.g. a bare image id)."""
    if text.startswith("sha256:") or re.fullmatch(r"[a-f0-9]{64}", text):
        return None
    try:
        return parse(text)
    except ImageRefError:
        return None


def digest_for(repo_digests: list[str], ref: ImageRef) -> str | None:
    """Pick the digest of `ref`'s repository from an image's `RepoDigests` entries."""
    for entry in repo_digests:
        name, _, digest = entry.partition("@")
        other = try_parse(name)
        if other is not None and other.same_repository(ref) and is_digest(digest):
            return digest
    return None
