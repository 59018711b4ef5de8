"""The model: choosing and loading it (``loading``), machine-dependent choices (``hardware``, ``devices``),
model-dir checks, attention kernels, label-only logits, and preparing the embedded model (``embedded``)."""
