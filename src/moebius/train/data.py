"""Training data: the official jsonl format, plain image folders, and the official augmentations.

One item becomes ``{"image" (3, S, S) uint8, "mask" (1, S, S) uint8 in {0, 1}
(1 = hole), "input_ids" (10,), "key" ()}``; :func:`training_tensors` turns a collated batch into the float
image in [-1, 1], mask and masked image on the training device. Batches travel as bytes, a seventh of the
float image + mask + masked image, through the loader's worker processes and the host-to-device copy.

Reproducibility: samples are addressed by a global *key* k = 0, 1, 2, ... The key fixes the dataset index
(a per-epoch permutation seeded by the run seed) and seeds every random choice of that sample, here and in
the trainer (noise, timestep). A run's sample stream therefore does not depend on the number of processes
or workers, and resuming at step s continues the exact stream (:class:`KeySampler`).

Two official quirks are fixed: a generated mask is drawn at the crop size after cropping (so its hole
ratio is what the preset says), and an object mask requested with no object masks available
is a config error at start-up instead of a crash mid-run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..errors import ConfigError, InputError
from ..mask_generators import MaskGenerator, ObjectMasks, dilate, list_images, load_mask
from ..models.denoiser import BACKGROUND_IDS, FOREGROUND_IDS
from .config import DataConfig

logger = logging.getLogger(__name__)

PROMPT_IDS = {"background": BACKGROUND_IDS, "foreground": FOREGROUND_IDS}


@dataclass(frozen=True)
class Item:
    """One training example: an image, its category prompt and optionally its own mask."""

    image: Path
    prompt: str = "background"
    mask: Path | None = None


def read_jsonl(path: str | Path) -> list[Item]:
    """Parse the official format: one ``{"image", "prompt": background|foreground, "mask"?}`` per line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"data file not found: {path}")
    items = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict) or "image" not in record:
            raise InputError(f"{where}: expected an object with an 'image' entry")
        prompt = record.get("prompt", "background")
        if prompt not in PROMPT_IDS:
            raise InputError(f"{where}: prompt must be 'background' or 'foreground', got {prompt!r}")
        mask = record.get("mask")
        if prompt == "foreground" and not mask:
            raise InputError(f"{where}: a 'foreground' item needs a mask")
        items.append(Item(path.parent / record["image"], prompt, path.parent / mask if mask else None))
    return items


def collect_items(config: DataConfig) -> list[Item]:
    """Every item of the configured jsonl files and image folders."""
    items = [item for path in config.jsonl for item in read_jsonl(path)]
    for folder in config.image_dirs:
        items += [Item(p) for p in list_images(folder)]
    if not items:
        raise ConfigError("no training data: set data.jsonl and/or data.image_dirs to something non-empty")
    return items


# ----------------------------------------------------------------------------------------------------
# Augmentations


def resize_short_side(image, size: int):
    """PIL image -> the same image with its short side ``size`` (LANCZOS), aspect kept."""
    from PIL import Image

    w, h = image.size
    scale = size / min(w, h)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    return image if new == (w, h) else image.resize(new, Image.LANCZOS)


def hole_biased_start(length: int, crop: int, hole: np.ndarray, min_overlap: float, rng: np.random.Generator) -> int:
    """Start of a ``crop``-long window in ``length`` that keeps ``min_overlap`` of the hole's extent.

    ``hole``: (length,) bool, True where the mask has a hole in that row/column. Uniform when no hole.
    """
    if length <= crop:
        return 0
    idx = np.flatnonzero(hole)
    lo, hi = 0, length - crop
    if idx.size:
        a, b = int(idx[0]), int(idx[-1]) + 1
        need = min_overlap * min(b - a, crop)
        lo, hi = max(lo, int(np.ceil(a + need - crop))), min(hi, int(np.floor(b - need)))
        if lo > hi:
            lo, hi = 0, length - crop
    return int(rng.integers(lo, hi + 1))


