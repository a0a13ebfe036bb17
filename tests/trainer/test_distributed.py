"""Data-parallel training: 2 processes under torchrun (gloo, CPU) against 1 process, same global batch.

With strided shards, globally drawn noise, all-reduced BatchNorm statistics and averaged gradients, the
two-process run must end where the one-process run ends, up to float rounding of the reductions.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.trainer.ddp_worker import build
from trainer.training.checkpoint import load_checkpoint
from trainer.training.distributed import AllReduceBatchNorm, Ranks, _convert

ROOT = Path(__file__).resolve().parents[2]
ARCHS = ["dcgan", "lsgan", "pggan", "stargan", "srresnet", "srgan", "dcgan-r1"]  # variants: ddp_worker.VARIANTS
NETWORK_KEYS = ("generator", "generator_ema", "discriminator")


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    result = subprocess.run([*torchrun, "-m", "tests.trainer.ddp_worker", str(root), *ARCHS], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-4000:]
    return root


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def flat_update(final: dict, initial: dict, keys: tuple[str, ...]) -> torch.Tensor:
    """Every floating-point tensor's change over the run, as one vector."""
    return torch.cat([(final[k][n].double() - t.double()).flatten() for k in keys for n, t in initial[k].items()
                      if t.is_floating_point()])


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_two_processes_train_like_one_with_the_same_global_batch(arch, two_process_runs, tmp_path):
    run = build(arch, tmp_path / arch)
    keys = tuple(k for k in NETWORK_KEYS if k in run.algorithm.state_dict())
    initial = copy.deepcopy({k: run.algorithm.state_dict()[k] for k in keys})
    run.train()
    one, two = load_checkpoint(tmp_path / arch), load_checkpoint(two_process_runs / arch)

    assert two["step"] == one["step"] and two["images_seen"] == one["images_seen"]
    # The runs' weight updates agree to well under 1%. Not elementwise: Adam turns a gradient that is
    # zero but for rounding (StarGAN's label channels before InstanceNorm) into a full lr-sized step
    # whose sign the reduction order decides. A missing gradient average or a wrong shard moves whole
    # networks and fails by tens of percent.
    update_one, update_two = flat_update(one, initial, keys), flat_update(two, initial, keys)
    assert update_one.norm() > 0
    assert (update_two - update_one).norm() / update_one.norm() < 1e-2
    for key in keys:  # and integer state (BatchNorm's batch counts, PGGAN's grown stage) is identical
        for name, tensor in one[key].items():
            if not tensor.is_floating_point():
                assert torch.equal(two[key][name], tensor), f"{key}.{name}"
    if "noise_rng" in one:  # every rank drew the global batch's noise: the generator states are equal
        assert torch.equal(two["noise_rng"], one["noise_rng"])

    # rank 0 alone logged, the same records, with losses averaged over the ranks (= the global batch's)
    ones, twos = records(tmp_path / arch), records(two_process_runs / arch)
    assert [r["step"] for r in twos] == [r["step"] for r in ones]
    for a, b in zip(ones, twos, strict=True):
        losses = [k for k in a if k.startswith(("loss", "d_", "g_", "gp", "r1", "content", "adversarial"))]
        assert losses
        for k in losses:
            assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-5), (a["step"], k)


def test_shard_and_gather_are_inverse_layouts():
    whole = torch.arange(12).reshape(6, 2)
    shards = [Ranks(rank=r, world_size=3).shard(whole) for r in range(3)]
    assert torch.equal(shards[1], whole[1::3])
    assert torch.equal(torch.stack(shards, dim=1).flatten(0, 1), whole)  # gather's interleaving
    single = Ranks()
    assert single.shard(whole) is whole and single.gather(whole) is whole and not single.active


def test_batchnorm_conversion_keeps_the_very_same_tensors():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(2, 2),
                              torch.nn.Sequential(torch.nn.BatchNorm1d(2)))
    before = net.state_dict(keep_vars=True)
    converted = _convert(net)
    after = converted.state_dict(keep_vars=True)
    assert list(after) == list(before) and all(after[k] is before[k] for k in before)
    assert isinstance(converted[1], AllReduceBatchNorm) and isinstance(converted[3][0], AllReduceBatchNorm)
    x = torch.randn(5, 3, 6, 6)
    converted.train()
    torch.testing.assert_close(converted[1](converted[0](x)), torch.nn.functional.batch_norm(
        net[0](x), None, None, net[1].weight, net[1].bias, training=True))  # without a process group: plain BN
