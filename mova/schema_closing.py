"""Objects closed by default: a JSON Schema object allows only the keys it declares unless it says otherwise.

JSON Schema leaves an object open (any extra key is valid), so a grammar built from it lets the model
write keys until ``max_new_tokens`` runs out. Structured-output engines users know (OpenAI structured
outputs, xgrammar's strict mode) close objects instead; so do we, before the grammar is compiled. An
object opens only by saying so: ``"additionalProperties": true`` or a schema for the extra values.

Objects are closed wherever a JSON value sits (the root, property values, array items,
``additionalProperties`` values), in each ``anyOf``/``oneOf`` branch, and in ``$defs`` used by ``$ref``.
The parts an object is built from (``allOf`` branches, a ``$ref`` beside other keywords) are not closed
one by one: JSON Schema would then forbid in each part the keys the other parts declare. The object
they make up is closed to the union of the keys its parts declare (lifted into its ``properties``),
which is what ``unevaluatedProperties: false`` means; llguidance does not implement that keyword.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

# Where a keyword holds schemas: of nested JSON values, of definitions, of parts of this same value
# (all must hold), or of alternatives for it (one must hold).
_VALUE, _DEFINITION, _PART, _ALTERNATIVE = "value", "definition", "part", "alternative"
_SINGLE = {"additionalProperties": _VALUE, "items": _VALUE, "contains": _VALUE, "additionalItems": _VALUE}
_LISTS = {"items": _VALUE, "prefixItems": _VALUE, "allOf": _PART, "anyOf": _ALTERNATIVE, "oneOf": _ALTERNATIVE}
_MAPS = {"properties": _VALUE, "patternProperties": _VALUE, "$defs": _DEFINITION, "definitions": _DEFINITION}
_OBJECT_KEYWORDS = ("properties", "patternProperties", "required")
# Keywords that say nothing about the value (annotations, and where definitions are kept).
_INERT = frozenset(
    {"title", "description", "default", "examples", "$comment", "$schema", "$id", "$defs", "definitions"}
)


def close_objects(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``schema`` whose objects allow only their declared keys, unless they say
    ``additionalProperties`` themselves (see the module docstring). ``schema`` is not changed."""
    return _Closer(schema).walk(schema, "#", owner=True)


@dataclass
class _Keys:
    """What the conjoined parts of one object schema declare."""

    names: dict[str, None] = field(default_factory=dict)  # property names, first declared first
    patterns: dict[str, None] = field(default_factory=dict)  # patternProperties
    is_object: bool = False  # some part says type object or declares object keywords
    stated: bool = False  # some part states additionalProperties (closed or open): left as written
    unknown: bool = False  # a $ref that cannot be followed here: left as written

    def add(self, other: "_Keys") -> None:
        self.names.update(other.names)
        self.patterns.update(other.patterns)
        self.is_object |= other.is_object
        self.stated |= other.stated
        self.unknown |= other.unknown

    @property
    def closable(self) -> bool:
        return self.is_object and not self.stated and not self.unknown


