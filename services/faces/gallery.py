"""The face gallery: enrolled people and their encodings, stored in Redis.

Storage: the hash ``keys.gallery`` maps a person's name to JSON
``{"name", "encodings": [[128 floats], ...], "created", "updated"}`` (unix seconds).
Every change also increments ``<prefix>gallery:version`` in the same transaction;
:meth:`Gallery.match` keeps the encodings in memory and reloads them only when that
counter moved, so the worker pays one ``GET`` per matched frame and sees enrolments
from the gateway or the CLI at once.

Enrolment rules (what users see as errors, with :attr:`GalleryError.status`):

* 413 photo larger than ``max_upload_bytes`` or ``max_upload_pixels``;
* 415 not a JPEG/PNG/WebP/BMP/GIF/TIFF image;
* 422 bad name (see :data:`NAME_PATTERN`), naming the field;
* 400 no photo or too many, no face found, several faces of similar size
  (the photo must show one person: when other faces are clearly smaller, e.g.
  people in the background, the largest face is used; detections scoring below
  ``ENROLL_MIN_SCORE`` are ignored as spurious), or the face fails the
  quality gate (smaller than ``min_face_px`` or blurrier than ``min_sharpness``).

A request is all-or-nothing: one bad photo rejects it and nothing is stored.
Names are 1..64 characters matching :data:`NAME_PATTERN` (surrounding spaces are
trimmed; ``unknown`` is reserved for unrecognised faces) and are case-sensitive.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
import threading
import time
import warnings
from typing import Any

import numpy as np
import redis

from services.faces import metrics
from services.faces.config import FacesConfig
from services.faces.engine import REJECT_TOO_SMALL
from shared.keys import Keys
from shared.logs import BurstLimiter

log = logging.getLogger(__name__)

NAME_MAX_CHARS = 64
#: What a person's name may contain: letters and digits of any script, ``_``, and the
#: separators ``space . , ' -`` after a first letter or digit.  No ``/``, ``\\``, ``%``,
#: ``?``, ``#``: a name is a URL path segment and a log field, and must stay reachable.
NAME_PATTERN = r"^\w[\w .,'-]*$"
_NAME_RE = re.compile(NAME_PATTERN)
RESERVED_NAMES = frozenset({"unknown"})
ENCODING_DIM = 128
#: Enrolment photos are scaled so their longer side is at most this before detection.
ENROLL_MAX_SIDE = 1280
#: Enrolment ignores detections scoring below this (HOG margin): clear faces score
#: ~1-2, while spurious detections (a badge, a pattern) score ~0-0.2.
ENROLL_MIN_SCORE = 0.3
#: A second face at least this large relative to the largest makes a photo ambiguous.
AMBIGUOUS_FACE_RATIO = 0.8
#: PIL formats accepted for uploads (phones' multi-picture JPEGs open as JPEG).
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
_WATCH_RETRIES = 20


class GalleryError(ValueError):
    """A request the user must fix; ``status`` is the HTTP code the gateway returns."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def version_key(keys: Keys) -> str:
    """Counter incremented on every gallery change."""
    return keys.gallery_version


def validate_name(name: Any, field: str = "name") -> str:
    """The trimmed name, or :class:`GalleryError` (422, naming ``field``)."""
    if not isinstance(name, str):
        raise GalleryError(f"{field} must be a string", 422)
    name = name.strip()
    if not name:
        raise GalleryError(f"{field} must not be empty", 422)
    if len(name) > NAME_MAX_CHARS:
        raise GalleryError(f"{field} is longer than {NAME_MAX_CHARS} characters", 422)
    if not _NAME_RE.match(name):
        raise GalleryError(
            f"{field} may contain only letters, digits, '_' and (after the first character) "
            "spaces and . , ' - (no '/')",
            422,
        )
    if name.casefold() in RESERVED_NAMES:
        raise GalleryError(f"{field}: {name!r} is reserved", 422)
    return name


