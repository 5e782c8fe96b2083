"""Pseudonymous subject ids and split assignment for ingested subjects.

A subject id is ``UMD-`` and ten hex digits of an HMAC-SHA256 of the patient's identity under a
secret key: the same person gets the same id in every study and every run with the same key, and
the id cannot be turned back into the identity without the key. The mapping from identity to id
is written only where the user asks for it.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping, Sequence

from umd_dataset.io.files import atomic_path
from umd_dataset.schema.studies import modalities

__all__ = ["new_secret", "pseudonym", "assign_splits", "write_mapping"]


def new_secret() -> str:
    return secrets.token_hex(16)


def _digest(secret: str, identity: str) -> str:
    return hmac.new(secret.encode(), identity.encode(), hashlib.sha256).hexdigest()


def pseudonym(identity: str, secret: str) -> str:
    """The subject id of a patient identity (e.g. ``"issuer|PatientID"``)."""
    return "UMD-" + _digest(secret, identity)[:10]


def assign_splits(
    subjects: Sequence[str], secret: str, fractions: Sequence[float] = (0.6, 0.2, 0.2), given: Mapping[str, str] | None = None
) -> dict[str, list[str]]:
    """Split -> subjects. `given` (subject -> split) wins; the others are placed by their keyed hash,
    so a subject keeps its split when more subjects are ingested later."""
    names = modalities().splits
    splits: dict[str, list[str]] = {name: [] for name in names}
    bounds = [sum(fractions[: i + 1]) for i in range(len(fractions))]
    for subject in sorted(subjects):
        if given and subject in given:
            splits[modalities().check_split(given[subject])].append(subject)
            continue
        position = int(_digest(secret, "split|" + subject)[:8], 16) / 2**32
        index = next(i for i, bound in enumerate(bounds) if position < bound or i == len(bounds) - 1)
        splits[names[index]].append(subject)
    return splits


def write_mapping(path: str | os.PathLike, mapping: Mapping[str, str]) -> None:
    """Write identity -> subject id as CSV, atomically. Keep this file away from the release."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["identity", "subject"])
        for identity, subject in sorted(mapping.items()):
            writer.writerow([identity, subject])
