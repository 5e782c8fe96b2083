"""The views part: thin views over the release index, for training and for other tools.

- `hf`: the Hugging Face view (`load_dataset`), configs per study kind and paired, and
  `split_by_node` (whole, disjoint subjects per node, map-style or streaming);
- `export`: the Hub-ready export (Parquet shards of whole subjects, dataset card, Croissant) that
  stock `datasets` loads;
- `pytorch`: torch datasets (`ScanDataset`, `PairedDataset`) whose items are plain tensors, MONAI
  MetaTensors or torchio Subjects, torchio subjects, MONAI dicts, a subject-level distributed
  sampler with equal lengths per rank, and collates for scans of different shapes (`PadCollate`,
  `list_collate`);
- `transforms`: intensity normalisation per modality (`HUWindow`, `SUVScale`, `PercentileZScore`,
  `ModalityNormalize`);
- `cache`: the chunked patch cache and its patch datasets (`PatchDataset`, and `PairedPatchDataset`:
  one world box of a study's structural scan and its PET).

Views import the release part, never ingest or evaluation.
"""
