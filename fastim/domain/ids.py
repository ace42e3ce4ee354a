"""What a userId or groupId may be, wherever it comes from: a path, a header, a form field."""

from __future__ import annotations

import re

ID_MAX_LENGTH = 128  # generous for numeric and UUID ids, small enough to keep keys and frames bounded
# No whitespace (a trailing newline included), no '/', no control character (NUL, DEL, C1):
# ids become Redis keys, URL path segments and parts of log lines.
_ID = re.compile(rf"[^\s/\x00-\x1f\x7f-\x9f]{{1,{ID_MAX_LENGTH}}}")
# The same rule for documents (OpenAPI), where the length is stated apart.
ID_PATTERN = r"^[^\s/\x00-\x1f\x7f-\x9f]+$"


def is_valid_id(value: object) -> bool:
    """True when ``value`` is a whole, well-formed id: checked with fullmatch, so no newline slips past ``$``."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None
