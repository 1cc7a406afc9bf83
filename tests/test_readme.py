"""The README's library example runs as written."""

import pathlib
import re

import numpy as np


def test_readme_library_example_runs():
  text = (pathlib.Path(__file__).parent.parent / 'README.md').read_text()
  blocks = re.findall(r'```python\n(.*?)```', text, flags=re.S)
  assert blocks, 'README has no python example'
  scope = {}
  exec(compile(blocks[0], 'README.md', 'exec'), scope)
  assert scope['support_losses'].shape == (5,)
  assert scope['metrics']['loss'].shape == (25,)
  assert scope['curve']['loss'].shape == (600, 11)
  assert np.isfinite(scope['mean']) and scope['ci95'] > 0


def test_readme_family_example_runs():
  text = (pathlib.Path(__file__).parent.parent / 'README.md').read_text()
  scope = {}
  exec(compile(re.findall(r'```python\n(.*?)```', text, flags=re.S)[1], 'README.md', 'exec'),
       scope)
  assert set(scope['metrics']) == {'maml', 'anil', 'meta_sgd', 'maml_plus_plus', 'reptile',
                                   'imaml'}
  for metrics in scope['metrics'].values():
    assert metrics['loss'].shape == (25,) and np.all(np.isfinite(metrics['loss']))


def test_readme_scaling_example_runs():
  text = (pathlib.Path(__file__).parent.parent / 'README.md').read_text()
  scope = {}
  exec(compile(re.findall(r'```python\n(.*?)```', text, flags=re.S)[2], 'README.md', 'exec'),
       scope)
  loss = scope['metrics']['loss']
  assert loss.shape == (24,) and np.all(np.isfinite(loss))
  assert len(loss.addressable_shards) == len(scope['mesh'].devices.flat)
