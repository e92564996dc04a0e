"""Configuration of the faces worker (YAML section ``faces:``, env ``SENTRI_FACES__*``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.config import Section


class FacesConfig(Section):
    """Face detection, quality gate, gallery matching and events."""

    # --- detection -----------------------------------------------------------
    model: Literal["hog", "cnn"] = Field(
        "hog",
        description=(
            "Face detector: 'hog' (dlib HOG, ~40-60 ms per 640x480 frame on CPU) or 'cnn' "
            "(dlib MMOD CNN: more robust to pose, but seconds per frame on CPU; choose it "
            "explicitly only with a GPU build of dlib)."
        ),
    )
    downscale: float = Field(
        1.0,
        gt=0.05,
        le=1.0,
        description=(
            "Scale factor applied to the frame before detection (encoding always uses the "
            "full frame). At upsample 0 the HOG detector finds faces of about 60 px and "
            "larger in the detection image, so 0.5 only finds faces of ~120 px and up."
        ),
    )
    max_detect_width: int = Field(
        960,
        ge=0,
        le=8192,
        description=(
            "Frames wider than this are scaled down further before detection (0 = no limit); "
            "keeps HD cameras from costing several hundred ms per frame."
        ),
    )
    upsample: int = Field(
        0,
        ge=0,
        le=3,
        description=(
            "Times the detection image is doubled to find small faces (each step costs ~4x)."
        ),
    )
    min_detection_score: float = Field(
        0.0,
        ge=-1.0,
        le=3.0,
        description=(
            "Detections scoring below this are ignored (HOG margin: 0 is dlib's default, "
            "clear frontal faces score ~1-2, spurious ones near 0; raise to ~0.3 for fewer "
            "false faces at the cost of missing turned heads)."
        ),
    )
    num_jitters: int = Field(
        1,
        ge=1,
        le=20,
        description="Re-samplings per face encoding of live frames (cost grows linearly).",
    )
    enroll_num_jitters: int = Field(
        3,
        ge=1,
        le=50,
        description="Re-samplings per face encoding of enrolment photos (done once).",
    )

    # --- quality gate ----------------------------------------------------------
    min_face_px: int = Field(
        40,
        ge=8,
        le=2048,
        description="Faces smaller than this (shorter box side, frame pixels) are rejected.",
    )
    min_sharpness: float = Field(
        25.0,
        ge=0.0,
        le=100_000.0,
        description=(
            "Faces whose sharpness (variance of the Laplacian of the face resized to 64x64 "
            "grey) is below this are rejected as blurred; a sharp photo scores several "
            "hundred, a face blurred with sigma 2.5 about 70. 0 disables the check."
        ),
    )

    # --- matching ----------------------------------------------------------------
    tolerance: float = Field(
        0.6,
        ge=0.0,
        le=1.0,
        description=(
            "Largest encoding distance accepted as the same person (lower is stricter; "
            "0.6 is dlib's operating point, 0.5 for fewer false matches)."
        ),
    )

    # --- person gate and rate --------------------------------------------------
    gate_on_person: bool = Field(
        True,
        description=(
            "Only look for faces on a camera while the detector's latest record for it "
            "reports a person (saves the detection cost on empty scenes). Needs the "
            "detector running on the same cameras."
        ),
    )
    gate_classes: list[str] = Field(
        default_factory=lambda: ["person"],
        min_length=1,
        max_length=16,
        description="Detector classes that open the person gate.",
    )
    person_recent_s: float = Field(
        3.0,
        gt=0,
        le=600,
        description="A person detection this recent (before the frame's capture time) opens the gate.",
    )
    max_rate_per_camera: float = Field(
        2.0,
        ge=0,
        le=60,
        description="Most frames per second analysed per camera (0 = as fast as possible).",
    )
    max_faces_per_frame: int = Field(
        10,
        ge=1,
        le=100,
        description="Most faces encoded per frame (largest first); the rest are counted and ignored.",
    )

    # --- results and events ------------------------------------------------------
    debounce_s: float = Field(
        30.0,
        ge=0,
        le=86_400,
        description=(
            "A face_recognized event is sent when a known person appears on a camera, "
            "again only after they were not seen there for this long."
        ),
    )
    snapshot_ttl_s: int = Field(
        86_400,
        ge=60,
        le=30 * 86_400,
        description="How long an event's frame snapshot is kept in Redis.",
    )
    process_by_default: bool = Field(
        True,
        description="Process cameras with no explicit per-camera faces processing switch.",
    )
    stats_interval_s: float = Field(
        1.0, gt=0, le=60, description="How often per-camera face stats are written to Redis."
    )

    # --- gallery / enrolment -----------------------------------------------------
    max_upload_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="Largest enrolment photo accepted (bytes).",
    )
    max_upload_pixels: int = Field(
        40_000_000,
        ge=10_000,
        le=200_000_000,
        description="Largest enrolment photo accepted (width x height; guards decompression bombs).",
    )
    max_photos_per_enroll: int = Field(
        10, ge=1, le=100, description="Most photos in one enrolment request."
    )
    max_encodings_per_person: int = Field(
        20,
        ge=1,
        le=500,
        description="Encodings kept per person; the oldest are dropped beyond this.",
    )
