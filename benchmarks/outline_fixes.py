"""A user who fixes outlines: one round of fine-tuning on the bundled fluorescence sample
after painting back, in its top-left region, every pixel the shipped ``nuclei`` model got
wrong, with new labels (the brush's "new" label, not each nucleus's own) and the eraser.

Such a user leaves many small pieces next to the objects they belong to. Before pieces were
told from whole objects, a round took them for the objects' size (4 px), resized every
image x4, and the tuned model drew almost nothing right elsewhere on the image. Scored
outside the corrected region against the sample's ground truth. Run from the repository root:

    .venv/bin/python benchmarks/outline_fixes.py [--steps 100]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from napari_unet import load_model, segment
from napari_unet.corrections import Correction
from napari_unet.finetune import fine_tune
from napari_unet.sample_data import load_sample
from napari_unet.scores import score_image

REGION = (slice(0, 260), slice(0, 350))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    model = load_model("nuclei")
    image = np.asarray(load_sample("nuclei_fluo").data)
    truth = np.asarray(load_sample("nuclei_fluo_labels").data)
    before = np.asarray(segment(image, model, "YX")).astype(np.int64)
    wrong = np.zeros(before.shape, bool)
    wrong[REGION] = (before[REGION] > 0) != (truth[REGION] > 0)
    fixed = before.copy()
    fixed[wrong] = np.where(truth[wrong] > 0, truth[wrong] + int(before.max()), 0)
    start = time.perf_counter()
    tuned = fine_tune(model, Correction(image=image, labels=fixed, mask=wrong, axes="YX"),
                      steps=args.steps, time_budget=3600.0)
    seconds = time.perf_counter() - start
    after = np.asarray(segment(image, tuned, "YX"))
    elsewhere = np.ones(before.shape, bool)
    elsewhere[REGION] = False

    def accuracy(labels: np.ndarray) -> float:
        scores = score_image("sample", np.where(elsewhere, truth, 0), np.where(elsewhere, labels, 0))
        return scores.counts[0].accuracy

    round_ = tuned.config.provenance["fine_tune_rounds"][-1]
    print(f"corrected pixels {int(wrong.sum())}; round: {round_['steps']} steps in {seconds:.0f} s, "
          f"objects measured {round_['objects_found']}, diameter {round_['object_diameter_found']}, "
          f"input scale {round_['input_scale']}")
    print(f"accuracy@0.5 outside the corrected region: before {accuracy(before):.3f}, "
          f"after the round {accuracy(after):.3f}")


if __name__ == "__main__":
    main()
