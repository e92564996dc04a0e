"""Inference backends, registered under the ``type`` key that config selects.

``detector.backend.type`` picks one: ``torch`` (ultralytics + PyTorch on the ``.pt``),
``onnx`` (cached ONNX export run by ONNX Runtime, the CPU default), ``openvino`` (the
same export run by OpenVINO) or ``auto`` (measures those once, picks the fastest that
passes the INT8/FP32 accuracy gate).  A new backend subclasses :class:`Backend` and
decorates itself with ``@register_backend("name", config=ItsConfig)``, its config
class (``type: Literal["name"]``) beside it in the same file; importing this package
registers the built-in ones and ``detector.backend`` accepts them.
"""

from services.detector.backends import onnx_runtime, openvino, torch_backend, auto  # noqa: F401, I001
from services.detector.backends.base import (
    BACKEND_CONFIGS,
    BACKENDS,
    Backend,
    BackendUnavailable,
    backend_config_union,
    create_backend,
    register_backend,
)

__all__ = [
    "BACKEND_CONFIGS",
    "BACKENDS",
    "Backend",
    "BackendUnavailable",
    "backend_config_union",
    "create_backend",
    "register_backend",
]
