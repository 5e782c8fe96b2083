"""The release part: a versioned folder of scans, label maps and their index, on disk.

- `format`: the layout, the manifest row (`ScanRecord`), the descriptor (`ReleaseInfo`), paths,
  identifiers, splits;
- `writer`: `write_scan` and the resumable `ReleaseWriter`;
- `index`: `open_release` and the `Release` index (subjects, studies, scans, pairs, splits);
- `resolve`: names (``"umd"``, ``"umd-mini"``, a folder) to an opened release;
- `verify`: every file against the manifest;
- `organ_coverage`: label maps containing each organ, per domain;
- `card`: the dataset card.

The release part imports schema and io; it never imports views, evaluation or ingest.
"""
