"""N-way K-shot episodes from a class-indexed image array.

The dataset is one array ``images[num_classes, examples_per_class, h, w]``
(grayscale) or ``[num_classes, examples_per_class, h, w, channels]``: uint8
in ``0..255``, scaled to float32 in ``[0, 1]``, or floating point, taken to
be in ``[0, 1]`` already and only cast to float32 (never divided by 255
again); other dtypes are refused.
``sample_episodes`` draws a meta-batch of tasks with ``jax.random`` and
gathers them by index, with fixed shapes, so it runs on the device inside
a jitted meta-step (no host round-trip per iteration). ``host_episodes`` draws
tasks with the same semantics in NumPy, for datasets that do not fit in device
memory.

Task semantics (those of the original MAML code): a task picks ``num_ways``
distinct classes; with ``rotate=True`` each picked class is rotated by a
random multiple of 90 degrees, and the rotated class is the class of the task
(so rotations act as new classes, at meta-train and meta-test time alike);
per class, ``num_shots + num_queries`` distinct examples are drawn, the first
``num_shots`` for the support set. Labels are ``0 .. num_ways - 1`` in the
order the classes were drawn: correct by construction, so they are not
checked again downstream. The support and query sets are ordered class by
class; ``shuffle_support=True`` puts each task's support set in random order
(for algorithms that split it into mini-batches, such as Reptile).

Classes of unequal size (CUB-200-2011, tieredImageNet) are given as a padded
array, class ``c``'s examples in ``images[c, :counts[c]]``, and their
``counts [num_classes]``: with ``counts`` the samplers draw class ``c``'s
examples among its first ``counts[c]`` only, uniformly and without
replacement, so padding is never drawn. Without ``counts`` every slot is an
example (and the random stream is unchanged).
"""

from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from jaxmaml import base
from jaxmaml import checks


def check_episode_request(
  images_shape: tuple[int, ...],
  num_ways: int,
  num_shots: int,
  num_queries: int,
  num_tasks: int = 1,
  counts=None,
) -> None:
  """Raises a ValueError if the request cannot be met by the dataset.

  ``counts``, if given, are the examples per class of a padded ``images``
  (``[num_classes]``, each in ``1..examples_per_class``); the smallest class
  must then hold ``num_shots + num_queries``. Traced ``counts`` (under
  ``jit``) are checked for shape only.
  """
  if len(images_shape) not in (4, 5):
    raise ValueError(
      'images must have shape [num_classes, examples_per_class, height, width] '
      f'or [..., channels], got {tuple(images_shape)}.'
    )
  for name, value in (
    ('num_ways', num_ways),
    ('num_shots', num_shots),
    ('num_queries', num_queries),
    ('num_tasks', num_tasks),
  ):
    checks.positive_int(value, name)
  num_classes, per_class = images_shape[:2]
  if num_ways > num_classes:
    raise ValueError(
      f'num_ways={num_ways} needs {num_ways} classes, but the split has only {num_classes}.'
    )
  if counts is not None:
    if tuple(np.shape(counts)) != (num_classes,):
      raise ValueError(
        f'counts must have shape [num_classes] = ({num_classes},), got {tuple(np.shape(counts))}.'
      )
    try:
      counts = np.asarray(counts)
    except jax.errors.TracerArrayConversionError:  # Traced (under jit): shape only.
      return
    if counts.min() < 1 or counts.max() > per_class:
      raise ValueError(
        f'counts must be in 1..{per_class} (examples_per_class), got '
        f'{counts.min()}..{counts.max()}.'
      )
    if num_shots + num_queries > counts.min():
      raise ValueError(
        f'num_shots + num_queries = {num_shots + num_queries} examples per class, '
        f'but the smallest class of the dataset has only {counts.min()}.'
      )
    return
  if num_shots + num_queries > per_class:
    raise ValueError(
      f'num_shots + num_queries = {num_shots + num_queries} examples per class, '
      f'but the dataset has only {per_class} per class.'
    )


