"""Train the small 3D U-Net baseline on a few subjects through the patch cache and a DataLoader.

The UMD paper's reference is an nnU-Net trained on 10 cases per modality; this example trains a
small U-Net on `--cases` training scans of one scan kind with organ-weighted 3D patches, cross
entropy plus soft Dice, and writes a checkpoint that `umd_dataset.evaluate` loads. Interruptible:
the checkpoint is saved every `--save-every` steps and a rerun resumes from it.

    python scripts/train_baseline.py umd-mini --scan ct --cases 10 --steps 200 --out baseline_ct.pt
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, classes: int) -> torch.Tensor:
    probabilities = logits.softmax(dim=1)
    one_hot = torch.nn.functional.one_hot(target, classes).permute(0, 4, 1, 2, 3).float()
    dims = (0, 2, 3, 4)
    intersection = (probabilities * one_hot).sum(dims)
    union = probabilities.sum(dims) + one_hot.sum(dims)
    present = one_hot.sum(dims) > 0
    dice = (2 * intersection + 1e-5) / (union + 1e-5)
    return 1 - dice[1:][present[1:]].mean() if present[1:].any() else logits.sum() * 0


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("release", help="release folder (e.g. one made by `umd synth`)")
    parser.add_argument("--scan", default="ct", choices=["ct", "pet", "mri"])
    parser.add_argument("--cases", type=int, default=10, help="training scans (the paper's nnU-Net: 10 per modality)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--save-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="baseline_unet.pt")
    args = parser.parse_args(argv)

    from umd_dataset import open_release
    from umd_dataset.views.cache import PatchDataset, open_cache
    from umd_dataset.evaluation.baselines.unet import NORMALIZATIONS, UNet3D, load_checkpoint, save_checkpoint

    torch.manual_seed(args.seed)
    release = open_release(args.release)
    cache = open_cache(release, progress=True)  # built or brought up to date if the release changed
    dataset = PatchDataset(cache, patch_size=args.patch, samples_per_volume=4, sampler="organ", scan=args.scan, split="train", seed=args.seed)
    dataset.records = dataset.records[: args.cases]
    if not dataset.records:
        raise SystemExit(f"no training scan of kind {args.scan!r} in {args.release}")
    normalize = NORMALIZATIONS[args.scan]
    classes = len(release.schema) + 1
    model = UNet3D(classes=classes, width=args.width)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    step = 0
    out = Path(args.out)
    if out.exists():
        model, meta = load_checkpoint(out)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
        if meta.get("optimizer"):
            optimizer.load_state_dict(meta["optimizer"])
        step = meta["step"]
        print(f"resuming from {out} at step {step}")
    start = time.perf_counter()
    batches_per_epoch = math.ceil(len(dataset) / args.batch)
    epoch, skip = divmod(step, batches_per_epoch)  # resume at the batch where the run stopped
    while step < args.steps:
        dataset.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch, shuffle=True, num_workers=args.workers,
                                             generator=torch.Generator().manual_seed(args.seed + epoch))
        for position, batch in enumerate(loader):
            if position < skip:
                continue
            image = torch.stack([normalize(x) for x in batch["image"]])
            target = batch["label"][:, 0].long()
            logits = model(image)
            loss = torch.nn.functional.cross_entropy(logits, target) + soft_dice_loss(logits, target, classes)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step % 10 == 0 or step == args.steps:
                print(f"step {step}/{args.steps}  loss {loss.item():.4f}  {time.perf_counter() - start:.0f} s", flush=True)
            if step % args.save_every == 0 or step == args.steps:
                save_checkpoint(out, model, scan=args.scan, schema=release.schema.key, patch_size=args.patch,
                                normalization=normalize, step=step, optimizer_state=optimizer.state_dict(),
                                extra={"release": f"{release.info.name} {release.info.version}", "cases": [r.key for r in dataset.records]})
            if step >= args.steps:
                break
        epoch, skip = epoch + 1, 0
    print(f"wrote {out} (step {step})")


if __name__ == "__main__":
    main()
