"""The views part: thin views over the release index, for training and for other tools.

- `hf`: the Hugging Face view (`load_dataset`), configs per study kind and paired;
- `export`: the Hub-ready export (Parquet shards + dataset card) that stock `datasets` loads;
- `pytorch`: torch datasets (`ScanDataset`, `PairedDataset`), torchio subjects, MONAI dicts, and a
  subject-level distributed sampler;
- `cache`: the chunked patch cache and its patch dataset.

Views import the release part, never ingest or evaluation.
"""
