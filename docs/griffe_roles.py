"""A griffe extension for the API pages: the docstrings' reStructuredText, as Markdown.

The docstrings follow NumPy's style and cross-reference with Sphinx roles
(``:func:`name```, ``:class:`name```, ``.. math::``); mkdocstrings renders
Markdown, so each role becomes inline code and each math block a code block.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|func|mod|data|meth|attr|exc|obj):`~?([^`]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_MATH_BLOCK = re.compile(r"^\.\. math::\n((?:[ \t]+.*\n?|\n)+)", re.M)
_CITATION = re.compile(r"\[(\d+)\]_")


def markdown(text: str) -> str:
    """Roles to code spans, ``.. math::`` blocks to fenced blocks, ``[1]_`` to ``[1]``."""
    text = _ROLE.sub(r"`\1`", text)
    text = _MATH_ROLE.sub(r"`\1`", text)
    text = _CITATION.sub(r"[\1]", text)
    return _MATH_BLOCK.sub(
        lambda m: "```text\n" + "\n".join(line.strip() for line in m.group(1).strip("\n")
                                            .splitlines()) + "\n```\n\n", text)


class RolesToMarkdown(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)
