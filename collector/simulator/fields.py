"""The ``fields=`` grammar: ``id,insights.metric(reach,views).breakdown(x),owner{id,username}``."""

from __future__ import annotations

import dataclasses
import functools

from collector.simulator import apierror


@dataclasses.dataclass
class Field:
    """One requested field with its ``.modifier(args)`` calls and ``{sub,fields}``."""

    name: str
    position: int
    modifiers: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    children: list[Field] | None = None


def _is_name_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, detail: str) -> apierror.ApiError:
        return apierror.syntax_error(detail, self.pos, self.text)

    def name(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and _is_name_char(self.text[self.pos]):
            self.pos += 1
        if start == self.pos:
            found = self.text[self.pos] if self.pos < len(self.text) else "end of string"
            raise self.fail(f'Expected a field name instead of "{found}".')
        return self.text[start : self.pos]

    def skip_spaces(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] == " ":
            self.pos += 1

    def args(self) -> list[str]:
        # The opening parenthesis has been consumed; arguments may not nest.
        end = self.text.find(")", self.pos)
        if end < 0:
            raise self.fail('Expected ")".')
        raw = self.text[self.pos : end]
        self.pos = end + 1
        return [a.strip() for a in raw.split(",") if a.strip()]

    def field_list(self, closing: str | None) -> list[Field]:
        out: list[Field] = []
        seen: set[str] = set()
        while True:
            self.skip_spaces()
            start = self.pos
            field = Field(self.name(), start)
            while self.pos < len(self.text) and self.text[self.pos] == ".":
                self.pos += 1
                mod = self.name()
                if self.pos >= len(self.text) or self.text[self.pos] != "(":
                    raise self.fail('Expected "(".')
                self.pos += 1
                field.modifiers[mod] = self.args()
            if self.pos < len(self.text) and self.text[self.pos] == "{":
                self.pos += 1
                field.children = self.field_list("}")
            if field.name in seen:
                raise apierror.duplicate_field(field.name, start, self.text)
            seen.add(field.name)
            out.append(field)
            self.skip_spaces()
            if self.pos >= len(self.text):
                if closing is not None:
                    raise self.fail(f'Expected "{closing}".')
                return out
            ch = self.text[self.pos]
            if ch == ",":
                self.pos += 1
                continue
            if closing is not None and ch == closing:
                self.pos += 1
                return out
            raise self.fail(f'Expected end of string instead of "{ch}".')


@functools.lru_cache(maxsize=4096)
def _parse_cached(text: str) -> tuple[Field, ...]:
    return tuple(_Parser(text).field_list(None))


def parse(text: str) -> list[Field]:
    """Parse a ``fields`` value (raises the Graph 2500 syntax error); results are shared."""
    if not text.strip():
        return []
    # Clients repeat the same few field lists; parsed fields are never mutated.
    return list(_parse_cached(text))
