"""A compiled subset of FHIRPath, enough to evaluate search-parameter expressions.

Search-parameter definitions say *where* a parameter's values live with a FHIRPath expression
(`Observation.subject.where(resolve() is Patient)`, `(Observation.value as Quantity)`,
`Patient.telecom.where(system='phone')`). Evaluating a general FHIRPath engine on every write would
dominate the write path, so each expression is compiled once into a chain of small step functions
over the resource's JSON. Expressions outside the subset raise `Unsupported`; the parameters that use
them are left out of the server (and of its CapabilityStatement) rather than half-implemented.

An evaluated node is `(value, type_name)`: `type_name` is the FHIR type where the JSON tells it
(the suffix of a choice element such as `valueQuantity`), else None.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

Node = tuple[Any, str | None]
Step = Callable[[list[Node]], list[Node]]


class Unsupported(ValueError):
    """The expression uses FHIRPath this compiler does not implement."""


_TOKEN = re.compile(r"\s*(\(|\)|\.|\||=|!=|'(?:[^'\\]|\\.)*'|[A-Za-z_][A-Za-z0-9_\-]*|\S)")


def _tokens(text: str) -> list[str]:
    pos, out = 0, []
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            break
        if m.group(1).strip():
            out.append(m.group(1))
        pos = m.end()
    return out


def _children(nodes: list[Node], name: str) -> list[Node]:
    out: list[Node] = []
    for value, _ in nodes:
        if not isinstance(value, dict):
            continue
        if name in value:
            _extend(out, value[name], None)
            continue
        # A choice element (`value` → valueQuantity, valueString...): the suffix is the type.
        for key, item in value.items():
            if key.startswith(name) and len(key) > len(name) and key[len(name)].isupper():
                _extend(out, item, key[len(name) :])
    return out


def _extend(out: list[Node], value: Any, type_name: str | None) -> None:
    if isinstance(value, list):
        out.extend((v, type_name) for v in value if v is not None)
    elif value is not None:
        out.append((value, type_name))


def _reference_type(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    ref = value.get("reference")
    if isinstance(ref, str) and "/" in ref:
        parts = ref.split("/")
        # Relative "Patient/1", versioned "Patient/1/_history/2" or absolute ".../Patient/1".
        if len(parts) >= 4 and parts[-2] == "_history":
            return parts[-4]
        return parts[-2]
    return value.get("type") if isinstance(value.get("type"), str) else None


def _is_type(type_name: str | None, wanted: str) -> bool:
    return type_name is not None and type_name.lower() == wanted.lower()


class _Parser:
    def __init__(self, text: str, root: str | None) -> None:
        self.tokens = _tokens(text)
        self.pos = 0
        self.root = root
        self.text = text

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            raise Unsupported(f"expected {expected!r} in {self.text!r}")
        self.pos += 1
        return tok

    def parse(self) -> Step:
        step = self.union()
        if self.peek() is not None:
            raise Unsupported(f"unexpected {self.peek()!r} in {self.text!r}")
        return step

    def union(self) -> Step:
        branches = [self.path()]
        while self.peek() == "|":
            self.take("|")
            branches.append(self.path())
        if len(branches) == 1:
            return branches[0]

        def union(nodes: list[Node]) -> list[Node]:
            out: list[Node] = []
            for branch in branches:
                out.extend(branch(nodes))
            return out

        return union

    def path(self) -> Step:
        steps: list[Step] = []
        if self.peek() == "(":
            self.take("(")
            steps.append(self.union())
            self.take(")")
        else:
            name = self.take()
            if not (self.root and name == self.root) and name not in ("Resource", "DomainResource"):
                steps.append(self.member(name))
        while True:
            tok = self.peek()
            if tok == ".":
                self.take(".")
                steps.append(self.invocation())
            elif tok == "as":
                self.take("as")
                wanted = self.take()
                steps.append(self.filter_type(wanted))
            else:
                break
        return _chain(steps)

    def member(self, name: str) -> Step:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
            raise Unsupported(f"bad element name {name!r}")

        def member(nodes: list[Node]) -> list[Node]:
            return _children(nodes, name)

        return member

    def filter_type(self, wanted: str) -> Step:
        def as_type(nodes: list[Node]) -> list[Node]:
            return [n for n in nodes if _is_type(n[1], wanted) or (n[1] is None and _shape_is(n[0], wanted))]

        return as_type

    def invocation(self) -> Step:
        name = self.take()
        if self.peek() != "(":
            return self.member(name)
        self.take("(")
        if name in ("as", "ofType"):
            wanted = self.take()
            self.take(")")
            return self.filter_type(wanted)
        if name == "where":
            step = self.where()
            self.take(")")
            return step
        if name == "extension":
            url = self.take()
            self.take(")")
            return _chain([self.member("extension"), _field_equals("url", url.strip("'"))])
        raise Unsupported(f"function {name}() in {self.text!r}")

    def where(self) -> Step:
        first = self.take()
        if first == "resolve":
            self.take("(")
            self.take(")")
            self.take("is")
            wanted = self.take()
            return lambda nodes: [n for n in nodes if _reference_type(n[0]) == wanted]
        if self.peek() == "=":
            self.take("=")
            literal = self.take()
            if not literal.startswith("'"):
                raise Unsupported(f"where() comparing with {literal!r}")
            return _field_equals(first, literal[1:-1])
        raise Unsupported(f"where({first} ...) in {self.text!r}")


def _field_equals(field: str, literal: str) -> Step:
    def where(nodes: list[Node]) -> list[Node]:
        return [n for n in nodes if isinstance(n[0], dict) and n[0].get(field) == literal]

    return where


def _shape_is(value: Any, wanted: str) -> bool:
    """Type test for an element whose JSON does not name its type (not a choice element)."""
    wanted = wanted.lower()
    if wanted in ("quantity", "age", "duration", "distance", "count"):
        return isinstance(value, dict) and "value" in value
    if wanted == "codeableconcept":
        return isinstance(value, dict) and ("coding" in value or "text" in value)
    if wanted == "reference":
        return isinstance(value, dict) and ("reference" in value or "identifier" in value)
    if wanted == "period":
        return isinstance(value, dict) and ("start" in value or "end" in value)
    if wanted in ("date", "datetime", "instant", "string", "uri", "code"):
        return isinstance(value, str)
    return False


def _chain(steps: list[Step]) -> Step:
    if len(steps) == 1:
        return steps[0]

    def chain(nodes: list[Node]) -> list[Node]:
        for step in steps:
            nodes = step(nodes)
            if not nodes:
                return nodes
        return nodes

    return chain


def compile_path(expression: str, resource_type: str | None = None) -> Callable[[Any], list[Node]]:
    """Compile `expression`; the result maps a resource (or element) to its matching nodes."""
    if not expression.strip():
        raise Unsupported("empty expression")
    step = _Parser(expression, resource_type).parse()

    def evaluate(resource: Any) -> list[Node]:
        return step([(resource, resource_type)])

    return evaluate


def values(nodes: Iterable[Node]) -> list[Any]:
    return [v for v, _ in nodes]
