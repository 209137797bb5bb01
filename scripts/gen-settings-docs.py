#!/usr/bin/env python3
"""Regenerates the settings table in docs/settings.md (between its
settings-table markers) and conf/permaproxy.example.toml from
src/config/settings.rs, the single source of truth for settings.

Run it after adding or changing a setting; `cargo test --lib` checks that both
documents list every setting.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SETTINGS = ROOT / "src/config/settings.rs"
DOCS = ROOT / "docs/settings.md"
START = "<!-- settings-table:start"
END = "<!-- settings-table:end -->"
EXAMPLE = ROOT / "conf/permaproxy.example.toml"

ENTRY = re.compile(
    r'\b(s|secret)\(\s*"([A-Z0-9_]+)",\s*(?:"((?:[^"\\]|\\.)*)",\s*)?"((?:[^"\\]|\\.)*)"\s*\)'
)


def settings():
    text = SETTINGS.read_text()
    body = text[text.index("pub const SETTINGS") :]
    out = []
    for kind, name, default, help_text in ENTRY.findall(body):
        secret = kind == "secret"
        out.append((name, "" if secret else default, help_text, secret))
    if not out:
        sys.exit("no settings found in src/config/settings.rs")
    return out


def docs_table(items):
    rows = ["| Setting | Default | What it does |", "|---|---|---|"]
    for name, default, help_text, secret in items:
        shown = f"`{default}`" if default else "—"
        extra = " (secret: redacted in output)" if secret else ""
        rows.append(f"| `{name}` | {shown} | {help_text.replace('|', '&#124;')}{extra} |")
    return "\n".join(rows)


def update_docs(items):
    text = DOCS.read_text()
    start = text.index("\n", text.index(START)) + 1
    end = text.index(END, start)
    DOCS.write_text(text[:start] + docs_table(items) + "\n" + text[end:])


def update_example(items):
    text = EXAMPLE.read_text()
    head = text[: text.index("\n\n") + 2]
    blocks = [f'# {h}\n# {n.lower()} = "{d}"\n' for n, d, h, _ in items]
    EXAMPLE.write_text(head + "\n".join(blocks))


def main():
    items = settings()
    update_docs(items)
    update_example(items)
    print(
        f"{len(items)} settings written to {DOCS.relative_to(ROOT)} and {EXAMPLE.relative_to(ROOT)}"
    )


if __name__ == "__main__":
    main()
