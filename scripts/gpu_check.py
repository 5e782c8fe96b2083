"""The prepared GPU check: the adapters whose architectures PyPI provides (VISTA3D from monai, SAM-Med3D
from medim, an nnU-Net PlainConvUNet) with random weights, on a whole-body case, through the same
adapter code `umd evaluate` runs: seconds per volume, volumes per second and peak GPU memory.

Random weights make the masks meaningless; what this checks is that every step runs on the device
(``device="cuda"``, AMP where the model's own code uses it) at whole-body size, and how fast.

    python scripts/gpu_check.py --device cuda --out gpu_check.json        # on a GPU machine (~5 min)
    python scripts/gpu_check.py --device cpu --small --models nnunet      # a CPU smoke run (tests)

On 2 CPU cores, --small takes ~80 s per scan for VISTA3D (13 classes at 1.5 mm) and ~15 s per organ for
SAM-Med3D (its encoder at 128^3): the test suite runs the nnU-Net part only.

The case: one synthetic subject of the ``full`` preset (CT 512 x 512 x 400 at 0.98 x 0.98 x 2.5 mm,
PET 200 x 200 x 334 at 4 x 4 x 3 mm), or of ``mini`` with --small.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _nnunet_folder(root: Path, small: bool) -> Path:
    """An nnU-Net v2 trained model folder with a random PlainConvUNet (the 3d_fullres defaults, or a tiny one)."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    stages = 3 if small else 6
    features = [4, 8, 16] if small else [32, 64, 128, 256, 320, 320]
    patch = [16, 32, 32] if small else [128, 128, 128]
    arch = {"n_stages": stages, "features_per_stage": features, "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[3, 3, 3]] * stages, "strides": [[1, 1, 1]] + [[2, 2, 2]] * (stages - 1),
            "n_conv_per_stage": [2] * stages, "n_conv_per_stage_decoder": [2] * (stages - 1), "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}
    labels = {"background": 0, "liver": 1, "spleen": 2, "kidney_left": 3, "kidney_right": 4}
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": labels, "file_ending": ".nii.gz"}))
    resampling = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    configuration = {
        "data_identifier": "x", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2, "patch_size": patch,
        "median_image_size_in_voxels": [400, 512, 512], "spacing": [2.5, 1.5, 1.5] if not small else [10.0, 6.25, 6.25],
        "normalization_schemes": ["CTNormalization"], "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_data_kwargs": resampling,
        "resampling_fn_seg": "resample_data_or_seg_to_shape", "resampling_fn_seg_kwargs": {**resampling, "is_seg": True, "order": 1},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape", "resampling_fn_probabilities_kwargs": {**resampling, "order": 1},
        "architecture": {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet", "arch_kwargs": arch,
                         "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
        "batch_dice": False,
    }
    plans = {"dataset_name": "Dataset001_GPUCheck", "plans_name": "nnUNetPlans", "original_median_spacing_after_transp": configuration["spacing"],
             "original_median_shape_after_transp": [400, 512, 512], "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2],
             "transpose_backward": [0, 1, 2], "configurations": {"3d_fullres": configuration}, "experiment_planner_used": "ExperimentPlanner",
             "label_manager": "LabelManager",
             "foreground_intensity_properties_per_channel": {"0": {"max": 3000.0, "mean": 50.0, "median": 40.0, "min": -1024.0,
                                                                   "percentile_00_5": -1000.0, "percentile_99_5": 1500.0, "std": 300.0}}}
    (root / "plans.json").write_text(json.dumps(plans))
    (root / "fold_0").mkdir(exist_ok=True)
    network = PlainConvUNet(1, num_classes=len(labels), deep_supervision=False, **{
        **arch, "conv_op": torch.nn.Conv3d, "norm_op": torch.nn.InstanceNorm3d, "nonlin": torch.nn.LeakyReLU})
    torch.save({"network_weights": network.state_dict(), "trainer_name": "nnUNetTrainer", "init_args": {"configuration": "3d_fullres"},
                "inference_allowed_mirroring_axes": (0, 1, 2)}, root / "fold_0" / "checkpoint_final.pth")
    return root


def _cases(release, domains, crop_voxels: int | None):
    """(case, reference) of each domain's scan; with `crop_voxels`, a block of that many voxels per
    axis around the liver (VISTA3D resamples to 1.5 mm: a whole mini scan is 74 M voxels there)."""
    from umd_dataset.evaluation.case import Case
    from umd_dataset.io.geometry import shifted
    from umd_dataset.schema.studies import modalities

    for record in release.select(domain=list(domains)):
        image, affine = release.read(record, "image")
        reference, _ = release.read(record, "label")
        image, reference = np.asarray(image), np.asarray(reference)
        if crop_voxels:
            centre = np.argwhere(reference == release.schema.organ("liver").id).mean(axis=0).astype(int)
            low = np.clip(centre - crop_voxels // 2, 0, np.maximum(np.asarray(image.shape) - crop_voxels, 0))
            block = tuple(slice(int(lo), int(lo) + crop_voxels) for lo in low)
            image, reference, affine = image[block], reference[block], shifted(affine, low)
        spec = modalities().scan(record.scan)
        yield Case(image, affine, record.spacing_mm, record.subject, record.study, record.scan, record.domain,
                   spec.modality, spec.units, tuple(record.organs)), reference


MODELS = ("vista3d", "sam-med3d", "nnunet")


def _models(device: str, small: bool, work: Path, which):
    torch.manual_seed(0)
    if "vista3d" in which:
        from monai.networks.nets import vista3d132

        from umd_dataset.evaluation.adapters.vista3d import VISTA3DModel

        yield "vista3d (class prompts)", VISTA3DModel(device=device, roi_size=32 if small else 128, network=vista3d132()), "class"
    if "sam-med3d" in which:
        import medim

        from umd_dataset.evaluation.adapters.sam_med3d import SAMMed3DModel

        yield "sam-med3d (one point)", SAMMed3DModel(device=device, model=medim.create_model("SAM-Med3D", pretrained=False)), "point"
    if "nnunet" in which:
        from umd_dataset.evaluation.adapters.nnunet import NNUNetModel

        yield "nnunet (PlainConvUNet)", NNUNetModel(_nnunet_folder(work / "nnunet", small), device=device, use_mirroring=not small), None


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="a 12-voxel block of a mini scan and small windows (a CPU smoke run)")
    parser.add_argument("--organs", default=None, help="comma-separated organs for the promptable models (default all 13)")
    parser.add_argument("--domains", default="ct,petct_pet", help="evaluation domains of the case")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)

    from umd_dataset.evaluation.prompts import PromptConfig, make_prompt, prompt_rng
    from umd_dataset.synthetic.release import SynthConfig, synthesize

    cuda = args.device.startswith("cuda")
    rows = []
    with tempfile.TemporaryDirectory(prefix="umd-gpu-check-") as tmp:
        work = Path(tmp)
        release = synthesize(work / "release", SynthConfig(subjects=1, preset="mini" if args.small else "full", seed=5), progress=True)
        organs = args.organs.split(",") if args.organs else list(release.schema.slugs)
        cases = list(_cases(release, args.domains.split(","), 12 if args.small else None))
        for title, model, prompt_kind in _models(args.device, args.small, work, args.models.split(",")):
            for case, reference in cases:
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                start = time.perf_counter()
                voxels = 0
                if prompt_kind is None:
                    voxels = int(np.count_nonzero(model(case)))
                else:
                    for organ in organs:
                        truth = reference == release.schema.organ(organ).id
                        if not truth.any():
                            continue
                        prompt = make_prompt(truth, organ, release.schema.organ(organ).id, PromptConfig(kind=prompt_kind), case.spacing_mm,
                                             release.schema, prompt_rng(0, case.subject, case.scan, organ))
                        voxels += int(np.count_nonzero(model(case, prompt)))
                if cuda:
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - start
                peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
                row = {"model": title, "domain": case.domain, "shape": list(case.image.shape), "seconds": round(seconds, 2),
                       "volumes_per_second": round(1 / seconds, 4), "peak_gpu_gib": round(peak, 2), "mask_voxels": voxels}
                rows.append(row)
                print(f"{title:<26} {case.domain:<11} {str(tuple(case.image.shape)):<16} {seconds:8.1f} s  {1 / seconds:7.3f} vol/s  "
                      f"peak {peak:6.2f} GiB", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"device": args.device, "torch": torch.__version__, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
