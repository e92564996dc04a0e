"""Detector service: YOLO object detection + per-camera tracking, events from tracks.

Modules: ``config`` (section ``detector``), ``models`` (weights resolution, export),
``backends`` (torch / onnx / openvino registry), ``detections`` (the result type),
``tracking`` (ByteTrack + track life cycle), ``records`` (published schemas),
``processor`` (the ``shared.worker`` Processor), ``__main__`` (CLI: run, export).
"""