class KeyOrder:
    """Sample key -> dataset index: position ``key % n`` of epoch ``key // n``'s permutation of ``n`` items,
    seeded by the run seed (the current epoch's permutation is kept)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed
        self._epoch = -1
        self._perm = np.arange(0)

    def __call__(self, key: int) -> int:
        epoch = key // self.n
        if epoch != self._epoch:
            self._perm = np.random.default_rng([self.seed, 0x5EED, epoch]).permutation(self.n)
            self._epoch = epoch
        return int(self._perm[key % self.n])


class InpaintingDataset(torch.utils.data.Dataset):
    """Addressed by sample key (see module docstring): ``dataset[k]`` -> one prepared example."""

    def __init__(self, items: list[Item], config: DataConfig, seed: int) -> None:
        self.items = items
        self.config = config
        self.seed = seed
        self.mask_generator = MaskGenerator(config.mask_preset)
        fg_masks = [item.mask for item in items if item.prompt == "foreground" and item.mask is not None]
        self.object_masks = ObjectMasks(fg_masks + ObjectMasks.from_folders(config.object_mask_dirs).paths)
        if config.object_mask_p > 0 and not len(self.object_masks):
            raise ConfigError("data.object_mask_p > 0 but there are no object masks "
                              "(no foreground items and no data.object_mask_dirs)")
        self.index_of = KeyOrder(len(items), seed)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(key)])
        index = self.index_of(int(key))
        for attempt in range(3):  # an unreadable image is skipped with a warning, not a crash
            item = self.items[(index + attempt) % len(self.items)]
            try:
                example = self.prepare(item, rng)
                break
            except OSError as exc:
                logger.warning("skipping unreadable training image %s (%s)", item.image, exc)
        else:
            raise InputError(f"three unreadable training images in a row, starting at {self.items[index].image}")
        example["key"] = torch.tensor(int(key), dtype=torch.int64)
        return example

    def prepare(self, item: Item, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """Official ``_prepare_item`` + crop + flip + collate, with the masks drawn after cropping."""
        from PIL import Image

        size = self.config.resolution
        with Image.open(item.image) as opened:
            image = resize_short_side(opened.convert("RGB"), size)
        pixels = np.array(image)  # (H, W, 3) uint8, writable (torch.from_numpy warns on a read-only view)
        h, w = pixels.shape[:2]

        own = None
        if item.prompt == "foreground" or (item.mask is not None and rng.random() >= self.config.random_mask_p):
            own = load_mask(item.mask, (h, w))
        # Square crop along the long axis, biased to keep the item's own hole.
        rows = own.any(axis=1) if own is not None else np.zeros(h, bool)
        cols = own.any(axis=0) if own is not None else np.zeros(w, bool)
        top = hole_biased_start(h, size, rows, self.config.min_hole_overlap, rng)
        left = hole_biased_start(w, size, cols, self.config.min_hole_overlap, rng)
        pixels = pixels[top:top + size, left:left + size]
        if own is not None:
            mask = own[top:top + size, left:left + size]
        else:
            mask = self.mask_generator(size, size, rng)
        if item.prompt == "background" and self.config.object_mask_p > 0 and rng.random() < self.config.object_mask_p:
            extra = self.object_masks(size, size, rng)
            mask = np.minimum(mask, extra) if self.config.object_mask_combine == "and" else np.maximum(mask, extra)
        if rng.random() < self.config.dilate_p:
            kernel = int(rng.choice(self.config.dilate_kernels))
            mask = dilate(mask, kernel, int(rng.choice(self.config.dilate_iterations)))
        if rng.random() < self.config.flip_p:
            pixels, mask = pixels[:, ::-1], mask[:, ::-1]
        prompt = item.prompt
        # Drawn only when enabled, so that runs without it keep their sample streams.
        if prompt == "background" and self.config.category_dropout_p > 0 and rng.random() < self.config.category_dropout_p:
            prompt = "foreground"

        return {
            "image": torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1),  # (3, S, S) uint8
            "mask": torch.from_numpy((np.ascontiguousarray(mask) >= 0.5).astype(np.uint8))[None],  # (1, S, S)
            "input_ids": torch.tensor(PROMPT_IDS[prompt], dtype=torch.int64),
        }


def training_tensors(batch: dict[str, torch.Tensor], device: torch.device | str
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A collated batch -> float32 on ``device``: image (B, 3, S, S) in [-1, 1], mask (B, 1, S, S) in {0, 1}
    (1 = hole), and the masked image image·(1 − mask) (holes at 0, mid-grey)."""
    image = batch["image"].to(device, non_blocking=True).float() / 127.5 - 1.0
    mask = batch["mask"].to(device, non_blocking=True).float()
    return image, mask, image * (1.0 - mask)


def first_rank_key(key: int, batch_size: int, world_size: int) -> int:
    """The key process 0 reads at the place where process r reads ``key`` (see :class:`KeySampler`): the
    same position of the same global micro-batch, in the first process's slice."""
    global_batch = batch_size * world_size
    return key - key % global_batch + key % global_batch % batch_size


class KeySampler(torch.utils.data.Sampler):
    """The keys one process reads, forever, from micro-batch ``start`` on.

    Global micro-batch m holds keys [m·G, (m+1)·G) with G = batch_size × world_size; process r takes the
    r-th slice of ``batch_size`` keys. So one process with batch G and G/B processes with batch B see the
    same samples.
    """

    def __init__(self, batch_size: int, rank: int = 0, world_size: int = 1, start: int = 0) -> None:
        self.batch_size, self.rank, self.world_size, self.start = batch_size, rank, world_size, start

    def __iter__(self) -> Iterator[int]:
        m = self.start
        global_batch = self.batch_size * self.world_size
        while True:
            first = m * global_batch + self.rank * self.batch_size
            yield from range(first, first + self.batch_size)
            m += 1
