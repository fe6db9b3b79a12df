"""Noise schedules and samplers (DDIM in ``ddim``, DPM-Solver++ 2M in ``dpm_solver``, UniPC in ``unipc``, each by
name in ``registry``), shared by inference (``moebius.pipeline``) and training (``moebius.train``).

The package itself imports nothing: ``registry``'s names are torch-free, and the ONNX Runtime pipeline reads
them through ``moebius.pipeline.presets`` without torch.
"""
