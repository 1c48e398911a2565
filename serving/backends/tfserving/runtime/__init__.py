"""A TF-Serving-protocol runtime: TF Serving's REST paths and gRPC services over SavedModels.

The real ``tensorflow_model_server`` binary cannot be installed here. This runtime implements
the parts of its protocol Flywheel and standard TF Serving clients use, so the gateway's
TF Serving adapter runs unchanged against the real ``tensorflow/serving`` image:

- REST: ``/v1/models/{m}[/versions/{v}|/labels/{l}]`` status, ``.../metadata`` and ``...:predict``
  (row "instances" and columnar "inputs" formats);
- gRPC: ``PredictionService`` (Predict, GetModelMetadata) and ``ModelService`` (GetModelStatus,
  HandleReloadConfigRequest), from the ``tensorflow-serving-api`` protos;
- the same flags: ``--port``, ``--rest_api_port``, ``--model_config_file``,
  ``--model_config_file_poll_wait_seconds``, ``--file_system_poll_wait_seconds``.
"""
