"""Runs a batch of queued jobs through the pipeline (on the batcher's worker thread) and counts calls."""

from __future__ import annotations

import logging
import threading
from typing import Any

from ..errors import MoebiusError
from .batching import Job

logger = logging.getLogger(__name__)


class PipelineRunner:
    """Owns the pipeline. ``run_batch(jobs)`` -> one ``(PIL image, InpaintMetadata)`` or exception per job."""

    def __init__(self, pipeline: Any, model_name: str = "moebius") -> None:
        self.pipeline = pipeline
        self.model_name = model_name
        self.calls = 0  # pipeline calls (each one U-Net batch per tile size)
        self._lock = threading.Lock()

    def run_batch(self, jobs: list[Job]) -> list[Any]:
        try:
            return self._call(jobs)
        except MoebiusError as exc:
            if len(jobs) == 1:
                return [exc]
        # One bad job must not fail its companions: run each alone.
        results: list[Any] = []
        for job in jobs:
            try:
                results.extend(self._call([job]))
            except Exception as exc:  # noqa: BLE001 - returned to that job's caller
                results.append(exc)
        return results

    def _call(self, jobs: list[Job]) -> list[Any]:
        def on_step(pipe: Any, step: int, timestep: int, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
            info = callback_kwargs["step_info"]
            for job in jobs:
                job.step, job.total = info.step + 1, info.num_steps
            return callback_kwargs

        masks = [job.mask for job in jobs]
        with self._lock:
            self.calls += 1
            out = self.pipeline([job.image for job in jobs], None if all(m is None for m in masks) else masks,
                                seed=[job.seed for job in jobs], output_type="pil", callback_on_step_end=on_step,
                                **jobs[0].options)
        return list(zip(out.images, out.metadata))
