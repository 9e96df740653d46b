"""``relay.toml`` ``[screen]``: the limits of screen shares (no media imports here, so
reading the configuration stays cheap; ``relay.screen_media`` does the media)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from relay.errors import ConfigError
from relay.limits import settings_from_table

if TYPE_CHECKING:
    from relay.screen_media import ScreenLimits

_RANGES: tuple[tuple[str, float, float], ...] = (
    ("max_width", 16, 4096),
    ("max_height", 16, 4096),
    ("max_fps", 0.5, 60.0),
    ("bitrate", 50_000, 20_000_000),
    ("max_shares_per_session", 1, 100),
)


@dataclass(frozen=True, slots=True)
class ScreenSettings:
    """``relay.toml`` ``[screen]``: limits of screen shares."""

    max_width: int = 1920
    max_height: int = 1080
    max_fps: float = 15.0
    bitrate: int = 1_000_000
    """The relay's one encoder per share, in bits per second."""
    max_shares_per_session: int = 2
    ask_valid_s: float = 600.0
    """How long a learner may start a share after the instructor asked."""
    thumbnail_every_s: float = 5.0
    answer_timeout_s: float = 10.0
    """Longest wait for the relay's own WebRTC answer (ICE gathering on its addresses)."""

    def __post_init__(self) -> None:
        if self.max_shares_per_session < 1:
            raise ConfigError("[screen] max_shares_per_session must be at least 1")
        for name in ("ask_valid_s", "thumbnail_every_s", "answer_timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"[screen] {name} must be positive")
        for name, low, high in _RANGES:
            value = getattr(self, name)
            if isinstance(value, bool) or not low <= value <= high:
                raise ConfigError(f"[screen] {name} = {value!r} must be in {low}..{high}")

    def media_limits(self) -> ScreenLimits:
        """The limits the relay's media fan-out enforces (imports the media stack)."""
        from relay.screen_media import ScreenLimits

        return ScreenLimits(
            max_width=self.max_width,
            max_height=self.max_height,
            max_fps=self.max_fps,
            bitrate=self.bitrate,
        )

    @classmethod
    def from_mapping(cls, data: dict[str, Any], source: str) -> ScreenSettings:
        return settings_from_table(cls, data, source, "screen")


DEFAULT_SCREEN_SETTINGS = ScreenSettings()
