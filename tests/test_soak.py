"""Reliability, item 6: a short soak of the full engine (``benchmarks/soak.py``
runs the 10,000-frame version).

Two back-to-back engine lives, each processing a few hundred frames with the
real pipeline, a face coming and going, mode switches through the control
socket and a pause/resume (camera released and reopened). Checked: no frame
failed, no engine thread survives ``close()``, threads after the second life
equal those after the first, every file descriptor opened is closed again,
RSS grows by at most a few MB between lives and while running, and the sink
is never fed faster than its frame rate. How evenly it is fed (median
interval, share of late frames) is a measurement of the machine:
``benchmarks/soak.py`` reports it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RSS and fds from /proc: Linux")

REPO = Path(__file__).resolve().parents[1]
FRAMES = 450
RSS_GROWTH_BOUND_MB = 25.0

# Run in a fresh interpreter: pytest's log capture keeps log records (and the
# exceptions and frames they reference) alive, and earlier tests may leave
# threads behind, either of which would blur a leak count.
RUNNER = """
import gc, json, logging, os, sys
from collections import Counter
from dataclasses import asdict
from benchmarks.soak import soak

def open_fds():
    gc.collect()
    targets = Counter()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        targets[target.split(":[")[0]] += 1
    return targets

logging.basicConfig(level=logging.WARNING)
kw = dict(n_frames=%(frames)d, size_wh=(320, 240), source_fps=60.0, sink_fps=30.0, warmup_frames=150,
          switch_every=60, pause_every=200, report_every=150, timeout_s=60.0)
before = open_fds()
lives = [soak(**kw), soak(**kw)]
after = open_fds()
print(json.dumps({"lives": [r.as_dict() for r in lives], "fds_before": before, "fds_after": after}))
"""


def _ns(value):
    if isinstance(value, dict):
        return SimpleNamespace(**{k: _ns(v) for k, v in value.items()})
    return [_ns(v) for v in value] if isinstance(value, list) else value


@pytest.fixture(scope="module")
def two_lives():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", RUNNER % {"frames": FRAMES}], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(done.stdout.strip().splitlines()[-1])
    lives = tuple(_ns(r) for r in data["lives"])
    for life, raw in zip(lives, data["lives"], strict=True):
        life.raw = raw
    return lives, Counter(data["fds_before"]), Counter(data["fds_after"])


def test_soak_processes_every_frame_without_failures(two_lives):
    for report in two_lives[0]:
        assert report.frames >= FRAMES, report.raw
        assert report.failed_frames == 0
        assert report.mode_switches >= 5 and report.pauses >= 1
        assert report.max_faces >= 1  # faces came (and, by construction, went)
        assert report.close_s < 2.0 and report.leftover_threads == []


def test_no_thread_or_fd_leak_between_engine_lives(two_lives):
    (first, second), fds_before, fds_after = two_lives
    assert second.end.threads == first.end.threads == first.start.threads
    # Every file, socket and pipe the two engines (models, control socket,
    # camera reopened on each resume) opened is closed again.
    assert fds_after - fds_before == Counter(), (fds_before, fds_after)


def test_rss_stays_flat(two_lives):
    first, second = two_lives[0]
    for report in two_lives[0]:
        assert report.rss_growth_mb < RSS_GROWTH_BOUND_MB, report.raw["samples"]
    assert second.running_end.rss_mb - first.running_end.rss_mb < RSS_GROWTH_BOUND_MB


def test_sink_is_never_fed_faster_than_its_frame_rate(two_lives):
    """The sender paces every frame by the sink (30 fps here; the camera gives 60)
    and sends idle frames more slowly still while paused: over a life, the mean
    interval between frames is a period at least, however loaded the machine
    (load only adds to it; a sender that skipped the pacing would send as fast
    as it could loop)."""
    for report in two_lives[0]:
        period_ms, intervals = 1000.0 / 30.0, report.raw["interval_ms"]
        assert report.sent > 100, report.raw
        assert intervals["mean"] >= 0.98 * period_ms, intervals
