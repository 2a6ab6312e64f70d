"""Prompt files: a YAML file with a system prompt, a Jinja2 user template, optional few-shot
examples and task grid, sampling defaults, and the answer format the template asks for."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

import jinja2
import yaml

from distill.datagen.backends import Sampling
from distill.datagen.structured import check_output
from distill.errors import DistillError

KINDS = ("cot", "pot", "instruction", "judge", "problem")
SAMPLING_KEYS = ("temperature", "top_p", "max_tokens", "n", "stop", "seed")
REQUIRED = ("name", "kind", "user")
OPTIONAL = ("description", "system", "few_shot", "tasks", "sampling", "answer_format", "output",
            "turns", "tools", "max_tool_calls")
TOOLS = ("python",)



class NullField(Exception):
    """A template printed a null value (a row's field that is there but None)."""


def _no_null(value):
    if value is None:
        raise NullField
    return value


_env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False,
                          finalize=_no_null)


@dataclass
class PromptFile:
    """One parsed prompt file. ``render(row)`` turns a source row into chat messages."""

    name: str
    kind: str
    user: str
    path: str
    text: str
    system: str | None = None
    description: str = ""
    few_shot: list[dict] = field(default_factory=list)
    tasks: dict[str, str] = field(default_factory=dict)
    sampling: dict = field(default_factory=dict)
    answer_format: str | None = None
    output: dict | None = None  # a structured output constraint (distill.datagen.structured)
    turns: list[str] = field(default_factory=list)  # follow-up user templates
    tools: list[str] = field(default_factory=list)
    max_tool_calls: int = 0

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def with_shots(self, shots: int | None) -> PromptFile:
        """This prompt with only its first ``shots`` few-shot exemplars (None: all of them)."""
        if shots is None:
            return self
        if not 0 <= shots <= len(self.few_shot):
            raise DistillError(f"{self.path}: shots must be in [0, {len(self.few_shot)}] (its "
                               f"few-shot exemplars), got {shots}")
        return replace(self, few_shot=self.few_shot[:shots])

    def variables(self) -> set[str]:
        """Template variables the user template reads from a row."""
        from jinja2 import meta

        return meta.find_undeclared_variables(_env.parse(self.user))

    def render(self, row: dict, where: str = "row") -> list[dict]:
        """Chat messages for one row; ``where`` names the row in errors (e.g. ``file:line``)."""
        messages = [{"role": "system", "content": self.system}] if self.system else []
        for i, shot in enumerate(self.few_shot):
            user = self._render(self.user, shot, f"few_shot[{i}]")
            messages += [{"role": "user", "content": user},
                         {"role": "assistant", "content": shot["response"]}]
        messages.append({"role": "user", "content": self._render(self.user, row, where)})
        for i in range(len(self.turns)):  # so a follow-up turn fails here, not mid-generation
            self.follow_up(i, row, [""] * (i + 1), where)
        return messages

    def follow_up(self, i: int, row: dict, outputs: list[str], where: str = "row") -> str:
        """Follow-up user turn ``i`` for a row, after the assistant ``outputs`` so far (also
        ``previous``: the last of them)."""
        return self._render(self.turns[i], {**row, "turns": outputs, "previous": outputs[-1]},
                            f"{where} (turns[{i}])")

    def expand(self, row: dict, where: str, only: list[str] | None = None) -> list[dict]:
        """With a task grid, one row per task, carrying ``task`` and the rendered
        ``instruction``; without one, the row itself."""
        if not self.tasks:
            return [row]
        names = only or list(self.tasks)
        unknown = [t for t in names if t not in self.tasks]
        if unknown:
            raise DistillError(f"{self.path}: unknown task {unknown[0]!r}; "
                               f"this prompt file has: {', '.join(self.tasks)}")
        return [{**row, "task": t,
                 "instruction": self._render(self.tasks[t], row, f"{where} (task {t})")}
                for t in names]

    def _render(self, template: str, row: dict, where: str) -> str:
        try:
            return _env.from_string(template).render(**row).strip()
        except jinja2.UndefinedError as e:
            raise DistillError(f"{where}: prompt {self.name!r} ({self.path}) needs a field "
                               f"the row lacks: {e.message}; row has: {', '.join(row)}") from None
        except NullField:
            from jinja2 import meta

            used = meta.find_undeclared_variables(_env.parse(template))
            null = sorted(k for k in used if k in row and row[k] is None)
            what = f"field {null[0]!r} is null" if null else "a value the template prints is null"
            raise DistillError(f"{where}: {what}, and prompt {self.name!r} ({self.path}) prints "
                               "it; fill or remove the row, or map another field with "
                               "--field") from None


