from __future__ import annotations

from emojicam.config import TrackerConfig
from emojicam.track import IoUTracker
from tests.factories import make_box


def test_identity_kept_while_face_moves():
    tracker = IoUTracker(TrackerConfig(iou_threshold=0.3, hold_s=0.5))
    ids = set()
    for i in range(10):
        (track,) = tracker.update([make_box(x=200 + 5 * i)], i / 30)
        ids.add(track.track_id)
        assert track.missed_frames == 0
    assert ids == {1}


def test_two_faces_keep_their_own_ids_when_order_swaps():
    tracker = IoUTracker()
    left, right = make_box(x=10), make_box(x=400)
    first = {t.box.x: t.track_id for t in tracker.update([left, right], 0.0)}
    second = {t.box.x: t.track_id for t in tracker.update([right, left], 0.033)}
    assert first == second


def test_missed_face_is_held_then_dropped():
    tracker = IoUTracker(TrackerConfig(hold_s=0.5))
    tracker.update([make_box()], 0.0)
    (held,) = tracker.update([], 0.3)
    assert held.missed_frames == 1 and held.box == make_box()
    assert tracker.update([], 0.6) == []


def test_reappearing_face_after_hold_gets_new_id():
    tracker = IoUTracker(TrackerConfig(hold_s=0.1))
    (a,) = tracker.update([make_box()], 0.0)
    tracker.update([], 0.5)
    (b,) = tracker.update([make_box()], 0.6)
    assert b.track_id != a.track_id


def test_skipped_detection_carries_tracks_forward():
    tracker = IoUTracker()
    (a,) = tracker.update([make_box()], 0.0)
    assert tracker.update(None, 0.03) == [a]


def test_far_box_starts_new_track():
    tracker = IoUTracker()
    tracker.update([make_box(x=0)], 0.0)
    tracks = tracker.update([make_box(x=400)], 0.03)
    assert sorted(t.track_id for t in tracks) == [1, 2]
    assert [t.missed_frames for t in sorted(tracks, key=lambda t: t.track_id)] == [1, 0]


def test_an_iou_threshold_of_zero_never_pairs_boxes_that_do_not_touch():
    """With ``iou_threshold: 0`` a missed face's held track must not jump onto
    a newcomer elsewhere: the missed face would lose its emoji."""
    tracker = IoUTracker(TrackerConfig(iou_threshold=0.0))
    tracker.update([make_box(x=10, y=10)], 0.0)
    tracks = tracker.update([make_box(x=500, y=300)], 0.03)
    held = [t for t in tracks if t.track_id == 1]
    assert held and held[0].box == make_box(x=10, y=10) and held[0].missed_frames == 1
    assert len(tracks) == 2


def test_fast_move_keeps_identity_and_leaves_no_ghost():
    tracker = IoUTracker(TrackerConfig(iou_threshold=0.3, hold_s=0.5))
    (a,) = tracker.update([make_box(x=100, w=100, h=100)], 0.0)
    # moved 120 px in one frame: IoU 0, but one face size away
    tracks = tracker.update([make_box(x=220, w=100, h=100)], 0.033)
    assert [(t.track_id, t.missed_frames, t.box.x) for t in tracks] == [(a.track_id, 0, 220)]


def test_with_privacy_a_missed_face_keeps_its_box_when_a_newcomer_appears_beside_it():
    # Without privacy the second pass would move face 1's track onto the newcomer
    # 1.2 face sizes away, and face 1, missed for this one frame, would show.
    tracker = IoUTracker(TrackerConfig(iou_threshold=0.3, hold_s=0.5))
    tracker.set_privacy(True)
    tracker.update([make_box(x=100, w=100, h=100)], 0.0)
    tracks = tracker.update([make_box(x=220, w=100, h=100)], 0.033)
    assert sorted((t.track_id, t.missed_frames, t.box.x) for t in tracks) == [(1, 1, 100), (2, 0, 220)]
    tracker.set_privacy(False)  # back to following jumps
    tracks = tracker.update([make_box(x=340, w=100, h=100)], 0.066)
    assert (2, 0, 340) in [(t.track_id, t.missed_frames, t.box.x) for t in tracks]