def check_upload_size(data: Any, config: FacesConfig, index: int = 1) -> None:
    """Type and byte-size checks of one upload (400 / 413 / 415)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise GalleryError(f"photo {index}: expected bytes")
    size = len(data)
    if size > config.max_upload_bytes:
        raise GalleryError(
            f"photo {index} is {size} bytes; the limit is {config.max_upload_bytes}", 413
        )
    if size == 0:
        raise GalleryError(f"photo {index} is empty", 415)


def decode_photo(
    data: Any, config: FacesConfig, index: int = 1, *, max_side: int | None = None
) -> np.ndarray:
    """Validate and decode one uploaded photo into an RGB array (EXIF rotation applied).

    With ``max_side`` the result is scaled down to fit (large JPEGs are decoded at a
    reduced DCT scale directly, so a 40 MP photo never costs 120 MB of pixels).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    check_upload_size(data, config, index)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(bytes(data)), formats=ACCEPTED_FORMATS) as im:
                w, h = im.size
                if w * h > config.max_upload_pixels:
                    raise GalleryError(
                        f"photo {index} is {w}x{h} pixels; the limit is "
                        f"{config.max_upload_pixels} pixels",
                        413,
                    )
                if max_side and im.format == "JPEG":
                    im.draft("RGB", (max_side, max_side))
                rgb = ImageOps.exif_transpose(im).convert("RGB")
                if max_side and max(rgb.size) > max_side:
                    f = max_side / max(rgb.size)
                    new_size = (max(1, round(rgb.width * f)), max(1, round(rgb.height * f)))
                    rgb = rgb.resize(new_size, Image.Resampling.BILINEAR, reducing_gap=2.0)
                arr = np.asarray(rgb, dtype=np.uint8)
    except GalleryError:
        raise
    except Image.DecompressionBombError:
        raise GalleryError(f"photo {index} has too many pixels", 413) from None
    # ImportError: in a process that imported ultralytics, PIL's open is patched to try
    # an optional HEIF plugin on unknown data, which is not installed.
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, ImportError) as exc:
        raise GalleryError(
            f"photo {index} is not a readable image (accepted: JPEG, PNG, WebP, BMP, GIF, TIFF)",
            415,
        ) from exc
    if arr.ndim != 3 or min(arr.shape[:2]) < 1:
        raise GalleryError(f"photo {index} has no pixels", 415)
    return np.ascontiguousarray(arr)


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _summary(person: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": person["name"],
        "encodings": len(person.get("encodings", [])),
        "created": person.get("created"),
        "updated": person.get("updated"),
    }


def _valid_encodings(value: Any) -> list[list[float]] | None:
    if not isinstance(value, list) or not value:
        return None
    out = []
    for enc in value:
        if not isinstance(enc, list) or len(enc) != ENCODING_DIM:
            return None
        if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in enc):
            return None
        out.append(enc)
    return out


