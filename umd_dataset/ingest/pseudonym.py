"""Pseudonymous subject ids, split assignment, and keeping identifiers and the key out of every
file and message.

A subject id is ``UMD-`` and ten hex digits of an HMAC-SHA256 of the patient's identity under a
secret key: the same person gets the same id in every study and every run with the same key, and
the id cannot be turned back into the identity without the key. The key itself is never written
or printed: a job records only `key_fingerprint` (a slow keyed hash) to recognise the same key
when it is resumed. The mapping from identity to id is written only where the user asks for it.
`Redactor` removes the identifiers read from the input's headers (patient ids, names, birth
dates) from every text the ingest prints or writes.
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

__all__ = ["new_secret", "key_fingerprint", "keyed_hash", "pseudonym", "assign_splits", "write_mapping", "Redactor"]

#: The key of split assignment when subjects keep their own ids and no pseudonym key is given.
PUBLIC_SPLIT_KEY = "umd_dataset public split key"


def new_secret() -> str:
    return secrets.token_hex(16)


def key_fingerprint(secret: str) -> str:
    """A fingerprint that recognises the same key without revealing it (PBKDF2-SHA256, 200,000 rounds)."""
    return hashlib.pbkdf2_hmac("sha256", secret.encode(), b"umd_dataset pseudonym key fingerprint", 200_000).hex()[:32]


def keyed_hash(secret: str, value: str) -> str:
    """A keyed hash of an identifier, to keep it in a job's settings without the identifier itself."""
    return _digest(secret, "setting|" + value)[:16]


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


class Redactor:
    """Removes identifiers (patient ids, names and their parts, birth dates) from texts.

    Example:
        >>> redact = Redactor(["PID-778899", "Doe^Jane"])
        >>> redact("/raw/PID-778899/petct: no PET (Jane Doe)")
        '/raw/<patient>/petct: no PET (<patient> <patient>)'
    """

    def __init__(self, identifiers=()) -> None:
        self._words: set[str] = set()
        self.add(*identifiers)

    def add(self, *identifiers: str) -> None:
        for identifier in identifiers:
            identifier = str(identifier or "").strip()
            parts = {identifier, *identifier.replace("^", " ").split()}
            self._words |= {p for p in parts if len(p) >= 3}

    def __call__(self, text: str) -> str:
        import re

        if not self._words:
            return text
        pattern = "|".join(re.escape(w) for w in sorted(self._words, key=len, reverse=True))
        return re.sub(pattern, "<patient>", str(text), flags=re.IGNORECASE)
