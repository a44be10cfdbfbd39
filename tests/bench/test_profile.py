"""bench/profile.py's reading of py-spy's samples (the recording itself needs ptrace and
a full harness run: `python -m bench.profile echo-16`)."""

from __future__ import annotations

import os

from bench.profile import children, summary

COLLAPSED = """\
main (server.py:10);run (hub.py:5);send (transport.py:7) 6
main (server.py:10);run (hub.py:5) 1
main (server.py:10);publish (broker_redis.py:3);send (transport.py:7) 3
"""


def test_the_summary_counts_each_function_once_per_sample_inclusive_and_on_its_own(tmp_path):
    path = tmp_path / "x.collapsed"
    path.write_text(COLLAPSED)
    text = summary(path)
    assert text.startswith("10 samples")
    inclusive, own = text.split("own %:")
    assert "100.0  main (server.py)" in inclusive
    assert " 70.0  run (hub.py)" in inclusive
    assert " 90.0  send (transport.py)" in inclusive
    assert " 90.0  send (transport.py)" in own and " 10.0  run (hub.py)" in own


def test_children_finds_the_descendants_of_a_process():
    # This test process has no children here unless it starts one.
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        assert pid in children(os.getpid())
    finally:
        os.waitpid(pid, 0)
