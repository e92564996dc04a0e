"""The offline provider: no model, only what the detector and face recogniser said.

Used when no API key is configured, and as the fallback when the model is
unavailable (circuit open, budget spent, rate limited, request failed).  Its text is
labelled so nobody mistakes it for an AI description, and it never rates a threat:
``threat_level`` and ``suggested_action`` are null because nothing assessed them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from services.analyst.prompt import AnalysisRequest
from services.analyst.providers import Provider, ProviderResult, register_provider
from services.analyst.scene import SceneContext
from shared.config import Section

OFFLINE_LABEL = "offline summary — no AI model used"


def offline_summary(ctx: SceneContext, note: str | None = None) -> ProviderResult:
    """A factual summary of ``ctx``; ``note`` says why no model was used."""
    label = f"{OFFLINE_LABEL} ({note})" if note else OFFLINE_LABEL
    parts = [f"{label}.", f"Camera {ctx.camera_id}:"]
    lines = ctx.object_lines()
    parts.append(", ".join(lines) + "." if lines else "no objects detected.")
    if ctx.names:
        parts.append("Recognised: " + ", ".join(ctx.names) + ".")
    if ctx.unknown_faces:
        s = "" if ctx.unknown_faces == 1 else "s"
        parts.append(f"{ctx.unknown_faces} unrecognised face{s}.")
    if ctx.trigger != "periodic":
        parts.append(f"Trigger: {ctx.trigger_detail or ctx.trigger}.")
    else:
        parts.append("Trigger: periodic check.")
    return ProviderResult(
        summary=" ".join(parts),
        notable_objects=ctx.notable_objects(),
        threat_level=None,
        suggested_action=None,
        model=None,
    )


class OfflineProviderConfig(Section):
    """No model: an honest, clearly labelled summary built from detections and faces."""

    type: Literal["offline"] = Field("offline", description="Provider type.")


@register_provider("offline", config=OfflineProviderConfig)
class OfflineProvider(Provider):
    remote = False

    def analyse(self, request: AnalysisRequest) -> ProviderResult:
        return offline_summary(request.context)
