"""The few-shot experiment with the meta-batch split over devices.

Moved from test_sharding (library tests do not import experiments). The tests
need 8 devices (``@pytest.mark.devices``); on CPU ``test_on_simulated_devices``
runs this file again in a subprocess with 8 simulated devices.
"""

import pytest

from tests.utils import NUM_DEVICES
from tests.utils import run_on_simulated_devices
from tests.utils import train_synthetic_miniimagenet


@pytest.mark.parametrize(
  'markers',
  [pytest.param('not slow', id='default'), pytest.param('slow', id='slow', marks=pytest.mark.slow)],
)
def test_on_simulated_devices(markers):
  run_on_simulated_devices(__file__, markers)


@pytest.mark.devices(NUM_DEVICES)
def test_fewshot_experiment_indivisible_meta_batch_is_an_error_before_loading(tmp_path):
  from experiments.fewshot import config as config_lib
  from experiments.fewshot import train

  config = config_lib.Config(meta_batch_size=12, num_devices=8)
  with pytest.raises(
    ValueError,
    match=r'meta_batch_size \(12 tasks\) must be divisible by '
    r'the number of devices \(8\)',
  ):
    train.train_and_evaluate(config, str(tmp_path), str(tmp_path / 'no_data_here'))


@pytest.mark.slow
@pytest.mark.devices(NUM_DEVICES)
def test_fewshot_experiment_on_four_devices(tmp_path):
  """The same training command on 4 devices: trains, validates, checkpoints,
  resumes and tests with the meta-batch split."""
  report = train_synthetic_miniimagenet(tmp_path, num_devices=4)  # Meta-batch 4.
  assert report['results']['num_devices'] == 4 and report['results']['iterations'] == 4
  again = train_synthetic_miniimagenet(tmp_path, num_devices=4)
  assert again['results']['test'] == pytest.approx(report['results']['test'])