def test_distance_match_needs_similar_size_and_nearness():
    tracker = IoUTracker(TrackerConfig(iou_threshold=0.3, hold_s=0.5))
    tracker.update([make_box(x=100, w=100, h=100)], 0.0)
    far = tracker.update([make_box(x=400, w=100, h=100)], 0.033)  # 3 face sizes away
    assert sorted((t.track_id, t.missed_frames) for t in far) == [(1, 1), (2, 0)]
    tracker = IoUTracker(TrackerConfig(iou_threshold=0.3, hold_s=0.5))
    tracker.update([make_box(x=100, w=100, h=100)], 0.0)
    tiny = tracker.update([make_box(x=230, w=30, h=30)], 0.033)  # other size: another face
    assert sorted((t.track_id, t.missed_frames) for t in tiny) == [(1, 1), (2, 0)]


def test_privacy_holds_a_missed_face_for_some_frames_however_slow_they_come() -> None:
    """hold_s is in seconds: at 1 frame a second a 0.5 s hold once covered no
    missed frame at all, and a face the detector lost for a frame showed."""
    from emojicam.track import PRIVACY_MIN_HOLD_FRAMES

    box = make_box(100, 100, 80, 80)
    for strict, held in ((False, 0), (True, PRIVACY_MIN_HOLD_FRAMES)):
        tracker = IoUTracker(TrackerConfig(hold_s=0.5))
        tracker.set_privacy(strict)
        tracker.update([box], 0.0)
        shown = [len(tracker.update([], t * 0.7)) for t in range(1, 8)]  # 1.4 fps, all missed
        assert shown == [1] * held + [0] * (7 - held), (strict, shown)


def test_after_a_pause_the_faces_of_before_are_not_held() -> None:
    """The frame minimum once kept boxes from minutes before a pause (mode off,
    nobody watching) on the first frames after it."""
    tracker = IoUTracker(TrackerConfig(hold_s=0.5))
    tracker.set_privacy(True)
    tracker.update([make_box(100, 100, 80, 80)], 0.0)
    assert tracker.update([], 600.0) == []


def test_when_the_clock_goes_back_a_missed_face_is_held_for_hold_s_not_for_the_jump() -> None:
    """A looping video restarting at t=0 (or a camera clock reset) once held a
    box last seen at t=10 until the clock came back to 10.5: ten seconds of a
    ghost box. The step back counts as no time; the hold runs on from there."""
    tracker = IoUTracker(TrackerConfig(hold_s=0.5))
    tracker.update([make_box()], 10.0)
    assert len(tracker.update([], 10.2)) == 1  # missed for 0.2 s
    assert len(tracker.update([], 0.0)) == 1  # the clock restarts: still 0.2 s
    assert len(tracker.update([], 0.25)) == 1  # 0.45 s
    assert tracker.update([], 0.35) == []  # 0.55 s: dropped, as without the jump


def test_when_the_clock_goes_back_privacy_still_holds_a_missed_face() -> None:
    """A step back must never uncover a tracked face early: with privacy the
    face is held for as many missed frames as when time runs forward, and no
    longer (a skipped frame across the jump counts as no time either)."""
    from emojicam.track import PRIVACY_MIN_HOLD_FRAMES

    box = make_box(100, 100, 80, 80)
    tracker = IoUTracker(TrackerConfig(hold_s=0.5))
    tracker.set_privacy(True)
    tracker.update([box], 50.0)
    (carried,) = tracker.update(None, 1.0)  # the detector skipped the frame of the jump
    assert carried.box == box
    shown = [len(tracker.update([], 1.0 + t * 0.7)) for t in range(1, 8)]  # 1.4 fps, all missed
    assert shown == [1] * PRIVACY_MIN_HOLD_FRAMES + [0] * (7 - PRIVACY_MIN_HOLD_FRAMES)
    (again,) = tracker.update([box], 0.0)  # back again: a face found is tracked as usual
    assert again.missed_frames == 0


def test_a_tracker_that_adopts_tracks_adopts_their_clock() -> None:
    """``pipeline.carry_faces`` on a reload: the new tracker must see a step
    back on its first frame as one, or the held box stays for the jump."""
    old = IoUTracker(TrackerConfig(hold_s=0.5))
    old.update([make_box()], 10.0)
    new = IoUTracker(TrackerConfig(hold_s=0.5))
    new.adopt(old)
    assert len(new.update([], 0.0)) == 1
    assert new.update([], 0.6) == []
