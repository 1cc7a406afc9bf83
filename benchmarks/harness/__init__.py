"""The benchmark harness: first- vs second-order MAML (and remat) on cost and accuracy.

One command measures, for each variant (``second_order``, ``first_order``,
``second_order_remat``: each inner step checkpointed, ``second_order_remat_sqrt``:
two-level checkpointing with segments of about sqrt(inner steps) steps) and
each problem shape (the sinusoid MLP; the Omniglot Conv4 in its 5-way 1-shot
and 20-way 1-shot settings), the sections of ``sections.SECTIONS``:
``variants`` (the meta-step's cost), ``sweep`` (against inner steps),
``accuracy`` (first vs second order trained for the same meta-training wall
time, validation excluded, then tested on 600 tasks; needs the Omniglot data),
``family`` and ``family_accuracy`` (the same for every algorithm of
``configs.FAMILY``, with its own hyperparameters), ``precision`` (float32 vs
bfloat16, ``jaxmaml.mixed_precision``), ``devices`` (the meta-batch split over
devices with ``make_meta_step(..., mesh=...)``; simulated on CPU, where they
share the machine's cores: the overhead of the split, not a speed-up),
``resnet12_memory`` (second-order MAML on ResNet-12 with and without remat,
first order and iMAML: memory against inner steps, the steps within 16 and 80
GiB) and ``peers`` (``benchmarks.peers``, if PyTorch is installed).

A meta-step measurement reports lowering and compile time (separately),
steady-state time of the whole jitted meta-step (Optax update included; median
and interquartile range of repeated timed blocks after warm-up,
``block_until_ready``), tasks per second, memory, and FLOP/s, each in a fresh
Python process, so that its peak RSS is its own. Definitions:

* memory: ``xla_temp_bytes`` is the scratch memory of the compiled step
  (XLA's memory analysis: what grows with inner steps); ``xla_peak_bytes``
  adds its arguments and outputs (minus donated aliases); ``peak_rss_bytes``
  is the process's peak resident set (the JAX runtime included; compare it
  with ``rss_before_build_bytes``); ``device_peak_bytes`` is the device's
  allocator peak where the backend reports one (GPU, TPU).
* FLOPs are *model* FLOPs: XLA's cost analysis of the same meta-step lowered
  with tasks vmapped and the inner loop unrolled (a loop body would be counted
  once), without remat (its recomputation is overhead, not work).
  ``matmul_fraction`` compares the achieved FLOP/s with a dense float32
  matmul measured on the same device in the same run.

Writes ``harness.json`` (machine, versions, config, every figure),
``harness.md`` (tables) and PNG plots into ``--out``.

    python -m benchmarks.harness --quick     # a few minutes on CPU
    python -m benchmarks.harness             # the full run

Modules: ``configs`` (variants, family, shapes), ``kernels`` (one meta-step
or the reference matmul measured), ``training`` (one equal-budget training
run, through the experiments' loop), ``workers`` (each of those in a fresh
process), ``reporting`` (Markdown tables and plots), ``sections`` (the
sections as a table), ``cli`` (the command).
"""
