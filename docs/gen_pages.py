"""Pages made at build time (mkdocs-gen-files), so they cannot drift from the code.

- ``configuration.md``: every config key, its type and default, read from the
  dataclasses of :mod:`pipeline.config` (the one place defaults live);
- ``benchmarks.md`` and ``shipped-bases.md``: ``benchmarks/README.md`` and
  ``basis/README.md`` with the figures they show;
- ``reference/*.md``: one API page per module, rendered by mkdocstrings.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import sys
import typing
from pathlib import Path

import mkdocs_gen_files
import yaml

from pipeline.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from griffe_roles import markdown as rst_to_markdown  # noqa: E402  (beside this file)

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "flows", "evaluation")
NOT_DOCUMENTED = {"pipeline.__init__", "flows.__init__", "evaluation.__init__"}


def attribute_notes(cls: type) -> tuple[str, dict[str, str]]:
    """A dataclass docstring's prose and, from a NumPy ``Attributes`` section, each key's text."""
    doc = inspect.getdoc(cls) or ""
    prose, _, section = doc.partition("\nAttributes\n----------\n")
    notes: dict[str, str] = {}
    key = None
    for line in section.splitlines():
        if line and not line.startswith(" "):
            if line.strip().endswith("-" * 3) or not re.match(r"^\w+ :", line):
                key = None  # the next section (References, ...) or not an attribute
                continue
            key = line.split(" :")[0]
            notes[key] = ""
        elif key:
            notes[key] = (notes[key] + " " + line.strip()).strip()
    return rst_to_markdown(prose.strip()), {k: rst_to_markdown(v) for k, v in notes.items()}


def type_name(hint: typing.Any) -> str:
    """``Literal['a', 'b'] | None`` -> ``a | b | null``, as a YAML writer reads it."""
    if typing.get_origin(hint) is typing.Literal:
        return " \\| ".join(f"`{value}`" for value in typing.get_args(hint))
    args = typing.get_args(hint)
    if args and type(None) in args:
        return " \\| ".join(type_name(arg) for arg in args if arg is not type(None)) + \
            " \\| `null`"
    return getattr(hint, "__name__", str(hint))


def section(cls: type, prefix: str, out: typing.TextIO) -> None:
    """One table per dataclass, nested sections after it."""
    hints = typing.get_type_hints(cls)
    prose, notes = attribute_notes(cls)
    out.write(f"## `{prefix.rstrip('.') or 'top level'}`\n\n{prose}\n\n")
    out.write("| key | type | default | meaning |\n|---|---|---|---|\n")
    nested = []
    for item in dataclasses.fields(cls):
        hint = hints[item.name]
        if dataclasses.is_dataclass(hint):
            nested.append((hint, f"{prefix}{item.name}."))
            anchor = f"{prefix}{item.name}".replace(".", "")
            out.write(f"| `{prefix}{item.name}` | section | | [below](#{anchor}) |\n")
            continue
        default = item.default if item.default is not dataclasses.MISSING else None
        shown = "`null`" if default is None else f"`{yaml.safe_dump(default).splitlines()[0]}`"
        note = notes.get(item.name, "").replace("|", "\\|")
        out.write(f"| `{prefix}{item.name}` | {type_name(hint)} | {shown} | {note} |\n")
    out.write("\n")
    for hint, nested_prefix in nested:
        section(hint, nested_prefix, out)


def configuration_page() -> None:
    with mkdocs_gen_files.open("configuration.md", "w") as out:
        out.write(
            "# Configuration\n\n"
            "Every key a config may set, with its type and default, generated from the\n"
            "dataclasses of `pipeline/config.py` when these pages are built. A YAML file\n"
            "sets only what differs; `--set KEY=VALUE` overrides one key on the command line;\n"
            "`--print-config` prints the resolved config. Unknown keys are refused with the\n"
            "nearest known one suggested.\n\n"
            "Every default, as `--print-config` prints it for an empty config:\n\n"
            "```yaml\n" + yaml.safe_dump(dataclasses.asdict(Config()), sort_keys=False) +
            "```\n\n")
        section(Config, "", out)


def copied_pages() -> None:
    for source, page in (("benchmarks/README.md", "benchmarks.md"),
                         ("basis/README.md", "shipped-bases.md")):
        text = (ROOT / source).read_text()
        with mkdocs_gen_files.open(page, "w") as out:
            out.write(text)
        mkdocs_gen_files.set_edit_path(page, f"../{source}")
        for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
            with mkdocs_gen_files.open(image, "wb") as out:
                out.write((ROOT / Path(source).parent / image).read_bytes())


def reference_pages() -> None:
    index = ["# API reference\n\nOne page per module, from its docstrings. `pipeline` holds the "
             "stages and the commands, `flows` the Dask graphs, `evaluation` the measurement.\n"]
    for package in PACKAGES:
        index.append(f"\n## `{package}`\n\n")
        for path in sorted((ROOT / package).glob("*.py")):
            module = f"{package}.{path.stem}"
            if module in NOT_DOCUMENTED:
                continue
            page = f"reference/{module}.md"
            summary = (ast.get_docstring(ast.parse(path.read_text())) or "").split("\n")[0]
            index.append(f"- [`{module}`]({module}.md): {rst_to_markdown(summary)}\n")
            with mkdocs_gen_files.open(page, "w") as out:
                out.write(f"# `{module}`\n\n::: {module}\n")
            mkdocs_gen_files.set_edit_path(page, f"../{package}/{path.name}")
    with mkdocs_gen_files.open("reference/index.md", "w") as out:
        out.writelines(index)



configuration_page()
copied_pages()
reference_pages()
