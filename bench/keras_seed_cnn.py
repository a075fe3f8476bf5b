"""The course's seed CNN in Keras/TensorFlow, for ``bench/framework_compare.py``.

Runs in its own virtual environment (``bench/.venv-tf``, see ``bench/requirements-tf.txt``),
never imports inspectnet. Reads uint8 arrays ``x_train (N, 3, S, S)``, ``y_train``,
``x_test``, ``y_test`` from an ``.npz``, trains the lecture's ``Sequential`` model with
``model.fit`` on a ``tf.data`` pipeline and prints one JSON line: per-epoch training
seconds (first batch start to last batch end; no validation), images/s and test accuracy.

    bench/.venv-tf/bin/python bench/keras_seed_cnn.py DATA.npz --epochs 3 --batch-size 32
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("npz")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import numpy as np
    import tensorflow as tf
    import keras
    from keras import layers

    d = np.load(args.npz)
    x_train = np.ascontiguousarray(d["x_train"].transpose(0, 2, 3, 1))  # NCHW uint8 -> NHWC
    y_train = d["y_train"].astype(np.int64)
    x_test = np.ascontiguousarray(d["x_test"].transpose(0, 2, 3, 1))
    y_test = d["y_test"].astype(np.int64)
    size = x_train.shape[1]
    n_classes = int(max(y_train.max(), y_test.max()) + 1)

    keras.utils.set_random_seed(args.seed)
    model = keras.Sequential([
        keras.Input(shape=(size, size, 3)),
        layers.Rescaling(1.0 / 255),
        layers.RandomFlip("horizontal_and_vertical"),
        layers.RandomRotation(0.1),
        layers.RandomZoom(0.1),
        layers.Conv2D(16, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Dropout(0.2),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dense(n_classes),
    ])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])

    def to_float(x, y):  # noqa: ANN001, ANN202
        return tf.cast(x, tf.float32), y

    ds = (tf.data.Dataset.from_tensor_slices((x_train, y_train))
          .shuffle(len(x_train), seed=args.seed, reshuffle_each_iteration=True)
          .batch(args.batch_size).map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
          .prefetch(tf.data.AUTOTUNE))

    class Timer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.epochs: list[float] = []
            self._t0 = 0.0
            self._last = 0.0

        def on_epoch_begin(self, epoch, logs=None):  # noqa: ANN001
            self._t0 = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):  # noqa: ANN001
            self._last = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):  # noqa: ANN001
            self.epochs.append(self._last - self._t0)

    timer = Timer()
    t = time.perf_counter()
    model.fit(ds, epochs=args.epochs, callbacks=[timer], verbose=0)
    fit_s = time.perf_counter() - t
    logits = model.predict(x_test.astype(np.float32), batch_size=64, verbose=0)
    acc = float((logits.argmax(1) == y_test).mean())
    warm = min(timer.epochs[1:]) if len(timer.epochs) > 1 else timer.epochs[0]
    print(json.dumps({
        "tensorflow": tf.__version__, "keras": keras.__version__,
        "jit_compile": bool(getattr(model, "jit_compile", False)),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "train_images": int(len(x_train)), "epoch_seconds": timer.epochs, "warm_epoch_seconds": warm,
        "images_per_s": len(x_train) / warm, "fit_seconds": fit_s, "test_accuracy": acc,
    }))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
