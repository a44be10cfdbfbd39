"""Channel names: what a valid one looks like, and its namespace.

A name matches ``[A-Za-z0-9_.:@-]{1,128}``; a name with a ':' has something after it. Its
namespace is the part before the first ':' (``room:lobby`` is in ``room``); a name
without one is in namespace ``default``. No name contains '{' or '}', so a name can be
a Redis hash tag as it is.
"""

from __future__ import annotations

import re

NAME = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")
DEFAULT_NAMESPACE = "default"


def is_channel_name(name: object) -> bool:
    return (
        isinstance(name, str)
        and NAME.fullmatch(name) is not None
        and not (":" in name and name.endswith(":"))
    )


def namespace_of(name: str) -> str:
    head, sep, _ = name.partition(":")
    return head if sep else DEFAULT_NAMESPACE


def personal_channel(namespace: str, user: str) -> str:
    """The personal channel of `user` in `namespace` (`user:alice`)."""
    return f"{namespace}:{user}"
