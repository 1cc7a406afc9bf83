"""Prototypical networks (Snell et al., 2017) as a ``MetaLearner`` record.

The non-gradient baseline on the same episodes as MAML: nothing is adapted by
gradient descent. A task is solved by embedding its support examples, taking
the mean embedding of each class (its *prototype*), and classifying each query
example by a softmax over minus its squared distances to the prototypes. The
meta-parameters are the embedding network's, trained through the query loss.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxmaml import base
from jaxmaml import checks
from jaxmaml import kit
from jaxmaml import losses

EmbedFn = Callable[[base.Params, jax.Array], jax.Array]
"""``embed_fn(params, inputs [n, ...]) -> embeddings [n, dim]``."""


def squared_euclidean_logits(embeddings: jax.Array, prototypes: jax.Array) -> jax.Array:
  """Minus the squared Euclidean distances, ``[n, dim], [ways, dim] -> [n, ways]``."""
  return -jnp.sum(jnp.square(embeddings[:, None, :] - prototypes[None, :, :]), axis=-1)


def class_means(embeddings: jax.Array, labels: jax.Array, num_ways: int) -> jax.Array:
  """The mean embedding of each class, ``[n, dim], [n] -> [num_ways, dim]``.

  A class without any example gets a prototype of zeros (episodes always have
  every class); labels outside ``[0, num_ways)`` are ignored.
  """
  one_hot = jax.nn.one_hot(labels, num_ways, dtype=embeddings.dtype)  # [n, ways]
  sums = one_hot.T @ embeddings
  counts = jnp.sum(one_hot, axis=0)
  return sums / jnp.maximum(counts, 1)[:, None]


def protonets(
  embed_fn: EmbedFn,
  *,
  num_ways: int,
) -> base.MetaLearner:
  """Prototypical networks: nearest class mean in a meta-learned embedding.

  Batches are ``(inputs [n, ...], labels [n])`` with integer labels in
  ``[0, num_ways)``, as for ``jaxmaml.cross_entropy_loss``, and as labels
  are: concrete ones outside the range are a ValueError, and a traced one
  (inside a jitted or task-mapped step) makes the loss, its gradient and the
  accuracy NaN, never a finite wrong value (``jaxmaml.losses``). The embedding
  network is applied to the support and to the query set separately (a
  BatchNorm with batch statistics, as in ``Conv4``, normalises each set by
  its own statistics).

  Args:
    embed_fn: ``(params, inputs [n, ...]) -> embeddings [n, dim]``, e.g.
      ``jaxmaml.apply_fn(jaxmaml.Conv4(None))``.
    num_ways: N, the number of classes of a task, a positive int (static:
      it fixes the number of prototypes).

  Returns:
    A ``MetaLearner`` whose functions act on one task:

    * ``init``: the identity (the meta-parameters are the embedding's);
    * ``adapt(params, support) -> (prototypes [num_ways, dim], zeros [0])``:
      the "adapted parameters" of ProtoNets are the class means of the
      support embeddings (see ``class_means``); there are no inner steps, so
      the support losses are an empty array;
    * ``task_loss(params, task) -> (query_loss, metrics)``: the softmax
      cross-entropy of the query logits (minus squared distances to the
      prototypes), with metrics ``loss``, ``accuracy`` and
      ``support_losses`` (``[0]``);
    * ``task_grad``: the gradient of ``task_loss``.

  Raises:
    TypeError, ValueError: for a non-positive or non-integer ``num_ways``,
      when building; for embeddings that are not ``[n, dim]``, labels that
      are not integers or concrete labels outside ``[0, num_ways)``, when
      called; for a support set without examples, when first called.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from jaxmaml.protonets import protonets
    >>> from jaxmaml import Task
    >>> embed = lambda w, x: x @ w  # A linear embedding, [n, 2] -> [n, 2].
    >>> learner = protonets(embed, num_ways=2)
    >>> x = jnp.array([[0.0, 0.0], [0.0, 1.0], [4.0, 0.0], [4.0, 1.0]])
    >>> labels = jnp.array([0, 0, 1, 1])
    >>> prototypes, _ = learner.adapt(jnp.eye(2), (x, labels))
    >>> print(prototypes.tolist())
    [[0.0, 0.5], [4.0, 0.5]]
    >>> loss, metrics = learner.task_loss(jnp.eye(2), Task((x, labels), (x, labels)))
    >>> print(f"{float(metrics['accuracy']):.1f}", metrics['support_losses'].shape)
    1.0 (0,)
  """
  num_ways = checks.positive_int(num_ways, 'num_ways')

  def embed(params, inputs, name):
    embeddings = embed_fn(params, inputs)
    if embeddings.ndim != 2:
      raise ValueError(
        f'embed_fn must return embeddings [n, dim]; got shape {embeddings.shape} '
        f'for the {name} inputs of shape {jax.tree_util.tree_map(jnp.shape, inputs)}.'
      )
    return embeddings

  def check_labels(labels, name):
    checks.class_labels(labels, num_ways, f'{name} labels')

  def adapt(params: base.Params, support: base.Batch):
    inputs, labels = support
    check_labels(labels, 'support')
    if np.shape(labels)[:1] == (0,):
      raise ValueError('support has no examples: ProtoNets needs at least one per class.')
    embeddings = embed(params, inputs, 'support')
    # An out-of-range support label (traced) makes every prototype NaN: class_means ignores it.
    poison = jnp.sum(losses.nan_unless_in_range(labels, num_ways, embeddings.dtype))
    prototypes = class_means(embeddings, labels, num_ways) + poison
    return prototypes, jnp.zeros([0], embeddings.dtype)

  def task_loss(params: base.Params, task: base.Task):
    prototypes, support_losses = adapt(params, task.support)
    inputs, labels = task.query
    check_labels(labels, 'query')
    logits = squared_euclidean_logits(embed(params, inputs, 'query'), prototypes)
    loss, accuracy = losses.softmax_cross_entropy(logits, labels)
    return loss, {'loss': loss, 'accuracy': accuracy, 'support_losses': support_losses}

  return base.MetaLearner(
    init=kit.identity,
    adapt=adapt,
    task_loss=task_loss,
    task_grad=kit.grad_of(task_loss),
  )