def builtin_dir() -> Path:
    return Path(str(resources.files("distill.prompts")))


def list_prompts() -> list[PromptFile]:
    return [load_prompt(p) for p in sorted(builtin_dir().glob("*.yaml"))]


def load_prompt(name_or_path: str | Path) -> PromptFile:
    """Load a shipped prompt by name (``gsm8k-cot``) or any prompt file by path."""
    path = Path(name_or_path)
    if not path.exists():
        shipped = builtin_dir() / f"{name_or_path}.yaml"
        if not shipped.exists():
            names = ", ".join(p.stem for p in sorted(builtin_dir().glob("*.yaml")))
            raise DistillError(f"prompt file {str(name_or_path)!r} not found; "
                               f"shipped prompts: {names}")
        path = shipped
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise DistillError(f"{path}{line}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise DistillError(f"{path}: a prompt file must be a YAML mapping")
    for key in REQUIRED:
        if key not in data:
            raise DistillError(f"{path}: missing required field {key!r}")
    unknown = set(data) - set(REQUIRED) - set(OPTIONAL)
    if unknown:
        raise DistillError(f"{path}: unknown field {min(unknown)!r}; "
                           f"allowed: {', '.join(REQUIRED + OPTIONAL)}")
    if data["kind"] not in KINDS:
        raise DistillError(f"{path}: field 'kind' is {data['kind']!r}; must be one of {KINDS}")
    sampling = data.get("sampling") or {}
    bad = set(sampling) - set(SAMPLING_KEYS)
    if bad:
        raise DistillError(f"{path}: unknown sampling field {min(bad)!r}; "
                           f"allowed: {', '.join(SAMPLING_KEYS)}")
    try:
        Sampling(**sampling)
    except DistillError as e:
        raise DistillError(f"{path}: sampling: {e}") from None
    if data.get("output") is not None:
        check_output(data["output"], f"{path}: output")
    for i, shot in enumerate(data.get("few_shot") or []):
        if not isinstance(shot, dict) or "response" not in shot:
            raise DistillError(f"{path}: few_shot[{i}] needs a 'response' and the template's "
                               "fields")
    turns = _turns(path, data.get("turns"))
    tools, max_calls = _tools(path, data)
    for key, template in [("user", data["user"]), ("system", data.get("system")),
                          *((f"turns[{i}].user", t) for i, t in enumerate(turns))]:
        try:
            _env.parse(template or "")
        except jinja2.TemplateSyntaxError as e:
            raise DistillError(f"{path}: field {key!r}, template line {e.lineno}: "
                               f"{e.message}") from None
    return PromptFile(
        name=data["name"], kind=data["kind"], user=data["user"], path=str(path), text=text,
        system=data.get("system"), description=data.get("description", ""),
        few_shot=data.get("few_shot") or [], tasks=data.get("tasks") or {},
        sampling=sampling, answer_format=data.get("answer_format"), output=data.get("output"),
        turns=turns, tools=tools, max_tool_calls=max_calls,
    )


def _turns(path: Path, turns) -> list[str]:
    """The follow-up user templates of ``turns: [{user: ...}, ...]``."""
    if turns is None:
        return []
    if not isinstance(turns, list) or not all(
            isinstance(t, dict) and set(t) == {"user"} and isinstance(t["user"], str)
            for t in turns):
        raise DistillError(f"{path}: field 'turns' must be a list of {{user: <template>}} "
                           "follow-up turns")
    return [t["user"] for t in turns]


def _tools(path: Path, data: dict) -> tuple[list[str], int]:
    """``tools`` (a list of tool names) and ``max_tool_calls`` (default 4 with tools)."""
    tools = data.get("tools") or []
    if not isinstance(tools, list) or any(t not in TOOLS for t in tools):
        raise DistillError(f"{path}: field 'tools' must be a list of {', '.join(TOOLS)}; "
                           f"got {tools!r}")
    calls = data.get("max_tool_calls", 4 if tools else 0)
    if "max_tool_calls" in data and not tools:
        raise DistillError(f"{path}: field 'max_tool_calls' needs 'tools' (e.g. tools: [python])")
    if isinstance(calls, bool) or not isinstance(calls, int) or calls < 1 and tools:
        raise DistillError(f"{path}: field 'max_tool_calls' must be an integer >= 1, "
                           f"got {calls!r}")
    return tools, calls
