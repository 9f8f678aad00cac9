from __future__ import annotations

import numpy as np
import pytest

from emojicam.config import SmoothingConfig
from emojicam.smooth import HysteresisSmoother
from emojicam.types import Emotion
from tests.factories import make_scores


def run(smoother, sequence, fps=30.0, track_id=1):
    shown = []
    for i, emotion in enumerate(sequence):
        scores = None if emotion is None else make_scores(emotion, 0.7)
        shown.append(smoother.update(track_id, scores, i / fps)[1])
    return shown


def test_no_flicker_on_alternating_noise():
    seq = [Emotion.HAPPY] * 30 + [Emotion.SAD, Emotion.HAPPY] * 30
    shown = run(HysteresisSmoother(SmoothingConfig()), seq)
    assert set(shown) == {Emotion.HAPPY}


def test_switches_after_sustained_change_and_min_hold():
    cfg = SmoothingConfig(half_life_s=0.2, switch_margin=0.1, min_hold_s=0.6)
    shown = run(HysteresisSmoother(cfg), [Emotion.HAPPY] * 30 + [Emotion.SURPRISE] * 60)
    first_switch = shown.index(Emotion.SURPRISE)
    assert 30 < first_switch < 60
    assert shown[-1] is Emotion.SURPRISE
    # once switched, never back
    assert set(shown[first_switch:]) == {Emotion.SURPRISE}


def test_min_hold_delays_switch():
    fast = HysteresisSmoother(SmoothingConfig(half_life_s=0.0, switch_margin=0.0, min_hold_s=0.0))
    slow = HysteresisSmoother(SmoothingConfig(half_life_s=0.0, switch_margin=0.0, min_hold_s=1.0))
    seq = [Emotion.HAPPY, Emotion.SAD] + [Emotion.SAD] * 40
    assert run(fast, seq)[1] is Emotion.SAD
    slow_shown = run(slow, seq)
    assert slow_shown[1] is Emotion.HAPPY and slow_shown.index(Emotion.SAD) == 30


def test_smoothing_is_frame_rate_independent():
    cfg = SmoothingConfig(half_life_s=0.25, switch_margin=0.0, min_hold_s=0.0)
    a, b = HysteresisSmoother(cfg), HysteresisSmoother(cfg)
    a.update(1, make_scores(Emotion.HAPPY, 0.9), 0.0)
    b.update(1, make_scores(Emotion.HAPPY, 0.9), 0.0)
    for i in range(1, 16):
        pa = a.update(1, make_scores(Emotion.SAD, 0.9), i / 15)[0]
    for i in range(1, 61):
        pb = b.update(1, make_scores(Emotion.SAD, 0.9), i / 60)[0]
    np.testing.assert_allclose(pa.probs, pb.probs, atol=0.02)


def test_unclassified_frames_keep_scores_and_forget_drops_tracks():
    s = HysteresisSmoother()
    first = s.update(7, make_scores(Emotion.FEAR, 0.9), 0.0)
    again = s.update(7, None, 0.5)
    np.testing.assert_allclose(first[0].probs, again[0].probs)
    s.forget(set())
    fresh, shown = s.update(7, None, 1.0)
    assert fresh.probs == pytest.approx(np.full(7, 1 / 7))


def test_a_clock_that_goes_back_does_not_freeze_the_shown_emoji():
    """A looping video restarting at t=0 (or a camera clock reset) after 100 s:
    the shown emotion stayed frozen until the clock came back to 100 s."""
    cfg = SmoothingConfig(half_life_s=0.0, switch_margin=0.0, min_hold_s=1.0)
    smoother = HysteresisSmoother(cfg)
    for i in range(30):  # happy, shown since t=99
        smoother.update(1, make_scores(Emotion.HAPPY, 0.7), 99.0 + i / 30)
    shown = [smoother.update(1, make_scores(Emotion.SAD, 0.7), i / 30)[1] for i in range(60)]
    # the 1 s on happy has passed (0.97 s before the jump, the rest after it): sad shows within 1 s
    assert shown[0] is Emotion.HAPPY and shown.index(Emotion.SAD) <= 30
    assert set(shown[shown.index(Emotion.SAD):]) == {Emotion.SAD}
