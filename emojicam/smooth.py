"""Temporal smoothing with hysteresis, so the shown emoji does not flicker.

Per track: probabilities are averaged exponentially with a half-life in
seconds (frame-rate independent). The shown emotion changes only when
(1) the current one has been shown for ``min_hold_s`` and (2) the
challenger's smoothed probability beats the current one by ``switch_margin``.
A step back in time (a looping video restarting at 0) counts as no time, as
in the tracker.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from emojicam.config import SmoothingConfig
from emojicam.types import Emotion, EmotionScores


@dataclass
class _TrackState:
    probs: np.ndarray
    shown: Emotion
    shown_since_s: float
    last_s: float


@dataclass
class HysteresisSmoother:
    cfg: SmoothingConfig = field(default_factory=SmoothingConfig)
    _state: dict[int, _TrackState] = field(default_factory=dict)

    def update(
        self, track_id: int, scores: EmotionScores | None, timestamp_s: float
    ) -> tuple[EmotionScores, Emotion]:
        st = self._state.get(track_id)
        if st is None:
            if scores is None:
                # Not read yet (its first classification failed): neutral, and no
                # state, so the first reading starts the track. Uniform scores as
                # a first reading would show their argmax (angry) for min_hold_s.
                return EmotionScores.uniform(), Emotion.NEUTRAL
            st = _TrackState(scores.probs.copy(), scores.top, timestamp_s, timestamp_s)
            self._state[track_id] = st
            return EmotionScores(st.probs), st.shown
        if timestamp_s < st.last_s:  # the clock went back (a looping video): that step counts as no time
            back = st.last_s - timestamp_s
            st.last_s, st.shown_since_s = timestamp_s, st.shown_since_s - back
        if scores is not None:
            dt = max(0.0, timestamp_s - st.last_s)
            hl = self.cfg.half_life_s
            keep = 0.0 if hl <= 0 else 0.5 ** (dt / hl)
            st.probs = keep * st.probs + (1.0 - keep) * scores.probs
            st.last_s = timestamp_s
        challenger = Emotion.ordered()[int(np.argmax(st.probs))]
        if challenger != st.shown:
            held = timestamp_s - st.shown_since_s >= self.cfg.min_hold_s
            lead = st.probs[challenger.index] - st.probs[st.shown.index]
            if held and lead >= self.cfg.switch_margin:
                st.shown, st.shown_since_s = challenger, timestamp_s
        return EmotionScores(st.probs), st.shown

    def adopt(self, other: object) -> None:
        """Take over ``other``'s smoothed scores and shown emotions
        (``pipeline.carry_faces``); anything but a ``HysteresisSmoother`` is ignored."""
        if isinstance(other, HysteresisSmoother):
            self._state = {tid: replace(st, probs=st.probs.copy()) for tid, st in other._state.items()}

    def forget(self, keep_ids: set[int]) -> None:
        for tid in [t for t in self._state if t not in keep_ids]:
            del self._state[tid]
