"""The plain Python API: no CLI, no YAML. Build the three parts and call ``lit_infer.predict``.

    python examples/python_api.py

The writer streams predictions to ``outputs/python_api/``; ``return_predictions=False`` keeps nothing in memory.
It returns what ``summary.json`` holds (a plain ``trainer.predict(module, datamodule=data)`` with the writer
callback works too; then ``writer.summary`` holds it).
"""

from __future__ import annotations

import lightning as L

import lit_infer
from lit_infer import ImageClassifier, ImageDataModule, ImagesPerSecondBar, Inputs, PredictionWriter, Preprocessing
from lit_infer.nets import TinyCNN


def main() -> None:
    # The model declares its preprocessing; the data module takes the same object, so it is stated once.
    module = ImageClassifier(
        net=TinyCNN(num_classes=4, width=16, depth=3),
        weights="examples/quickstart/tinycnn_shapes.pt",
        class_names="examples/quickstart/classes.txt",
        top_k=2,
        preprocessing=Preprocessing(crop_size=64, resize_size=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
    )
    # The data module's options come in groups (Inputs, Reading, Decoding, Loader), as data.inputs... in a config.
    data = ImageDataModule(
        "examples/quickstart/data/heldout",
        batch_size=32,
        preprocessing=module.preprocessing,
        inputs=Inputs(labels_from_folders=True),  # the class sub-folders are the labels: accuracy below
    )
    writer = PredictionWriter("outputs/python_api", format="jsonl", overwrite=True)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, callbacks=[writer, ImagesPerSecondBar()])
    summary = lit_infer.predict(module, data, trainer=trainer, writer=writer)
    print(f"top-1 accuracy: {summary['metrics'].get('top1_accuracy')}")


if __name__ == "__main__":
    main()
