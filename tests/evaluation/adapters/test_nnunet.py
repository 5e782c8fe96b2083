"""nnU-Net v2: the input the model's own reader would give, the geometry round trip through an echo
predictor, and one real forward pass of nnU-Net's predictor over a randomly initialised PlainConvUNet."""

from __future__ import annotations

import json

import numpy as np
import pytest
from echo import SCANS, assert_centred, ball, blob_world, bright_centre, echo_case

from umd_dataset.errors import CheckpointError, ModelError, ModelOutputError, ModelUnavailableError
from umd_dataset.evaluation.adapters.nnunet import NNUNetModel, model_input
from umd_dataset.evaluation.case import as_label_map
from umd_dataset.io.nifti import write_nifti
from umd_dataset.schema.organs import load_schema

LABELS = {"background": 0, "liver": 1, "spleen": 2, "gallbladder": 3}  # gallbladder: outside the schema


def trained_folder(root, reader="SimpleITKIO", channels=None, network=None):
    """An nnU-Net v2 trained model folder: dataset.json, plans.json and fold_0 with a checkpoint of a
    small PlainConvUNet (random weights), in the layout nnUNetPredictor reads."""
    import torch

    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    root.mkdir(parents=True, exist_ok=True)
    dataset = {"channel_names": channels or {"0": "CT"}, "labels": LABELS, "numTraining": 10, "file_ending": ".nii.gz", "name": "Dataset001_UMDCT"}
    (root / "dataset.json").write_text(json.dumps(dataset))
    arch = {
        "n_stages": 3, "features_per_stage": [4, 8, 16], "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3]] * 3, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]], "n_conv_per_stage": [2, 2, 2],
        "n_conv_per_stage_decoder": [2, 2], "conv_bias": True, "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
    }
    configuration = {
        "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
        "patch_size": [16, 32, 32], "median_image_size_in_voxels": [30, 40, 44], "spacing": [2.0, 1.6, 1.6],
        "normalization_schemes": ["CTNormalization"], "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet", "arch_kwargs": arch,
                         "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
        "batch_dice": False,
    }
    plans = {
        "dataset_name": "Dataset001_UMDCT", "plans_name": "nnUNetPlans", "original_median_spacing_after_transp": [2.0, 1.6, 1.6],
        "original_median_shape_after_transp": [30, 40, 44], "image_reader_writer": reader, "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2], "configurations": {"3d_fullres": configuration}, "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {"max": 900.0, "mean": 120.0, "median": 40.0, "min": -1000.0,
                                                              "percentile_00_5": -1000.0, "percentile_99_5": 800.0, "std": 250.0}},
    }
    (root / "plans.json").write_text(json.dumps(plans))
    (root / "fold_0").mkdir(exist_ok=True)
    torch.manual_seed(0)
    network = network or PlainConvUNet(1, num_classes=len(LABELS), deep_supervision=False, **{
        **arch, "conv_op": torch.nn.Conv3d, "norm_op": torch.nn.InstanceNorm3d, "nonlin": torch.nn.LeakyReLU})
    torch.save({"network_weights": network.state_dict(), "trainer_name": "nnUNetTrainer", "init_args": {"configuration": "3d_fullres"},
                "inference_allowed_mirroring_axes": (0, 1, 2)}, root / "fold_0" / "checkpoint_final.pth")
    return root


class EchoPredictor:
    """`predict_single_npy_array(image (c, z, y, x), {"spacing": [sz, sy, sx]}, ...)`: a segmentation
    with the input's spatial shape and axis order; liver (dataset id 1) around the input's blob,
    gallbladder (outside the schema) in a corner."""

    def __init__(self):
        self.calls = []

    def predict_single_npy_array(self, image, properties, previous=None, output=None, probabilities=False):
        assert image.ndim == 4 and image.shape[0] == 1 and image.dtype == np.float32
        assert set(properties) == {"spacing"} and len(properties["spacing"]) == 3
        self.calls.append((image.shape, list(properties["spacing"])))
        segmentation = np.zeros(image.shape[1:], np.uint8)
        segmentation[ball(image.shape[1:], bright_centre(image[0]), 4)] = LABELS["liver"]
        segmentation[0, 0, 0] = LABELS["gallbladder"]
        return segmentation


