"""Off a ZeroGPU Space the spaces.GPU wrapper must change nothing; its duration grows with the work."""

import spaces

from tasks.spec import gpu_seconds
from ui.endpoint import on_gpu


def test_on_gpu_is_a_no_op_off_spaces():
    def work(params, progress=None):
        return params * 2

    assert not spaces.config.Config.zero_gpu
    wrapped = on_gpu(work, lambda params, progress=None: 60)
    assert wrapped is work
    assert wrapped(21) == 42


def test_gpu_seconds_grows_with_work_and_is_capped():
    small = gpu_seconds(10 * 0.26)  # 10 steps of one 512² image
    big = gpu_seconds(100 * 1.05 * 4 * 2)  # 100 CFG steps of four 1024² images
    assert 10 <= small < big <= 600
    assert gpu_seconds(10**9) == 600
