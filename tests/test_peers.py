"""The PyTorch peers of benchmarks/peers.py compute jaxmaml's meta-gradient.

On a tiny Conv4 (8 filters, 3-way, 2 tasks) every available peer's meta-loss
and meta-gradient match jaxmaml's in float64 to ``F64_TOL`` relative L2 (the
observed differences are ~1e-15), second and first order, with the BatchNorm
offset only and with scale and offset, and in float32 to ``F32_TOL``. The one
failure found, second order through ``F.batch_norm`` with ``weight=None``, is
asserted as it is, so that this test fails when PyTorch changes it.

Float32 is compared on shapes where no pre-ReLU value is within rounding of
zero: where one is (the benchmark's default meta-batch has one), float32
implementations may take different sides of the ReLU kink and differ by
~1e-2 while agreeing in float64; see the ``benchmarks/peers.py`` docstring.
"""

import dataclasses
import functools
import json
import math

import jax
import numpy as np
import pytest

torch = pytest.importorskip('torch')

from benchmarks import peers  # pylint: disable=wrong-import-position

F64_TOL = 1e-10
F32_TOL = 1e-4
# conv='xla' computes what the benchmark's 'matmul' does and compiles in half the time.
TINY = dict(ways=3, shots=1, queries=2, meta_batch_size=2, features=8, inner_steps=1,
            conv='xla')


@pytest.fixture(autouse=True)
def one_torch_thread():
  """Tiny ops: one thread (with a busy second core, two were ~200x slower)."""
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)


def tiny_config(**overrides) -> peers.Config:
  return peers.Config(**{**TINY, **overrides})


@functools.lru_cache(maxsize=None)
def inputs(config: peers.Config):
  key_tasks, key_params = jax.random.split(jax.random.key(config.seed))
  tasks = peers.make_tasks(key_tasks, config)
  return peers.init_params(key_params, config, tasks), tasks


def reference(config: peers.Config, dtype):
  """jaxmaml's (loss, grads), compiled once per jaxmaml-relevant setting."""
  return _reference(dataclasses.replace(config, torch_bn='native', peers=peers.PEERS), dtype)


@functools.lru_cache(maxsize=None)
def _reference(config: peers.Config, dtype):
  return peers.jax_meta_gradient(config, *inputs(config), dtype)


def skip_if_unavailable(name):
  reason = peers.peer_unavailable(name)
  if reason:
    pytest.skip(reason)


@pytest.mark.parametrize('bn_scale', [False, True])
@pytest.mark.parametrize('first_order', [False, True])
@pytest.mark.parametrize('name', peers.PEERS)
def test_peer_matches_jaxmaml_float64(name, first_order, bn_scale):
  """Second and first order, BatchNorm offset or scale+offset: equal to ~1e-15.

  This includes ``torch_func_vmap`` with affine BatchNorm (``bn_scale=True``),
  once reported wrong by ~1e-2: with torch 2.13 it matches.
  """
  skip_if_unavailable(name)
  config = tiny_config(first_order=first_order, bn_scale=bn_scale)
  ref_loss, ref_grads = reference(config, np.float64)
  loss, grads = peers.peer_meta_gradient(name, config, *inputs(config), np.float64)
  total, per_leaf = peers.relative_l2(grads, ref_grads)
  assert abs(loss - ref_loss) < 1e-12
  assert total < F64_TOL, per_leaf
  assert max(per_leaf.values()) < F64_TOL, per_leaf


@pytest.mark.parametrize('torch_bn', ['native', 'manual'])
@pytest.mark.parametrize('name', ['torch_func_vmap', 'torch_autograd_loop'])
def test_peer_matches_jaxmaml_float32(name, torch_bn):
  config = tiny_config(bn_scale=True, torch_bn=torch_bn, inner_steps=2)
  _, ref_grads = reference(config, np.float32)
  _, grads = peers.peer_meta_gradient(name, config, *inputs(config), np.float32)
  assert peers.relative_l2(grads, ref_grads)[0] < F32_TOL


