"""Image references normalise the way the engine does, so matching is exact."""

from __future__ import annotations

import pytest

from receiver.errors import ImageRefError
from receiver.imageref import digest_for, parse, try_parse

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("docker.io/busybox:1", "docker.io/library/busybox:1"),
        ("index.docker.io/library/busybox", "docker.io/library/busybox:latest"),
        ("me/app", "docker.io/me/app:latest"),
        ("GHCR.IO/Org/App:Tag", "ghcr.io/org/app:Tag"),
        ("localhost:5000/a/b", "localhost:5000/a/b:latest"),
        ("127.0.0.1:5000/a/b:v1", "127.0.0.1:5000/a/b:v1"),
        (f"ghcr.io/o/a@{DIGEST}", f"ghcr.io/o/a@{DIGEST}"),
    ],
)
def test_normalisation(text: str, expected: str) -> None:
    """Default registry, library/, default tag and host/repository case are normalised."""
    assert str(parse(text)) == expected


@pytest.mark.parametrize(
    "text", ["", " a", "a:b c", "a@sha256:12", "a//b", "ghcr.io/", "a:" + "x" * 200]
)
def test_bad_references_raise(text: str) -> None:
    """Anything the engine would refuse is refused here first."""
    with pytest.raises(ImageRefError):
        parse(text)


def test_image_ids_are_not_references() -> None:
    """A container created from an image id matches no runtime."""
    assert try_parse("sha256:" + "a" * 64) is None
    assert try_parse("a" * 64) is None


def test_digest_for_picks_the_right_repository() -> None:
    """RepoDigests may name several repositories; only the reference's own counts."""
    ref = parse("ghcr.io/o/app:latest")
    other = "sha256:" + "cd" * 32
    assert digest_for([f"ghcr.io/o/other@{other}", f"ghcr.io/o/app@{DIGEST}"], ref) == DIGEST
    assert digest_for([f"ghcr.io/o/other@{other}"], ref) is None
    assert digest_for(["docker.io/library/busybox@" + DIGEST], parse("busybox")) == DIGEST
