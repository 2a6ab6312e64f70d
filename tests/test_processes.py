"""The test harness's process groups: whatever a test started is gone once its block ends,
failure included (the Ray nodes, `vllm serve` and `accelerate launch` fixtures use them)."""

import signal
import time

import pytest
from processes import leftovers, process_group, process_tree


def test_a_failing_block_leaves_nothing_it_started_running():
    # a child in the group, one in a session of its own, and all of them deaf to SIGTERM
    script = "trap '' TERM; sleep 600 & setsid sleep 600 & wait"
    with (pytest.raises(RuntimeError, match="the test failed"),
          process_group(["sh", "-c", script], grace=0.5) as proc):
        deadline = time.monotonic() + 30
        while len(started := process_tree(proc.pid)) < 3:
            assert time.monotonic() < deadline, "the children did not start"
            time.sleep(0.05)
        raise RuntimeError("the test failed")
    assert not leftovers(started, {proc.pid})
    assert proc.returncode == -signal.SIGKILL
