"""MOOSE: the three CT models through an echo of moosez's `moose`, labels onto the schema by each model's names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from echo import SCANS, assert_centred, ball, blob_world, bright_centre, echo_case

from umd_dataset.errors import InvalidOptionError, ModelOutputError, ModelUnavailableError
from umd_dataset.evaluation.adapters.moose import MODELS, MOOSEModel
from umd_dataset.evaluation.case import as_label_map
from umd_dataset.io.nifti import load_nifti, write_nifti
from umd_dataset.schema.organs import load_schema
from umd_dataset.schema.sources import load_source

#: each model's labels as its dataset.json names them (moosez 2.6.3+ / 3.x numbering)
TABLES = {m: load_source(f"moose_{m}", version="2.6.4").labels for m in MODELS}


class EchoModel:
    def __init__(self, identifier):
        self.model_identifier = identifier
        self.organ_indices = {**TABLES[identifier]}
        self.multilabel_prefix = f"CT_{identifier}_"


class EchoMoose:
    """`moose(path, model_names, output_dir, accelerator)`: writes one segmentation per model on the
    input grid (`<prefix>segmentation_<stem>.nii.gz`) and returns (paths, models), in its own order."""

    def __init__(self):
        self.calls = []

    def __call__(self, input_data, model_names, output_dir=None, accelerator=None):
        assert isinstance(input_data, str) and input_data.endswith(".nii.gz"), "the adapter must give MOOSE a file path"
        self.calls.append((list(model_names), accelerator))
        image = load_nifti(input_data)
        values = np.asarray(image.dataobj)
        centre = bright_centre(values)
        paths, models = [], []
        for identifier in reversed(model_names):  # MOOSE orders its workflows by model spacing, not as asked
            labels = np.zeros(values.shape, np.uint8)
            names = {v: k for k, v in TABLES[identifier].items()}
            if identifier == "clin_ct_organs":
                labels[ball(values.shape, centre, 4)] = names["liver"]
                labels[:2, :2, :2] = names["bladder"]
            elif identifier == "clin_ct_cardiac":  # MOOSE has no single heart label: chambers and myocardium
                labels[-2:, -2:, -2:] = names["heart_atrium_left"]
                labels[-2:, -2:, -1] = names["heart_myocardium"]
                labels[0, -1, 0] = names["aorta"]
            else:  # its bladder is not used (the organ model's is); its esophagus overlaps the heart, which wins
                labels[:2, :2, :1] = names["urinary_bladder"]
                labels[-1, 0, 0] = names["colon"]
                labels[-1, -1, -1] = names["esophagus"]
            model = EchoModel(identifier)
            path = Path(output_dir) / f"{model.multilabel_prefix}segmentation_image.nii.gz"
            write_nifti(path, labels, image.affine)
            paths.append(str(path))
            models.append(model)
        return paths, models


@pytest.mark.parametrize("scan", list(SCANS))
def test_three_models_merge_onto_the_scan_grid_as_schema_ids(scan):
    case = echo_case(scan)
    api = EchoMoose()
    model = MOOSEModel(api=api, version="3.2.2")
    labels = as_label_map(model(case), case, load_schema())
    schema = load_schema()
    assert_centred(labels == schema.organ("liver").id, case, blob_world(case), f"MOOSE on {scan}")
    assert (labels[-2:, -2:, -2:] == schema.organ("heart").id).all()  # atrium + myocardium -> heart
    assert labels[0, -1, 0] == schema.organ("aorta").id and labels[-1, 0, 0] == schema.organ("colon").id
    assert (labels[:2, :2, :2] == schema.organ("urinary_bladder").id).all()
    assert labels[-1, -1, -1] == schema.organ("heart").id and model.last_overlap_voxels == 1  # counted, first model kept
    assert api.calls == [(list(MODELS), "cpu")]


def test_moose_2x_labels_go_through_the_versioned_tables():
    case = echo_case("lps")
    labels = MOOSEModel(api=EchoMoose(), version="2.6.4")(case)
    assert (labels == 1).any()
    with pytest.raises(Exception, match="2.5.0|version"):
        MOOSEModel(api=EchoMoose(), version="2.5.0")(case)  # no released moosez 2.5.0: no table, no guess


def test_missing_outputs_another_grid_options_and_a_missing_package_raise(tmp_path):
    case = echo_case("lps")

    def partial(path, names, out, accelerator):
        paths, models = EchoMoose()(path, names, out, accelerator)
        return paths[:1], models[:1]

    with pytest.raises(ModelOutputError, match="no segmentation of"):
        MOOSEModel(api=partial, version="3.2.2")(case)

    def shifted(path, names, out, accelerator):
        paths, models = EchoMoose()(path, names, out, accelerator)
        image = load_nifti(paths[0])
        affine = image.affine.copy()
        affine[0, 3] += 5
        write_nifti(paths[0], np.asarray(image.dataobj), affine)
        return paths, models

    with pytest.raises(ModelOutputError, match="another grid"):
        MOOSEModel(api=shifted, version="3.2.2")(case)
    with pytest.raises(InvalidOptionError, match="no weights path"):
        MOOSEModel(tmp_path)
    with pytest.raises(ModelUnavailableError, match=r"umd-dataset\[moose\]"):
        MOOSEModel()(case)
