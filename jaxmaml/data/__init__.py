"""Task distributions and datasets.

- ``sinusoid``: the MAML sinusoid regression family, sampled with ``jax.random``.
- ``omniglot``: Omniglot from the original zips, their folders or TFDS, as
  cached uint8 arrays; the character split; Lake et al.'s one-shot runs.
- ``miniimagenet``: miniImageNet in the Ravi & Larochelle layout (images/ and
  train/val/test CSVs, brought by the user), as cached, memory-mapped arrays.
- ``episodes``: N-way K-shot tasks from a class-indexed image array, drawn on
  the device (jittable) or on the host.
- ``cache``: where the loaders cache their preprocessed arrays, and their checksums.
- ``extras``: the optional packages the image loaders import when used
  (Pillow, tensorflow-datasets: ``pip install 'jaxmaml[data]'``).
"""
