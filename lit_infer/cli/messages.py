"""jsonargparse's error messages, digested into the one line a user can act on.

jsonargparse reports a bad value as a tree: every ``Union`` (``model:`` is ``PredictionModule | None``) lists each
alternative it tried, so a typo three levels down becomes 10-20 lines. The tree's deepest branch is the real error;
the key leading to it is the key the user typed. Pure functions over the message text, tested on jsonargparse's own
output (tests/cli/test_messages.py), so that an upgrade that rewords it fails there, not in front of a user.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass

_KEY = re.compile(r'^Parser key "([^"]+)":')
_CLASS = re.compile(r"^- Problem with given class_path '([^']+)':")
_GIVEN = re.compile(r"^Given value: (.*)$")
_UNKNOWN = re.compile(
    r"^(?:- )?(?:(?:Option|Key) '([^']+)' is not (?:accepted|expected)"
    r"|Group '([\w.]+)' does not accept option '([^']+)'|unrecognized arguments: --([\w.]+))"
)
_EXPECTED = re.compile(r"^(?:- )?Expected a (.+?)(?:\. Got value: (.*))?$")
_NOT_SUBCLASS = re.compile(r"Import path ([\w.]+) does not correspond to a subclass of (\w+)")
_NO_IMPORT = re.compile(r"^(?:No module named '([\w.]+)'|module '([\w.]+)' has no attribute '(\w+)')")
_NOISE = re.compile(
    r"^(Does not validate against any of the Union subtypes|Subtypes: |Errors:$|Given value type: "
    r"|- Expected a <class 'NoneType'>|- Expected a None)"
)


@dataclass
class Problem:
    """One user mistake: the key as typed (``model.net.width``), the value given, what is wrong, and the fix."""

    key: str
    value: str | None
    problem: str
    fix: str = ""

    def lines(self) -> list[str]:
        head = f"{self.key}={self.value!r}" if self.value is not None else self.key
        body = f"{head}: {self.problem}" if head else self.problem
        return [body + (f". {self.fix}" if self.fix else "")]


@dataclass
class _Leaf:
    keys: tuple[str, ...]
    classes: tuple[str, ...]
    text: str
    given: str | None


def typed_key(*parts: str) -> str:
    """``model.init_args.net.init_args.width`` as a user can type it: ``model.net.width`` (jsonargparse takes both)."""
    return ".".join(p for part in parts for p in part.split(".") if p not in ("init_args", "dict_kwargs"))


def suggest(word: str, options: Iterable[str]) -> str:
    """``Did you mean 'width'?`` when an option is close to ``word``, else an empty string."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"Did you mean {close[0]!r}?" if close else ""


def _leaves(message: str) -> list[_Leaf]:
    """Every line of the tree that says something, with the keys and class paths above it."""
    stack: list[tuple[int, str, str]] = []  # (indent, kind, name): kind "key" or "class"
    leaves: list[_Leaf] = []
    givens: dict[int, str] = {}
    for raw in message.splitlines():
        text = raw.strip()
        if not text:
            continue
        indent = len(raw) - len(raw.lstrip())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key, cls, given = _KEY.match(text), _CLASS.match(text), _GIVEN.match(text)
        if key:
            stack.append((indent, "key", key.group(1)))
            text = text[key.end() :].strip()  # 'Parser key "config": File does not exist: ...' on one line
        elif cls:
            stack.append((indent, "class", cls.group(1)))
            continue
        elif given:
            givens[len(stack)] = given.group(1)
            continue
        elif _NOISE.match(text):
            continue
        if text:
            keys = tuple(name for _, kind, name in stack if kind == "key")
            classes = tuple(name for _, kind, name in stack if kind == "class")
            leaves.append(_Leaf(keys, classes, text, None))
    # "Given value" closes a key's block, after its leaves: attach it to the deepest leaves of that block.
    for leaf in leaves:
        for depth in range(len(leaf.keys) + len(leaf.classes), -1, -1):
            if depth in givens:
                leaf.given = givens[depth]
                break
    return leaves


