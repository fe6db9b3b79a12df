"""Where a training step's time goes: data wait, encoding, forwards, backward, optimizer, EMA, and top kernels.

    python bench/train_step_profile.py configs/small/student_distill.yaml --steps 5
    python bench/train_step_profile.py configs/tiny_cpu.yaml --set data.image_dirs=[some/folder] --steps 3

Builds the config's :class:`~moebius.train.trainer.Trainer` (writing under a temporary folder), runs
``--warmup`` steps, then profiles ``--steps`` steps with torch.profiler (CUDA kernels too on a GPU). Prints
the trainer's phases (its ``moebius/*`` ranges) and the most expensive operators, per step. ``--trace``
writes a Chrome trace for a closer look.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

from torch.profiler import ProfilerActivity, profile

from moebius.train.config import load_config
from moebius.train.trainer import Trainer


def build_trainer(config_path: str, overrides: list[str], output_dir: str, accelerator: Any = None) -> Trainer:
    """The config's Trainer writing under ``output_dir``, never resuming, without TensorBoard."""
    config = load_config(config_path, [*overrides, f"run.output_dir={output_dir}", "run.resume=null",
                                       "run.tensorboard=false"])
    return Trainer(config, accelerator)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--top", type=int, default=15, help="operators listed")
    parser.add_argument("--trace", metavar="FILE.json", help="also write a Chrome trace")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(args.config, args.overrides, tmp)
        config = trainer.config
        cuda = trainer.device.type == "cuda"
        for _ in range(args.warmup):
            trainer.train_step()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        start = time.perf_counter()
        with profile(activities=activities) as prof:
            scalars = [trainer.train_step() for _ in range(args.steps)]
        wall = (time.perf_counter() - start) / args.steps

    def ms(total_us: float) -> str:  # profiler totals are µs over all profiled steps
        return f"{total_us / 1e3 / args.steps:.1f}"

    events = prof.key_averages()
    device = "cuda" if cuda else "cpu"
    print(f"# {config.data.batch_size} images × {config.data.resolution}² per step on {trainer.device}; "
          f"{wall * 1e3:.0f} ms per step under the profiler, "
          f"{sum(s['time/data_wait_s'] for s in scalars) / args.steps * 1e3:.0f} ms of it waiting for data")
    print("\n| phase | CPU ms/step | device ms/step |\n|---|---|---|")
    for e in sorted((e for e in events if e.key.startswith("moebius/")), key=lambda e: -e.cpu_time_total):
        device_us = getattr(e, "device_time_total", 0) if cuda else 0
        print(f"| {e.key.removeprefix('moebius/')} | {ms(e.cpu_time_total)} | {ms(device_us)} |")
    sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    print(f"\n# top operators by self {device} time")
    print(events.table(sort_by=sort, row_limit=args.top))
    if args.trace:
        prof.export_chrome_trace(args.trace)
        print(f"wrote {args.trace}")


if __name__ == "__main__":
    main()
