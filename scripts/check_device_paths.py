"""On an accelerator: the fast paths give the same values there as the per-batch path (bit for bit), with data,
permutations and materialised phases on the device, and a short run ends the same with or without materialising.

    CLTRAIN_DATA=... python scripts/check_device_paths.py [--device cuda]

Prints one line per check and exits 1 if a batch check fails (the run comparison is reported: GPU training
kernels need not be deterministic, so a differing run is shown, not failed).
"""
from __future__ import annotations

import argparse
import sys
import tempfile

import torch


def batch_checks(device: torch.device) -> bool:
    from cltrain.config import load_config
    from cltrain.streams.base import STREAMS
    from cltrain.streams.loader import PhaseLoader, Segment, materialise

    ok = True
    for name in ("permuted", "rotated"):
        stream = STREAMS.get(name)(load_config("bench/pmnist_naive", [f"stream.name={name}", "stream.n_tasks=3",
                                                                      "stream.train_per_task=5000"])).to(device)
        images = stream.train.images[:512]
        for task in range(3):
            ids = torch.full((512,), task, dtype=torch.long, device=device)
            same = torch.equal(stream.transform.for_task(images, task), stream.transform(images, ids))
            ok &= same
            print(f"{name} task {task}: for_task == forward on {device}: {same}")
        t = stream.transform
        if name == "rotated":
            report_grid_table(t, images)
        same = torch.equal(t.normalise(images), (images.float() / 255.0 - t.mean) / t.std)
        ok &= same
        print(f"{name}: in-place normalise == formula on {device}: {same}")
        idx = torch.cat([stream.tasks[1].train_idx, stream.tasks[2].train_idx[:700]])
        tids = torch.cat([torch.full((5000,), 1), torch.full((700,), 2)]).to(device)
        x, _ = materialise(stream, idx, tids, None, 1 << 40)
        print(f"{name}: materialised phase lives on {x.device}")
        segment = Segment(1, idx, tids, n_batches=2 * -(-idx.numel() // 128))
        whole = list(PhaseLoader(stream, [segment], 128, seed=0, materialise_bytes=1 << 40))
        per = list(PhaseLoader(stream, [segment], 128, seed=0, materialise_bytes=0))
        same = len(whole) == len(per) and all(torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and
                                              torch.equal(a.t, b.t) for a, b in zip(whole, per))
        ok &= same and whole[0].x.device.type == device.type
        print(f"{name}: materialised batches == per-batch batches on {device}: {same} ({len(whole)} batches)")
    return ok


def report_grid_table(t, images: torch.Tensor) -> None:
    """The rotation's grid table (made once per run) against each batch's own affine_grid, the code before it:
    equal on the CPU; on a device a batched kernel may round otherwise, which is reported, not failed."""
    import torch.nn.functional as F

    from cltrain.streams.transforms import rotation_affine

    ids = torch.arange(images.shape[0], device=images.device) % len(t.angles)
    per_batch = F.affine_grid(rotation_affine(t.angles[ids]), list(images.shape), align_corners=False)
    table = t.grids(images).index_select(0, ids)
    print(f"rotated: grid table == per-batch affine_grid on {images.device}: {torch.equal(table, per_batch)} "
          f"(max |diff| {float((table - per_batch).abs().max()):.2e})")


def run_check(device: torch.device) -> None:
    from cltrain.config import load_config
    from cltrain.experiment import run_experiment

    common = ["stream.n_tasks=3", "stream.train_per_task=5000", "trainer.epochs_per_task=2", "trainer.progress_bar=false",
              "logger.wandb.mode=disabled", "trainer.accelerator=gpu" if device.type == "cuda" else "trainer.accelerator=cpu"]
    with tempfile.TemporaryDirectory() as tmp:
        runs = [run_experiment(load_config("bench/pmnist_naive", [*common, f"trainer.materialise_mb={mb}",
                                                                  f"run_dir={tmp}/{mb}"])) for mb in (0, 1024)]
    same = runs[0]["acc_matrix"] == runs[1]["acc_matrix"]
    print(f"3-task run on {device}, per batch vs materialised: acc_matrix identical: {same} "
          f"(ACC {runs[0]['acc']:.4f} / {runs[1]['acc']:.4f})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    device = torch.device(parser.parse_args().device)
    from cltrain.cli import _quiet_lightning

    _quiet_lightning()
    ok = batch_checks(device)
    run_check(device)
    print("all batch checks passed" if ok else "A BATCH CHECK FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