def check_images(images) -> None:
  """Raises unless ``images`` is uint8 (0..255) or floating point (in [0, 1]) (dtype only)."""
  dtype = np.dtype(images.dtype)
  if dtype != np.uint8 and not np.issubdtype(dtype, np.floating):
    raise TypeError(
      f'images must be uint8 (0..255, scaled to [0, 1]) or floating point (already in '
      f'[0, 1]), got dtype {dtype}.'
    )


def _shuffled(support: base.Batch, order) -> base.Batch:
  """Each task's support examples reordered by its row of ``order [tasks, N*K]``."""
  return tuple(x[np.arange(len(order))[:, None], order] for x in support)


def _to_task(x, labels, num_ways, num_shots, num_queries, xp):
  """``x [tasks, ways, shots + queries, h, w(, c)]`` -> Task of float32 NHWC batches in [0, 1].

  uint8 is divided by 255; floating point is taken to be in [0, 1] already.
  """
  if x.ndim == 5:
    x = x[..., None]
  lead, (h, w, c) = x.shape[:1], x.shape[3:]
  x = x.astype(xp.float32) / 255.0 if x.dtype == np.uint8 else x.astype(xp.float32)
  support = x[:, :, :num_shots].reshape(*lead, num_ways * num_shots, h, w, c)
  query = x[:, :, num_shots:].reshape(*lead, num_ways * num_queries, h, w, c)
  s_labels = xp.broadcast_to(xp.repeat(labels, num_shots), (*lead, num_ways * num_shots))
  q_labels = xp.broadcast_to(xp.repeat(labels, num_queries), (*lead, num_ways * num_queries))
  return base.Task(
    support=(support, s_labels.astype(xp.int32)), query=(query, q_labels.astype(xp.int32))
  )


def sample_episodes(
  key: jax.Array,
  images: jax.Array,
  num_tasks: int,
  *,
  num_ways: int,
  num_shots: int,
  num_queries: int,
  rotate: bool = True,
  shuffle_support: bool = False,
  counts: jax.typing.ArrayLike | None = None,
) -> base.Task:
  """Draws a meta-batch of N-way K-shot tasks on the device (jittable).

  Args:
    key: a ``jax.random`` key; the same key gives the same tasks.
    images: ``[num_classes, examples_per_class, h, w(, channels)]``, uint8
      (scaled to [0, 1]) or floating point in [0, 1] (cast only), on the
      device.
    num_tasks: tasks in the meta-batch.
    num_ways: N, classes per task.
    num_shots: K, support examples per class.
    num_queries: query examples per class.
    rotate: rotate each drawn class by a random multiple of 90 degrees.
    shuffle_support: put each task's support set in random order (otherwise
      class by class); the classes and examples drawn do not change.
    counts: for classes of unequal size, ``[num_classes]`` int: class ``c``'s
      examples are ``images[c, :counts[c]]`` (the rest is padding, never
      drawn). None: every slot is an example.

  Returns:
    A ``Task``: support ``(x [num_tasks, N*K, h, w, channels] float32 in [0, 1]
    (channels = 1 for grayscale),
    y [num_tasks, N*K] int32)``, query likewise with ``N*num_queries``. The
    labels are ``0 .. N - 1`` by construction (not checked again).

  Raises:
    TypeError, ValueError: for a request the dataset cannot meet, images of
      another dtype than uint8 or floating point, or NumPy images outside
      ``jit`` (put them on the device once, or use ``host_episodes``),
      before any compute.
  """
  check_images(images)
  check_episode_request(images.shape, num_ways, num_shots, num_queries, num_tasks, counts)
  num_classes, per_class, h, w = images.shape[:4]
  if rotate and h != w:
    raise ValueError(f'rotate=True needs square images, got {h}x{w}.')
  if isinstance(images, np.ndarray):
    raise TypeError(
      'images must be on the device (jax.device_put(images) once, or an argument of a jitted '
      'function); got a NumPy array: for datasets kept on the host, use host_episodes.'
    )
  n = num_shots + num_queries

  def within(key, count):
    """``n`` distinct slots drawn uniformly among the first ``count``."""
    scores = jax.random.uniform(key, (per_class,))
    return jnp.argsort(jnp.where(jnp.arange(per_class) < count, scores, 2.0))[:n]

  def one_task(key):
    class_key, example_key, rotation_key = jax.random.split(key, 3)
    classes = jax.random.choice(class_key, num_classes, (num_ways,), replace=False)
    example_keys = jax.random.split(example_key, num_ways)
    if counts is None:
      examples = jax.vmap(lambda k: jax.random.choice(k, per_class, (n,), replace=False))(
        example_keys
      )
    else:
      examples = jax.vmap(within)(example_keys, jnp.asarray(counts)[classes])
    x = images[classes[:, None], examples]  # [ways, n, h, w(, c)]
    if rotate:
      turns = jax.random.randint(rotation_key, (num_ways,), 0, 4)
      rotations = jnp.stack([jnp.rot90(x, k, axes=(2, 3)) for k in range(4)])
      x = rotations[turns, jnp.arange(num_ways)]
    return x

  x = jax.vmap(one_task)(jax.random.split(key, num_tasks))
  task = _to_task(x, jnp.arange(num_ways), num_ways, num_shots, num_queries, jnp)
  if not shuffle_support:
    return task
  order = jax.vmap(lambda k: jax.random.permutation(k, num_ways * num_shots))(
    jax.random.split(jax.random.fold_in(key, 1), num_tasks)
  )
  return task._replace(support=_shuffled(task.support, order))