@pytest.mark.parametrize('name', ['torch_func_vmap', 'torch_autograd_loop'])
def test_native_batch_norm_without_weight_fails_second_order(name):
  """Found: torch 2.13 cannot take the second-order MAML gradient through
  ``F.batch_norm(weight=None, bias=offset, training=True)`` (it raises), in
  every peer; first order works. ``torch_bn='native'`` therefore passes a
  constant unit weight. If this test fails, PyTorch changed: update
  ``peers.NATIVE_BN_WITHOUT_WEIGHT_ERROR`` and the module docstring."""
  config = tiny_config(torch_bn='native_no_weight')
  with pytest.raises(RuntimeError, match=peers.NATIVE_BN_WITHOUT_WEIGHT_ERROR):
    peers.peer_meta_gradient(name, config, *inputs(config), np.float64)
  config = tiny_config(torch_bn='native_no_weight', first_order=True)
  _, grads = peers.peer_meta_gradient(name, config, *inputs(config), np.float64)
  assert peers.relative_l2(grads, reference(config, np.float64)[1])[0] < F64_TOL


@pytest.mark.parametrize('bn_scale', [False, True])
def test_torch_conv4_forward_matches_flax(bn_scale):
  """Same logits from the same weights: layouts and 'SAME' padding agree."""
  config = tiny_config(bn_scale=bn_scale)
  params, tasks = inputs(config)
  with jax.enable_x64(True):
    logits = peers.make_model(config).apply(
        {'params': peers.unflatten({k: v.astype(np.float64) for k, v in params.items()})},
        tasks.query[0][0].astype(np.float64))
  module = peers.make_module(config, params, torch.float64)
  x = peers.torch_tasks(tasks, torch.float64)[2][0]
  np.testing.assert_allclose(module(x).detach().numpy(), np.asarray(logits), rtol=1e-12,
                             atol=1e-12)


def test_layouts_round_trip():
  assert peers.same_padding(28) == (0, 1) and peers.same_padding(7) == (1, 1)
  kernel = np.random.default_rng(0).normal(size=(2, 3, 3, 4, 5))
  dense = kernel[1, 0, 0]  # [4, 5] = [in, out]
  assert peers.to_torch_layout('ConvBlock_0/kernel', kernel[0]).shape == (5, 4, 3, 3)
  assert peers.to_torch_layout('Dense_0/kernel', dense).shape == (5, 4)
  for name, value in (('ConvBlock_0/kernel', kernel[0]), ('Dense_0/kernel', dense)):
    np.testing.assert_array_equal(
        peers.to_flax_layout(name, peers.to_torch_layout(name, value)), value)
  assert peers.torch_name('Dense_0/kernel') == 'Dense_0.weight'


def test_main_quick(tmp_path):
  out = tmp_path / 'peers.json'
  report = peers.main(['--ways', '3', '--meta_batch_size', '2', '--features', '8',
                       '--conv', 'xla', '--threads', '1', '--warmup', '1', '--repeats', '2',
                       '--float64', '--bn_scale', '--out', str(out)])
  assert json.loads(out.read_text()) == json.loads(json.dumps(report))
  assert (tmp_path / 'peers.md').read_text().startswith('Omniglot Conv4')
  assert report['environment']['torch'] == torch.__version__
  jax_row = report['jaxmaml']
  for key in ('compile_s', 'step_s_median', 'step_s_min', 'step_s_max'):
    assert math.isfinite(jax_row[key]) and jax_row[key] > 0, key
  assert [r['peer'] for r in report['results']] == list(peers.PEERS)
  for r in report['results']:
    if not r['available']:
      assert r['reason']
      continue
    assert 'error' not in r, r
    for key in ('step_s_median', 'step_s_min', 'step_s_max', 'time_ratio'):
      assert math.isfinite(r[key]) and r[key] > 0, (r['peer'], key)
    assert r['step_s_min'] <= r['step_s_median'] <= r['step_s_max']
    assert r['float32']['grad_rel_l2'] < F32_TOL
    assert r['float64']['grad_rel_l2'] < F64_TOL
