"""Custom Keras objects for the adapter tests: registered and importable, as executors need."""

import keras


@keras.saving.register_keras_serializable(package="distkeras_tests")
class Scale(keras.layers.Layer):
    """y = x * w + b with a trainable per-feature scale and offset."""

    def __init__(self, init: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.init = float(init)

    def build(self, input_shape):
        self.w = self.add_weight(
            name="w", shape=(input_shape[-1],), initializer=keras.initializers.Constant(self.init)
        )
        self.b = self.add_weight(name="b", shape=(input_shape[-1],), initializer="zeros")

    def call(self, x):
        return x * self.w + self.b

    def get_config(self):
        return {**super().get_config(), "init": self.init}


@keras.saving.register_keras_serializable(package="distkeras_tests")
def scaled_mse(y_true, y_pred):
    """A custom loss function (registered)."""
    return 0.5 * keras.ops.mean(keras.ops.square(y_true - y_pred), axis=-1)


class Unregistered(keras.layers.Layer):
    """Not registered: a spec must refuse it (a worker could not rebuild it)."""

    def call(self, x):
        return x