def host_episodes(
  seed: int,
  images: np.ndarray,
  num_tasks: int,
  *,
  num_ways: int,
  num_shots: int,
  num_queries: int,
  rotate: bool = True,
  shuffle_support: bool = False,
  counts: np.ndarray | None = None,
) -> Iterator[base.Task]:
  """An endless NumPy iterator of meta-batches with ``sample_episodes``' semantics.

  For datasets too large for device memory: tasks are gathered on the host
  from ``images`` (which may be a memory-mapped array) and only the meta-batch
  is sent to the device. The same ``seed`` gives the same sequence of tasks
  (not the same tasks as ``sample_episodes`` with a key: the generators differ).
  ``images``, ``counts``: as ``sample_episodes``'.

  The arguments are checked when this is called, not at the first ``next``.

  Returns:
    An iterator of ``Task`` meta-batches with the shapes (and the labels
    ``0 .. N - 1``) of ``sample_episodes``, as NumPy arrays.

  Raises:
    TypeError, ValueError: as ``sample_episodes``, when called.
  """
  check_images(images)
  check_episode_request(np.shape(images), num_ways, num_shots, num_queries, num_tasks, counts)
  h, w = np.shape(images)[2:4]
  if rotate and h != w:
    raise ValueError(f'rotate=True needs square images, got {h}x{w}.')
  num_classes, per_class = images.shape[:2]
  sizes = np.full(num_classes, per_class) if counts is None else np.asarray(counts)
  rng = np.random.default_rng(seed)
  args = (images, num_tasks, num_ways, num_shots, num_queries, rotate, shuffle_support, sizes)
  return _host_stream(rng, *args)


def _host_stream(
  rng, images, num_tasks, num_ways, num_shots, num_queries, rotate, shuffle_support, sizes
) -> Iterator[base.Task]:
  """The endless generator behind ``host_episodes``, on checked arguments."""
  num_classes = images.shape[0]
  n = num_shots + num_queries
  while True:
    batch = []
    for _ in range(num_tasks):
      classes = rng.choice(num_classes, num_ways, replace=False)
      x = np.stack([images[c][rng.choice(sizes[c], n, replace=False)] for c in classes])
      if rotate:
        turns = rng.integers(0, 4, num_ways)
        x = np.stack([np.rot90(xc, k, axes=(1, 2)) for xc, k in zip(x, turns)])
      batch.append(x)
    task = _to_task(np.stack(batch), np.arange(num_ways), num_ways, num_shots, num_queries, np)
    if shuffle_support:
      order = np.stack([rng.permutation(num_ways * num_shots) for _ in range(num_tasks)])
      task = task._replace(support=_shuffled(task.support, order))
    yield task
