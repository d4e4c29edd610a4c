#!/usr/bin/env python
"""Speed of the P-Net sample generator: source images per second on 640x480 composite scenes.

Makes ``--scenes`` composite scenes (or uses an existing scenes folder, ``--scenes-dir``),
then times :func:`mtcnn.data.generate.generate_pnet` over them alone (no landmark samples)
with ``--workers`` processes, writing into a temporary folder. Target: >= 20 images/s with
2 workers on a 2-core machine.

    python benchmarks/bench_gen12.py --scenes 200 --workers 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mtcnn.config.data import PNetDataConfig, SceneConfig, SourceConfig, SplitSources  # noqa: E402
from mtcnn.data.generate import generate_pnet  # noqa: E402
from mtcnn.data.scenes import ANNOTATION_NAME, generate_scenes  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenes", type=int, default=200, help="scenes to make when --scenes-dir is not given")
    p.add_argument("--scenes-dir", help="an existing gen_scenes output folder to use instead")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--target", type=float, default=20.0, help="images/s to meet")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        scenes_dir = Path(a.scenes_dir) if a.scenes_dir else Path(tmp) / "scenes"
        if not a.scenes_dir:
            made = generate_scenes(SceneConfig(num_scenes=a.scenes, out=str(scenes_dir), workers=a.workers),
                                   progress=False)
            print(f"made {made.scenes} scenes ({made.faces} faces) in {made.seconds:.1f} s")
        cfg = PNetDataConfig(workers=a.workers, out=str(Path(tmp) / "samples"))
        cfg.sources = SplitSources(train=[SourceConfig(name="scenes", path=str(scenes_dir / ANNOTATION_NAME))])
        cfg.landmarks.enabled = False
        s = generate_pnet(cfg, "train", progress=False)
    rate = s.images_per_second
    print("\n".join(s.lines()))
    print(f"P-Net generator: {s.processed} images in {s.seconds:.2f} s = {rate:.1f} images/s "
          f"with {a.workers} workers (target >= {a.target:g}): {'OK' if rate >= a.target else 'BELOW TARGET'}")
    return 0 if rate >= a.target else 1


if __name__ == "__main__":
    sys.exit(main())
