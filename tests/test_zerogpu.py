"""Off a ZeroGPU Space the spaces.GPU wrapper must change nothing; its duration grows with the work."""

import spaces

from ui.common import gpu_seconds, on_gpu


def test_on_gpu_is_a_no_op_off_spaces():
    def work(prompt="", steps=25, width=512, height=512, num_images=1):
        return steps * width

    assert not spaces.config.Config.zero_gpu
    wrapped = on_gpu(work)
    assert wrapped is work
    assert wrapped(steps=3, width=4) == 12


def test_gpu_seconds_grows_with_work_and_is_capped():
    small = gpu_seconds(10, 512 * 512, 1)
    big = gpu_seconds(100, 1024 * 1024, 4)
    assert 15 <= small < big <= 600
    assert gpu_seconds(10**6, 10**8, 100) == 600
