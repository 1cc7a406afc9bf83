"""``default_task_map``: the measured rule, its backends and its errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmaml
from tests.utils import rel_l2


def _tasks(num_tasks, support, query, image=(28, 28, 1)):
  batch = lambda n: (
    jax.ShapeDtypeStruct((num_tasks, n, *image), jnp.float32),
    jax.ShapeDtypeStruct((num_tasks, n), jnp.int32),
  )
  return jaxmaml.Task(batch(support), batch(query))


@pytest.mark.parametrize(
  'num_tasks, support, query, image, chunk',
  [
    (32, 5, 5, (28, 28, 1), 4),  # Omniglot 5-way 1-shot, 1 query: 4 tasks per chunk.
    (32, 5, 75, (28, 28, 1), 1),  # 15 queries: one task at a time.
    (16, 20, 20, (28, 28, 1), 1),  # 20-way 1-shot.
    (4, 5, 75, (84, 84, 3), 1),  # miniImageNet.
    (2, 1, 1, (4, 4, 1), 2),  # Never more than the meta-batch.
  ],
)
def test_cpu_chunks(num_tasks, support, query, image, chunk):
  mapping = jaxmaml.default_task_map(_tasks(num_tasks, support, query, image), backend='cpu')
  assert mapping == {'task_map': 'map', 'batch_size': chunk}


@pytest.mark.parametrize('backend', ['gpu', 'tpu'])
def test_accelerators_vmap(backend):
  assert jaxmaml.default_task_map(_tasks(32, 5, 5), backend=backend) == {
    'task_map': 'vmap',
    'batch_size': None,
  }


def test_bad_tasks_are_refused():
  with pytest.raises(TypeError, match='jaxmaml.Task'):
    jaxmaml.default_task_map((jnp.zeros((2, 5)), jnp.zeros((2, 5))))


@pytest.mark.slow  # 71-117 s on 2 shared CPU cores (load ~8): a float64 Conv4 meta-gradient, twice.
def test_default_mapping_gives_the_vmapped_meta_gradient():
  """The chunked mapping it picks (3 chunks of 2 tasks and one of 1 here) and a
  plain vmap give the same float64 meta-gradient (relative L2 below 1e-12)."""
  with jax.enable_x64(True):
    model = jaxmaml.Conv4(3, features=4)
    images = (jax.random.uniform(jax.random.key(0), (7, 6, 32, 32, 1)) > 0.5).astype(jnp.float64)
    labels = jnp.tile(jnp.arange(3), (7, 2))
    tasks = jaxmaml.Task((images, labels), (images[:, ::-1], labels))
    params = jax.tree_util.tree_map(
      lambda x: x.astype(jnp.float64), model.init(jax.random.key(1), images[0])['params']
    )
    learner = jaxmaml.maml(
      jaxmaml.cross_entropy_loss(jaxmaml.apply_fn(model)), inner_lr=0.4, num_steps=1, has_aux=True
    )
    mapping = jaxmaml.default_task_map(tasks, backend='cpu')
    assert mapping == {'task_map': 'map', 'batch_size': 2}  # 12,300 elements per task.
    grad = lambda **kw: jax.jit(lambda p, t: jaxmaml.meta_gradient(learner, p, t, **kw)[0])(
      params, tasks
    )
    assert rel_l2(grad(**mapping), grad(task_map='vmap')) < 1e-12
    assert np.all(np.isfinite(jax.tree_util.tree_leaves(grad(**mapping))[0]))
