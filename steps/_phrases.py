"""How the feature files write things that steps read back."""

from __future__ import annotations

import codecs
import re

from harness.pki import CLIENT_KINDS

MiB = 1024 * 1024

# A regex group matching only the certificate kinds every scenario has, so that "the
# reference client" of another step is not mistaken for one.
KIND = "(?P<kind>" + "|".join(re.escape(kind) for kind in CLIENT_KINDS) + ")"


def unescape(text: str) -> str:
    """Feature files write a newline as \\n."""
    return codecs.decode(text, "unicode_escape")
