"""Research-code example: test-time augmentation by horizontal-flip averaging, as a subclass.

Only ``forward`` changes: the network sees each batch and its mirror image, and the class probabilities of the two
are averaged. Everything else (data, writer, strategies, resume) is lit_infer's.

Run it from the command line by class path (this folder must be importable, hence PYTHONPATH):

    PYTHONPATH=examples lit-infer predict --config configs/quickstart.yaml --config examples/tta.yaml

or from Python, as in ``python examples/tta_classifier.py``.
"""

from __future__ import annotations

import torch
from typing_extensions import override

from lit_infer import ImageClassifier


class FlipTTAClassifier(ImageClassifier):
    """An :class:`~lit_infer.ImageClassifier` that averages the predictions of each image and its mirror.

    Args:
        **kwargs: Everything :class:`~lit_infer.ImageClassifier` takes.
    """

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = self.net(x).softmax(1) + self.net(x.flip(3)).softmax(1)
        # Returned as the logits of the averaged distribution (its log): the classifier's softmax (``score: probs``,
        # the default) turns them back into exactly the averaged probabilities, so ``score`` is a probability.
        return (probs / 2).log()


if __name__ == "__main__":
    import lightning as L

    from lit_infer import ImageDataModule, PredictionWriter, Preprocessing
    from lit_infer.nets import TinyCNN

    pre = Preprocessing(crop_size=64, resize_size=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    module = FlipTTAClassifier(
        net=TinyCNN(num_classes=4, width=16, depth=3),
        weights="examples/quickstart/tinycnn_shapes.pt",
        class_names="examples/quickstart/classes.txt",
        preprocessing=pre,
    )
    data = ImageDataModule("examples/quickstart/data/heldout", batch_size=32, preprocessing=pre)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, logger=False, callbacks=[PredictionWriter("outputs/tta", overwrite=True)]
    )
    trainer.predict(module, datamodule=data, return_predictions=False)
