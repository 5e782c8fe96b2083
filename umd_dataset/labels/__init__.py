"""The labels part: label maps and masks onto the schema, arrays in and arrays out.

- `harmonize`: any annotation source (multi-label maps, folders of masks, DICOM SEG) onto the
  schema, with a provenance record and declared behaviour for every odd case;
- `dicom_seg`: DICOM SEG files, read onto a grid and written from a label map;
- `carry`: a label map carried onto another grid of the same study (CT or MRI -> PET);
- `convert`: a label map converted between schema versions.
"""
