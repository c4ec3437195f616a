"""Our attention layer under ``tf.distribute.MirroredStrategy``.

Two logical CPU devices stand in for two GPUs. They must be configured before TensorFlow
initialises its devices, which any earlier test in this pytest process has already done,
so the check runs in a fresh interpreter.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import json
    import numpy as np
    from attention_lessons.device import import_tensorflow

    tf = import_tensorflow()
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras
    from attention_lessons.layers import MultiHeadAttention

    B, T, D = 8, 6, 8
    rng = np.random.default_rng(0)
    x = rng.normal(size=(B, T, D)).astype("float32")
    y = rng.normal(size=(B, 3)).astype("float32")

    def make_model():
        inputs = keras.Input((T, D))
        h = MultiHeadAttention(num_heads=2, key_dim=4)(inputs, inputs)
        h = keras.layers.GlobalAveragePooling1D()(h)
        model = keras.Model(inputs, keras.layers.Dense(3)(h))
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        return model

    start = [np.random.default_rng(1).normal(scale=0.3, size=w.shape).astype("float32")
             for w in make_model().get_weights()]

    def one_step(strategy):
        with strategy.scope():
            model = make_model()
            model.set_weights(start)
        model.fit(x, y, batch_size=B, epochs=1, shuffle=False, verbose=0)   # one batch
        return model.get_weights()

    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    mirrored = tf.distribute.MirroredStrategy(devices)
    after_mirrored = one_step(mirrored)
    after_single = one_step(tf.distribute.OneDeviceStrategy(devices[0]))
    print(json.dumps({
        "replicas": mirrored.num_replicas_in_sync,
        "max_difference": max(float(np.abs(a - b).max()) for a, b in zip(after_mirrored, after_single)),
        "max_update": max(float(np.abs(a - b).max()) for a, b in zip(after_single, start)),
    }))
""")


def test_one_sgd_step_on_two_mirrored_cpus_equals_one_on_a_single_device():
    import json

    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600)  # hangs only
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(result)
    assert result["replicas"] == 2
    assert result["max_update"] > 1e-3          # the step really changed the weights
    assert result["max_difference"] < 1e-5
