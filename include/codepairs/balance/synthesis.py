"""Synthesis: pairs made where real data falls short of a category's target.

- ``ui_component`` (built in, deterministic): a real component file from the crawled history (the
  post-image of a UI pair's file, read from the mirror's object database; nothing checked out or
  run) is parsed with tree-sitter (TSX, TypeScript, JSX); the instruction is written from what the
  parse finds (the component's name, props, state, hooks, the elements it renders, the components
  it uses) and the response is the file.
- ``llm`` (optional, off by default): an OpenAI-compatible chat endpoint writes a new task of the
  same category from a real pair (its instruction and response as the example), answered as JSON.

Every synthetic pair records its method and the real pair it came from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from codepairs.safety import scrub

log = logging.getLogger(__name__)

COMPONENT_FILE = re.compile(r"\.(tsx|jsx)$", re.IGNORECASE)
MAX_COMPONENT_BYTES = 20_000  # a component file above this is a page, not an example
HOOK = re.compile(r"^use[A-Z]\w*$")


@dataclass
class Component:
    name: str
    exported: bool
    props: list[str] = field(default_factory=list)
    state: list[str] = field(default_factory=list)
    hooks: list[str] = field(default_factory=list)
    elements: list[str] = field(default_factory=list)  # HTML elements rendered, in first-seen order
    uses: list[str] = field(default_factory=list)  # other components rendered


@lru_cache(maxsize=4)
def _parser(dialect: str) -> Any:
    import tree_sitter as ts

    if dialect == "jsx":
        import tree_sitter_javascript as grammar

        language = ts.Language(grammar.language())
    else:
        import tree_sitter_typescript as grammar

        language = ts.Language(grammar.language_tsx())
    return ts.Parser(language)


def _text(node: Any) -> str:
    return node.text.decode("utf-8", "replace")


def _walk(node: Any) -> Iterator[Any]:
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(current.children))


def _add(items: list[str], value: str) -> None:
    if value and value not in items:
        items.append(value)


def _function_of(node: Any) -> tuple[str, Any] | None:
    """(name, function node) when ``node`` declares a capitalised function or arrow function."""
    if node.type == "function_declaration":
        name = node.child_by_field_name("name")
        return (_text(name), node) if name is not None else None
    if node.type == "variable_declarator":
        name, value = node.child_by_field_name("name"), node.child_by_field_name("value")
        if (
            name is not None
            and value is not None
            and value.type in ("arrow_function", "function_expression", "function")
        ):
            return _text(name), value
        if name is not None and value is not None and value.type == "call_expression":  # forwardRef(...), memo(...)
            for arg in _walk(value):
                if arg.type in ("arrow_function", "function_expression", "function") and arg is not value:
                    return _text(name), arg
    return None


def _props(function: Any) -> list[str]:
    params = function.child_by_field_name("parameters") or function.child_by_field_name("parameter")
    props: list[str] = []
    if params is None:
        return props
    for node in _walk(params):
        if node.type == "object_pattern":
            for child in node.named_children:
                if child.type in ("shorthand_property_identifier_pattern", "identifier"):
                    _add(props, _text(child))
                elif child.type in ("pair_pattern", "object_assignment_pattern"):
                    key = child.child_by_field_name("key") or child.child_by_field_name("left")
                    if key is not None:
                        _add(props, _text(key).split(":")[0].strip())
                elif child.type == "rest_pattern":
                    _add(props, "..." + _text(child).lstrip("."))
            break
    return props


def parse_components(source: bytes, path: str) -> list[Component]:
    """The function components a file declares (capitalised functions that render JSX)."""
    parser = _parser("jsx" if path.lower().endswith(".jsx") else "tsx")
    tree = parser.parse(source)
    found: list[Component] = []
    for node in _walk(tree.root_node):
        declared = _function_of(node)
        if declared is None or not declared[0][:1].isupper():
            continue
        name, function = declared
        body = function.child_by_field_name("body")
        if body is None or not any(n.type.startswith("jsx_") for n in _walk(body)):
            continue
        exported = any(a.type == "export_statement" for a in _ancestors(node))
        component = Component(name, exported, _props(function))
        for n in _walk(body):
            if n.type == "call_expression":
                callee = n.child_by_field_name("function")
                hook = _text(callee).split(".")[-1] if callee is not None else ""
                if HOOK.match(hook):
                    _add(component.hooks, hook)
                    if hook == "useState" and n.parent is not None and n.parent.type == "variable_declarator":
                        target = n.parent.child_by_field_name("name")
                        if target is not None and target.type == "array_pattern" and target.named_children:
                            _add(component.state, _text(target.named_children[0]))
            elif n.type in ("jsx_opening_element", "jsx_self_closing_element"):
                tag = n.child_by_field_name("name")
                if tag is not None:
                    text = _text(tag)
                    _add(component.uses if text[:1].isupper() or "." in text else component.elements, text)
        found.append(component)
    return found


def _ancestors(node: Any) -> Iterator[Any]:
    while node.parent is not None:
        node = node.parent
        yield node


def _names(items: Iterable[str]) -> str:
    quoted = [f"`{i}`" for i in items]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + f" and {quoted[-1]}"


def component_instruction(components: list[Component], path: str) -> str | None:
    """The task a component file answers, written from its parse; None when it declares no component."""
    if not components:
        return None
    main = next((c for c in components if c.exported), components[0])
    language = "TypeScript (TSX)" if path.lower().endswith(".tsx") else "JavaScript (JSX)"
    lines = [f"Write a React function component `{main.name}` in {language}, in the file `{path.rsplit('/', 1)[-1]}`."]
    if main.props:
        lines.append(f"It takes the props {_names(main.props)}.")
    if main.state:
        lines.append(f"It keeps {_names(main.state)} in state.")
    if main.hooks:
        lines.append(f"It uses the hooks {_names(main.hooks)}.")
    if main.elements:
        lines.append(f"It renders {_names(main.elements[:8])} elements.")
    if main.uses:
        lines.append(f"It composes {_names(main.uses[:8])}.")
    others = [c.name for c in components if c is not main]
    if others:
        lines.append(f"The file also defines {_names(others[:6])}.")
    return " ".join(lines)


def synthetic_id(method: str, *parts: str) -> str:
    return hashlib.sha256("\x00".join(("synthetic", method, *parts)).encode()).hexdigest()[:32]


def component_pair(source: bytes, path: str) -> tuple[str, str] | None:
    """(instruction, response) from one component file, or None (not a component, too large, not UTF-8)."""
    if len(source) > MAX_COMPONENT_BYTES or not COMPONENT_FILE.search(path):
        return None
    try:
        text = source.decode("utf-8")
    except UnicodeDecodeError:
        return None
    instruction = component_instruction(parse_components(source, path), path)
    response = scrub.cleaned(text)  # a component file, as written: secrets and personal data out
    return (instruction, response) if instruction and response is not None else None


def make_client(url: str, api_key: str | None) -> Any:
    """An OpenAI-compatible client for ``url`` (the key from the environment, never from config)."""
    import openai

    return openai.OpenAI(base_url=url, api_key=api_key or "unused", max_retries=3, timeout=120)


def llm_pair(
    client: Any, model: str, example: Mapping[str, Any], category: str, seed: int, max_tokens: int
) -> tuple[str, str] | None:
    """A new (instruction, response) of ``category`` from an OpenAI-compatible endpoint, written after
    a real example; None (logged) when the call fails or the answer is not the JSON asked for."""
    import openai

    prompt = (
        f"Here is a real {category.replace('_', ' ')} task from a code repository and the change that solved it.\n\n"
        f"Task:\n{example['instruction'][:2000]}\n\nChange:\n{(example['response'] or '')[:6000]}\n\n"
        "Write one new, different task of the same kind for the same codebase, and its solution as a unified "
        'diff. Answer with JSON only: {"instruction": "...", "response": "..."}'
    )
    try:
        answer = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": prompt}],
            temperature=0,
            seed=seed,
            max_tokens=max_tokens,
        )
        content = (answer.choices[0].message.content or "").strip() if answer.choices else ""
    except openai.OpenAIError as err:
        log.warning("synthesis: the model failed for %s: %s", example["pair_id"], type(err).__name__)
        return None
    content = re.sub(r"^```(?:json)?\s*|\s*```$", "", content)
    try:
        data = json.loads(content)
    except ValueError:
        data = None
    if (
        not isinstance(data, dict)
        or not str(data.get("instruction", "")).strip()
        or not str(data.get("response", "")).strip()
    ):
        log.warning("synthesis: the model's answer for %s was not the JSON asked for; skipped", example["pair_id"])
        return None
    instruction, response = scrub.cleaned(str(data["instruction"]).strip()), scrub.cleaned(str(data["response"]))
    return (instruction, response) if instruction is not None and response is not None else None
