"""Binary attributes with mutually exclusive groups: choosing them, and building valid label vectors.

StarGAN's domains are binary attributes (CelebA's Black_Hair, Male, ...; the `shapes` set's colour_red,
...). Some attributes exclude each other (one hair colour, one shape colour): such a group may have at
most one member set. Everything here is plain Python on lists and strings (no torch, no numpy) so that
`service/`, which must not import `trainer`, can copy `build_label` and `set_attribute` verbatim and
stay in step with training. The rules, in short:

- A label vector has one float per attribute, in the model's attribute order (the manifest's
  `attributes`), each 0.0 or 1.0.
- `build_label(on, ...)`: the named attributes are 1, all others 0; an unknown name or two names from
  one exclusive group is an error (the service answers 422 with the message).
- `set_attribute(label, name, value, ...)`: change one attribute of an existing label; switching on a
  group member switches its group peers off, so the result stays valid (this is how evaluation and the
  sample grids build "the same image, but red").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


class LabelError(ValueError):
    """An attribute selection or label that is not valid for the model's attributes and groups."""


def parse_groups(text: str) -> list[list[str]]:
    """'a|b|c;d|e' -> [['a', 'b', 'c'], ['d', 'e']] (the CLI's --exclusive-groups syntax)."""
    groups = [[name.strip() for name in group.split("|") if name.strip()] for group in text.split(";")]
    return [g for g in groups if g]


def format_groups(groups: Sequence[Sequence[str]]) -> str:
    """Inverse of `parse_groups`, so resolved groups can be stored in a string config field."""
    return ";".join("|".join(group) for group in groups)


def select_attributes(
    requested: str | Sequence[str], available: Sequence[str], named_groups: dict[str, Sequence[str]] | None = None
) -> list[str]:
    """Resolve a selection ('colour', 'colour_red,shape_circle', 'Black_Hair,Male') against a data set.

    A name may be an attribute or a named group (which expands to its members in the data set's order).
    The result keeps the order the user gave, since that order becomes the label order; duplicates and
    unknown names are errors, naming the choices.
    """
    names = [n.strip() for n in requested.split(",")] if isinstance(requested, str) else list(requested)
    names = [n for n in names if n]
    if not names:
        raise LabelError("no attributes selected")
    named_groups = named_groups or {}
    resolved: list[str] = []
    for name in names:
        if name in available:
            resolved.append(name)
        elif name in named_groups:
            resolved.extend(named_groups[name])
        else:
            choices = ", ".join(list(named_groups) + list(available))
            raise LabelError(f"unknown attribute {name!r}; choose from: {choices}")
    duplicates = sorted({n for n in resolved if resolved.count(n) > 1})
    if duplicates:
        raise LabelError(f"attributes selected twice: {duplicates}")
    return resolved


def restrict_groups(groups: Sequence[Sequence[str]], attributes: Sequence[str]) -> list[list[str]]:
    """The exclusive groups among the selected attributes (in label order); a group left with fewer
    than two selected members constrains nothing and is dropped."""
    chosen = set(attributes)
    restricted = []
    for group in groups:
        members = [a for a in attributes if a in set(group) and a in chosen]
        if len(members) >= 2:
            restricted.append(members)
    seen: set[str] = set()
    for group in restricted:
        if seen & set(group):
            raise LabelError(f"attribute(s) {sorted(seen & set(group))} are in more than one exclusive group")
        seen |= set(group)
    return restricted


def build_label(
    on: Iterable[str], attributes: Sequence[str], exclusive_groups: Sequence[Sequence[str]] = ()
) -> list[float]:
    """The label vector with exactly the named attributes set (1.0) and all others 0.0.

    Raises LabelError for an unknown name or for two names from one exclusive group.
    """
    on = list(on)
    unknown = [name for name in on if name not in attributes]
    if unknown:
        raise LabelError(f"unknown attribute(s) {unknown}; this model knows {list(attributes)}")
    for group in exclusive_groups:
        clash = [name for name in attributes if name in group and name in on]
        if len(clash) > 1:
            raise LabelError(f"attributes {clash} are mutually exclusive; choose at most one")
    return [1.0 if name in on else 0.0 for name in attributes]


def set_attribute(
    label: Sequence[float],
    name: str,
    value: bool,
    attributes: Sequence[str],
    exclusive_groups: Sequence[Sequence[str]] = (),
) -> list[float]:
    """`label` with attribute `name` set to `value`; setting a group member clears its group peers."""
    if name not in attributes:
        raise LabelError(f"unknown attribute {name!r}; this model knows {list(attributes)}")
    out = [float(v) for v in label]
    if value:
        for group in exclusive_groups:
            if name in group:
                for peer in group:
                    out[attributes.index(peer)] = 0.0
    out[attributes.index(name)] = 1.0 if value else 0.0
    return out


def is_valid_label(
    label: Sequence[float], attributes: Sequence[str], exclusive_groups: Sequence[Sequence[str]]
) -> bool:
    """0/1 entries, one per attribute, at most one set per exclusive group."""
    if len(label) != len(attributes) or any(v not in (0.0, 1.0) for v in label):
        return False
    return all(sum(label[attributes.index(a)] for a in group) <= 1 for group in exclusive_groups)


def domain_targets(
    label: Sequence[float], attributes: Sequence[str], exclusive_groups: Sequence[Sequence[str]] = ()
) -> list[list[float]]:
    """One target per attribute, as the reference's `create_labels` builds them for test images: a group
    member is switched on (its peers off), a free attribute is flipped. Some targets may equal `label`
    (the image's own hair colour); callers that measure changes skip those."""
    grouped = {a for group in exclusive_groups for a in group}
    targets = []
    for i, name in enumerate(attributes):
        value = True if name in grouped else not label[i]
        targets.append(set_attribute(label, name, value, attributes, exclusive_groups))
    return targets
