"""Pure metrics: arrays in, numbers or fixed-shape result dataclasses out.

No module here reads or writes a file, opens a dataset, trains or loads a network, or writes JSON;
the drivers one level up (:mod:`radardiff.evaluate.metrics`, :mod:`~radardiff.evaluate.study`,
:mod:`~radardiff.evaluate.downstream`, ...) do that and call these. ``tests/test_layers.py``
checks the rule on the source.

- :mod:`.semivariogram`: exact FFT Matheron semivariograms and their relative error;
- :mod:`.spectra`: radially averaged power spectra and their log-RMSE;
- :mod:`.distributions`: Wasserstein-1 distances, histograms, per-sample spread;
- :mod:`.radar_stats`: speckle (ENL, CV) and wrapped-phase statistics (gradients, residues);
- :mod:`.sar`: SAR intensity: homogeneous-window ENL, log-cumulants, speckle correlation, bright
  targets, polarisation ratio;
- :mod:`.maps`: how images follow their per-pixel maps: the slope of phase on elevation, and
  backscatter level, ENL and log-cumulants per class of a label map;
- :mod:`.memorisation`: nearest-training distances of generated against held-out images, and
  the mean pairwise distance of a set (its diversity);
- :mod:`.bands`: bootstrap or normal confidence bands of a mean curve;
- :mod:`.features`: FID, KID, improved precision and recall of feature arrays;
- :mod:`.skill`: skill scores of the downstream tasks (recovery RMSE, ROC AUC, unwrapping within
  pi, accuracy).
"""
