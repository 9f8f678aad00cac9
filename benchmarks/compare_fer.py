"""EmojiCam against the ``fer`` package, on the same 1280x720 frames, in one run.

    python benchmarks/compare_fer.py --fer-python /root/venv-fer/bin/python [--frames 200] [--cpu 1]

Both sides run as worker processes (``peer_worker.py``) pinned to the same CPU
core; frames are handed to them alternately (which one goes first flips every
frame), so a background load hits both alike. Frames are the selfie clip,
scaled to cover 1280x720 and centre-cropped (as ``emojicam bench`` does). Then
both classifiers label FER-2013 PrivateTest. Prints a summary and writes it
as JSON with ``--json-out``.

The fer side needs its own environment, e.g.::

    python -m venv /root/venv-fer
    /root/venv-fer/bin/pip install --no-deps fer==25.10.3
    /root/venv-fer/bin/pip install tensorflow-cpu pandas requests tqdm \\
        "moviepy<2.0,>=1.0.3" ffmpeg-python Pillow matplotlib "setuptools<81" "opencv-contrib-python<5"

(``--no-deps`` skips ``facenet-pytorch``, which only fer's optional MTCNN detector uses.)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emojicam.bench import fit_frame, machine_info  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
CLIP = SHARED / "video" / "selfie_outdoor.mp4"
FER_NPZ = SHARED / "fer2013.npz"
WORKER = Path(__file__).with_name("peer_worker.py")


class Worker:
    def __init__(
        self, python: str, impl: str, frames: Path, cpu: int | None, mode: str | None = None,
        config: Path | None = None,
    ) -> None:
        cmd = [python, str(WORKER), "--impl", impl, "--frames", str(frames)]
        if cpu is not None:
            cmd += ["--cpu", str(cpu)]
        if mode is not None:
            cmd += ["--mode", mode]
        if config is not None:
            cmd += ["--config", str(config)]
        self.impl = impl
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.name = self._read()["ready"]

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            raise RuntimeError(f"the {self.impl} worker exited (code {code}); see its stderr above")
        return json.loads(line)

    def ask(self, msg: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
        self.proc.wait(timeout=30)


def write_frames(path: Path, n: int, size_wh: tuple[int, int]) -> int:
    cap = cv2.VideoCapture(str(CLIP))
    frames = []
    while len(frames) < n:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(fit_frame(image, size_wh))
    cap.release()
    np.save(path, np.stack(frames))
    return len(frames)


def summarise(rows: list[dict[str, Any]]) -> dict[str, float]:
    wall = np.array([r["wall_ms"] for r in rows])
    cpu = np.array([r["cpu_ms"] for r in rows])
    faces = np.array([r["faces"] for r in rows])
    return {
        "wall_ms_median": round(float(np.median(wall)), 2),
        "wall_ms_p90": round(float(np.percentile(wall, 90)), 2),
        "wall_ms_mean": round(float(wall.mean()), 2),
        "cpu_ms_mean": round(float(cpu.mean()), 2),
        "cpu_ms_median": round(float(np.median(cpu)), 2),
        "faces_per_frame": round(float(faces.mean()), 3),
        "frames_with_a_face": int((faces > 0).sum()),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fer-python", required=True, help="python of the environment that has fer installed")
    ap.add_argument("--frames", type=int, default=200, help="frames of the clip to use (from the start)")
    ap.add_argument("--cpu", type=int, default=1, help="CPU core both workers are pinned to (-1: no pinning)")
    ap.add_argument("--skip-accuracy", action="store_true", help="only the speed comparison")
    ap.add_argument("--mode", choices=("replace", "decorate", "label"), default="replace",
                    help="EmojiCam's mode (default replace, the privacy mask)")
    ap.add_argument("--config", type=Path,
                    help="EmojiCam settings over the defaults, e.g. a file with 'privacy: {enabled: false}'")
    ap.add_argument("--json-out", type=Path, help="also write the results here")
    args = ap.parse_args()
    for needed in (CLIP, FER_NPZ):
        if not needed.exists():
            print(f"missing {needed} (needs ../shared beside the checkout)", file=sys.stderr)
            return 2
    cpu = None if args.cpu < 0 else args.cpu
    with tempfile.TemporaryDirectory(prefix="emojicam-peer-") as tmp:
        frames_path = Path(tmp) / "frames.npy"
        n = write_frames(frames_path, args.frames, (1280, 720))
        ours = Worker(sys.executable, "emojicam", frames_path, cpu, mode=args.mode, config=args.config)
        theirs = Worker(args.fer_python, "fer", frames_path, cpu)
        try:
            rows: dict[str, list[dict[str, Any]]] = {"emojicam": [], "fer": []}
            for i in range(n):
                pair = (ours, theirs) if i % 2 == 0 else (theirs, ours)
                for w in pair:
                    rows[w.impl].append(w.ask({"cmd": "frame", "i": i}))
            accuracy = (
                {}
                if args.skip_accuracy
                else {w.impl: w.ask({"cmd": "fer2013", "path": str(FER_NPZ)}) for w in (ours, theirs)}
            )
        finally:
            ours.close()
            theirs.close()
    s_ours, s_fer = summarise(rows["emojicam"]), summarise(rows["fer"])
    result = {
        "frames": n,
        "size": "1280x720",
        "pinned_cpu": cpu,
        "machine": machine_info(1),
        "emojicam": {"name": ours.name, **s_ours},
        "fer": {"name": theirs.name, **s_fer},
        "speedup_wall_median": round(s_fer["wall_ms_median"] / s_ours["wall_ms_median"], 1),
        "speedup_wall_mean": round(s_fer["wall_ms_mean"] / s_ours["wall_ms_mean"], 1),
        "speedup_cpu_mean": round(s_fer["cpu_ms_mean"] / s_ours["cpu_ms_mean"], 1),
        "fer2013_private_test": accuracy,
    }
    print(f"{n} frames at 1280x720, both pinned to CPU {cpu}, alternating frame by frame")
    for key, s in (("emojicam", s_ours), ("fer", s_fer)):
        print(
            f"  {result[key]['name']:55s} median {s['wall_ms_median']:7.2f} ms  p90 {s['wall_ms_p90']:7.2f}"
            f"  cpu {s['cpu_ms_mean']:7.2f} ms  faces/frame {s['faces_per_frame']:.2f}"
            f"  frames with a face {s['frames_with_a_face']}/{n}"
        )
    print(
        f"  fer / emojicam per-frame time: median {result['speedup_wall_median']}x, "
        f"mean {result['speedup_wall_mean']}x, CPU {result['speedup_cpu_mean']}x"
    )
    for key, acc in accuracy.items():
        print(
            f"  FER-2013 PrivateTest, {key}: accuracy {acc['accuracy']:.4f} on {acc['n']} images "
            f"({acc['accuracy_exact_rows']:.4f} on the {acc['n_exact_rows']} exact rows)"
        )
        if "classifier_alone" in acc:
            print(
                f"    {key} classifier alone (no face-box padding): "
                f"accuracy {acc['classifier_alone']['accuracy']:.4f}"
            )
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
