"""FacesConfig: defaults, bounds, env/YAML loading; upload decoding never crashes."""

from __future__ import annotations

import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from services.faces.config import FacesConfig
from services.faces.gallery import GalleryError, decode_photo
from shared.config import ConfigError, load_section


def test_defaults_are_the_cheap_safe_choices() -> None:
    c = FacesConfig()
    assert c.model == "hog" and c.upsample == 0 and c.tolerance == 0.6
    assert c.gate_on_person and c.process_by_default
    assert c.max_rate_per_camera == 2.0 and c.max_upload_bytes == 8 * 1024 * 1024
    for name, field in FacesConfig.model_fields.items():
        assert field.description, f"{name} has no description"


def test_env_and_yaml_and_errors_name_the_field(tmp_path) -> None:
    env = {"SENTRI_FACES__MODEL": "cnn", "SENTRI_FACES__GATE_CLASSES": "[person, Normal]"}
    c = load_section(FacesConfig, "faces", env=env)
    assert c.model == "cnn" and c.gate_classes == ["person", "Normal"]
    cfg = tmp_path / "sentri.yaml"
    cfg.write_text("faces:\n  tolerance: 0.5\n  debounce_s: 5\n")
    c = load_section(FacesConfig, "faces", config_file=cfg, env={})
    assert c.tolerance == 0.5 and c.debounce_s == 5
    for bad in (
        {"SENTRI_FACES__TOLERANCE": "1.5"},
        {"SENTRI_FACES__MODEL": "mtcnn"},
        {"SENTRI_FACES__UPSAMPLE": "9"},
        {"SENTRI_FACES__MAX_UPLOAD_BYTES": "10"},
        {"SENTRI_FACES__NO_SUCH_FIELD": "1"},
    ):
        with pytest.raises(ConfigError) as exc:
            load_section(FacesConfig, "faces", env=bad)
        field = next(iter(bad)).removeprefix("SENTRI_FACES__").lower()
        assert f"faces.{field}" in str(exc.value)


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 100, 50)).save(buf, "PNG")
    return buf.getvalue()


PNG = _png(8, 6)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=2048),
        # Valid PNG/JPEG/GIF starts with garbage after them: the decoders' hard paths.
        st.builds(
            lambda n, tail: PNG[:n] + tail, st.integers(0, len(PNG)), st.binary(max_size=256)
        ),
        st.builds(lambda tail: b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + tail, st.binary(max_size=512)),
        st.builds(lambda tail: b"GIF89a" + tail, st.binary(max_size=256)),
    )
)
def test_any_upload_decodes_or_raises_gallery_error(data: bytes) -> None:
    config = FacesConfig(max_upload_bytes=1024 * 1024)
    try:
        img = decode_photo(data, config)
    except GalleryError as exc:
        assert exc.status in (400, 413, 415)
    else:
        assert img.ndim == 3 and img.shape[2] == 3 and img.dtype.name == "uint8"


def test_valid_png_decodes_to_rgb() -> None:
    img = decode_photo(PNG, FacesConfig())
    assert img.shape == (6, 8, 3) and tuple(img[0, 0]) == (200, 100, 50)
