from __future__ import annotations

import pytest

from tests.factories import FER_NPZ, SELFIE_MP4


@pytest.fixture(scope="session")
def fer_npz():
    if not FER_NPZ.exists():
        pytest.skip(f"FER-2013 data not found at {FER_NPZ} (needs ../shared beside the repo)")
    return FER_NPZ


@pytest.fixture(scope="session")
def selfie_mp4():
    if not SELFIE_MP4.exists():
        pytest.skip(f"selfie clip not found at {SELFIE_MP4} (needs ../shared beside the repo)")
    return SELFIE_MP4


@pytest.fixture
def recorder():
    """A pyvirtualcam backend that records frames, registered for the test."""
    import pyvirtualcam

    from tests.factories import RECORDER_BACKEND, RecordingBackend

    pyvirtualcam.register_backend(RECORDER_BACKEND, RecordingBackend)
    RecordingBackend.instances.clear()
    RecordingBackend.fail_sends = False
    yield RecordingBackend
    RecordingBackend.fail_sends = False
