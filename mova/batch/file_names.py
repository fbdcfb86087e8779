"""File names as JSON text: any byte string a file system allows, in records that must be valid UTF-8.

Python hands a name's undecodable bytes over as surrogate escapes (PEP 383), and ``os.fsencode`` gives the
exact bytes back; JSON text cannot hold those escapes. So a record shows such a name with U+FFFD in place
of each undecodable byte (``readable``) and carries the exact bytes as base64 beside it (``exact_base64``):
``base64 -d`` of it is the name the file system knows.
"""

import base64
import os


def name_bytes(name: str) -> bytes:
    """The bytes of a name as the file system has them."""
    try:
        return os.fsencode(name)
    except UnicodeEncodeError:  # a surrogate that no file system decode makes (from a prompts file, say)
        return name.encode("utf-8", errors="replace")


def is_text(name: str) -> bool:
    """Whether ``name`` is valid Unicode text (no surrogate escapes)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def readable(name: str) -> str:
    """``name`` as valid text: undecodable bytes become U+FFFD (a name that is valid UTF-8 is unchanged)."""
    return name if is_text(name) else name_bytes(name).decode("utf-8", errors="replace")


def exact_base64(name: str) -> str | None:
    """Base64 of the name's bytes when it is not valid UTF-8 (``readable`` lost some), else None."""
    return None if is_text(name) else base64.b64encode(name_bytes(name)).decode("ascii")


__all__ = ["exact_base64", "is_text", "name_bytes", "readable"]
