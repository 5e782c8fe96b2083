"""Pure data: label schema versions, source alias tables, modalities. Nothing here imports code."""
