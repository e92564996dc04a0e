"""The ``recorder`` config section."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from shared.config import Section, yaml_on_off

#: ``off`` written bare in YAML (or SENTRI_RECORDER__MODE=off) arrives as False.
Mode = Annotated[Literal["continuous", "events", "off"], BeforeValidator(yaml_on_off)]


class CameraRecording(Section):
    mode: Mode | None = Field(None, description="Recording mode of this camera (unset = default).")


class RecorderConfig(Section):
    mode: Mode = Field(
        "events",
        description="Default mode: 'continuous' (everything), 'events' (only around events, with "
        "pre- and post-roll) or 'off'.",
    )
    cameras: dict[str, CameraRecording] = Field(
        default_factory=dict, max_length=10_000, description="Per-camera overrides (mode)."
    )
    segment_s: float = Field(10.0, ge=2, le=120, description="Target segment length (seconds).")
    pre_roll_s: float = Field(
        5.0, ge=0, le=60, description="Seconds kept in memory and recorded before an event."
    )
    post_roll_s: float = Field(
        5.0, ge=0, le=300, description="Seconds recorded after an event ends."
    )
    fps: float = Field(
        15.0, gt=0, le=60, description="Nominal frame rate (timestamps follow capture times)."
    )
    crf: int = Field(28, ge=0, le=51, description="x264 constant rate factor (higher = smaller).")
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] = Field(
        "superfast", description="x264 preset (faster = less CPU, bigger files)."
    )
    gap_s: float = Field(
        3.0, gt=0, le=3600,
        description="Continuous mode: a break longer than this between segments is recorded as a gap.",
    )  # fmt: skip
    upload_queue: int = Field(
        16, ge=1, le=1000, description="Finished segments waiting for the media store, at most."
    )
    max_event_s: float = Field(
        900.0, ge=10, le=86400,
        description="An event whose end never arrives stops triggering recording after this long.",
    )  # fmt: skip

    def mode_of(self, camera_id: str) -> str:
        c = self.cameras.get(camera_id)
        return (c.mode if c and c.mode else None) or self.mode