@pytest.mark.parametrize("reader", ["SimpleITKIO", "NibabelIOWithReorient"])
@pytest.mark.parametrize("scan", list(SCANS))
def test_labels_come_back_on_the_scan_grid_as_schema_ids(scan, reader, tmp_path):
    case = echo_case(scan)
    predictor = EchoPredictor()
    model = NNUNetModel(_plain_folder(tmp_path / "model", reader), predictor=predictor)
    labels = as_label_map(model(case), case, load_schema())
    assert set(np.unique(labels)) == {0, 1}  # liver -> 1; the gallbladder lies outside the schema
    assert_centred(labels == 1, case, blob_world(case), f"nnU-Net ({reader}) on {scan}")


def _plain_folder(root, reader="SimpleITKIO", channels=None):
    """dataset.json and plans.json only (enough for the adapter with an echo predictor)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps({"channel_names": channels or {"0": "CT"}, "labels": LABELS, "file_ending": ".nii.gz"}))
    (root / "plans.json").write_text(json.dumps({"image_reader_writer": reader}))
    return root


@pytest.mark.parametrize("scan", ["lps", "oblique", "pet"])
def test_the_input_is_what_simpleitk_reads_from_the_scan_file(scan, tmp_path):
    import SimpleITK as sitk

    case = echo_case(scan)
    write_nifti(tmp_path / "scan.nii.gz", np.asarray(case.image), case.affine)
    image = sitk.ReadImage(str(tmp_path / "scan.nii.gz"))
    array, spacing, _ = model_input(case, "SimpleITKIO")
    assert np.array_equal(array[0], sitk.GetArrayFromImage(image).astype(np.float32))  # nnunetv2/imageio/simpleitk_reader_writer.py
    assert np.allclose(spacing, list(image.GetSpacing())[::-1])


def test_nibabel_reader_with_reorient_is_nnunets_own(tmp_path):
    from nnunetv2.imageio.nibabel_reader_writer import NibabelIOWithReorient

    for scan in ("lps", "oblique"):
        case = echo_case(scan)
        write_nifti(tmp_path / f"{scan}.nii.gz", np.asarray(case.image), case.affine)
        expected, properties = NibabelIOWithReorient().read_images([str(tmp_path / f"{scan}.nii.gz")])
        array, spacing, _ = model_input(case, "NibabelIOWithReorient")
        assert np.array_equal(array, expected.astype(np.float32)) and np.allclose(spacing, properties["spacing"])


def test_folders_it_cannot_use_raise(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="input channels"):
        NNUNetModel(_plain_folder(tmp_path / "two", channels={"0": "CT", "1": "PET"}), predictor=EchoPredictor())
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no dataset.json"):
        NNUNetModel(tmp_path / "empty")
    with pytest.raises(ModelError, match="image reader"):
        NNUNetModel(_plain_folder(tmp_path / "tif", reader="Tiff3DIO"), predictor=EchoPredictor())(echo_case("lps"))
    monkeypatch.delenv("UMD_NNUNET_MODEL", raising=False)
    with pytest.raises(ModelUnavailableError, match="UMD_NNUNET_MODEL"):
        NNUNetModel()

    class Wrong(EchoPredictor):
        def predict_single_npy_array(self, image, properties, *rest):
            return np.zeros(image.shape[1:][::-1], np.uint8)

    with pytest.raises(ModelOutputError, match="shape"):
        NNUNetModel(_plain_folder(tmp_path / "m"), predictor=Wrong())(echo_case("lps"))


@pytest.mark.slow
def test_nnunets_own_predictor_runs_a_random_plain_conv_unet_through_the_adapter(tmp_path):
    case = echo_case("lps")
    model = NNUNetModel(trained_folder(tmp_path / "Dataset001_UMDCT" / "nnUNetTrainer__nnUNetPlans__3d_fullres"), use_mirroring=False)
    labels = as_label_map(model(case), case, load_schema())
    assert labels.shape == case.image.shape and set(np.unique(labels)) <= {0, 1, 2}
    assert type(model.predictor().network).__name__ == "PlainConvUNet"
