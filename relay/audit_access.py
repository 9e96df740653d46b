"""Who reads the audit log, with which keys: the staff bundle, or the facility home.

Security staff read with their bundle (``--bundle FILE``): it carries the staff audit key
(to decrypt contents) and the relay's audit signing key as pinned when the bundle was
made (so a key swapped on the relay host does not fool ``audit verify``). The
administrator on the relay host may read with the facility home's keys instead; the
staff audit key there is protected by the CA passphrase (unless the home was made with
``--no-passphrase``, for demos and tests).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from relay.audit_keys import (
    load_signing_public,
    load_staff_private,
    staff_key_encrypted,
)
from relay.audit_read import AuditReader
from relay.bundle import load_bundle
from relay.errors import CredentialError
from relay.home import FacilityHome
from relay.identity import Role


@dataclass(frozen=True, slots=True)
class AuditAccess:
    """The keys a reader of the audit log holds, and who they are (for audit.read)."""

    reader_name: str
    """``staff:sam`` with a bundle, ``admin`` on the relay host."""
    signing_key: Ed25519PublicKey
    staff_key: X25519PrivateKey | None = field(repr=False)

    def reader(self, home: FacilityHome) -> AuditReader:
        return AuditReader(home.audit_dir, self.staff_key)


def audit_access(
    home: FacilityHome,
    bundle: Path | None,
    *,
    contents: bool,
    passphrase: Callable[[], bytes | None],
) -> AuditAccess:
    """The keys to read the log with. ``contents``: the staff audit key is needed too.

    ``passphrase`` is asked only when the home's staff key is protected and needed.
    """
    if bundle is not None:
        b = load_bundle(bundle)
        if b.role is not Role.STAFF or b.audit_key is None or b.audit_signing_key is None:
            raise CredentialError(
                f"{bundle} is not a staff bundle with the audit keys; ask the administrator "
                "for a staff bundle ('classroom-relay enroll staff NAME')"
            )
        return AuditAccess(f"staff:{b.name}", b.audit_signing_key, b.audit_key)
    home.require()
    signing = load_signing_public(home.root)
    staff_key = None
    if contents:
        secret = passphrase() if staff_key_encrypted(home.root) else None
        staff_key = load_staff_private(home.root, secret)
    who = os.environ.get("USER") or "administrator"
    return AuditAccess(f"admin:{who}", signing, staff_key)


__all__ = ["AuditAccess", "audit_access"]
