"""OpenVINO backend: an OpenVINO export of the weights run through ultralytics.

Registered always; loading it without the ``openvino`` package fails with a clear
message (it is not a default dependency).
"""

from __future__ import annotations

import importlib.util

from services.detector.backends.base import BackendUnavailable, register_backend
from services.detector.backends.torch_backend import UltralyticsBackend
from services.detector.models import export_model, models_dir


@register_backend("openvino")
class OpenVinoBackend(UltralyticsBackend):
    def weights_path(self) -> str:
        if self.model.path.name.endswith("_openvino_model"):
            return str(self.model.path)
        self.cached_export = export_model(
            self.model.path,
            imgsz=self.config.imgsz,
            fmt="openvino",
            cache_dir=models_dir(self.state_dir),
        )
        return str(self.cached_export)

    def load(self) -> None:
        if importlib.util.find_spec("openvino") is None:
            raise BackendUnavailable(
                "detector.backend.type=openvino needs the 'openvino' package, which is not "
                "installed (pip install openvino); or use backend type 'onnx', which is "
                "about as fast on CPU"
            )
        if self.config.device != "cpu":
            raise BackendUnavailable("the openvino backend runs on device: cpu only")
        super().load()