class Gallery:
    """Enrol, list, rename, delete and match people (see the module docstring)."""

    def __init__(self, r: redis.Redis, keys: Keys, config: FacesConfig) -> None:
        self.r = r
        self.keys = keys
        self.config = config
        self._lock = threading.Lock()
        self._version: str | None = None
        self._loaded = False
        self._names: list[str] = []
        self._matrix = np.empty((0, ENCODING_DIM))
        self._starts = np.empty(0, dtype=np.intp)
        self._burst = BurstLimiter(60.0)

    # ----------------------------------------------------------------- reads
    def _load(self, name: str) -> dict[str, Any] | None:
        raw = self.r.hget(self.keys.gallery, name)
        return None if raw is None else self._parse(name, raw)

    def _parse(self, name: str, raw: Any) -> dict[str, Any] | None:
        try:
            person = json.loads(_s(raw))
        except (json.JSONDecodeError, UnicodeDecodeError):
            person = None
        encs = _valid_encodings(person.get("encodings")) if isinstance(person, dict) else None
        if encs is None:
            ok, suppressed = self._burst.should_log(f"corrupt:{name}")
            if ok:
                log.warning(
                    "ignoring corrupt gallery entry",
                    extra={"person": name, "suppressed": suppressed},
                )
            return None
        person["name"] = name
        person["encodings"] = encs
        return person

    def list(self) -> list[dict[str, Any]]:
        """Every person: ``[{"name", "encodings": n, "created", "updated"}]`` by name."""
        people = []
        for k, v in self.r.hgetall(self.keys.gallery).items():
            person = self._parse(_s(k), v)
            if person is not None:
                people.append(_summary(person))
        return sorted(people, key=lambda p: (p["name"].casefold(), p["name"]))

    def get(self, name: str) -> dict[str, Any] | None:
        if not isinstance(name, str):
            return None
        person = self._load(name.strip())
        return None if person is None else _summary(person)

    # ---------------------------------------------------------------- writes
    def _transaction(self, fn: Any) -> Any:
        """Run ``fn(pipe)`` under WATCH of the gallery hash; retries on conflicts.

        ``fn`` reads with ``pipe`` (immediate mode), then calls ``pipe.multi()`` and
        queues its writes; the version counter increment is queued here.
        """
        for _ in range(_WATCH_RETRIES):
            with self.r.pipeline() as pipe:
                try:
                    pipe.watch(self.keys.gallery)
                    result = fn(pipe)
                    pipe.incr(version_key(self.keys))
                    pipe.execute()
                    return result
                except redis.WatchError:
                    continue
        raise GalleryError("the gallery is busy; try again", 409)

    def enroll(self, name: str, images: list[bytes]) -> dict[str, Any]:
        """Add one encoding per photo to ``name`` (created if new); returns the person.

        All photos are validated and encoded before anything is stored.
        """
        try:
            info = self._enroll(name, images)
        except GalleryError as exc:
            metrics.ENROLMENTS.labels(str(exc.status)).inc()
            raise
        metrics.ENROLMENTS.labels("ok").inc()
        return info

    def _enroll(self, name: str, images: list[bytes]) -> dict[str, Any]:
        name = validate_name(name)
        if not isinstance(images, (list, tuple)) or not images:
            raise GalleryError("at least one photo is required")
        if len(images) > self.config.max_photos_per_enroll:
            raise GalleryError(
                f"{len(images)} photos; at most {self.config.max_photos_per_enroll} per request"
            )
        for i, data in enumerate(images, 1):  # cheap checks first: no work on a bad batch
            check_upload_size(data, self.config, i)
        new = [
            self._photo_encoding(decode_photo(data, self.config, i, max_side=ENROLL_MAX_SIDE), i)
            for i, data in enumerate(images, 1)
        ]
        new_lists = [[round(float(x), 6) for x in enc] for enc in new]
        keep = self.config.max_encodings_per_person

        def write(pipe: Any) -> dict[str, Any]:
            raw = pipe.hget(self.keys.gallery, name)
            now = round(time.time(), 3)
            person = self._parse(name, raw) if raw is not None else None
            if person is None:
                person = {"name": name, "encodings": [], "created": now}
            person["encodings"] = (person["encodings"] + new_lists)[-keep:]
            person["updated"] = now
            pipe.multi()
            pipe.hset(self.keys.gallery, name, json.dumps(person, separators=(",", ":")))
            return person

        person = self._transaction(write)
        log.info(
            "person enrolled",
            extra={"person": name, "added": len(new), "encodings": len(person["encodings"])},
        )
        return {**_summary(person), "added": len(new)}

    def _photo_encoding(self, rgb: np.ndarray, index: int) -> np.ndarray:
        from services.faces.engine import get_engine, measure

        engine = get_engine()
        min_score = max(ENROLL_MIN_SCORE, self.config.min_detection_score)
        model, upsample = self.config.model, self.config.upsample
        found = engine.detect(rgb, model=model, upsample=upsample, min_score=min_score)
        if not found and upsample < 2:
            # Enrolment is rare and users expect a face they can see to be found.
            found = engine.detect(rgb, model=model, upsample=upsample + 1, min_score=min_score)
        if not found:
            raise GalleryError(f"photo {index}: no face found")
        faces = sorted(measure(rgb, found, self.config), key=lambda f: f.size_px, reverse=True)
        face = faces[0]
        if len(faces) > 1 and faces[1].size_px >= AMBIGUOUS_FACE_RATIO * face.size_px:
            raise GalleryError(
                f"photo {index}: {len(faces)} faces of similar size; use a photo of one person"
            )
        if face.reject_reason == REJECT_TOO_SMALL:
            raise GalleryError(
                f"photo {index}: the face is {face.size_px} px; at least "
                f"{self.config.min_face_px} px is needed"
            )
        if face.reject_reason is not None:
            raise GalleryError(
                f"photo {index}: the face is too blurred (sharpness {face.sharpness:.0f} < "
                f"{self.config.min_sharpness:g})"
            )
        (encoding,) = engine.encode(rgb, [face.box], self.config.enroll_num_jitters)
        return encoding

    def delete(self, name: str) -> bool:
        """Remove a person; False when there was no such person."""
        if not isinstance(name, str):
            return False
        name = name.strip()

        def write(pipe: Any) -> bool:
            exists = pipe.hexists(self.keys.gallery, name)
            pipe.multi()
            pipe.hdel(self.keys.gallery, name)
            return bool(exists)

        existed = self._transaction(write)
        if existed:
            log.info("person deleted", extra={"person": name})
        return existed

    def rename(self, old: str, new: str) -> dict[str, Any]:
        """Rename a person: 404 if ``old`` is unknown, 409 if ``new`` exists, 400 bad name."""
        old = old.strip() if isinstance(old, str) else old
        new = validate_name(new, "new_name")

        def write(pipe: Any) -> dict[str, Any]:
            raw = pipe.hget(self.keys.gallery, old)
            person = self._parse(old, raw) if raw is not None else None
            if person is None:
                raise GalleryError(f"no person named {old!r}", 404)
            if new != old and pipe.hexists(self.keys.gallery, new):
                raise GalleryError(f"a person named {new!r} already exists", 409)
            person["name"] = new
            person["updated"] = round(time.time(), 3)
            pipe.multi()
            pipe.hdel(self.keys.gallery, old)
            pipe.hset(self.keys.gallery, new, json.dumps(person, separators=(",", ":")))
            return person

        person = self._transaction(write)
        log.info("person renamed", extra={"person": old, "new_name": new})
        return _summary(person)

    # -------------------------------------------------------------- matching
    def _refresh(self) -> None:
        version = self.r.get(version_key(self.keys))
        version = None if version is None else _s(version)
        if self._loaded and version == self._version:
            return
        names: list[str] = []
        rows: list[list[float]] = []
        starts: list[int] = []
        for k, v in sorted(self.r.hgetall(self.keys.gallery).items()):
            person = self._parse(_s(k), v)
            if person is None:
                continue
            names.append(person["name"])
            starts.append(len(rows))
            rows.extend(person["encodings"])
        self._names = names
        self._matrix = np.asarray(rows, dtype=np.float64).reshape(-1, ENCODING_DIM)
        self._starts = np.asarray(starts, dtype=np.intp)
        self._version = version
        self._loaded = True
        metrics.GALLERY_PEOPLE.set(len(names))
        metrics.GALLERY_ENCODINGS.set(len(rows))
        log.info("gallery loaded", extra={"people": len(names), "encodings": len(rows)})

    def match(self, encodings: list[np.ndarray]) -> list[tuple[str | None, float]]:
        """Nearest person per encoding: ``(name, distance)``, or ``(None, distance)`` when
        the nearest is farther than ``tolerance`` (``math.inf`` with an empty gallery)."""
        if len(encodings) == 0:
            return []
        with self._lock:
            self._refresh()
            names, matrix, starts = self._names, self._matrix, self._starts
        if not names:
            return [(None, math.inf) for _ in encodings]
        query = np.asarray(encodings, dtype=np.float64).reshape(-1, ENCODING_DIM)
        dists = np.linalg.norm(query[:, None, :] - matrix[None, :, :], axis=2)  # (k, N)
        per_person = np.minimum.reduceat(dists, starts, axis=1)  # (k, people)
        best = per_person.argmin(axis=1)
        out: list[tuple[str | None, float]] = []
        for i, j in enumerate(best):
            d = float(per_person[i, j])
            out.append((names[j] if d <= self.config.tolerance else None, d))
        return out