def digest(message: str, options_of: Callable[[str], list[str]], root_options: Iterable[str]) -> Problem:
    """The one problem behind jsonargparse's ``message``.

    Args:
        message: the text jsonargparse passes to ``ArgumentParser.error``.
        options_of: the option names of a class path (for did-you-mean inside a class).
        root_options: the top-level keys (``writer.format``, ``trainer.devices``...).
    """
    first = message.strip().splitlines()[0] if message.strip() else message
    if first.startswith("unrecognized arguments:"):
        return _unrecognized(first.split(":", 1)[1].split(), root_options)
    if first.startswith("Problems parsing config"):
        return Problem("--config", None, first.split(":", 1)[1].strip())  # the caller adds the file and line
    leaves = _leaves(message)
    if not leaves:
        return Problem("", None, first)
    deepest = max(len(leaf.keys) + len(leaf.classes) for leaf in leaves)
    leaves = [leaf for leaf in leaves if len(leaf.keys) + len(leaf.classes) == deepest]
    leaf = leaves[0]
    key = typed_key(*leaf.keys)
    cls = leaf.classes[-1] if leaf.classes else None
    if (unknown := _UNKNOWN.match(leaf.text)) is not None:
        group = f"{unknown.group(2)}.{unknown.group(3)}" if unknown.group(2) else None
        name = unknown.group(1) or group or unknown.group(4)
        if name == "ckpt_path":
            return ckpt_path_problem()
        if name == "class_path" and cls:  # {class_path: X, source: ...}: the options were meant as X's init_args
            return Problem(
                key,
                None,
                f"options beside class_path {cls} need an init_args: level",
                f"Put them under {key}.init_args, or drop class_path (the options alone go to {cls})",
            )
        if not cls and not leaf.keys:  # a top-level key: say which section it belongs to
            return Problem(name, None, "no such top-level option", _section_of(name, options_of, root_options))
        return _no_such_option(leaf.keys, name, cls, options_of(cls) if cls else [])
    if (wrong := _NOT_SUBCLASS.search(leaf.text)) is not None:
        return _not_a_class(key, wrong.group(1), wrong.group(2))
    if cls and _NO_IMPORT.match(leaf.text):
        return Problem(
            typed_key(*leaf.keys, "class_path"),
            cls,
            f"cannot be imported ({leaf.text})",
            "Check the spelling; a module of your own must be importable from the working directory",
        )
    expected = [m for m in (_EXPECTED.match(lf.text) for lf in leaves) if m is not None]
    if expected:
        names = [_type_name(m.group(1)) for m in expected]
        choices = [n[len("one of ") :] for n in names if n.startswith("one of ")]
        others = [n for n in names if not n.startswith("one of ")]
        kinds = " or ".join(dict.fromkeys([*others, *(["one of " + ", ".join(choices)] if choices else [])]))
        value = next((m.group(2) for m in expected if m.group(2) is not None), leaf.given)
        return Problem(key, value, f"expected {kinds}")
    return Problem(key, leaf.given, leaf.text.lstrip("- "))


def _no_such_option(keys: tuple[str, ...], name: str, cls: str | None, options: list[str]) -> Problem:
    """An unknown option of a class, or of one of its groups (``decoding.exat``): did-you-mean among its siblings;
    an option that moved into a group (``data.exact``) names its new key."""
    key = typed_key(*keys, name)
    group, _, leaf = name.rpartition(".")
    siblings = [o.rpartition(".")[2] for o in options if o.rpartition(".")[0] == group]
    where = f" of {cls}" + (f" (group {group})" if group else "") if cls else ""
    moved = [o for o in options if "." in o and o.rpartition(".")[2] == leaf and not group]
    if moved:
        section = key.rpartition(".")[0]
        return Problem(key, None, f"no such option{where}", f"It is in a group now: {section}.{moved[0]}")
    hint = suggest(leaf, siblings) or (f"Options{where}: {', '.join(siblings)}" if siblings else "")
    return Problem(key, None, f"no such option{where}", hint)


SECTION_CLASSES = {
    "data": "lit_infer.data.datamodule.ImageDataModule",
    "model": "lit_infer.modules.classifier.ImageClassifier",
}
"""The classes whose options a misplaced top-level key is looked up in (``batch_size`` -> ``data.batch_size``)."""


def _section_of(name: str, options_of: Callable[[str], list[str]], root_options: Iterable[str]) -> str:
    """``It belongs under data: (data.batch_size)`` for a top-level key that is an option of one section."""
    homes = [key for key in root_options if key.rsplit(".", 1)[-1] == name and "." in key]
    homes += [
        f"{section}.{option}"
        for section, cls in SECTION_CLASSES.items()
        for option in options_of(cls)
        if option.rpartition(".")[2] == name
    ]
    if homes:
        section, _, _ = homes[0].partition(".")
        return f"It belongs under {section}: ({homes[0]})"
    sections = sorted({key.split(".", 1)[0] for key in root_options})
    return f"Top-level keys are the sections {', '.join(sections)}"


def _not_a_class(key: str, path: str, base: str) -> Problem:
    """A class path that names a function, or a class of the wrong kind, without jsonargparse's ``NestedArg``."""
    module, _, name = path.rpartition(".")
    target = getattr(sys.modules.get(module), name, None)  # only what jsonargparse already imported
    if callable(target) and not isinstance(target, type):
        section = key.split(".", 1)[0] or "model"
        if section == "model":
            fix = f"A function that builds the network goes in model.factory: --model.factory {path}"
        else:
            fix = f"Give a class (a subclass of {base}) as {key}.class_path"
        return Problem(f"{key}.class_path", path, "is a function, not a class", fix)
    return Problem(f"{key}.class_path", path, f"is not a subclass of {base}", f"Give a subclass of {base}")


def ckpt_path_problem() -> Problem:
    return Problem(
        "--ckpt_path",
        None,
        "lit-infer does not restore Lightning checkpoints",
        "Give the network's weights (a state_dict or a Lightning .ckpt) as --model.weights path/to/file",
    )


def _unrecognized(tokens: list[str], root_options: Iterable[str]) -> Problem:
    flag = next((t for t in tokens if t.startswith("-")), tokens[0] if tokens else "")
    name = flag.lstrip("-").split("=", 1)[0]
    if name == "ckpt_path":
        return ckpt_path_problem()
    options = list(root_options)
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    fix = f"Did you mean --{close[0]}?" if close else "See lit-infer predict --help"
    return Problem(f"--{name}", None, "no such option", fix)


def _type_name(text: str) -> str:
    """``<class 'int'>`` -> ``int``; ``typing.Literal['auto']`` -> ``'auto'``; anything else as jsonargparse says."""
    text = text.strip()
    if (m := re.fullmatch(r"<class '(?:builtins\.)?([\w.]+)'>", text)) is not None:
        return m.group(1)
    if (m := re.fullmatch(r"typing\.Literal\[(.*)\]", text)) is not None:
        return "one of " + m.group(1)
    return text