class _Closer:
    """Closes one schema. ``owner`` below: the node is a whole JSON value (closed in place), not a
    part of one."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        # Definitions some $ref uses as a part: they stay open where defined, and each place that
        # uses them is closed instead. The others are closed where defined, so a plain {"$ref"} needs
        # nothing (llguidance refuses keywords beside a circular $ref).
        self.open: set[str] = set()
        while True:
            uses: set[str] = set()
            self._scan(root, "#", owner=True, lifted=False, uses=uses)
            if uses <= self.open:
                break
            self.open |= uses

    def walk(self, node: Any, path: str, *, owner: bool) -> Any:
        """``node`` with its nested values closed; closed itself when ``owner``."""
        if not isinstance(node, dict):
            return node
        out = dict(node)
        common = self.keys(node, alternatives=False) if owner else _Keys()
        alternatives = False
        for key, at, child, kind in _children(node):
            child_path = _join(path, key, at)
            if kind == _ALTERNATIVE:
                alternatives = True
                new = self.walk(child, child_path, owner=False)
                new = self.sealed(new, common) if owner else new
            else:
                new = self.walk(child, child_path, owner=self._owns(kind, child_path, owner))
            _put(out, node, key, at, new)
        # With alternatives, each branch is one way the whole value looks and is closed on its own,
        # with the keys common to all; the node itself would forbid the branches' keys.
        return self.sealed(out, _Keys()) if owner and not alternatives else out

    def _owns(self, kind: str, path: str, owner: bool) -> bool:
        if kind == _VALUE:
            return True
        if kind == _DEFINITION:
            return path not in self.open
        return False if kind == _PART else owner

    def _scan(self, node: Any, path: str, *, owner: bool, lifted: bool, uses: set[str]) -> None:
        """Add to ``uses`` the $refs under ``node`` whose target will be a part (see ``open``)."""
        if not isinstance(node, dict):
            return
        ref = node.get("$ref")
        if isinstance(ref, str) and (not owner or lifted or not _plain_ref(node)):
            uses.add(ref)
        closable = owner and self.keys(node, alternatives=False).closable
        for key, at, child, kind in _children(node):
            child_path = _join(path, key, at)
            child_owner = self._owns(kind, child_path, owner)
            self._scan(child, child_path, owner=child_owner, lifted=kind == _ALTERNATIVE and closable, uses=uses)

    def sealed(self, node: Any, common: _Keys) -> Any:
        """``node`` closed to the keys it and ``common`` (those of the node whose alternative it is)
        declare, lifted into its ``properties`` so that ``additionalProperties`` sees them, where
        nothing says otherwise."""
        if not isinstance(node, dict) or (_plain_ref(node) and node["$ref"] not in self.open and not common.closable):
            return node  # a definition closed where it is defined
        keys = _Keys()
        keys.add(common)
        keys.add(self.keys(node, alternatives=True))
        if not keys.closable or not _may_be_object(node):
            return node
        out = dict(node)
        own = out.get("properties") if isinstance(out.get("properties"), dict) else {}
        if any(name not in own for name in keys.names):
            out["properties"] = {**own, **{name: {} for name in keys.names if name not in own}}
        own_patterns = out.get("patternProperties") if isinstance(out.get("patternProperties"), dict) else {}
        if any(pattern not in own_patterns for pattern in keys.patterns):
            lifted = {pattern: {} for pattern in keys.patterns if pattern not in own_patterns}
            out["patternProperties"] = {**own_patterns, **lifted}
        out["additionalProperties"] = False
        return out

    def keys(self, node: Any, *, alternatives: bool, seen: frozenset[str] = frozenset()) -> _Keys:
        """The keys ``node`` and its conjoined parts (``allOf``, ``$ref``; with ``alternatives``, every
        ``anyOf``/``oneOf`` branch too) declare for the one object they describe."""
        keys = _Keys()
        if not isinstance(node, dict):
            return keys
        types = _types(node)
        keys.is_object = (types is not None and "object" in types) or any(key in node for key in _OBJECT_KEYWORDS)
        keys.stated = "additionalProperties" in node
        if isinstance(node.get("properties"), dict):
            keys.names.update(dict.fromkeys(node["properties"]))
        if isinstance(node.get("patternProperties"), dict):
            keys.patterns.update(dict.fromkeys(node["patternProperties"]))
        for _, _, part, kind in _children(node):
            if kind == _PART or (alternatives and kind == _ALTERNATIVE):
                keys.add(self.keys(part, alternatives=True, seen=seen))
        ref = node.get("$ref")
        if isinstance(ref, str) and ref not in seen:
            target = self.resolve(ref)
            if target is None:
                keys.unknown = True
            else:
                keys.add(self.keys(target, alternatives=True, seen=seen | {ref}))
        return keys

    def resolve(self, ref: str) -> Any:
        """The schema a local ``$ref`` (``#``, ``#/$defs/Name``) points at; None for any other."""
        if ref != "#" and not ref.startswith("#/"):
            return None
        node: Any = self.root
        for token in ref[2:].split("/") if ref != "#" else []:
            token = token.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and token in node:
                node = node[token]
            elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                node = node[int(token)]
            else:
                return None
        return node


def _children(node: dict[str, Any]) -> Iterator[tuple[str, str | int | None, Any, str]]:
    """(keyword, name or index, schema, kind) of every schema directly inside ``node``."""
    for key, kind in _SINGLE.items():
        if isinstance(node.get(key), dict):
            yield key, None, node[key], kind
    for key, kind in _LISTS.items():
        if isinstance(node.get(key), list):
            for index, item in enumerate(node[key]):
                yield key, index, item, kind
    for key, kind in _MAPS.items():
        if isinstance(node.get(key), dict):
            for name, value in node[key].items():
                yield key, name, value, kind


def _put(out: dict[str, Any], node: dict[str, Any], key: str, at: str | int | None, value: Any) -> None:
    """``out[key][at] = value``, copying the container the first time (``node`` is never changed)."""
    if at is None:
        out[key] = value
        return
    if out[key] is node[key]:
        out[key] = list(node[key]) if isinstance(node[key], list) else dict(node[key])
    out[key][at] = value


def _join(path: str, key: str, at: str | int | None) -> str:
    tokens = [key] if at is None else [key, str(at)]
    return "/".join([path, *(token.replace("~", "~0").replace("/", "~1") for token in tokens)])


def _plain_ref(node: dict[str, Any]) -> bool:
    """A ``$ref`` with nothing beside it that constrains the value: it stands for its target as a whole."""
    return "$ref" in node and all(key == "$ref" or key in _INERT for key in node)


def _types(node: dict[str, Any]) -> list[str] | None:
    value = node.get("type")
    if isinstance(value, str):
        return [value]
    return list(value) if isinstance(value, list) else None


def _may_be_object(node: dict[str, Any]) -> bool:
    """Whether ``node`` lets an object through by its own ``type`` (no type: yes)."""
    types = _types(node)
    return types is None or "object" in types


__all__ = ["close_objects"]
