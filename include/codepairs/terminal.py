"""Text from crawled repositories made safe to show a person, in a terminal or a Markdown file.

A commit message, a diff, a branch or folder name can carry terminal escapes (``ESC [2J`` clears the
screen, ``ESC ] 0 ; … BEL`` retitles the window, OSC 8 forges links) and other control characters.
Written raw into a spot-check file or printed by the CLI, they act on the reader's terminal. Every
C0 control but newline and tab, DEL and every C1 control is shown as its ``\\xNN`` escape instead;
the stored data keeps the original text.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def visible(text: str) -> str:
    """``text`` with each control character except ``\\n`` and ``\\t`` written as ``\\xNN``."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", text)
