"""The synthetic part: a seeded phantom generator that writes valid releases in the exact format.

- `phantom`: anatomies and their CT, PET and MRI scans on any grid (shapes, intensities and grid
  presets are data: ``phantom.json``);
- `release`: `synthesize` a release (UMD-mini is the embedded default);
- `dicom`: a study written as DICOM series as a scanner would export them, for ingest.
"""
