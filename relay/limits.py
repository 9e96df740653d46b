"""Named security limits.

Every bound the relay enforces on untrusted input lives here, with its default. The
facility can change them in the ``[limits]`` table of ``relay.toml``; ``docs/protocol.md``
documents each one and what happens when a peer exceeds it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, TypeVar

from relay.errors import ConfigError

T = TypeVar("T")


def settings_from_table(cls: type[T], data: dict[str, Any], source: str, table: str) -> T:
    """A settings dataclass from a ``relay.toml`` table: known keys only, each of its
    default's type (a whole number where a float is expected is taken); the class's own
    checks run as it is built. Errors name ``source``, ``[table]`` and the key."""
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(unknown)} in [{table}]; "
            f"known keys are {', '.join(sorted(known))}"
        )
    values: dict[str, Any] = {}
    for key, value in data.items():
        default = known[key].default
        if isinstance(default, float) and isinstance(value, int) and value is not True:
            value = float(value)
        if type(value) is not type(default):
            raise ConfigError(
                f"{source}: [{table}] {key} must be {type(default).__name__}, got {value!r}"
            )
        values[key] = value
    try:
        return cls(**values)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Limits:
    # -- wire ------------------------------------------------------------------------
    max_frame_bytes: int = 65_536
    """Largest WebSocket message accepted, in bytes (larger: close 1009)."""
    max_str_bytes: int = 16_384
    """Longest msgpack string, in bytes."""
    max_bin_bytes: int = 60_000
    """Longest msgpack bin value (an editor update or state vector), in bytes."""
    max_array_len: int = 64
    """Most items in one msgpack array."""
    max_map_len: int = 32
    """Most pairs in one msgpack map."""
    max_depth: int = 4
    """Deepest nesting of containers (the envelope itself is depth 1)."""
    max_text_chars: int = 4_000
    """Longest chat text, in Unicode code points."""
    max_id_chars: int = 64
    """Longest identifier (message id, session id, participant id)."""
    max_reason_chars: int = 500
    """Longest free-text reason (ending a session)."""
    # -- connections -----------------------------------------------------------------
    hello_timeout_s: float = 10.0
    """A connection must send ``hello`` within this time."""
    ping_interval_s: float = 20.0
    """The relay pings every connection this often; no pong within half of it: closed."""
    max_connections_per_principal: int = 8
    """Most simultaneous connections of one certificate (across classes)."""
    tls_handshake_timeout_s: float = 10.0
    """A TLS handshake must finish within this time."""
    # -- sessions --------------------------------------------------------------------
    history_limit: int = 20_000
    """Events kept per class for resume; older ones are not replayed."""
    dedup_window: int = 4_096
    """Message ids remembered per sender to suppress resent duplicates."""
    outbox_limit: int = 4_096
    """Decided-but-undelivered batches queued per class before senders are slowed."""
    send_queue_limit: int = 8_192
    """Frames queued for one slow receiver before it is disconnected."""
    msgs_per_second: float = 20.0
    """Sustained chat and hand messages per second per connection (a flood guard below the
    policy's per-person and per-class rate limits, policy.toml [rate.KIND])."""
    msgs_burst: int = 40
    """Burst allowance for the per-connection message rate."""
    editor_msgs_per_second: float = 50.0
    """Sustained editor messages (updates, presence, sync) per second per connection."""
    editor_msgs_burst: int = 200
    """Burst allowance for editor messages (a paste split into many updates)."""
    max_holds_per_session: int = 200
    """Messages of one class waiting for staff review; more would-be holds are refused."""
    # -- learners --------------------------------------------------------------------
    pin_failures_before_lockout: int = 5
    """Wrong PINs in a row before a learner is locked out."""
    lockout_seconds: float = 300.0
    """How long a locked-out learner must wait."""
    pin_failures_per_machine: int = 20
    """Wrong PINs (for any learner ids) from one machine within ``lockout_seconds``
    before that machine may not try again until the window has passed."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"limit '{f.name}' must be a number, not {value!r}")
            if value < 0 or (value == 0 and f.name != "max_bin_bytes"):
                raise ConfigError(f"limit '{f.name}' must be positive, not {value!r}")
        if self.max_depth < 2:
            raise ConfigError("limit 'max_depth' must be at least 2 (envelope + roster)")

    @classmethod
    def from_mapping(cls, data: dict[str, Any], source: str = "[limits]") -> Limits:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(
                f"{source}: unknown limit(s) {', '.join(unknown)}; "
                f"known limits are: {', '.join(sorted(known))}"
            )
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            default = known[key].default
            if (
                isinstance(default, float)
                and isinstance(value, int)
                and not isinstance(value, bool)
            ):
                value = float(value)
            if type(value) is not type(default):
                raise ConfigError(
                    f"{source}: limit '{key}' must be {type(default).__name__}, got {value!r}"
                )
            kwargs[key] = value
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None


DEFAULT_LIMITS = Limits()
