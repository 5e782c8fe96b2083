"""The dataset card (``dataset_card.md``): the one copy lives at the repository root; wheels ship
it inside the package, and this module finds it in either place.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from umd_dataset.errors import ReleaseNotFoundError

__all__ = ["CARD", "card_text"]

CARD = "dataset_card.md"


def card_text() -> str:
    """The text of the dataset card.

    Raises:
        ReleaseNotFoundError: the card is neither in the installed package nor beside it in a
            checkout (a broken installation: reinstall umd-dataset).
    """
    packaged = resources.files("umd_dataset").joinpath(CARD)
    if packaged.is_file():  # an installed wheel
        return packaged.read_text("utf-8")
    checkout = Path(__file__).resolve().parents[2] / CARD
    if checkout.is_file():  # a checkout, or an editable install of one
        return checkout.read_text("utf-8")
    raise ReleaseNotFoundError(
        f"The dataset card {CARD} is missing from this installation of umd_dataset (looked in the package "
        f"and at {checkout}). Reinstall umd-dataset."
    )
