"""The fencing token: which term of which lock wrote an object, and the rule writes obey.

A lock is a mutex, not a guarantee: a holder paused past its lease (a stopped process,
a long GC, a node that froze) wakes up believing it still holds it. So every object a
run writes carries its lock's term in its metadata (``fence``, and ``fence-scope``
naming the lock), and a writer refuses to replace or delete an object that a later term
of the same lock wrote. Terms of different locks (the shards of an Indexed Job, a
switch from the S3 lock to the Lease, a lock deleted and made again) are not compared.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from ochinai.runtime.errors import LockLost

TERM = "fence"
SCOPE = "fence-scope"


@dataclass(frozen=True)
class Fence:
    """A lock's term: ``term`` counts the lock's transitions; ``scope`` names the lock."""

    scope: str
    term: int

    @classmethod
    def of_lock(cls, lock_name: str, epoch: str, term: int) -> Fence:
        """The fence of ``term`` of the lock ``lock_name`` as made at ``epoch``.

        The scope is a short hash, so that it travels as ASCII object metadata whatever
        the bucket's prefix or the Lease's name.
        """
        scope = hashlib.sha256(f"{lock_name}\0{epoch}".encode()).hexdigest()[:16]
        return cls(scope, term)

    def metadata(self) -> dict[str, str]:
        """The object metadata that says this term wrote the object."""
        return {TERM: str(self.term), SCOPE: self.scope}

    @classmethod
    def of_object(cls, metadata: Mapping[str, str]) -> Fence | None:
        """The fence an object was written under, or None (no lock, or an older writer)."""
        scope, term = metadata.get(SCOPE), metadata.get(TERM, "")
        if not scope or not term.isdigit():
            return None
        return cls(scope, int(term))


def check_fence(mine: Fence | None, found: Mapping[str, str], where: str) -> None:
    """Raise LockLost when the object ``where`` (its ``found`` metadata) was written by a
    later term of this run's lock: this run lost the lock and must not write any more."""
    theirs = Fence.of_object(found)
    if mine is None or theirs is None or theirs.scope != mine.scope:
        return
    if theirs.term > mine.term:
        raise LockLost(
            f"{where} was written under a later term of this run's lock (fence "
            f"{theirs.term} > {mine.term}): another run took the lock; this run writes "
            "nothing more"
        )


def carried(mine: Fence | None, found: Mapping[str, str] | None) -> dict[str, str]:
    """The fence metadata of a write: this run's term, or, for a run without a lock,
    the term the object had, so that a fence never goes back down."""
    if mine is not None:
        return mine.metadata()
    theirs = Fence.of_object(found or {})
    return theirs.metadata() if theirs is not None else {TERM: "0"}
