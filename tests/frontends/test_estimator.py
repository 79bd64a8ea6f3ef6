"""KerasEstimator / KerasModel as Spark ML Pipeline stages, beside Spark's own feature stages."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow

pytest.importorskip("pyspark")

from distkeras.frontends.estimator import KerasEstimator, KerasModel  # noqa: E402

PIXELS = [f"p{i}" for i in range(64)]


def _mlp(keras):
    keras.utils.set_random_seed(1)
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10, activation="softmax")])


def test_params_and_converters(keras):
    est = KerasEstimator(
        model=_mlp(keras),
        optimizer=keras.optimizers.Adam(0.02),
        metrics="accuracy, mae",
        strategyParams={"window": 4},
        numWorkers=3,
    )
    assert est.getOptimizer()["class_name"] == "Adam" and est.getOptimizer()["config"]["learning_rate"] == pytest.approx(0.02)
    assert est.getMetrics() == ["accuracy", "mae"]
    assert est.getStrategyParams() == {"window": 4} and est.getNumWorkers() == 3
    assert est.getLoss() == "sparse_categorical_crossentropy" and est.getStrategy() == "adag"
    assert est.getFeedMemory() == "auto" and est.getValidationRows() == 10_000
    est.setParams(feedMemory="512MiB", validationRows=0)
    assert est.getFeedMemory() == 512 * 2**20 and est.getValidationRows() is None
    assert est._trainer(None).feed_memory == 512 * 2**20
    with pytest.raises(ValueError, match="feed_memory must be a size"):
        est.setParams(feedMemory="a lot").getFeedMemory()
    est.setParams(metrics=["accuracy"], strategy="downpour")
    assert est.getMetrics() == ["accuracy"] and est.getStrategy() == "downpour"
    with pytest.raises(TypeError, match="strategyParams must be a JSON object"):
        est.setParams(strategyParams="[1, 2]")
    with pytest.raises(TypeError, match="does not parse"):
        est.setParams(optimizer="{not json")
    # A compiled model lends its compile settings to the params left unset.
    compiled = _mlp(keras)
    compiled.compile(optimizer=keras.optimizers.SGD(0.3), loss="categorical_crossentropy", metrics=["mse"])
    lent = KerasEstimator(model=compiled, loss="sparse_categorical_crossentropy")
    assert lent.getOptimizer()["class_name"] == "SGD" and lent.getLoss() == "sparse_categorical_crossentropy"
    assert lent.getMetrics() == ["mse"]
    # The estimator keeps the weights it was given, not the live model.
    rebuilt = lent.getModel()
    for a, b in zip(rebuilt.get_weights(), compiled.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert KerasModel(model=compiled).model is compiled


def test_fit_errors(spark, keras):
    df = spark.createDataFrame([([0.0] * 64, 1)], "features array<float>, label long")
    with pytest.raises(ValueError, match="no Keras model"):
        KerasEstimator().fit(df)
    with pytest.raises(ValueError, match=r"unknown strategy 'nope'; choose one of \[.*'adag'"):
        KerasEstimator(model=_mlp(keras), strategy="nope").fit(df)
    with pytest.raises(ValueError, match=r"features column 'missing' not found; the DataFrame has columns \['features', 'label'\]"):
        KerasEstimator(model=_mlp(keras), featuresCol="missing").fit(df)


def _digits_frames(spark, digits_arrays):
    """Digits as 64 numeric pixel columns and a string class name (what a CSV would give)."""
    import pandas as pd

    x_train, y_train, x_test, y_test = digits_arrays

    def frame(x, y, offset):
        pdf = pd.DataFrame(x.astype(np.float64), columns=PIXELS)
        pdf.insert(0, "id", np.arange(offset, offset + len(x)))
        pdf["digit"] = [f"digit-{int(v)}" for v in y]
        return spark.createDataFrame(pdf)

    return frame(x_train, y_train, 0), frame(x_test, y_test, len(x_train))


def _rows(df, cols):
    rows = df.orderBy("id").select("id", *cols).collect()
    return [[r[c] for c in cols] for r in rows]


def test_pipeline_fit_save_load_identical_predictions(spark, keras, digits_arrays, tmp_path):
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.feature import StandardScaler, StringIndexer, VectorAssembler

    train, test = _digits_frames(spark, digits_arrays)
    train.cache()
    est = KerasEstimator(
        model=_mlp(keras),
        featuresCol="scaled",
        labelCol="label",
        strategy="adag",
        strategyParams={"communication_window": 4},
        numWorkers=2,
        batchSize=32,
        numEpochs=3,
        optimizer=keras.optimizers.Adam(0.01),
        metrics=["accuracy"],
    )
    pipeline = Pipeline(
        stages=[
            VectorAssembler(inputCols=PIXELS, outputCol="pixels"),
            StandardScaler(inputCol="pixels", outputCol="scaled"),
            StringIndexer(inputCol="digit", outputCol="label"),  # doubles holding class indices
            est,
        ]
    )
    # The unfitted pipeline (estimator included) saves and loads too.
    pipeline.write().overwrite().save(str(tmp_path / "pipeline"))
    loaded_pipeline = Pipeline.load(str(tmp_path / "pipeline"))
    loaded_est = loaded_pipeline.getStages()[-1]
    assert isinstance(loaded_est, KerasEstimator) and loaded_est.uid == est.uid
    assert loaded_est.getStrategyParams() == {"communication_window": 4} and loaded_est.getNumEpochs() == 3
    assert loaded_est.getOptimizer() == est.getOptimizer()
    for a, b in zip(loaded_est.getModel().get_weights(), est.getModel().get_weights()):
        np.testing.assert_array_equal(a, b)
    assert sorted(p.name for p in (tmp_path / "pipeline" / "stages").glob("*KerasEstimator*/*")) == [
        "metadata", "model_spec.json", "model_weights.npy"
    ]

    fitted = pipeline.fit(train)
    keras_stage = fitted.stages[-1]
    assert isinstance(keras_stage, KerasModel)
    assert keras_stage.getFeaturesCol() == "scaled" and keras_stage.history is not None

    out = fitted.transform(test)
    # Every input column kept (the features stay an ML Vector), predictions added.
    assert {"id", "digit", "pixels", "scaled", "label", "prediction", "predicted_label"} <= set(out.columns)
    assert type(out.schema["scaled"].dataType).__name__ == "VectorUDT"
    assert out.schema["prediction"].dataType.simpleString() == "array<float>"
    rows = _rows(out, ["prediction", "predicted_label", "label"])
    probs = np.array([r[0] for r in rows], np.float32)
    assert probs.shape == (len(digits_arrays[2]), 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-4)
    accuracy = float(np.mean([r[1] == int(r[2]) for r in rows]))
    assert accuracy > 0.85, accuracy
    metrics = keras_stage.evaluate(fitted.stages[-2].transform(fitted.stages[1].transform(fitted.stages[0].transform(test))))
    assert metrics["accuracy"] == pytest.approx(accuracy, abs=1e-6)

    # Saved and loaded as a PipelineModel: identical predictions.
    path = str(tmp_path / "fitted")
    fitted.write().overwrite().save(path)
    stage_dirs = list((tmp_path / "fitted" / "stages").glob("*KerasModel*"))
    assert len(stage_dirs) == 1 and (stage_dirs[0] / "model.keras").is_file()
    metadata = json.loads(next((stage_dirs[0] / "metadata").glob("part-*")).read_text())
    assert metadata["class"] == "distkeras.frontends.estimator.KerasModel"
    assert metadata["paramMap"]["featuresCol"] == "scaled"
    loaded = PipelineModel.load(path)
    assert isinstance(loaded.stages[-1], KerasModel) and loaded.stages[-1].uid == keras_stage.uid
    # Renamed outputs, for Spark's evaluators: the arg-max (a double) as `prediction`.
    loaded.stages[-1].setPredictionCol("probabilities").setPredictedLabelCol("prediction")
    scored = loaded.transform(test).cache()
    again = _rows(scored, ["probabilities", "prediction"])
    np.testing.assert_array_equal(np.array([r[0] for r in again], np.float32), probs)
    assert [r[1] for r in again] == [float(r[1]) for r in rows]
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator

    assert MulticlassClassificationEvaluator(metricName="accuracy").evaluate(scored) == pytest.approx(accuracy, abs=1e-6)
    scored.unpersist()


def test_several_columns_weights_and_persistence(spark, keras, tmp_path):
    """featuresCols for a two-input model (and weightCol + classWeight), through fit, transform,
    evaluate and save/load of both stages; the lists and weights are saved as plain params."""
    from tests.multi_io import BATCH, EPOCHS, WORKERS, ZERO_CLASS, ZERO_WEIGHT_CLASS, frames, two_input_model

    train_df, test_df, data = frames(spark)
    x_test = data.x_test.astype(np.float32) / 16.0
    est = KerasEstimator(
        model=two_input_model(),
        featuresCols=["top", "bottom"],
        weightCol="w",
        classWeight={ZERO_CLASS: 0.0},
        numWorkers=WORKERS,
        batchSize=BATCH,
        numEpochs=EPOCHS,
        optimizer=keras.optimizers.Adam(0.01),
    )
    assert est.getClassWeight() == {ZERO_CLASS: 0.0} and est.getWeightCol() == "w"
    est.write().overwrite().save(str(tmp_path / "est"))
    again = KerasEstimator.load(str(tmp_path / "est"))
    assert again.getFeaturesCols() == ["top", "bottom"] and again.getClassWeight() == {ZERO_CLASS: 0.0} and again.getWeightCol() == "w"

    fitted = est.fit(train_df)
    assert fitted.getFeaturesCols() == ["top", "bottom"]
    want = np.asarray(fitted.model.predict([x_test[:, :32], x_test[:, 32:]], verbose=0))
    pred = want.argmax(axis=1)
    recall = {c: float((pred[data.y_test == c] == c).mean()) for c in range(10)}
    others = (data.y_test != ZERO_CLASS) & (data.y_test != ZERO_WEIGHT_CLASS)
    # both weights reached the workers: a class of weight 0 is not learned, the others are
    assert recall[ZERO_CLASS] <= 0.05 and recall[ZERO_WEIGHT_CLASS] <= 0.05, recall
    assert float((pred == data.y_test)[others].mean()) >= 0.6, recall

    out = fitted.transform(test_df.select("top", "bottom", "label")).toArrow()
    assert out.column_names == ["top", "bottom", "label", "prediction", "predicted_label"]
    np.testing.assert_allclose(np.asarray(out.column("prediction").to_pylist(), np.float32), want, atol=1e-5)
    fitted.model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    metrics = fitted.evaluate(test_df)  # rows weighted by weightCol, as model.evaluate(sample_weight=)
    w = np.where(data.y_test == ZERO_WEIGHT_CLASS, 0.0, 1.0)
    want_metrics = fitted.model.evaluate([x_test[:, :32], x_test[:, 32:]], data.y_test, sample_weight=w, verbose=0, return_dict=True)
    unweighted = fitted.model.evaluate([x_test[:, :32], x_test[:, 32:]], data.y_test, verbose=0, return_dict=True)
    assert metrics["loss"] == pytest.approx(float(want_metrics["loss"]), rel=1e-4)
    assert abs(float(want_metrics["loss"]) - float(unweighted["loss"])) > 1e-3  # the weights mattered
    assert metrics["accuracy"] == pytest.approx(float(want_metrics["accuracy"]), abs=1e-4)

    fitted.write().overwrite().save(str(tmp_path / "model"))
    loaded = KerasModel.load(str(tmp_path / "model"))
    assert loaded.getFeaturesCols() == ["top", "bottom"]
    again = loaded.transform(test_df).toArrow()
    np.testing.assert_array_equal(np.asarray(again.column("prediction").to_pylist()), np.asarray(out.column("prediction").to_pylist()))

    with pytest.raises(ValueError, match="set featuresCol .one column. or featuresCols .several columns., not both"):
        KerasEstimator(model=two_input_model(), featuresCol="features", featuresCols=["top", "bottom"]).fit(train_df)
    with pytest.raises(TypeError, match="classWeight"):
        KerasEstimator(classWeight={"three": 1.0})
    train_df.unpersist()
    test_df.unpersist()
