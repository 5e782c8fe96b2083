"""The release the benchmarks read: one subject's full-size PET/CT (a 512x512x400 CT), synthesized."""

from __future__ import annotations

import time
from pathlib import Path


def full_size_petct(folder: Path):
    """A one-subject, PET/CT-only release of the full-size preset at `folder`, and its CT scan;
    prints how long it took."""
    from umd_dataset.synthetic.release import SynthConfig, synthesize

    start = time.perf_counter()
    config = SynthConfig(subjects=1, preset="full", petct_only_fraction=1.0, petmri_only_fraction=0.0, name="bench")
    release = synthesize(folder, config)
    ct = release.select(scan="ct")[0]
    print(f"release: one full-size PET/CT ({ct.shape} CT) in {time.perf_counter() - start:.1f} s")
    return release, ct
