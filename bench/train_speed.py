"""Training throughput of our DCGAN loop against the pytorch/examples DCGAN loop, in one run.

The peer is that example's training step as it is written there (Sigmoid D + BCELoss, real and fake
backward passes, one G step), on the same networks, the same in-memory data and the same thread count,
so the ratio isolates what our loop adds: the step-keyed sampler, metrics logging, the progress bar,
and the final checkpoint and sample grid.

    python bench/train_speed.py [--steps 30] [--image-size 64] [--batch-sizes 64 16]

Writes a table between markers in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from trainer.data import ShapesDataset
from trainer.models import dcgan
from trainer.registry import get_architecture
from trainer.training.loop import Run, TrainOptions

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
BEGIN, END = "<!-- train-speed:begin -->", "<!-- train-speed:end -->"


def peer_images_per_s(
    dataset: ShapesDataset, image_size: int, batch_size: int, steps: int, warmup: int, device: str = "cpu"
) -> float:
    """The pytorch/examples dcgan/main.py inner loop (float32, as the example runs; on `device`)."""
    config = dcgan.DCGANConfig(image_size=image_size)
    torch.manual_seed(0)
    net_g = dcgan.build_generator(config).to(device)
    net_d = nn.Sequential(dcgan.build_discriminator(config), nn.Sigmoid()).to(device)
    criterion = nn.BCELoss()
    opt_d = torch.optim.Adam(net_d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(net_g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True)
    batches = iter(loader)
    start = None
    for i in range(warmup + steps):
        if i == warmup:
            if device != "cpu":
                torch.cuda.synchronize()
            start = time.perf_counter()
        try:
            real = next(batches)
        except StopIteration:
            batches = iter(loader)
            real = next(batches)
        real = real.to(device)
        b = real.size(0)
        net_d.zero_grad()
        output = net_d(real)
        err_d_real = criterion(output, torch.full((b,), 1.0, device=device))
        err_d_real.backward()
        noise = torch.randn(b, config.latent_dim, 1, 1, device=device)
        fake = net_g(noise)
        output = net_d(fake.detach())
        err_d_fake = criterion(output, torch.full((b,), 0.0, device=device))
        err_d_fake.backward()
        opt_d.step()
        net_g.zero_grad()
        output = net_d(fake)
        err_g = criterion(output, torch.full((b,), 1.0, device=device))
        err_g.backward()
        opt_g.step()
        _ = err_d_real.item() + err_d_fake.item(), err_g.item()  # the example prints these every step
    assert start is not None
    return steps * batch_size / (time.perf_counter() - start)


def ours_images_per_s(image_size: int, batch_size: int, steps: int, warmup: int, device: str = "cpu") -> float:
    """Our full loop (sampler, logging, progress accounting), timed after `warmup` steps.

    Every run ends with a checkpoint and a sample grid; a real run amortises them over thousands of
    steps (every 500 by default), so their one-off cost is measured separately and taken out."""
    arch = get_architecture("dcgan")
    config = arch.make_config({"image_size": image_size, "batch_size": batch_size})
    with tempfile.TemporaryDirectory() as out:
        # amp "auto": bfloat16 autocast on CUDA, float32 on CPU (what gan-train does)
        options = TrainOptions(data="shapes:2048", steps=warmup, out=out, log_every=10, sample_every=0,
                               checkpoint_every=0, progress=False, device=device)
        run = Run("dcgan", config, options)
        run.train()
        run.options.steps = warmup + steps
        start = time.perf_counter()
        run.train()
        elapsed = time.perf_counter() - start
        start = time.perf_counter()
        run.checkpoint()
        run.sample()
        end_of_run = time.perf_counter() - start
        return steps * batch_size / (elapsed - end_of_run)


def write_doc(rows: list[tuple[int, int, float, float]], command: str) -> None:
    table = [
        BEGIN,
        f"Command: `{command}` (torch {torch.__version__}, {torch.get_num_threads()} threads)",
        "",
        "| image size | batch | pytorch/examples loop (img/s) | ours (img/s) | ours / peer |",
        "| --- | --- | --- | --- | --- |",
    ]
    table += [f"| {s} | {b} | {p:.1f} | {o:.1f} | {o / p:.2f} |" for s, b, p, o in rows]
    table.append(END)
    block = "\n".join(table)
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    if BEGIN in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), block, text, flags=re.S)
    else:
        text += "\n## Training speed: DCGAN, ours vs the pytorch/examples loop\n\n" + block + "\n"
    DOC.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 16])
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    dataset = ShapesDataset(image_size=args.image_size, length=2048)
    rows = []
    for batch in args.batch_sizes:
        # peer, ours, ours, peer: a drift in the machine's speed hits both alike
        peer_a = peer_images_per_s(dataset, args.image_size, batch, args.steps, args.warmup)
        ours_a = ours_images_per_s(args.image_size, batch, args.steps, args.warmup)
        ours_b = ours_images_per_s(args.image_size, batch, args.steps, args.warmup)
        peer_b = peer_images_per_s(dataset, args.image_size, batch, args.steps, args.warmup)
        peer, ours = (peer_a + peer_b) / 2, (ours_a + ours_b) / 2
        rows.append((args.image_size, batch, peer, ours))
        print(f"{args.image_size}px batch {batch}: peer {peer:.1f} img/s, ours {ours:.1f} img/s, "
              f"ratio {ours / peer:.2f}")
    if not args.no_doc:
        write_doc(rows, "python bench/train_speed.py " + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items() if k != "no_doc"))


if __name__ == "__main__":
    main()
